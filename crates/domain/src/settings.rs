//! Settings shared by both planes, read from `GATEWAY_*` environment variables or CLI flags.
//! Each plane flattens [`Settings`] into its own `clap` parser; tests build it in code.

use std::net::SocketAddr;

use ipnet::IpNet;

use crate::upstream_policy::{UpstreamPolicy, parse_allow_entry};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://gateway.db?mode=rwc";
pub const DEFAULT_REDIS_PREFIX: &str = "gw";
pub const DEFAULT_CONTROL_PLANE_ADDR: &str = "0.0.0.0:8000";
pub const DEFAULT_DATA_PLANE_ADDR: &str = "0.0.0.0:7000";

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Database URL: `sqlite://path?mode=rwc` or `postgres://user:pass@host/db`.
    #[arg(long, env = "GATEWAY_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Redis URL for counters and config-change events; unset = in-process counters (one node).
    #[arg(long, env = "GATEWAY_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel, to share one Redis between deployments.
    #[arg(long, env = "GATEWAY_REDIS_PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,

    /// Listen address of the control plane (dashboard and management API).
    #[arg(long, env = "GATEWAY_CONTROL_PLANE_ADDR", default_value = DEFAULT_CONTROL_PLANE_ADDR)]
    pub control_plane_addr: SocketAddr,

    /// Listen address of the data plane (the proxy).
    #[arg(long, env = "GATEWAY_DATA_PLANE_ADDR", default_value = DEFAULT_DATA_PLANE_ADDR)]
    pub data_plane_addr: SocketAddr,

    /// Secret that signs session cookies (at least 32 bytes); random per start when unset.
    #[arg(long, env = "GATEWAY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Loopback and private ranges upstreams may use, comma-separated CIDRs or addresses
    /// (`10.0.0.0/8,127.0.0.1`); empty = none (link-local, metadata and the gateway's own
    /// services are refused whatever this says).
    #[arg(long, env = "GATEWAY_UPSTREAM_ALLOW", value_delimiter = ',', value_parser = parse_allow_entry)]
    pub upstream_allow: Vec<IpNet>,

    /// Exact sockets upstreams may use besides `upstream_allow` (the all-in-one's demo upstream).
    #[arg(skip)]
    pub upstream_allow_sockets: Vec<SocketAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            control_plane_addr: parse_addr(DEFAULT_CONTROL_PLANE_ADDR),
            data_plane_addr: parse_addr(DEFAULT_DATA_PLANE_ADDR),
            secret_key: None,
            upstream_allow: Vec::new(),
            upstream_allow_sockets: Vec::new(),
        }
    }
}

fn parse_addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl Settings {
    /// Settings for a test: the given database, loopback listeners on port 0, no Redis.
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            control_plane_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_plane_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            secret_key: None,
            // Test upstreams listen on loopback.
            upstream_allow: vec![
                ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(127, 0, 0, 0), 8).into(),
            ],
            upstream_allow_sockets: Vec::new(),
        }
    }

    /// The upstream address policy of these settings, with the gateway's own services (its
    /// listeners as bound, Redis, the database) marked as never upstreams.
    pub async fn upstream_policy(&self, bound: &[(SocketAddr, &str)]) -> UpstreamPolicy {
        let mut p = UpstreamPolicy::new(self.upstream_allow.clone());
        for s in &self.upstream_allow_sockets {
            p = p.allowing_socket(*s);
        }
        for (addr, what) in bound {
            p.add_own(*addr, *what);
        }
        p.add_own(self.control_plane_addr, "control plane");
        p.add_own(self.data_plane_addr, "data plane");
        if let Some(url) = &self.redis_url {
            p.add_own_url(url, "Redis").await;
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
        assert_eq!(cli.settings.control_plane_addr.port(), 8000);
        assert_eq!(cli.settings.data_plane_addr, d.data_plane_addr);
        assert_eq!(d.data_plane_addr.port(), 7000);
    }

    #[test]
    fn flags_override_and_bad_values_are_refused() {
        let cli = Cli::try_parse_from([
            "x",
            "--database-url",
            "postgres://h/db",
            "--redis-url",
            "redis://127.0.0.1/",
            "--data-plane-addr",
            "127.0.0.1:7100",
        ])
        .unwrap();
        assert_eq!(cli.settings.database_url, "postgres://h/db");
        assert_eq!(
            cli.settings.redis_url.as_deref(),
            Some("redis://127.0.0.1/")
        );
        assert_eq!(cli.settings.data_plane_addr.port(), 7100);
        assert!(Cli::try_parse_from(["x", "--data-plane-addr", "nope"]).is_err());
    }
}
