//! Analytics and the request log of the caller's tenant.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use domain::entities::request_log;
use domain::request_log::flags;
use domain::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use domain::store::analytics::{self as traffic, Summary, TrafficQuery};
use domain::store::request_log::{self as log, LogQuery, StatusFilter};
use domain::store::{self, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::ApiCaller;
use super::errors::ApiError;
use super::models::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::analytics::{Range, api_names, key_names, range};
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsQuery {
    /// Start, RFC 3339 (default: 24 hours before `to`).
    pub from: Option<DateTime<Utc>>,
    /// End, RFC 3339 (default: now).
    pub to: Option<DateTime<Utc>>,
    pub api_id: Option<i64>,
    pub key_id: Option<i64>,
    /// Row id of a client (the `id` of `/clients`).
    pub client_id: Option<i64>,
    pub route_id: Option<i64>,
    /// `minute` (kept 7 days), `hour` (92 days) or `day` (400 days); default: the finest that
    /// shows the range in at most 1,500 points.
    pub granularity: Option<String>,
}

/// Counts and latency percentiles of a period, an API, a key or the whole range.
#[derive(Serialize, ToSchema)]
pub struct Figures {
    pub requests: i64,
    /// Answers of 5xx (the upstream's or the gateway's).
    pub errors: i64,
    /// Answers of 4xx (the caller's mistakes, the gateway's refusals included).
    pub client_errors: i64,
    /// Requests refused by their limits (429).
    pub rate_limited: i64,
    /// Latency from the request's head to its answer's last byte, ms (`null` without requests).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl From<&Summary> for Figures {
    fn from(s: &Summary) -> Self {
        Self {
            requests: s.requests,
            errors: s.status_5xx,
            client_errors: s.status_4xx,
            rate_limited: s.rate_limited,
            p50_ms: s.p50_ms,
            p95_ms: s.p95_ms,
            p99_ms: s.p99_ms,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SeriesPoint {
    /// The period's start (UTC).
    pub t: DateTime<Utc>,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Serialize, ToSchema)]
pub struct ApiBreakdown {
    /// `null`: requests whose path named no API of the tenant.
    pub api_id: Option<i64>,
    pub name: Option<String>,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Serialize, ToSchema)]
pub struct KeyBreakdown {
    /// `null`: requests without a valid key (refused before one was known).
    pub key_id: Option<i64>,
    pub name: Option<String>,
    pub prefix: Option<String>,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Serialize, ToSchema)]
pub struct StatusClasses {
    #[serde(rename = "2xx")]
    pub s2xx: i64,
    #[serde(rename = "3xx")]
    pub s3xx: i64,
    #[serde(rename = "4xx")]
    pub s4xx: i64,
    #[serde(rename = "5xx")]
    pub s5xx: i64,
}

#[derive(Serialize, ToSchema)]
pub struct AnalyticsOut {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: &'static str,
    pub requests: i64,
    /// Requests per second over the range.
    pub rps: f64,
    /// 5xx answers over all requests, 0 to 1.
    pub error_rate: f64,
    pub rate_limited: i64,
    pub upstream_errors: i64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub series: Vec<SeriesPoint>,
    pub by_api: Vec<ApiBreakdown>,
    pub by_key: Vec<KeyBreakdown>,
    pub by_status: StatusClasses,
}

fn nonzero(id: i64) -> Option<i64> {
    (id != 0).then_some(id)
}

/// A filter on an id that is not the caller's is a 404 (never another tenant's data).
fn not_ours(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound,
        e => e.into(),
    }
}

/// Checks that each id a query filters on belongs to `tenant_id`.
async fn check_ids(
    state: &AppState,
    tenant_id: i64,
    api_id: Option<i64>,
    key_id: Option<i64>,
    client_id: Option<i64>,
) -> Result<(), ApiError> {
    if let Some(id) = api_id {
        store::get_api(&state.db, tenant_id, id)
            .await
            .map_err(not_ours)?;
    }
    if let Some(id) = key_id {
        store::get_key(&state.db, tenant_id, id)
            .await
            .map_err(not_ours)?;
    }
    if let Some(id) = client_id {
        store::get_client(&state.db, tenant_id, id)
            .await
            .map_err(not_ours)?;
    }
    Ok(())
}

/// Requests, error rate, latency percentiles and rate-limited counts of a range, with a series
/// per period and breakdowns by API, key and status class.
#[utoipa::path(tag = "analytics", security(("bearer" = [])), params(AnalyticsQuery),
    responses((status = 200, body = AnalyticsOut), (status = 401), (status = 404), (status = 422)))]
