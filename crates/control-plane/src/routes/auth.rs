//! Sign-up, log-in and log-out.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use domain::limits::Subject;
use domain::plan::PlanLimits;
use domain::sea_orm::TransactionTrait;
use domain::slug::Slug;
use domain::store::{self, StoreError};
use domain::{password, sea_orm};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, redirect, render, render_status};
use crate::session::{CsrfForm, NoFields, csrf_token, flash, log_in, log_out, maybe_user};
use crate::state::AppState;

/// Login attempts allowed per account and per client address: a burst, then one per this many
/// seconds.
const LOGIN_BURST_PER_ACCOUNT: i64 = 5;
const LOGIN_BURST_PER_ADDRESS: i64 = 20;
const LOGIN_REFILL_PER_MINUTE: i64 = 5;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    username: String,
    error: Option<String>,
    signup_enabled: bool,
}

#[derive(Deserialize, Default)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize, Default)]
pub struct RegisterForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    tenant_name: String,
    #[serde(default)]
    tenant_slug: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm_password: String,
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    layout: Layout,
    form: RegisterForm,
    errors: FieldErrors,
}

pub async fn home(req: HttpRequest) -> HttpResponse {
    match maybe_user(&req).await {
        Some((_, Some(_))) => redirect("/dashboard"),
        Some((u, None)) if u.is_admin => redirect("/admin/tenants"),
        _ => redirect("/login"),
    }
}

pub async fn login_page(
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, UiError> {
    let layout = Layout::anonymous(&state, csrf_token(&session)?, "Log in");
    let signup_enabled = state.settings.signup_enabled;
    render(&LoginPage {
        layout,
        username: String::new(),
        error: None,
        signup_enabled,
    })
}

/// The throttling subject of an account name or an address: the same on every control plane, so
/// replicas sharing Redis share the count.
fn login_subject(kind: &str, value: &str) -> Subject {
    let digest = Sha256::digest(format!("{kind}:{value}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Subject::Login(u64::from_be_bytes(first))
}

async fn throttle(state: &AppState, subject: Subject, burst: i64) -> Result<(), UiError> {
    let limits = PlanLimits::new(LOGIN_REFILL_PER_MINUTE, Some(burst), None, None)
        .map_err(|e| UiError::Internal(e.to_string()))?;
    match state.limiter.check(subject, &limits).await {
        Ok((d, _)) if !d.allowed => Err(UiError::TooManyAttempts(d.retry_after_secs())),
        // A limiter outage must not lock everyone out of the dashboard.
        _ => Ok(()),
    }
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    CsrfForm(form): CsrfForm<LoginForm>,
) -> Result<HttpResponse, UiError> {
    let address = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let username = form.username.trim().to_lowercase();
    throttle(
        &state,
        login_subject("address", &address),
        LOGIN_BURST_PER_ADDRESS,
    )
    .await?;
    throttle(
        &state,
        login_subject("account", &username),
        LOGIN_BURST_PER_ACCOUNT,
    )
    .await?;

    let user = store::find_user_by_username(&state.db, &username).await?;
    let password_hash = user.as_ref().map(|u| u.password_hash.clone());
    let candidate = form.password;
    // argon2 is CPU-bound: keep it off the async workers.
    let ok = web::block(move || password::verify_password(password_hash.as_deref(), &candidate))
        .await
        .map_err(|e| UiError::Internal(e.to_string()))?;
    match user {
        Some(user) if ok => {
            log_in(&session, user.id)?;
            tracing::info!(user_id = user.id, "login");
            let tenant = store::tenant_of_owner(&state.db, user.id).await?;
            Ok(redirect(if tenant.is_none() && user.is_admin {
                "/admin/tenants"
            } else {
                "/dashboard"
            }))
        }
        _ => {
            let layout = Layout::anonymous(&state, csrf_token(&session)?, "Log in");
            let page = LoginPage {
                layout,
                username: form.username,
                error: Some("Wrong username or password.".into()),
                signup_enabled: state.settings.signup_enabled,
            };
            render_status(StatusCode::UNAUTHORIZED, &page)
        }
    }
}

pub async fn logout(session: Session, CsrfForm(_): CsrfForm<NoFields>) -> HttpResponse {
    log_out(&session);
    redirect("/login")
}

pub async fn register_page(
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, UiError> {
    if !state.settings.signup_enabled {
        return Err(UiError::NotFound);
    }
    let layout = Layout::anonymous(&state, csrf_token(&session)?, "Create your account");
    render(&RegisterPage {
        layout,
        form: RegisterForm::default(),
        errors: FieldErrors::default(),
    })
}

/// Checks a username: 3 to 32 of `a-z 0-9 . _ -`.
pub fn username_problem(u: &str) -> Option<&'static str> {
    if u.len() < 3 || u.len() > 32 {
        return Some("Username must be 3 to 32 characters long.");
    }
    if !u
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some("Username may use lowercase letters, digits, '.', '_' and '-'.");
    }
    None
}

pub fn email_problem(e: &str) -> Option<&'static str> {
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !e.chars().any(char::is_whitespace);
    (!ok).then_some("Enter an email address like name@example.com.")
}

fn validate_registration(form: &RegisterForm) -> (FieldErrors, Option<Slug>) {
    let mut errors = FieldErrors::default();
    let username = form.username.trim();
    if let Some(p) = username_problem(username) {
        errors.add("username", p);
    }
    if let Some(p) = email_problem(form.email.trim()) {
        errors.add("email", p);
    }
    let name = form.tenant_name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        errors.add(
            "tenant_name",
            "Organisation name must be 1 to 100 characters long.",
        );
    }
    let slug_input = form.tenant_slug.trim();
    let slug = if slug_input.is_empty() {
        Slug::derive_from(name)
    } else {
        Slug::parse(slug_input)
    };
    let slug = match slug {
        Ok(s) => Some(s),
        Err(e) => {
            errors.add("tenant_slug", format!("Slug {e}."));
            None
        }
    };
    if let Some(p) = password::weakness(&form.password, username) {
        errors.add("password", p);
    }
    if form.password != form.confirm_password {
        errors.add("confirm_password", "The two passwords differ.");
    }
    (errors, slug)
}

