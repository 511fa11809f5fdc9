//! Authenticated Redis: a password (`redis://:password@…`) and an ACL user
//! (`redis://user:password@…`) are used; wrong or missing credentials stop the start with a
//! message naming the setting. A real `redis-server` with `requirepass` and an ACL user, on a free
//! port, started by the test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use domain::testing::{TestDb, in_ci};

use crate::helpers::{generous, seed, settings_for, spawn_gateway};

/// A `redis-server` that needs a password, killed when dropped.
struct ProtectedRedis {
    child: Child,
    port: u16,
}

impl Drop for ProtectedRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts one with `requirepass secret` and the ACL user `gw` (password `gw-pass`), or `None`
/// without `redis-server` outside CI.
async fn protected_redis() -> Option<ProtectedRedis> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "secret",
            "--user",
            "gw",
            "on",
            ">gw-pass",
            "~*",
            "&*",
            "+@all",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if !in_ci() => {
            eprintln!("skipping: no redis-server ({e})");
            return None;
        }
        Err(e) => panic!("redis-server is needed in CI: {e}"),
    };
    let redis = ProtectedRedis { child, port };
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(redis)
}

#[tokio::test]
async fn redis_credentials_are_used_and_wrong_ones_stop_the_start_with_a_clear_message() {
    let Some(redis) = protected_redis().await else {
        return;
    };
    let db = TestDb::sqlite().await;
    let fx = seed(&db.db, "acme", "http://127.0.0.1:9/", generous()).await;
    let url = |creds: &str| format!("redis://{creds}127.0.0.1:{}/", redis.port);

    for (creds, what) in [
        (":wrong@", "a wrong password"),
        ("", "no password where one is required"),
        ("gw:nope@", "an ACL user's wrong password"),
        ("nobody:secret@", "an unknown ACL user"),
    ] {
        let settings = settings_for(&db.url, Some(&(url(creds), "gwauth".to_owned())));
        let err = data_plane::Application::build(settings)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: the start went on"));
        let msg = err.to_string();
        assert!(
            msg.contains("GATEWAY_REDIS_URL") && msg.contains("credentials"),
            "{what}: {msg}"
        );
    }

    // The right password, and the ACL user: limits are shared through that Redis.
    for creds in [":secret@", "gw:gw-pass@"] {
        let gw = spawn_gateway(
            settings_for(&db.url, Some(&(url(creds), "gwauth".to_owned()))),
            None,
        )
        .await;
        let resp = gw.get("/health/ready", &fx.key).await;
        let body = resp.text().await.unwrap();
        assert!(body.contains("\"redis\":\"up\""), "{creds}: {body}");
        gw.stop().await;
    }
}
