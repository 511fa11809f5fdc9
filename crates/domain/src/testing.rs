//! Test support shared by every crate's tests (feature `test-support`): a fresh database per test
//! on SQLite, and on PostgreSQL when `TEST_DATABASE_URL` is set; the Redis URL from
//! `TEST_REDIS_URL`. With `CI` set, a test that needs PostgreSQL or Redis fails when the variable
//! is missing instead of skipping.

// Test support fails loudly by design: a test without its database is a failed test.
#![allow(clippy::expect_used, clippy::missing_panics_doc, clippy::print_stderr)]

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tempfile::TempDir;

use crate::db;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A migrated database that exists for one test and is removed afterwards.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub db: DatabaseConnection,
    _dir: Option<TempDir>,
    pg_drop: Option<(String, String)>,
}

/// Whether `CI` is set (to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Reads a `TEST_*` URL; `None` (skip) outside CI when unset, a panic in CI when unset.
pub fn required_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if in_ci() => panic!("{var} must be set when CI is set: this test needs it"),
        _ => {
            eprintln!("skipping the part of this test that needs {var} (unset)");
            None
        }
    }
}

/// The Redis URL for tests, see [`required_env`].
pub fn redis_url() -> Option<String> {
    required_env("TEST_REDIS_URL")
}

/// A random name for isolating a test's keys, databases and the like.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

impl TestDb {
    /// A fresh, migrated SQLite database in a temporary directory.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        let db = db::connect_and_migrate(&url).await.expect("sqlite migrate");
        Self {
            backend: Backend::Sqlite,
            url,
            db,
            _dir: Some(dir),
            pg_drop: None,
        }
    }

    /// A fresh, migrated PostgreSQL database, created next to `TEST_DATABASE_URL`'s.
    pub async fn postgres() -> Option<Self> {
        let admin_url = required_env("TEST_DATABASE_URL")?;
        Some(Self::postgres_from(&admin_url, true).await)
    }

    /// A fresh PostgreSQL database, migrated or empty.
    pub async fn postgres_from(admin_url: &str, migrate: bool) -> Self {
        let name = unique_name("gw_test_");
        let admin = Database::connect(admin_url)
            .await
            .expect("connect TEST_DATABASE_URL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = replace_db_name(admin_url, &name);
        let db = if migrate {
            db::connect_and_migrate(&url)
                .await
                .expect("postgres migrate")
        } else {
            db::connect(&url).await.expect("postgres connect")
        };
        Self {
            backend: Backend::Postgres,
            url,
            db,
            _dir: None,
            pg_drop: Some((admin_url.to_owned(), name)),
        }
    }

    /// An empty (unmigrated) SQLite database, for migration tests.
    pub async fn sqlite_empty() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        let db = db::connect(&url).await.expect("sqlite connect");
        Self {
            backend: Backend::Sqlite,
            url,
            db,
            _dir: Some(dir),
            pg_drop: None,
        }
    }

    /// SQLite always, plus PostgreSQL when configured: tests loop over these.
    pub async fn all() -> Vec<Self> {
        let mut dbs = vec![Self::sqlite().await];
        dbs.extend(Self::postgres().await);
        dbs
    }
}

/// `postgres://u@h:5432/old?x=y` -> `postgres://u@h:5432/{name}?x=y`.
fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.pg_drop.take() else {
            return;
        };
        // Async drop does not exist: a short-lived runtime on its own thread drops the database.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(admin) = Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            }
        })
        .join();
    }
}

/// The flags of a binary's `--help`, each checked to be named after the `GATEWAY_*` variable that
/// sets it (`--data-plane-addr` for `GATEWAY_DATA_PLANE_ADDR`).
pub fn help_flags(binary: &str) -> Vec<String> {
    let out = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    // Each option: its `--flag` line and the lines after it, up to the next option; the
    // variable is in its `[env: GATEWAY_...]` (on the flag's line or a later one).
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("--") {
            let flag = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            entries.push((flag, String::new()));
        } else if let Some((_, text)) = entries.last_mut() {
            text.push_str(t);
            text.push(' ');
        }
    }
    let mut flags = Vec::new();
    for (flag, text) in entries {
        let Some(at) = text.find("[env: ") else {
            continue;
        };
        let var: String = text[at + 6..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        let expected = var
            .trim_start_matches("GATEWAY_")
            .to_ascii_lowercase()
            .replace('_', "-");
        assert_eq!(flag, expected, "--{flag} is set by {var}");
        flags.push(flag);
    }
    flags
}

/// A tenant `slug` (and its owner) in `db`: its id.
pub async fn tenant(db: &sea_orm::DatabaseConnection, slug: &str) -> i64 {
    let owner = crate::store::create_user(db, slug, &format!("{slug}@example.com"), "x", false)
        .await
        .expect("owner");
    crate::store::create_tenant(
        db,
        slug,
        &crate::slug::Slug::parse(slug).expect("slug"),
        owner.id,
    )
    .await
    .expect("tenant")
    .id
}

