//! Tokens in the pipeline (`domain::jwt`): the admit phase's check of a bearer token
//! ([`Gateway::verify_token`]), the gateway's token endpoints (`POST /_gateway/token` mints one
//! from an API key, `GET /_gateway/{tenant}/jwks.json` publishes the tenant's public keys), and
//! the identity token the upstream-request phase adds for an API that asks (`X-Gateway-JWT`).
//!
//! A verified token is remembered by its exact text until its `exp` ([`Tokens::verified`]), so
//! a client sending the same token again costs a hash lookup, not a signature check; the time
//! claims, the signing key still being known and the key it was minted from are checked on every
//! request.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use domain::jwt::{self, Claims, Signer, TokenCheck, TokenSecret};
use domain::snapshot::{KeyEntry, Snapshot, TenantEntry};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::{Auth, Caller, Trace, caller_of, presented_key_in};
use crate::errors::{GatewayError, json_response};
use crate::gateway::Gateway;
use crate::headers::{HeaderSource, X_CLIENT_ID, X_REQUEST_ID, insert_rate_limit};

/// Most verified tokens remembered at once.
const VERIFIED_CAPACITY: usize = 100_000;

/// A token whose signature and issuer were checked: what later requests with it need.
#[derive(Clone)]
pub(crate) struct Verified {
    tenant_id: i64,
    kid: Box<str>,
    key_id: i64,
    client: Option<Box<str>>,
    nbf: i64,
    exp: i64,
}

/// The data plane's token state: what opens signing keys, the issuer it signs as, the signers
/// opened so far and the tokens verified so far.
pub struct Tokens {
    secret: Option<TokenSecret>,
    issuer: Box<str>,
    signers: Mutex<foldhash::HashMap<Box<str>, Arc<Signer>>>,
    verified: VerifiedCache,
}

/// Verified tokens by their text, hashed with foldhash (a token is some 300 bytes: std's `SipHash`
/// would cost more than the rest of the lookup).
type VerifiedCache = quick_cache::sync::Cache<
    Box<str>,
    Verified,
    quick_cache::UnitWeighter,
    foldhash::fast::RandomState,
>;

