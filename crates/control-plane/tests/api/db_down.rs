//! PostgreSQL down: the control plane answers 503 with a clear message (JSON envelope for the
//! API, a page for the dashboard) instead of 500s, and comes back by itself when the database
//! does. The database is a real PostgreSQL behind a TCP gate the test cuts (connections reset,
//! the port refusing) and opens again.

use std::time::{Duration, Instant};

use domain::testing::TestDb;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, spawn_app_with};

#[tokio::test]
async fn with_the_database_down_the_control_plane_answers_503_and_recovers_by_itself() {
    let Some(pg) = TestDb::postgres().await else {
        return;
    };
    let (gate, gated_url) = pg.gated().await;
    let app = spawn_app_with(pg, |s| s.shared.database_url = gated_url).await;
    let signup = app
        .client
        .post(app.url("/api/v1/signup"))
        .json(&json!({"username": "alice", "email": "a@example.com", "password": PASSWORD, "tenant_name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let token = signup.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = |path: &str| app.client.get(app.url(path)).bearer_auth(&token).send();
    assert_eq!(api("/api/v1/plans").await.unwrap().status(), 200);
    // A dashboard session, for the page check below.
    assert_eq!(app.login("alice", PASSWORD).await.status, 303);
    assert_eq!(app.get("/plans").await.status, 200);

    gate.cut();
    let cut = Instant::now();
    let resp = api("/api/v1/plans").await.unwrap();
    let waited = cut.elapsed();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "database_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("database") && message.contains("nothing was changed"),
        "{message}"
    );
    assert!(waited < Duration::from_secs(8), "answered after {waited:?}");
    // A write is refused the same way (nothing half-done to clean up later).
    let write = app
        .client
        .post(app.url("/api/v1/plans"))
        .bearer_auth(&token)
        .json(&json!({"name": "during", "requests_per_minute": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 503);
    // The dashboard says so in a page.
    let page = app.get("/plans").await;
    assert_eq!(page.status, 503, "{}", page.body);
    page.assert_contains("Temporarily unavailable");
    page.assert_contains("database cannot be reached");
    // Health says the database is down, promptly.
    let started = Instant::now();
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(health.json::<Value>().await.unwrap()["database"], "down");

    // Back: the same process answers again, without a restart.
    gate.open();
    let opened = Instant::now();
    loop {
        let status = api("/api/v1/plans").await.unwrap().status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            opened.elapsed() < Duration::from_secs(10),
            "the control plane did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "control plane answered again {:?} after the database came back",
        opened.elapsed()
    );
    let plans: Value = api("/api/v1/plans").await.unwrap().json().await.unwrap();
    assert!(
        !plans.to_string().contains("during"),
        "the refused write left nothing behind: {plans}"
    );
    assert_eq!(app.get("/plans").await.status, 200);
}