/// Traffic of `hits` (status, latency in ms), as a data plane counts it: a 429 is rate-limited,
/// a 502 or above an upstream error, 5 bytes in and 50 out each.
pub fn traffic(hits: &[(u16, u64)]) -> crate::analytics::Stats {
    let mut s = crate::analytics::Stats::default();
    for (status, ms) in hits {
        s.count(&crate::analytics::Hit {
            status: *status,
            rate_limited: *status == 429,
            upstream_error: *status >= 502,
            bytes_in: 5,
            bytes_out: 50,
            latency_us: ms * 1000,
        });
    }
    s
}

/// A request log record of tenant `tenant_id` at `ts_ms` with request id `rid` (sent by the
/// caller): a 200 to `GET /t/api/x` from 127.0.0.1 in 1.5 ms; callers set what they need.
pub fn record(tenant_id: i64, ts_ms: i64, rid: &str) -> crate::request_log::Record {
    crate::request_log::Record {
        ts_ms,
        tenant_id,
        request_id: rid.to_owned(),
        api_id: 0,
        route_id: 0,
        key_id: 0,
        key_prefix: None,
        client_row_id: 0,
        client_id: None,
        method: "GET".into(),
        path: "/t/api/x".into(),
        status: 200,
        latency_us: 1500,
        upstream_latency_us: None,
        bytes_in: 0,
        bytes_out: 0,
        target_id: 0,
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        flags: crate::request_log::flags::REQUEST_ID_GIVEN,
        error_type: None,
    }
}

/// The claims of a token for key `key_id` of tenant `tenant` issued by `iss` at `now` (seconds),
/// living `lifetime` seconds: what a data plane mints, for tests that sign their own.
pub fn token_claims(
    iss: &str,
    key_id: i64,
    tenant: &str,
    now: i64,
    lifetime: i64,
) -> crate::jwt::Claims {
    crate::jwt::Claims {
        iss: iss.into(),
        sub: key_id.to_string(),
        tenant: tenant.into(),
        plan: None,
        client: None,
        api: None,
        request_id: None,
        iat: now,
        nbf: now,
        exp: now + lifetime,
        jti: crate::jwt::new_jti(),
    }
}

/// A loopback port that is free, and whose cluster-bus port (+10000) is free too.
fn free_node_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = l.local_addr().expect("local address").port();
        if port <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// One `redis-server` of a test's own, killed when dropped.
pub struct RedisNode {
    pub port: u16,
    child: Option<std::process::Child>,
    args: Vec<String>,
}

