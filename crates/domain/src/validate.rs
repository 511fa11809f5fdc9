//! Field validation shared by the dashboard's forms and the management API: each rule is written
//! once, here, and both report every field's problem at once (not only the first).
//!
//! A [`Problem`] names its field and says what is wrong as a sentence without its subject ("must
//! be 1 to 100 characters long"); each surface puts its own name for the field in front (the
//! form's label, the JSON field's name).

use std::fmt::Display;

use crate::header::{KeyHeader, UpstreamTimeout};
use crate::plan::{Enforcement, PlanLimits, PlanLimitsError};
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
        assert_eq!(client_id(" web-1 "), Ok("web-1".to_owned()));
    }
}
