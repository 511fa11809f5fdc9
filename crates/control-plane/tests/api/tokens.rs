//! Tokens in the management API: an API's `auth` and `identity_token`, the tenant's signing keys
//! (made on demand, rotated, never shown in private), its token lifetime, and the token check.

use domain::entities::signing_key;
use domain::jwt::{Signer, TokenSecret};
use domain::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use domain::settings::TEST_TOKEN_KEY;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with};
use crate::management::{Api, assert_error, signup};

/// A key of a fresh plan of `api`'s tenant: its id.
async fn key_of(api: &Api<'_>) -> i64 {
    let (_, plan) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Free", "requests_per_minute": 60}),
        )
        .await;
    let (s, k) = api
        .post("/api/v1/keys", json!({"name": "ci", "plan_id": plan["id"]}))
        .await;
    assert_eq!(s, 201, "{k}");
    k["id"].as_i64().unwrap()
}

/// A token for key `key_id` signed with the tenant's current key, as a data plane mints it.
async fn token_for(api: &Api<'_>, tenant: &str, key_id: i64, iss: &str) -> String {
    let (_, keys) = api.get("/api/v1/signing-keys").await;
    let kid = keys["items"][0]["kid"].as_str().unwrap();
    let row = signing_key::Entity::find()
        .filter(signing_key::Column::Kid.eq(kid))
        .one(&api.app.db.db)
        .await
        .unwrap()
        .unwrap();
    let secret = TokenSecret::new(TEST_TOKEN_KEY).unwrap();
    let now = chrono::Utc::now().timestamp();
    Signer::open(&secret, &row.kid, &row.sealed_private)
        .unwrap()
        .sign(&domain::testing::token_claims(
            iss, key_id, tenant, now, 600,
        ))
}

