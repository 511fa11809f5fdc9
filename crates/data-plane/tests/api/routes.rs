//! Routes: which paths and methods an API serves (404 `route_not_found`, 405 `method_not_allowed`
//! with `Allow`), exact and prefix matches, `{param}` segments, priority and its tie-breaks,
//! prefix stripping and per-route timeouts — on both engines, against the recording upstream.

use std::time::{Duration, Instant};

use data_plane::config::{Engine, ProxySettings};
use domain::route::{MatchKind, Methods, NewRoute, RoutePath};
use domain::sea_orm::EntityTrait;
use domain::store;
use reqwest::Method;

use crate::helpers::{EnvOptions, TestEnv, limits};

/// A route of `path` taking `methods`, the rest at defaults.
fn route(path: &str, kind: MatchKind, methods: &[&str]) -> NewRoute {
    NewRoute::new(
        RoutePath::parse(path).unwrap(),
        kind,
        Methods::parse(methods).unwrap(),
    )
}

fn stripping(mut r: NewRoute) -> NewRoute {
    r.strip_prefix = true;
    r
}

fn prioritised(mut r: NewRoute, priority: i32) -> NewRoute {
    r.priority = priority;
    r
}

/// The fixture on `engine`, with a plan burst of `burst` (the test clock stands still: nothing
/// refills) and `routes` added to its API in order (older first).
async fn env_with_routes(engine: Engine, burst: i64, routes: Vec<NewRoute>) -> TestEnv {
    let env = TestEnv::with(EnvOptions {
        limits: limits(60, Some(burst), None, None),
        proxy: Some(ProxySettings {
            engine,
            ..ProxySettings::default()
        }),
        ..EnvOptions::default()
    })
    .await;
    for r in routes {
        store::create_route(&env.db.db, env.fx.tenant.id, env.fx.api.id, r)
            .await
            .unwrap();
    }
    env.gw.reload().await;
    env
}

async fn send(env: &TestEnv, method: &str, rest: &str) -> reqwest::Response {
    env.gw
        .client
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            env.gw.url(&env.fx.path(rest)),
        )
        .header("x-api-key", &env.fx.key)
        .send()
        .await
        .unwrap()
}

/// The path (and query) the upstream received for a request the gateway admitted.
async fn upstream_saw(env: &TestEnv, method: &str, rest: &str) -> String {
    let answer = send(env, method, rest).await;
    assert_eq!(answer.status(), 200, "{method} {rest}");
    env.upstream.last().uri
}

