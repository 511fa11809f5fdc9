//! Tokens: minted from a key at `POST /_gateway/token`, taken by an API instead of the key (the
//! same counters), refused check by check, killed with their key, kept across a signing key
//! rotation until they expire, and the identity token an upstream verifies with the JWKS.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use data_plane::config::{Engine, ProxySettings};
use domain::clock::Clock;
use domain::entities::{api, signing_key};
use domain::events::Publisher;
use domain::jwt::{self, ApiAuth, Claims, Signer, TokenSecret};
use domain::limits::redis::pool;
use domain::sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, QueryFilter,
};
use domain::settings::TEST_TOKEN_KEY;
use domain::store;
use domain::testing::TestDb;
use serde_json::Value;

use crate::helpers::{
    EnvOptions, TestEnv, TestGateway, generous, limits, seed, settings_for, spawn_gateway,
};
use crate::process::Proc;
use crate::upstream::spawn_upstream;

/// The issuer of the test data planes (`GATEWAY_PUBLIC_URL`'s default).
const ISSUER: &str = "http://localhost:7000";

fn secret() -> TokenSecret {
    TokenSecret::new(TEST_TOKEN_KEY).unwrap()
}

/// Sets API `id`'s auth and identity token, gives its tenant a signing key.
async fn take_tokens(
    db: &DatabaseConnection,
    tenant_id: i64,
    id: i64,
    auth: ApiAuth,
    identity: bool,
) {
    let a = api::Entity::find_by_id(id).one(db).await.unwrap().unwrap();
    let mut a = a.into_active_model();
    a.auth = Set(auth.as_str().to_owned());
    a.identity_token = Set(identity);
    let _: api::Model = a.update(db).await.unwrap();
    store::ensure_signing_key(db, &secret(), tenant_id)
        .await
        .unwrap();
}

async fn env_taking(engine: Engine, auth: ApiAuth, l: domain::plan::PlanLimits) -> TestEnv {
    let env = TestEnv::with(EnvOptions {
        limits: l,
        proxy: Some(ProxySettings {
            engine,
            ..ProxySettings::default()
        }),
        ..EnvOptions::default()
    })
    .await;
    set_auth(&env, auth, false).await;
    env
}

/// The fixture's API set to take `auth` (and sign identity tokens), the data plane reloaded.
async fn set_auth(env: &TestEnv, auth: ApiAuth, identity: bool) {
    take_tokens(&env.db.db, env.fx.tenant.id, env.fx.api.id, auth, identity).await;
    env.gw.reload().await;
}

