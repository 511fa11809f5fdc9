//! Field validation shared by the dashboard's forms and the management API: each rule is written
//! once, here, and both report every field's problem at once (not only the first).
//!
//! A [`Problem`] names its field and says what is wrong as a sentence without its subject ("must
//! be 1 to 100 characters long"); each surface puts its own name for the field in front (the
//! form's label, the JSON field's name).

use std::fmt::Display;

use crate::header::{KeyHeader, UpstreamProtocol, UpstreamTimeout, WebsocketIdle};
use crate::plan::{Enforcement, MAX_LIMIT, PlanLimits, PlanLimitsError, TenantLimits};
use crate::resilience::{ApiResilience, CircuitBreaker, HealthCheck, MAX_WEIGHT, NewTarget};
use crate::route::{
    MAX_COST, MAX_PRIORITY, MAX_RETRIES, MatchKind, Methods, NewRoute, RouteLimit, RoutePath,
};
use crate::slug::Slug;
use crate::store::NewApi;
use crate::upstream::UpstreamUrl;

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: &'static str,
    pub message: String,
}

/// Every field's problem, in the order the fields were checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push(Problem {
            field,
            message: message.into(),
        });
    }

    /// `r`'s value, or `None` with its error recorded against `field`.
    pub fn check<T, E: Display>(&mut self, field: &'static str, r: Result<T, E>) -> Option<T> {
        r.map_err(|e| self.add(field, e.to_string())).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// `value` when no problem was found, else the problems.
    pub fn or_value<T>(self, value: Option<T>) -> Result<T, Self> {
        match value {
            Some(v) if self.is_empty() => Ok(v),
            _ => Err(self),
        }
    }
}

const NAME: &str = "must be 1 to 100 characters long";

/// A display name (of an API, plan, key, client or organisation): 1 to 100 characters, trimmed.
pub fn name(v: &str) -> Result<String, &'static str> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > 100 {
        return Err(NAME);
    }
    Ok(v.to_owned())
}

/// A client id: 1 to 100 visible ASCII characters (it travels in a header), trimmed.
pub fn client_id(v: &str) -> Result<String, &'static str> {
    let v = v.trim();
    if v.is_empty() || v.len() > 100 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1 to 100 visible ASCII characters, without spaces");
    }
    Ok(v.to_owned())
}

/// An API's fields as a form or a JSON body gives them.
pub struct ApiFields<'a> {
    pub name: &'a str,
    pub slug: &'a str,
    pub upstream_url: &'a str,
    /// `None`: the default `X-API-Key`.
    pub key_header: Option<&'a str>,
    /// `None`: the default timeout.
    pub timeout_ms: Option<i64>,
    pub pass_encoded_slashes: bool,
    pub log_query: bool,
    /// `None`: `key`.
    pub auth: Option<&'a str>,
    pub identity_token: bool,
    /// `None`: `http1`.
    pub upstream_protocol: Option<&'a str>,
    /// `None`: one hour.
    pub websocket_idle_timeout_ms: Option<i64>,
}

/// An API to store, with every field's problem recorded in `problems`.
pub fn api(f: &ApiFields<'_>, problems: &mut Problems) -> Option<NewApi> {
    let name = problems.check("name", name(f.name));
    let slug = problems.check("slug", Slug::parse(f.slug.trim()));
    let upstream_url = problems.check("upstream_url", UpstreamUrl::parse(f.upstream_url.trim()));
    let key_header = problems.check(
        "key_header",
        f.key_header
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map_or(Ok(KeyHeader::default()), KeyHeader::parse),
    );
    let timeout = problems.check(
        "timeout_ms",
        f.timeout_ms
            .map_or(Ok(UpstreamTimeout::default()), UpstreamTimeout::from_millis),
    );
    let auth = problems.check(
        "auth",
        f.auth
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map_or(Ok(crate::jwt::ApiAuth::Key), crate::jwt::ApiAuth::parse),
    );
    let upstream_protocol = problems.check(
        "upstream_protocol",
        f.upstream_protocol
            .map_or(Ok(UpstreamProtocol::default()), UpstreamProtocol::parse),
    );
    let websocket_idle = problems.check(
        "websocket_idle_timeout_ms",
        f.websocket_idle_timeout_ms
            .map_or(Ok(WebsocketIdle::default()), WebsocketIdle::from_millis),
    );
    Some(NewApi {
        auth: auth?,
        identity_token: f.identity_token,
        upstream_protocol: upstream_protocol?,
        websocket_idle: websocket_idle?,
        name: name?,
        slug: slug?,
        upstream_url: upstream_url?,
        key_header: key_header?,
        timeout: timeout?,
        pass_encoded_slashes: f.pass_encoded_slashes,
        log_query: f.log_query,
    })
}

