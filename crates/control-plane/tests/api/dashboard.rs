//! Every dashboard page and form over a real database.

use domain::entities::{api_key, client};
use domain::sea_orm::EntityTrait;

use crate::helpers::{between, last_id, spawn_app, spawn_apps};

#[tokio::test]
async fn apis_can_be_created_edited_toggled_and_deleted() {
    for app in spawn_apps().await {
        app.register("alice", "Acme").await;
        let id = app
            .create_api("Weather", "weather", "https://weather.example.com/v1/")
            .await;
        let list = app.get("/apis").await;
        list.assert_contains("http://localhost:7000/acme/weather/");
        list.assert_contains("https://weather.example.com/v1");

        let p = app
            .post(
                "/apis/new",
                "/apis",
                &[
                    ("name", "Dup"),
                    ("slug", "weather"),
                    ("upstream_url", "ftp://x"),
                    ("key_header", "Host"),
                    ("timeout_ms", "0"),
                ],
            )
            .await;
        assert_eq!(p.status, 422);
        p.assert_contains("Upstream URL must start with http:// or https://");
        p.assert_contains("Key header &#39;Host&#39; is managed by the gateway");
        p.assert_contains("Timeout must be between 1 and 300000 milliseconds.");
        p.assert_contains("value=\"Dup\"");
        let p = app
            .post(
                "/apis/new",
                "/apis",
                &[
                    ("name", "Dup"),
                    ("slug", "weather"),
                    ("upstream_url", "http://x.org"),
                    ("timeout_ms", ""),
                ],
            )
            .await;
        p.assert_contains("You already have an API with this slug.");

        let edit = app.get(&format!("/apis/{id}/edit")).await;
        edit.assert_contains("value=\"weather\"");
        let p = app
            .post(
                &format!("/apis/{id}/edit"),
                &format!("/apis/{id}"),
                &[
                    ("name", "Weather 2"),
                    ("slug", "wx"),
                    ("upstream_url", "http://wx.internal:8080"),
                    ("key_header", "Authorization"),
                    ("timeout_ms", "1500"),
                    ("is_active", "on"),
                ],
            )
            .await;
        assert_eq!(p.status, 303, "{}", p.body);
        let list = app.get("/apis").await;
        list.assert_contains("Weather 2");
        list.assert_contains("/acme/wx/");
        list.assert_contains("1500 ms");

        app.post("/apis", &format!("/apis/{id}/toggle"), &[]).await;
        app.get("/apis").await.assert_contains("disabled");
        app.post("/apis", &format!("/apis/{id}/delete"), &[]).await;
        let list = app.get("/apis").await;
        list.assert_contains("API &#39;Weather 2&#39; deleted.");
        assert!(!list.body.contains("/acme/wx/"), "gone from the list");
        assert_eq!(app.get(&format!("/apis/{id}/edit")).await.status, 404);
    }
}

