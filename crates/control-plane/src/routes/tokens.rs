//! Tokens: the tenant's signing keys (rotated here), how long minted tokens live, where callers
//! mint them and where upstreams find the public keys, and a box that checks a token.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::Utc;
use domain::entities::signing_key;
use domain::jwt;
use domain::store;
use serde::Deserialize;

use crate::api::signing::{check, lifetime};
use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, redirect, render, render_status};
use crate::session::{CsrfForm, NoFields, TenantUser, flash};
use crate::state::AppState;

/// What the check box found.
pub struct Checked {
    pub valid: bool,
    /// The failed check's name, or the key id the token names.
    pub what: String,
    pub message: String,
    /// The verified claims, pretty-printed.
    pub claims: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    keys: Vec<signing_key::Model>,
    issuer: String,
    token_url: String,
    jwks_url: String,
    lifetime_minutes: String,
    can_sign: bool,
    errors: FieldErrors,
    token: String,
    checked: Option<Checked>,
}

#[derive(Deserialize, Default)]
pub struct LifetimeForm {
    #[serde(default)]
    lifetime_minutes: String,
}

#[derive(Deserialize, Default)]
pub struct CheckForm {
    #[serde(default)]
    token: String,
}

/// The Tokens page's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/tokens", web::get().to(show))
        .route("/tokens/rotate", web::post().to(rotate))
        .route("/tokens/settings", web::post().to(save_lifetime))
        .route("/tokens/check", web::post().to(check_token));
}

async fn page(
    u: &TenantUser,
    state: &AppState,
    lifetime_minutes: String,
    errors: FieldErrors,
    token: String,
    checked: Option<Checked>,
) -> Result<TokensPage, UiError> {
    let keys = store::signing_keys(&state.db, u.tenant.id, Utc::now()).await?;
    let issuer = state.public_url.trim_end_matches('/').to_owned();
    Ok(TokensPage {
        layout: Layout::tenant(u, state, "Tokens", "tokens"),
        keys,
        token_url: format!("{issuer}/_gateway/token"),
        jwks_url: format!("{issuer}/_gateway/{}/jwks.json", u.tenant.slug),
        issuer,
        lifetime_minutes,
        can_sign: state.config.token_secret().is_some(),
        errors,
        token,
        checked,
    })
}

fn minutes(u: &TenantUser) -> String {
    (i64::from(u.tenant.token_lifetime_s) / 60).to_string()
}

pub async fn show(u: TenantUser, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let m = minutes(&u);
    render(&page(&u, &state, m, FieldErrors::default(), String::new(), None).await?)
}

pub async fn rotate(
    u: TenantUser,
    state: web::Data<AppState>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let Some(secret) = state.config.token_secret() else {
        flash(
            &u.session,
            "This gateway has no token key: its operator sets GATEWAY_TOKEN_KEY (or \
             GATEWAY_SECRET_KEY) first.",
        );
        return Ok(redirect("/tokens"));
    };
    let had = store::signing_keys(&state.db, u.tenant.id, Utc::now())
        .await?
        .iter()
        .any(|k| k.retired_at.is_none());
    let k = state.config.rotate_signing_key(secret, u.tenant.id).await?;
    flash(
        &u.session,
        if had {
            format!(
                "New signing key {}: it signs every token from now on. The previous key still \
                 verifies the tokens it signed until they expire.",
                k.kid
            )
        } else {
            format!("Signing key {} created: tokens can be minted now.", k.kid)
        },
    );
    Ok(redirect("/tokens"))
}

pub async fn save_lifetime(
    u: TenantUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<LifetimeForm>,
) -> Result<HttpResponse, UiError> {
    let parsed = form
        .lifetime_minutes
        .trim()
        .parse::<i64>()
        .map_err(|_| "This must be a whole number of minutes.".to_owned())
        .and_then(|m| {
            lifetime(m.saturating_mul(60)).map_err(|_| {
                format!(
                    "Tokens live 1 to {} minutes (15 is the default).",
                    jwt::MAX_LIFETIME_S / 60
                )
            })
        });
    match parsed {
        Ok(secs) => {
            state.config.set_token_lifetime(u.tenant.id, secs).await?;
            flash(
                &u.session,
                format!("Tokens minted from now on live {} minutes.", secs / 60),
            );
            Ok(redirect("/tokens"))
        }
        Err(message) => {
            let mut errors = FieldErrors::default();
            errors.add("lifetime_minutes", message);
            let p = page(
                &u,
                &state,
                form.lifetime_minutes,
                errors,
                String::new(),
                None,
            )
            .await?;
            render_status(StatusCode::UNPROCESSABLE_ENTITY, &p)
        }
    }
}

pub async fn check_token(
    u: TenantUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<CheckForm>,
) -> Result<HttpResponse, UiError> {
    let token = form.token.trim().to_owned();
    let checked = match check(&state, u.tenant.id, &token).await? {
        Ok(claims) => Checked {
            valid: true,
            what: format!("key {}", claims.sub),
            message: "Valid: signed by your key, issued by this gateway, not expired, and \
                      its API key is active."
                .into(),
            claims: serde_json::to_string_pretty(&claims).unwrap_or_default(),
        },
        Err((what, message)) => Checked {
            valid: false,
            what: what.into(),
            message: message.into(),
            claims: String::new(),
        },
    };
    let m = minutes(&u);
    render(&page(&u, &state, m, FieldErrors::default(), token, Some(checked)).await?)
}
