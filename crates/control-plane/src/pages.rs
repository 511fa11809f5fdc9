//! What every page shares: the layout fields of `base.html`, rendering, static assets, charts.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use actix_web::{HttpResponse, web};
use askama::Template;
use sha2::{Digest, Sha256};

use domain::validate::Problems;

use crate::errors::UiError;
use crate::session::{AdminUser, AnyUser, TenantUser, take_flash};
use crate::state::AppState;

pub const APP_CSS: &str = include_str!("../../../static/app.css");
pub const APP_JS: &str = include_str!("../../../static/app.js");
pub const FAVICON: &str = include_str!("../../../static/favicon.svg");

/// A short hash of the assets, appended as `?v=` so browsers refetch them after an upgrade.
pub fn asset_version() -> String {
    let mut h = Sha256::new();
    h.update(APP_CSS);
    h.update(APP_JS);
    h.update(FAVICON);
    hex::encode(&h.finalize()[..6])
}

/// Fields `base.html` reads.
pub struct Layout {
    pub title: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    pub username: Option<String>,
    pub tenant_name: Option<String>,
    pub is_admin: bool,
    pub csrf: String,
    pub flash: Option<String>,
    pub asset_version: String,
}

impl Layout {
    pub fn tenant(
        u: &TenantUser,
        state: &AppState,
        title: impl Into<String>,
        nav: &'static str,
    ) -> Self {
        Self {
            title: title.into(),
            nav,
            username: Some(u.user.username.clone()),
            tenant_name: Some(u.tenant.name.clone()),
            is_admin: u.user.is_admin,
            csrf: u.csrf.clone(),
            flash: take_flash(&u.session),
            asset_version: state.asset_version.clone(),
        }
    }

    pub fn admin(u: &AdminUser, state: &AppState, title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            nav: "admin",
            username: Some(u.user.username.clone()),
            tenant_name: None,
            is_admin: true,
            csrf: u.csrf.clone(),
            flash: take_flash(&u.session),
            asset_version: state.asset_version.clone(),
        }
    }

    /// The layout of a page any logged-in user sees (their own account).
    pub fn any(u: &AnyUser, state: &AppState, title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            nav: "account",
            username: Some(u.user.username.clone()),
            tenant_name: u.tenant.as_ref().map(|t| t.name.clone()),
            is_admin: u.user.is_admin,
            csrf: u.csrf.clone(),
            flash: take_flash(&u.session),
            asset_version: state.asset_version.clone(),
        }
    }

    /// The layout of an error page: the caller's top bar when logged in, a flash left for the
    /// next real page.
    pub fn error(u: Option<&AnyUser>, asset_version: String) -> Self {
        Self {
            title: String::new(),
            nav: "",
            username: u.map(|u| u.user.username.clone()),
            tenant_name: u.and_then(|u| u.tenant.as_ref().map(|t| t.name.clone())),
            is_admin: u.is_some_and(|u| u.user.is_admin),
            csrf: u.map(|u| u.csrf.clone()).unwrap_or_default(),
            flash: None,
            asset_version,
        }
    }

    pub fn anonymous(state: &AppState, csrf: String, title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            nav: "",
            username: None,
            tenant_name: None,
            is_admin: false,
            csrf,
            flash: None,
            asset_version: state.asset_version.clone(),
        }
    }
}

pub fn render(t: &impl Template) -> Result<HttpResponse, UiError> {
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(t.render()?))
}

pub fn render_status(
    status: actix_web::http::StatusCode,
    t: &impl Template,
) -> Result<HttpResponse, UiError> {
    Ok(HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(t.render()?))
}

/// A page that shows a secret: never cached, never stored.
pub fn render_secret(t: &impl Template) -> Result<HttpResponse, UiError> {
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(t.render()?))
}

pub fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, to.to_owned()))
        .finish()
}

pub async fn css() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

pub async fn js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The tab icon, also at `/favicon.ico` where browsers look for it unasked.
pub async fn favicon() -> HttpResponse {
    asset("image/svg+xml", FAVICON)
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(body)
}

pub fn state(data: &web::Data<AppState>) -> &AppState {
    data.get_ref()
}

/// One time slot of a server-rendered SVG bar chart: admitted requests stacked under refused
/// (429) ones, with a tooltip over the whole column.
pub struct Bar {
    pub x: u32,
    /// Top and height of the admitted part.
    pub ok_y: u32,
    pub ok_height: u32,
    /// Top and height of the refused part, drawn above the admitted one.
    pub refused_y: u32,
    pub refused_height: u32,
    pub label: String,
    /// "12 requests: 10 admitted, 2 refused (429)".
    pub tooltip: String,
}

/// A bar chart drawn by `partials/chart.html`, with a y axis from 0 to `max` (a round number at
/// or above the tallest column) and the first, middle and last slots named under it.
pub struct Chart {
    pub bars: Vec<Bar>,
    pub bar_width: u32,
    pub width: u32,
    pub height: u32,
    pub max: i64,
    pub half: String,
    pub x_labels: [String; 3],
}

/// The smallest of 1, 2, 5, 10, 20, 50… at or above `n` (at least 1), so the axis reads well.
pub fn round_up(n: i64) -> i64 {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if step * m >= n {
                return step * m;
            }
        }
        step *= 10;
    }
}

fn height_of(value: i64, max: i64, full: u32) -> u32 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let h = ((value as f64 / max as f64) * f64::from(full)).round() as u32;
    if value > 0 { h.max(1) } else { 0 }
}

impl Chart {
    pub const HEIGHT: u32 = 120;

