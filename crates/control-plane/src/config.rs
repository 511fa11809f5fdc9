//! Control-plane settings: the shared ones plus the dashboard's own.

use domain::settings::Settings;

pub const DEFAULT_PUBLIC_GATEWAY_URL: &str = "http://localhost:7000";

#[derive(Debug, Clone, clap::Args)]
pub struct DashboardSettings {
    /// The data plane's address as callers reach it, shown in gateway URLs and curl examples.
    #[arg(long, env = "GATEWAY_PUBLIC_URL", default_value = DEFAULT_PUBLIC_GATEWAY_URL)]
    pub public_gateway_url: String,

    /// Mark session cookies `Secure` (serve the dashboard over HTTPS, e.g. behind a TLS proxy).
    #[arg(long, env = "GATEWAY_COOKIE_SECURE", default_value_t = false)]
    pub cookie_secure: bool,

    /// Allow anyone to sign up (dashboard and API).
    #[arg(long, env = "GATEWAY_SIGNUP_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub signup_enabled: bool,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            public_gateway_url: DEFAULT_PUBLIC_GATEWAY_URL.to_owned(),
            cookie_secure: false,
            signup_enabled: true,
        }
    }
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ControlPlaneSettings {
    #[command(flatten)]
    pub shared: Settings,
    #[command(flatten)]
    pub dashboard: DashboardSettings,
}
