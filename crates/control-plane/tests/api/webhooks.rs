//! Webhook endpoints in the management API and on the dashboard: every wrong field named, the
//! secret shown once, another tenant's endpoint a 404, deliveries listed.

use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;
use crate::management::{assert_error, signup};

#[tokio::test]
async fn endpoints_are_checked_shown_once_and_kept_to_their_tenant() {
    let app = spawn_app().await;
    let alice = signup(&app, "alice", "Acme").await;
    let bob = signup(&app, "bob", "Bob Co").await;

    let (s, body) = alice
        .post(
            "/api/v1/webhooks",
            json!({"url": "ftp://example.com/x", "events": ["quota.nearly"], "secret": "short"}),
        )
        .await;
    assert_error(s, &body, 422, "invalid_field");
    let fields: Vec<&str> = body["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["url", "events", "secret"], "{body}");
    // A link-local endpoint (cloud metadata) is refused for a tenant no admin trusts.
    let (s, body) = alice
        .post(
            "/api/v1/webhooks",
            json!({"url": "http://169.254.169.254/latest/meta-data", "events": ["quota.exhausted"]}),
        )
        .await;
    assert_error(s, &body, 422, "invalid_field");
    assert_eq!(body["error"]["details"]["field"], "url");
    let (_, list) = alice.get("/api/v1/webhooks").await;
    assert_eq!(list["items"], json!([]), "nothing stored by a refusal");

    let (s, created) = alice
        .post(
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example.com/gateway", "events": ["quota.exhausted", "key.expiring"]}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let id = created["id"].as_i64().unwrap();
    let (_, list) = alice.get("/api/v1/webhooks").await;
    assert_eq!(
        list["items"][0]["events"],
        json!(["quota.exhausted", "key.expiring"])
    );
    assert!(
        list["items"][0].get("secret").is_none(),
        "shown only at creation"
    );

    let (s, d) = alice
        .get(&format!("/api/v1/webhooks/{id}/deliveries"))
        .await;
    assert_eq!((s, d["items"].clone()), (200, json!([])));
    let (s, body) = bob.get(&format!("/api/v1/webhooks/{id}/deliveries")).await;
    assert_error(s, &body, 404, "not_found");
    let (s, body) = bob
        .call(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None)
        .await;
    assert_error(s, &body, 404, "not_found");
    let (s, _) = alice
        .call(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(s, 204);
}

#[tokio::test]
async fn the_webhooks_page_adds_an_endpoint_and_says_what_is_wrong() {
    let app = spawn_app().await;
    app.register("carol", "Carol Co").await;
    app.get("/webhooks")
        .await
        .assert_contains("Add an endpoint");
    let p = app
        .post(
            "/webhooks",
            "/webhooks",
            &[("url", "not a url"), ("secret", "x")],
        )
        .await;
    assert_eq!(p.status, 422);
    p.assert_contains("Events must name at least one event.");
    p.assert_contains("Signing secret must be 16 to 128 visible ASCII characters.");
    let p = app
        .post(
            "/webhooks",
            "/webhooks",
            &[
                ("url", "https://hooks.example.com/in"),
                ("ev_quota_warning", "on"),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    let page = app.get("/webhooks").await;
    page.assert_contains("https://hooks.example.com/in");
    page.assert_contains("signing secret, shown only now: whsec_");
    page.assert_contains("No deliveries yet.");
}
