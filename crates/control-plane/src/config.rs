//! Control-plane settings: the shared ones plus the dashboard's own.

use std::net::SocketAddr;

use domain::settings::{DEFAULT_CONTROL_PLANE_ADDR, Settings, parse_addr};

pub use domain::settings::DEFAULT_PUBLIC_GATEWAY_URL;

#[derive(Debug, Clone, clap::Args)]
pub struct DashboardSettings {
    /// Mark session cookies `Secure` (serve the dashboard over HTTPS, e.g. behind a TLS proxy).
    #[arg(long, env = "GATEWAY_COOKIE_SECURE", default_value_t = false)]
    pub cookie_secure: bool,

    /// Allow anyone to sign up (dashboard and API).
    #[arg(long, env = "GATEWAY_SIGNUP_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub signup_enabled: bool,

    /// Wait before a failed webhook delivery's first retry (ms); doubled after each failure, at
    /// most an hour, for 24 h.
    #[arg(long, env = "GATEWAY_WEBHOOK_RETRY_BASE_MS", default_value_t = DEFAULT_WEBHOOK_RETRY_BASE_MS)]
    pub webhook_retry_base_ms: u64,
}

pub const DEFAULT_WEBHOOK_RETRY_BASE_MS: u64 = 10_000;

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            cookie_secure: false,
            signup_enabled: true,
            webhook_retry_base_ms: DEFAULT_WEBHOOK_RETRY_BASE_MS,
        }
    }
}

/// Where the control plane listens.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlPlaneListen {
    /// Listen address of the control plane (dashboard and management API).
    #[arg(long, env = "GATEWAY_CONTROL_PLANE_ADDR", default_value = DEFAULT_CONTROL_PLANE_ADDR)]
    pub control_plane_addr: SocketAddr,
}

impl Default for ControlPlaneListen {
    fn default() -> Self {
        Self {
            control_plane_addr: parse_addr(DEFAULT_CONTROL_PLANE_ADDR),
        }
    }
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ControlPlaneSettings {
    #[command(flatten)]
    pub shared: Settings,
    #[command(flatten)]
    pub listen: ControlPlaneListen,
    #[command(flatten)]
    pub dashboard: DashboardSettings,
}

impl ControlPlaneSettings {
    /// For a test: the given database, listening on 127.0.0.1:0.
    pub fn for_tests(database_url: &str) -> Self {
        Self {
            shared: Settings::for_tests(database_url),
            listen: ControlPlaneListen {
                control_plane_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            dashboard: DashboardSettings::default(),
        }
    }
}