#[tokio::test]
async fn unknown_paths_get_the_apps_404_page_with_the_top_bar_when_logged_in() {
    let app = spawn_app().await;
    let anonymous = app.get("/no/such/page").await;
    assert_eq!(anonymous.status, 404);
    anonymous.assert_contains("404 · Not found");
    anonymous.assert_contains("/static/app.css");
    assert!(!anonymous.body.contains("Log out"), "nobody is logged in");

    app.register("alice", "Acme").await;
    for path in ["/no/such/page", "/apis/999999/edit", "/keys/999999/rotate"] {
        let page = app.get(path).await;
        assert_eq!(page.status, 404, "{path}");
        page.assert_contains("404 · Not found");
        page.assert_contains("Log out");
        page.assert_contains("href=\"/keys\"");
        page.assert_contains("alice · Acme");
    }
    // A page's flash message survives a 404 on the way.
    let id = app
        .create_api("Weather", "weather", "http://127.0.0.1:9/")
        .await;
    app.post("/apis", &format!("/apis/{id}/toggle"), &[]).await;
    app.get("/nowhere").await;
    app.get("/apis")
        .await
        .assert_contains("API &#39;Weather&#39; disabled.");

    // The management API keeps answering JSON.
    let resp = app
        .client
        .get(app.url("/api/v1/no-such-thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(
        !resp.text().await.unwrap().contains("<html"),
        "no HTML page under /api/"
    );

    let icon = app
        .client
        .get(app.url("/favicon.ico"))
        .send()
        .await
        .unwrap();
    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    assert!(app.get("/dashboard").await.body.contains("rel=\"icon\""));
}

#[tokio::test]
async fn plans_validate_and_cannot_be_deleted_while_in_use() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    let p = app
        .post(
            "/plans/new",
            "/plans",
            &[
                ("name", ""),
                ("requests_per_minute", "0"),
                ("burst", "x"),
                ("requests_per_day", "-1"),
                ("requests_per_month", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 422);
    // Every field that is wrong is said, each with its own name.
    p.assert_contains("Name must be 1 to 100 characters long.");
    p.assert_contains("Requests per minute must be a positive whole number.");
    p.assert_contains("Burst must be a positive whole number.");
    p.assert_contains("Requests per day must be a positive whole number.");
    let p = app
        .post(
            "/plans/new",
            "/plans",
            &[
                ("name", "Odd"),
                ("requests_per_minute", "10"),
                ("requests_per_day", "500"),
                ("requests_per_month", "100"),
            ],
        )
        .await;
    p.assert_contains("Requests per day cannot be above requests per month.");

    let plan = app.create_plan("Pro", "600").await;
    let list = app.get("/plans").await;
    list.assert_contains("Pro");
    list.assert_contains("600");
    let p = app
        .post(
            &format!("/plans/{plan}/edit"),
            &format!("/plans/{plan}"),
            &[
                ("name", "Pro+"),
                ("requests_per_minute", "1200"),
                ("burst", "50"),
                ("requests_per_day", ""),
                ("requests_per_month", ""),
                ("enforcement", "fast"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let list = app.get("/plans").await;
    list.assert_contains("Pro+");
    list.assert_contains("fast");

    app.create_key("ci", plan).await;
    app.post("/plans", &format!("/plans/{plan}/delete"), &[])
        .await;
    let list = app.get("/plans").await;
    list.assert_contains("was not deleted: 1 key(s) and 0 client(s) still use it");
    list.assert_contains("Pro+");

    let unused = app.create_plan("Spare", "5").await;
    app.post("/plans", &format!("/plans/{unused}/delete"), &[])
        .await;
    let list = app.get("/plans").await;
    list.assert_contains("Plan &#39;Spare&#39; deleted.");
}

#[tokio::test]
async fn a_key_is_shown_exactly_once_and_can_be_revoked_and_rotated() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    app.create_api("Weather", "weather", "http://127.0.0.1:9/")
        .await;
    let plan = app.create_plan("Free", "60").await;
    let p = app
        .post(
            "/keys/new",
            "/keys",
            &[
                ("name", "mobile"),
                ("plan_id", &plan.to_string()),
                ("expires_on", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 200);
    let raw = between(&p.body, "<code id=\"new-key\">", "</code>");
    assert!(raw.starts_with("gw_live_") && raw.len() == 46, "{raw}");
    p.assert_contains("only time it is shown");
    p.assert_contains(&format!(
        "curl -H 'X-API-Key: {raw}' http://localhost:7000/acme/weather/"
    ));

    let list = app.get("/keys").await;
    assert!(
        !list.body.contains(&raw),
        "the list never shows the raw key"
    );
    list.assert_contains(&format!("{}…", &raw[..16]));
    list.assert_contains("0 / 1000");
    list.assert_contains("never");
    let key_id = last_id(&list.body, "/keys/", "/rotate");

    let stored = api_key::Entity::find_by_id(key_id)
        .one(&app.db.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.key_hash, domain::apikey::KeyHash::of(&raw).to_hex());

    // Rotate with a day of grace: a new key, the old one expiring.
    let p = app
        .post(
            &format!("/keys/{key_id}/rotate"),
            &format!("/keys/{key_id}/rotate"),
            &[("grace_hours", "24")],
        )
        .await;
    assert_eq!(p.status, 200);
    let rotated = between(&p.body, "<code id=\"new-key\">", "</code>");
    assert_ne!(rotated, raw);
    p.assert_contains("keeps working until");
    p.assert_contains("The key works on every API of Acme");
    // The list says which key replaced which, and until when the old one still works.
    let list = app.get("/keys").await;
    list.assert_contains(&format!("replaced by {}…", &rotated[..16]));
    list.assert_contains(&format!("replaces {}…", &raw[..16]));
    list.assert_contains("grace until");
    assert!(
        !list.body.contains(&format!("/keys/{key_id}/rotate")),
        "a key already replaced offers no second rotation"
    );
    let old = api_key::Entity::find_by_id(key_id)
        .one(&app.db.db)
        .await
        .unwrap()
        .unwrap();
    let left = old.expires_at.unwrap() - chrono::Utc::now();
    assert!(
        left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24),
        "{left:?}"
    );

    app.post("/keys", &format!("/keys/{key_id}/revoke"), &[])
        .await;
    let list = app.get("/keys").await;
    list.assert_contains("revoked");
    let old = api_key::Entity::find_by_id(key_id)
        .one(&app.db.db)
        .await
        .unwrap()
        .unwrap();
    assert!(!old.is_active);

    let p = app
        .post(
            "/keys/new",
            "/keys",
            &[
                ("name", ""),
                ("plan_id", "999999"),
                ("expires_on", "2001-01-01"),
            ],
        )
        .await;
    assert_eq!(p.status, 422);
    p.assert_contains("Choose one of your plans.");
    p.assert_contains("Expiry must be in the future.");
}

#[tokio::test]
async fn the_key_list_paginates_thousands_of_keys() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    let plan = app.create_plan("Bulk", "60").await;
    let tenant = domain::entities::tenant::Entity::find()
        .one(&app.db.db)
        .await
        .unwrap()
        .unwrap();
    for _ in 0..10 {
        domain::store::insert_generated_keys(&app.db.db, tenant.id, plan, 1000)
            .await
            .unwrap();
    }
    let first = app.get("/keys").await;
    assert_eq!(first.status, 200);
    first.assert_contains("10000 key(s)");
    first.assert_contains("Page 1 of 200");
    assert_eq!(first.body.matches("data-key-id=").count(), 50);
    let last = app.get("/keys?page=200").await;
    last.assert_contains("Page 200 of 200");
    assert_eq!(last.body.matches("data-key-id=").count(), 50);
    assert_eq!(
        app.get("/keys?page=9999").await.status,
        200,
        "out-of-range pages clamp"
    );
}

#[tokio::test]
async fn clients_can_be_created_edited_and_deactivated() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    let free = app.create_plan("Free", "60").await;
    let pro = app.create_plan("Pro", "600").await;
    let p = app
        .post(
            "/clients/new",
            "/clients",
            &[
                ("client_id", "mobile-app"),
                ("name", "Mobile"),
                ("plan_id", &free.to_string()),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let p = app
        .post(
            "/clients/new",
            "/clients",
            &[
                ("client_id", "mobile-app"),
                ("name", "Again"),
                ("plan_id", &free.to_string()),
            ],
        )
        .await;
    p.assert_contains("You already have a client with this ID.");
    let p = app
        .post(
            "/clients/new",
            "/clients",
            &[
                ("client_id", "has space"),
                ("name", "X"),
                ("plan_id", &free.to_string()),
            ],
        )
        .await;
    p.assert_contains("without spaces");

    let list = app.get("/clients").await;
    list.assert_contains("mobile-app");
    let id = last_id(&list.body, "/clients/", "/edit");
    let p = app
        .post(
            &format!("/clients/{id}/edit"),
            &format!("/clients/{id}"),
            &[
                ("name", "Mobile v2"),
                ("plan_id", &pro.to_string()),
                ("is_active", "on"),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    let c = client::Entity::find_by_id(id)
        .one(&app.db.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.name.as_str(), c.plan_id, c.is_active),
        ("Mobile v2", pro, true)
    );
    app.post("/clients", &format!("/clients/{id}/toggle"), &[])
        .await;
    app.get("/clients").await.assert_contains("inactive");
}

#[tokio::test]
async fn the_overview_shows_usage_charts_and_a_curl() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    let empty = app.get("/dashboard").await;
    empty.assert_contains("Get started");
    app.create_api("Weather", "weather", "http://127.0.0.1:9/")
        .await;
    let plan = app.create_plan("Free", "60").await;
    let (key_id, _) = app.create_key("mobile", plan).await;
    let tenant = domain::entities::tenant::Entity::find()
        .one(&app.db.db)
        .await
        .unwrap()
        .unwrap();

    // What the data plane's usage flush writes.
    let now = chrono::Utc::now();
    let minute = now.timestamp() / 60;
    let bucket = domain::usage::Bucket {
        tenant_id: tenant.id,
        api_id: 1,
        key_id,
        client_id: 0,
        route_id: 0,
        minute,
    };
    let counts = domain::usage::Counts {
        requests: 42,
        rejected: 3,
        upstream_errors: 1,
        units: 0,
    };
    domain::store::add_minutes(
        &app.db.db,
        &std::collections::HashMap::from([(bucket, counts)]),
    )
    .await
    .unwrap();
    let delta = domain::store::UsageDelta {
        tenant_id: tenant.id,
        day: now.date_naive(),
        api_id: 1,
        key_id,
        client_id: 0,
        route_id: 0,
        requests: 42,
        rejected: 3,
        upstream_errors: 1,
        units: 0,
    };
    domain::store::add_usage(&app.db.db, &[delta])
        .await
        .unwrap();

    let dash = app.get("/dashboard").await;
    assert_eq!(between(&dash.body, "id=\"requests-today\">", "<"), "42");
    assert_eq!(between(&dash.body, "id=\"requests-month\">", "<"), "42");
    dash.assert_contains(
        "curl -H &#39;X-API-Key: YOUR_API_KEY&#39; http://localhost:7000/acme/weather/",
    );
    dash.assert_contains("<td>mobile</td>");
    assert!(
        dash.body.matches("<rect").count() >= 90,
        "60 minute bars and 30 day bars"
    );
    // Both charts split the minute's and the day's 42 requests into admitted and refused, with
    // an axis up to a round 50 and a tooltip with the numbers.
    assert_eq!(
        dash.body
            .matches(": 42 requests: 39 admitted, 3 refused (429)</title>")
            .count(),
        2
    );
    assert_eq!(dash.body.matches("<rect class=\"refused\"").count(), 2);
    dash.assert_contains("<span>50</span><span>25</span><span>0</span>");
    dash.assert_contains("(incl. 429s)");
    app.get("/keys").await.assert_contains("42 / 1000");
}

#[tokio::test]
async fn an_apis_routes_are_added_tested_edited_and_private() {
    for app in spawn_apps().await {
        app.register("alice", "Acme").await;
        let api = app
            .create_api("Weather", "weather", "https://weather.example.com/")
            .await;
        let routes = format!("/apis/{api}/routes");
        let form = format!("{routes}/new");
        let empty = app.get(&routes).await;
        empty.assert_contains("With no routes, every path and method is forwarded.");
        let p = app
            .post(
                &form,
                &routes,
                &[
                    ("path", "users"),
                    ("match_kind", "prefix"),
                    ("priority", "x"),
                    ("rl_requests_per_minute", "0"),
                    ("cost", "0"),
                ],
            )
            .await;
        assert_eq!(p.status, 422);
        p.assert_contains("Path must start with /.");
        p.assert_contains("Priority must be a whole number.");
        p.assert_contains("Route limit per minute must be a positive whole number.");
        p.assert_contains("Cost must be a whole number from 1 to 1000.");
        p.assert_contains("value=\"users\"");
        let fields = [
            ("path", "/users/{id}"),
            ("match_kind", "exact"),
            ("strip_prefix", "on"),
            ("m_GET", "on"),
            ("rl_requests_per_minute", "30"),
            ("rl_requests_per_day", "500"),
            ("cost", "3"),
        ];
        assert_eq!(app.post(&form, &routes, &fields).await.status, 303);
        // The same path, match and a common method again: refused on the path.
        let p = app.post(&form, &routes, &fields).await;
        assert_eq!(p.status, 422);
        p.assert_contains("Route /users/{id} already takes exact with these methods");
        let list = app.get(&routes).await;
        list.assert_contains("<code>/users/{id}</code>");
        list.assert_contains("30/min, 500/day");
        list.assert_contains("<td class=\"num\">3</td>");
        // The box says what the gateway would do with a method and path.
        app.get(&format!("{routes}?method=GET&path=/users/7"))
            .await
            .assert_contains("Route /users/{id} (exact GET) takes it; the upstream receives /7.");
        app.get(&format!("{routes}?method=DELETE&path=/users/7"))
            .await
            .assert_contains("405 method_not_allowed: routes match this path with GET, HEAD only.");
        app.get(&format!("{routes}?method=GET&path=users/7/x"))
            .await
            .assert_contains("404 route_not_found");
        let id = last_id(&list.body, &format!("{routes}/"), "/edit");
        let edit = app.get(&format!("{routes}/{id}/edit")).await;
        edit.assert_contains("value=\"/users/{id}\"");
        edit.assert_contains("name=\"rl_requests_per_day\" value=\"500\"");
        let p = app
            .post(
                &form,
                &format!("{routes}/{id}"),
                &[("path", "/users"), ("match_kind", "prefix")],
            )
            .await;
        assert_eq!(p.status, 303);
        app.get(&format!("{routes}?method=PUT&path=/users/7"))
            .await
            .assert_contains("Route /users (prefix any) takes it; the upstream receives /users/7.");
        // Another tenant sees none of it.
        let other = app.other_browser();
        other.register("bob", "Bobs").await;
        for path in [routes.clone(), form.clone(), format!("{routes}/{id}/edit")] {
            assert_eq!(other.get(&path).await.status, 404, "{path}");
        }
        let p = other
            .post("/apis/new", &format!("{routes}/{id}/delete"), &[])
            .await;
        assert_eq!(p.status, 404);
        assert_eq!(app.get(&format!("{routes}/{id}/edit")).await.status, 200);
        assert_eq!(
            app.post(&form, &format!("{routes}/{id}/delete"), &[])
                .await
                .status,
            303
        );
        app.get(&routes)
            .await
            .assert_contains("With no routes, every path and method is forwarded.");
    }
}
