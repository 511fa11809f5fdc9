//! Day and month quotas in the tenant's time zone, at the edge: the 429's wait and the reset
//! fields count to local midnight, and the new day starts there (the test clock).

use chrono::{TimeZone, Utc};
use domain::entities::tenant;
use domain::sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};

use crate::helpers::{EnvOptions, TestEnv, limits};

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

async fn a_tokyo_tenants_day_ends_at_tokyos_midnight(redis: bool) {
    let env = TestEnv::with(EnvOptions {
        limits: limits(1_000, None, Some(2), None),
        redis,
        ..EnvOptions::default()
    })
    .await;
    if redis && env.redis.is_none() {
        return;
    }
    let mut t = env.fx.tenant.clone().into_active_model();
    t.time_zone = Set("Asia/Tokyo".into());
    let _: tenant::Model = t.update(&env.db.db).await.unwrap();
    env.gw.reload().await;
    // The clock reads 2026-11-22 12:00 UTC: 21:00 in Tokyo, whose day ends at 15:00 UTC.
    for _ in 0..2 {
        assert_eq!(env.get("/x").await.status(), 200);
    }
    let resp = env.get("/x").await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        header(&resp, "retry-after"),
        "10800",
        "three hours to Tokyo's midnight"
    );
    assert_eq!(header(&resp, "x-ratelimit-reset"), "10800");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["details"]["window"], "day");
    // A millisecond before Tokyo's midnight (three hours before UTC's), still the same day.
    let midnight = Utc.with_ymd_and_hms(2026, 11, 22, 15, 0, 0).unwrap();
    env.clock.set(midnight - chrono::Duration::milliseconds(1));
    assert_eq!(env.get("/x").await.status(), 429);
    env.clock.set(midnight);
    let resp = env.get("/x").await;
    assert_eq!(resp.status(), 200, "a new day at Tokyo's midnight");
    assert_eq!(header(&resp, "x-ratelimit-remaining-day"), "1");
}

#[tokio::test]
async fn a_tokyo_tenants_day_ends_at_tokyos_midnight_in_process() {
    a_tokyo_tenants_day_ends_at_tokyos_midnight(false).await;
}

#[tokio::test]
async fn a_tokyo_tenants_day_ends_at_tokyos_midnight_on_redis() {
    a_tokyo_tenants_day_ends_at_tokyos_midnight(true).await;
}
