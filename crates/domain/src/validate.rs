//! Field validation shared by the dashboard's forms and the management API: each rule is written
//! once, here, and both report every field's problem at once (not only the first).
//!
//! A [`Problem`] names its field and says what is wrong as a sentence without its subject ("must
//! be 1 to 100 characters long"); each surface puts its own name for the field in front (the
//! form's label, the JSON field's name).

use std::fmt::Display;

use crate::header::{KeyHeader, UpstreamTimeout};
use crate::plan::{Enforcement, PlanLimits, PlanLimitsError};
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
    Some(NewApi {
        name: name?,
        slug: slug?,
        upstream_url: upstream_url?,
        key_header: key_header?,
        timeout: timeout?,
        pass_encoded_slashes: f.pass_encoded_slashes,
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
    if matches!(retries, Some(Some(_))) {
        problems.add(
            "retries",
            "is not used by this version yet (retries come with several targets per API): leave it out",
        );
    }
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