pub async fn register(
    state: web::Data<AppState>,
    session: Session,
    CsrfForm(mut form): CsrfForm<RegisterForm>,
) -> Result<HttpResponse, UiError> {
    if !state.settings.signup_enabled {
        return Err(UiError::NotFound);
    }
    form.username = form.username.trim().to_lowercase();
    let (mut errors, slug) = validate_registration(&form);
    if errors.is_empty()
        && let Some(slug) = slug
    {
        match create_account(&state, &form, &slug).await {
            Ok(user_id) => {
                log_in(&session, user_id)?;
                flash(
                    &session,
                    format!(
                        "Welcome! Your gateway lives at {}/{slug}/…",
                        state.settings.public_gateway_url
                    ),
                );
                return Ok(redirect("/dashboard"));
            }
            Err(Conflict::Username) => errors.add("username", "This username is taken."),
            Err(Conflict::Slug) => errors.add("tenant_slug", "This slug is taken; choose another."),
            Err(Conflict::Other(e)) => return Err(e),
        }
    }
    if form.tenant_slug.trim().is_empty()
        && let Ok(s) = Slug::derive_from(&form.tenant_name)
    {
        form.tenant_slug = s.into_inner();
    }
    form.password.clear();
    form.confirm_password.clear();
    let layout = Layout::anonymous(&state, csrf_token(&session)?, "Create your account");
    render_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &RegisterPage {
            layout,
            form,
            errors,
        },
    )
}

enum Conflict {
    Username,
    Slug,
    Other(UiError),
}

/// Creates the user and their tenant in one transaction.
async fn create_account(
    state: &AppState,
    form: &RegisterForm,
    slug: &Slug,
) -> Result<i64, Conflict> {
    let pw = form.password.clone();
    let hash = web::block(move || password::hash_password(&pw))
        .await
        .map_err(|e| Conflict::Other(UiError::Internal(e.to_string())))?
        .map_err(|e| Conflict::Other(UiError::Internal(e.to_string())))?;
    let txn = state
        .db
        .begin()
        .await
        .map_err(|e| Conflict::Other(e.into()))?;
    let user = match store::create_user(&txn, &form.username, form.email.trim(), &hash, false).await
    {
        Ok(u) => u,
        Err(StoreError::Conflict(_)) => return Err(Conflict::Username),
        Err(e) => return Err(Conflict::Other(e.into())),
    };
    match store::create_tenant(&txn, form.tenant_name.trim(), slug, user.id).await {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => return Err(Conflict::Slug),
        Err(e) => return Err(Conflict::Other(e.into())),
    }
    txn.commit()
        .await
        .map_err(|e: sea_orm::DbErr| Conflict::Other(e.into()))?;
    state.changed().await;
    Ok(user.id)
}