/// A plan's fields as a form or a JSON body gives them.
pub struct PlanFields<'a> {
    pub name: &'a str,
    pub requests_per_minute: Option<i64>,
    pub burst: Option<i64>,
    pub requests_per_day: Option<i64>,
    pub requests_per_month: Option<i64>,
    /// `None`: strict.
    pub enforcement: Option<&'a str>,
}

/// A plan's name, limits and enforcement, with every field's problem recorded in `problems`.
pub fn plan(
    f: &PlanFields<'_>,
    problems: &mut Problems,
) -> Option<(String, PlanLimits, Enforcement)> {
    let name = problems.check("name", name(f.name));
    let enforcement = problems.check(
        "enforcement",
        f.enforcement
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map_or(Ok(Enforcement::Strict), str::parse),
    );
    let Some(rpm) = f.requests_per_minute else {
        problems.add(
            "requests_per_minute",
            "is required: a positive whole number",
        );
        return None;
    };
    // Each window on its own first, so that every one that is wrong is said.
    let mut windows_ok = true;
    for (field, value) in [
        ("requests_per_minute", Some(rpm)),
        ("burst", f.burst),
        ("requests_per_day", f.requests_per_day),
        ("requests_per_month", f.requests_per_month),
    ] {
        if value.is_some_and(|v| v < 1) {
            problems.add(field, "must be a positive whole number");
            windows_ok = false;
        }
    }
    if !windows_ok {
        return None;
    }
    let limits = PlanLimits::new(rpm, f.burst, f.requests_per_day, f.requests_per_month)
        .map_err(|e| {
            let field = match e {
                PlanLimitsError::RequestsPerMinute => "requests_per_minute",
                PlanLimitsError::Burst => "burst",
                PlanLimitsError::RequestsPerDay | PlanLimitsError::DayAboveMonth => {
                    "requests_per_day"
                }
                PlanLimitsError::RequestsPerMonth => "requests_per_month",
            };
            problems.add(field, e.to_string());
        })
        .ok();
    Some((name?, limits?, enforcement?))
}

/// A tenant's ceiling as a form or a JSON body gives it (every field may be left out).
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantLimitFields {
    pub requests_per_minute: Option<i64>,
    pub burst: Option<i64>,
    pub requests_per_day: Option<i64>,
    pub requests_per_month: Option<i64>,
}

/// A tenant's ceiling (`None` inside: no field set, no ceiling), with every field's problem
/// recorded in `problems`.
pub fn tenant_limits(
    f: &TenantLimitFields,
    problems: &mut Problems,
) -> Option<Option<TenantLimits>> {
    let before = problems.0.len();
    let mut get = |field: &'static str, v: Option<i64>| match v {
        Some(v) if v < 1 || v.unsigned_abs() > MAX_LIMIT => {
            problems.add(field, "must be a positive whole number");
            None
        }
        v => v.and_then(|v| u64::try_from(v).ok()),
    };
    let t = TenantLimits {
        requests_per_minute: get("requests_per_minute", f.requests_per_minute),
        burst: get("burst", f.burst),
        requests_per_day: get("requests_per_day", f.requests_per_day),
        requests_per_month: get("requests_per_month", f.requests_per_month),
    };
    if t.burst.is_some() && t.requests_per_minute.is_none() {
        problems.add(
            "burst",
            "needs requests_per_minute: a burst is the size of the per-minute bucket",
        );
    }
    if let (Some(d), Some(m)) = (t.requests_per_day, t.requests_per_month)
        && d > m
    {
        problems.add(
            "requests_per_day",
            PlanLimitsError::DayAboveMonth.to_string(),
        );
    }
    (problems.0.len() == before).then_some((!t.is_empty()).then_some(t))
}

