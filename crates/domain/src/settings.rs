//! Settings shared by both planes, read from `GATEWAY_*` environment variables or CLI flags.
//! Each plane flattens [`Settings`] into its own `clap` parser beside its own settings (its listen
//! address among them: a binary's `--help` shows only what it uses); tests build it in code.

use std::net::SocketAddr;

use ipnet::IpNet;

use crate::upstream_policy::{UpstreamPolicy, parse_allow_entry};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://gateway.db?mode=rwc";
pub const DEFAULT_REDIS_PREFIX: &str = "gw";
pub const DEFAULT_CONTROL_PLANE_ADDR: &str = "0.0.0.0:8000";
pub const DEFAULT_DATA_PLANE_ADDR: &str = "0.0.0.0:7000";
pub const DEFAULT_PUBLIC_GATEWAY_URL: &str = "http://localhost:7000";

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Database URL: `sqlite://path?mode=rwc` or `postgres://user:pass@host/db`.
    #[arg(long, env = "GATEWAY_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Redis URL for counters and config-change events: `redis://[user:password@]host:port/`,
    /// `rediss://` for TLS, `redis+cluster://host:port,host:port` (or `rediss+cluster://`) for a
    /// Redis Cluster; unset = in-process counters (one node).
    #[arg(long, env = "GATEWAY_REDIS_URL")]
    pub redis_url: Option<String>,

    /// PEM file of the CA certificates a TLS Redis (`rediss://`) is verified against, for a
    /// private CA; unset = the system's trusted roots.
    #[arg(long, env = "GATEWAY_REDIS_CA")]
    pub redis_ca: Option<std::path::PathBuf>,

    /// Prefix of every Redis key and channel, to share one Redis between deployments.
    #[arg(long, env = "GATEWAY_REDIS_PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,

    /// Loopback and private ranges upstreams may use, comma-separated CIDRs or addresses
    /// (`10.0.0.0/8,127.0.0.1`); empty = none (link-local, metadata and the gateway's own
    /// services are refused whatever this says).
    #[arg(long, env = "GATEWAY_UPSTREAM_ALLOW", value_delimiter = ',', value_parser = parse_allow_entry)]
    pub upstream_allow: Vec<IpNet>,

    /// Exact sockets upstreams may use besides `upstream_allow` (the all-in-one's demo upstream).
    #[arg(skip)]
    pub upstream_allow_sockets: Vec<SocketAddr>,

    /// The data plane's address as callers reach it: shown in gateway URLs and curl examples,
    /// and the `iss` of the tokens the data plane mints.
    #[arg(long, env = "GATEWAY_PUBLIC_URL", default_value = DEFAULT_PUBLIC_GATEWAY_URL)]
    pub public_url: String,

    /// Secret that signs session cookies (at least 32 bytes; random per start when unset), and
    /// seals the tenants' token signing keys when `GATEWAY_TOKEN_KEY` is unset.
    #[arg(long, env = "GATEWAY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Secret (at least 32 bytes) that seals the tenants' token signing keys at rest; unset:
    /// `GATEWAY_SECRET_KEY`; neither: no tokens are minted or signed (verifying still works).
    #[arg(long, env = "GATEWAY_TOKEN_KEY", hide_env_values = true)]
    pub token_key: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            redis_url: None,
            redis_ca: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            upstream_allow: Vec::new(),
            upstream_allow_sockets: Vec::new(),
            public_url: DEFAULT_PUBLIC_GATEWAY_URL.to_owned(),
            secret_key: None,
            token_key: None,
        }
    }
}

/// A socket address constant (the defaults above), 0.0.0.0:0 should one not parse.
/// The token key of [`Settings::for_tests`].
pub const TEST_TOKEN_KEY: &str = "test token key: thirty-two bytes or more";

