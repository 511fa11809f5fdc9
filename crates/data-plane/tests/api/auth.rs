//! Authentication: 401 / 403 / 404 in every case the issue lists, and clients.

use chrono::Duration;
use domain::clock::Clock;
use domain::entities::{api, api_key, client, tenant};
use domain::sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, IntoActiveModel};
use domain::store;
use serde_json::Value;

use crate::helpers::{TestEnv, generous, limits, seed};

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], status);
    assert_eq!(
        body["request_id"],
        rid.as_str(),
        "the envelope carries the request id"
    );
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    (status, body)
}

#[tokio::test]
async fn missing_key_is_401_naming_the_header() {
    let env = TestEnv::new().await;
    let resp = env
        .gw
        .client
        .get(env.gw.url(&env.fx.path("/x")))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["type"], "missing_api_key");
    assert_eq!(body["error"]["details"]["header"], "X-API-Key");
    assert_eq!(env.upstream.count(), 0);
}

#[tokio::test]
async fn unknown_revoked_expired_and_foreign_keys_are_403() {
    let env = TestEnv::new().await;
    let db = &env.db.db;
    let (status, body) = error_of(env.gw.get(&env.fx.path("/x"), "gw_live_nope").await).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (403, Some("invalid_api_key"))
    );

    // Another tenant's valid key.
    let other = seed(db, "other", &env.upstream.url(""), generous()).await;
    env.gw.reload().await;
    assert_eq!(
        env.gw.get(&other.path("/x"), &other.key).await.status(),
        200,
        "valid on its own API"
    );
    let (status, _) = error_of(env.gw.get(&env.fx.path("/x"), &other.key).await).await;
    assert_eq!(status, 403);

    // Expired.
    let (_, raw) = store::create_api_key(
        db,
        env.fx.tenant.id,
        env.fx.plan.id,
        "old",
        Some(env.clock.now() - Duration::seconds(1)),
    )
    .await
    .unwrap();
    let (_, soon) = store::create_api_key(
        db,
        env.fx.tenant.id,
        env.fx.plan.id,
        "soon",
        Some(env.clock.now() + Duration::seconds(60)),
    )
    .await
    .unwrap();
    env.gw.reload().await;
    let (status, body) = error_of(env.gw.get(&env.fx.path("/x"), raw.expose()).await).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (403, Some("api_key_expired"))
    );
    assert_eq!(
        env.gw.get(&env.fx.path("/x"), soon.expose()).await.status(),
        200
    );
    env.clock.advance_ms(60_000);
    assert_eq!(
        env.gw.get(&env.fx.path("/x"), soon.expose()).await.status(),
        403,
        "expires on time"
    );

    // Revoked.
    store::revoke_key(db, env.fx.tenant.id, env.fx.key_id)
        .await
        .unwrap();
    env.gw.reload().await;
    let (status, body) = error_of(env.get("/x").await).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (403, Some("api_key_revoked"))
    );

    // Inactive key set directly (e.g. by an admin tool) is refused the same way.
    let k = api_key::Entity::find_by_id(env.fx.key_id)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert!(!k.is_active);
}

#[tokio::test]
async fn unknown_or_inactive_tenant_or_api_is_404() {
    let env = TestEnv::new().await;
    let db = &env.db.db;
    for path in ["/nobody/svc/x", "/acme/nothing/x", "/acme", "/"] {
        let (status, body) = error_of(env.gw.get(path, &env.fx.key).await).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["type"], "not_found");
    }
    let mut a = env.fx.api.clone().into_active_model();
    a.is_active = Set(false);
    let _: api::Model = a.update(db).await.unwrap();
    env.gw.reload().await;
    assert_eq!(env.get("/x").await.status(), 404, "disabled API");

    let mut a = env.fx.api.clone().into_active_model();
    a.is_active = Set(true);
    let _: api::Model = a.update(db).await.unwrap();
    let mut t = env.fx.tenant.clone().into_active_model();
    t.is_active = Set(false);
    let _: tenant::Model = t.update(db).await.unwrap();
    env.gw.reload().await;
    assert_eq!(env.get("/x").await.status(), 404, "deactivated tenant");
    assert_eq!(env.upstream.count(), 0);
}

#[tokio::test]
async fn a_registered_client_uses_its_own_plan_and_counters() {
    let env = TestEnv::new().await;
    let db = &env.db.db;
    let tight = store::create_plan(
        db,
        env.fx.tenant.id,
        "tight",
        limits(1, Some(1), None, None),
        domain::plan::Enforcement::Strict,
    )
    .await
    .unwrap();
    let c = store::create_client(db, env.fx.tenant.id, "mobile-app", "Mobile", tight.id)
        .await
        .unwrap();
    env.gw.reload().await;
    let call = |client: Option<&'static str>| {
        let mut r = env
            .gw
            .client
            .get(env.gw.url(&env.fx.path("/c")))
            .header("x-api-key", &env.fx.key);
        if let Some(c) = client {
            r = r.header("x-client-id", c);
        }
        r.send()
    };
    let resp = call(Some("mobile-app")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-ratelimit-limit-minute"],
        "1",
        "the client's plan applies"
    );
    assert_eq!(
        env.upstream.last().headers["x-gateway-client-id"],
        "mobile-app"
    );
    assert_eq!(call(Some("mobile-app")).await.unwrap().status(), 429);
    // The key's own counters are untouched by the client's use.
    assert_eq!(call(None).await.unwrap().status(), 200);

    let (status, body) = error_of(call(Some("unknown-app")).await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (403, Some("unknown_client"))
    );

    let mut m = c.into_active_model();
    m.is_active = Set(false);
    let _: client::Model = m.update(db).await.unwrap();
    env.gw.reload().await;
    assert_eq!(
        call(Some("mobile-app")).await.unwrap().status(),
        403,
        "deactivated client"
    );
}
