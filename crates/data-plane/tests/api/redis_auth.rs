//! Authenticated and TLS Redis: a password (`redis://:password@…`) and an ACL user
//! (`redis://user:password@…`) are used; wrong or missing credentials stop the start with a
//! message naming the setting. `rediss://` (one server, and a cluster) with a private CA through
//! `GATEWAY_REDIS_CA`; an untrusted certificate stops the start naming that setting. Real
//! `redis-server`s on free ports, started by the test.

use domain::testing::{RedisCluster, RedisNode, TestDb};

use crate::helpers::{generous, limits, seed, settings_for, spawn_gateway};

/// A `redis-server` with `requirepass secret` and the ACL user `gw` (password `gw-pass`), or
/// `None` without `redis-server` outside CI.
async fn protected_redis() -> Option<RedisNode> {
    RedisNode::start(&[
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
    .await
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

/// A private CA and a certificate it signed for 127.0.0.1, as PEM files in a temporary directory:
/// `(dir, ca.pem, server.pem, server.key)`.
fn private_ca() -> (tempfile::TempDir, String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Gateway test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca, cert, key) = (
        write("ca.pem", ca.pem()),
        write("server.pem", server.pem()),
        write("server.key", key.serialize_pem()),
    );
    (dir, ca, cert, key)
}

/// `redis-server` arguments serving TLS only, on the node's port, with `cert`/`key`, trusting
/// `ca` for the cluster bus and replication.
fn tls_args<'a>(ca: &'a str, cert: &'a str, key: &'a str) -> Vec<&'a str> {
    vec![
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        cert,
        "--tls-key-file",
        key,
        "--tls-ca-cert-file",
        ca,
        "--tls-auth-clients",
        "no",
    ]
}

/// Settings on `url` trusting the CA at `ca` (when given).
fn tls_settings(db: &str, url: String, ca: Option<&str>) -> data_plane::DataPlaneSettings {
    let mut s = settings_for(db, Some(&(url, domain::testing::unique_name("gwtls"))));
    s.shared.redis_ca = ca.map(std::path::PathBuf::from);
    s
}

#[tokio::test]
async fn a_tls_redis_signed_by_a_private_ca_is_used_once_that_ca_is_set() {
    let (_dir, ca, cert, key) = private_ca();
    let Some(redis) = RedisNode::start(&tls_args(&ca, &cert, &key)).await else {
        return;
    };
    let upstream = crate::upstream::spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(
        &db.db,
        "acme",
        &upstream.url(""),
        limits(1, Some(3), None, None),
    )
    .await;
    let url = format!("rediss://127.0.0.1:{}/", redis.port);

    // Without the CA: Redis's certificate is not trusted, and the start says what to set.
    let err = data_plane::Application::build(tls_settings(&db.url, url.clone(), None))
        .await
        .err()
        .expect("the start went on with an untrusted Redis certificate");
    let msg = err.to_string();
    assert!(msg.contains("GATEWAY_REDIS_CA"), "{msg}");
    // A CA for a URL that is not TLS, or a file that is not there: named.
    let plain = format!("redis://127.0.0.1:{}/", redis.port);
    for (url, ca, what) in [
        (plain, ca.as_str(), "not a TLS one"),
        (url.clone(), "/nonexistent/ca.pem", "cannot read"),
        (
            url.clone(),
            cert.as_str().trim_end_matches(".pem"),
            "cannot read",
        ),
    ] {
        let err = data_plane::Application::build(tls_settings(&db.url, url, Some(ca)))
            .await
            .err()
            .expect("a wrong CA setting was taken");
        let msg = err.to_string();
        assert!(
            msg.contains("GATEWAY_REDIS_CA") && msg.contains(what),
            "{msg}"
        );
    }

    // With it: limits are decided through Redis over TLS (a burst of 3, then 429).
    let gw = spawn_gateway(tls_settings(&db.url, url, Some(&ca)), None).await;
    let body = gw.get("/health/ready", &fx.key).await.text().await.unwrap();
    assert!(body.contains("\"redis\":\"up\""), "{body}");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(gw.get(&fx.path("/x"), &fx.key).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // The counter is in that Redis (asked over TLS, trusting the CA).
    let keys = std::process::Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            &ca,
            "-p",
            &redis.port.to_string(),
            "dbsize",
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(keys.trim().parse::<u64>().unwrap_or(0) > 0, "{keys}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_redis_cluster_with_a_private_ca_holds_exact_limits() {
    let (_dir, ca, cert, key) = private_ca();
    let mut node_args = tls_args(&ca, &cert, &key);
    node_args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"]);
    let Some(cluster) =
        RedisCluster::start_with(3, 0, &node_args, &["--tls", "--cacert", &ca]).await
    else {
        return;
    };
    let upstream = crate::upstream::spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(
        &db.db,
        "acme",
        &upstream.url(""),
        limits(1, Some(20), None, None),
    )
    .await;
    assert!(cluster.url().starts_with("rediss+cluster://"));
    let gw = spawn_gateway(tls_settings(&db.url, cluster.url(), Some(&ca)), None).await;
    let statuses = futures_util::future::join_all(
        (0..60).map(|_| async { gw.get(&fx.path("/x"), &fx.key).await.status().as_u16() }),
    )
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        40,
        "{statuses:?}"
    );
    gw.stop().await;
}
