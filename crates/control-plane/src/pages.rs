//! What every page shares: the layout fields of `base.html`, rendering, static assets, charts.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use actix_web::{HttpResponse, web};
use askama::Template;
use sha2::{Digest, Sha256};

use crate::errors::UiError;
use crate::session::{AdminUser, AnyUser, TenantUser, take_flash};
use crate::state::AppState;

pub const APP_CSS: &str = include_str!("../../../static/app.css");
pub const APP_JS: &str = include_str!("../../../static/app.js");

/// A short hash of the assets, appended as `?v=` so browsers refetch them after an upgrade.
pub fn asset_version() -> String {
    let mut h = Sha256::new();
    h.update(APP_CSS);
    h.update(APP_JS);
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

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(body)
}

pub fn state(data: &web::Data<AppState>) -> &AppState {
    data.get_ref()
}

/// One bar of a server-rendered SVG bar chart.
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub height: u32,
    pub label: String,
    pub value: i64,
}

/// A bar chart drawn by `partials/chart.html`.
pub struct Chart {
    pub bars: Vec<Bar>,
    pub bar_width: u32,
    pub width: u32,
    pub height: u32,
    pub max: i64,
}

impl Chart {
    pub const HEIGHT: u32 = 120;

    pub fn new(points: &[(String, i64)], width: u32) -> Self {
        let n = u32::try_from(points.len().max(1)).unwrap_or(1);
        let slot = (width / n).max(2);
        let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
        let bars = points
            .iter()
            .enumerate()
            .map(|(i, (label, value))| {
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                let height =
                    ((*value as f64 / max as f64) * f64::from(Self::HEIGHT - 4)).round() as u32;
                let height = if *value > 0 { height.max(1) } else { 0 };
                Bar {
                    x: u32::try_from(i).unwrap_or(0) * slot,
                    y: Self::HEIGHT - height,
                    height,
                    label: label.clone(),
                    value: *value,
                }
            })
            .collect();
        Self {
            bars,
            bar_width: slot.saturating_sub(1).max(1),
            width: slot * n,
            height: Self::HEIGHT,
            max,
        }
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
