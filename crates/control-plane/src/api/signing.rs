//! Tokens, for the tenant that mints them: its signing keys (listed, rotated), how long its tokens
//! live, and a check of a token (`POST /tokens/validate`). The private keys never leave the
//! database sealed; only public keys and key ids are shown.

use actix_web::{HttpResponse, get, post, put, web};
use chrono::{DateTime, Utc};
use domain::entities::signing_key;
use domain::jwt::{self, Claims, Jwk, TokenCheck, VerifyKeys};
use domain::store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::ApiCaller;
use super::errors::{ApiError, ApiJson};
use crate::state::AppState;

/// One of the tenant's signing keys.
#[derive(Serialize, ToSchema)]
pub struct SigningKeyOut {
    /// The JOSE `kid` its tokens carry.
    pub kid: String,
    /// Always `EdDSA` (Ed25519).
    pub alg: String,
    /// Whether it signs new tokens (else it only verifies those it signed until they expire).
    pub current: bool,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    /// Until when a retired key still verifies its tokens.
    pub verify_until: Option<DateTime<Utc>>,
    /// Its public key as a JWK (RFC 7517).
    #[schema(value_type = Object)]
    pub jwk: Jwk,
}

impl From<signing_key::Model> for SigningKeyOut {
    fn from(k: signing_key::Model) -> Self {
        Self {
            jwk: Jwk::ed25519(&k.kid, &k.public_x),
            alg: jwt::ALGORITHM.into(),
            current: k.retired_at.is_none(),
            kid: k.kid,
            created_at: k.created_at,
            retired_at: k.retired_at,
            verify_until: k.verify_until,
        }
    }
}

/// The tenant's token settings and keys.
#[derive(Serialize, ToSchema)]
pub struct SigningKeysOut {
    pub items: Vec<SigningKeyOut>,
    /// Where the data plane publishes these public keys.
    pub jwks_url: String,
    /// Where a caller mints a token from its API key.
    pub token_url: String,
    /// The `iss` of every token.
    pub issuer: String,
    /// How long a minted token lives, in seconds.
    pub token_lifetime_s: i32,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSettingsIn {
    /// How long a minted token lives: 60 to 86400 seconds (default 900).
    pub token_lifetime_s: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateIn {
    pub token: String,
}

/// What a token check found.
#[derive(Serialize, ToSchema)]
pub struct ValidateOut {
    pub valid: bool,
    /// The verified claims (when valid).
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<Claims>,
    /// The check it failed: `format`, `algorithm`, `kid`, `signature`, `tenant`, `issuer`,
    /// `exp`, `nbf` or `revoked` (the key it was minted from is revoked or expired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn issuer(state: &AppState) -> String {
    state.public_url.trim_end_matches('/').to_owned()
}

async fn keys_out(
    state: &AppState,
    c: &ApiCaller,
    token_lifetime_s: i32,
) -> Result<SigningKeysOut, ApiError> {
    let items = store::signing_keys(&state.db, c.tenant.id, Utc::now())
        .await?
        .into_iter()
        .map(SigningKeyOut::from)
        .collect();
    let base = issuer(state);
    Ok(SigningKeysOut {
        items,
        jwks_url: format!("{base}/_gateway/{}/jwks.json", c.tenant.slug),
        token_url: format!("{base}/_gateway/token"),
        issuer: base,
        token_lifetime_s,
    })
}

/// The tenant's signing keys (current first, then those still verifying), its JWKS URL and
/// token lifetime.
#[utoipa::path(tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = SigningKeysOut), (status = 401)))]
#[get("/signing-keys")]
pub async fn list_signing_keys(
    c: ApiCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let lifetime = c.tenant.token_lifetime_s;
    Ok(HttpResponse::Ok().json(keys_out(&state, &c, lifetime).await?))
}

/// A new signing key (the first, or a replacement): it signs every token from now on; the
/// previous key keeps verifying the tokens it signed until they expire.
#[utoipa::path(tag = "tokens", security(("bearer" = [])),
    responses((status = 201, body = SigningKeyOut), (status = 401), (status = 409)))]