pub fn parse_addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl Settings {
    /// Settings for a test: the given database, loopback listeners on port 0, no Redis.
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            redis_url: None,
            redis_ca: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            // Test upstreams listen on loopback.
            upstream_allow: vec![
                ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(127, 0, 0, 0), 8).into(),
            ],
            upstream_allow_sockets: Vec::new(),
            public_url: DEFAULT_PUBLIC_GATEWAY_URL.to_owned(),
            secret_key: None,
            // Tests mint and verify tokens.
            token_key: Some(TEST_TOKEN_KEY.to_owned()),
        }
    }

    /// What seals the tenants' signing keys: `GATEWAY_TOKEN_KEY`, else `GATEWAY_SECRET_KEY`;
    /// `Ok(None)` when neither is set.
    pub fn token_secret(&self) -> Result<Option<crate::jwt::TokenSecret>, crate::jwt::KeyError> {
        self.token_key
            .as_deref()
            .or(self.secret_key.as_deref())
            .map(crate::jwt::TokenSecret::new)
            .transpose()
    }

    /// Where Redis is (`GATEWAY_REDIS_URL`, with `GATEWAY_REDIS_CA`), `None` without Redis; the
    /// error is a message for the operator naming the setting to fix.
    pub fn redis_endpoint(&self) -> Result<Option<crate::redis_pool::Endpoint>, String> {
        let Some(url) = &self.redis_url else {
            if self.redis_ca.is_some() {
                return Err("GATEWAY_REDIS_CA is set but GATEWAY_REDIS_URL is not".into());
            }
            return Ok(None);
        };
        let endpoint = crate::redis_pool::Endpoint::parse(url)
            .map_err(|e| format!("GATEWAY_REDIS_URL: {e}"))?;
        let Some(ca) = &self.redis_ca else {
            return Ok(Some(endpoint));
        };
        let pem = std::fs::read(ca)
            .map_err(|e| format!("GATEWAY_REDIS_CA: cannot read {}: {e}", ca.display()))?;
        endpoint
            .trusting(pem)
            .map(Some)
            .map_err(|e| format!("GATEWAY_REDIS_CA ({}): {e}", ca.display()))
    }

    /// The upstream address policy of these settings, with the gateway's own services (this
    /// plane's listeners as bound, Redis, the database) marked as never upstreams; the other
    /// planes' listeners come from the database ([`UpstreamPolicy::set_peers`]).
    pub async fn upstream_policy(&self, bound: &[(SocketAddr, &str)]) -> UpstreamPolicy {
        let mut p = UpstreamPolicy::new(self.upstream_allow.clone());
        for s in &self.upstream_allow_sockets {
            p = p.allowing_socket(*s);
        }
        for (addr, what) in bound {
            p.add_own(*addr, *what);
        }
        if let Ok(Some(redis)) = self.redis_endpoint() {
            for (host, port) in redis.addresses() {
                p.add_own_host(&host, port, "Redis").await;
            }
        }
        p.add_own_url(&self.database_url, "database").await;
        p
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    #[test]
    fn defaults_run_on_a_fresh_machine() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let d = Settings::default();
        assert_eq!(cli.settings.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(cli.settings.database_url, d.database_url);
        assert_eq!(parse_addr(DEFAULT_CONTROL_PLANE_ADDR).port(), 8000);
        assert_eq!(parse_addr(DEFAULT_DATA_PLANE_ADDR).port(), 7000);
    }

    #[test]
    fn flags_override_and_bad_values_are_refused() {
        let cli = Cli::try_parse_from([
            "x",
            "--database-url",
            "postgres://h/db",
            "--redis-url",
            "redis://127.0.0.1/",
            "--upstream-allow",
            "10.0.0.0/8,127.0.0.1",
        ])
        .unwrap();
        assert_eq!(cli.settings.database_url, "postgres://h/db");
        assert_eq!(
            cli.settings.redis_url.as_deref(),
            Some("redis://127.0.0.1/")
        );
        assert_eq!(cli.settings.upstream_allow.len(), 2);
        assert!(Cli::try_parse_from(["x", "--upstream-allow", "nope"]).is_err());
        assert!(
            Cli::try_parse_from(["x", "--data-plane-addr", "127.0.0.1:1"]).is_err(),
            "not a shared setting"
        );
    }
}
