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
