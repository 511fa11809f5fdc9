//! Accounts, shared by the dashboard and the management API: creating a user with their tenant,
//! and checking credentials, throttled per address and per (account, address), and slowed down —
//! never refused — per account, so an attacker cannot lock the owner out.

use actix_web::web;
use domain::entities::{tenant, user};
use domain::limits::Subject;
use domain::password;
use domain::plan::PlanLimits;
use domain::slug::Slug;
use domain::store::{self, StoreError};
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// Login attempts allowed per (account, client address) and per client address: a burst, then
/// refilling at [`LOGIN_REFILL_PER_MINUTE`]; past them an attempt is refused (429).
pub const LOGIN_BURST_PER_ACCOUNT_AND_ADDRESS: i64 = 5;
pub const LOGIN_BURST_PER_ADDRESS: i64 = 20;
pub const LOGIN_REFILL_PER_MINUTE: i64 = 5;
/// Attempts on one account from anywhere before each further one is slowed down by
/// [`LOGIN_SLOWDOWN`] (not refused: the owner, from their own address, still gets in).
pub const LOGIN_BURST_PER_ACCOUNT: i64 = 20;
pub const LOGIN_SLOWDOWN: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
pub enum AccountError {
    UsernameTaken,
    SlugTaken,
    /// Too many attempts: retry after this many seconds.
    Throttled(i64),
    Internal(String),
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

/// Creates the user and their tenant in one transaction and announces the change.
pub async fn create_account(
    state: &AppState,
    username: &str,
    email: &str,
    password_plain: &str,
    tenant_name: &str,
    slug: &Slug,
) -> Result<(user::Model, tenant::Model), AccountError> {
    let pw = password_plain.to_owned();
    let hash = web::block(move || password::hash_password(&pw))
        .await
        .map_err(|e| AccountError::Internal(e.to_string()))?
        .map_err(|e| AccountError::Internal(e.to_string()))?;
    let txn = state
        .config
        .begin()
        .await
        .map_err(|e| AccountError::Internal(e.to_string()))?;
    let user = match store::create_user(&txn, username, email, &hash, false).await {
        Ok(u) => u,
        Err(StoreError::Conflict(_)) => return Err(AccountError::UsernameTaken),
        Err(e) => return Err(AccountError::Internal(e.to_string())),
    };
    // Inside the writer's transaction: its commit below announces the tenant.
    #[allow(clippy::disallowed_methods)]
    let tenant = match store::create_tenant(&txn, tenant_name, slug, user.id).await {
        Ok(t) => t,
        Err(StoreError::Conflict(_)) => return Err(AccountError::SlugTaken),
        Err(e) => return Err(AccountError::Internal(e.to_string())),
    };
    // Committed through the writer, which announces the new tenant to the data planes.
    state
        .config
        .commit(txn)
        .await
        .map_err(|e| AccountError::Internal(e.to_string()))?;
    Ok((user, tenant))
}

/// The throttling subject of an account name or an address: the same on every control plane, so
/// replicas sharing Redis share the count.
fn login_subject(kind: &str, value: &str) -> Subject {
    let digest = Sha256::digest(format!("{kind}:{value}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Subject::Login(u64::from_be_bytes(first))
}

/// Spends one attempt of `subject`; `Err(seconds to wait)` when its burst is used up.
async fn attempt(state: &AppState, subject: Subject, burst: i64) -> Result<(), AccountError> {
    let limits = PlanLimits::new(LOGIN_REFILL_PER_MINUTE, Some(burst), None, None)
        .map_err(|e| AccountError::Internal(e.to_string()))?;
    match state.limiter.check(subject, &limits).await {
        Ok((d, _)) if !d.allowed => Err(AccountError::Throttled(d.retry_after_secs())),
        // A limiter outage must not lock everyone out.
        _ => Ok(()),
    }
}

/// The user whose credentials these are, or `None`. Every attempt counts against the address and
/// the account; argon2 runs off the async workers and costs the same for unknown users.
pub async fn verify_login(
    state: &AppState,
    address: &str,
    username: &str,
    password_plain: String,
) -> Result<Option<user::Model>, AccountError> {
    let username = username.trim().to_lowercase();
    attempt(
        state,
        login_subject("address", address),
        LOGIN_BURST_PER_ADDRESS,
    )
    .await?;
    attempt(
        state,
        login_subject("account+address", &format!("{username}\n{address}")),
        LOGIN_BURST_PER_ACCOUNT_AND_ADDRESS,
    )
    .await?;
    // Many attempts on the account from elsewhere only make this one wait.
    if attempt(
        state,
        login_subject("account", &username),
        LOGIN_BURST_PER_ACCOUNT,
    )
    .await
    .is_err()
    {
        tokio::time::sleep(LOGIN_SLOWDOWN).await;
    }
    let user = store::find_user_by_username(&state.db, &username)
        .await
        .map_err(|e| AccountError::Internal(e.to_string()))?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let ok = web::block(move || password::verify_password(stored.as_deref(), &password_plain))
        .await
        .map_err(|e| AccountError::Internal(e.to_string()))?;
    Ok(user.filter(|_| ok))
}
