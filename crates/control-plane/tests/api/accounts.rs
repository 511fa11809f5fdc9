//! Sign-up, log-in, log-out, throttling and the platform admin.

use domain::sea_orm::EntityTrait;

use crate::helpers::{PASSWORD, spawn_app, spawn_app_with, spawn_apps};

#[tokio::test]
async fn signing_up_creates_a_tenant_and_logs_in() {
    for app in spawn_apps().await {
        let p = app.register("alice", "Acme Corp").await;
        assert_eq!(
            (p.status, p.location.as_deref()),
            (303, Some("/dashboard")),
            "{}",
            p.body
        );
        let dash = app.get("/dashboard").await;
        assert_eq!(dash.status, 200);
        dash.assert_contains("Overview");
        dash.assert_contains("Acme Corp");
        dash.assert_contains("/acme-corp/");
        let tenants = domain::entities::tenant::Entity::find()
            .all(&app.db.db)
            .await
            .unwrap();
        assert_eq!(tenants.len(), 1);
        assert_eq!(
            tenants[0].slug, "acme-corp",
            "the slug is derived from the name"
        );
        let users = domain::entities::user::Entity::find()
            .all(&app.db.db)
            .await
            .unwrap();
        assert!(
            users[0].password_hash.starts_with("$argon2id$"),
            "passwords are stored as argon2id"
        );
    }
}

#[tokio::test]
async fn registration_errors_are_clear_and_keep_what_was_typed() {
    let app = spawn_app().await;
    assert_eq!(app.register("alice", "Acme").await.status, 303);
    let other = app.other_browser();
    let submit =
        |username: &'static str, slug: &'static str, pw: &'static str, confirm: &'static str| {
            let other = &other;
            async move {
                other
                    .post(
                        "/register",
                        "/register",
                        &[
                            ("username", username),
                            ("email", "bob@example.com"),
                            ("tenant_name", "Bob's Widgets"),
                            ("tenant_slug", slug),
                            ("password", pw),
                            ("confirm_password", confirm),
                        ],
                    )
                    .await
            }
        };
    let p = submit("alice", "bobs", PASSWORD, PASSWORD).await;
    assert_eq!(p.status, 422);
    p.assert_contains("This username is taken.");
    p.assert_contains("value=\"Bob&#39;s Widgets\"");
    p.assert_contains("value=\"bob@example.com\"");

    let p = submit("bob", "acme", PASSWORD, PASSWORD).await;
    assert_eq!(p.status, 422);
    p.assert_contains("This slug is taken");

    let p = submit("bob", "admin", PASSWORD, PASSWORD).await;
    p.assert_contains("reserved");

    let p = submit("bob", "bobs", "short", "short").await;
    p.assert_contains("at least 10 characters");

    let p = submit("bob", "bobs", PASSWORD, "something-else-1").await;
    p.assert_contains("The two passwords differ.");
    assert!(
        !p.body.contains(PASSWORD),
        "passwords are never echoed back"
    );

    let p = submit("bob", "bobs", PASSWORD, PASSWORD).await;
    assert_eq!(p.status, 303, "{}", p.body);
}

#[tokio::test]
async fn login_and_logout() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    let logout = app.post("/dashboard", "/logout", &[]).await;
    assert_eq!(logout.location.as_deref(), Some("/login"));
    assert_eq!(
        app.get("/dashboard").await.location.as_deref(),
        Some("/login"),
        "logged out"
    );

    let p = app.login("alice", "wrong password!!").await;
    assert_eq!(p.status, 401);
    p.assert_contains("Wrong username or password.");
    p.assert_contains("value=\"alice\"");
    let p = app.login("nobody", PASSWORD).await;
    assert_eq!(p.status, 401);
    p.assert_contains("Wrong username or password.");

    let p = app.login("alice", PASSWORD).await;
    assert_eq!(p.location.as_deref(), Some("/dashboard"));
    assert_eq!(app.get("/dashboard").await.status, 200);
}

#[tokio::test]
async fn the_session_is_renewed_at_login_and_the_cookie_is_hardened() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    app.post("/dashboard", "/logout", &[]).await;
    let before = app.client.get(app.url("/login")).send().await.unwrap();
    let anon_cookie = before.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(anon_cookie.contains("HttpOnly"), "{anon_cookie}");
    assert!(anon_cookie.contains("SameSite=Lax"), "{anon_cookie}");
    let token = crate::helpers::between(
        &before.text().await.unwrap(),
        "name=\"csrf_token\" value=\"",
        "\"",
    );
    let resp = app
        .client
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let after = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert_ne!(
        anon_cookie.split(';').next(),
        after.split(';').next(),
        "a new session at login"
    );
    // The pre-login token is dead after login.
    let p = app.post_raw("/logout", &[("csrf_token", &token)]).await;
    assert_eq!(p.status, 403);
}

#[tokio::test]
async fn secure_cookies_behind_https() {
    let app = spawn_app_with(domain::testing::TestDb::sqlite().await, |s| {
        s.dashboard.cookie_secure = true;
    })
    .await;
    let resp = app.client.get(app.url("/login")).send().await.unwrap();
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
}

#[tokio::test]
async fn logins_are_throttled_per_account_and_per_address() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    app.post("/dashboard", "/logout", &[]).await;
    for _ in 0..5 {
        assert_eq!(app.login("alice", "wrong password!!").await.status, 401);
    }
    let p = app.login("alice", PASSWORD).await;
    assert_eq!(
        p.status, 429,
        "even the right password waits once the account is throttled"
    );
    p.assert_contains("Too many login attempts");

    // Another account from the same address still gets its own attempts, until the address
    // budget (20) is spent.
    for i in 0..14 {
        assert_eq!(
            app.login(&format!("nobody{i}"), "x").await.status,
            401,
            "attempt {i}"
        );
    }
    assert_eq!(
        app.login("somebody-else", "x").await.status,
        429,
        "the address is throttled too"
    );
}

#[tokio::test]
async fn platform_admin_lists_and_deactivates_tenants() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    assert_eq!(
        app.get("/admin/tenants").await.status,
        404,
        "not for tenants"
    );

    let settings = domain::settings::Settings::for_tests(app.db.url.clone());
    let args = control_plane::admin_cli::CreateAdmin {
        username: "root".into(),
        email: "root@example.com".into(),
        password: Some("sup3r-secret-99".into()),
    };
    control_plane::admin_cli::run(&settings, args)
        .await
        .unwrap();

    let admin = app.other_browser();
    let p = admin.login("root", "sup3r-secret-99").await;
    assert_eq!(p.location.as_deref(), Some("/admin/tenants"));
    let page = admin.get("/admin/tenants").await;
    page.assert_contains("acme");
    let tenant_id = crate::helpers::last_id(&page.body, "/admin/tenants/", "/toggle");
    let p = admin
        .post(
            "/admin/tenants",
            &format!("/admin/tenants/{tenant_id}/toggle"),
            &[],
        )
        .await;
    assert_eq!(p.status, 303);
    admin
        .get("/admin/tenants")
        .await
        .assert_contains("deactivated");
    let t = domain::entities::tenant::Entity::find_by_id(tenant_id)
        .one(&app.db.db)
        .await
        .unwrap()
        .unwrap();
    assert!(!t.is_active);
    assert_eq!(
        admin.get("/dashboard").await.status,
        404,
        "the admin has no tenant of their own"
    );
}
