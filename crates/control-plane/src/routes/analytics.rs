//! The dashboard's analytics and request log: the Analytics page (range picker, cards, volume and
//! latency charts, breakdowns by API, key and status), the Logs page (filters, newest first,
//! pages) and a record's own page, a key's own page (its plan's windows, its analytics) — for a
//! tenant, and for the platform admin across tenants.

use std::collections::HashMap;
use std::fmt::Write as _;

use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Datelike, Duration, NaiveDateTime, TimeZone, Utc};
use domain::entities::{api_key, request_log};
use domain::limits::Subject;
use domain::request_log::flags;
use domain::sea_orm::DatabaseConnection;
use domain::store::analytics::{self as traffic, Report, Summary, TrafficQuery};
use domain::store::request_log as log;
use domain::store::{self, UsageFilter};
use serde::Deserialize;

use crate::analytics::{Range, api_names, key_names, range};
use crate::api::analytics::{LogsQuery, cursor_of, log_query};
use crate::charts::{Latency, LineChart, StackedChart, Volume};
use crate::errors::UiError;
use crate::pages::{Layout, render};
use crate::session::{AdminUser, TenantUser};
use crate::state::AppState;

/// Whose traffic a page shows: a tenant's, or every tenant's (the platform admin's pages, which
/// may narrow to one), and where its links go.
#[derive(Clone, Copy)]
struct Scope {
    tenant_id: Option<i64>,
    analytics: &'static str,
    logs: &'static str,
    /// The platform admin's pages (every tenant's, or one the admin picked).
    admin: bool,
}

const TENANT: Scope = Scope {
    tenant_id: None,
    analytics: "/analytics",
    logs: "/logs",
    admin: false,
};

const ADMIN: Scope = Scope {
    tenant_id: None,
    analytics: "/admin/analytics",
    logs: "/admin/logs",
    admin: true,
};

/// A form field that names an id: empty is none, anything but a number is a mistake.
fn id_field(v: Option<&str>, what: &str, problems: &mut Vec<String>) -> Option<i64> {
    match v.map(str::trim) {
        None | Some("") => None,
        Some(s) => s.parse().ok().or_else(|| {
            problems.push(format!("{what} is not one of the choices."));
            None
        }),
    }
}

/// A `datetime-local` field (taken as UTC) or an RFC 3339 time.
fn time_field(v: Option<&str>, what: &str, problems: &mut Vec<String>) -> Option<DateTime<Utc>> {
    let s = v.map(str::trim).filter(|s| !s.is_empty())?;
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    problems.push(format!(
        "{what} must be a date and time such as 2026-12-07T09:30 (UTC)."
    ));
    None
}

/// `datetime-local`'s format, for a field's value.
fn local(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M").to_string()
}

// ---- Analytics -------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct AnalyticsForm {
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
    api_id: Option<String>,
    key_id: Option<String>,
    tenant_id: Option<String>,
}

/// The presets of the range picker: (value, label).
pub const PRESETS: [(&str, &str); 4] = [
    ("1h", "1 hour"),
    ("24h", "24 hours"),
    ("7d", "7 days"),
    ("30d", "30 days"),
];

/// Most periods a dashboard chart draws.
const CHART_POINTS: i64 = 240;

