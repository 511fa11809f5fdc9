//! Two data-plane processes on a Redis the test slows, stalls and restarts: strict limits hold
//! within their documented bound while Redis does not answer, the day counter equals what was
//! admitted once it answers again, and a Redis that lost its state does not reset a day quota.

use std::time::{Duration, Instant};

use domain::limits::Subject;
use domain::sea_orm::EntityTrait;
use domain::testing::{TestDb, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::failover::PrivateRedis;
use crate::helpers::{Fixture, limits, metric_at, seed_with, until_deciding_on_redis};
use crate::process::Proc;
use crate::upstream::spawn_upstream;
use domain::plan::Enforcement;

/// Plan of the tests: 50 a minute (burst 50) and 50 a day, strict.
const LIMIT: u64 = 50;

struct Nodes {
    procs: Vec<Proc>,
    client: reqwest::Client,
    fx: Fixture,
    db: TestDb,
    prefix: String,
}

impl Nodes {
    async fn start(redis_url: &str) -> Self {
        Self::start_with(redis_url, Enforcement::Strict).await
    }

    async fn start_with(redis_url: &str, mode: Enforcement) -> Self {
        let upstream = spawn_upstream().await;
        let db = TestDb::sqlite().await;
        let l = i64::try_from(LIMIT).unwrap();
        let plan = limits(l, Some(l), Some(l), None);
        let fx = seed_with(&db.db, "out", &upstream.url(""), plan, mode).await;
        let prefix = unique_name("gwtest");
        let redis = (redis_url.to_owned(), prefix.clone());
        // The default Redis timeout: what the bound holds under.
        let env = [("GATEWAY_REDIS_TIMEOUT_MS", "250")];
        let procs = vec![
            Proc::spawn(&db.url, Some(&redis), &env),
            Proc::spawn(&db.url, Some(&redis), &env),
        ];
        let nodes = Self {
            procs,
            client: reqwest::Client::new(),
            fx,
            db,
            prefix,
        };
        nodes.until_counted(2).await;
        nodes
    }

    /// Waits until both nodes count two live data planes (their heartbeats).
    async fn until_counted(&self, n: i64) {
        let started = Instant::now();
        for p in &self.procs {
            loop {
                if metric_at(&self.client, &p.address, "gateway_data_planes").await == n {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "never counted {n} nodes"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn call(&self, node: usize) -> u16 {
        self.client
            .get(format!(
                "{}{}",
                self.procs[node].address,
                self.fx.path("/x")
            ))
            .header("x-api-key", &self.fx.key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn until_redis_up(&self) {
        for p in &self.procs {
            until_deciding_on_redis(&self.client, &p.address, Duration::from_secs(20)).await;
        }
    }

    /// The day count Redis holds for the fixture's key.
    async fn day_counter(&self, redis_url: &str) -> u64 {
        let pool = domain::limits::redis::pool(redis_url).unwrap();
        let mut conn = pool.get().await.unwrap();
        let key = Subject::Key {
            tenant_id: self.fx.tenant.id,
            key_id: self.fx.key_id,
        }
        .redis_key(&self.prefix);
        let state: Vec<u8> = ::redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(state.len(), 48, "the packed state");
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let count = f64::from_le_bytes(state[16..24].try_into().unwrap()) as u64;
        count
    }

    /// Sends `per_node` requests to each node, one at a time per node, `pace` apart; calls
    /// `at(admitted_so_far)` after each answer. Returns how many were admitted.
    async fn fire(&self, per_node: usize, pace: Duration, mut at: impl FnMut(usize)) -> usize {
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        let node = |i: usize| {
            let admitted = &admitted;
            async move {
                let mut tick = tokio::time::interval(pace);
                for _ in 0..per_node {
                    tick.tick().await;
                    match self.call(i).await {
                        200 => {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        429 => {}
                        other => panic!("node {i} answered {other}"),
                    }
                }
            }
        };
        let both = futures_util::future::join(node(0), node(1));
        tokio::pin!(both);
        // Watch the count while the nodes are fired at.
        loop {
            tokio::select! {
                _ = &mut both => break,
                () = tokio::time::sleep(Duration::from_millis(5)) => {
                    at(admitted.load(std::sync::atomic::Ordering::SeqCst));
                }
            }
        }
        admitted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Copies `from` to `to`, holding each chunk `delay` first.
async fn pass_slowly(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    delay: Duration,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP proxy in front of Redis's socket that holds every chunk `delay` before passing it on:
/// a Redis answering slower than usual, never stopping.
async fn delaying_proxy(socket: std::path::PathBuf, delay: Duration) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let Ok(server) = tokio::net::UnixStream::connect(&socket).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pass_slowly(cr, sw, delay));
            tokio::spawn(pass_slowly(sr, cw, delay));
        }
    });
    format!("redis://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_30_ms_slow_is_no_outage_and_the_limit_is_exact() {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let url = delaying_proxy(redis.socket().clone(), Duration::from_millis(30)).await;
    let nodes = Nodes::start(&url).await;
    let admitted = nodes.fire(60, Duration::from_millis(5), |_| {}).await;
    assert_eq!(admitted, 50, "exactly the day's 50 over two nodes");
    assert_eq!(nodes.day_counter(&url).await, 50);
    for p in &nodes.procs {
        // Never judged down. (A new connection's set-up takes several round trips, so a node's
        // first request may be slower than the timeout: decided locally and accounted, as the
        // exact count above shows.)
        assert_eq!(
            metric_at(&nodes.client, &p.address, "gateway_redis_up").await,
            1
        );
        let fallbacks = metric_at(
            &nodes.client,
            &p.address,
            "gateway_limiter_fallback_requests",
        )
        .await;
        assert!(
            fallbacks <= 1,
            "a slow Redis taken for a down one: {fallbacks}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_for_3_s_strict_stays_within_the_bound_and_the_day_counter_is_exact() {
    stopped_for_3_s(Enforcement::Strict).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_for_3_s_fast_mode_stays_within_the_bound_too() {
    stopped_for_3_s(Enforcement::Fast).await;
}

async fn stopped_for_3_s(mode: Enforcement) {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let url = redis.url();
    let nodes = Nodes::start_with(&url, mode).await;
    let mut stopped = None;
    let mut resumed = false;
    let admitted = nodes
        .fire(120, Duration::from_millis(40), |so_far| {
            // Stop Redis with 20 of the 50 admitted; resume it 3 s later.
            if stopped.is_none() && so_far >= 20 {
                redis.signal("STOP");
                stopped = Some(Instant::now());
            }
            if !resumed && stopped.is_some_and(|t| t.elapsed() >= Duration::from_secs(3)) {
                redis.signal("CONT");
                resumed = true;
            }
        })
        .await;
    assert!(resumed, "the run outlasted the stop");
    eprintln!("{mode:?}: admitted over a 3 s Redis stop: {admitted}");
    // The documented bound: what the window had left when Redis stopped answering, plus what
    // the other node admitted after a node's last look at it (here at most a request or two).
    assert!(
        admitted <= 52,
        "{mode:?}: admitted {admitted} against a day quota of 50"
    );
    assert!(admitted >= 45, "the nodes kept serving: {admitted}");
    nodes.until_redis_up().await;
    // Once Redis answers again, what the nodes admitted on their own is added to it.
    let started = Instant::now();
    loop {
        let counted = nodes.day_counter(&url).await;
        if counted == u64::try_from(admitted).unwrap() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "Redis counts {counted}, the nodes admitted {admitted}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it holds: nothing more today.
    for node in 0..2 {
        assert_eq!(
            nodes.call(node).await,
            if admitted < 50 { 200 } else { 429 }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_without_persistence_does_not_reset_a_day_quota() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let url = redis.url();
    let nodes = Nodes::start(&url).await;
    let first = nodes.fire(15, Duration::from_millis(1), |_| {}).await;
    assert_eq!(first, 30);
    // The usage reaches the database (each node flushes every second).
    let started = Instant::now();
    loop {
        let rows = domain::entities::usage_rollup::Entity::find()
            .all(&nodes.db.db)
            .await
            .unwrap();
        if rows.iter().map(|r| r.requests).sum::<i64>() >= 30 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "usage never flushed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Redis restarts empty.
    redis.kill();
    redis.restart();
    let second = nodes.fire(20, Duration::from_millis(1), |_| {}).await;
    assert_eq!(second, 20, "the day had 20 left, not a fresh 50");
    assert_eq!(nodes.day_counter(&url).await, 50);
}
