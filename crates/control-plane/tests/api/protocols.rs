//! An API's protocol settings in the management API: `upstream_protocol` and
//! `websocket_idle_timeout_ms`, their defaults, changes and clear errors.

use serde_json::json;

use crate::helpers::spawn_app;
use crate::management::{assert_error, signup};

#[tokio::test]
async fn an_apis_protocol_settings_default_change_and_refuse_bad_values_by_name() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let (s, a) = api
        .post(
            "/api/v1/apis",
            json!({"name": "Chat", "slug": "chat", "upstream_url": "https://chat.example.com"}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["upstream_protocol"], "http1");
    assert_eq!(a["websocket_idle_timeout_ms"], 3_600_000);
    let id = a["id"].as_i64().unwrap();

    let (s, a) = api
        .patch(
            &format!("/api/v1/apis/{id}"),
            json!({"upstream_protocol": "h2", "websocket_idle_timeout_ms": 60_000}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        (
            a["upstream_protocol"].as_str(),
            a["websocket_idle_timeout_ms"].as_i64()
        ),
        (Some("h2"), Some(60_000))
    );
    // A change of something else keeps them.
    let (_, a) = api
        .patch(&format!("/api/v1/apis/{id}"), json!({"name": "Chat 2"}))
        .await;
    assert_eq!(a["upstream_protocol"], "h2");

    for (body, field) in [
        (json!({"upstream_protocol": "h3"}), "upstream_protocol"),
        (
            json!({"websocket_idle_timeout_ms": 10}),
            "websocket_idle_timeout_ms",
        ),
        (
            json!({"websocket_idle_timeout_ms": 100_000_000}),
            "websocket_idle_timeout_ms",
        ),
    ] {
        let (s, b) = api.patch(&format!("/api/v1/apis/{id}"), body).await;
        assert_error(s, &b, 422, "invalid_field");
        assert_eq!(b["error"]["details"]["field"], field, "{b}");
    }
    let (_, a) = api.get(&format!("/api/v1/apis/{id}")).await;
    assert_eq!(
        (
            a["upstream_protocol"].as_str(),
            a["websocket_idle_timeout_ms"].as_i64()
        ),
        (Some("h2"), Some(60_000)),
        "nothing stored changed"
    );
}
