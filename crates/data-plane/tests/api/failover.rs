//! Redis killed or stalled mid-test: the gateway keeps serving with in-process limits, says so in
//! `/health/ready` and `/metrics`, and returns to Redis by itself; fail-closed answers 503 instead.
//! Each test runs its own redis-server on a Unix socket, so killing it disturbs no other test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use data_plane::config::ProxySettings;
use domain::testing::{required_env, unique_name};
use serde_json::Value;

use crate::helpers::{TestEnv, TestGateway, limits, seed, settings_for, spawn_gateway};
use crate::upstream::spawn_upstream;

pub struct PrivateRedis {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts redis-server when the Redis tests are enabled (`TEST_REDIS_URL` set).
    pub fn start() -> Option<Self> {
        required_env("TEST_REDIS_URL")?;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let child = Self::spawn(&socket);
        Some(Self {
            child,
            socket,
            _dir: dir,
        })
    }

    pub fn socket(&self) -> &PathBuf {
        &self.socket
    }

    fn spawn(socket: &PathBuf) -> Child {
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the Redis tests");
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let _ = std::fs::remove_file(&self.socket);
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{sig}"), &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.socket);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ready(gw: &TestGateway) -> (u16, Value) {
    let resp = gw.client.get(gw.url("/health/ready")).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn metric(gw: &TestGateway, name: &str) -> i64 {
    crate::helpers::metric_at(&gw.client, &gw.address, name).await
}

async fn until_redis(gw: &TestGateway, state: &str) {
    let started = Instant::now();
    loop {
        let body = ready(gw).await.1;
        // Back up: also settled (no more capped by its outage share).
        if body["redis"] == state && (state != "up" || body["limiter"] == "redis") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis never became {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn env_on(redis: &PrivateRedis, proxy: ProxySettings) -> (TestEnv, TestGateway) {
    let env = TestEnv::new().await;
    let fx2 = seed(
        &env.db.db,
        "beta",
        &env.upstream.url(""),
        limits(1, Some(3), None, None),
    )
    .await;
    let mut settings = settings_for(&env.db.url, Some(&(redis.url(), unique_name("gwtest"))));
    settings.proxy = proxy;
    let gw = spawn_gateway(settings, None).await;
    assert_eq!(gw.get(&fx2.path("/x"), &fx2.key).await.status(), 200);
    // Keep the second fixture reachable through the env's fixture slot for the caller.
    let mut env = env;
    env.fx = fx2;
    (env, gw)
}

async fn env_answering_within(redis: &PrivateRedis, timeout_ms: u64) -> (TestEnv, TestGateway) {
    let proxy = ProxySettings {
        redis_timeout_ms: timeout_ms,
        ..ProxySettings::default()
    };
    env_on(redis, proxy).await
}

#[tokio::test]
async fn redis_killed_mid_test_falls_back_to_local_limits_and_comes_back() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let (env, gw) = env_answering_within(&redis, 200).await;
    let path = env.fx.path("/x");
    assert_eq!(ready(&gw).await.1["redis"], "up");
    assert_eq!(gw.get(&path, &env.fx.key).await.status(), 200);
    assert_eq!(metric(&gw, "gateway_redis_up").await, 1);

    redis.kill();
    // Still serving, now limited in process from what Redis last said: 1 of the burst of 3 left
    // (this node is the only one).
    assert_eq!(gw.get(&path, &env.fx.key).await.status(), 200);
    assert_eq!(
        gw.get(&path, &env.fx.key).await.status(),
        429,
        "limits still hold while Redis is down, and do not start over"
    );
    let (status, body) = ready(&gw).await;
    assert_eq!(status, 200, "fail-open: still ready");
    assert_eq!(
        (body["redis"].as_str(), body["limiter"].as_str()),
        (Some("down"), Some("local"))
    );
    assert_eq!(metric(&gw, "gateway_redis_up").await, 0);
    assert!(metric(&gw, "gateway_limiter_fallback_requests").await >= 2);

    redis.restart();
    until_redis(&gw, "up").await;
    assert_eq!(ready(&gw).await.1["limiter"], "redis");
    // The restarted Redis is empty: a full bucket, counted there again.
    assert_eq!(gw.get(&path, &env.fx.key).await.status(), 200);
    assert_eq!(
        gw.get(&path, &env.fx.key).await.headers()["x-ratelimit-remaining-minute"],
        "1"
    );
}

#[tokio::test]
async fn a_stalled_redis_times_out_into_local_limits_after_three_slow_answers() {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let (env, gw) = env_answering_within(&redis, 50).await;
    let path = env.fx.path("/x");
    // SIGSTOP freezes the Redis server: connections stay open, answers stop coming.
    redis.signal("STOP");
    let started = Instant::now();
    assert_eq!(gw.get(&path, &env.fx.key).await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "a slow Redis must not stall requests"
    );
    assert_eq!(
        ready(&gw).await.1["redis"],
        "up",
        "one slow answer is no outage"
    );
    // The burst of 3 had 2 left: this node's share of them, then its share refills at the rate.
    assert_eq!(gw.get(&path, &env.fx.key).await.status(), 200);
    assert_eq!(gw.get(&path, &env.fx.key).await.status(), 429);
    assert_eq!(ready(&gw).await.1["redis"], "down", "three in a row are");
    let started = Instant::now();
    assert_eq!(
        gw.get(&path, &env.fx.key).await.status(),
        429,
        "still limited"
    );
    assert!(
        started.elapsed() < Duration::from_millis(40),
        "no timeout paid while down"
    );
    redis.signal("CONT");
    until_redis(&gw, "up").await;
}

/// A Redis slower than usual but within the configured timeout (here longer than redis-rs's own
/// 500 ms default) decides the request, and counts it once: the call is not abandoned mid-way and
/// sent again on another connection.
#[tokio::test]
async fn a_slow_redis_within_the_timeout_decides_and_counts_once() {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let (env, gw) = env_answering_within(&redis, 5_000).await;
    let path = env.fx.path("/x");
    // The fixture's burst of 3: env_on spent one.
    redis.signal("STOP");
    let started = Instant::now();
    // The fault: Redis answers again after 800 ms.
    let resume = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        redis.signal("CONT");
    };
    let (resp, ()) = tokio::join!(gw.get(&path, &env.fx.key), resume);
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "decided by Redis, so after it resumed"
    );
    assert_eq!(resp.headers()["x-ratelimit-remaining-minute"], "1");
    assert_eq!(
        ready(&gw).await.1["redis"],
        "up",
        "a slow answer is no outage"
    );
    assert_eq!(metric(&gw, "gateway_limiter_fallback_requests").await, 0);
    let last = gw.get(&path, &env.fx.key).await;
    assert_eq!(last.status(), 200, "the third of the burst of 3");
    assert_eq!(gw.get(&path, &env.fx.key).await.status(), 429);
}

#[tokio::test]
async fn fail_closed_refuses_with_503_while_redis_is_down() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let proxy = ProxySettings {
        redis_timeout_ms: 200,
        redis_fail_closed: true,
        ..ProxySettings::default()
    };
    let (env, gw) = env_on(&redis, proxy).await;
    let path = env.fx.path("/x");
    redis.kill();
    let resp = gw.get(&path, &env.fx.key).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "limiter_unavailable");
    assert_eq!(
        ready(&gw).await.0,
        503,
        "not ready while it refuses everything"
    );
    redis.restart();
    until_redis(&gw, "up").await;
    assert_eq!(gw.get(&path, &env.fx.key).await.status(), 200);
    let _ = spawn_upstream;
}

/// Redis restarted while the data plane was idle: the first request after it is still decided by
/// Redis (the closed connection is replaced, not reported as an outage).
#[tokio::test]
async fn a_redis_restart_between_requests_goes_unnoticed() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let proxy = ProxySettings {
        redis_timeout_ms: 2_000,
        redis_fail_closed: true,
        ..ProxySettings::default()
    };
    let (env, gw) = env_on(&redis, proxy).await;
    let path = env.fx.path("/x");
    assert_eq!(gw.get(&path, &env.fx.key).await.status(), 200);
    redis.kill();
    redis.restart();
    for _ in 0..3 {
        assert_eq!(gw.get(&path, &env.fx.key).await.status(), 200);
    }
    assert_eq!(metric(&gw, "gateway_redis_up").await, 1);
}