async fn error_type(resp: reqwest::Response) -> String {
    let body: serde_json::Value = resp.json().await.unwrap();
    body["error"]["type"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn methods_and_paths_no_route_takes_are_405_and_404_and_cost_nothing() {
    for engine in [Engine::Fast, Engine::Hyper] {
        let env = env_with_routes(
            engine,
            3,
            vec![
                route("/users", MatchKind::Prefix, &["GET", "POST"]),
                route("/health", MatchKind::Exact, &[]),
            ],
        )
        .await;
        // Refusals before the limit: 404s and 405s, with a key and without one.
        for _ in 0..3 {
            let resp = send(&env, "DELETE", "/users/7").await;
            assert_eq!(resp.status(), 405, "{engine:?}");
            assert_eq!(resp.headers()["allow"], "GET, HEAD, POST", "{engine:?}");
            assert!(resp.headers().contains_key("x-request-id"));
            assert!(!resp.headers().contains_key("x-ratelimit-remaining"));
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["type"], "method_not_allowed");
            assert_eq!(body["error"]["code"], 405);
            assert_eq!(
                body["error"]["details"]["allow"],
                serde_json::json!(["GET", "HEAD", "POST"])
            );
            for rest in ["/nothing", "/usersx", "/health/x", ""] {
                let resp = send(&env, "GET", rest).await;
                assert_eq!(resp.status(), 404, "{engine:?} {rest}");
                assert_eq!(error_type(resp).await, "route_not_found");
            }
            let no_key = env
                .gw
                .client
                .get(env.gw.url(&env.fx.path("/nothing")))
                .send()
                .await
                .unwrap();
            assert_eq!(no_key.status(), 404);
        }
        assert_eq!(env.upstream.count(), 0, "{engine:?}: nothing was forwarded");
        // The whole burst is still there: HEAD wherever GET is, any method on a route without
        // methods, prefix matches at a segment boundary.
        assert_eq!(upstream_saw(&env, "HEAD", "/users").await, "/base/users");
        assert_eq!(
            upstream_saw(&env, "POST", "/users/7/x").await,
            "/base/users/7/x"
        );
        assert_eq!(upstream_saw(&env, "PATCH", "/health").await, "/base/health");
        assert_eq!(
            send(&env, "GET", "/users/").await.status(),
            429,
            "{engine:?}"
        );
        env.gw.stop().await;
    }
}

#[tokio::test]
async fn exact_prefix_params_priority_and_tie_breaks_pick_the_route() {
    for engine in [Engine::Fast, Engine::Hyper] {
        // Stripping routes show which route took a request: the upstream sees what follows the
        // route's literal prefix.
        let env = env_with_routes(
            engine,
            100,
            vec![
                // /p and everything below it, kept whole.
                route("/p", MatchKind::Prefix, &[]),
                // Same priority and literal length as /p: the older (/p) wins every tie.
                stripping(route("/p/{x}", MatchKind::Prefix, &[])),
                // A longer literal path than /p: wins /p/q.
                stripping(route("/p/q", MatchKind::Exact, &[])),
                // Priority 9 beats literal length, for PUT only.
                prioritised(route("/{x}", MatchKind::Prefix, &["PUT"]), 9),
                // One segment per parameter, exact: only /users/{id}/orders.
                stripping(route("/users/{id}/orders", MatchKind::Exact, &["GET"])),
                route("/users", MatchKind::Prefix, &["GET"]),
            ],
        )
        .await;
        let saw = |m: &'static str, p: &'static str| upstream_saw(&env, m, p);
        assert_eq!(
            saw("GET", "/p/z/1").await,
            "/base/p/z/1",
            "{engine:?}: the older of a tie"
        );
        assert_eq!(
            saw("GET", "/p/q").await,
            "/base",
            "{engine:?}: the longer literal path"
        );
        assert_eq!(
            saw("GET", "/p/q/r").await,
            "/base/p/q/r",
            "{engine:?}: exact is exact"
        );
        assert_eq!(
            saw("PUT", "/p/q").await,
            "/base/p/q",
            "{engine:?}: priority first"
        );
        assert_eq!(
            saw("GET", "/users/42/orders?page=2&x=%20").await,
            "/base/42/orders?page=2&x=%20"
        );
        assert_eq!(
            saw("GET", "/users/42/orders/9").await,
            "/base/users/42/orders/9"
        );
        assert_eq!(
            saw("GET", "/users/4/2/orders").await,
            "/base/users/4/2/orders"
        );
        env.gw.stop().await;
    }
}

#[tokio::test]
async fn a_routes_timeout_overrides_the_apis() {
    for engine in [Engine::Fast, Engine::Hyper] {
        let mut quick = route("/slow", MatchKind::Prefix, &[]);
        quick.timeout_ms = Some(150);
        let env =
            env_with_routes(engine, 100, vec![quick, route("/", MatchKind::Prefix, &[])]).await;
        // The API keeps its default 30 s: the route's 150 ms is what answers.
        let started = Instant::now();
        let resp = send(&env, "GET", "/slow/5000").await;
        assert_eq!(resp.status(), 504, "{engine:?}");
        assert!(started.elapsed() < Duration::from_secs(4), "{engine:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "upstream_timeout");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("150 ms"),
            "{body}"
        );
        // Another route of the API waits the API's time.
        assert_eq!(send(&env, "GET", "/other/slow/300").await.status(), 200);
        env.gw.stop().await;
    }
}

#[tokio::test]
async fn an_api_without_routes_forwards_everything_and_route_changes_reload() {
    let env = env_with_routes(Engine::Fast, 100, vec![]).await;
    assert_eq!(
        upstream_saw(&env, "DELETE", "/any/where").await,
        "/base/any/where"
    );
    // A route added while the gateway runs takes effect by the reload the write announces
    // (here: the polled config version).
    let r = store::create_route(
        &env.db.db,
        env.fx.tenant.id,
        env.fx.api.id,
        route("/only", MatchKind::Prefix, &["GET"]),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while send(&env, "GET", "/any/where").await.status() != 404 {
        assert!(Instant::now() < deadline, "the new route was not loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream_saw(&env, "GET", "/only/x").await, "/base/only/x");
    store::delete_route(&env.db.db, env.fx.tenant.id, env.fx.api.id, r.id)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while send(&env, "GET", "/any/where").await.status() != 200 {
        assert!(Instant::now() < deadline, "the deleted route stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.gw.stop().await;
}

/// A route's own window and cost through the pipeline on both engines (the in-process limiter):
/// refused by the route's window naming it, the plan's count untouched by the refusal, and a
/// request costing more than the route's burst never admitted.
#[tokio::test]
async fn a_routes_window_and_cost_are_enforced_on_both_engines() {
    for engine in [Engine::Fast, Engine::Hyper] {
        let mut login = route("/login", MatchKind::Exact, &["POST"]);
        login.rate_limit = Some(domain::route::RouteLimit {
            requests_per_minute: 1,
            burst: 4,
            requests_per_day: None,
        });
        login.cost = 2;
        let mut export = route("/export", MatchKind::Prefix, &[]);
        export.cost = 9;
        let env = env_with_routes(
            engine,
            8,
            vec![login, export, route("/", MatchKind::Prefix, &[])],
        )
        .await;
        for left in [2, 0] {
            let resp = send(&env, "POST", "/login").await;
            assert_eq!(resp.status(), 200, "{engine:?}");
            assert_eq!(
                resp.headers()["x-ratelimit-remaining-route-minute"],
                left.to_string().as_str()
            );
        }
        let refused = send(&env, "POST", "/login").await;
        assert_eq!(refused.status(), 429, "{engine:?}");
        assert_eq!(
            refused.headers()["x-ratelimit-remaining-minute"],
            "4",
            "{engine:?}"
        );
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(
            body["error"]["details"]["window"], "route-minute",
            "{engine:?}"
        );
        // Cost 9 against the plan's burst of 8: never admitted, said so.
        let never = send(&env, "GET", "/export/all").await;
        assert_eq!(never.status(), 429, "{engine:?}");
        assert!(!never.headers().contains_key("retry-after"));
        assert_eq!(error_type(never).await, "request_too_costly");
        // Off the limited routes, the plan's 4 units are there.
        let other = send(&env, "GET", "/items").await;
        assert_eq!(other.status(), 200, "{engine:?}");
        assert_eq!(
            other.headers()["x-ratelimit-remaining-minute"],
            "3",
            "{engine:?}"
        );
        assert_eq!(env.upstream.count(), 3, "{engine:?}");
    }
}

#[tokio::test]
async fn usage_analytics_and_the_request_log_carry_the_route() {
    let env = env_with_routes(
        Engine::Fast,
        100,
        vec![route("/users/{id}", MatchKind::Prefix, &["GET"])],
    )
    .await;
    let routes = store::list_routes(&env.db.db, env.fx.tenant.id, env.fx.api.id, None, 10)
        .await
        .unwrap();
    let route_id = routes[0].id;
    assert_eq!(send(&env, "GET", "/users/7").await.status(), 200);
    assert_eq!(send(&env, "GET", "/nowhere").await.status(), 404);
    let (db, tenant) = (env.db.db.clone(), env.fx.tenant.id);
    env.gw.stop().await;
    let records = store::request_log::list(
        &db,
        &store::request_log::LogQuery {
            tenant_id: Some(tenant),
            ..Default::default()
        },
        None,
        10,
    )
    .await
    .unwrap();
    let of = |status: i32| records.iter().find(|r| r.status == status).unwrap();
    assert_eq!(of(200).detail().route_id, route_id);
    assert_eq!(of(404).detail().route_id, 0, "no route took it");
    let usage = domain::entities::usage_rollup::Entity::find()
        .all(&db)
        .await
        .unwrap();
    assert_eq!(
        usage
            .iter()
            .map(|u| (u.route_id, u.requests))
            .collect::<Vec<_>>(),
        [(route_id, 1)]
    );
    let traffic = domain::entities::traffic_stat::Entity::find()
        .all(&db)
        .await
        .unwrap();
    assert!(
        traffic
            .iter()
            .any(|t| t.route_id == route_id && t.requests == 1)
    );
}
