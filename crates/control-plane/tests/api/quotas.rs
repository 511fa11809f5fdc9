//! The quota calendar: a tenant's time zone, checked, changed from the next window, never twice
//! before the first change has taken effect; in the API and on the Plans page.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::spawn_app;
use crate::management::{assert_error, signup};

#[tokio::test]
async fn the_time_zone_is_checked_and_applies_from_the_next_window() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let (s, q) = api.get("/api/v1/quota-settings").await;
    assert_eq!(s, 200, "{q}");
    assert_eq!(q["time_zone"], "UTC");
    assert_eq!(q["day_windows_from"], Value::Null);

    let (s, body) = api
        .call(
            Method::PUT,
            "/api/v1/quota-settings",
            Some(json!({"time_zone": "Mars/Olympus"})),
        )
        .await;
    assert_error(s, &body, 422, "invalid_field");
    assert_eq!(body["error"]["details"]["field"], "time_zone");
    assert!(body["error"]["message"].as_str().unwrap().contains("IANA"));
    let (_, q) = api.get("/api/v1/quota-settings").await;
    assert_eq!(q["time_zone"], "UTC", "nothing stored by a refusal");

    let (s, q) = api
        .call(
            Method::PUT,
            "/api/v1/quota-settings",
            Some(json!({"time_zone": "Asia/Tokyo"})),
        )
        .await;
    assert_eq!(s, 200, "{q}");
    assert_eq!(q["time_zone"], "Asia/Tokyo");
    assert_eq!(q["previous_time_zone"], "UTC");
    // The UTC day and month running now end where they would have: the first Tokyo day starts
    // at the next UTC midnight.
    let tomorrow = (chrono::Utc::now().date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let from: chrono::DateTime<chrono::Utc> =
        q["day_windows_from"].as_str().unwrap().parse().unwrap();
    assert_eq!(from, tomorrow);

    // A second change before the first has taken effect for the month is refused, saying when.
    let (s, body) = api
        .call(
            Method::PUT,
            "/api/v1/quota-settings",
            Some(json!({"time_zone": "Europe/Berlin"})),
        )
        .await;
    assert_error(s, &body, 409, "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("can be changed again from")
    );
    // Setting the zone it already has changes nothing.
    let (s, _) = api
        .call(
            Method::PUT,
            "/api/v1/quota-settings",
            Some(json!({"time_zone": "Asia/Tokyo"})),
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn the_plans_page_sets_the_time_zone_and_says_what_is_wrong() {
    let app = spawn_app().await;
    app.register("bob", "Bob Co").await;
    let page = app.get("/plans").await;
    page.assert_contains("Quota calendar");
    page.assert_contains("value=\"UTC\"");
    page.assert_contains("<option value=\"America/New_York\">");
    let p = app
        .post(
            "/plans",
            "/plans/time-zone",
            &[("time_zone", "Nowhere/Special")],
        )
        .await;
    assert_eq!(p.status, 422);
    p.assert_contains("Time zone must be an IANA time zone name");
    p.assert_contains("value=\"Nowhere/Special\"");
    let p = app
        .post(
            "/plans",
            "/plans/time-zone",
            &[("time_zone", "America/New_York")],
        )
        .await;
    assert_eq!(p.status, 303);
    let page = app.get("/plans").await;
    page.assert_contains("value=\"America/New_York\"");
    page.assert_contains("Changed from UTC");
}
