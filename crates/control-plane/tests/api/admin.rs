//! The admin endpoints of the management API: admin tokens only; tenants listed, switched off and
//! on, and given a ceiling (validated field by field, nothing stored on a refusal); and the admin
//! page's ceiling form.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};
use crate::management::{Api, assert_error, signup};

const ADMIN_PW: &str = "sup3r-secret-99";

async fn make_admin(app: &TestApp) {
    let settings = domain::settings::Settings::for_tests(app.db.url.clone());
    let args = control_plane::admin_cli::CreateAdmin {
        username: "root".into(),
        email: "root@example.com".into(),
        password: Some(ADMIN_PW.into()),
    };
    control_plane::admin_cli::run(&settings, args)
        .await
        .unwrap();
}

async fn admin_token(app: &TestApp, user: &str, pw: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/api/v1/admin/tokens"))
        .basic_auth(user, Some(pw))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one admin's session: who may call, then a tenant's state and ceiling
async fn admin_endpoints_take_admin_tokens_only_and_set_a_validated_ceiling() {
    let app = spawn_app().await;
    let alice = signup(&app, "alice", "Acme").await;
    let (_, me) = alice.get("/api/v1/plans").await;
    assert!(me["items"].is_array());
    make_admin(&app).await;

    // A tenant's token, or a tenant's account, gets no admin token or answer.
    let (s, body) = alice.get("/api/v1/admin/tenants").await;
    assert_error(s, &body, 403, "forbidden");
    assert!(body["error"]["message"].as_str().unwrap().contains("admin"));
    let (s, body) = admin_token(&app, "alice", "tangerine-orbit-42").await;
    assert_error(s, &body, 403, "forbidden");
    let (s, body) = admin_token(&app, "root", "wrong").await;
    assert_error(s, &body, 401, "unauthorized");
    let nobody = Api {
        app: &app,
        token: "gw_mgmt_nothing".into(),
    };
    let (s, body) = nobody.get("/api/v1/admin/tenants").await;
    assert_error(s, &body, 401, "unauthorized");

    let (s, created) = admin_token(&app, "root", ADMIN_PW).await;
    assert_eq!(s, 201, "{created}");
    let admin = Api {
        app: &app,
        token: created["token"].as_str().unwrap().to_owned(),
    };
    let (s, page) = admin.get("/api/v1/admin/tenants").await;
    assert_eq!(s, 200, "{page}");
    let acme = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == "acme")
        .unwrap()
        .clone();
    assert_eq!(acme["limits"], Value::Null);
    assert_eq!(acme["is_active"], true);
    let path = format!("/api/v1/admin/tenants/{}", acme["id"]);

    // A ceiling: every wrong field named at once, nothing stored.
    let (s, body) = admin
        .call(
            Method::PUT,
            &path,
            Some(json!({"limits": {"burst": 5, "requests_per_day": 0, "requests_per_month": 10}})),
        )
        .await;
    assert_error(s, &body, 422, "invalid_field");
    let fields: Vec<&str> = body["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["limits.requests_per_day", "limits.burst"],
        "{body}"
    );
    let (s, body) = admin
        .call(
            Method::PUT,
            &path,
            Some(json!({"limits": {"requests_per_minute": "lots"}})),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests_per_minute")
    );
    let (_, t) = admin.get(&path).await;
    assert_eq!(t["limits"], Value::Null, "nothing stored by a refusal");

    let (s, t) = admin
        .call(
            Method::PUT,
            &path,
            Some(json!({"limits": {"requests_per_minute": 600, "requests_per_day": 10000}})),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        t["limits"],
        json!({"requests_per_minute": 600, "burst": 600, "requests_per_day": 10000, "requests_per_month": null})
    );
    // What the body leaves out is kept; switching off works through the same call.
    let (s, t) = admin
        .call(Method::PUT, &path, Some(json!({"is_active": false})))
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        (
            t["is_active"].clone(),
            t["limits"]["requests_per_minute"].clone()
        ),
        (json!(false), json!(600))
    );
    let (s, body) = alice.get("/api/v1/plans").await;
    assert_error(s, &body, 403, "forbidden");
    let (_, t) = admin
        .call(
            Method::PUT,
            &path,
            Some(json!({"is_active": true, "limits": null})),
        )
        .await;
    assert_eq!(
        (t["is_active"].clone(), t["limits"].clone()),
        (json!(true), Value::Null)
    );

    let (s, body) = admin
        .call(
            Method::PUT,
            "/api/v1/admin/tenants/999999",
            Some(json!({"is_active": true})),
        )
        .await;
    assert_error(s, &body, 404, "not_found");

    // The OpenAPI document lists them.
    let (_, doc) = alice.get("/api/v1/openapi.json").await;
    assert!(doc["paths"]["/api/v1/admin/tenants/{id}"]["put"].is_object());
}

#[tokio::test]
async fn the_admin_page_sets_and_removes_a_ceiling_and_says_what_is_wrong() {
    let app = spawn_app().await;
    app.register("alice", "Acme").await;
    make_admin(&app).await;
    let admin = app.other_browser();
    admin.login("root", ADMIN_PW).await;
    let page = admin.get("/admin/tenants").await;
    let id = crate::helpers::last_id(&page.body, "/admin/tenants/", "/limits");
    let form = format!("/admin/tenants/{id}/limits");
    admin
        .get(&form)
        .await
        .assert_contains("Requests per minute");

    let p = admin
        .post(
            &form,
            &form,
            &[
                ("requests_per_minute", ""),
                ("burst", "10"),
                ("requests_per_day", "x"),
            ],
        )
        .await;
    assert_eq!(p.status, 422);
    p.assert_contains("Burst needs requests_per_minute");
    p.assert_contains("Requests per day must be a positive whole number.");

    let p = admin
        .post(
            &form,
            &form,
            &[
                ("requests_per_minute", "600"),
                ("burst", "50"),
                ("requests_per_day", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    admin
        .get("/admin/tenants")
        .await
        .assert_contains("600/min (burst 50)");
    let p = admin
        .post(
            &form,
            &form,
            &[
                ("requests_per_minute", ""),
                ("burst", ""),
                ("requests_per_day", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    let t = {
        use domain::sea_orm::EntityTrait;
        domain::entities::tenant::Entity::find_by_id(id)
            .one(&app.db.db)
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!((t.limit_rpm, t.limit_burst), (None, None));
}
