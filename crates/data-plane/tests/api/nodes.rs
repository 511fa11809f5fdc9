//! Several data planes sharing one database and one Redis: exact limits across processes,
//! revocation everywhere within a second, and no count lost on SIGTERM.

use std::time::{Duration, Instant};

use domain::events::Publisher;
use domain::limits::redis::pool;
use domain::plan::Enforcement;
use domain::sea_orm::EntityTrait;
use domain::store;
use domain::testing::TestDb;
use futures_util::future::join_all;

use crate::helpers::{
    Fixture, TestGateway, generous, limits, redis, seed, seed_with, settings_for, spawn_gateway,
};
use crate::process::Proc;
use crate::upstream::{Upstream, spawn_upstream};

pub(crate) async fn fire(
    client: &reqwest::Client,
    urls: &[String],
    key: &str,
    n: usize,
) -> (usize, usize) {
    let calls = (0..n).map(|i| {
        let url = urls[i % urls.len()].clone();
        let client = client.clone();
        let key = key.to_owned();
        async move {
            client
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = join_all(calls).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + limited, n, "only 200 and 429 expected: {statuses:?}");
    (ok, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_sharing_redis_admit_exactly_the_limit() {
    let Some(redis) = redis() else { return };
    two_processes_admit_exactly_the_limit(&redis).await;
}

/// Two data-plane processes on `redis`, 300 concurrent requests on each of two tenants at once
/// (a burst of 100; a day quota of 150): exactly the limits admitted.
pub(crate) async fn two_processes_admit_exactly_the_limit(redis: &(String, String)) {
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let burst = seed(
        &db.db,
        "burst",
        &upstream.url(""),
        limits(1, Some(100), None, None),
    )
    .await;
    let quota = seed(
        &db.db,
        "quota",
        &upstream.url(""),
        limits(1_000_000, None, Some(150), None),
    )
    .await;
    let a = Proc::spawn(&db.url, Some(redis), &[]);
    let b = Proc::spawn(&db.url, Some(redis), &[]);
    let client = reqwest::Client::new();
    let urls = |path: String| {
        [
            format!("{}{path}", a.address),
            format!("{}{path}", b.address),
        ]
    };
    let (burst_urls, quota_urls) = (urls(burst.path("/x")), urls(quota.path("/x")));
    // Both tenants at once: a batch of script calls mixes their subjects (on a cluster, their
    // hash slots).
    let (burst_got, quota_got) = tokio::join!(
        fire(&client, &burst_urls, &burst.key, 300),
        fire(&client, &quota_urls, &quota.key, 300)
    );
    assert_eq!(burst_got, (100, 200), "exactly the burst admitted");
    assert_eq!(quota_got, (150, 150), "exactly the day quota admitted");
    assert_eq!(upstream.count(), 250);
}

/// Fast mode spends budgets leased from Redis: across nodes it never admits more than the limit,
/// and refuses early at most two leases per node (`GATEWAY_FAST_LEASE_MAX`, documented).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fast_mode_across_processes_stays_within_its_documented_bound() {
    let Some(redis) = redis() else { return };
    fast_mode_across_processes_keeps_its_bound(&redis).await;
}

pub(crate) async fn fast_mode_across_processes_keeps_its_bound(redis: &(String, String)) {
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let quota = seed_with(
        &db.db,
        "fast",
        &upstream.url(""),
        limits(1_000_000, None, Some(300), None),
        Enforcement::Fast,
    )
    .await;
    let lease_max = 16;
    let env = [("GATEWAY_FAST_LEASE_MAX", "16")];
    let a = Proc::spawn(&db.url, Some(redis), &env);
    let b = Proc::spawn(&db.url, Some(redis), &env);
    let urls = [
        format!("{}{}", a.address, quota.path("/x")),
        format!("{}{}", b.address, quota.path("/x")),
    ];
    let client = reqwest::Client::new();
    let (ok, _) = fire(&client, &urls, &quota.key, 700).await;
    eprintln!("fast mode, 2 nodes, 700 requests against a quota of 300: {ok} admitted");
    assert!(
        ok <= 300,
        "fast mode admitted {ok} of a 300 quota: it must never overshoot"
    );
    assert!(
        ok >= 300 - 2 * 2 * lease_max,
        "fast mode admitted only {ok}: more refused early than 2 nodes x 2 leases of {lease_max}"
    );
    assert_eq!(upstream.count(), ok);
    // Afterwards at most what the first burst left: fast mode may refuse early while units sit
    // in another node's lease, and those units may still be spent; never past the quota.
    let (more, _) = fire(&client, &urls, &quota.key, 50).await;
    assert!(
        ok + more <= 300,
        "{ok} then {more} admitted of a 300 quota: it must never overshoot"
    );
    assert_eq!(upstream.count(), ok + more);
}

/// Waits until `n` data planes subscribe to the config channel (on a cluster, summed over its
/// nodes: classic pub/sub counts each node's own subscribers).
pub(crate) async fn wait_for_subscribers(redis_url: &str, prefix: &str, n: i64) {
    let endpoint = domain::redis_pool::Endpoint::parse(redis_url).unwrap();
    let nodes: Vec<String> = if endpoint.is_cluster() {
        (endpoint.addresses().iter())
            .map(|(h, p)| format!("redis://{h}:{p}/"))
            .collect()
    } else {
        vec![redis_url.to_owned()]
    };
    let pools: Vec<_> = nodes.iter().map(|u| pool(u).unwrap()).collect();
    for _ in 0..500 {
        let mut count = 0;
        for p in &pools {
            let mut conn = p.get().await.unwrap();
            let (_, c): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(domain::events::channel(prefix))
                .query_async::<(String, i64)>(&mut conn)
                .await
                .unwrap();
            count += c;
        }
        if count >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("data planes did not subscribe to config changes");
}

/// An upstream, a database with one tenant, and two data planes sharing Redis, both subscribed
/// to change events and answering the fixture's key. Polling is slowed to a minute: only a Redis
/// event can make a change land fast. `None` when no Redis is configured (outside CI).
pub(crate) struct TwoNodes {
    redis: (String, String),
    _upstream: Upstream,
    db: TestDb,
    fx: Fixture,
    gws: [TestGateway; 2],
}

async fn two_subscribed_gateways() -> Option<TwoNodes> {
    Some(two_subscribed_gateways_on(redis()?).await)
}

/// [`two_subscribed_gateways`] on `redis`.
pub(crate) async fn two_subscribed_gateways_on(redis: (String, String)) -> TwoNodes {
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(&db.db, "acme", &upstream.url(""), generous()).await;
    let mut settings = settings_for(&db.url, Some(&redis));
    settings.proxy.reload_poll_ms = 60_000;
    let gws = [
        spawn_gateway(settings.clone(), None).await,
        spawn_gateway(settings, None).await,
    ];
    wait_for_subscribers(&redis.0, &redis.1, 2).await;
    for gw in &gws {
        assert_eq!(gw.get(&fx.path("/x"), &fx.key).await.status(), 200);
    }
    TwoNodes {
        redis,
        _upstream: upstream,
        db,
        fx,
        gws,
    }
}

/// Polls `path` on `gw` until it answers `want` (200 until then), failing after a second from
/// `since` (when the change was written).
async fn answers_within_a_second(
    gw: &TestGateway,
    path: &str,
    key: &str,
    want: u16,
    since: Instant,
) {
    loop {
        let status = gw.get(path, key).await.status();
        if status == want {
            return;
        }
        assert_eq!(status, 200);
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "{path} did not answer {want} within 1 s of the change"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_key_is_refused_by_every_data_plane_within_a_second() {
    let Some(nodes) = two_subscribed_gateways().await else {
        return;
    };
    revocation_reaches_both_within_a_second(&nodes).await;
}

/// The key of `nodes` revoked (written, then published, as the control plane does): both data
/// planes refuse it within a second.
pub(crate) async fn revocation_reaches_both_within_a_second(nodes: &TwoNodes) {
    let TwoNodes {
        redis, db, fx, gws, ..
    } = nodes;

    // What the control plane does: write, then publish.
    let publisher = Publisher::new(Some(pool(&redis.0).unwrap()), redis.1.clone());
    store::revoke_key(&db.db, fx.tenant.id, fx.key_id)
        .await
        .unwrap();
    let revoked_at = Instant::now();
    publisher.config_changed(&db.db).await;

    for gw in gws {
        answers_within_a_second(gw, &fx.path("/x"), &fx.key, 403, revoked_at).await;
    }
    let took = revoked_at.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// A key event is applied to the key alone: no snapshot reload, so it stays under a second however
/// many keys there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_event_applies_the_key_without_reloading_the_snapshot() {
    let Some(nodes) = two_subscribed_gateways().await else {
        return;
    };
    let TwoNodes {
        redis, db, fx, gws, ..
    } = &nodes;
    let reloads: Vec<u64> = gws
        .iter()
        .map(|g| g.gateway.metrics.snapshot_reloads.get())
        .collect();

    let publisher = Publisher::new(Some(pool(&redis.0).unwrap()), redis.1.clone());
    store::revoke_key(&db.db, fx.tenant.id, fx.key_id)
        .await
        .unwrap();
    let revoked_at = Instant::now();
    publisher.keys_changed(&db.db, &[fx.key_id]).await;
    for gw in gws {
        while gw.get(&fx.path("/x"), &fx.key).await.status() != 403 {
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "still admitted after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let after: Vec<u64> = gws
        .iter()
        .map(|g| g.gateway.metrics.snapshot_reloads.get())
        .collect();
    assert_eq!(
        after, reloads,
        "the revocation came without a snapshot reload"
    );
    assert!(gws.iter().all(|g| g.gateway.metrics.key_updates.get() >= 1));
    // A later full reload keeps the revocation (the snapshot now has it).
    data_plane::reload::reload(&gws[0].gateway).await.unwrap();
    assert_eq!(gws[0].get(&fx.path("/x"), &fx.key).await.status(), 403);
}

#[tokio::test]
async fn without_redis_changes_arrive_by_polling_the_config_version() {
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(&db.db, "acme", &upstream.url(""), generous()).await;
    let mut settings = settings_for(&db.url, None);
    settings.proxy.reload_poll_ms = 50;
    let gw = spawn_gateway(settings, None).await;
    assert_eq!(gw.get(&fx.path("/x"), &fx.key).await.status(), 200);
    store::revoke_key(&db.db, fx.tenant.id, fx.key_id)
        .await
        .unwrap();
    let started = Instant::now();
    while gw.get(&fx.path("/x"), &fx.key).await.status() != 403 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the poll never picked the change up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn rollup_totals(db: &TestDb) -> (i64, i64, i64) {
    let rows = domain::entities::usage_rollup::Entity::find()
        .all(&db.db)
        .await
        .unwrap();
    rows.iter().fold((0, 0, 0), |(r, x, e), row| {
        (r + row.requests, x + row.rejected, e + row.upstream_errors)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_requests_and_loses_no_count() {
    let redis = redis();
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(
        &db.db,
        "acme",
        &upstream.url(""),
        limits(1, Some(100), None, None),
    )
    .await;
    let roomy = store::create_plan(
        &db.db,
        fx.tenant.id,
        "roomy",
        generous(),
        Enforcement::Strict,
    )
    .await
    .unwrap();
    let (_, other_key) = store::create_api_key(&db.db, fx.tenant.id, roomy.id, "k2", None)
        .await
        .unwrap();
    let other_key = other_key.expose().to_owned();
    // Flushes only at shutdown: whatever the database holds afterwards came from the last flush.
    let proc = Proc::spawn(
        &db.url,
        redis.as_ref(),
        &[("GATEWAY_USAGE_FLUSH_MS", "3600000")],
    );
    let client = reqwest::Client::new();
    let url = |rest: &str| format!("{}{}", proc.address, fx.path(rest));
    assert_eq!(fire(&client, &[url("/x")], &fx.key, 110).await, (100, 10));
    for _ in 0..5 {
        let resp = client
            .get(url("/status/500"))
            .header("x-api-key", &other_key)
            .send()
            .await
            .unwrap();
        // (A 500, not a 502: five 502s in a row would open the target's circuit.)
        assert_eq!(resp.status(), 500, "the upstream's own 500");
    }
    // These slow requests are in flight when SIGTERM arrives; they must complete.
    let slow: Vec<_> = (0..5)
        .map(|_| {
            let req = client.get(url("/slow/700")).header("x-api-key", &other_key);
            tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    while upstream
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.uri.ends_with("/slow/700"))
        .count()
        < 5
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let term = tokio::task::spawn_blocking(move || proc.terminate());
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap(), 200, "in-flight requests finish");
    }
    term.await.unwrap();
    assert_eq!(
        rollup_totals(&db).await,
        (120, 10, 5),
        "every request counted, once"
    );
    if let Some((url, prefix)) = &redis {
        let pool = pool(url).unwrap();
        let now = chrono::Utc::now().timestamp() / 60;
        let minutes = domain::usage::read_minutes(&pool, prefix, fx.tenant.id, now - 2..=now)
            .await
            .unwrap();
        let total: i64 = minutes
            .iter()
            .flat_map(|(_, m)| m.values())
            .map(|c| c.requests)
            .sum();
        assert_eq!(total, 120, "Redis has the same count");
    }
}

/// A route added in the control plane's way (through the writer that announces it) is enforced by
/// every data plane within a second: a path it does not take is 404 there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_route_is_enforced_by_every_data_plane_within_a_second() {
    use domain::route::{MatchKind, Methods, NewRoute, RoutePath};
    let Some(nodes) = two_subscribed_gateways().await else {
        return;
    };
    let TwoNodes {
        redis, db, fx, gws, ..
    } = &nodes;
    let writer = store::ConfigWriter::new(
        db.db.clone(),
        Publisher::new(Some(pool(&redis.0).unwrap()), redis.1.clone()),
    );
    let only = NewRoute::new(
        RoutePath::parse("/only").unwrap(),
        MatchKind::Prefix,
        Methods::parse(&["GET"]).unwrap(),
    );
    writer
        .create_route(fx.tenant.id, fx.api.id, only)
        .await
        .unwrap();
    let written_at = Instant::now();
    for gw in gws {
        answers_within_a_second(gw, &fx.path("/x"), &fx.key, 404, written_at).await;
        assert_eq!(gw.get(&fx.path("/only/y"), &fx.key).await.status(), 200);
    }
}

/// A route of `path` (prefix, any method) with its own window of `burst` (refilling one per
/// minute) when given, costing `cost` units.
fn limited_route(path: &str, burst: Option<u64>, cost: i32) -> domain::route::NewRoute {
    let mut r = domain::route::NewRoute::new(
        domain::route::RoutePath::parse(path).unwrap(),
        domain::route::MatchKind::Prefix,
        domain::route::Methods::default(),
    );
    r.rate_limit = burst.map(|burst| domain::route::RouteLimit {
        requests_per_minute: 1,
        burst,
        requests_per_day: None,
    });
    r.cost = cost;
    r
}

fn header_u64(resp: &reqwest::Response, name: &str) -> u64 {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A route's window is decided with the plan's in one step on every data plane: 200 concurrent
/// requests through two processes admit exactly the route's burst, the plan counts exactly
/// those, a refusal in either window consumes nothing in the other, and a route's cost takes
/// that many units from every window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_route_window_and_cost_are_exact_across_processes() {
    let Some(redis) = redis() else { return };
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(
        &db.db,
        "routed",
        &upstream.url(""),
        limits(1, Some(500), Some(1_000), None),
    )
    .await;
    for r in [
        limited_route("/login", Some(10), 1),
        limited_route("/report", Some(9), 3),
        limited_route("/export", Some(5), 6),
        limited_route("/", None, 1),
    ] {
        store::create_route(&db.db, fx.tenant.id, fx.api.id, r)
            .await
            .unwrap();
    }
    let a = Proc::spawn(&db.url, Some(&redis), &[]);
    let b = Proc::spawn(&db.url, Some(&redis), &[]);
    let client = reqwest::Client::new();
    let on = |rest: &str| {
        [
            format!("{}{}", a.address, fx.path(rest)),
            format!("{}{}", b.address, fx.path(rest)),
        ]
    };
    assert_eq!(fire(&client, &on("/login"), &fx.key, 200).await, (10, 190));
    let get = |url: String| client.get(url).header("x-api-key", &fx.key).send();
    // The plan counted the 10 admitted and nothing of the 190 refused: 1000 - 10 - this one.
    let other = get(on("/items")[0].clone()).await.unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(header_u64(&other, "x-ratelimit-remaining-day"), 989);
    assert_eq!(header_u64(&other, "x-ratelimit-remaining-minute"), 489);
    // Cost 3: three units from the plan's minute and day and from the route's window, per request.
    for (i, node) in [0, 1, 0].into_iter().enumerate() {
        let resp = get(on("/report/q1")[node].clone()).await.unwrap();
        assert_eq!(resp.status(), 200, "report {i}");
        let spent = 3 * (i as u64 + 1);
        assert_eq!(header_u64(&resp, "x-ratelimit-remaining-day"), 989 - spent);
        assert_eq!(
            header_u64(&resp, "x-ratelimit-remaining-minute"),
            489 - spent
        );
        assert_eq!(
            header_u64(&resp, "x-ratelimit-remaining-route-minute"),
            9 - spent
        );
    }
    // The route's 9 units are spent: refused, naming the route's window, the plan untouched.
    let refused = get(on("/report/q2")[1].clone()).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(header_u64(&refused, "x-ratelimit-remaining-day"), 980);
    assert!(refused.headers().get("retry-after").is_some());
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limited");
    assert_eq!(body["error"]["details"]["window"], "route-minute");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("this route's minute limit"),
        "{body}"
    );
    // Cost 6 against a route burst of 5: never admitted, said so, no wait offered.
    let never = get(on("/export")[0].clone()).await.unwrap();
    assert_eq!(never.status(), 429);
    assert!(never.headers().get("retry-after").is_none());
    let body: serde_json::Value = never.json().await.unwrap();
    assert_eq!(body["error"]["type"], "request_too_costly", "{body}");
    assert_eq!(
        body["error"]["details"],
        serde_json::json!({"level": "route", "window": "route-minute", "cost": 6, "holds": 5})
    );
    let after = get(on("/items")[1].clone()).await.unwrap();
    assert_eq!(header_u64(&after, "x-ratelimit-remaining-day"), 979);
    assert_eq!(upstream.count(), 10 + 1 + 3 + 1);
}
