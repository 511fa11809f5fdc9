//! A tenant's ceiling (a platform admin's): every key and client of the tenant shares it, decided
//! with each plan's windows in one step, so a refusal anywhere spends nothing anywhere.

use domain::plan::{Enforcement, TenantLimits};
use domain::store::{self, TenantChange};
use domain::testing::TestDb;
use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::{generous, limits, redis, seed, settings_for, spawn_gateway};
use crate::process::Proc;
use crate::upstream::spawn_upstream;

fn ceiling(rpm: u64, burst: u64) -> TenantChange {
    TenantChange {
        limits: Some(Some(TenantLimits {
            requests_per_minute: Some(rpm),
            burst: Some(burst),
            ..TenantLimits::default()
        })),
        ..TenantChange::default()
    }
}

/// A status, the 429's `details.level` and `details.window`, and whether the answer showed the
/// tenant's own rate-limit fields.
async fn call(client: &reqwest::Client, url: String, key: String) -> (u16, String, String, bool) {
    let r = client
        .get(url)
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let tenant_fields = r.headers().contains_key("x-ratelimit-limit-tenant-minute");
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let details = &body["error"]["details"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        status,
        s(&details["level"]),
        s(&details["window"]),
        tenant_fields,
    )
}

/// A key on a second plan of `fx`'s tenant (`limits`): its raw value.
async fn another_key(
    db: &TestDb,
    fx: &crate::helpers::Fixture,
    limits: domain::plan::PlanLimits,
) -> String {
    let plan = store::create_plan(&db.db, fx.tenant.id, "other", limits, Enforcement::Strict)
        .await
        .unwrap();
    let (_, key) = store::create_api_key(&db.db, fx.tenant.id, plan.id, "other", None)
        .await
        .unwrap();
    key.expose().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_ceiling_admits_exactly_its_burst_across_two_processes() {
    let Some(redis) = redis() else { return };
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    // Two keys on generous plans under a ceiling of 10; and another tenant, under a ceiling of
    // 5, with a key whose own plan holds 2 and a generous one.
    let fx = seed(&db.db, "ceiled", &upstream.url(""), generous()).await;
    let second_key = another_key(&db, &fx, generous()).await;
    store::change_tenant(&db.db, fx.tenant.id, ceiling(1, 10))
        .await
        .unwrap();
    let tight = seed(
        &db.db,
        "tightco",
        &upstream.url(""),
        limits(1, Some(2), None, None),
    )
    .await;
    let tight_generous = another_key(&db, &tight, generous()).await;
    store::change_tenant(&db.db, tight.tenant.id, ceiling(1, 5))
        .await
        .unwrap();
    let a = Proc::spawn(&db.url, Some(&redis), &[]);
    let b = Proc::spawn(&db.url, Some(&redis), &[]);
    let on_both = |fx: &crate::helpers::Fixture| {
        [
            format!("{}{}", a.address, fx.path("/x")),
            format!("{}{}", b.address, fx.path("/x")),
        ]
    };
    let client = reqwest::Client::new();

    // 200 concurrent requests of the two generous keys through both processes: exactly 10.
    let urls = on_both(&fx);
    let keys = [fx.key.clone(), second_key];
    let calls = (0..200).map(|i| call(&client, urls[i % 2].clone(), keys[(i / 2) % 2].clone()));
    let answers = join_all(calls).await;
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    assert_eq!(ok, 10, "the ceiling of 10, whatever each key's plan allows");
    for (status, level, window, tenant_fields) in &answers {
        match status {
            200 => assert!(
                !tenant_fields,
                "the tenant's window is not shown to a caller"
            ),
            429 => {
                assert_eq!(
                    (level.as_str(), window.as_str()),
                    ("tenant", "tenant-minute")
                );
                assert!(tenant_fields, "the refusing window's fields are on the 429");
            }
            other => panic!("unexpected status {other}"),
        }
    }

    // A key refused by its own plan spends nothing of its tenant's ceiling: the tight key's 2
    // admitted and 4 refused (level plan) leave the generous key exactly 5 - 2 = 3.
    let urls = on_both(&tight);
    let mut tight_answers = Vec::new();
    for i in 0..6 {
        tight_answers.push(call(&client, urls[i % 2].clone(), tight.key.clone()).await);
    }
    assert_eq!(tight_answers.iter().filter(|a| a.0 == 200).count(), 2);
    for (status, level, window, _) in &tight_answers[2..] {
        assert_eq!(
            (*status, level.as_str(), window.as_str()),
            (429, "plan", "minute")
        );
    }
    let calls = (0..20).map(|i| call(&client, urls[i % 2].clone(), tight_generous.clone()));
    let answers = join_all(calls).await;
    assert_eq!(answers.iter().filter(|a| a.0 == 200).count(), 3);
    assert_eq!(upstream.count(), 10 + 2 + 3);
}

#[tokio::test]
async fn without_redis_a_ceiling_holds_and_follows_the_admins_change() {
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(&db.db, "ceiled", &upstream.url(""), generous()).await;
    store::change_tenant(&db.db, fx.tenant.id, ceiling(60, 3))
        .await
        .unwrap();
    let gw = spawn_gateway(settings_for(&db.url, None), None).await;
    let url = gw.url(&fx.path("/x"));
    for _ in 0..3 {
        assert_eq!(call(&gw.client, url.clone(), fx.key.clone()).await.0, 200);
    }
    let r = gw.get(&fx.path("/x"), &fx.key).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the tenant's minute"),
        "the message says whose window: {message}"
    );

    // The admin removes the ceiling: the plan alone decides again.
    store::change_tenant(
        &db.db,
        fx.tenant.id,
        TenantChange {
            limits: Some(None),
            ..TenantChange::default()
        },
    )
    .await
    .unwrap();
    gw.reload().await;
    assert_eq!(call(&gw.client, url, fx.key.clone()).await.0, 200);
    gw.stop().await;
}