#[post("/signing-keys/rotate")]
pub async fn rotate_signing_key(
    c: ApiCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let secret = state.config.token_secret().ok_or_else(no_token_key)?;
    let k = state.config.rotate_signing_key(secret, c.tenant.id).await?;
    Ok(HttpResponse::Created().json(SigningKeyOut::from(k)))
}

/// The 409 when this control plane cannot seal signing keys.
pub fn no_token_key() -> ApiError {
    ApiError::Conflict(
        "This gateway has no token key: its operator sets GATEWAY_TOKEN_KEY (or \
         GATEWAY_SECRET_KEY), at least 32 bytes, on every plane."
            .into(),
    )
}

/// Sets how long the tenant's minted tokens live.
#[utoipa::path(tag = "tokens", security(("bearer" = [])), request_body = TokenSettingsIn,
    responses((status = 200, body = SigningKeysOut), (status = 401), (status = 422)))]
#[put("/token-settings")]
pub async fn set_token_settings(
    c: ApiCaller,
    state: web::Data<AppState>,
    body: ApiJson<TokenSettingsIn>,
) -> Result<HttpResponse, ApiError> {
    let secs = lifetime(body.into_inner().token_lifetime_s)
        .map_err(|m| ApiError::invalid("token_lifetime_s", m))?;
    state.config.set_token_lifetime(c.tenant.id, secs).await?;
    Ok(HttpResponse::Ok().json(keys_out(&state, &c, secs).await?))
}

/// A token lifetime as stored, or what is wrong with it.
pub fn lifetime(secs: i64) -> Result<i32, String> {
    if (jwt::MIN_LIFETIME_S..=jwt::MAX_LIFETIME_S).contains(&secs) {
        Ok(i32::try_from(secs).unwrap_or(i32::MAX))
    } else {
        Err(format!(
            "must be {} to {} seconds (15 minutes is 900)",
            jwt::MIN_LIFETIME_S,
            jwt::MAX_LIFETIME_S
        ))
    }
}

/// Checks a token as the data plane would on this tenant's path: signature by one of its keys,
/// issuer, expiry (60 s of leeway), and the key it was minted from still active.
#[utoipa::path(tag = "tokens", security(("bearer" = [])), request_body = ValidateIn,
    responses((status = 200, body = ValidateOut), (status = 401)))]
#[post("/tokens/validate")]
pub async fn validate_token(
    c: ApiCaller,
    state: web::Data<AppState>,
    body: ApiJson<ValidateIn>,
) -> Result<HttpResponse, ApiError> {
    let token = body.into_inner().token;
    let out = match check(&state, c.tenant.id, token.trim()).await? {
        Ok(claims) => ValidateOut {
            valid: true,
            claims: Some(claims),
            check: None,
            message: None,
        },
        Err((check, message)) => ValidateOut {
            valid: false,
            claims: None,
            check: Some(check.into()),
            message: Some(message.into()),
        },
    };
    Ok(HttpResponse::Ok().json(out))
}

type Checked = Result<Claims, (&'static str, &'static str)>;

/// `token` checked for tenant `tenant_id`: its claims, or the check it failed and why.
pub async fn check(
    state: &AppState,
    tenant_id: i64,
    token: &str,
) -> Result<Checked, store::StoreError> {
    let now = Utc::now();
    let mut keys = VerifyKeys::default();
    for k in store::signing_keys(&state.db, tenant_id, now).await? {
        keys.insert(k.tenant_id, &k.kid, &k.public_x);
    }
    let failed = |c: TokenCheck| Err((c.as_str(), c.message()));
    let claims = match keys.verify_signature(token, tenant_id) {
        Ok((claims, _)) => claims,
        Err(c) => return Ok(failed(c)),
    };
    if let Err(c) = jwt::check_claims(&claims, &issuer(state), now.timestamp()) {
        return Ok(failed(c));
    }
    let live = match claims.sub.parse::<i64>() {
        Ok(id) => store::get_key(&state.db, tenant_id, id).await.ok(),
        Err(_) => None,
    };
    let live = live.is_some_and(|k| k.is_active && k.expires_at.is_none_or(|at| at > now));
    if !live {
        return Ok(Err((
            "revoked",
            "The API key this token was minted from has been revoked or has expired.",
        )));
    }
    Ok(Ok(claims))
}