impl RedisNode {
    /// `redis-server` on a free loopback port with `args` besides port, bind and no persistence
    /// (`{port}` in them is that port: `--port 0 --tls-port {port}` serves TLS on it); `None`
    /// outside CI when there is no `redis-server` (a panic in CI).
    pub async fn start(args: &[&str]) -> Option<Self> {
        let port = free_node_port();
        let mut node = Self {
            port,
            child: None,
            args: args
                .iter()
                .map(|a| a.replace("{port}", &port.to_string()))
                .collect(),
        };
        match node.spawn() {
            Ok(()) => {}
            Err(e) if !in_ci() => {
                eprintln!("skipping: no redis-server ({e})");
                return None;
            }
            Err(e) => panic!("redis-server is needed in CI: {e}"),
        }
        node.wait_listening().await;
        Some(node)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let port = self.port.to_string();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_listening(&self) {
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "redis-server on port {} did not start",
                self.port
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same arguments (after [`RedisNode::kill`]).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().expect("restart redis-server");
        self.wait_listening().await;
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Redis Cluster on loopback (`redis-server --cluster-enabled yes` per node, joined by
/// `redis-cli --cluster create`), removed when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
    pub masters: usize,
    /// What every `redis-cli` of it needs (TLS options).
    cli_args: Vec<String>,
    _dir: TempDir,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each, the cluster up (every slot served) when
    /// this returns; `None` outside CI without `redis-server` (a panic in CI).
    pub async fn start(masters: usize, replicas: usize) -> Option<Self> {
        Self::start_with(masters, replicas, &[], &[]).await
    }

    /// [`RedisCluster::start`] with `node_args` for every `redis-server` (see [`RedisNode::start`])
    /// and `cli_args` for every `redis-cli` (`--tls --cacert …` for a TLS cluster).
    pub async fn start_with(
        masters: usize,
        replicas: usize,
        node_args: &[&str],
        cli_args: &[&str],
    ) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for i in 0..masters * (1 + replicas) {
            let conf = dir.path().join(format!("nodes-{i}.conf"));
            let conf = conf.display().to_string();
            let dir = dir.path().display().to_string();
            let mut args = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "1000",
                // Replicas sync at once (not after 5 s waiting for more of them).
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
                &dir,
            ];
            args.extend_from_slice(node_args);
            let node = RedisNode::start(&args).await?;
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = std::process::Command::new("redis-cli")
            .args(cli_args)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is needed to create a Redis Cluster");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self {
            nodes,
            masters,
            cli_args: cli_args.iter().map(|a| (*a).to_owned()).collect(),
            _dir: dir,
        };
        cluster.wait_ok().await;
        Some(cluster)
    }

    /// The gateway's URL of this cluster (every node a seed; `rediss+cluster://` when its
    /// `redis-cli` speaks TLS).
    pub fn url(&self) -> String {
        let scheme = if self.cli_args.iter().any(|a| a == "--tls") {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("{scheme}://{}/", seeds.join(","))
    }

    /// `redis-cli -p port args…`'s output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(&self.cli_args)
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until every live node says `cluster_state:ok` (all slots served).
    pub async fn wait_ok(&self) {
        let started = std::time::Instant::now();
        loop {
            let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                self.cli(n.port, &["cluster", "info"])
                    .contains("cluster_state:ok")
            });
            if ok {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the Redis Cluster did not come up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits until the replicas of the master `master` (an index in [`RedisCluster::nodes`]) have
    /// every write it took so far.
    pub async fn wait_replicated(&self, master: usize) {
        let started = std::time::Instant::now();
        loop {
            let info = self.cli(self.nodes[master].port, &["info", "replication"]);
            let offset: i64 = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(i64::MAX);
            // `slave0:ip=…,port=…,state=online,offset=…,lag=…`
            let replicas: Vec<i64> = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("offset="))
                .filter_map(|l| {
                    l.split(',')
                        .find_map(|f| f.strip_prefix("offset="))
                        .and_then(|v| v.trim().parse().ok())
                })
                .collect();
            if !replicas.is_empty() && replicas.iter().all(|o| *o >= offset) {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the replicas did not catch up: {info}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Index in [`RedisCluster::nodes`] of the node that is master of `key`'s slot now (`None`
    /// while a failed master's replica is not promoted yet).
    pub fn master_of(&self, key: &str) -> Option<usize> {
        let port = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node")
            .port;
        let slot: u16 = self
            .cli(port, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        // `CLUSTER NODES` lines: id addr flags master ping pong epoch link slot-ranges….
        let nodes = self.cli(port, &["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags: Vec<&str> = fields.get(2).map_or(vec![], |f| f.split(',').collect());
            if fields.len() < 9 || !flags.contains(&"master") || flags.contains(&"fail") {
                continue;
            }
            let owns = fields[8..].iter().any(|r| {
                let mut it = r.split('-');
                let lo: u16 = it.next().and_then(|v| v.parse().ok()).unwrap_or(u16::MAX);
                let hi: u16 = it.next().and_then(|v| v.parse().ok()).unwrap_or(lo);
                (lo..=hi).contains(&slot)
            });
            if owns {
                let port: u16 = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .expect("node address");
                return self.nodes.iter().position(|n| n.port == port);
            }
        }
        None
    }
}

/// A TCP relay on a free loopback port to `target` that the test can cut: while cut, every
/// relayed connection is reset and the port refuses connections — what a client sees of a server
/// that stopped (PostgreSQL down) — until it is opened again on the same port.
pub struct TcpGate {
    pub port: u16,
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpGate {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gate");
        let port = first.local_addr().expect("local address").port();
        let (open, _) = tokio::sync::watch::channel(true);
        let open = std::sync::Arc::new(open);
        let gate = open.clone();
        let task = tokio::spawn(async move {
            let mut state = gate.subscribe();
            let mut listener = Some(first);
            loop {
                let l = if let Some(l) = listener.take() {
                    l
                } else {
                    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
                    socket
                        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                        .expect("bind the gate's port again");
                    socket.listen(1024).expect("listen")
                };
                loop {
                    tokio::select! {
                        r = l.accept() => {
                            let Ok((client, _)) = r else { break };
                            tokio::spawn(relay(client, target, gate.subscribe()));
                        }
                        _ = state.wait_for(|open| !*open) => break,
                    }
                }
                drop(l);
                if state.wait_for(|open| *open).await.is_err() {
                    return;
                }
            }
        });
        Self { port, open, task }
    }

    /// Resets every relayed connection and refuses new ones until [`TcpGate::open`].
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

/// Relays `client` to `target` until either side closes or the gate is cut (then both reset).
async fn relay(
    mut client: tokio::net::TcpStream,
    target: std::net::SocketAddr,
    mut state: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = state.wait_for(|open| !*open) => {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
    }
}

impl Drop for TcpGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestDb {
    /// A [`TcpGate`] in front of this (PostgreSQL) database, and the URL that goes through it: a
    /// test cuts the gate to take the database away from whoever uses that URL.
    pub async fn gated(&self) -> (TcpGate, String) {
        let mut url = url::Url::parse(&self.url).expect("database URL");
        let host = url.host_str().expect("a database host").to_owned();
        let port = url.port().unwrap_or(5432);
        let target = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("resolve the database host")
            .next()
            .expect("an address of the database host");
        let gate = TcpGate::start(target).await;
        url.set_host(Some("127.0.0.1")).expect("set host");
        url.set_port(Some(gate.port)).expect("set port");
        (gate, url.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::replace_db_name;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            replace_db_name("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            replace_db_name("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(replace_db_name("postgres://h", "x"), "postgres://h/x");
    }
}
