use crate::helpers::spawn_gateway;

#[tokio::test]
async fn health_endpoints_answer() {
    let gw = spawn_gateway().await;
    for path in ["/health", "/health/live", "/health/ready"] {
        let resp = gw
            .client
            .get(format!("{}{path}", gw.address))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let resp = gw
        .client
        .get(format!("{}/nope", gw.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], 404);
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let gw = spawn_gateway().await;
    let url = format!("{}/health", gw.address);
    assert_eq!(gw.client.get(&url).send().await.unwrap().status(), 200);
    gw.shutdown.shutdown();
    // The listener closes once the accept loop sees the signal; poll until it does.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut refused = false;
    for _ in 0..200 {
        if fresh.get(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "the gateway kept accepting after shutdown");
    drop(gw.db);
}
