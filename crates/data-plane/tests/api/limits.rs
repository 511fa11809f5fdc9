//! Limits at the gateway: headers on every response, 429s that say which window and when, the
//! real wait in Retry-After, and exact counts under concurrency (Redis when configured).

use std::sync::Arc;

use serde_json::Value;

use crate::helpers::{EnvOptions, TestEnv, limits};

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

async fn rate_limit_headers_on_every_response(redis: bool) {
    // The plan: 60 a minute with a burst of 20.
    let env = TestEnv::with(EnvOptions {
        limits: limits(60, Some(20), Some(100), Some(1_000)),
        redis,
        ..EnvOptions::default()
    })
    .await;
    let resp = env.get("/x").await;
    assert_eq!(resp.status(), 200);
    // The minute window as the plan states it (60 per 60 s); remaining is what can be sent now,
    // reset when the bucket is full again.
    assert_eq!(header(&resp, "x-ratelimit-limit-minute"), "60");
    assert_eq!(header(&resp, "x-ratelimit-remaining-minute"), "19");
    assert_eq!(header(&resp, "x-ratelimit-limit-day"), "100");
    assert_eq!(header(&resp, "x-ratelimit-remaining-day"), "99");
    assert_eq!(header(&resp, "x-ratelimit-limit-month"), "1000");
    assert_eq!(header(&resp, "x-ratelimit-remaining-month"), "999");
    // The tightest window is the minute bucket.
    assert_eq!(header(&resp, "x-ratelimit-limit"), "60");
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "19");
    assert_eq!(header(&resp, "x-ratelimit-reset"), "1");
    assert_eq!(
        header(&resp, "ratelimit-policy"),
        "\"minute\";q=60;w=60, \"day\";q=100;w=86400, \"month\";q=1000;w=2592000"
    );
    assert_eq!(header(&resp, "ratelimit"), "\"minute\";r=19;t=1");
    assert!(resp.headers().get("retry-after").is_none());
    // Four more: 15 left, and the bucket is full again in 5 s (one a second at 60/min); both
    // fields say so.
    for _ in 0..3 {
        env.get("/x").await;
    }
    let resp = env.get("/x").await;
    assert_eq!(header(&resp, "x-ratelimit-remaining-minute"), "15");
    assert_eq!(header(&resp, "x-ratelimit-reset"), "5");
    assert_eq!(header(&resp, "ratelimit"), "\"minute\";r=15;t=5");
    // Two seconds later two are back.
    env.clock.advance_ms(2_000);
    let resp = env.get("/x").await;
    assert_eq!(header(&resp, "x-ratelimit-remaining-minute"), "16");
    assert_eq!(header(&resp, "x-ratelimit-reset"), "4");
    // Upstream error responses carry them too.
    let resp = env.get("/status/500").await;
    assert_eq!(resp.status(), 500);
    assert_eq!(header(&resp, "x-ratelimit-remaining-minute"), "15");
}

#[tokio::test]
async fn rate_limit_headers_on_every_response_local() {
    rate_limit_headers_on_every_response(false).await;
}

#[tokio::test]
async fn rate_limit_headers_on_every_response_redis() {
    rate_limit_headers_on_every_response(true).await;
}

async fn rejections_say_which_window_and_retry_after_is_the_real_wait(redis: bool) {
    let env = TestEnv::with(EnvOptions {
        limits: limits(2, Some(2), Some(3), None),
        redis,
        ..EnvOptions::default()
    })
    .await;
    assert_eq!(env.get("/x").await.status(), 200);
    assert_eq!(env.get("/x").await.status(), 200);
    let resp = env.get("/x").await;
    assert_eq!(resp.status(), 429);
    // 2 per minute: one token every 30 s.
    assert_eq!(header(&resp, "retry-after"), "30");
    assert_eq!(header(&resp, "x-ratelimit-remaining-minute"), "0");
    assert_eq!(
        header(&resp, "x-ratelimit-remaining-day"),
        "1",
        "a 429 spends nothing"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limited");
    assert_eq!(body["error"]["details"]["window"], "minute");
    assert_eq!(body["error"]["details"]["retry_after"], 30);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("minute")
    );

    env.clock.advance_ms(20_000);
    assert_eq!(
        header(&env.get("/x").await, "retry-after"),
        "10",
        "the wait shrinks as time passes"
    );
    env.clock.advance_ms(10_000);
    assert_eq!(env.get("/x").await.status(), 200);

    // Now the day quota (3) is spent: the wait is until UTC midnight (the clock is at 12:00:30).
    env.clock.advance_ms(60_000);
    let resp = env.get("/x").await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        header(&resp, "retry-after"),
        (12 * 3600 - 90).to_string().as_str()
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["details"]["window"], "day");
    assert_eq!(
        env.upstream.count(),
        3,
        "rejected requests never reach the upstream"
    );
}

#[tokio::test]
async fn rejections_say_which_window_and_retry_after_is_the_real_wait_local() {
    rejections_say_which_window_and_retry_after_is_the_real_wait(false).await;
}

#[tokio::test]
async fn rejections_say_which_window_and_retry_after_is_the_real_wait_redis() {
    rejections_say_which_window_and_retry_after_is_the_real_wait(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_concurrent_requests_admit_exactly_the_limit() {
    for redis in [false, true] {
        let env = Arc::new(
            TestEnv::with(EnvOptions {
                limits: limits(1, Some(75), None, None),
                redis,
                ..EnvOptions::default()
            })
            .await,
        );
        if redis && env.redis.is_none() {
            continue;
        }
        let tasks: Vec<_> = (0..300)
            .map(|_| {
                let env = env.clone();
                tokio::spawn(async move { env.get("/x").await.status().as_u16() })
            })
            .collect();
        let mut ok = 0;
        let mut limited = 0;
        for t in tasks {
            match t.await.unwrap() {
                200 => ok += 1,
                429 => limited += 1,
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!((ok, limited), (75, 225), "redis={redis}");
        assert_eq!(env.upstream.count(), 75);
    }
}

/// Without Redis (the embedded default) a restart grants no quota: the in-process store starts
/// from the usage the database recorded.
#[tokio::test]
async fn without_redis_a_restart_continues_the_day_and_month_counts() {
    use crate::helpers::{seed, settings_for, spawn_gateway};
    let upstream = crate::upstream::spawn_upstream().await;
    let db = domain::testing::TestDb::sqlite().await;
    let fx = seed(
        &db.db,
        "acme",
        &upstream.url(""),
        limits(1_000, None, Some(10), Some(100)),
    )
    .await;
    let gw = spawn_gateway(settings_for(&db.url, None), None).await;
    let mut last = None;
    for _ in 0..3 {
        last = Some(gw.get(&fx.path("/x"), &fx.key).await);
    }
    let last = last.unwrap();
    assert_eq!(header(&last, "x-ratelimit-remaining-day"), "7");
    // A graceful stop flushes the usage; a new process on the same database goes on from it.
    gw.stop().await;
    let gw = spawn_gateway(settings_for(&db.url, None), None).await;
    let resp = gw.get(&fx.path("/x"), &fx.key).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-remaining-day"), "6");
    assert_eq!(header(&resp, "x-ratelimit-remaining-month"), "96");
    for _ in 0..6 {
        assert_eq!(gw.get(&fx.path("/x"), &fx.key).await.status(), 200);
    }
    let refused = gw.get(&fx.path("/x"), &fx.key).await;
    assert_eq!(
        refused.status(),
        429,
        "the day's 10 are spent across the restart"
    );
    gw.stop().await;
}