/// A route's own rate window as given.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteLimitFields {
    pub requests_per_minute: Option<i64>,
    pub burst: Option<i64>,
    pub requests_per_day: Option<i64>,
}

/// A route's fields as a form or a JSON body gives them.
pub struct RouteFields<'a, M: AsRef<str>> {
    pub path: &'a str,
    /// `None`: `prefix`.
    pub match_kind: Option<&'a str>,
    pub methods: &'a [M],
    pub priority: Option<i64>,
    pub strip_prefix: bool,
    pub timeout_ms: Option<i64>,
    pub retries: Option<i64>,
    pub rate_limit: Option<RouteLimitFields>,
    /// `None`: 1.
    pub cost: Option<i64>,
}

/// A route to store, with every field's problem recorded in `problems`. (Whether another route
/// of the API already takes the same requests is the caller's check: it needs the others.)
pub fn route<M: AsRef<str>>(f: &RouteFields<'_, M>, problems: &mut Problems) -> Option<NewRoute> {
    let path = problems.check("path", RoutePath::parse(f.path.trim()));
    let kind = problems.check(
        "match",
        f.match_kind
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map_or(Ok(MatchKind::Prefix), MatchKind::parse),
    );
    let methods = problems.check("methods", Methods::parse(f.methods));
    let priority = problems.check(
        "priority",
        match f.priority.unwrap_or(0) {
            p if p.abs() <= MAX_PRIORITY => Ok(i32::try_from(p).unwrap_or(0)),
            _ => Err(format!(
                "must be a whole number from -{MAX_PRIORITY} to {MAX_PRIORITY}"
            )),
        },
    );
    let timeout_ms = problems.check(
        "timeout_ms",
        f.timeout_ms
            .map(|t| UpstreamTimeout::from_millis(t).map(UpstreamTimeout::millis))
            .transpose(),
    );
    let retries = problems.check(
        "retries",
        match f.retries {
            Some(r) if !(0..=MAX_RETRIES).contains(&r) => {
                Err(format!("must be a whole number from 0 to {MAX_RETRIES}"))
            }
            r => Ok(r.and_then(|r| i32::try_from(r).ok())),
        },
    );
    let cost = problems.check(
        "cost",
        match f.cost.unwrap_or(1) {
            c if (1..=MAX_COST).contains(&c) => Ok(i32::try_from(c).unwrap_or(1)),
            _ => Err(format!("must be a whole number from 1 to {MAX_COST}")),
        },
    );
    let rate_limit = match f.rate_limit {
        None => Some(None),
        Some(rl) => route_limit(rl, problems).map(Some),
    };
    Some(NewRoute {
        path: path?,
        kind: kind?,
        methods: methods?,
        priority: priority?,
        strip_prefix: f.strip_prefix,
        timeout_ms: timeout_ms?,
        retries: retries?,
        rate_limit: rate_limit?,
        cost: cost?,
    })
}

