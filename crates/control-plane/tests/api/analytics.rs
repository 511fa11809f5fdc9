//! `/api/v1/analytics` and `/api/v1/logs`: what the data planes wrote (records and traffic
//! counts put in the database as a data plane's flush puts them), read back for the caller's
//! tenant only, with every filter, page and wrong input.

use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, Duration, Utc};
use domain::analytics::Dims;
use domain::request_log::{Record, flags};
use domain::sea_orm::EntityTrait;
use domain::store::request_log::RequestLogWriter;
use domain::testing::traffic;
use serde_json::{Value, json};

use crate::helpers::{between, spawn_app};
use crate::management::{Api, assert_error, signup};

/// A plan, an API and a key of the caller's tenant: (tenant id, api id, key id).
async fn seed(api: &Api<'_>, slug: &str) -> (i64, i64, i64) {
    let (_, plan) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Plan", "requests_per_minute": 100}),
        )
        .await;
    let (s, a) = api
        .post(
            "/api/v1/apis",
            json!({"name": "Orders", "slug": slug, "upstream_url": "https://example.com/"}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    let (_, k) = api
        .post(
            "/api/v1/keys",
            json!({"name": "mobile", "plan_id": plan["id"]}),
        )
        .await;
    let api_id = a["id"].as_i64().unwrap();
    let model = domain::entities::api::Entity::find_by_id(api_id)
        .one(&api.app.db.db)
        .await
        .unwrap()
        .unwrap();
    (model.tenant_id, api_id, k["id"].as_i64().unwrap())
}

fn record(
    tenant_id: i64,
    api_id: i64,
    key_id: i64,
    at: DateTime<Utc>,
    rid: &str,
    status: u16,
) -> Record {
    // The ids here are the callers' own (`X-Request-ID`).
    let mut r = domain::testing::record(tenant_id, at.timestamp_millis(), rid);
    r.api_id = api_id;
    r.key_id = key_id;
    r.key_prefix = Some(domain::request_log::key_prefix("gw_live_feedc0de00000000"));
    r.method = if status == 201 { "POST" } else { "GET" }.into();
    r.path = "/acme/orders/items".into();
    r.status = status;
    r.latency_us = 12_345;
    r.upstream_latency_us = Some(11_000);
    r.bytes_out = 99;
    r.target_id = 1;
    r.client_ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    match status {
        429 => {
            r.flags |= flags::RATE_LIMITED;
            r.error_type = Some("rate_limited");
        }
        502 => r.flags |= flags::UPSTREAM_ERROR,
        _ => {}
    }
    r
}

#[tokio::test]
#[allow(clippy::many_single_char_names)] // a and b: the two tenants' API clients
async fn logs_are_the_callers_newest_first_filtered_and_paged() {
    let app = spawn_app().await;
    let a = signup(&app, "alice", "Acme").await;
    let b = signup(&app, "bob", "Bobs").await;
    let (ta, api_a, key_a) = seed(&a, "orders").await;
    let (tb, api_b, key_b) = seed(&b, "orders").await;
    let now = Utc::now();
    let mut records = Vec::new();
    for i in 0..30 {
        let status = [200, 201, 404, 429, 502][i % 5];
        let at = now - Duration::seconds(100 - i64::try_from(i).unwrap());
        records.push(record(ta, api_a, key_a, at, &format!("a-{i}"), status));
    }
    records.push(record(tb, api_b, key_b, now, "b-secret", 200));
    RequestLogWriter::default()
        .insert(&app.db.db, &records)
        .await
        .unwrap();

    let (s, page) = a.get("/api/v1/logs?limit=10").await;
    assert_eq!(s, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 10);
    assert_eq!(items[0]["request_id"], "a-29", "newest first");
    let r = &items[0];
    assert_eq!(r["status"], 502);
    assert_eq!(r["api_id"], api_a);
    assert_eq!(r["key_id"], key_a);
    assert_eq!(r["key_prefix"], "gw_live_feedc0de");
    assert_eq!(r["client_ip"], "203.0.113.7");
    assert_eq!(r["latency_ms"], 12.345);
    assert_eq!(r["upstream_latency_ms"], 11.0);
    assert_eq!(r["method"], "GET");
    // Following the cursors reads all 30, each once, none of the other tenant's.
    let mut seen: Vec<String> = items
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    let mut cursor = page["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let (_, p) = a.get(&format!("/api/v1/logs?limit=10&cursor={c}")).await;
        seen.extend(
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["request_id"].as_str().unwrap().to_owned()),
        );
        cursor = p["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), 30);
    assert!(!seen.iter().any(|r| r.starts_with("b-")));

    // Filters.
    let count = |v: &Value| v["items"].as_array().unwrap().len();
    let (_, p) = a.get("/api/v1/logs?status=4xx&limit=100").await;
    assert_eq!(count(&p), 12);
    let (_, p) = a.get("/api/v1/logs?status=429").await;
    assert_eq!(count(&p), 6);
    assert_eq!(p["items"][0]["flags"], json!(["rate_limited"]));
    assert_eq!(p["items"][0]["error_type"], "rate_limited");
    let (_, p) = a.get("/api/v1/logs?method=post").await;
    assert_eq!(count(&p), 6);
    let (_, p) = a.get("/api/v1/logs?request_id=a-7").await;
    assert_eq!(count(&p), 1);
    let (_, p) = a.get(&format!("/api/v1/logs?api_id={api_b}")).await;
    assert_eq!(count(&p), 0, "another tenant's API shows nothing");
    let from = (now - Duration::seconds(75)).to_rfc3339();
    let (_, p) = a
        .get(&format!("/api/v1/logs?limit=100&from={}", urlencode(&from)))
        .await;
    assert_eq!(count(&p), 5, "a-25 to a-29");

    // One record by request id: the caller's only.
    let (s, r) = a.get("/api/v1/logs/a-3").await;
    assert_eq!((s, r["status"].as_i64()), (200, Some(429)));
    let (s, body) = a.get("/api/v1/logs/b-secret").await;
    assert_error(s, &body, 404, "not_found");
    let (s, body) = b.get("/api/v1/logs/a-3").await;
    assert_error(s, &body, 404, "not_found");

    // Wrong input names its field.
    for (q, field) in [
        ("status=6xx", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=nonsense", "cursor"),
        ("method=GE%20T", "method"),
    ] {
        let (s, body) = a.get(&format!("/api/v1/logs?{q}")).await;
        assert_error(s, &body, 422, "invalid_field");
        assert_eq!(body["error"]["details"]["field"], field, "{q}: {body}");
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
#[allow(clippy::many_single_char_names, clippy::too_many_lines)] // a, b: the tenants; one story
async fn analytics_sum_the_callers_traffic_with_percentiles_series_and_breakdowns() {
    let app = spawn_app().await;
    let a = signup(&app, "alice", "Acme").await;
    let b = signup(&app, "bob", "Bobs").await;
    let (ta, api_a, key_a) = seed(&a, "orders").await;
    let (tb, api_b, key_b) = seed(&b, "orders").await;
    let now = Utc::now().timestamp() / 60 * 60;
    let dims = |tenant_id, api_id, key_id| Dims {
        tenant_id,
        api_id,
        key_id,
        client_id: 0,
        route_id: 0,
    };
    let (mine, unkeyed, theirs) = (
        dims(ta, api_a, key_a),
        dims(ta, api_a, 0),
        dims(tb, api_b, key_b),
    );
    // 100 requests of 1..=100 ms ten minutes ago, 3 refused without a key, 2 rate-limited and a
    // 502 two minutes ago; the other tenant's 1,000 elsewhere.
    let spread: Vec<(u16, u64)> = (1..=100).map(|ms| (200, ms)).collect();
    let (early, late) = (now - 600, now - 120);
    let batch = [
        (&mine, early, traffic(&spread)),
        (&unkeyed, late, traffic(&[(401, 1), (401, 1), (401, 1)])),
        (&mine, late, traffic(&[(429, 1), (429, 1), (502, 30)])),
        (&theirs, late, traffic(&vec![(500, 5); 1000])),
    ];
    domain::store::analytics::add(&app.db.db, batch.iter().map(|(d, t, s)| (*d, *t, s)))
        .await
        .unwrap();

    let (s, r) = a.get("/api/v1/analytics?granularity=minute").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["granularity"], "minute");
    assert_eq!(r["requests"], 106);
    assert_eq!(r["rate_limited"], 2);
    assert_eq!(r["upstream_errors"], 1);
    assert_eq!(
        r["by_status"],
        json!({"2xx": 100, "3xx": 0, "4xx": 5, "5xx": 1})
    );
    assert!((r["error_rate"].as_f64().unwrap() - 1.0 / 106.0).abs() < 1e-4);
    assert!((r["rps"].as_f64().unwrap() - 106.0 / 86_460.0).abs() < 1e-3);
    // Nearest-rank percentiles of 1 ms five times, 1..=100 ms and 30 ms: the 53rd of 106 is
    // 47 ms, the 105th 99 ms; the histograms give them within 1/32.
    let p50 = r["p50_ms"].as_f64().unwrap();
    assert!((p50 - 47.0).abs() <= 47.0 / 32.0, "p50 {p50}");
    let p99 = r["p99_ms"].as_f64().unwrap();
    assert!((p99 - 99.0).abs() <= 99.0 / 32.0, "p99 {p99}");
    // A point per minute of the day, the busy ones where they were.
    let series = r["series"].as_array().unwrap();
    assert_eq!(series.len(), 1441);
    let at = |t: i64| {
        series
            .iter()
            .find(|p| {
                p["t"]
                    == DateTime::from_timestamp(t, 0)
                        .unwrap()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .unwrap_or_else(|| panic!("no point at {t}"))
            .clone()
    };
    assert_eq!(at(early)["requests"], 100);
    assert_eq!(at(late)["requests"], 6);
    assert_eq!(at(late)["errors"], 1);
    assert_eq!(at(late)["rate_limited"], 2);
    assert_eq!(at(now - 60)["requests"], 0);
    // Breakdowns by API and by key, with names; the requests without a key stand apart.
    assert_eq!(r["by_api"][0]["api_id"], api_a);
    assert_eq!(r["by_api"][0]["name"], "Orders");
    assert_eq!(r["by_key"][0]["key_id"], key_a);
    assert_eq!(r["by_key"][0]["name"], "mobile");
    assert_eq!(r["by_key"][0]["requests"], 103);
    assert_eq!(r["by_key"][1]["key_id"], Value::Null);
    assert_eq!(r["by_key"][1]["requests"], 3);
    // Filters: one key; hours and days hold the same.
    let (_, k) = a.get(&format!("/api/v1/analytics?key_id={key_a}")).await;
    assert_eq!(k["requests"], 103);
    for g in ["hour", "day"] {
        let (s, r) = a.get(&format!("/api/v1/analytics?granularity={g}")).await;
        assert_eq!((s, r["requests"].as_i64()), (200, Some(106)), "{g}: {r}");
    }
    // Isolation: the other tenant sees its own; ids of another tenant are 404.
    let (_, rb) = b.get("/api/v1/analytics").await;
    assert_eq!(rb["requests"], 1000);
    for q in [
        format!("api_id={api_b}"),
        format!("key_id={key_b}"),
        "client_id=999".to_owned(),
        "route_id=999".to_owned(),
    ] {
        let (s, body) = a.get(&format!("/api/v1/analytics?{q}")).await;
        assert_error(s, &body, 404, "not_found");
    }
    // Ranges that cannot be answered say why, naming the field.
    let old = (Utc::now() - Duration::days(30)).to_rfc3339();
    for (q, field) in [
        ("granularity=week".to_owned(), "granularity"),
        (
            format!("granularity=minute&from={}", urlencode(&old)),
            "granularity",
        ),
        (
            format!(
                "from={}&to={}",
                urlencode(&Utc::now().to_rfc3339()),
                urlencode(&old)
            ),
            "from",
        ),
        ("from=yesterday".to_owned(), "from"),
    ] {
        let (s, body) = a.get(&format!("/api/v1/analytics?{q}")).await;
        assert_eq!(
            s,
            if field == "from" && q.contains("yesterday") {
                400
            } else {
                422
            },
            "{q}: {body}"
        );
        if s == 422 {
            assert_eq!(body["error"]["details"]["field"], field, "{q}: {body}");
        }
    }
}

/// A tenant's id, by its slug.
async fn tenant_id(app: &crate::helpers::TestApp, slug: &str) -> i64 {
    use domain::sea_orm::{ColumnTrait, QueryFilter};
    domain::entities::tenant::Entity::find()
        .filter(domain::entities::tenant::Column::Slug.eq(slug))
        .one(&app.db.db)
        .await
        .unwrap()
        .unwrap()
        .id
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // two tenants' pages, then the admin's
async fn dashboard_pages_show_the_tenants_own_traffic_and_the_admin_sees_every_tenants() {
    let alice = spawn_app().await;
    alice.register("alice", "Acme").await;
    let plan = alice.create_plan("Pro", "600").await;
    let api_a = alice
        .create_api("Orders", "orders", "https://orders.example.com/")
        .await;
    let (key_a, _) = alice.create_key("mobile", plan).await;
    let bob = alice.other_browser();
    bob.register("bob", "Bobs").await;
    let plan_b = bob.create_plan("Basic", "60").await;
    let api_b = bob
        .create_api("Ledger", "ledger", "https://ledger.example.com/")
        .await;
    let (key_b, _) = bob.create_key("server", plan_b).await;
    let (ta, tb) = (
        tenant_id(&alice, "acme").await,
        tenant_id(&alice, "bobs").await,
    );

    let now = Utc::now();
    RequestLogWriter::default()
        .insert(
            &alice.db.db,
            &[
                record(
                    ta,
                    api_a,
                    key_a,
                    now - Duration::seconds(5),
                    "alice-ok",
                    200,
                ),
                record(
                    ta,
                    api_a,
                    key_a,
                    now - Duration::seconds(4),
                    "alice-502",
                    502,
                ),
                record(
                    tb,
                    api_b,
                    key_b,
                    now - Duration::seconds(3),
                    "bob-secret",
                    200,
                ),
            ],
        )
        .await
        .unwrap();
    let minute = now.timestamp() / 60 * 60 - 60;
    let dims = |tenant_id, api_id, key_id| Dims {
        tenant_id,
        api_id,
        key_id,
        client_id: 0,
        route_id: 0,
    };
    let (mine, theirs) = (dims(ta, api_a, key_a), dims(tb, api_b, key_b));
    let (a_traffic, b_traffic) = (
        traffic(&[(200, 12), (200, 30), (502, 80)]),
        traffic(&[(200, 5); 7]),
    );
    domain::store::analytics::add(
        &alice.db.db,
        [(&mine, minute, &a_traffic), (&theirs, minute, &b_traffic)],
    )
    .await
    .unwrap();

    // Analytics: the tenant's own numbers, its own APIs and keys to pick from.
    for q in ["", "?range=1h", "?range=7d", "?range=30d"] {
        let p = alice.get(&format!("/analytics{q}")).await;
        assert_eq!(p.status, 200, "{q}: {}", p.body);
        p.assert_contains("Requests by status");
        assert!(!p.body.contains("Ledger"), "another tenant's API on {q}");
    }
    let p = alice.get("/analytics?range=24h").await;
    assert_eq!(
        between(&p.body, "id=\"stat-requests\">", "<"),
        "3",
        "alice's three, not bob's seven"
    );
    p.assert_contains("33.3%");
    p.assert_contains("<option value=\"");
    p.assert_contains("Orders");
    let p = alice.get(&format!("/analytics?api_id={api_a}")).await;
    p.assert_contains("Analytics · Orders");
    // Another tenant's ids, and nonsense, are said, never shown.
    let p = alice.get(&format!("/analytics?api_id={api_b}")).await;
    assert_eq!(p.status, 200);
    p.assert_contains("API is not one of the choices.");
    assert!(!p.body.contains("id=\"stat-requests\""));
    let p = alice.get("/analytics?range=custom&from=yesterday").await;
    p.assert_contains("From must be a date and time");
    let p = alice
        .get("/analytics?range=custom&from=2026-01-01T00:00&to=2025-01-01T00:00")
        .await;
    p.assert_contains("from must be before to");

    // Logs: the tenant's records only, filters, a record's page; bob's is 404.
    let p = alice.get("/logs").await;
    assert_eq!(p.status, 200);
    p.assert_contains("alice-ok");
    p.assert_contains("alice-502");
    assert!(!p.body.contains("bob-secret"));
    let p = alice.get("/logs?status=5xx").await;
    p.assert_contains("alice-502");
    assert!(!p.body.contains("alice-ok"));
    let p = alice.get("/logs?status=7xx").await;
    p.assert_contains("status must be a status code");
    let p = alice.get("/logs?request_id=alice-ok").await;
    assert_eq!(p.body.matches("class=\"nowrap rid\"").count(), 1);
    let p = alice.get("/logs/alice-502").await;
    assert_eq!(p.status, 200);
    p.assert_contains("/acme/orders/items");
    p.assert_contains("upstream_error");
    assert_eq!(alice.get("/logs/bob-secret").await.status, 404);

    // A key's page: its plan's windows; another tenant's key is 404.
    let p = alice.get(&format!("/keys/{key_a}")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    p.assert_contains("Plan windows");
    p.assert_contains("This month");
    p.assert_contains("/ 1000");
    assert_eq!(alice.get(&format!("/keys/{key_b}")).await.status, 404);

    // Tenants have no admin pages; the platform admin sees every tenant's traffic.
    assert_eq!(alice.get("/admin/analytics").await.status, 404);
    assert_eq!(alice.get("/admin/logs").await.status, 404);
    control_plane::admin_cli::run(
        &domain::settings::Settings::for_tests(alice.db.url.clone()),
        control_plane::admin_cli::CreateAdmin {
            username: "root".into(),
            email: "root@example.com".into(),
            password: Some("sup3r-secret-99".into()),
        },
    )
    .await
    .unwrap();
    let admin = alice.other_browser();
    admin.login("root", "sup3r-secret-99").await;
    let p = admin.get("/admin/analytics").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(between(&p.body, "id=\"stat-requests\">", "<"), "10");
    let p = admin.get(&format!("/admin/analytics?tenant_id={tb}")).await;
    assert_eq!(between(&p.body, "id=\"stat-requests\">", "<"), "7");
    let p = admin.get("/admin/logs").await;
    p.assert_contains("alice-ok");
    p.assert_contains("bob-secret");
    let p = admin.get(&format!("/admin/logs?tenant_id={ta}")).await;
    assert!(!p.body.contains("bob-secret"));
    let p = admin
        .get(&format!("/admin/logs/bob-secret?tenant_id={tb}"))
        .await;
    assert_eq!(p.status, 200);
    p.assert_contains("Tenant id");
}