/// The range a preset or a custom `from`/`to` means, at a granularity a chart can draw.
fn dashboard_range(
    preset: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Range, String> {
    let fixed = |span: Duration, g: &str| {
        range(Some(now - span), Some(now), Some(g), now).map_err(|(_, m)| m)
    };
    match preset {
        "1h" => fixed(Duration::hours(1), "minute"),
        "7d" => fixed(Duration::days(7), "hour"),
        "30d" => fixed(Duration::days(30), "day"),
        "custom" => {
            let to = to.unwrap_or(now);
            let from = from.unwrap_or(to - Duration::hours(24));
            let span = (to - from).num_seconds();
            let mut last = String::new();
            for (g, res) in [("minute", 60), ("hour", 3600), ("day", 86_400)] {
                if span / res > CHART_POINTS && g != "day" {
                    continue;
                }
                match range(Some(from), Some(to), Some(g), now) {
                    Ok(r) => return Ok(r),
                    Err((_, m)) => last = m,
                }
            }
            Err(last)
        }
        _ => fixed(Duration::hours(24), "hour"),
    }
}

/// A period's label on a chart's axis and in its titles.
fn period_label(t: i64, resolution: i64) -> String {
    let Some(t) = DateTime::from_timestamp(t, 0) else {
        return String::new();
    };
    match resolution {
        60 => t.format("%H:%M").to_string(),
        3600 => t.format("%b %-d %H:00").to_string(),
        _ => t.format("%b %-d").to_string(),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(
        || "—".into(),
        |v| {
            if v >= 100.0 {
                format!("{v:.0} ms")
            } else {
                format!("{v:.1} ms")
            }
        },
    )
}

#[allow(clippy::cast_precision_loss)]
fn percent(part: i64, whole: i64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        let p = part as f64 * 100.0 / whole as f64;
        if p > 0.0 && p < 0.1 {
            "<0.1%".into()
        } else {
            format!("{p:.1}%")
        }
    }
}

/// A row of a breakdown table.
pub struct BreakdownRow {
    pub name: String,
    /// The analytics narrowed to it.
    pub link: Option<String>,
    pub requests: i64,
    pub share: String,
    pub client_errors: i64,
    pub errors: i64,
    pub error_rate: String,
    pub rate_limited: i64,
    pub p50: String,
    pub p95: String,
    pub p99: String,
}

impl BreakdownRow {
    fn new(name: String, link: Option<String>, s: &Summary, total: i64) -> Self {
        Self {
            name,
            link,
            requests: s.requests,
            share: percent(s.requests, total),
            client_errors: s.status_4xx,
            errors: s.status_5xx,
            error_rate: percent(s.status_5xx, s.requests),
            rate_limited: s.rate_limited,
            p50: ms(s.p50_ms),
            p95: ms(s.p95_ms),
            p99: ms(s.p99_ms),
        }
    }
}

pub struct StatusRow {
    pub class: &'static str,
    pub label: &'static str,
    pub count: i64,
    pub share: String,
    /// Width of its bar, 0 to 100.
    pub bar: u32,
}

/// What the analytics part of a page shows.
pub struct AnalyticsView {
    pub requests: i64,
    pub rps: String,
    pub error_rate: String,
    pub rate_limited: i64,
    pub p50: String,
    pub p95: String,
    pub p99: String,
    pub volume: StackedChart,
    pub latency: LineChart,
    pub by_api: Vec<BreakdownRow>,
    pub by_key: Vec<BreakdownRow>,
    pub by_status: Vec<StatusRow>,
    /// Whether the breakdown by key is worth showing (not on one key's own page).
    pub show_by_key: bool,
    /// "by hour".
    pub granularity: &'static str,
    pub from: String,
    pub to: String,
}

impl AnalyticsView {
    /// `link`: the analytics page with a filter added (`api_id=3`).
    fn new(
        r: &Report,
        range: &Range,
        apis: &HashMap<i64, String>,
        keys: &HashMap<i64, (String, String)>,
        link: &dyn Fn(&str) -> String,
    ) -> Self {
        let t = &r.total;
        let res = range.resolution;
        let volume: Vec<Volume> = r
            .series
            .iter()
            .map(|(p, s)| Volume {
                label: period_label(*p, res),
                classes: [s.status_2xx, s.status_3xx, s.status_4xx, s.status_5xx],
                rate_limited: s.rate_limited,
            })
            .collect();
        let latency: Vec<Latency> = r
            .series
            .iter()
            .map(|(p, s)| Latency {
                label: period_label(*p, res),
                p: [s.p50_ms, s.p95_ms, s.p99_ms],
            })
            .collect();
        let by_api = r
            .by_api
            .iter()
            .map(|(id, s)| match apis.get(id) {
                Some(name) => BreakdownRow::new(
                    name.clone(),
                    Some(link(&format!("api_id={id}"))),
                    s,
                    t.requests,
                ),
                None => BreakdownRow::new("No such API (404)".into(), None, s, t.requests),
            })
            .collect();
        let by_key = r
            .by_key
            .iter()
            .map(|(id, s)| match keys.get(id) {
                Some((name, prefix)) => BreakdownRow::new(
                    format!("{name} · {prefix}…"),
                    Some(link(&format!("key_id={id}"))),
                    s,
                    t.requests,
                ),
                None => BreakdownRow::new("No valid key (refused)".into(), None, s, t.requests),
            })
            .collect();
        let classes = [
            ("s2xx", "2xx success", t.status_2xx),
            ("s3xx", "3xx redirect", t.status_3xx),
            ("s4xx", "4xx client error", t.status_4xx),
            ("s5xx", "5xx server error", t.status_5xx),
        ];
        let most = classes.iter().map(|c| c.2).max().unwrap_or(0).max(1);
        let by_status = classes
            .into_iter()
            .map(|(class, label, count)| StatusRow {
                class,
                label,
                count,
                share: percent(count, t.requests),
                bar: u32::try_from(count * 100 / most)
                    .unwrap_or(0)
                    .max(u32::from(count > 0)),
            })
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let rps = t.requests as f64 / range.seconds() as f64;
        Self {
            requests: t.requests,
            rps: if rps >= 10.0 {
                format!("{rps:.0}")
            } else if rps > 0.0 && rps < 0.01 {
                "<0.01".into()
            } else {
                format!("{rps:.2}")
            },
            show_by_key: true,
            error_rate: percent(t.status_5xx, t.requests),
            rate_limited: t.rate_limited,
            p50: ms(t.p50_ms),
            p95: ms(t.p95_ms),
            p99: ms(t.p99_ms),
            volume: StackedChart::new(&volume, 960),
            latency: LineChart::new(&latency, 960),
            by_api,
            by_key,
            by_status,
            granularity: match res {
                60 => "by minute",
                3600 => "by hour",
                _ => "by day",
            },
            from: range.from.format("%Y-%m-%d %H:%M").to_string(),
            to: range.to.format("%Y-%m-%d %H:%M").to_string(),
        }
    }
}

/// The analytics of `range` narrowed by the filters, as a page shows them.
#[allow(clippy::too_many_arguments)]
async fn analytics_view(
    db: &DatabaseConnection,
    tenant_id: Option<i64>,
    range: &Range,
    api_id: Option<i64>,
    key_id: Option<i64>,
    link: &dyn Fn(&str) -> String,
) -> Result<AnalyticsView, UiError> {
    let report = traffic::report(
        db,
        &TrafficQuery {
            tenant_id,
            resolution: range.resolution,
            from_s: range.from.timestamp(),
            to_s: range.to.timestamp(),
            api_id,
            key_id,
            ..TrafficQuery::default()
        },
    )
    .await?;
    let apis = api_names(db, tenant_id).await?;
    let keys = key_names(db, tenant_id).await?;
    Ok(AnalyticsView::new(&report, range, &apis, &keys, link))
}

/// A choice of a filter's select box.
pub struct Choice {
    pub id: i64,
    pub label: String,
    pub selected: bool,
}

fn choices(items: impl IntoIterator<Item = (i64, String)>, selected: Option<i64>) -> Vec<Choice> {
    let mut out: Vec<Choice> = items
        .into_iter()
        .map(|(id, label)| Choice {
            id,
            label,
            selected: Some(id) == selected,
        })
        .collect();
    out.sort_by_key(|c| c.label.to_lowercase());
    out
}

#[derive(Template)]
#[template(path = "analytics.html")]
struct AnalyticsPage {
    layout: Layout,
    base: &'static str,
    logs: &'static str,
    /// "Analytics" or "Analytics · Orders API".
    heading: String,
    preset: String,
    presets: Vec<(&'static str, &'static str, String)>,
    from: String,
    to: String,
    apis: Vec<Choice>,
    keys: Vec<Choice>,
    /// The admin's tenant filter (empty for a tenant).
    tenants: Vec<Choice>,
    problems: Vec<String>,
    view: Option<AnalyticsView>,
    /// The query of the current filters, for the logs link.
    filters: String,
}

#[allow(clippy::too_many_lines)] // the filters, the range, the view and the choices, in order
async fn analytics_page(
    state: &AppState,
    layout: Layout,
    scope: Scope,
    form: AnalyticsForm,
) -> Result<HttpResponse, UiError> {
    let db = &state.db;
    let now = Utc::now();
    let mut problems = Vec::new();
    let tenant_id = scope
        .tenant_id
        .or_else(|| id_field(form.tenant_id.as_deref(), "Tenant", &mut problems));
    let api_id = id_field(form.api_id.as_deref(), "API", &mut problems);
    let key_id = id_field(form.key_id.as_deref(), "Key", &mut problems);
    let from = time_field(form.from.as_deref(), "From", &mut problems);
    let to = time_field(form.to.as_deref(), "To", &mut problems);
    let preset = form
        .range
        .clone()
        .filter(|p| PRESETS.iter().any(|(v, _)| v == p) || p == "custom")
        .unwrap_or_else(|| {
            if from.is_some() || to.is_some() {
                "custom"
            } else {
                "24h"
            }
            .into()
        });
    let apis = api_names(db, tenant_id).await?;
    let keys = key_names(db, tenant_id).await?;
    // Another tenant's id is no filter of this one: it is simply not among the choices.
    for (id, known, what) in [
        (api_id, api_id.is_none_or(|i| apis.contains_key(&i)), "API"),
        (key_id, key_id.is_none_or(|i| keys.contains_key(&i)), "Key"),
    ] {
        if id.is_some() && !known {
            problems.push(format!("{what} is not one of the choices."));
        }
    }
    let (api_id, key_id) = (
        api_id.filter(|i| apis.contains_key(i)),
        key_id.filter(|i| keys.contains_key(i)),
    );
    let mut filters = Vec::new();
    if let Some(t) = tenant_id.filter(|_| scope.admin) {
        filters.push(format!("tenant_id={t}"));
    }
    if let Some(a) = api_id {
        filters.push(format!("api_id={a}"));
    }
    if let Some(k) = key_id {
        filters.push(format!("key_id={k}"));
    }
    let range_query = if preset == "custom" {
        format!(
            "range=custom&from={}&to={}",
            from.map(local).unwrap_or_default(),
            to.map(local).unwrap_or_default()
        )
    } else {
        format!("range={preset}")
    };
    let base = scope.analytics;
    let link = |extra: &str| {
        let mut q = vec![range_query.clone()];
        q.extend(
            filters
                .iter()
                .filter(|f| {
                    !(extra.starts_with("api_id") && f.starts_with("api_id")
                        || extra.starts_with("key_id") && f.starts_with("key_id"))
                })
                .cloned(),
        );
        q.push(extra.to_owned());
        format!("{base}?{}", q.join("&"))
    };
    let view = match dashboard_range(&preset, from, to, now) {
        Ok(r) if problems.is_empty() => {
            Some(analytics_view(db, tenant_id, &r, api_id, key_id, &link).await?)
        }
        Ok(_) => None,
        Err(m) => {
            problems.push(m);
            None
        }
    };
    let mut heading = String::from("Analytics");
    if let Some(name) = api_id.and_then(|a| apis.get(&a)) {
        heading = format!("Analytics · {name}");
    }
    if let Some((name, prefix)) = key_id.and_then(|k| keys.get(&k)) {
        heading = format!("{heading} · key {name} ({prefix}…)");
    }
    let tenants = if scope.admin {
        choices(
            store::list_tenants(db)
                .await?
                .into_iter()
                .map(|t| (t.id, format!("{} ({})", t.name, t.slug))),
            tenant_id,
        )
    } else {
        Vec::new()
    };
    let presets = PRESETS
        .iter()
        .map(|(v, l)| {
            let mut q = vec![format!("range={v}")];
            q.extend(filters.iter().cloned());
            (*v, *l, format!("{base}?{}", q.join("&")))
        })
        .collect();
    render(&AnalyticsPage {
        layout,
        base,
        logs: scope.logs,
        heading,
        preset,
        presets,
        from: from.map(local).unwrap_or_default(),
        to: to.map(local).unwrap_or_default(),
        apis: choices(apis, api_id),
        keys: choices(
            keys.into_iter()
                .map(|(id, (name, prefix))| (id, format!("{name} · {prefix}…"))),
            key_id,
        ),
        tenants,
        problems,
        view,
        filters: filters.join("&"),
    })
}

pub async fn analytics(
    u: TenantUser,
    state: web::Data<AppState>,
    form: web::Query<AnalyticsForm>,
) -> Result<HttpResponse, UiError> {
    let layout = Layout::tenant(&u, &state, "Analytics", "analytics");
    let scope = Scope {
        tenant_id: Some(u.tenant.id),
        ..TENANT
    };
    analytics_page(&state, layout, scope, form.into_inner()).await
}

pub async fn admin_analytics(
    a: AdminUser,
    state: web::Data<AppState>,
    form: web::Query<AnalyticsForm>,
) -> Result<HttpResponse, UiError> {
    let layout = Layout::admin(&a, &state, "Analytics, all tenants");
    analytics_page(&state, layout, ADMIN, form.into_inner()).await
}

// ---- Logs ------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct LogsForm {
    api_id: Option<String>,
    key_id: Option<String>,
    client_id: Option<String>,
    status: Option<String>,
    method: Option<String>,
    request_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    tenant_id: Option<String>,
}

