//! CSRF refusal and tenant isolation on every route.

use crate::helpers::{TestApp, spawn_app};

#[tokio::test]
async fn state_changing_forms_refuse_a_missing_or_foreign_csrf_token() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    let fields = [("name", "Free"), ("requests_per_minute", "60")];
    let p = app.post_raw("/plans", &fields).await;
    assert_eq!(p.status, 403);
    p.assert_contains("Form expired");
    let mut with_bad = vec![("csrf_token", "0000")];
    with_bad.extend_from_slice(&fields);
    assert_eq!(app.post_raw("/plans", &with_bad).await.status, 403);

    // A token from another session (what a cross-site page could have) is refused too.
    let attacker = app.other_browser();
    attacker.register("mallory", "Evil").await;
    let theirs = attacker.get("/plans/new").await.csrf().unwrap();
    let mut with_theirs = vec![("csrf_token", theirs.as_str())];
    with_theirs.extend_from_slice(&fields);
    assert_eq!(app.post_raw("/plans", &with_theirs).await.status, 403);
    assert!(
        !app.get("/plans").await.body.contains("<td>Free</td>"),
        "nothing was created"
    );

    // Logging in needs the token as well.
    let fresh = app.other_browser();
    assert_eq!(
        fresh
            .post_raw("/login", &[("username", "alice"), ("password", "x")])
            .await
            .status,
        403
    );
}

/// Everything of tenant A, tried by tenant B: always 404, and nothing changes.
#[tokio::test]
async fn another_tenants_ids_are_404_on_every_route() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    let api = app
        .create_api("Weather", "weather", "http://127.0.0.1:9/")
        .await;
    let plan = app.create_plan("Free", "60").await;
    let (key, _) = app.create_key("k", plan).await;
    app.post(
        "/clients/new",
        "/clients",
        &[
            ("client_id", "c1"),
            ("name", "C"),
            ("plan_id", &plan.to_string()),
        ],
    )
    .await;
    let client = crate::helpers::last_id(&app.get("/clients").await.body, "/clients/", "/edit");

    let bob = app.other_browser();
    bob.register("bob", "Bobs").await;
    let bob_plan = bob.create_plan("Bob plan", "5").await;
    let gets = [
        format!("/apis/{api}/edit"),
        format!("/plans/{plan}/edit"),
        format!("/keys/{key}/rotate"),
        format!("/clients/{client}/edit"),
    ];
    for path in &gets {
        let p = bob.get(path).await;
        assert_eq!(p.status, 404, "GET {path}");
        assert!(
            !p.body.contains("Weather") && !p.body.contains("Free"),
            "{path} leaked: {}",
            p.body
        );
    }
    let bp = bob_plan.to_string();
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/apis/{api}"),
            vec![
                ("name", "x"),
                ("slug", "x"),
                ("upstream_url", "http://x.org"),
            ],
        ),
        (format!("/apis/{api}/toggle"), vec![]),
        (format!("/apis/{api}/delete"), vec![]),
        (
            format!("/plans/{plan}"),
            vec![("name", "x"), ("requests_per_minute", "1")],
        ),
        (format!("/plans/{plan}/delete"), vec![]),
        (format!("/keys/{key}/revoke"), vec![]),
        (format!("/keys/{key}/rotate"), vec![("grace_hours", "0")]),
        (
            format!("/clients/{client}"),
            vec![("name", "x"), ("plan_id", bp.as_str())],
        ),
        (format!("/clients/{client}/toggle"), vec![]),
    ];
    for (path, fields) in &posts {
        let p = bob.post("/plans", path, fields).await;
        assert_eq!(p.status, 404, "POST {path}: {}", p.body);
    }
    // A's things are untouched.
    let own: &TestApp = &app;
    own.get("/apis").await.assert_contains("Weather");
    own.get("/apis").await.assert_contains("enabled");
    own.get("/plans").await.assert_contains("<td>Free</td>");
    let keys = own.get("/keys").await;
    keys.assert_contains("active");
    assert!(!keys.body.contains("revoked"));
    own.get("/clients").await.assert_contains("c1");

    // B cannot issue a key or client on A's plan either.
    let p = bob
        .post(
            "/keys/new",
            "/keys",
            &[("name", "steal"), ("plan_id", &plan.to_string())],
        )
        .await;
    assert_eq!(p.status, 422);
    p.assert_contains("Choose one of your plans.");
    assert!(!bob.get("/plans").await.body.contains("<td>Free</td>"));
}