/// `POST /_gateway/token` with `key`: the answer.
async fn mint(gw: &TestGateway, key: &str) -> reqwest::Response {
    gw.client
        .post(gw.url("/_gateway/token"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

async fn minted(gw: &TestGateway, key: &str) -> String {
    let r = mint(gw, key).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn with_token(gw: &TestGateway, path: &str, token: &str) -> reqwest::Response {
    gw.client
        .get(gw.url(path))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
}

/// Status, error type and `details.check` of a refusal.
async fn refusal(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        status,
        s(&body["error"]["type"]),
        s(&body["error"]["details"]["check"]),
    )
}

fn part(token: &str, i: usize) -> Value {
    let raw = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(i).unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[tokio::test]
async fn a_token_minted_from_a_key_spends_that_keys_windows_on_both_engines() {
    for engine in [Engine::Fast, Engine::Hyper] {
        // A burst of 5: the mint and four calls, with the key or its token.
        let env = env_taking(engine, ApiAuth::KeyOrToken, limits(5, Some(5), None, None)).await;
        let r = mint(&env.gw, &env.fx.key).await;
        assert_eq!(r.status(), 200, "{engine:?}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            "4",
            "minting spent one"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 900);
        let token = body["access_token"].as_str().unwrap().to_owned();
        let (header, claims) = (part(&token, 0), part(&token, 1));
        assert_eq!(header["alg"], "EdDSA");
        assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["sub"], env.fx.key_id.to_string());
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(claims["plan"], env.fx.plan.id);
        let now = env.clock.now_ms() / 1000;
        assert_eq!(
            (claims["iat"].as_i64(), claims["nbf"].as_i64()),
            (Some(now), Some(now))
        );
        assert_eq!(claims["exp"].as_i64(), Some(now + 900));
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));

        let path = env.fx.path("/x");
        let r = with_token(&env.gw, &path, &token).await;
        assert_eq!(r.status(), 200, "{engine:?}");
        assert_eq!(r.headers()["x-ratelimit-remaining"], "3");
        let seen = env.upstream.last();
        assert_eq!(
            seen.headers["x-gateway-key-id"],
            env.fx.key_id.to_string().as_str(),
            "the upstream sees the key's id"
        );
        assert!(
            seen.headers.get("authorization").is_none(),
            "the token is not passed on"
        );
        assert_eq!(env.get("/x").await.status(), 200, "the key itself");
        assert_eq!(with_token(&env.gw, &path, &token).await.status(), 200);
        let r = with_token(&env.gw, &path, &token).await;
        assert_eq!(r.headers()["x-ratelimit-remaining"], "0", "five spent");
        // The key's burst is spent, whichever credential asks.
        assert_eq!(
            refusal(with_token(&env.gw, &path, &token).await).await.1,
            "rate_limited"
        );
        assert_eq!(env.get("/x").await.status(), 429);
    }
}

#[tokio::test]
async fn an_api_takes_only_what_its_auth_setting_says() {
    let env = env_taking(Engine::Fast, ApiAuth::Token, generous()).await;
    let token = minted(&env.gw, &env.fx.key).await;
    let path = env.fx.path("/x");
    assert_eq!(with_token(&env.gw, &path, &token).await.status(), 200);
    assert_eq!(
        refusal(env.get("/x").await).await,
        (401, "token_invalid".into(), String::new()),
        "a token-only API refuses the key itself"
    );
    // Back to keys only: the token is not a key.
    set_auth(&env, ApiAuth::Key, false).await;
    assert_eq!(
        refusal(with_token(&env.gw, &path, &token).await).await.1,
        "missing_api_key"
    );
    assert_eq!(env.get("/x").await.status(), 200);
    // Minting needs a valid, active key.
    assert_eq!(
        refusal(mint(&env.gw, "gw_live_nope").await).await.1,
        "invalid_api_key"
    );
    let r = env
        .gw
        .client
        .get(env.gw.url("/_gateway/token"))
        .header("x-api-key", &env.fx.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
}

/// The tenant's current signer, opened from the database as the data plane does.
async fn signer_of(db: &DatabaseConnection, tenant_id: i64) -> Signer {
    let k = signing_key::Entity::find()
        .filter(signing_key::Column::TenantId.eq(tenant_id))
        .filter(signing_key::Column::RetiredAt.is_null())
        .one(db)
        .await
        .unwrap()
        .unwrap();
    Signer::open(&secret(), &k.kid, &k.sealed_private).unwrap()
}

fn claims_at(now: i64, key_id: i64, tenant: &str) -> Claims {
    domain::testing::token_claims(ISSUER, key_id, tenant, now, 600)
}

/// The algorithm-confusion attack: `claims` signed with HS256, the tenant's public key as the
/// HMAC secret, under its key id.
async fn hs256_keyed_with_public_key(
    db: &DatabaseConnection,
    tenant_id: i64,
    claims: &Claims,
) -> String {
    let keys = store::signing_keys(db, tenant_id, chrono::Utc::now())
        .await
        .unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(keys[0].kid.clone());
    jsonwebtoken::encode(
        &h,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(keys[0].public_x.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn each_bad_token_is_refused_naming_the_check_it_failed() {
    let env = env_taking(Engine::Fast, ApiAuth::KeyOrToken, generous()).await;
    let db = &env.db.db;
    let path = env.fx.path("/x");
    let now = env.clock.now_ms() / 1000;
    let acme = signer_of(db, env.fx.tenant.id).await;
    let key_id = env.fx.key_id;
    let good = acme.sign(&claims_at(now, key_id, "acme"));
    assert_eq!(with_token(&env.gw, &path, &good).await.status(), 200);

    // Another tenant, with its own key and signing key.
    let other = seed(db, "globex", &env.upstream.url(""), generous()).await;
    store::ensure_signing_key(db, &secret(), other.tenant.id)
        .await
        .unwrap();
    env.gw.reload().await;
    let globex = signer_of(db, other.tenant.id).await;

    let parts: Vec<&str> = good.split('.').collect();
    let mut forged = claims_at(now, key_id + 1, "acme");
    forged.jti = "x".into();
    let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    let none_head = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let stranger = {
        let k = jwt::generate(&secret()).unwrap();
        Signer::open(&secret(), &k.kid, &k.sealed_private).unwrap()
    };
    let hs256 =
        hs256_keyed_with_public_key(db, env.fx.tenant.id, &claims_at(now, key_id, "acme")).await;
    let mut wrong_iss = claims_at(now, key_id, "acme");
    wrong_iss.iss = "https://elsewhere.example".into();
    let mut late = claims_at(now, key_id, "acme");
    late.nbf = now + 3600;
    late.exp = now + 7200;
    let mut old = claims_at(now - 7200, key_id, "acme");
    old.exp = now - 61;
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("expired", acme.sign(&old), "token_expired", "exp"),
        ("not yet valid", acme.sign(&late), "token_invalid", "nbf"),
        (
            "wrong issuer",
            acme.sign(&wrong_iss),
            "token_invalid",
            "issuer",
        ),
        (
            "another tenant's key",
            globex.sign(&claims_at(now, other.key_id, "globex")),
            "token_invalid",
            "tenant",
        ),
        (
            "this tenant's key, another tenant named",
            acme.sign(&claims_at(now, key_id, "globex")),
            "token_invalid",
            "tenant",
        ),
        (
            "tampered claims",
            format!("{}.{forged_body}.{}", parts[0], parts[2]),
            "token_invalid",
            "signature",
        ),
        (
            "unknown kid",
            stranger.sign(&claims_at(now, key_id, "acme")),
            "token_invalid",
            "kid",
        ),
        (
            "alg none",
            format!("{none_head}.{}.", parts[1]),
            "token_invalid",
            "algorithm",
        ),
        (
            "HS256 keyed with the public key",
            hs256,
            "token_invalid",
            "algorithm",
        ),
        ("not a JWT", "e30.e30.e30".into(), "token_invalid", "format"),
    ];
    for (what, token, kind, check) in cases {
        assert_eq!(
            refusal(with_token(&env.gw, &path, &token).await).await,
            (401, kind.into(), check.into()),
            "{what}"
        );
    }
    // A good token from a minute ago still passes within the leeway; one past it does not.
    env.clock.advance_ms((600 + 59) * 1000);
    assert_eq!(with_token(&env.gw, &path, &good).await.status(), 200);
    env.clock.advance_ms(2_000);
    assert_eq!(
        refusal(with_token(&env.gw, &path, &good).await).await.1,
        "token_expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_the_key_kills_its_tokens_on_two_data_plane_processes_within_a_second() {
    let Some(redis) = crate::helpers::redis() else {
        return;
    };
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(&db.db, "acme", &upstream.url(""), generous()).await;
    take_tokens(&db.db, fx.tenant.id, fx.api.id, ApiAuth::KeyOrToken, false).await;
    let mut settings = settings_for(&db.url, Some(&redis));
    settings.proxy.reload_poll_ms = 60_000;
    let local = spawn_gateway(settings, None).await;
    let child = Proc::spawn(
        &db.url,
        Some(&redis),
        &[
            ("GATEWAY_TOKEN_KEY", TEST_TOKEN_KEY),
            ("GATEWAY_RELOAD_POLL_MS", "60000"),
        ],
    );
    let token = minted(&local, &fx.key).await;
    let path = fx.path("/x");
    let client = reqwest::Client::new();
    let call = |base: String| {
        let client = client.clone();
        let (url, token) = (format!("{base}{path}"), token.clone());
        async move {
            client
                .get(url)
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
        }
    };
    // Both planes take the token (the child's snapshot is loaded once it answers).
    for base in [local.address.clone(), child.address.clone()] {
        let started = Instant::now();
        while call(base.clone()).await.status() != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{base} never took the token"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    crate::nodes::wait_for_subscribers(&redis.0, &redis.1, 2).await;

    let publisher = Publisher::new(Some(pool(&redis.0).unwrap()), redis.1.clone());
    store::revoke_key(&db.db, fx.tenant.id, fx.key_id)
        .await
        .unwrap();
    let revoked_at = Instant::now();
    publisher.keys_changed(&db.db, &[fx.key_id]).await;
    for base in [local.address.clone(), child.address.clone()] {
        loop {
            let r = call(base.clone()).await;
            if r.status() == 403 {
                assert_eq!(refusal(r).await.1, "token_revoked");
                break;
            }
            assert_eq!(r.status(), 200);
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "{base} still took the token 1 s after the revocation"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    child.terminate();
}

#[tokio::test]
async fn a_rotated_signing_key_keeps_verifying_its_tokens_until_they_expire() {
    let env = env_taking(Engine::Fast, ApiAuth::KeyOrToken, generous()).await;
    let path = env.fx.path("/x");
    let before = minted(&env.gw, &env.fx.key).await;
    let old_kid = part(&before, 0)["kid"].as_str().unwrap().to_owned();
    let new = store::rotate_signing_key(&env.db.db, &secret(), env.fx.tenant.id)
        .await
        .unwrap();
    env.gw.reload().await;
    let after = minted(&env.gw, &env.fx.key).await;
    assert_eq!(
        part(&after, 0)["kid"],
        new.kid.as_str(),
        "new tokens: the new key"
    );
    assert_ne!(new.kid, old_kid);
    assert_eq!(with_token(&env.gw, &path, &before).await.status(), 200);
    assert_eq!(with_token(&env.gw, &path, &after).await.status(), 200);
    // The JWKS has both while the old key's tokens live.
    let jwks: Value = env
        .gw
        .client
        .get(env.gw.url("/_gateway/acme/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    kids.sort_unstable();
    let mut want = vec![old_kid.as_str(), new.kid.as_str()];
    want.sort_unstable();
    assert_eq!(kids, want);
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    // Past their expiry (and the leeway), both are refused.
    env.clock.advance_ms((900 + 61) * 1000);
    for t in [&before, &after] {
        assert_eq!(
            refusal(with_token(&env.gw, &path, t).await).await.1,
            "token_expired"
        );
    }
    // An unknown tenant has no JWKS.
    let r = env
        .gw
        .client
        .get(env.gw.url("/_gateway/nobody/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn an_upstream_verifies_the_identity_token_with_the_tenants_jwks() {
    for engine in [Engine::Fast, Engine::Hyper] {
        let env = env_taking(engine, ApiAuth::Key, generous()).await;
        set_auth(&env, ApiAuth::Key, true).await;
        let r = env
            .gw
            .client
            .get(env.gw.url(&env.fx.path("/x")))
            .header("x-api-key", &env.fx.key)
            .header("x-client-id", "nobody-registered")
            .send()
            .await
            .unwrap();
        // An unknown client is refused before anything is signed.
        assert_eq!(r.status(), 403);
        let r = env
            .gw
            .client
            .get(env.gw.url(&env.fx.path("/x")))
            .header("x-api-key", &env.fx.key)
            .header("x-gateway-jwt", "forged.by.caller")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{engine:?}");
        let seen = env.upstream.last();
        let token = seen.headers["x-gateway-jwt"].to_str().unwrap().to_owned();
        assert_ne!(token, "forged.by.caller");
        let rid = seen.headers["x-request-id"].to_str().unwrap().to_owned();

        // What an upstream does: fetch the JWKS, pick the key by kid, verify with a stock library.
        let jwks: jsonwebtoken::jwk::JwkSet = env
            .gw
            .client
            .get(env.gw.url("/_gateway/acme/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        let jwk = jwks.find(&kid).expect("the token's key is in the JWKS");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.set_issuer(&[ISSUER]);
        // The test clock is in 2026-11: the library checks exp against the system clock.
        v.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap();
        let c = data.claims;
        assert_eq!(c["sub"], env.fx.key_id.to_string());
        assert_eq!(c["tenant"], "acme");
        assert_eq!(c["api"], "svc");
        assert_eq!(c["request_id"], rid.as_str());
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            60,
            "identity tokens live 60 s"
        );
        // Tampered, it no longer verifies.
        let mut bad = token.clone();
        bad.push('x');
        assert!(jsonwebtoken::decode::<Value>(&bad, &key, &v).is_err());
    }
}

#[tokio::test]
async fn a_tenant_without_a_signing_key_is_told_how_to_get_one() {
    let env = TestEnv::new().await;
    let r = mint(&env.gw, &env.fx.key).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(body["error"]["type"], "token_signing_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Tokens page"),
        "{body}"
    );
}
