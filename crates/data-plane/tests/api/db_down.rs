//! PostgreSQL down: data planes keep serving from their snapshot (limits through Redis, or in
//! process), stay ready, and lose no usage and no request-log record: both wait in memory and are
//! written when the database is back, by itself. A real PostgreSQL behind a TCP gate the test cuts
//! (connections reset, the port refusing) and opens again.

use std::time::{Duration, Instant};

use domain::sea_orm::{EntityTrait, PaginatorTrait};
use domain::testing::TestDb;
use serde_json::Value;

use crate::helpers::{limits, redis, seed, settings_for, spawn_gateway};
use crate::nodes::rollup_totals;
use crate::upstream::spawn_upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_the_data_plane_serves_and_loses_no_count() {
    let Some(pg) = TestDb::postgres().await else {
        return;
    };
    let redis = redis();
    let upstream = spawn_upstream().await;
    // A burst of 60: the limit still holds while the database is away.
    let fx = seed(
        &pg.db,
        "acme",
        &upstream.url(""),
        limits(1, Some(60), None, None),
    )
    .await;
    let (gate, gated_url) = pg.gated().await;
    let gw = spawn_gateway(settings_for(&gated_url, redis.as_ref()), None).await;
    for _ in 0..10 {
        assert_eq!(gw.get(&fx.path("/x"), &fx.key).await.status(), 200);
    }

    gate.cut();
    let cut = Instant::now();
    // Served from the snapshot, each answer prompt: 50 more admitted, then the burst is spent.
    let mut statuses = Vec::new();
    for _ in 0..55 {
        let started = Instant::now();
        statuses.push(gw.get(&fx.path("/x"), &fx.key).await.status().as_u16());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "an answer waited for the database"
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        50,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );
    // Still ready (a load balancer keeps it), and it says the database is down.
    let started = Instant::now();
    let ready = gw.get("/health/ready", &fx.key).await;
    assert_eq!(ready.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "down", "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    // Let a few usage and log flushes fail while it is down.
    while cut.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    gate.open();
    let opened = Instant::now();
    // Everything counted reaches the database by itself: 65 requests, 5 of them refused.
    loop {
        let totals = rollup_totals(&pg).await;
        let logged = domain::entities::request_log::Entity::find()
            .count(&pg.db)
            .await
            .unwrap();
        if totals == (65, 5, 0) && logged == 65 {
            break;
        }
        assert!(
            opened.elapsed() < Duration::from_secs(15),
            "usage {totals:?} and {logged} log records after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "all counted {:?} after the database came back",
        opened.elapsed()
    );
    let body: Value = gw.get("/health/ready", &fx.key).await.json().await.unwrap();
    assert_eq!(body["database"], "up", "{body}");
    gw.stop().await;
}