impl LogsForm {
    /// The filters set, as query parameters (`status=5xx`), for the pages' links.
    fn filters(&self) -> Vec<String> {
        [
            ("tenant_id", &self.tenant_id),
            ("api_id", &self.api_id),
            ("key_id", &self.key_id),
            ("client_id", &self.client_id),
            ("status", &self.status),
            ("method", &self.method),
            ("request_id", &self.request_id),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", urlencode(v)))
        })
        .collect()
    }
}

/// A row of the log table.
pub struct LogRow {
    pub time: String,
    pub day: String,
    pub method: String,
    pub path: String,
    pub status: i32,
    /// CSS class of its status: `s2xx`…`s5xx`.
    pub class: &'static str,
    pub latency: String,
    pub api: String,
    pub key: String,
    pub client: String,
    pub request_id: String,
    pub link: String,
    pub flags: Vec<&'static str>,
    pub tenant: String,
}

fn status_class(status: i32) -> &'static str {
    match status {
        200..=299 => "s2xx",
        300..=399 => "s3xx",
        400..=499 => "s4xx",
        _ => "s5xx",
    }
}

fn latency(us: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let v = us as f64 / 1000.0;
    ms(Some(v))
}

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage {
    layout: Layout,
    base: &'static str,
    rows: Vec<LogRow>,
    apis: Vec<Choice>,
    keys: Vec<Choice>,
    clients: Vec<Choice>,
    tenants: Vec<Choice>,
    status: String,
    method: String,
    request_id: String,
    from: String,
    to: String,
    problems: Vec<String>,
    /// The next (older) page, when there is one.
    older: Option<String>,
    /// The first page of the same filters, when this is a later one.
    newest: Option<String>,
    admin: bool,
    methods: &'static [&'static str],
}

