//! The in-process hot path of one request, without the network: parse the path, find tenant and
//! API in the snapshot, hash and look up the key, and decide the limits in process; and the fast
//! path's parse of a whole request head.
//! `cargo bench -p data-plane --bench hot_path`

// Bench set-up fails loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use data_plane::pipeline::{parse_target, parse_target_parts};
use domain::apikey::KeyHash;
use domain::header::{KeyHeader, UpstreamTimeout};
use domain::limits::local::LocalStore;
use domain::limits::{Params, Subject};
use domain::plan::{Enforcement, PlanLimits};
use domain::slug::Slug;
use domain::snapshot::Snapshot;
use domain::store::{self, NewApi};
use domain::upstream::UpstreamUrl;
use http::Uri;

const KEYS: usize = 10_000;

fn snapshot_with_keys() -> (Snapshot, String, tempfile::TempDir) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        );
        let db = domain::db::connect_and_migrate(&url).await.expect("db");
        let owner = store::create_user(&db, "bench", "b@example.com", "x", false)
            .await
            .expect("user");
        let tenant =
            store::create_tenant(&db, "Acme", &Slug::parse("acme").expect("slug"), owner.id)
                .await
                .expect("tenant");
        let limits =
            PlanLimits::new(1_000_000_000, None, Some(1_000_000_000), None).expect("limits");
        let plan = store::create_plan(&db, tenant.id, "p", limits, Enforcement::Strict)
            .await
            .expect("plan");
        let api = NewApi {
            name: "Weather".into(),
            slug: Slug::parse("weather").expect("slug"),
            upstream_url: UpstreamUrl::parse("http://127.0.0.1:9/v1").expect("url"),
            key_header: KeyHeader::default(),
            timeout: UpstreamTimeout::default(),
            pass_encoded_slashes: false,
            log_query: false,
            auth: domain::jwt::ApiAuth::Key,
            identity_token: false,
            upstream_protocol: domain::header::UpstreamProtocol::default(),
            websocket_idle: domain::header::WebsocketIdle::default(),
        };
        store::create_api(&db, tenant.id, api).await.expect("api");
        store::insert_generated_keys(&db, tenant.id, plan.id, KEYS - 1)
            .await
            .expect("keys");
        let (_, raw) = store::create_api_key(&db, tenant.id, plan.id, "k", None)
            .await
            .expect("key");
        let snap = Snapshot::load(&db).await.expect("snapshot");
        (snap, raw.expose().to_owned(), dir)
    })
}

fn hot_path(c: &mut Criterion) {
    let (snap, key, _dir) = snapshot_with_keys();
    let store = LocalStore::default();
    let uri: Uri = "/acme/weather/forecast/today?city=berlin&days=3"
        .parse()
        .expect("uri");
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut group = c.benchmark_group("hot_path");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("parse_lookup_hash_limit", |b| {
        b.iter(|| {
            let target = parse_target(&uri).expect("target");
            let tenant = snap.tenant(target.tenant).expect("tenant");
            let api = tenant.api(target.api).expect("api");
            let entry = snap.key(&KeyHash::of(&key)).expect("key");
            let plan = snap.plan(entry.plan_id).expect("plan");
            let subject = Subject::Key {
                tenant_id: tenant.id,
                key_id: entry.id,
            };
            let decision = store.check(subject, &Params::new(&plan.limits, now_ms));
            assert!(decision.allowed && api.is_active);
            decision
        });
    });
    // What the fast path does with a request head before authentication: parse it in place and
    // split out tenant, API and the rest of the path.
    let head = format!(
        "GET /acme/weather/forecast/today?city=berlin&days=3 HTTP/1.1\r\nHost: gw.example.com\r\n\
         User-Agent: bench/1.0\r\nAccept: application/json\r\nX-API-Key: {key}\r\n\r\n"
    );
    group.bench_function("request_head_parse", |b| {
        b.iter(|| {
            let mut storage = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut storage);
            let status = req
                .parse(std::hint::black_box(head.as_bytes()))
                .expect("head");
            let target = req.path.expect("path");
            let (path, query) = target
                .split_once('?')
                .map_or((target, None), |(p, q)| (p, Some(q)));
            let t = parse_target_parts(path, query).expect("target");
            (status.is_complete(), t.rest.len(), req.headers.len())
        });
    });
    group.bench_function("key_hash", |b| {
        b.iter(|| KeyHash::of(std::hint::black_box(&key)));
    });
    group.bench_function("local_limit_decision", |b| {
        let plan = snap
            .plan(snap.key(&KeyHash::of(&key)).expect("key").plan_id)
            .expect("plan");
        let subject = Subject::Key {
            tenant_id: 1,
            key_id: 1,
        };
        b.iter(|| store.check(subject, &Params::new(&plan.limits, now_ms)));
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