#[get("/analytics")]
pub async fn analytics(
    caller: ApiCaller,
    state: web::Data<AppState>,
    query: web::Query<AnalyticsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let tenant_id = caller.tenant.id;
    let r: Range = range(q.from, q.to, q.granularity.as_deref(), Utc::now())
        .map_err(|(field, msg)| ApiError::invalid(field, msg))?;
    check_ids(&state, tenant_id, q.api_id, q.key_id, q.client_id).await?;
    if let Some(route) = q.route_id {
        let theirs = domain::entities::api_route::Entity::find_by_id(route)
            .filter(domain::entities::api_route::Column::TenantId.eq(tenant_id))
            .one(&state.db)
            .await?;
        if theirs.is_none_or(|r| q.api_id.is_some_and(|a| a != r.api_id)) {
            return Err(ApiError::NotFound);
        }
    }
    let report = traffic::report(
        &state.db,
        &TrafficQuery {
            tenant_id: Some(tenant_id),
            resolution: r.resolution,
            from_s: r.from.timestamp(),
            to_s: r.to.timestamp(),
            api_id: q.api_id,
            key_id: q.key_id,
            client_id: q.client_id,
            route_id: q.route_id,
        },
    )
    .await?;
    let apis = api_names(&state.db, Some(tenant_id)).await?;
    let keys = key_names(&state.db, Some(tenant_id)).await?;
    let t = &report.total;
    #[allow(clippy::cast_precision_loss)]
    let rps = (t.requests as f64 / r.seconds() as f64 * 1000.0).round() / 1000.0;
    let out = AnalyticsOut {
        from: r.from,
        to: r.to,
        granularity: r.granularity(),
        requests: t.requests,
        rps,
        error_rate: (t.error_rate() * 10_000.0).round() / 10_000.0,
        rate_limited: t.rate_limited,
        upstream_errors: t.upstream_errors,
        p50_ms: t.p50_ms,
        p95_ms: t.p95_ms,
        p99_ms: t.p99_ms,
        bytes_in: t.bytes_in,
        bytes_out: t.bytes_out,
        series: report
            .series
            .iter()
            .map(|(start, s)| SeriesPoint {
                t: DateTime::from_timestamp(*start, 0).unwrap_or_default(),
                figures: s.into(),
            })
            .collect(),
        by_api: report
            .by_api
            .iter()
            .map(|(id, s)| ApiBreakdown {
                api_id: nonzero(*id),
                name: apis.get(id).cloned(),
                figures: s.into(),
            })
            .collect(),
        by_key: report
            .by_key
            .iter()
            .map(|(id, s)| key_row(*id, &keys, s))
            .collect(),
        by_status: StatusClasses {
            s2xx: t.status_2xx,
            s3xx: t.status_3xx,
            s4xx: t.status_4xx,
            s5xx: t.status_5xx,
        },
    };
    Ok(HttpResponse::Ok().json(out))
}