/// The methods the filter offers.
pub const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

#[allow(clippy::too_many_lines)] // the filters, the query and the rows, in order
async fn logs_page(
    state: &AppState,
    layout: Layout,
    scope: Scope,
    form: LogsForm,
) -> Result<HttpResponse, UiError> {
    let db = &state.db;
    let mut problems = Vec::new();
    let tenant_id = scope
        .tenant_id
        .or_else(|| id_field(form.tenant_id.as_deref(), "Tenant", &mut problems));
    let query = LogsQuery {
        from: time_field(form.from.as_deref(), "From", &mut problems),
        to: time_field(form.to.as_deref(), "To", &mut problems),
        api_id: id_field(form.api_id.as_deref(), "API", &mut problems),
        key_id: id_field(form.key_id.as_deref(), "Key", &mut problems),
        client_id: id_field(form.client_id.as_deref(), "Client", &mut problems),
        status: form.status.clone().filter(|s| !s.trim().is_empty()),
        method: form.method.clone().filter(|s| !s.trim().is_empty()),
        request_id: form.request_id.clone().filter(|s| !s.trim().is_empty()),
        limit: Some(50),
        cursor: form.cursor.clone().filter(|s| !s.is_empty()),
    };
    let apis = api_names(db, tenant_id).await?;
    let keys = key_names(db, tenant_id).await?;
    let clients: HashMap<i64, String> = match tenant_id {
        Some(t) => store::list_clients(db, t)
            .await?
            .into_iter()
            .map(|c| (c.id, format!("{} ({})", c.name, c.client_id)))
            .collect(),
        None => HashMap::new(),
    };
    let tenants: HashMap<i64, String> = store::list_tenants(db)
        .await?
        .into_iter()
        .map(|t| (t.id, t.slug))
        .collect();
    let mut rows = Vec::new();
    let mut older = None;
    if problems.is_empty() {
        match log_query(tenant_id, &query) {
            Err(e) => problems.push(e.to_string()),
            Ok((q, cursor, limit)) => {
                let records = log::list(db, &q, cursor, limit).await?;
                let mut params = form.filters();
                if u64::try_from(records.len()).unwrap_or(0) == limit
                    && let Some(last) = records.last()
                {
                    params.push(format!("cursor={}", cursor_of(last)));
                    older = Some(format!("{}?{}", scope.logs, params.join("&")));
                }
                rows = records
                    .into_iter()
                    .map(|r| log_row(r, scope, &apis, &keys, &tenants))
                    .collect();
            }
        }
    }
    let newest = query
        .cursor
        .as_ref()
        .map(|_| format!("{}?{}", scope.logs, form.filters().join("&")));
    render(&LogsPage {
        layout,
        base: scope.logs,
        rows,
        apis: choices(apis, query.api_id),
        keys: choices(
            keys.into_iter()
                .map(|(id, (name, prefix))| (id, format!("{name} · {prefix}…"))),
            query.key_id,
        ),
        clients: choices(clients, query.client_id),
        tenants: if scope.admin {
            choices(tenants, tenant_id)
        } else {
            Vec::new()
        },
        status: query.status.unwrap_or_default(),
        method: query.method.unwrap_or_default().to_ascii_uppercase(),
        request_id: query.request_id.unwrap_or_default(),
        from: query.from.map(local).unwrap_or_default(),
        to: query.to.map(local).unwrap_or_default(),
        problems,
        older,
        newest,
        admin: scope.admin,
        methods: &METHODS,
    })
}

