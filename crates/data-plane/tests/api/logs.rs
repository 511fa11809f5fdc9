//! The request log and traffic analytics: every answer on a tenant's path leaves one record with
//! the right fields (on both engines), the analytics count it, percentiles of the histograms stay
//! within the stated bound of the exact ones, and a stalled database never delays a request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use data_plane::config::{Engine, ProxySettings};
use domain::analytics::Merged;
use domain::clock::Clock;
use domain::entities::request_log;
use domain::request_log::flags;
use domain::sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use domain::store;
use domain::store::analytics::{GroupBy, TrafficQuery};
use domain::store::request_log::{LogQuery, list};

use crate::helpers::{EnvOptions, TestEnv, limits};

/// An API of the fixture's tenant named `slug`, forwarding to `url` with `timeout_ms`.
async fn add_api(env: &TestEnv, slug: &str, url: &str, timeout_ms: i64, log_query: bool) -> i64 {
    crate::helpers::add_api(
        &env.db.db,
        env.fx.tenant.id,
        slug,
        url,
        timeout_ms,
        log_query,
    )
    .await
}

/// The record of request `rid`, once the data plane has written it (within `within`).
async fn record(db: &DatabaseConnection, rid: &str, within: Duration) -> request_log::Model {
    let deadline = Instant::now() + within;
    loop {
        let q = LogQuery {
            request_id: Some(rid.to_owned()),
            ..LogQuery::default()
        };
        if let Some(r) = list(db, &q, None, 1).await.unwrap().into_iter().next() {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no record of {rid} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[allow(clippy::too_many_lines)] // one request of each kind, then each record
async fn every_answer_is_logged(engine: Engine) {
    let env = TestEnv::with(EnvOptions {
        proxy: Some(ProxySettings {
            engine,
            ..ProxySettings::default()
        }),
        ..EnvOptions::default()
    })
    .await;
    let db = &env.db.db;
    let tenant = env.fx.tenant.id;
    let dead = add_api(
        &env,
        "dead",
        &format!("http://127.0.0.1:{}/", closed_port().await),
        30_000,
        false,
    )
    .await;
    let slow = add_api(&env, "slow", &env.upstream.url("/"), 200, false).await;
    let verbose = add_api(&env, "verbose", &env.upstream.url("/"), 30_000, true).await;
    // A key on a plan of one request per minute, and a registered client.
    let tight = store::create_plan(
        db,
        tenant,
        "tight",
        limits(1, Some(1), None, None),
        domain::plan::Enforcement::Strict,
    )
    .await
    .unwrap();
    let (tight_key, tight_raw) = store::create_api_key(db, tenant, tight.id, "tight", None)
        .await
        .unwrap();
    let client = store::create_client(db, tenant, "mobile-app", "Mobile", env.fx.plan.id)
        .await
        .unwrap();
    env.gw.reload().await;

    let gw = &env.gw;
    let send = |rid: &str, path: String, key: Option<&str>| {
        let mut req = gw.client.get(gw.url(&path)).header("x-request-id", rid);
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        req
    };
    let key = env.fx.key.as_str();
    let ok = send("rid-ok", env.fx.path("/items?token=secret"), Some(key))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok_body = ok.bytes().await.unwrap();
    let posted = gw
        .client
        .post(gw.url(&env.fx.path("/upload")))
        .header("x-request-id", "rid-post")
        .header("x-api-key", key)
        .header("x-client-id", "mobile-app")
        .body(vec![b'a'; 1234])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    for (rid, path, key, status) in [
        ("rid-401", env.fx.path("/x"), None, 401),
        ("rid-403", env.fx.path("/x"), Some("gw_live_nope"), 403),
        ("rid-404", "/acme/nope/x".to_owned(), Some(key), 404),
        ("rid-502", "/acme/dead/x".to_owned(), Some(key), 502),
        ("rid-504", "/acme/slow/slow/2000".to_owned(), Some(key), 504),
        (
            "rid-query",
            "/acme/verbose/q?page=2".to_owned(),
            Some(key),
            200,
        ),
        (
            "rid-first",
            env.fx.path("/a"),
            Some(tight_raw.expose()),
            200,
        ),
        ("rid-429", env.fx.path("/b"), Some(tight_raw.expose()), 429),
        // No tenant at this path: nobody's record.
        ("rid-nobody", "/nobody/svc/x".to_owned(), Some(key), 404),
    ] {
        let r = send(rid, path, key).send().await.unwrap();
        assert_eq!(r.status(), status, "{rid}");
        let _ = r.bytes().await;
    }

    let within = Duration::from_secs(3);
    let r = record(db, "rid-ok", within).await;
    let d = r.detail();
    assert_eq!(r.tenant_id, tenant);
    assert_eq!(r.api_id, env.fx.api.id);
    assert_eq!(r.key_id, env.fx.key_id);
    assert_eq!(d.key_prefix.as_deref(), Some(&key[..16]));
    assert_eq!(r.method, "GET");
    assert_eq!(
        d.path, "/acme/svc/items",
        "the query is not logged by default"
    );
    assert_eq!(r.status, 200);
    assert_eq!(d.bytes_out, u64::try_from(ok_body.len()).unwrap());
    assert_eq!(d.client_ip, "127.0.0.1");
    assert!(d.target_id > 0, "the target that answered");
    assert!(d.upstream_latency_us.is_some_and(|u| u > 0));
    assert!(d.latency_us >= d.upstream_latency_us.unwrap());
    assert_eq!(
        (r.flags, d.error_type),
        (flags::REQUEST_ID_GIVEN, None),
        "the caller sent its request id"
    );
    assert_eq!(r.ts_ms, env.clock.now_ms(), "the gateway's clock");

    let r = record(db, "rid-post", within).await;
    let d = r.detail();
    assert_eq!((r.method.as_str(), d.bytes_in), ("POST", 1234));
    assert_eq!(r.client_row_id, client.id);
    assert_eq!(d.client_id.as_deref(), Some("mobile-app"));

    let r = record(db, "rid-401", within).await;
    let d = r.detail();
    assert_eq!(
        (r.status, d.error_type.as_deref()),
        (401, Some("missing_api_key"))
    );
    assert_eq!((r.api_id, r.key_id, d.key_prefix), (env.fx.api.id, 0, None));
    let r = record(db, "rid-403", within).await;
    assert_eq!(
        (r.status, r.detail().error_type.as_deref()),
        (403, Some("invalid_api_key"))
    );
    assert_eq!(r.key_id, 0, "an unknown key is nobody's");
    let r = record(db, "rid-404", within).await;
    assert_eq!((r.status, r.api_id, r.tenant_id), (404, 0, tenant));
    let r = record(db, "rid-502", within).await;
    let d = r.detail();
    assert_eq!(
        (r.status, r.api_id, d.error_type.as_deref()),
        (502, dead, Some("upstream_unreachable"))
    );
    assert_eq!(r.flags & flags::UPSTREAM_ERROR, flags::UPSTREAM_ERROR);
    assert!(d.target_id > 0);
    let r = record(db, "rid-504", within).await;
    let d = r.detail();
    assert_eq!(
        (r.status, r.api_id, d.error_type.as_deref()),
        (504, slow, Some("upstream_timeout"))
    );
    assert!(d.latency_us >= 200_000, "it waited for the timeout");
    assert_eq!(r.flags & flags::UPSTREAM_ERROR, flags::UPSTREAM_ERROR);
    let r = record(db, "rid-query", within).await;
    assert_eq!(
        (r.api_id, r.detail().path.as_ref()),
        (verbose, "/acme/verbose/q?page=2")
    );
    let r = record(db, "rid-429", within).await;
    let d = r.detail();
    assert_eq!((r.status, r.key_id), (429, tight_key.id));
    assert_eq!(d.error_type.as_deref(), Some("rate_limited"));
    assert_eq!(r.flags, flags::RATE_LIMITED | flags::REQUEST_ID_GIVEN);
    assert!(d.upstream_latency_us.is_none(), "nothing was sent");

    // A request id the gateway made (none sent) finds its record too.
    let made = env.get("/items").await;
    let rid = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    let r = record(db, &rid, within).await;
    assert_eq!((r.flags, r.status), (0, 200));
    assert_eq!(
        domain::request_log::time_of_request_id(&rid),
        Some(r.ts_ms),
        "a version 7 UUID of the request's time"
    );

    // The unknown tenant's request is nobody's: the tenant has exactly the 11 others.
    let mine = list(
        db,
        &LogQuery {
            tenant_id: Some(tenant),
            ..LogQuery::default()
        },
        None,
        100,
    )
    .await
    .unwrap();
    assert_eq!(mine.len(), 11, "{mine:#?}");
    assert!(!mine.iter().any(|r| r.request_id == "rid-nobody"));

    // The same answers in the analytics, once usage is flushed.
    assert!(env.gw.gateway.usage.flush().await.db_ok);
    let minute = env.clock.now_ms() / 1000 / 60 * 60;
    let q = TrafficQuery {
        tenant_id: Some(tenant),
        resolution: 60,
        from_s: minute,
        to_s: minute + 60,
        ..TrafficQuery::default()
    };
    let all = store::analytics::sums(db, &q, GroupBy::All).await.unwrap();
    let s = &all[0].1;
    assert_eq!(s.requests, 11);
    assert_eq!(
        (s.status_2xx, s.status_4xx, s.status_5xx),
        (5, 4, 2),
        "{s:?}"
    );
    assert_eq!((s.rate_limited, s.upstream_errors), (1, 2));
    assert_eq!(s.bytes_in, 1234);
    // The same at the hour and the day.
    for res in [3600, 86_400] {
        let q = TrafficQuery {
            resolution: res,
            from_s: minute / res * res,
            to_s: minute / res * res + res,
            ..q
        };
        let s = store::analytics::sums(db, &q, GroupBy::All).await.unwrap();
        assert_eq!(s[0].1.requests, 11, "at {res} s");
    }
    let by_api: HashMap<i64, i64> = store::analytics::sums(db, &q, GroupBy::Api)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, s)| (k, s.requests))
        .collect();
    assert_eq!(by_api.get(&dead), Some(&1));
    assert_eq!(by_api.get(&env.fx.api.id), Some(&7));
    assert_eq!(by_api.get(&0), Some(&1), "the unknown API's 404");
    env.gw.stop().await;
}

#[tokio::test]
async fn every_answer_on_a_tenants_path_is_logged_fast_engine() {
    every_answer_is_logged(Engine::Fast).await;
}

#[tokio::test]
async fn every_answer_on_a_tenants_path_is_logged_hyper_engine() {
    every_answer_is_logged(Engine::Hyper).await;
}

/// The exact `q`-quantile of `values` by nearest rank.
fn exact(values: &mut [i64], q: f64) -> f64 {
    values.sort_unstable();
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    #[allow(clippy::cast_precision_loss)]
    let v = values[rank - 1] as f64;
    v
}

#[tokio::test]
async fn percentiles_from_histograms_are_within_the_stated_bound_of_the_exact_ones() {
    let env = TestEnv::new().await;
    // An upstream that sleeps 1 to 120 ms: a spread the buckets must follow.
    let mut calls = Vec::new();
    for ms in 1..=120 {
        let path = env.fx.path(&format!("/slow/{ms}"));
        let gw = &env.gw;
        let key = env.fx.key.clone();
        calls.push(async move { gw.get(&path, &key).await.status() });
    }
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200);
    }
    let gw = &env.gw.gateway;
    let db = &env.db.db;
    // Every request's finish phase has run once its record is written (usage is counted in the
    // same step, just before): then the usage flush has them all.
    let started = Instant::now();
    while store::request_log::count(db, Some(env.fx.tenant.id))
        .await
        .unwrap()
        < 120
    {
        assert!(gw.request_log.flush(env.clock.now_ms()).await);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "records missing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gw.usage.flush().await.db_ok);
    let records = list(
        db,
        &LogQuery {
            tenant_id: Some(env.fx.tenant.id),
            ..LogQuery::default()
        },
        None,
        1000,
    )
    .await
    .unwrap();
    assert_eq!(records.len(), 120);
    let mut latencies: Vec<i64> = records
        .iter()
        .map(|r| i64::try_from(r.detail().latency_us).unwrap())
        .collect();
    let minute = env.clock.now_ms() / 60_000 * 60;
    for res in [60, 3600, 86_400] {
        let q = TrafficQuery {
            tenant_id: Some(env.fx.tenant.id),
            resolution: res,
            from_s: minute / res * res,
            to_s: minute / res * res + res,
            ..TrafficQuery::default()
        };
        let merged: Merged = store::analytics::latencies(db, &q, GroupBy::All)
            .await
            .unwrap()
            .remove(&0)
            .unwrap();
        assert_eq!(merged.count(), 120);
        for p in [0.5, 0.95, 0.99] {
            let want = exact(&mut latencies, p);
            let got = merged.quantile_us(p).unwrap();
            assert!(
                (got - want).abs() <= want / 32.0 + 0.5,
                "p{p} at {res} s: {got} us from the histogram, {want} us exact"
            );
        }
    }
    env.gw.stop().await;
}