async fn validate(api: &Api<'_>, token: &str) -> Value {
    let (s, v) = api
        .post("/api/v1/tokens/validate", json!({ "token": token }))
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test]
async fn signing_keys_are_made_on_demand_rotated_and_never_shown_in_private() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let (s, keys) = api.get("/api/v1/signing-keys").await;
    assert_eq!(s, 200, "{keys}");
    assert_eq!(keys["items"], json!([]), "no key until one is needed");
    assert_eq!(
        keys["jwks_url"],
        "http://localhost:7000/_gateway/acme/jwks.json"
    );
    assert_eq!(keys["token_url"], "http://localhost:7000/_gateway/token");
    assert_eq!(keys["token_lifetime_s"], 900);

    // An API that takes tokens gets its tenant a key.
    let (s, a) = api
        .post(
            "/api/v1/apis",
            json!({"name": "W", "slug": "w", "upstream_url": "https://w.example.com",
                   "auth": "key_or_token", "identity_token": true}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(
        (a["auth"].as_str(), a["identity_token"].as_bool()),
        (Some("key_or_token"), Some(true))
    );
    let (_, keys) = api.get("/api/v1/signing-keys").await;
    let first = keys["items"][0].clone();
    assert_eq!(keys["items"].as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(
        (first["current"].as_bool(), first["alg"].as_str()),
        (Some(true), Some("EdDSA"))
    );
    assert_eq!(first["jwk"]["kty"], "OKP");
    assert_eq!(first["jwk"]["crv"], "Ed25519");
    assert!(first["jwk"].get("d").is_none(), "no private part: {first}");
    let sealed = signing_key::Entity::find()
        .one(&app.db.db)
        .await
        .unwrap()
        .unwrap()
        .sealed_private;
    assert!(!keys.to_string().contains(&sealed));

    // Lifetime: validated, then used for what a rotation keeps.
    let (s, b) = api
        .call(
            Method::PUT,
            "/api/v1/token-settings",
            Some(json!({"token_lifetime_s": 30})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(b["error"]["details"]["field"], "token_lifetime_s", "{b}");
    let (s, b) = api
        .call(
            Method::PUT,
            "/api/v1/token-settings",
            Some(json!({"token_lifetime_s": 3600})),
        )
        .await;
    assert_eq!(
        (s, b["token_lifetime_s"].as_i64()),
        (200, Some(3600)),
        "{b}"
    );

    let (s, new) = api.post("/api/v1/signing-keys/rotate", json!({})).await;
    assert_eq!(s, 201, "{new}");
    assert_ne!(new["kid"], first["kid"]);
    let (_, keys) = api.get("/api/v1/signing-keys").await;
    let items = keys["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        (items[0]["kid"].clone(), items[0]["current"].as_bool()),
        (new["kid"].clone(), Some(true))
    );
    assert_eq!(items[1]["kid"], first["kid"]);
    let until =
        chrono::DateTime::parse_from_rfc3339(items[1]["verify_until"].as_str().unwrap()).unwrap();
    let left = until.timestamp() - chrono::Utc::now().timestamp();
    assert!(
        (3600..=3600 + 60 + 5).contains(&left),
        "the old key verifies for the lifetime and the leeway: {left} s"
    );

    // Bad auth values name the field.
    let (s, b) = api
        .post(
            "/api/v1/apis",
            json!({"name": "X", "slug": "x", "upstream_url": "https://x.example.com", "auth": "jwt"}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(b["error"]["details"]["field"], "auth");

    // Another tenant sees none of these.
    let bob = signup(&app, "bob", "Bobco").await;
    let (_, theirs) = bob.get("/api/v1/signing-keys").await;
    assert_eq!(theirs["items"], json!([]));
}

#[tokio::test]
async fn a_token_is_checked_as_the_data_plane_would() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let key_id = key_of(&api).await;
    let (s, _) = api.post("/api/v1/signing-keys/rotate", json!({})).await;
    assert_eq!(s, 201);
    let iss = "http://localhost:7000";
    let token = token_for(&api, "acme", key_id, iss).await;
    let v = validate(&api, &token).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["claims"]["sub"], key_id.to_string());

    let mut tampered = token.clone();
    tampered.insert(token.find('.').unwrap() + 3, 'A');
    let v = validate(&api, &tampered).await;
    assert_eq!(
        (v["valid"].as_bool(), v["check"].as_str()),
        (Some(false), Some("signature")),
        "{v}"
    );
    let v = validate(
        &api,
        &token_for(&api, "acme", key_id, "https://other").await,
    )
    .await;
    assert_eq!(v["check"], "issuer");
    let v = validate(&api, "not-a-token").await;
    assert_eq!(v["check"], "format");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));

    // Another tenant does not know this tenant's key.
    let bob = signup(&app, "bob", "Bobco").await;
    assert_eq!(validate(&bob, &token).await["check"], "kid");

    // Revoked, the key's tokens are no longer valid.
    let (s, _) = api
        .call(Method::DELETE, &format!("/api/v1/keys/{key_id}"), None)
        .await;
    assert!(s == 204 || s == 200, "{s}");
    assert_eq!(validate(&api, &token).await["check"], "revoked");
}

#[tokio::test]
async fn without_a_token_key_no_signing_key_is_made() {
    let db = domain::testing::TestDb::sqlite().await;
    let app = spawn_app_with(db, |s| {
        s.shared.token_key = None;
        s.shared.secret_key = None;
    })
    .await;
    let api = signup(&app, "alice", "Acme").await;
    let (s, b) = api.post("/api/v1/signing-keys/rotate", json!({})).await;
    assert_error(s, &b, 409, "conflict");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GATEWAY_TOKEN_KEY"),
        "{b}"
    );
    // An API may still say it takes tokens; minting then tells why it cannot.
    let (s, _) = api
        .post(
            "/api/v1/apis",
            json!({"name": "W", "slug": "w", "upstream_url": "https://w.example.com", "auth": "token"}),
        )
        .await;
    assert_eq!(s, 201);
    let (_, keys) = api.get("/api/v1/signing-keys").await;
    assert_eq!(keys["items"], json!([]));
}
