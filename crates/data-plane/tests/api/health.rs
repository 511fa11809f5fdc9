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