#[tokio::test]
async fn a_stalled_database_drops_records_counts_them_and_never_delays_a_request() {
    // A buffer of 20 records in all: the stall must overflow it.
    let env = TestEnv::with(EnvOptions {
        proxy: Some(ProxySettings {
            request_log_buffer: 20,
            workers: 1,
            request_log_flush_ms: 50,
            ..ProxySettings::default()
        }),
        ..EnvOptions::default()
    })
    .await;
    // Another connection holds SQLite's write lock (as a long migration or a backup would):
    // every write of the data plane waits for it.
    let locker = domain::db::connect_existing(&env.db.url).await.unwrap();
    let lock = locker.begin().await.unwrap();
    lock.execute_unprepared("UPDATE config_version SET version = version")
        .await
        .unwrap();
    let locked_at = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        let r = env.get("/items").await;
        assert_eq!(r.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    let metric =
        |name: &'static str| crate::helpers::metric_at(&env.gw.client, &env.gw.address, name);
    let dropped = metric("gateway_request_log_dropped_total").await;
    assert!(dropped >= 60, "dropped {dropped} of 100 with room for 20");
    // A request that waited for the database would have waited for its lock (held all along).
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?} while the database was locked for {:?}",
        locked_at.elapsed()
    );
    lock.rollback().await.unwrap();
    // Once the database answers again, every record is either written or counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let written = store::request_log::count(&env.db.db, Some(env.fx.tenant.id))
            .await
            .unwrap();
        let dropped = metric("gateway_request_log_dropped_total").await;
        if i64::try_from(written).unwrap() + dropped == 100 {
            assert!(written > 0, "what was kept is written");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{written} written and {dropped} dropped of 100"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.gw.stop().await;
}