fn route_limit(rl: RouteLimitFields, problems: &mut Problems) -> Option<RouteLimit> {
    let Some(rpm) = rl.requests_per_minute else {
        problems.add(
            "rate_limit.requests_per_minute",
            "is required with a rate limit: a positive whole number",
        );
        return None;
    };
    let mut ok = true;
    for (field, value) in [
        ("rate_limit.requests_per_minute", Some(rpm)),
        ("rate_limit.burst", rl.burst),
        ("rate_limit.requests_per_day", rl.requests_per_day),
    ] {
        if value.is_some_and(|v| v < 1) {
            problems.add(field, "must be a positive whole number");
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    match PlanLimits::new(rpm, rl.burst, rl.requests_per_day, None) {
        Ok(l) => Some(RouteLimit {
            requests_per_minute: l.requests_per_minute,
            burst: l.burst,
            requests_per_day: l.requests_per_day,
        }),
        Err(e) => {
            let field = match e {
                PlanLimitsError::Burst => "rate_limit.burst",
                PlanLimitsError::RequestsPerDay | PlanLimitsError::DayAboveMonth => {
                    "rate_limit.requests_per_day"
                }
                _ => "rate_limit.requests_per_minute",
            };
            problems.add(field, e.to_string());
            None
        }
    }
}

/// A whole number in `lo..=hi`, recorded against `field` when it is not.
fn bounded(problems: &mut Problems, field: &'static str, v: i64, lo: i64, hi: i64) -> Option<u32> {
    if (lo..=hi).contains(&v) {
        u32::try_from(v).ok()
    } else {
        problems.add(field, format!("must be a whole number from {lo} to {hi}"));
        None
    }
}

/// An API's active health check as given (absent fields take the defaults).
#[derive(Debug, Clone, Default)]
pub struct HealthCheckFields<'a> {
    pub path: Option<&'a str>,
    pub interval_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
    pub status_min: Option<i64>,
    pub status_max: Option<i64>,
}

/// An API's circuit breaker as given (absent fields take the defaults).
#[derive(Debug, Clone, Copy, Default)]
pub struct CircuitBreakerFields {
    pub enabled: Option<bool>,
    pub failure_threshold: Option<i64>,
    pub recovery_timeout_ms: Option<i64>,
    pub half_open_max_calls: Option<i64>,
}

/// An API's retries, health check (`None`: off) and circuit breaker (`None`: the defaults).
pub struct ResilienceFields<'a> {
    pub retries: Option<i64>,
    pub health_check: Option<HealthCheckFields<'a>>,
    pub circuit_breaker: Option<CircuitBreakerFields>,
}

/// An API's resilience settings to store, with every field's problem recorded in `problems`.
pub fn resilience(f: &ResilienceFields<'_>, problems: &mut Problems) -> Option<ApiResilience> {
    let retries = match f.retries {
        None => Some(None),
        Some(r) => bounded(problems, "retries", r, 0, crate::resilience::MAX_RETRIES)
            .map(|r| Some(r.cast_signed())),
    };
    let health_check = match &f.health_check {
        None => Some(None),
        Some(h) => health_check(h, problems).map(Some),
    };
    let circuit_breaker = match f.circuit_breaker {
        None => Some(CircuitBreaker::default()),
        Some(c) => circuit_breaker(c, problems),
    };
    Some(ApiResilience {
        retries: retries?,
        health_check: health_check?,
        circuit_breaker: circuit_breaker?,
    })
}

fn health_check(f: &HealthCheckFields<'_>, problems: &mut Problems) -> Option<HealthCheck> {
    let d = HealthCheck::default();
    let path = f.path.map_or(d.path.as_str(), str::trim);
    let path_ok = path.starts_with('/')
        && path.len() <= 200
        && path.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
    if !path_ok {
        problems.add(
            "health_check.path",
            "must start with / and be at most 200 visible characters (no spaces, no #)",
        );
    }
    let mut num = |field, v: Option<i64>, default: u32, lo, hi| {
        bounded(problems, field, v.unwrap_or(i64::from(default)), lo, hi)
    };
    let interval = num(
        "health_check.interval_ms",
        f.interval_ms,
        d.interval_ms,
        100,
        3_600_000,
    );
    let timeout = num(
        "health_check.timeout_ms",
        f.timeout_ms,
        d.timeout_ms,
        10,
        60_000,
    );
    let healthy = num(
        "health_check.healthy_threshold",
        f.healthy_threshold,
        d.healthy_threshold,
        1,
        100,
    );
    let unhealthy = num(
        "health_check.unhealthy_threshold",
        f.unhealthy_threshold,
        d.unhealthy_threshold,
        1,
        100,
    );
    let min = num(
        "health_check.status_min",
        f.status_min,
        d.status_min.into(),
        100,
        599,
    );
    let max = num(
        "health_check.status_max",
        f.status_max,
        d.status_max.into(),
        100,
        599,
    );
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        problems.add("health_check.status_max", "must not be below status_min");
        return None;
    }
    if let (Some(t), Some(i)) = (timeout, interval)
        && t > i
    {
        problems.add(
            "health_check.timeout_ms",
            "must not be longer than interval_ms",
        );
        return None;
    }
    if !path_ok {
        return None;
    }
    Some(HealthCheck {
        path: path.to_owned(),
        interval_ms: interval?,
        timeout_ms: timeout?,
        healthy_threshold: healthy?,
        unhealthy_threshold: unhealthy?,
        status_min: u16::try_from(min?).ok()?,
        status_max: u16::try_from(max?).ok()?,
    })
}

