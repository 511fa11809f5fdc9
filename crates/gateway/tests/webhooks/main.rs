//! Quota webhooks end to end: two data planes sharing Redis spend a key's day quota; the control
//! plane delivers exactly one signed `quota.warning` and one `quota.exhausted`, through a receiver
//! that fails twice first; every attempt is recorded.

// Test code fails loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use control_plane::ControlPlaneSettings;
use control_plane::config::DashboardSettings;
use data_plane::config::{DataPlaneSettings, ProxySettings};
use domain::entities::{tenant, webhook_delivery, webhook_event};
use domain::header::{KeyHeader, UpstreamTimeout};
use domain::plan::{Enforcement, PlanLimits};
use domain::sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, IntoActiveModel};
use domain::settings::Settings;
use domain::slug::Slug;
use domain::store::{self, NewApi};
use domain::testing::{TestDb, redis_url, unique_name};
use domain::upstream::UpstreamUrl;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// What the receiver was sent: (event type header, signature header, body).
type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A webhook receiver on 127.0.0.1:0 that answers 500 to its first `fail` requests, then 200.
async fn receiver(fail: usize) -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let (kind, sig) = (h("x-gateway-event"), h("x-gateway-signature"));
                        let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                        let n = {
                            let mut seen = log.lock().unwrap();
                            seen.push((kind, sig, body));
                            seen.len()
                        };
                        let status = if n <= fail { 500 } else { 200 };
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn data_plane(shared: &Settings, db_url: &str) -> String {
    let dp = data_plane::Application::build(DataPlaneSettings {
        shared: shared.clone(),
        listen: DataPlaneSettings::for_tests(db_url).listen,
        proxy: ProxySettings {
            redis_timeout_ms: 2_000,
            ..ProxySettings::default()
        },
    })
    .await
    .unwrap();
    let url = format!("http://{}", dp.local_addr());
    tokio::spawn(dp.run_until_stopped());
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::too_many_lines)] // one story: set-up, spend, deliveries, checks
async fn one_signed_event_per_window_with_two_data_planes_through_a_flaky_receiver() {
    let Some(redis) = redis_url() else { return };
    let db = TestDb::sqlite().await;
    let upstream = gateway::demo::spawn_upstream("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (hook, seen) = receiver(2).await;

    // A tenant allowed loopback addresses (the receiver and the upstream are on 127.0.0.1), a
    // key whose plan holds 10 a day, an endpoint for both quota events.
    let owner = store::create_user(&db.db, "hooks", "hooks@example.com", "x", false)
        .await
        .unwrap();
    let t = store::create_tenant(&db.db, "Hooks", &Slug::parse("hooks").unwrap(), owner.id)
        .await
        .unwrap();
    let mut trusted = t.clone().into_active_model();
    trusted.trusted_upstreams = Set(true);
    let _: tenant::Model = trusted.update(&db.db).await.unwrap();
    let limits = PlanLimits::new(1_000_000, None, Some(10), None).unwrap();
    let plan = store::create_plan(&db.db, t.id, "day", limits, Enforcement::Strict)
        .await
        .unwrap();
    store::create_api(
        &db.db,
        t.id,
        NewApi {
            name: "Svc".into(),
            slug: Slug::parse("svc").unwrap(),
            upstream_url: UpstreamUrl::parse(&format!("http://{upstream}")).unwrap(),
            key_header: KeyHeader::default(),
            timeout: UpstreamTimeout::default(),
            pass_encoded_slashes: false,
            log_query: false,
            auth: domain::jwt::ApiAuth::Key,
            identity_token: false,
            upstream_protocol: domain::header::UpstreamProtocol::default(),
            websocket_idle: domain::header::WebsocketIdle::default(),
        },
    )
    .await
    .unwrap();
    let (key, raw) = store::create_api_key(&db.db, t.id, plan.id, "k", None)
        .await
        .unwrap();
    let secret = "whsec_test_secret_0123456789";
    // Named, not an address: the delivery resolves `localhost` through the address policy at
    // connect time (a trusted tenant may reach loopback).
    store::create_webhook(
        &db.db,
        t.id,
        &format!("http://localhost:{}/gateway", hook.port()),
        &["quota.warning", "quota.exhausted"],
        secret,
    )
    .await
    .unwrap();

    let mut shared = Settings::for_tests(db.url.clone());
    shared.redis_url = Some(redis);
    shared.redis_prefix = unique_name("gwtest");
    shared.upstream_allow = vec!["127.0.0.0/8".parse().unwrap()];
    let a = data_plane(&shared, &db.url).await;
    let b = data_plane(&shared, &db.url).await;
    let cp = control_plane::Application::build(ControlPlaneSettings {
        shared: shared.clone(),
        listen: ControlPlaneSettings::for_tests(&db.url).listen,
        dashboard: DashboardSettings {
            webhook_retry_base_ms: 50,
            ..DashboardSettings::default()
        },
    })
    .await
    .unwrap();
    tokio::spawn(cp.run_until_stopped());

    // 60 concurrent requests through both data planes: exactly the day's 10 admitted.
    let client = reqwest::Client::new();
    let calls = (0..60).map(|i| {
        let url = format!("{}/hooks/svc/x", if i % 2 == 0 { &a } else { &b });
        let req = client.get(url).header("x-api-key", raw.expose());
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );

    // Both events delivered (the receiver failed the first two attempts).
    let started = Instant::now();
    loop {
        let rows = webhook_delivery::Entity::find().all(&db.db).await.unwrap();
        if rows.len() == 2 && rows.iter().all(|d| d.status == "delivered") {
            let attempts: i32 = rows.iter().map(|d| d.attempts).sum();
            assert_eq!(attempts, 4, "two failed attempts, then one each: {rows:?}");
            assert!(
                rows.iter()
                    .any(|d| d.attempts > 1 && d.last_status == Some(200))
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not delivered: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = webhook_event::Entity::find().all(&db.db).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.len(), 2, "one event per window and kind: {kinds:?}");
    assert!(kinds.contains(&"quota.warning") && kinds.contains(&"quota.exhausted"));

    // What arrived: each event's deliveries carry one id, are signed with the secret, and say
    // whose window it was.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "two failures and two deliveries");
    let mut ids = std::collections::HashMap::<String, String>::new();
    for (kind, sig, body) in &seen {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["type"], *kind);
        let id = v["id"].as_str().unwrap().to_owned();
        if let Some(before) = ids.insert(kind.clone(), id.clone()) {
            assert_eq!(before, id, "a retry carries the same event id");
        }
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(*sig, domain::webhook::signature(secret, t, body), "signed");
        assert!((chrono::Utc::now().timestamp() - t).abs() < 300);
        assert_eq!(v["data"]["key_id"], key.id);
        assert_eq!(v["data"]["window"], "day");
        assert_eq!(v["data"]["limit"], 10);
    }
    let exhausted = seen
        .iter()
        .find(|(k, _, _)| k == "quota.exhausted")
        .map(|(_, _, b)| serde_json::from_slice::<serde_json::Value>(b).unwrap())
        .unwrap();
    assert_eq!(exhausted["data"]["used"], 10);
}