/// A key's breakdown row, with its name and prefix.
fn key_row(
    id: i64,
    keys: &std::collections::HashMap<i64, (String, String)>,
    s: &Summary,
) -> KeyBreakdown {
    let named = keys.get(&id);
    KeyBreakdown {
        key_id: nonzero(id),
        name: named.map(|(n, _)| n.clone()),
        prefix: named.map(|(_, p)| p.clone()),
        figures: s.into(),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Start, RFC 3339 (default: the oldest kept).
    pub from: Option<DateTime<Utc>>,
    /// End, RFC 3339 (default: now).
    pub to: Option<DateTime<Utc>>,
    pub api_id: Option<i64>,
    pub key_id: Option<i64>,
    /// Row id of a client (the `id` of `/clients`).
    pub client_id: Option<i64>,
    /// A status (`404`) or a class (`4xx`, `5xx`).
    pub status: Option<String>,
    pub method: Option<String>,
    pub request_id: Option<String>,
    /// Records per page, 1 to 100 (default 50).
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One request as the data plane logged it.
#[derive(Serialize, ToSchema)]
pub struct LogRecord {
    pub time: DateTime<Utc>,
    pub request_id: String,
    /// `null`: the path named no API of the tenant.
    pub api_id: Option<i64>,
    pub route_id: Option<i64>,
    /// `null`: no valid key was presented.
    pub key_id: Option<i64>,
    pub key_prefix: Option<String>,
    /// Row id of the client (`X-Client-ID`).
    pub client_id: Option<i64>,
    /// The client's id as sent in `X-Client-ID`.
    pub client: Option<String>,
    pub method: String,
    /// The path (with its query only when the API keeps queries in the log).
    pub path: String,
    pub status: i32,
    pub latency_ms: f64,
    /// From sending the request upstream to its answer's head; `null` when nothing was sent.
    pub upstream_latency_ms: Option<f64>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// The target that answered or failed.
    pub target_id: Option<i64>,
    pub client_ip: String,
    /// Of `rate_limited`, `retried`, `circuit_open`, `upstream_error`.
    pub flags: Vec<&'static str>,
    /// The gateway's error type, for the gateway's own answers.
    pub error_type: Option<String>,
}

#[allow(clippy::cast_precision_loss)] // µs of a request: far below 2^53
fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

impl From<request_log::Model> for LogRecord {
    fn from(r: request_log::Model) -> Self {
        let d = r.detail();
        let owned = |c: Option<std::borrow::Cow<'_, str>>| c.map(std::borrow::Cow::into_owned);
        let us = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            time: DateTime::from_timestamp_millis(r.ts_ms).unwrap_or_default(),
            api_id: nonzero(r.api_id),
            route_id: nonzero(d.route_id),
            key_id: nonzero(r.key_id),
            key_prefix: owned(d.key_prefix),
            client_id: nonzero(r.client_row_id),
            client: owned(d.client_id),
            path: d.path.into_owned(),
            status: r.status,
            latency_ms: ms(us(d.latency_us)),
            upstream_latency_ms: d.upstream_latency_us.map(|u| ms(us(u))),
            bytes_in: us(d.bytes_in),
            bytes_out: us(d.bytes_out),
            target_id: nonzero(d.target_id),
            client_ip: d.client_ip.into_owned(),
            flags: flags::names(r.flags),
            error_type: owned(d.error_type),
            method: r.method,
            request_id: r.request_id,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct LogPage {
    pub items: Vec<LogRecord>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A log cursor: the time and id of the last record of a page.
pub fn parse_cursor(c: Option<&str>) -> Result<Option<(i64, i64)>, ApiError> {
    match c.map(str::trim) {
        None | Some("") => Ok(None),
        Some(c) => c
            .split_once('.')
            .and_then(|(t, id)| Some((t.parse().ok()?, id.parse().ok()?)))
            .map(Some)
            .ok_or_else(|| ApiError::invalid("cursor", "cursor is not one this API issued")),
    }
}

pub fn cursor_of(r: &request_log::Model) -> String {
    format!("{}.{}", r.ts_ms, r.id)
}

/// A log read: its filters, where the page starts (after `cursor`) and how many it holds.
pub type LogRead = (LogQuery, Option<(i64, i64)>, u64);

/// The log filters of a query, every field's problem reported.
pub fn log_query(tenant_id: Option<i64>, q: &LogsQuery) -> Result<LogRead, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let status = match q.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(StatusFilter::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "status",
                "status must be a status code (404) or a class (2xx, 3xx, 4xx, 5xx)",
            )
        })?),
    };
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from >= to
    {
        return Err(ApiError::invalid("from", "from must be before to"));
    }
    let method = q
        .method
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_ascii_uppercase);
    if method
        .as_deref()
        .is_some_and(|m| m.len() > 32 || !m.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        return Err(ApiError::invalid(
            "method",
            "method must be an HTTP method such as GET",
        ));
    }
    let cursor = parse_cursor(q.cursor.as_deref())?;
    Ok((
        LogQuery {
            tenant_id,
            from_ms: q.from.map(|t| t.timestamp_millis()),
            to_ms: q.to.map(|t| t.timestamp_millis()),
            api_id: q.api_id,
            key_id: q.key_id,
            client_row_id: q.client_id,
            status,
            method,
            request_id: q
                .request_id
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
        },
        cursor,
        limit,
    ))
}

/// The request log, newest first.
#[utoipa::path(tag = "logs", security(("bearer" = [])), params(LogsQuery),
    responses((status = 200, body = LogPage), (status = 401), (status = 422)))]
#[get("/logs")]
pub async fn logs(
    caller: ApiCaller,
    state: web::Data<AppState>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (q, cursor, limit) = log_query(Some(caller.tenant.id), &query)?;
    let rows = log::list(&state.db, &q, cursor, limit).await?;
    let next_cursor = (u64::try_from(rows.len()).unwrap_or(0) == limit)
        .then(|| rows.last().map(cursor_of))
        .flatten();
    Ok(HttpResponse::Ok().json(LogPage {
        items: rows.into_iter().map(LogRecord::from).collect(),
        next_cursor,
    }))
}

/// The record of one request, by its `X-Request-ID` (the newest, should a client have sent the
/// same id twice).
#[utoipa::path(tag = "logs", security(("bearer" = [])), params(("request_id" = String, Path)),
    responses((status = 200, body = LogRecord), (status = 401), (status = 404)))]
#[get("/logs/{request_id}")]
pub async fn log_record(
    caller: ApiCaller,
    state: web::Data<AppState>,
    request_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = log::find(&state.db, Some(caller.tenant.id), &request_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(LogRecord::from(r)))
}