fn circuit_breaker(f: CircuitBreakerFields, problems: &mut Problems) -> Option<CircuitBreaker> {
    let d = CircuitBreaker::default();
    let mut num = |field, v: Option<i64>, default: u32, lo, hi| {
        bounded(problems, field, v.unwrap_or(i64::from(default)), lo, hi)
    };
    let failures = num(
        "circuit_breaker.failure_threshold",
        f.failure_threshold,
        d.failure_threshold,
        1,
        1000,
    );
    let recovery = num(
        "circuit_breaker.recovery_timeout_ms",
        f.recovery_timeout_ms,
        d.recovery_timeout_ms,
        100,
        3_600_000,
    );
    let probes = num(
        "circuit_breaker.half_open_max_calls",
        f.half_open_max_calls,
        d.half_open_max_calls,
        1,
        100,
    );
    Some(CircuitBreaker {
        enabled: f.enabled.unwrap_or(d.enabled),
        failure_threshold: failures?,
        recovery_timeout_ms: recovery?,
        half_open_max_calls: probes?,
    })
}

/// A target to store: its URL (as an upstream URL) and weight (default 1).
pub fn target(url: &str, weight: Option<i64>, problems: &mut Problems) -> Option<NewTarget> {
    let url = problems.check("url", UpstreamUrl::parse(url.trim()));
    let weight = bounded(problems, "weight", weight.unwrap_or(1), 1, MAX_WEIGHT);
    Some(NewTarget {
        url: url?,
        weight: weight?.cast_signed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let mut p = Problems::default();
        let api = api(
            &ApiFields {
                name: "",
                slug: "Not A Slug",
                upstream_url: "ftp://x",
                key_header: Some("Host"),
                timeout_ms: Some(0),
                pass_encoded_slashes: false,
                log_query: false,
                auth: None,
                identity_token: false,
                upstream_protocol: None,
                websocket_idle_timeout_ms: None,
            },
            &mut p,
        );
        assert!(api.is_none());
        let fields: Vec<&str> = p.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["name", "slug", "upstream_url", "key_header", "timeout_ms"]
        );
        let mut p = Problems::default();
        let plan = plan(
            &PlanFields {
                name: &"x".repeat(101),
                requests_per_minute: Some(0),
                burst: None,
                requests_per_day: Some(-1),
                requests_per_month: None,
                enforcement: Some("loose"),
            },
            &mut p,
        );
        assert!(plan.is_none());
        let fields: Vec<&str> = p.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "name",
                "enforcement",
                "requests_per_minute",
                "requests_per_day"
            ]
        );
        assert_eq!(p.iter().next().unwrap().message, NAME);
        assert_eq!(name("  Weather  "), Ok("Weather".to_owned()));
        assert!(client_id("has space").is_err());
        let mut p = Problems::default();
        let r = route(
            &RouteFields {
                path: "users",
                match_kind: Some("regex"),
                methods: &["GET", "FETCH"],
                priority: Some(2_000_000),
                strip_prefix: false,
                timeout_ms: Some(0),
                retries: Some(9),
                rate_limit: Some(RouteLimitFields {
                    requests_per_minute: Some(10),
                    burst: Some(0),
                    requests_per_day: None,
                }),
                cost: Some(0),
            },
            &mut p,
        );
        assert!(r.is_none());
        let fields: Vec<&str> = p.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "path",
                "match",
                "methods",
                "priority",
                "timeout_ms",
                "retries",
                "cost",
                "rate_limit.burst"
            ]
        );
        assert_eq!(client_id(" web-1 "), Ok("web-1".to_owned()));
    }
}