#[tokio::test]
async fn records_still_buffered_are_written_at_a_graceful_stop() {
    // A flush period longer than the test: only the stop writes them.
    let env = TestEnv::with(EnvOptions {
        proxy: Some(ProxySettings {
            request_log_flush_ms: 60_000,
            ..ProxySettings::default()
        }),
        ..EnvOptions::default()
    })
    .await;
    for _ in 0..25 {
        assert_eq!(env.get("/items").await.status(), 200);
    }
    let (db, tenant) = (env.db.db.clone(), env.fx.tenant.id);
    env.gw.stop().await;
    assert_eq!(
        store::request_log::count(&db, Some(tenant)).await.unwrap(),
        25
    );
}

#[tokio::test]
async fn with_the_log_off_nothing_is_logged_and_analytics_still_count() {
    let env = TestEnv::with(EnvOptions {
        proxy: Some(ProxySettings {
            request_log: domain::request_log::LogSwitch::Off,
            ..ProxySettings::default()
        }),
        ..EnvOptions::default()
    })
    .await;
    for _ in 0..5 {
        assert_eq!(env.get("/items").await.status(), 200);
    }
    let (db, tenant) = (env.db.db.clone(), env.fx.tenant.id);
    let minute = env.clock.now_ms() / 60_000 * 60;
    env.gw.stop().await;
    assert_eq!(store::request_log::count(&db, None).await.unwrap(), 0);
    let q = TrafficQuery {
        tenant_id: Some(tenant),
        resolution: 60,
        from_s: minute,
        to_s: minute + 60,
        ..TrafficQuery::default()
    };
    let all = store::analytics::sums(&db, &q, GroupBy::All).await.unwrap();
    assert_eq!(all[0].1.requests, 5);
}

#[tokio::test]
async fn the_writer_prunes_records_past_the_retention() {
    let env = TestEnv::new().await;
    let now = env.clock.now_ms();
    let old = |days: i64, rid: &str| {
        domain::testing::record(env.fx.tenant.id, now - days * 86_400_000, rid)
    };
    store::request_log::RequestLogWriter::default()
        .insert(&env.db.db, &[old(8, "eight-days"), old(6, "six-days")])
        .await
        .unwrap();
    // The default retention is 7 days, by the gateway's clock. (The writer also prunes on its
    // own, at its first flush and every ten minutes: it may have been first.)
    let pruned = env.gw.gateway.request_log.prune_now(now).await.unwrap();
    assert!(pruned <= 1);
    let left = list(&env.db.db, &LogQuery::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        left.iter()
            .map(|r| r.request_id.as_str())
            .collect::<Vec<_>>(),
        ["six-days"]
    );
    env.gw.stop().await;
}