    /// `points`: (slot label, requests including refused ones, refused with 429).
    pub fn new(points: &[(String, i64, i64)], width: u32) -> Self {
        let n = u32::try_from(points.len().max(1)).unwrap_or(1);
        let slot = (width / n).max(2);
        let max = round_up(points.iter().map(|p| p.1).max().unwrap_or(0));
        let bars = points
            .iter()
            .enumerate()
            .map(|(i, (label, total, refused))| {
                let refused = (*refused).clamp(0, *total);
                let admitted = total - refused;
                let all = height_of(*total, max, Self::HEIGHT);
                let refused_height = height_of(refused, max, Self::HEIGHT).min(all);
                let ok_height = if admitted > 0 { (all - refused_height).max(1) } else { 0 };
                let plural = if *total == 1 { "" } else { "s" };
                Bar {
                    x: u32::try_from(i).unwrap_or(0) * slot,
                    ok_y: Self::HEIGHT - ok_height,
                    ok_height,
                    refused_y: Self::HEIGHT - ok_height - refused_height,
                    refused_height,
                    label: label.clone(),
                    tooltip: format!(
                        "{label}: {total} request{plural}: {admitted} admitted, {refused} refused (429)"
                    ),
                }
            })
            .collect();
        let label = |i: usize| points.get(i).map(|p| p.0.clone()).unwrap_or_default();
        let half = if max % 2 == 0 {
            (max / 2).to_string()
        } else {
            format!(
                "{:.1}",
                0.5 * f64::from(u32::try_from(max).unwrap_or(u32::MAX))
            )
        };
        Self {
            bars,
            bar_width: slot.saturating_sub(1).max(1),
            width: slot * n,
            height: Self::HEIGHT,
            max,
            half,
            x_labels: [
                label(0),
                label(points.len() / 2),
                label(points.len().saturating_sub(1)),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_ends_on_a_round_number() {
        let ends: Vec<i64> = [0, 1, 3, 7, 10, 11, 140, 2001]
            .into_iter()
            .map(round_up)
            .collect();
        assert_eq!(ends, [1, 1, 5, 10, 10, 20, 200, 5000]);
    }

    #[test]
    fn refused_requests_stack_on_the_admitted_ones() {
        let c = Chart::new(
            &[("a".into(), 10, 4), ("b".into(), 0, 0), ("c".into(), 5, 5)],
            300,
        );
        assert_eq!(c.max, 10);
        let a = &c.bars[0];
        assert_eq!((a.ok_height, a.refused_height), (72, 48));
        assert_eq!(a.refused_y + a.refused_height, a.ok_y, "no gap, no overlap");
        assert_eq!(a.tooltip, "a: 10 requests: 6 admitted, 4 refused (429)");
        assert_eq!((c.bars[1].ok_height, c.bars[1].refused_height), (0, 0));
        assert_eq!((c.bars[2].ok_height, c.bars[2].refused_height), (0, 60));
        assert_eq!(c.x_labels, ["a".to_owned(), "b".into(), "c".into()]);
    }
}

/// Field errors of a form, by field name, shown next to each field.
#[derive(Default)]
pub struct FieldErrors(pub Vec<(&'static str, String)>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, msg: impl Into<String>) {
        self.0.push((field, msg.into()));
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `value` when neither the form nor the shared validators (`problems`) found anything wrong,
    /// else every problem, each said with the form's label.
    pub fn or_value<T>(mut self, problems: &Problems, value: Option<T>) -> Result<T, Self> {
        self.absorb(problems);
        match value {
            Some(v) if self.is_empty() => Ok(v),
            _ => Err(self),
        }
    }

    /// The shared validators' problems, each said with the form's label for its field
    /// ("Upstream URL must start with http:// or https://."); a field the form already found
    /// wrong (text that is no number, say) is not said twice.
    pub fn absorb(&mut self, problems: &Problems) {
        for p in problems.iter() {
            if self.get(p.field).is_none() {
                self.add(p.field, format!("{} {}.", label(p.field), p.message));
            }
        }
    }
}

/// What a form calls a field the validators name.
fn label(field: &str) -> &str {
    match field {
        "name" => "Name",
        "slug" | "tenant_slug" => "Slug",
        "upstream_url" => "Upstream URL",
        "key_header" => "Key header",
        "timeout_ms" => "Timeout",
        "requests_per_minute" => "Requests per minute",
        "burst" => "Burst",
        "requests_per_day" => "Requests per day",
        "requests_per_month" => "Requests per month",
        "enforcement" => "Enforcement",
        "client_id" => "Client ID",
        "tenant_name" => "Organisation name",
        "path" => "Path",
        "match" => "Match",
        "methods" => "Methods",
        "priority" => "Priority",
        "retries" => "Retries",
        "cost" => "Cost",
        "rate_limit.requests_per_minute" => "Route limit per minute",
        "rate_limit.burst" => "Route burst",
        "rate_limit.requests_per_day" => "Route limit per day",
        "url" => "URL",
        "events" => "Events",
        "secret" => "Signing secret",
        "weight" => "Weight",
        "health_check.path" => "Health check path",
        "health_check.interval_ms" => "Check interval",
        "health_check.timeout_ms" => "Check timeout",
        "health_check.healthy_threshold" => "Good checks to come back",
        "health_check.unhealthy_threshold" => "Failed checks to go out",
        "health_check.status_min" => "Lowest healthy status",
        "health_check.status_max" => "Highest healthy status",
        "circuit_breaker.failure_threshold" => "Failures to open",
        "circuit_breaker.recovery_timeout_ms" => "Recovery time",
        "circuit_breaker.half_open_max_calls" => "Probes to close",
        other => other,
    }
}

/// Parses an optional whole number field: empty is `None`.
pub fn optional_number(s: &str) -> Result<Option<i64>, std::num::ParseIntError> {
    let s = s.trim();
    if s.is_empty() {
        Ok(None)
    } else {
        s.replace('_', "").parse().map(Some)
    }
}
