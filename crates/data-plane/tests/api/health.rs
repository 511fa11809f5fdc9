use crate::helpers::{TestEnv, settings_for, spawn_gateway};

#[tokio::test]
async fn health_endpoints_answer_and_ready_reports_state() {
    let env = TestEnv::new().await;
    for path in ["/health", "/health/live"] {
        let resp = env.gw.client.get(env.gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let resp = env
        .gw
        .client
        .get(env.gw.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], "up");
    assert_eq!(body["redis"], "not_configured");
    assert_eq!(body["limiter"], "local");
    assert!(body["snapshot_version"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let env = TestEnv::new().await;
    assert_eq!(env.get("/x").await.status(), 200);
    assert_eq!(env.gw.get(&env.fx.path("/x"), "wrong").await.status(), 403);
    let resp = env
        .gw
        .client
        .get(env.gw.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("gateway_requests_total{outcome=\"proxied\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gateway_requests_total{outcome=\"denied\"} 1"),
        "{text}"
    );
    assert!(text.contains("gateway_snapshot_keys 1"), "{text}");
    assert!(text.contains("gateway_redis_up 0"), "{text}");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let db = domain::testing::TestDb::sqlite().await;
    let gw = spawn_gateway(settings_for(&db.url, None), None).await;
    let url = gw.url("/health");
    assert_eq!(gw.client.get(&url).send().await.unwrap().status(), 200);
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    gw.stop().await;
    assert!(
        fresh.get(&url).send().await.is_err(),
        "the gateway kept accepting after shutdown"
    );
}

#[tokio::test]
async fn a_missing_database_file_is_an_error_not_a_new_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let err = match data_plane::Application::build(settings_for(&url, None)).await {
        Ok(_) => panic!("the data plane started on a database that does not exist"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("does not exist"), "{err}");
    assert!(err.contains("control-plane migrate"), "{err}");
    assert!(!file.exists(), "the data plane created the database file");
}

/// Polls `/health/ready` until it answers `want` (or 10 s pass).
async fn ready_becomes(gw: &crate::helpers::TestGateway, want: u16) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let resp = gw.client.get(gw.url("/health/ready")).send().await.unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        if status == want {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/health/ready stayed {status}: {body}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn on_an_unmigrated_database_the_data_plane_waits_unready_and_migrates_nothing() {
    use migration::{Migrator, MigratorTrait};
    let mut dbs = vec![domain::testing::TestDb::sqlite_empty().await];
    if let Some(admin) = domain::testing::required_env("TEST_DATABASE_URL") {
        dbs.push(domain::testing::TestDb::postgres_from(&admin, false).await);
    }
    for db in dbs {
        let mut settings = settings_for(&db.url, None);
        settings.proxy.reload_poll_ms = 20;
        let gw = spawn_gateway(settings, None).await;
        let body = ready_becomes(&gw, 503).await;
        assert_eq!(body["snapshot"], "waiting_for_schema", "{:?}", db.backend);
        assert!(
            Migrator::get_pending_migrations(&db.db).await.is_err()
                || !Migrator::get_pending_migrations(&db.db)
                    .await
                    .unwrap()
                    .is_empty(),
            "{:?}: the data plane migrated the database",
            db.backend
        );
        // The control plane migrates it and a tenant signs up: the data plane becomes ready
        // and serves it without a restart.
        Migrator::up(&db.db, None).await.unwrap();
        let upstream = crate::upstream::spawn_upstream().await;
        let fx = crate::helpers::seed(
            &db.db,
            "late",
            &upstream.url("/"),
            crate::helpers::generous(),
        )
        .await;
        let body = ready_becomes(&gw, 200).await;
        assert_eq!(body["snapshot"], "loaded");
        // Ready may have come between the migration and the sign-up: wait for the sign-up.
        let version = domain::store::config_version(&db.db).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while gw.gateway.snapshot.load().version < version {
            assert!(
                std::time::Instant::now() < deadline,
                "the sign-up never loaded"
            );
            tokio::task::yield_now().await;
        }
        let resp = gw.get(&fx.path("/hi"), &fx.key).await;
        assert_eq!(resp.status(), 200, "{:?}", db.backend);
        gw.stop().await;
    }
}