/// Enough percent-encoding for a query value taken from a form.
fn urlencode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn log_row(
    r: request_log::Model,
    scope: Scope,
    apis: &HashMap<i64, String>,
    keys: &HashMap<i64, (String, String)>,
    tenants: &HashMap<i64, String>,
) -> LogRow {
    let t = DateTime::from_timestamp_millis(r.ts_ms).unwrap_or_default();
    let link = if scope.admin {
        format!(
            "{}/{}?tenant_id={}",
            scope.logs,
            urlencode(&r.request_id),
            r.tenant_id
        )
    } else {
        format!("{}/{}", scope.logs, urlencode(&r.request_id))
    };
    let d = r.detail();
    LogRow {
        time: t.format("%H:%M:%S%.3f").to_string(),
        day: t.format("%Y-%m-%d").to_string(),
        path: d.path.into_owned(),
        status: r.status,
        class: status_class(r.status),
        latency: latency(d.latency_us),
        api: apis.get(&r.api_id).cloned().unwrap_or_else(|| "—".into()),
        key: d
            .key_prefix
            .map(|p| format!("{p}…"))
            .or_else(|| keys.get(&r.key_id).map(|(_, p)| format!("{p}…")))
            .unwrap_or_else(|| "—".into()),
        client: d
            .client_id
            .map(std::borrow::Cow::into_owned)
            .unwrap_or_default(),
        flags: flags::names(r.flags),
        tenant: tenants.get(&r.tenant_id).cloned().unwrap_or_default(),
        method: r.method,
        request_id: r.request_id,
        link,
    }
}

