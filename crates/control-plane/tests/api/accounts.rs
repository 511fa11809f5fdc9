//! Sign-up, log-in, log-out, throttling and the platform admin.

use domain::sea_orm::EntityTrait;

use crate::helpers::{PASSWORD, TestApp, spawn_app, spawn_app_with, spawn_apps};

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
        "from that address even the right password waits"
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

/// A browser on another source address (127.0.0.x: any loopback address reaches the app).
fn browser_from(app: &TestApp, last_octet: u8) -> TestApp {
    let mut other = app.other_browser();
    other.client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from([127, 0, 0, last_octet]))
        .build()
        .unwrap();
    other
}

#[tokio::test]
async fn an_attack_on_an_account_slows_it_down_but_never_locks_the_owner_out() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    app.post("/dashboard", "/logout", &[]).await;
    // Wrong passwords from four addresses: each (account, address) pair is throttled after 5,
    // and the account as a whole has seen 20.
    for octet in 10..14 {
        let attacker = browser_from(&app, octet);
        for _ in 0..5 {
            assert_eq!(
                attacker.login("alice", "wrong password!!").await.status,
                401
            );
        }
        assert_eq!(
            attacker.login("alice", "wrong password!!").await.status,
            429
        );
    }
    // The owner, from their own address, gets in: later, but in.
    let owner = browser_from(&app, 2);
    let started = std::time::Instant::now();
    let p = owner.login("alice", PASSWORD).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "attempts on a busy account are slowed down"
    );
    assert_eq!(owner.get("/dashboard").await.status, 200);
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server_and_a_password_change_ends_the_others() {
    let app = spawn_app().await;
    // A browser whose cookies the test can read: an attacker who stole the cookie keeps a copy.
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let mut app = app;
    app.client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    app.register("alice", "Acme").await;
    assert_eq!(app.get("/dashboard").await.status, 200);
    let url: reqwest::Url = app.url("/").parse().unwrap();
    let cookie = reqwest::cookie::CookieStore::cookies(&*jar, &url).unwrap();
    app.post("/dashboard", "/logout", &[]).await;
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = replay
        .get(app.url("/dashboard"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        303,
        "a logged-out session's cookie must not work"
    );

    // Two sessions; a password change in one ends the other.
    // (From another address: each (account, address) pair has its own few attempts.)
    let laptop = browser_from(&app, 3);
    assert_eq!(app.login("alice", PASSWORD).await.status, 303);
    assert_eq!(laptop.login("alice", PASSWORD).await.status, 303);
    let p = app
        .post(
            "/account/password",
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("password", "granite-lantern-sparrow-81"),
                ("confirm_password", "granite-lantern-sparrow-81"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        app.get("/dashboard").await.status,
        200,
        "the changer stays in"
    );
    assert_eq!(
        laptop.get("/dashboard").await.status,
        303,
        "the other session is over"
    );
    assert_eq!(laptop.login("alice", PASSWORD).await.status, 401);
    assert_eq!(
        laptop
            .login("alice", "granite-lantern-sparrow-81")
            .await
            .status,
        303
    );
    // A wrong current password or a weak new one changes nothing.
    let p = app
        .post(
            "/account/password",
            "/account/password",
            &[
                ("current_password", "not it at all"),
                ("password", "another-fine-phrase-19"),
                ("confirm_password", "another-fine-phrase-19"),
            ],
        )
        .await;
    assert_eq!(p.status, 422);
    p.assert_contains("not your current password");
}

#[tokio::test]
async fn reset_password_prints_a_new_one_and_ends_every_session() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    assert_eq!(app.get("/dashboard").await.status, 200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["reset-password", "--username", "alice"])
        .env("GATEWAY_DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let new = printed
        .split("': ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no password in {printed}"))
        .to_owned();
    assert_eq!(app.get("/dashboard").await.status, 303, "the session ended");
    let fresh = app.other_browser();
    assert_eq!(fresh.login("alice", PASSWORD).await.status, 401);
    assert_eq!(fresh.login("alice", &new).await.status, 303);
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["reset-password", "--username", "nobody"])
        .env("GATEWAY_DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user 'nobody'"));
}
