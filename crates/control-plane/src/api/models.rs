//! Bodies of the management API (field names are part of the contract) and their validation.

// PATCH bodies tell an absent field (keep) from `null` (clear): `Option<Option<T>>` says exactly that.
#![allow(clippy::option_option)]

use chrono::{DateTime, Utc};
use domain::entities::{api, api_key, api_route, api_target, api_token, client, plan};
use domain::plan::{Enforcement, PlanLimits};
use domain::resilience::{ApiResilience, CircuitBreaker, HealthCheck};
use domain::store::NewApi;
use domain::validate::{
    self, ApiFields, CircuitBreakerFields, HealthCheckFields, PlanFields, Problems,
    ResilienceFields,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::errors::ApiError;

/// `Some(None)` for an explicit `null`, `None` when the field is absent (PATCH semantics).
pub(super) fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Serialize, ToSchema)]
pub struct TenantOut {
    pub id: i64,
    pub name: String,
    pub slug: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupIn {
    pub username: String,
    pub email: String,
    pub password: String,
    pub tenant_name: String,
    pub tenant_slug: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SignupOut {
    pub tenant: TenantOut,
    /// A management API token, shown only here.
    pub token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenCreated {
    pub id: i64,
    /// Shown only here; stored hashed.
    pub token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenOut {
    pub id: i64,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<api_token::Model> for TokenOut {
    fn from(t: api_token::Model) -> Self {
        Self {
            id: t.id,
            prefix: t.prefix,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
        }
    }
}

// ---- Pagination ----------------------------------------------------------------------------

pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 100;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn parse(&self) -> Result<(Option<i64>, u64), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after =
            match self.cursor.as_deref() {
                None | Some("") => None,
                Some(c) => Some(c.parse::<i64>().map_err(|_| {
                    ApiError::invalid("cursor", "cursor is not one this API issued")
                })?),
            };
        Ok((after, limit))
    }
}

#[derive(Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> Page<T> {
    pub fn of(items: Vec<T>, limit: u64, id: impl Fn(&T) -> i64) -> Self {
        let full = u64::try_from(items.len()).unwrap_or(0) == limit;
        let next_cursor = if full {
            items.last().map(|i| id(i).to_string())
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

// ---- Plans ---------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct PlanOut {
    pub id: i64,
    pub name: String,
    pub requests_per_minute: i64,
    pub burst: Option<i64>,
    pub requests_per_day: Option<i64>,
    pub requests_per_month: Option<i64>,
    /// `strict` (exact across nodes) or `fast` (leased local budgets).
    pub enforcement: String,
    pub created_at: DateTime<Utc>,
}

impl From<plan::Model> for PlanOut {
    fn from(p: plan::Model) -> Self {
        Self {
            id: p.id,
            name: p.name,
            requests_per_minute: p.requests_per_minute,
            burst: p.burst,
            requests_per_day: p.requests_per_day,
            requests_per_month: p.requests_per_month,
            enforcement: p.enforcement,
            created_at: p.created_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanIn {
    pub name: String,
    pub requests_per_minute: i64,
    pub burst: Option<i64>,
    pub requests_per_day: Option<i64>,
    pub requests_per_month: Option<i64>,
    pub enforcement: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PlanPatch {
    pub name: Option<String>,
    pub requests_per_minute: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub burst: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub requests_per_day: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub requests_per_month: Option<Option<i64>>,
    pub enforcement: Option<String>,
}

/// One name field, checked by the shared rule.
pub fn name(field: &str, v: &str) -> Result<String, ApiError> {
    validate::name(v).map_err(|m| ApiError::invalid(field, format!("{field} {m}")))
}

/// A plan's name, limits and enforcement, every field's problem reported.
pub fn plan_values(
    name: &str,
    rpm: i64,
    burst: Option<i64>,
    day: Option<i64>,
    month: Option<i64>,
    enforcement: Option<&str>,
) -> Result<(String, PlanLimits, Enforcement), ApiError> {
    let mut problems = Problems::default();
    let plan = validate::plan(
        &PlanFields {
            name,
            requests_per_minute: Some(rpm),
            burst,
            requests_per_day: day,
            requests_per_month: month,
            enforcement,
        },
        &mut problems,
    );
    Ok(problems.or_value(plan)?)
}

// ---- APIs ----------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[allow(clippy::struct_excessive_bools)] // independent fields of an API, as the JSON names them
pub struct ApiOut {
    pub id: i64,
    pub name: String,
    pub slug: String,
    pub upstream_url: String,
    pub key_header: String,
    pub timeout_ms: i32,
    /// Percent-encoded slashes (`%2F`) in a path are passed to the upstream (else refused, 400).
    pub pass_encoded_slashes: bool,
    /// The request log keeps the query string of this API's requests (else the path alone: a
    /// query may carry secrets).
    pub log_query: bool,
    /// What callers present: `key` (an API key), `token` (a token minted from one at
    /// `POST /_gateway/token`), or `key_or_token`.
    pub auth: String,
    /// The gateway sends the upstream an `X-Gateway-JWT` naming the caller, signed by the
    /// tenant's key (verify it with the tenant's JWKS).
    pub identity_token: bool,
    /// How the gateway speaks to its upstreams: `http1` or `h2` (HTTP/2: over TLS for `https`
    /// targets, cleartext with prior knowledge for `http` ones; what gRPC needs).
    pub upstream_protocol: String,
    /// A relayed WebSocket idle (no byte either way) this long is closed.
    pub websocket_idle_timeout_ms: i32,
    pub is_active: bool,
    /// Where callers reach this API through the gateway.
    pub gateway_url: String,
    /// Tries after a failed one, on another target (`null`: 1 with two targets or more, else 0).
    pub retries: Option<i32>,
    /// The active health check of its targets (`null`: off).
    pub health_check: Option<HealthCheckBody>,
    /// The circuit breaker of each of its targets.
    pub circuit_breaker: CircuitBreakerBody,
    pub created_at: DateTime<Utc>,
}

impl ApiOut {
    pub fn new(a: api::Model, gateway_prefix: &str) -> Self {
        let r = ApiResilience::of(&a);
        Self {
            retries: r.retries,
            health_check: r.health_check.map(HealthCheckBody::from),
            circuit_breaker: r.circuit_breaker.into(),
            gateway_url: format!("{gateway_prefix}{}/", a.slug),
            id: a.id,
            name: a.name,
            slug: a.slug,
            upstream_url: a.upstream_url,
            key_header: a.key_header,
            timeout_ms: a.timeout_ms,
            pass_encoded_slashes: a.pass_encoded_slashes,
            log_query: a.log_query,
            auth: a.auth,
            identity_token: a.identity_token,
            upstream_protocol: a.upstream_protocol,
            websocket_idle_timeout_ms: a.websocket_idle_timeout_ms,
            is_active: a.is_active,
            created_at: a.created_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiIn {
    pub name: String,
    pub slug: String,
    pub upstream_url: String,
    pub key_header: Option<String>,
    pub timeout_ms: Option<i64>,
    /// Pass `%2F` in paths through to the upstream (default false: refused with 400).
    pub pass_encoded_slashes: Option<bool>,
    /// Keep the query string in the request log (default false: the path alone).
    pub log_query: Option<bool>,
    /// `key` (default), `key_or_token` or `token`.
    pub auth: Option<String>,
    /// Sign an `X-Gateway-JWT` for the upstream (default false).
    pub identity_token: Option<bool>,
    /// `http1` (default) or `h2`.
    pub upstream_protocol: Option<String>,
    /// 1000 to 86400000 (default 3600000: one hour).
    pub websocket_idle_timeout_ms: Option<i64>,
    pub is_active: Option<bool>,
    /// Tries after a failed one, on another target, 0 to 5 (default: 1 with two targets or
    /// more, else 0).
    pub retries: Option<i64>,
    /// An active health check of its targets (default: none).
    pub health_check: Option<HealthCheckBody>,
    /// Its targets' circuit breaker (default: on, 5 failures, 30 s, 3 probes).
    pub circuit_breaker: Option<CircuitBreakerBody>,
}

impl ApiIn {
    /// Its fields as the shared validator takes them (what it leaves out: the defaults).
    pub fn fields(&self) -> ApiFields<'_> {
        ApiFields {
            name: &self.name,
            slug: &self.slug,
            upstream_url: &self.upstream_url,
            key_header: self.key_header.as_deref(),
            timeout_ms: self.timeout_ms,
            pass_encoded_slashes: self.pass_encoded_slashes.unwrap_or(false),
            log_query: self.log_query.unwrap_or(false),
            auth: self.auth.as_deref(),
            identity_token: self.identity_token.unwrap_or(false),
            upstream_protocol: self.upstream_protocol.as_deref(),
            websocket_idle_timeout_ms: self.websocket_idle_timeout_ms,
        }
    }
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiPatch {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub upstream_url: Option<String>,
    pub key_header: Option<String>,
    pub timeout_ms: Option<i64>,
    pub pass_encoded_slashes: Option<bool>,
    pub log_query: Option<bool>,
    pub auth: Option<String>,
    pub identity_token: Option<bool>,
    pub upstream_protocol: Option<String>,
    pub websocket_idle_timeout_ms: Option<i64>,
    pub is_active: Option<bool>,
    /// `null`: back to the default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub retries: Option<Option<i64>>,
    /// `null`: no active health check.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<HealthCheckBody>)]
    pub health_check: Option<Option<HealthCheckBody>>,
    /// `null`: the defaults.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<CircuitBreakerBody>)]
    pub circuit_breaker: Option<Option<CircuitBreakerBody>>,
}

impl ApiPatch {
    /// Whether it changes the API's retries, health check or circuit breaker.
    pub fn touches_resilience(&self) -> bool {
        self.retries.is_some() || self.health_check.is_some() || self.circuit_breaker.is_some()
    }
}

/// An API's active health check: `GET <target><path>` every `interval_ms`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckBody {
    /// Appended to each target's URL (default `/`).
    pub path: Option<String>,
    /// Default 10000 (100 to 3600000).
    pub interval_ms: Option<i64>,
    /// Default 2000 (10 to 60000, at most `interval_ms`).
    pub timeout_ms: Option<i64>,
    /// Good checks in a row that bring a target back (default 2).
    pub healthy_threshold: Option<i64>,
    /// Failed checks in a row that take a target out (default 3).
    pub unhealthy_threshold: Option<i64>,
    /// Statuses that count as healthy: `status_min` to `status_max` (default 200 to 399).
    pub status_min: Option<i64>,
    pub status_max: Option<i64>,
}

impl From<HealthCheck> for HealthCheckBody {
    fn from(h: HealthCheck) -> Self {
        Self {
            path: Some(h.path),
            interval_ms: Some(h.interval_ms.into()),
            timeout_ms: Some(h.timeout_ms.into()),
            healthy_threshold: Some(h.healthy_threshold.into()),
            unhealthy_threshold: Some(h.unhealthy_threshold.into()),
            status_min: Some(h.status_min.into()),
            status_max: Some(h.status_max.into()),
        }
    }
}

impl HealthCheckBody {
    fn fields(&self) -> HealthCheckFields<'_> {
        HealthCheckFields {
            path: self.path.as_deref(),
            interval_ms: self.interval_ms,
            timeout_ms: self.timeout_ms,
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
            status_min: self.status_min,
            status_max: self.status_max,
        }
    }
}

/// A target's circuit: open after `failure_threshold` consecutive failures (no connection, a
/// reset, a timeout, or a 502/503/504), half-open after `recovery_timeout_ms`, closed again after
/// `half_open_max_calls` successful probes.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Default)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerBody {
    /// Default true.
    pub enabled: Option<bool>,
    /// Default 5 (1 to 1000).
    pub failure_threshold: Option<i64>,
    /// Default 30000 (100 to 3600000).
    pub recovery_timeout_ms: Option<i64>,
    /// Default 3 (1 to 100).
    pub half_open_max_calls: Option<i64>,
}

impl From<CircuitBreaker> for CircuitBreakerBody {
    fn from(c: CircuitBreaker) -> Self {
        Self {
            enabled: Some(c.enabled),
            failure_threshold: Some(c.failure_threshold.into()),
            recovery_timeout_ms: Some(c.recovery_timeout_ms.into()),
            half_open_max_calls: Some(c.half_open_max_calls.into()),
        }
    }
}

/// An API's retries, health check and circuit breaker, every field's problem reported.
pub fn resilience(
    retries: Option<i64>,
    health_check: Option<&HealthCheckBody>,
    circuit_breaker: Option<CircuitBreakerBody>,
) -> Result<ApiResilience, ApiError> {
    let mut problems = Problems::default();
    let r = validate::resilience(
        &ResilienceFields {
            retries,
            health_check: health_check.map(HealthCheckBody::fields),
            circuit_breaker: circuit_breaker.map(|c| CircuitBreakerFields {
                enabled: c.enabled,
                failure_threshold: c.failure_threshold,
                recovery_timeout_ms: c.recovery_timeout_ms,
                half_open_max_calls: c.half_open_max_calls,
            }),
        },
        &mut problems,
    );
    Ok(problems.or_value(r)?)
}

// ---- Targets -------------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetIn {
    /// An `http://` or `https://` URL, as an API's `upstream_url`.
    pub url: String,
    /// Its share of the requests, 1 to 1000 (default 1).
    pub weight: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct TargetOut {
    pub id: i64,
    pub api_id: i64,
    pub url: String,
    pub weight: i32,
    pub created_at: DateTime<Utc>,
}

impl From<api_target::Model> for TargetOut {
    fn from(t: api_target::Model) -> Self {
        Self {
            id: t.id,
            api_id: t.api_id,
            url: t.url,
            weight: t.weight,
            created_at: t.created_at,
        }
    }
}

/// One target as one data plane sees it (reported every few seconds).
#[derive(Serialize, ToSchema)]
pub struct TargetHealthOut {
    pub target_id: i64,
    pub url: String,
    /// The data plane that reported it.
    pub node: String,
    /// It takes requests: not out by the active health check, circuit not open.
    pub up: bool,
    /// `closed`, `open` or `half_open`.
    pub circuit: String,
    /// The last active check's latency (when the API has one and it answered).
    pub last_check_ms: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub in_flight: u32,
    pub reported_at: DateTime<Utc>,
}

impl From<crate::state::TargetHealth> for TargetHealthOut {
    fn from(h: crate::state::TargetHealth) -> Self {
        Self {
            target_id: h.report.target_id,
            url: h.report.url,
            node: h.node,
            up: h.report.up,
            circuit: h.report.circuit,
            last_check_ms: h.report.last_check_ms,
            last_error: h.report.last_error,
            consecutive_failures: h.report.consecutive_failures,
            in_flight: h.report.in_flight,
            reported_at: DateTime::from_timestamp_millis(h.reported_at_ms).unwrap_or_default(),
        }
    }
}

/// The live state of an API's targets on every data plane.
#[derive(Serialize, ToSchema)]
pub struct HealthOut {
    pub items: Vec<TargetHealthOut>,
}

/// An API to store, every field's problem reported.
pub fn new_api(fields: &ApiFields<'_>) -> Result<NewApi, ApiError> {
    let mut problems = Problems::default();
    let api = validate::api(fields, &mut problems);
    Ok(problems.or_value(api)?)
}

// ---- Routes --------------------------------------------------------------------------------

/// A route's own rate window, per (route, key or client), on top of the plan's.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RouteLimitBody {
    pub requests_per_minute: Option<i64>,
    /// Default: `requests_per_minute`.
    pub burst: Option<i64>,
    pub requests_per_day: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteIn {
    /// Starts with `/`; `{name}` segments match one path segment.
    pub path: String,
    /// `prefix` (default: the path and everything below it) or `exact`.
    #[serde(rename = "match")]
    pub r#match: Option<String>,
    /// Methods accepted (empty or absent: any); `HEAD` is accepted wherever `GET` is.
    pub methods: Option<Vec<String>>,
    /// Higher first (default 0); ties go to the longer literal path, then the older route.
    pub priority: Option<i64>,
    /// Forward only what follows the path's literal prefix (default false).
    pub strip_prefix: Option<bool>,
    /// Overrides the API's upstream timeout.
    pub timeout_ms: Option<i64>,
    /// Overrides the API's retries (0 to 5).
    pub retries: Option<i64>,
    /// An extra window per route and key (or client), decided with the plan's windows
    /// in one atomic step: a refusal in either consumes nothing in both.
    pub rate_limit: Option<RouteLimitBody>,
    /// Units each request consumes in every window it is counted in, the plan's and the route's
    /// (1 to 1000, default 1). A request costing more than a window holds is refused (429).
    pub cost: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct RouteOut {
    pub id: i64,
    pub api_id: i64,
    pub path: String,
    #[serde(rename = "match")]
    pub r#match: String,
    pub methods: Vec<String>,
    pub priority: i32,
    pub strip_prefix: bool,
    pub timeout_ms: Option<i32>,
    pub retries: Option<i32>,
    pub rate_limit: Option<RouteLimitBody>,
    pub cost: i32,
    pub created_at: DateTime<Utc>,
}

impl From<api_route::Model> for RouteOut {
    fn from(r: api_route::Model) -> Self {
        Self {
            id: r.id,
            api_id: r.api_id,
            methods: r
                .methods
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            path: r.path,
            r#match: r.match_kind,
            priority: r.priority,
            strip_prefix: r.strip_prefix,
            timeout_ms: r.timeout_ms,
            retries: r.retries,
            rate_limit: r.rl_requests_per_minute.map(|rpm| RouteLimitBody {
                requests_per_minute: Some(rpm),
                burst: r.rl_burst,
                requests_per_day: r.rl_requests_per_day,
            }),
            cost: r.cost,
            created_at: r.created_at,
        }
    }
}

// ---- Keys ----------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct KeyOut {
    pub id: i64,
    pub name: String,
    /// The start of the key, enough to recognise it.
    pub prefix: String,
    pub plan_id: i64,
    pub is_active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<api_key::Model> for KeyOut {
    fn from(k: api_key::Model) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            plan_id: k.plan_id,
            is_active: k.is_active,
            expires_at: k.expires_at,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct KeyCreated {
    pub id: i64,
    /// The key itself: shown only in this response.
    pub key: String,
    pub prefix: String,
    pub name: String,
    pub plan_id: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl KeyCreated {
    pub fn new(k: api_key::Model, raw: &domain::apikey::ApiKey) -> Self {
        Self {
            id: k.id,
            key: raw.expose().to_owned(),
            prefix: k.prefix,
            name: k.name,
            plan_id: k.plan_id,
            expires_at: k.expires_at,
            created_at: k.created_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyIn {
    pub name: String,
    pub plan_id: i64,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub plan_id: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// How long the old key keeps working, 0 to 2592000 seconds (default 0: revoked at once).
    pub grace_seconds: Option<i64>,
}

// ---- Clients -------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct ClientOut {
    pub id: i64,
    pub client_id: String,
    pub name: String,
    pub plan_id: i64,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
}

impl From<client::Model> for ClientOut {
    fn from(c: client::Model) -> Self {
        Self {
            id: c.id,
            client_id: c.client_id,
            name: c.name,
            plan_id: c.plan_id,
            is_active: c.is_active,
            created_at: c.created_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientIn {
    pub client_id: String,
    pub name: String,
    pub plan_id: i64,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    pub name: Option<String>,
    pub plan_id: Option<i64>,
    pub is_active: Option<bool>,
}

// ---- Usage ---------------------------------------------------------------------------------

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    pub api_id: Option<i64>,
    pub key_id: Option<i64>,
    /// Row id of a client (the `id` of `/clients`, not its `client_id`).
    pub client_id: Option<i64>,
    /// Start, RFC 3339 (default: 24 hours ago for minutes, 30 days ago for days).
    pub from: Option<DateTime<Utc>>,
    /// End, RFC 3339 (default: now).
    pub to: Option<DateTime<Utc>>,
    /// `minute` (the last two days are kept) or `day` (default).
    pub granularity: Option<String>,
}

#[derive(Serialize, ToSchema, Default, Clone, Copy)]
pub struct UsageTotals {
    pub requests: i64,
    pub rejected: i64,
    pub upstream_errors: i64,
}

#[derive(Serialize, ToSchema)]
pub struct UsagePoint {
    /// Start of the minute or day (UTC).
    pub start: DateTime<Utc>,
    pub requests: i64,
    pub rejected: i64,
    pub upstream_errors: i64,
}

#[derive(Serialize, ToSchema)]
pub struct UsageOut {
    pub totals: UsageTotals,
    pub series: Vec<UsagePoint>,
}