pub async fn logs(
    u: TenantUser,
    state: web::Data<AppState>,
    form: web::Query<LogsForm>,
) -> Result<HttpResponse, UiError> {
    let layout = Layout::tenant(&u, &state, "Logs", "logs");
    let scope = Scope {
        tenant_id: Some(u.tenant.id),
        ..TENANT
    };
    logs_page(&state, layout, scope, form.into_inner()).await
}

pub async fn admin_logs(
    a: AdminUser,
    state: web::Data<AppState>,
    form: web::Query<LogsForm>,
) -> Result<HttpResponse, UiError> {
    let layout = Layout::admin(&a, &state, "Logs, all tenants");
    logs_page(&state, layout, ADMIN, form.into_inner()).await
}

// ---- One record ------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "log_record.html")]
struct RecordPage {
    layout: Layout,
    back: &'static str,
    fields: Vec<(&'static str, String)>,
    status: i32,
    class: &'static str,
    request_id: String,
    /// This key's page (a tenant's own key).
    key_link: Option<String>,
}

#[derive(Deserialize)]
pub struct RecordQuery {
    tenant_id: Option<i64>,
}

async fn record_page(
    state: &AppState,
    layout: Layout,
    scope: Scope,
    request_id: &str,
) -> Result<HttpResponse, UiError> {
    let db = &state.db;
    let r = log::find(db, scope.tenant_id, request_id)
        .await?
        .ok_or(UiError::NotFound)?;
    let apis = api_names(db, Some(r.tenant_id)).await?;
    let t = DateTime::from_timestamp_millis(r.ts_ms).unwrap_or_default();
    let d = r.detail();
    let dash = || "—".to_owned();
    let id = |v: i64| if v == 0 { dash() } else { format!("id {v}") };
    let api = apis
        .get(&r.api_id)
        .map_or_else(dash, |n| format!("{n} (id {})", r.api_id));
    #[allow(clippy::cast_precision_loss)]
    let upstream = d.upstream_latency_us.map_or_else(
        || "— (nothing was sent)".into(),
        |u| ms(Some(u as f64 / 1000.0)),
    );
    let mut fields = vec![
        ("Time (UTC)", t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()),
        ("Request id", r.request_id.clone()),
        ("Method", r.method.clone()),
        ("Path", d.path.to_string()),
        ("Status", r.status.to_string()),
        ("Latency", latency(d.latency_us)),
        ("Upstream latency", upstream),
        ("API", api),
        ("Route", id(d.route_id)),
        (
            "Key",
            d.key_prefix.as_ref().map_or_else(
                || "— (no valid key)".into(),
                |p| format!("{p}… (id {})", r.key_id),
            ),
        ),
        (
            "Client",
            d.client_id.as_deref().map_or_else(dash, str::to_owned),
        ),
        ("Client IP", d.client_ip.to_string()),
        ("Bytes in", d.bytes_in.to_string()),
        ("Bytes out", d.bytes_out.to_string()),
        ("Target", id(d.target_id)),
        ("Flags", flags::names(r.flags).join(", ")),
        (
            "Gateway error",
            d.error_type.as_deref().map_or_else(dash, str::to_owned),
        ),
    ];
    if scope.admin {
        fields.insert(1, ("Tenant id", r.tenant_id.to_string()));
    }
    for f in &mut fields {
        if f.1.is_empty() {
            f.1 = dash();
        }
    }
    render(&RecordPage {
        layout,
        back: scope.logs,
        status: r.status,
        class: status_class(r.status),
        request_id: r.request_id,
        key_link: (!scope.admin && r.key_id != 0).then(|| format!("/keys/{}", r.key_id)),
        fields,
    })
}

pub async fn record(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let layout = Layout::tenant(&u, &state, "Request", "logs");
    let scope = Scope {
        tenant_id: Some(u.tenant.id),
        ..TENANT
    };
    record_page(&state, layout, scope, &path).await
}

pub async fn admin_record(
    a: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<RecordQuery>,
) -> Result<HttpResponse, UiError> {
    let layout = Layout::admin(&a, &state, "Request");
    let scope = Scope {
        tenant_id: q.tenant_id,
        ..ADMIN
    };
    record_page(&state, layout, scope, &path).await
}

// ---- A key's page ----------------------------------------------------------------------------

/// One window of a key's plan: how much of it is used.
pub struct Window {
    pub name: &'static str,
    pub used: u64,
    pub limit: Option<u64>,
    /// Width of its bar, 0 to 100.
    pub bar: u32,
    pub note: String,
    /// Nearly or wholly used.
    pub warn: bool,
}

fn window(name: &'static str, used: u64, limit: Option<u64>, note: String) -> Window {
    let bar = limit.map_or(0, |l| {
        u32::try_from((used.saturating_mul(100) / l.max(1)).min(100)).unwrap_or(100)
    });
    Window {
        name,
        used,
        limit,
        bar,
        note,
        warn: bar >= 80,
    }
}

#[derive(Template)]
#[template(path = "key_detail.html")]
struct KeyPage {
    layout: Layout,
    key: api_key::Model,
    plan: String,
    status: &'static str,
    created: String,
    last_used: String,
    expires: String,
    windows: Vec<Window>,
    view: AnalyticsView,
    analytics_link: String,
    logs_link: String,
}

/// "in 3 h 12 min".
fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let m = (t - now).num_minutes().max(0);
    if m >= 60 * 24 {
        format!("in {} d {} h", m / 1440, m % 1440 / 60)
    } else if m >= 60 {
        format!("in {} h {} min", m / 60, m % 60)
    } else {
        format!("in {m} min")
    }
}