impl Tokens {
    /// `secret`: the token key (`None`: tokens are verified but neither minted nor signed);
    /// `issuer`: the gateway's public URL, every token's `iss`.
    pub fn new(secret: Option<TokenSecret>, issuer: &str) -> Self {
        Self {
            secret,
            issuer: issuer.trim_end_matches('/').into(),
            signers: Mutex::default(),
            verified: VerifiedCache::with(
                VERIFIED_CAPACITY,
                VERIFIED_CAPACITY as u64,
                quick_cache::UnitWeighter,
                foldhash::fast::RandomState::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signer of `tenant`'s current key, opened once.
    fn signer(&self, tenant: &TenantEntry) -> Result<Arc<Signer>, GatewayError> {
        let sealed = tenant
            .signing_key
            .as_ref()
            .ok_or(GatewayError::TokenSigningUnavailable {
                why: "This tenant has no token signing key yet: its owner creates one on the \
                      dashboard's Tokens page (or POST /api/v1/signing-keys/rotate).",
            })?;
        let mut signers = crate::lock(&self.signers);
        if let Some(s) = signers.get(&sealed.kid) {
            return Ok(s.clone());
        }
        let secret = self
            .secret
            .as_ref()
            .ok_or(GatewayError::TokenSigningUnavailable {
                why: "This gateway has no token key (GATEWAY_TOKEN_KEY or GATEWAY_SECRET_KEY), \
                      so it cannot sign tokens.",
            })?;
        let signer = Signer::open(secret, &sealed.kid, &sealed.sealed).map_err(|e| {
            tracing::error!(kid = %sealed.kid, error = %e, "could not open a signing key");
            GatewayError::TokenSigningUnavailable {
                why: "The tenant's signing key does not open with this gateway's token key.",
            }
        })?;
        let signer = Arc::new(signer);
        signers.insert(sealed.kid.clone(), signer.clone());
        Ok(signer)
    }

    /// Signs `claims` with `tenant`'s current key.
    fn sign(&self, tenant: &TenantEntry, claims: &Claims) -> Result<String, GatewayError> {
        Ok(self.signer(tenant)?.sign(claims))
    }
}

/// The token of a request: `Authorization: Bearer <jwt>` (a value shaped like a JWT; an API
/// key sent as a bearer is not one).
pub(crate) fn bearer_token<H: HeaderSource + ?Sized>(headers: &H) -> Option<&str> {
    let v = headers.header("authorization")?;
    let v = std::str::from_utf8(v).ok()?.trim();
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?
        .trim();
    jwt::looks_like_jwt(t).then_some(t)
}

impl Gateway {
    /// The admit phase's check of a bearer `token` on `tenant`'s path: its signature by one of
    /// the tenant's keys, issuer, `exp` and `nbf` (by the gateway's clock), then the key it was
    /// minted from, which must still be active: the key id and the client it names.
    pub(crate) fn verify_token(
        &self,
        snap: &Snapshot,
        tenant: &TenantEntry,
        token: &str,
    ) -> Result<(KeyEntry, Option<Box<str>>), GatewayError> {
        let v = if let Some(v) = self.tokens.verified.get(token) {
            v
        } else {
            let (claims, kid) = snap
                .verify_keys
                .verify_signature(token, tenant.id)
                .map_err(GatewayError::Token)?;
            if claims.iss != *self.tokens.issuer {
                return Err(GatewayError::Token(TokenCheck::Issuer));
            }
            if claims.tenant != *tenant.slug {
                return Err(GatewayError::Token(TokenCheck::Tenant));
            }
            let key_id = claims
                .sub
                .parse::<i64>()
                .map_err(|_| GatewayError::Token(TokenCheck::Format))?;
            let v = Verified {
                tenant_id: tenant.id,
                kid: kid.into(),
                key_id,
                client: claims.client.map(Into::into),
                nbf: claims.nbf,
                exp: claims.exp,
            };
            self.tokens.verified.insert(token.into(), v.clone());
            v
        };
        if v.tenant_id != tenant.id {
            return Err(GatewayError::Token(TokenCheck::Tenant));
        }
        // A signing key retired long enough ago is gone from the snapshot: so are its tokens.
        if snap.verify_keys.owner(&v.kid) != Some(tenant.id) {
            return Err(GatewayError::Token(TokenCheck::UnknownKey));
        }
        jwt::check_times(v.nbf, v.exp, self.clock.now_ms().div_euclid(1000))
            .map_err(GatewayError::Token)?;
        let key = self
            .key_by_id(snap, v.key_id)
            .filter(|k| k.tenant_id == tenant.id)
            .ok_or(GatewayError::TokenRevoked)?;
        if !key.is_active
            || key
                .expires_at_ms
                .is_some_and(|at| at <= self.clock.now_ms())
        {
            return Err(GatewayError::TokenRevoked);
        }
        Ok((key, v.client))
    }

    /// Key `id` as this data plane knows it now: a change applied since the snapshot wins.
    fn key_by_id(&self, snap: &Snapshot, id: i64) -> Option<KeyEntry> {
        match snap.key_by_id(id) {
            Some((hash, _)) => self.live_key(snap, hash),
            None => self
                .key_overlay
                .load()
                .values()
                .map(|(_, e)| *e)
                .find(|e| e.id == id),
        }
    }

    /// The gateway's token endpoints, `None` for any other path.
    pub(crate) async fn token_answer(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Option<Response<Full<Bytes>>> {
        if path == "/_gateway/token" {
            return Some(self.mint(method, headers, peer).await);
        }
        let tenant = path
            .strip_prefix("/_gateway/")?
            .strip_suffix("/jwks.json")?;
        Some(self.jwks(method, tenant))
    }

    /// `GET /_gateway/{tenant}/jwks.json`: the tenant's public keys (RFC 7517), cacheable for
    /// five minutes (a rotated-out key stays in it while its tokens live).
    fn jwks(&self, method: &Method, slug: &str) -> Response<Full<Bytes>> {
        let rid = domain::request_log::new_request_id(self.clock.now_ms());
        if method != Method::GET && method != Method::HEAD {
            let err = GatewayError::MethodNotRouted {
                method: method.to_string(),
                allow: "GET, HEAD".into(),
            };
            return self.refuse(&err, &rid, None);
        }
        let snap = self.snapshot.load();
        let Some(tenant) = snap.tenant(slug).filter(|t| t.is_active) else {
            return self.refuse(&GatewayError::UnknownApi, &rid, None);
        };
        let mut resp = json_response(
            StatusCode::OK,
            &json!({"keys": snap.verify_keys.jwks(tenant.id)}),
        );
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        resp
    }

    /// `POST /_gateway/token`: a token minted from the API key the request presents
    /// (`X-API-Key`, or `Authorization: Bearer <key>`), for the client `X-Client-ID` names when it
    /// does. It counts as a request of the key: its plan's limits apply, its usage is recorded.
    async fn mint(
        &self,
        method: &Method,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Response<Full<Bytes>> {
        let mut trace = Trace::start(self, headers, peer);
        let resp = self.mint_traced(method, headers, &mut trace).await;
        trace.status = resp.status().as_u16();
        trace.bytes_out = hyper::body::Body::size_hint(resp.body())
            .exact()
            .unwrap_or(0);
        self.finish(trace);
        resp
    }

    async fn mint_traced(
        &self,
        method: &Method,
        headers: &HeaderMap,
        trace: &mut Trace,
    ) -> Response<Full<Bytes>> {
        if method != Method::POST {
            let err = GatewayError::MethodNotRouted {
                method: method.to_string(),
                allow: "POST".into(),
            };
            return self.refuse(&err, &trace.rid, None);
        }
        let snap = self.snapshot.load();
        let (caller, tenant) = match self.minting_caller(&snap, headers, trace) {
            Ok(found) => found,
            Err(err) => return self.refuse_traced(&err, trace, None),
        };
        let decision = match self.limit_caller(&caller, None, trace).await {
            Ok(d) => d,
            Err(refused) => return refused,
        };
        let lifetime = tenant
            .token_lifetime_s
            .clamp(jwt::MIN_LIFETIME_S, jwt::MAX_LIFETIME_S);
        let claims = self.claims(&caller, tenant, lifetime, None);
        let token = match self.tokens.sign(tenant, &claims) {
            Ok(t) => t,
            Err(err) => return self.refuse_traced(&err, trace, Some(&decision)),
        };
        let mut resp = json_response(
            StatusCode::OK,
            &json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime}),
        );
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(&trace.rid) {
            h.insert(&X_REQUEST_ID, v);
        }
        insert_rate_limit(h, &decision);
        resp
    }

    /// Who asks for a token: the key it presents and its tenant, then the client and plan as
    /// for any request of the key.
    fn minting_caller<'s>(
        &self,
        snap: &'s Snapshot,
        headers: &HeaderMap,
        trace: &mut Trace,
    ) -> Result<(Caller, &'s TenantEntry), GatewayError> {
        // `X-API-Key`, else `Authorization: Bearer <key>` (a bad key in the first is refused).
        let raw = match presented_key_in(headers, "x-api-key", "X-API-Key") {
            Err(GatewayError::MissingKey { .. }) => {
                presented_key_in(headers, "authorization", "X-API-Key")?
            }
            found => found?,
        };
        let key = self
            .live_key(snap, &domain::apikey::KeyHash::of(raw))
            .ok_or(GatewayError::InvalidKey)?;
        let tenant = snap
            .tenant_by_id(key.tenant_id)
            .filter(|t| t.is_active)
            .ok_or(GatewayError::InvalidKey)?;
        trace.tenant(self, tenant.id, None, "POST", "/_gateway/token", None);
        trace.key_id = key.id;
        trace.key_prefix = Some(domain::request_log::key_prefix(raw));
        let client = headers
            .get(X_CLIENT_ID.as_str())
            .map(|v| v.to_str().map_err(|_| GatewayError::UnknownClient))
            .transpose()?;
        self.check_key(&key)?;
        let caller = caller_of(snap, tenant, &key, client)?;
        if let Some((row, id)) = &caller.client {
            trace.client_row_id = *row;
            trace.client_id = id.to_str().ok().map(str::to_owned);
        }
        Ok((caller, tenant))
    }

    /// The claims of a token for `caller` of `tenant`, living `lifetime` seconds from now; an
    /// identity token also names the API and the request (`identity`: their slug and id).
    fn claims(
        &self,
        caller: &Caller,
        tenant: &TenantEntry,
        lifetime: i64,
        identity: Option<(&str, &str)>,
    ) -> Claims {
        let now_s = self.clock.now_ms().div_euclid(1000);
        Claims {
            iss: self.tokens.issuer.to_string(),
            sub: caller.key_id.to_string(),
            tenant: tenant.slug.to_string(),
            plan: Some(caller.plan_id),
            client: caller
                .client
                .as_ref()
                .and_then(|(_, v)| v.to_str().ok())
                .map(str::to_owned),
            api: identity.map(|(api, _)| api.to_owned()),
            request_id: identity.map(|(_, rid)| rid.to_owned()),
            iat: now_s,
            nbf: now_s,
            exp: now_s + lifetime,
            jti: jwt::new_jti(),
        }
    }

    /// The admit phase's identity token for the upstream (`X-Gateway-JWT`), when the request's
    /// API asks for one: who called (key, tenant, client, API) and the request id, for 60 s. An
    /// API that asks for one gets no request without it (503 when it cannot be signed).
    pub(crate) fn identity_token(
        &self,
        auth: &Auth,
        rid: &str,
    ) -> Result<Option<HeaderValue>, GatewayError> {
        if !auth.api.identity_token {
            return Ok(None);
        }
        let snap = self.snapshot.load();
        let tenant = snap
            .tenant_by_id(auth.caller.tenant_id)
            .ok_or(GatewayError::UnknownApi)?;
        let claims = self.claims(
            &auth.caller,
            tenant,
            jwt::IDENTITY_LIFETIME_S,
            Some((&auth.api.slug, rid)),
        );
        let token = self.tokens.sign(tenant, &claims)?;
        Ok(HeaderValue::from_str(&token).ok())
    }
}
