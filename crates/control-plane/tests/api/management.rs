//! The management REST API: every endpoint and error, tenant isolation, and the OpenAPI document.

use domain::sea_orm::EntityTrait;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const PW: &str = "tangerine-orbit-42";

pub struct Api<'a> {
    pub app: &'a TestApp,
    pub token: String,
}

impl Api<'_> {
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .app
            .client
            .request(method, self.app.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            },
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, None).await
    }
}

pub async fn signup<'a>(app: &'a TestApp, username: &str, tenant: &str) -> Api<'a> {
    let resp = app
        .client
        .post(app.url("/api/v1/signup"))
        .json(&json!({"username": username, "email": format!("{username}@example.com"), "password": PW, "tenant_name": tenant}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    Api {
        app,
        token: body["token"].as_str().unwrap().to_owned(),
    }
}

/// The fields a 422 names, in order.
fn error_fields(b: &Value) -> Vec<&str> {
    b["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect()
}

#[track_caller]
pub fn assert_error(status: u16, body: &Value, want: u16, kind: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], want, "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn signup_returns_the_tenant_and_a_token_and_validates() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/api/v1/signup"))
        .json(&json!({"username": "alice", "email": "a@example.com", "password": PW, "tenant_name": "Acme Inc", "tenant_slug": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["tenant"]["slug"], "acme");
    assert_eq!(body["tenant"]["name"], "Acme Inc");
    assert!(body["tenant"]["id"].is_i64());
    assert!(body["token"].as_str().unwrap().starts_with("gw_mgmt_"));

    let post = |b: Value| app.client.post(app.url("/api/v1/signup")).json(&b).send();
    let r = post(json!({"username": "alice", "email": "b@example.com", "password": PW, "tenant_name": "Other"})).await.unwrap();
    let (s, b) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_error(s, &b, 409, "conflict");
    let r = post(json!({"username": "bob", "email": "b@example.com", "password": PW, "tenant_name": "X", "tenant_slug": "acme"})).await.unwrap();
    assert_eq!(r.status(), 409);
    let r = post(json!({"username": "bob", "email": "nope", "password": PW, "tenant_name": "X"}))
        .await
        .unwrap();
    let (s, b) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(b["error"]["details"]["field"], "email");
    let r = post(json!({"username": "bob", "email": "b@example.com", "password": "short", "tenant_name": "X"})).await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["details"]["field"],
        "password"
    );
    let r = post(json!({"username": "bob", "email": "b@example.com", "tenant_name": "X"}))
        .await
        .unwrap();
    let (s, b) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(
        b["error"]["details"]["field"], "password",
        "a missing field is named"
    );

    let closed = spawn_app_with(domain::testing::TestDb::sqlite().await, |s| {
        s.dashboard.signup_enabled = false;
    })
    .await;
    let r = closed
        .client
        .post(closed.url("/api/v1/signup"))
        .json(&json!({"username": "bob", "email": "b@example.com", "password": PW, "tenant_name": "X"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "sign-up can be switched off");
}

#[tokio::test]
async fn tokens_are_issued_with_basic_credentials_listed_and_revoked() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let issue = |user: &str, pw: &str| {
        app.client
            .post(app.url("/api/v1/tokens"))
            .basic_auth(user, Some(pw))
            .send()
    };
    let r = issue("alice", PW).await.unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let second = Api {
        app: &app,
        token: created["token"].as_str().unwrap().to_owned(),
    };
    assert_eq!(second.get("/api/v1/plans").await.0, 200);

    let r = issue("alice", "wrong-password-1").await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = app
        .client
        .post(app.url("/api/v1/tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let (s, list) = api.get("/api/v1/tokens").await;
    assert_eq!(s, 200);
    // A page like every other list.
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    assert!(list["next_cursor"].is_null());
    let (_, first_page) = api.get("/api/v1/tokens?limit=1").await;
    assert_eq!(first_page["items"].as_array().unwrap().len(), 1);
    let cursor = first_page["next_cursor"].as_str().unwrap().to_owned();
    let (_, second_page) = api
        .get(&format!("/api/v1/tokens?limit=1&cursor={cursor}"))
        .await;
    assert_ne!(first_page["items"][0]["id"], second_page["items"][0]["id"]);
    assert!(
        !list.to_string().contains(&second.token),
        "tokens are listed by prefix only"
    );

    let id = created["id"].as_i64().unwrap();
    assert_eq!(api.delete(&format!("/api/v1/tokens/{id}")).await.0, 204);
    let (s, b) = second.get("/api/v1/plans").await;
    assert_error(s, &b, 401, "unauthorized");
    assert_eq!(api.delete(&format!("/api/v1/tokens/{id}")).await.0, 404);
}

#[tokio::test]
async fn calls_without_a_valid_token_are_401() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/v1/plans"))
        .send()
        .await
        .unwrap();
    let (s, b) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_error(s, &b, 401, "unauthorized");
    let bad = Api {
        app: &app,
        token: "gw_mgmt_nope".into(),
    };
    let (s, b) = bad.get("/api/v1/keys").await;
    assert_error(s, &b, 401, "unauthorized");
}

#[tokio::test]
async fn body_type_errors_name_the_field_in_words() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let (s, b) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Bad", "requests_per_minute": "ten"}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    // The field is named and what it expects said, in words (not the deserializer's position).
    assert_eq!(b["error"]["details"]["field"], "requests_per_minute", "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(message.contains("requests_per_minute"), "{message}");
    assert!(message.contains("expected a whole number"), "{message}");
    assert!(message.contains("\"ten\""), "{message}");
    assert!(!message.contains("line 1"), "{message}");
    let (s, b) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Bad", "requests_per_minute": 5, "lots": true}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(b["error"]["details"]["field"], "lots", "{b}");
    let (s, b) = api
        .post(
            "/api/v1/apis",
            json!({"name": "A", "slug": "a", "upstream_url": "http://x.org", "pass_encoded_slashes": "yes"}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(
        b["error"]["details"]["field"], "pass_encoded_slashes",
        "{b}"
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected true or false"),
        "{b}"
    );
}

#[tokio::test]
async fn plans_crud_validation_and_conflicts() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let (s, p) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Pro", "requests_per_minute": 600, "requests_per_day": 10000}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(
        (p["burst"].as_i64(), p["enforcement"].as_str()),
        (Some(600), Some("strict"))
    );
    let id = p["id"].as_i64().unwrap();
    assert_eq!(
        api.get(&format!("/api/v1/plans/{id}")).await.1["name"],
        "Pro"
    );

    let (s, b) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Bad", "requests_per_minute": 0}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(b["error"]["details"]["field"], "requests_per_minute");
    let (_, b) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Bad", "requests_per_minute": 5, "enforcement": "loose"}),
        )
        .await;
    assert_eq!(b["error"]["details"]["field"], "enforcement");

    let (s, p) = api
        .patch(
            &format!("/api/v1/plans/{id}"),
            json!({"requests_per_day": null, "burst": 50, "enforcement": "fast"}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (
            p["requests_per_day"].clone(),
            p["burst"].as_i64(),
            p["name"].as_str()
        ),
        (Value::Null, Some(50), Some("Pro"))
    );

    let (s, _) = api
        .post("/api/v1/keys", json!({"name": "k", "plan_id": id}))
        .await;
    assert_eq!(s, 201);
    let (s, b) = api.delete(&format!("/api/v1/plans/{id}")).await;
    assert_error(s, &b, 409, "conflict");
    assert!(b["error"]["message"].as_str().unwrap().contains("1 key(s)"));
    let (_, spare) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Spare", "requests_per_minute": 1}),
        )
        .await;
    assert_eq!(
        api.delete(&format!("/api/v1/plans/{}", spare["id"]))
            .await
            .0,
        204
    );
    assert_eq!(
        api.get(&format!("/api/v1/plans/{}", spare["id"])).await.0,
        404
    );
}

#[tokio::test]
async fn apis_crud_validation_and_conflicts() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let (s, a) = api.post("/api/v1/apis", json!({"name": "Weather", "slug": "weather", "upstream_url": "https://w.example.com/v1/"})).await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["gateway_url"], "http://localhost:7000/acme/weather/");
    assert_eq!(
        (
            a["key_header"].as_str(),
            a["timeout_ms"].as_i64(),
            a["is_active"].as_bool()
        ),
        (Some("X-API-Key"), Some(30000), Some(true))
    );
    let id = a["id"].as_i64().unwrap();
    let (s, b) = api
        .post(
            "/api/v1/apis",
            json!({"name": "W", "slug": "weather", "upstream_url": "http://x.org"}),
        )
        .await;
    assert_error(s, &b, 409, "conflict");
    let (s, b) = api
        .post(
            "/api/v1/apis",
            json!({"name": "W", "slug": "w2", "upstream_url": "http://u:p@x.org"}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(b["error"]["details"]["field"], "upstream_url");
    let (_, b) = api
        .post(
            "/api/v1/apis",
            json!({"name": "W", "slug": "Admin", "upstream_url": "http://x.org"}),
        )
        .await;
    assert_eq!(b["error"]["details"]["field"], "slug");
    // Every wrong field is named, as the dashboard's form names them, not only the first.
    let (s, b) = api
        .post(
            "/api/v1/apis",
            json!({"name": "", "slug": "Bad Slug", "upstream_url": "ftp://x", "key_header": "Host", "timeout_ms": 0}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    let fields = error_fields(&b);
    assert_eq!(
        fields,
        ["name", "slug", "upstream_url", "key_header", "timeout_ms"],
        "{b}"
    );
    let message = b["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("upstream_url must start with http:// or https://")
            && message.contains("timeout_ms must be between 1 and 300000 milliseconds"),
        "{message}"
    );
    let (s, off) = api.post("/api/v1/apis", json!({"name": "Off", "slug": "off", "upstream_url": "http://x.org", "is_active": false})).await;
    assert_eq!((s, off["is_active"].as_bool()), (201, Some(false)));

    let (s, a) = api
        .patch(
            &format!("/api/v1/apis/{id}"),
            json!({"timeout_ms": 1500, "is_active": false}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        (
            a["timeout_ms"].as_i64(),
            a["is_active"].as_bool(),
            a["slug"].as_str()
        ),
        (Some(1500), Some(false), Some("weather"))
    );
    let (_, list) = api.get("/api/v1/apis").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(api.delete(&format!("/api/v1/apis/{id}")).await.0, 204);
    assert_eq!(api.get(&format!("/api/v1/apis/{id}")).await.0, 404);
}

/// A signed-up tenant with one API, and the API's routes collection.
async fn api_for_routes(app: &TestApp) -> (Api<'_>, String, Value) {
    let api = signup(app, "alice", "Acme").await;
    let (_, a) = api
        .post(
            "/api/v1/apis",
            json!({"name": "W", "slug": "w", "upstream_url": "http://x.org"}),
        )
        .await;
    let base = format!("/api/v1/apis/{}/routes", a["id"]);
    (api, base, a)
}

#[tokio::test]
async fn routes_validate_every_field_and_refuse_duplicates() {
    let app = spawn_app().await;
    let (api, base, _) = api_for_routes(&app).await;
    // A route's retries override the API's.
    let (s, b) = api
        .post(
            &base,
            json!({"path": "/login", "rate_limit": {"requests_per_minute": 10, "burst": 3}, "retries": 1, "cost": 2}),
        )
        .await;
    assert_eq!((s, b["retries"].as_i64()), (201, Some(1)), "{b}");
    let (s, full) = api
        .post(
            &base,
            json!({"path": "/login", "match": "exact", "methods": ["post"], "priority": 5,
                   "strip_prefix": true, "timeout_ms": 2000, "cost": 2,
                   "rate_limit": {"requests_per_minute": 10, "burst": 3, "requests_per_day": 100}}),
        )
        .await;
    assert_eq!(s, 201, "{full}");
    assert_eq!(full["methods"], json!(["POST"]));
    assert_eq!(
        (full["cost"].clone(), full["rate_limit"].clone()),
        (
            json!(2),
            json!({"requests_per_minute": 10, "burst": 3, "requests_per_day": 100})
        ),
        "{full}"
    );
    assert_eq!(
        (
            full["priority"].as_i64(),
            full["strip_prefix"].as_bool(),
            full["timeout_ms"].as_i64()
        ),
        (Some(5), Some(true), Some(2000))
    );
    // Every wrong field is named.
    let (s, b) = api
        .post(
            &base,
            json!({"path": "login", "match": "regex", "methods": ["GET", "FETCH"], "timeout_ms": 0,
                   "retries": 9, "rate_limit": {"requests_per_minute": 0}, "cost": 0}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    let fields = error_fields(&b);
    assert_eq!(
        fields,
        [
            "path",
            "match",
            "methods",
            "timeout_ms",
            "retries",
            "cost",
            "rate_limit.requests_per_minute"
        ],
        "{b}"
    );
    let message = b["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("path must start with /") && message.contains("\"FETCH\""),
        "{message}"
    );
    // The same path, match and a common method as another route: 422 on path.
    let (s, b) = api
        .post(
            &base,
            json!({"path": "/login", "match": "exact", "methods": ["POST", "PUT"]}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(b["error"]["details"]["field"], "path", "{b}");
    // Another method on the same path is another route.
    let (s, _) = api
        .post(
            &base,
            json!({"path": "/login", "match": "exact", "methods": ["GET"]}),
        )
        .await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn targets_crud_keep_the_upstream_url_and_stay_the_tenants() {
    let app = spawn_app().await;
    let (api, _, a) = api_for_routes(&app).await;
    let id = a["id"].as_i64().unwrap();
    let base = format!("/api/v1/apis/{id}/targets");
    // The API's upstream URL is its first target.
    let (s, list) = api.get(&base).await;
    assert_eq!(s, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(
        (items[0]["url"].as_str(), items[0]["weight"].as_i64()),
        (Some("http://x.org"), Some(1))
    );
    let first = items[0]["id"].as_i64().unwrap();
    let (s, b) = api
        .post(&base, json!({"url": "ftp://y.org", "weight": 0}))
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(error_fields(&b), ["url", "weight"], "{b}");
    let (s, second) = api
        .post(&base, json!({"url": "http://y.org:8080/v1/", "weight": 3}))
        .await;
    assert_eq!(s, 201, "{second}");
    assert_eq!(
        (second["url"].as_str(), second["weight"].as_i64()),
        (Some("http://y.org:8080/v1"), Some(3))
    );
    let second_id = second["id"].as_i64().unwrap();
    // Changing the first target changes the API's upstream_url, and the other way round.
    let (s, _) = api
        .put(&format!("{base}/{first}"), json!({"url": "http://z.org"}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        api.get(&format!("/api/v1/apis/{id}")).await.1["upstream_url"],
        "http://z.org"
    );
    let (s, _) = api
        .patch(
            &format!("/api/v1/apis/{id}"),
            json!({"upstream_url": "http://w.org"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(api.get(&base).await.1["items"][0]["url"], "http://w.org");
    // Deleting the first makes the next one the upstream_url; the last one cannot go.
    assert_eq!(api.delete(&format!("{base}/{first}")).await.0, 204);
    assert_eq!(
        api.get(&format!("/api/v1/apis/{id}")).await.1["upstream_url"],
        "http://y.org:8080/v1"
    );
    let (s, b) = api.delete(&format!("{base}/{second_id}")).await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least one target"),
        "{b}"
    );
    let (s, r) = api
        .post(&format!("{base}/{second_id}/reset"), json!({}))
        .await;
    assert_eq!((s, r["id"].as_i64()), (200, Some(second_id)), "{r}");

    // Another tenant sees none of it.
    let other = signup(&app, "bob", "Bobco").await;
    assert_eq!(other.get(&base).await.0, 404);
    assert_eq!(
        other.post(&base, json!({"url": "http://q.org"})).await.0,
        404
    );
    assert_eq!(other.delete(&format!("{base}/{second_id}")).await.0, 404);
    assert_eq!(
        other
            .post(&format!("{base}/{second_id}/reset"), json!({}))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn api_retries_health_check_and_circuit_breaker_validate_and_patch() {
    let app = spawn_app().await;
    let (api, _, a) = api_for_routes(&app).await;
    let id = a["id"].as_i64().unwrap();
    // Retries, health check and circuit breaker: defaults, validation naming each field, PATCH.
    let (_, got) = api.get(&format!("/api/v1/apis/{id}")).await;
    assert!(
        got["retries"].is_null() && got["health_check"].is_null(),
        "{got}"
    );
    assert_eq!(
        got["circuit_breaker"],
        json!({"enabled": true, "failure_threshold": 5, "recovery_timeout_ms": 30000, "half_open_max_calls": 3})
    );
    let (s, b) = api
        .patch(
            &format!("/api/v1/apis/{id}"),
            json!({"retries": 9, "health_check": {"path": "health", "interval_ms": 50, "status_min": 500, "status_max": 200},
                   "circuit_breaker": {"failure_threshold": 0}}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(
        error_fields(&b),
        [
            "retries",
            "health_check.path",
            "health_check.interval_ms",
            "health_check.status_max",
            "circuit_breaker.failure_threshold"
        ],
        "{b}"
    );
    let (s, got) = api
        .patch(
            &format!("/api/v1/apis/{id}"),
            json!({"retries": 2, "health_check": {"path": "/healthz", "interval_ms": 5000},
                   "circuit_breaker": {"failure_threshold": 10}}),
        )
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["retries"], 2);
    assert_eq!(
        (
            got["health_check"]["path"].as_str(),
            got["health_check"]["interval_ms"].as_i64(),
            got["health_check"]["unhealthy_threshold"].as_i64()
        ),
        (Some("/healthz"), Some(5000), Some(3))
    );
    assert_eq!(got["circuit_breaker"]["failure_threshold"], 10);
    // Other fields leave them alone; null turns them back to the defaults.
    let (_, got) = api
        .patch(&format!("/api/v1/apis/{id}"), json!({"timeout_ms": 2000}))
        .await;
    assert_eq!(
        (
            got["retries"].as_i64(),
            got["health_check"]["path"].as_str()
        ),
        (Some(2), Some("/healthz"))
    );
    let (_, got) = api
        .patch(
            &format!("/api/v1/apis/{id}"),
            json!({"retries": null, "health_check": null, "circuit_breaker": null}),
        )
        .await;
    assert!(
        got["retries"].is_null() && got["health_check"].is_null(),
        "{got}"
    );
    assert_eq!(got["circuit_breaker"]["failure_threshold"], 5);
}

#[tokio::test]
async fn api_put_replaces_every_field() {
    let app = spawn_app().await;
    let (api, _, a) = api_for_routes(&app).await;
    let id = a["id"].as_i64().unwrap();
    // PUT replaces the whole API: what it leaves out takes its default.
    let url = a["upstream_url"].as_str().unwrap().to_owned();
    let (s, got) = api
        .put(
            &format!("/api/v1/apis/{id}"),
            json!({"name": "Replaced", "slug": "replaced", "upstream_url": url, "retries": 1,
                   "health_check": {"path": "/up"}, "circuit_breaker": {"failure_threshold": 7}}),
        )
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(
        (
            got["name"].as_str(),
            got["retries"].as_i64(),
            got["health_check"]["path"].as_str()
        ),
        (Some("Replaced"), Some(1), Some("/up"))
    );
    assert_eq!(got["circuit_breaker"]["failure_threshold"], 7);
    let (s, got) = api
        .put(
            &format!("/api/v1/apis/{id}"),
            json!({"name": "Replaced", "slug": "replaced", "upstream_url": url}),
        )
        .await;
    assert_eq!(s, 200, "{got}");
    assert!(
        got["retries"].is_null() && got["health_check"].is_null(),
        "{got}"
    );
    assert_eq!(got["circuit_breaker"]["failure_threshold"], 5);
    assert_eq!(got["timeout_ms"], 30000, "the default timeout again");
    let (s, b) = api
        .put(
            &format!("/api/v1/apis/{id}"),
            json!({"name": "", "slug": "Bad Slug", "upstream_url": url}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(error_fields(&b), ["name", "slug"], "{b}");
    let (s, b) = api
        .put(
            "/api/v1/apis/999999",
            json!({"name": "X", "slug": "x", "upstream_url": url}),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
}

#[tokio::test]
async fn api_health_shows_what_each_data_plane_reported_lately() {
    use domain::target_health::{HealthReports, NodeReport, TargetReport};
    let app = spawn_app().await;
    let (api, _, a) = api_for_routes(&app).await;
    let id = a["id"].as_i64().unwrap();
    let (_, list) = api.get(&format!("/api/v1/apis/{id}/targets")).await;
    let target_id = list["items"][0]["id"].as_i64().unwrap();
    let (s, empty) = api.get(&format!("/api/v1/apis/{id}/health")).await;
    assert_eq!(
        (s, empty["items"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{empty}"
    );
    let now = chrono::Utc::now().timestamp_millis();
    let report = |node: &str, at_ms: i64, circuit: &str| NodeReport {
        node: node.to_owned(),
        at_ms,
        targets: vec![TargetReport {
            target_id,
            url: "http://x.org".into(),
            up: circuit != "open",
            circuit: circuit.into(),
            last_check_ms: Some(12),
            last_error: None,
            consecutive_failures: 0,
            in_flight: 1,
        }],
    };
    // Two nodes reporting now, one that went quiet 20 s ago.
    HealthReports::new(None, app.db.db.clone())
        .write(&[
            (id, report("edge-b", now, "open")),
            (id, report("edge-a", now, "closed")),
            (id, report("edge-gone", now - 20_000, "closed")),
        ])
        .await
        .unwrap();
    let (s, h) = api.get(&format!("/api/v1/apis/{id}/health")).await;
    assert_eq!(s, 200, "{h}");
    let items = h["items"].as_array().unwrap();
    let nodes: Vec<&str> = items.iter().map(|i| i["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["edge-a", "edge-b"], "{h}");
    assert_eq!(
        (
            items[1]["circuit"].as_str(),
            items[1]["up"].as_bool(),
            items[1]["target_id"].as_i64()
        ),
        (Some("open"), Some(false), Some(target_id))
    );
    assert_eq!(items[0]["last_check_ms"], 12);
    let other = signup(&app, "bob", "Bobco").await;
    assert_eq!(other.get(&format!("/api/v1/apis/{id}/health")).await.0, 404);
}

#[tokio::test]
async fn routes_crud_pages_and_isolation() {
    let app = spawn_app().await;
    let (api, base, a) = api_for_routes(&app).await;
    // Defaults: prefix, any method, priority 0, no stripping, cost 1.
    let (s, r) = api.post(&base, json!({"path": "/users/"})).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(
        (
            r["path"].as_str(),
            r["match"].as_str(),
            r["methods"].as_array().map(Vec::len),
            r["priority"].as_i64(),
            r["strip_prefix"].as_bool(),
            r["cost"].as_i64(),
        ),
        (
            Some("/users"),
            Some("prefix"),
            Some(0),
            Some(0),
            Some(false),
            Some(1)
        ),
        "{r}"
    );
    assert!(r["rate_limit"].is_null() && r["timeout_ms"].is_null());
    let (s, full) = api
        .post(
            &base,
            json!({"path": "/login", "match": "exact", "methods": ["POST"]}),
        )
        .await;
    assert_eq!(s, 201, "{full}");
    let id = full["id"].as_i64().unwrap();
    assert_eq!(
        api.post(
            &base,
            json!({"path": "/login", "match": "exact", "methods": ["GET"]})
        )
        .await
        .0,
        201
    );
    // PUT replaces the whole route (absent fields take their defaults); a route is not its own
    // duplicate.
    let (s, r) = api
        .put(
            &format!("{base}/{id}"),
            json!({"path": "/login", "match": "exact", "methods": ["POST"]}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        r["rate_limit"].is_null() && r["priority"] == 0 && r["cost"] == 1,
        "{r}"
    );
    let (s, list) = api.get(&format!("{base}?limit=2")).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (_, page2) = api
        .get(&format!(
            "{base}?cursor={}",
            list["next_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    // Another tenant sees nothing of them, and cannot add routes to the API.
    let other = signup(&app, "bob", "Bobs").await;
    for (m, path, body) in [
        (Method::GET, base.clone(), None),
        (Method::POST, base.clone(), Some(json!({"path": "/x"}))),
        (Method::GET, format!("{base}/{id}"), None),
        (
            Method::PUT,
            format!("{base}/{id}"),
            Some(json!({"path": "/x"})),
        ),
        (Method::DELETE, format!("{base}/{id}"), None),
    ] {
        let (s, resp) = other.call(m, &path, body).await;
        assert_error(s, &resp, 404, "not_found");
    }
    assert_eq!(api.get(&format!("{base}/{id}")).await.1["path"], "/login");
    assert_eq!(api.delete(&format!("{base}/{id}")).await.0, 204);
    assert_eq!(api.get(&format!("{base}/{id}")).await.0, 404);
    // Deleting the API deletes its routes.
    assert_eq!(
        api.delete(&format!("/api/v1/apis/{}", a["id"])).await.0,
        204
    );
    assert_eq!(api.get(&base).await.0, 404);
}

#[tokio::test]
async fn keys_are_shown_once_revoked_and_rotated() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let (_, plan) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Free", "requests_per_minute": 60}),
        )
        .await;
    let plan_id = plan["id"].as_i64().unwrap();
    let (s, k) = api
        .post(
            "/api/v1/keys",
            json!({"name": "ci", "plan_id": plan_id, "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let raw = k["key"].as_str().unwrap().to_owned();
    assert!(raw.starts_with(k["prefix"].as_str().unwrap()));
    let id = k["id"].as_i64().unwrap();
    let (_, got) = api.get(&format!("/api/v1/keys/{id}")).await;
    assert!(
        got.get("key").is_none() && !got.to_string().contains(&raw),
        "the raw key is never returned again"
    );
    assert_eq!(got["expires_at"], "2099-01-01T00:00:00Z");
    let (_, list) = api.get("/api/v1/keys").await;
    assert!(!list.to_string().contains(&raw));

    let (_, b) = api
        .post("/api/v1/keys", json!({"name": "x", "plan_id": 999_999}))
        .await;
    assert_eq!(b["error"]["details"]["field"], "plan_id");
    let (_, b) = api
        .post(
            "/api/v1/keys",
            json!({"name": "x", "plan_id": plan_id, "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(b["error"]["details"]["field"], "expires_at");

    let (s, k2) = api
        .patch(
            &format!("/api/v1/keys/{id}"),
            json!({"name": "ci-2", "expires_at": null}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (k2["name"].as_str(), k2["expires_at"].clone()),
        (Some("ci-2"), Value::Null)
    );

    let (s, rotated) = api
        .post(
            &format!("/api/v1/keys/{id}/rotate"),
            json!({"grace_seconds": 3600}),
        )
        .await;
    assert_eq!(s, 201, "{rotated}");
    assert_ne!(rotated["key"], raw);
    assert_eq!(rotated["name"], "ci-2");
    let (_, old) = api.get(&format!("/api/v1/keys/{id}")).await;
    let expires: chrono::DateTime<chrono::Utc> =
        old["expires_at"].as_str().unwrap().parse().unwrap();
    assert!((expires - chrono::Utc::now()).num_seconds() > 3500);
    let (_, b) = api
        .post(
            &format!("/api/v1/keys/{id}/rotate"),
            json!({"grace_seconds": -1}),
        )
        .await;
    assert_eq!(b["error"]["details"]["field"], "grace_seconds");
    assert_eq!(api.delete(&format!("/api/v1/keys/{id}")).await.0, 204);
    assert_eq!(
        api.get(&format!("/api/v1/keys/{id}")).await.1["is_active"],
        false
    );
    let (s, b) = api
        .post(&format!("/api/v1/keys/{id}/rotate"), json!({}))
        .await;
    assert_error(s, &b, 409, "conflict");
}

#[tokio::test]
async fn a_rotated_or_expired_key_cannot_be_rotated_again() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let (_, plan) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Free", "requests_per_minute": 60}),
        )
        .await;
    let (_, k) = api
        .post(
            "/api/v1/keys",
            json!({"name": "ci", "plan_id": plan["id"], "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    let id = k["id"].as_i64().unwrap();
    let (s, rotated) = api
        .post(
            &format!("/api/v1/keys/{id}/rotate"),
            json!({"grace_seconds": 3600}),
        )
        .await;
    assert_eq!(s, 201, "{rotated}");
    assert_eq!(
        rotated["expires_at"], "2099-01-01T00:00:00Z",
        "the new key keeps the expiry"
    );
    // Rotating the replaced key again would make a key that dies with the grace period.
    let (s, b) = api
        .post(&format!("/api/v1/keys/{id}/rotate"), json!({}))
        .await;
    assert_error(s, &b, 409, "conflict");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already rotated"),
        "{b}"
    );
    // An expired key is not rotated into one born expired.
    let new_id = rotated["id"].as_i64().unwrap();
    {
        use domain::entities::api_key;
        use domain::sea_orm::{ColumnTrait, QueryFilter, sea_query::Expr};
        api_key::Entity::update_many()
            .col_expr(
                api_key::Column::ExpiresAt,
                Expr::value(Some(chrono::Utc::now() - chrono::Duration::seconds(5))),
            )
            .filter(api_key::Column::Id.eq(new_id))
            .exec(&app.db.db)
            .await
            .unwrap();
    }
    let (s, b) = api
        .post(&format!("/api/v1/keys/{new_id}/rotate"), json!({}))
        .await;
    assert_error(s, &b, 409, "conflict");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("expired"),
        "{b}"
    );
}

#[tokio::test]
async fn clients_crud() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let (_, free) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Free", "requests_per_minute": 60}),
        )
        .await;
    let (_, pro) = api
        .post(
            "/api/v1/plans",
            json!({"name": "Pro", "requests_per_minute": 600}),
        )
        .await;
    let (s, c) = api
        .post(
            "/api/v1/clients",
            json!({"client_id": "mobile", "name": "Mobile", "plan_id": free["id"]}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_i64().unwrap();
    let (s, b) = api
        .post(
            "/api/v1/clients",
            json!({"client_id": "mobile", "name": "Again", "plan_id": free["id"]}),
        )
        .await;
    assert_error(s, &b, 409, "conflict");
    let (_, b) = api
        .post(
            "/api/v1/clients",
            json!({"client_id": "has space", "name": "X", "plan_id": free["id"]}),
        )
        .await;
    assert_eq!(b["error"]["details"]["field"], "client_id");
    let (s, c) = api
        .patch(
            &format!("/api/v1/clients/{id}"),
            json!({"plan_id": pro["id"], "is_active": false}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (c["plan_id"].clone(), c["is_active"].as_bool()),
        (pro["id"].clone(), Some(false))
    );
    assert_eq!(
        api.get("/api/v1/clients").await.1["items"][0]["client_id"],
        "mobile"
    );
    assert_eq!(api.delete(&format!("/api/v1/clients/{id}")).await.0, 204);
    assert_eq!(api.get(&format!("/api/v1/clients/{id}")).await.0, 404);
}

#[tokio::test]
async fn lists_paginate_with_cursors() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    for i in 0..5 {
        api.post(
            "/api/v1/plans",
            json!({"name": format!("p{i}"), "requests_per_minute": 10}),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, page) = api
            .get(&format!("/api/v1/plans?limit=2&cursor={cursor}"))
            .await;
        assert_eq!(s, 200);
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4"]);
    let (s, b) = api.get("/api/v1/plans?limit=0").await;
    assert_error(s, &b, 422, "invalid_field");
    let (_, b) = api.get("/api/v1/plans?cursor=abc").await;
    assert_eq!(b["error"]["details"]["field"], "cursor");
    let (s, _) = api.get("/api/v1/plans?limit=x").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn usage_totals_and_series() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let tenant = domain::entities::tenant::Entity::find()
        .one(&app.db.db)
        .await
        .unwrap()
        .unwrap();
    let now = chrono::Utc::now();
    let minute = now.timestamp() / 60;
    for (key, n) in [(1, 10), (2, 5)] {
        let b = domain::usage::Bucket {
            tenant_id: tenant.id,
            api_id: 7,
            key_id: key,
            client_id: 0,
            route_id: 0,
            minute,
        };
        let c = domain::usage::Counts {
            requests: n,
            rejected: 1,
            upstream_errors: 0,
            units: 0,
        };
        domain::store::add_minutes(&app.db.db, &std::collections::HashMap::from([(b, c)]))
            .await
            .unwrap();
        let d = domain::store::UsageDelta {
            tenant_id: tenant.id,
            day: now.date_naive(),
            api_id: 7,
            key_id: key,
            client_id: 0,
            route_id: 0,
            requests: n,
            rejected: 1,
            upstream_errors: 0,
            units: 0,
        };
        domain::store::add_usage(&app.db.db, &[d]).await.unwrap();
    }
    let (s, u) = api.get("/api/v1/usage").await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(
        u["totals"],
        json!({"requests": 15, "rejected": 2, "upstream_errors": 0})
    );
    assert_eq!(u["series"].as_array().unwrap().len(), 1);
    let (_, u) = api.get("/api/v1/usage?granularity=minute&key_id=2").await;
    assert_eq!(u["totals"]["requests"], 5);
    assert_eq!(u["series"][0]["requests"], 5);
    let (_, u) = api.get("/api/v1/usage?api_id=8").await;
    assert_eq!(u["totals"]["requests"], 0);
    let (s, b) = api.get("/api/v1/usage?granularity=hour").await;
    assert_error(s, &b, 422, "invalid_field");
    let (s, _) = api.get("/api/v1/usage?from=yesterday").await;
    assert_eq!(s, 400);
    let (_, b) = api
        .get("/api/v1/usage?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(b["error"]["details"]["field"], "from");
}

#[tokio::test]
async fn bodies_must_be_json_of_a_sane_size() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let url = app.url("/api/v1/plans");
    let r = app
        .client
        .post(&url)
        .bearer_auth(&api.token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (s, b) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_error(s, &b, 415, "unsupported_media_type");
    let r = app
        .client
        .post(&url)
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (s, b) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_error(s, &b, 400, "bad_request");
    let huge = json!({"name": "x".repeat(100_000), "requests_per_minute": 1});
    let r = app
        .client
        .post(&url)
        .bearer_auth(&api.token)
        .json(&huge)
        .send()
        .await
        .unwrap();
    let (s, b) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_error(s, &b, 413, "payload_too_large");
    let (s, b) = api
        .post(
            "/api/v1/plans",
            json!({"name": "x", "requests_per_minute": 1, "surprise": true}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(
        b["error"]["details"]["field"], "surprise",
        "unknown fields are named"
    );
    let (s, b) = api.get("/api/v1/plans/not-a-number").await;
    assert_error(s, &b, 404, "not_found");
}

/// Tenant B, with A's ids, on every route: 404, and A's data unchanged.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one table of every route
async fn another_tenants_ids_are_404_on_every_route() {
    let app = spawn_app().await;
    let a = signup(&app, "alice", "Acme").await;
    let (_, plan) = a
        .post(
            "/api/v1/plans",
            json!({"name": "Free", "requests_per_minute": 60}),
        )
        .await;
    let (_, api_) = a
        .post(
            "/api/v1/apis",
            json!({"name": "W", "slug": "w", "upstream_url": "http://x.org"}),
        )
        .await;
    let (_, key) = a
        .post("/api/v1/keys", json!({"name": "k", "plan_id": plan["id"]}))
        .await;
    let (_, client) = a
        .post(
            "/api/v1/clients",
            json!({"client_id": "c", "name": "C", "plan_id": plan["id"]}),
        )
        .await;
    let (_, tokens) = a.get("/api/v1/tokens").await;
    let token_id = tokens["items"][0]["id"].as_i64().unwrap();

    let b = signup(&app, "bob", "Bobs").await;
    let (_, bplan) = b
        .post(
            "/api/v1/plans",
            json!({"name": "B", "requests_per_minute": 1}),
        )
        .await;
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/v1/plans/{}", plan["id"]), None),
        (
            Method::PATCH,
            format!("/api/v1/plans/{}", plan["id"]),
            Some(json!({"name": "x"})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/plans/{}", plan["id"]),
            None,
        ),
        (Method::GET, format!("/api/v1/apis/{}", api_["id"]), None),
        (
            Method::PATCH,
            format!("/api/v1/apis/{}", api_["id"]),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, format!("/api/v1/apis/{}", api_["id"]), None),
        (Method::GET, format!("/api/v1/keys/{}", key["id"]), None),
        (
            Method::PATCH,
            format!("/api/v1/keys/{}", key["id"]),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, format!("/api/v1/keys/{}", key["id"]), None),
        (
            Method::POST,
            format!("/api/v1/keys/{}/rotate", key["id"]),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/api/v1/clients/{}", client["id"]),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/clients/{}", client["id"]),
            Some(json!({"plan_id": bplan["id"]})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/clients/{}", client["id"]),
            None,
        ),
        (Method::DELETE, format!("/api/v1/tokens/{token_id}"), None),
    ];
    for (m, path, body) in calls {
        let (s, resp) = b.call(m.clone(), &path, body).await;
        assert_error(s, &resp, 404, "not_found");
    }
    // B cannot put its key or client on A's plan.
    let (_, r) = b
        .post(
            "/api/v1/keys",
            json!({"name": "steal", "plan_id": plan["id"]}),
        )
        .await;
    assert_eq!(r["error"]["details"]["field"], "plan_id");
    // Lists and usage show only B's own.
    assert_eq!(
        b.get("/api/v1/apis").await.1["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        b.get("/api/v1/keys").await.1["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // A's things are intact.
    assert_eq!(
        a.get(&format!("/api/v1/plans/{}", plan["id"])).await.1["name"],
        "Free"
    );
    assert_eq!(
        a.get(&format!("/api/v1/keys/{}", key["id"])).await.1["is_active"],
        true
    );
    assert_eq!(
        a.get(&format!("/api/v1/clients/{}", client["id"])).await.0,
        200
    );
    assert_eq!(a.get("/api/v1/plans").await.0, 200, "A's token still works");
}

/// Every operation the served document lists is a route that answers (never the router's bare
/// 404), and the document lists exactly the contract's operations.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    ops.sort();
    let mut expected = vec![
        "POST /api/v1/signup",
        "POST /api/v1/tokens",
        "GET /api/v1/tokens",
        "DELETE /api/v1/tokens/{id}",
        "POST /api/v1/plans",
        "GET /api/v1/plans",
        "GET /api/v1/plans/{id}",
        "PATCH /api/v1/plans/{id}",
        "DELETE /api/v1/plans/{id}",
        "POST /api/v1/apis",
        "GET /api/v1/apis",
        "GET /api/v1/apis/{id}",
        "PATCH /api/v1/apis/{id}",
        "PUT /api/v1/apis/{id}",
        "DELETE /api/v1/apis/{id}",
        "POST /api/v1/apis/{api_id}/routes",
        "GET /api/v1/apis/{api_id}/routes",
        "GET /api/v1/apis/{api_id}/routes/{id}",
        "PUT /api/v1/apis/{api_id}/routes/{id}",
        "DELETE /api/v1/apis/{api_id}/routes/{id}",
        "POST /api/v1/apis/{api_id}/targets",
        "GET /api/v1/apis/{api_id}/targets",
        "PUT /api/v1/apis/{api_id}/targets/{id}",
        "DELETE /api/v1/apis/{api_id}/targets/{id}",
        "POST /api/v1/apis/{api_id}/targets/{id}/reset",
        "GET /api/v1/apis/{id}/health",
        "POST /api/v1/keys",
        "GET /api/v1/keys",
        "GET /api/v1/keys/{id}",
        "PATCH /api/v1/keys/{id}",
        "DELETE /api/v1/keys/{id}",
        "POST /api/v1/keys/{id}/rotate",
        "POST /api/v1/clients",
        "GET /api/v1/clients",
        "GET /api/v1/clients/{id}",
        "PATCH /api/v1/clients/{id}",
        "DELETE /api/v1/clients/{id}",
        "GET /api/v1/usage",
        "GET /api/v1/analytics",
        "GET /api/v1/logs",
        "GET /api/v1/logs/{request_id}",
        "GET /api/v1/signing-keys",
        "POST /api/v1/signing-keys/rotate",
        "PUT /api/v1/token-settings",
        "POST /api/v1/tokens/validate",
        "POST /api/v1/admin/tokens",
        "GET /api/v1/admin/tenants",
        "GET /api/v1/admin/tenants/{id}",
        "PUT /api/v1/admin/tenants/{id}",
        "GET /api/v1/quota-settings",
        "PUT /api/v1/quota-settings",
        "POST /api/v1/webhooks",
        "GET /api/v1/webhooks",
        "DELETE /api/v1/webhooks/{id}",
        "GET /api/v1/webhooks/{id}/deliveries",
    ];
    expected.sort_unstable();
    assert_eq!(ops, expected);
    for op in &ops {
        let (method, path) = op.split_once(' ').unwrap();
        let path = path.replace("{id}", "999999").replace("{api_id}", "999999");
        let (status, body) = api
            .call(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &path,
                Some(json!({})),
            )
            .await;
        // A route that exists answers with a success or the JSON envelope, never a bare 404.
        assert!(
            status < 400 || body["error"]["code"] == status,
            "{op} -> {status} {body}"
        );
    }
    let docs = app.client.get(app.url("/api/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "the browsable page"
    );
}

/// Another writer holding SQLite's write lock (a bulk import, a slow migration) must not hold up
/// the management API's reads: a token's use is recorded after the answer, not before.
#[tokio::test]
async fn a_write_locked_database_does_not_hold_up_api_reads() {
    use domain::entities::api_token;
    use domain::sea_orm::EntityTrait;
    let app = spawn_app().await;
    let api = signup(&app, "alice", "Acme").await;
    assert_eq!(api.get("/api/v1/plans").await.0, 200);
    // The token's use was recorded; forget it, so that the next use wants to write it.
    api_token::Entity::update_many()
        .col_expr(
            api_token::Column::LastUsedAt,
            domain::sea_orm::sea_query::Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .exec(&app.db.db)
        .await
        .unwrap();
    let path = app
        .db
        .url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let mut locker = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys\n\
             c=sqlite3.connect(sys.argv[1],isolation_level=None)\n\
             c.execute('BEGIN IMMEDIATE')\n\
             print('locked',flush=True)\n\
             sys.stdin.read()",
            &path,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the lock holder");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(locker.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let started = std::time::Instant::now();
    let (status, _) = api.get("/api/v1/plans").await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "a read waited {:?} for the write lock",
        started.elapsed()
    );
    // The lock goes: the use is recorded after all.
    drop(locker.stdin.take());
    locker.wait().unwrap();
    let started = std::time::Instant::now();
    loop {
        let tokens = api_token::Entity::find().all(&app.db.db).await.unwrap();
        if tokens.iter().all(|t| t.last_used_at.is_some()) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the token's use was never recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