#[allow(clippy::too_many_lines)] // the key, its plan's three windows and its analytics
pub async fn key_page(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    let db = &state.db;
    let tid = u.tenant.id;
    let key = store::get_key(db, tid, path.into_inner()).await?;
    let plan = store::get_plan(db, tid, key.plan_id).await?;
    let now = Utc::now();
    let today = now.date_naive();
    let (day, month) = store::admitted(
        db,
        Subject::Key {
            tenant_id: tid,
            key_id: key.id,
        },
        today,
    )
    .await?;
    let minute = now.timestamp().div_euclid(60);
    let this_minute: i64 = store::minutes(
        db,
        tid,
        minute,
        minute,
        UsageFilter {
            key_id: Some(key.id),
            ..UsageFilter::default()
        },
    )
    .await?
    .iter()
    .map(|(_, c)| c.requests - c.rejected)
    .sum();
    let tomorrow = (today + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let next_month = {
        let (y, m) = if today.month() == 12 {
            (today.year() + 1, 1)
        } else {
            (today.year(), today.month() + 1)
        };
        Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
            .single()
            .unwrap_or(tomorrow)
    };
    let rpm = u64::try_from(plan.requests_per_minute).unwrap_or(0);
    let burst = plan
        .burst
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(rpm);
    let positive = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    let windows = vec![
        window(
            "This minute",
            u64::try_from(this_minute).unwrap_or(0),
            Some(rpm),
            format!("{rpm} per minute, bursts of {burst}; refills continuously"),
        ),
        window(
            "Today",
            day,
            positive(plan.requests_per_day),
            match plan.requests_per_day {
                Some(_) => format!(
                    "resets {} UTC ({})",
                    tomorrow.format("%Y-%m-%d %H:%M"),
                    until(tomorrow, now)
                ),
                None => "no daily limit".into(),
            },
        ),
        window(
            "This month",
            month,
            positive(plan.requests_per_month),
            match plan.requests_per_month {
                Some(_) => format!(
                    "resets {} UTC ({})",
                    next_month.format("%Y-%m-%d %H:%M"),
                    until(next_month, now)
                ),
                None => "no monthly limit".into(),
            },
        ),
    ];
    let r = range(
        Some(now - Duration::hours(24)),
        Some(now),
        Some("hour"),
        now,
    )
    .map_err(|(_, m)| UiError::Internal(m))?;
    let key_id = key.id;
    let link = move |extra: &str| format!("/analytics?range=24h&key_id={key_id}&{extra}");
    let mut view = analytics_view(db, Some(tid), &r, None, Some(key.id), &link).await?;
    view.show_by_key = false;
    let when = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    let status = if !key.is_active {
        "revoked"
    } else if key.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    };
    render(&KeyPage {
        layout: Layout::tenant(&u, &state, format!("Key {}", key.name), "keys"),
        plan: plan.name,
        status,
        created: when(key.created_at),
        last_used: key.last_used_at.map_or_else(|| "never".into(), when),
        expires: key.expires_at.map_or_else(|| "never".into(), when),
        windows,
        view,
        analytics_link: format!("/analytics?range=24h&key_id={}", key.id),
        logs_link: format!("/logs?key_id={}", key.id),
        key,
    })
}
