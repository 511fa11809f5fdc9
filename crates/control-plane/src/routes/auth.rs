//! Sign-up, log-in and log-out.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use domain::password;
use domain::slug::Slug;
use domain::validate::{self, Problems};
use serde::Deserialize;

use crate::accounts::{self, AccountError, email_problem, username_problem};
use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, redirect, render, render_status};
use crate::session::{CsrfForm, NoFields, csrf_token, flash, log_in, log_out, maybe_user};
use crate::state::AppState;

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

fn internal(e: &AccountError) -> UiError {
    match e {
        AccountError::Throttled(secs) => UiError::TooManyAttempts(*secs),
        other => UiError::Internal(format!("{other:?}")),
    }
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
    let user = accounts::verify_login(&state, &address, &form.username, form.password)
        .await
        .map_err(|e| internal(&e))?;
    if let Some(user) = user {
        log_in(&session, &state, user.id).await?;
        tracing::info!(user_id = user.id, "login");
        let tenant = domain::store::tenant_of_owner(&state.db, user.id).await?;
        return Ok(redirect(if tenant.is_none() && user.is_admin {
            "/admin/tenants"
        } else {
            "/dashboard"
        }));
    }
    let layout = Layout::anonymous(&state, csrf_token(&session)?, "Log in");
    let page = LoginPage {
        layout,
        username: form.username,
        error: Some("Wrong username or password.".into()),
        signup_enabled: state.settings.signup_enabled,
    };
    render_status(StatusCode::UNAUTHORIZED, &page)
}

pub async fn logout(
    state: web::Data<AppState>,
    session: Session,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    log_out(&session, &state).await?;
    Ok(redirect("/login"))
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

fn validate_registration(form: &RegisterForm) -> (FieldErrors, Option<Slug>) {
    let mut errors = FieldErrors::default();
    let username = form.username.trim();
    if let Some(p) = username_problem(username) {
        errors.add("username", p);
    }
    if let Some(p) = email_problem(form.email.trim()) {
        errors.add("email", p);
    }
    let mut problems = Problems::default();
    problems.check("tenant_name", validate::name(&form.tenant_name));
    errors.absorb(&problems);
    let name = form.tenant_name.trim();
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
        let created = accounts::create_account(
            &state,
            &form.username,
            form.email.trim(),
            &form.password,
            form.tenant_name.trim(),
            &slug,
        )
        .await;
        match created {
            Ok((user, _)) => {
                log_in(&session, &state, user.id).await?;
                flash(
                    &session,
                    format!(
                        "Welcome! Your gateway lives at {}/{slug}/…",
                        state.public_url
                    ),
                );
                return Ok(redirect("/dashboard"));
            }
            Err(AccountError::UsernameTaken) => errors.add("username", "This username is taken."),
            Err(AccountError::SlugTaken) => {
                errors.add("tenant_slug", "This slug is taken; choose another.");
            }
            Err(e) => return Err(internal(&e)),
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
