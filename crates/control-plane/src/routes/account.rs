//! The logged-in user's own account: changing the password (which ends every other session).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use domain::password;
use serde::Deserialize;

use crate::accounts;
use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, redirect, render, render_status};
use crate::session::{AnyUser, CsrfForm, flash, session_token};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "account_password.html")]
struct PasswordPage {
    layout: Layout,
    errors: FieldErrors,
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm_password: String,
}

pub async fn password_page(
    u: AnyUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    render(&PasswordPage {
        layout: Layout::any(&u, &state, "Change your password"),
        errors: FieldErrors::default(),
    })
}

pub async fn change_password(
    req: HttpRequest,
    u: AnyUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> Result<HttpResponse, UiError> {
    let mut errors = FieldErrors::default();
    if let Some(p) = password::weakness(&form.password, &u.user.username) {
        errors.add("password", p);
    }
    if form.password != form.confirm_password {
        errors.add("confirm_password", "The two passwords differ.");
    }
    let address = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    // The current password is checked like a login (throttled the same way).
    match accounts::verify_login(&state, &address, &u.user.username, form.current_password).await {
        Ok(Some(_)) => {}
        Ok(None) => errors.add("current_password", "This is not your current password."),
        Err(accounts::AccountError::Throttled(secs)) => errors.add(
            "current_password",
            format!("Too many attempts: try again in {secs} s."),
        ),
        Err(e) => return Err(UiError::Internal(format!("{e:?}"))),
    }
    if !errors.is_empty() {
        let page = PasswordPage {
            layout: Layout::any(&u, &state, "Change your password"),
            errors,
        };
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    let pw = form.password;
    let hash = web::block(move || password::hash_password(&pw))
        .await
        .map_err(|e| UiError::Internal(e.to_string()))?
        .map_err(|e| UiError::Internal(e.to_string()))?;
    let keep = session_token(&u.session);
    domain::store::set_password(&state.db, u.user.id, &hash, keep.as_deref()).await?;
    tracing::info!(
        user_id = u.user.id,
        "password changed; other sessions ended"
    );
    flash(
        &u.session,
        "Password changed. Every other session of yours has been logged out.",
    );
    Ok(redirect("/"))
}