#[tokio::test]
async fn pages_need_a_login() {
    let app = spawn_app().await;
    for path in [
        "/dashboard",
        "/apis",
        "/apis/new",
        "/plans",
        "/plans/new",
        "/keys",
        "/keys/new",
        "/clients",
        "/clients/new",
        "/admin/tenants",
    ] {
        let p = app.get(path).await;
        assert_eq!(
            (p.status, p.location.as_deref()),
            (303, Some("/login")),
            "{path}"
        );
    }
}

/// The fields of the dashboard's API form for an upstream.
fn api_form(upstream: &str) -> Vec<(&str, &str)> {
    vec![
        ("name", "Internal"),
        ("slug", "internal"),
        ("upstream_url", upstream),
        ("key_header", "X-API-Key"),
        ("timeout_ms", "5000"),
    ]
}

#[tokio::test]
async fn upstreams_the_address_policy_refuses_are_field_errors_until_an_admin_trusts_the_tenant() {
    let app = crate::helpers::spawn_app_with(domain::testing::TestDb::sqlite().await, |s| {
        s.shared.upstream_allow.clear();
    })
    .await;
    app.register("alice", "Acme").await;
    // The dashboard names the field and the reason.
    for upstream in [
        "http://127.0.0.1:9000/",
        "http://localhost:9000/",
        "http://169.254.169.254/",
        "http://10.1.2.3/",
    ] {
        let p = app.post("/apis/new", "/apis", &api_form(upstream)).await;
        assert_eq!(p.status, 422, "{upstream}: {}", p.body);
        p.assert_contains("Upstream URL is refused");
    }
    // The management API likewise, as a 422 on upstream_url.
    let token: serde_json::Value = app
        .client
        .post(app.url("/api/v1/tokens"))
        .basic_auth("alice", Some(crate::helpers::PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let resp = app
        .client
        .post(app.url("/api/v1/apis"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "M", "slug": "m", "upstream_url": "http://[::1]:8080/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["details"]["field"], "upstream_url", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loopback"),
        "{body}"
    );
    assert!(
        !app.get("/apis").await.body.contains("internal"),
        "nothing was saved"
    );

    // A platform admin trusts the tenant: loopback and private are accepted, link-local never.
    let settings = domain::settings::Settings::for_tests(app.db.url.clone());
    control_plane::admin_cli::run(
        &settings,
        control_plane::admin_cli::CreateAdmin {
            username: "root".into(),
            email: "root@example.com".into(),
            password: Some("sup3r-secret-99".into()),
        },
    )
    .await
    .unwrap();
    let admin = app.other_browser();
    admin.login("root", "sup3r-secret-99").await;
    let page = admin.get("/admin/tenants").await;
    page.assert_contains("public only");
    let tenant_id = crate::helpers::last_id(&page.body, "/admin/tenants/", "/trust");
    let p = admin
        .post(
            "/admin/tenants",
            &format!("/admin/tenants/{tenant_id}/trust"),
            &[],
        )
        .await;
    assert_eq!(p.status, 303);
    admin
        .get("/admin/tenants")
        .await
        .assert_contains("private allowed");
    let p = app
        .post("/apis/new", "/apis", &api_form("http://127.0.0.1:9000/"))
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let p = app
        .post("/apis/new", "/apis", &api_form("http://169.254.169.254/"))
        .await;
    assert_eq!(p.status, 422, "{}", p.body);
    p.assert_contains("link-local");
}
