//! Control-plane settings: the shared ones plus the dashboard's own.

use std::net::SocketAddr;
use std::path::PathBuf;

use domain::tls::{TlsError, TlsFiles, TlsSettingNames};

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

    /// TLS certificate chain (PEM): with the key, the control plane speaks HTTPS only (session
    /// cookies are then `Secure`). Read again when the file changes or on SIGHUP.
    #[arg(long, env = "GATEWAY_CONTROL_PLANE_TLS_CERT")]
    pub control_plane_tls_cert: Option<PathBuf>,

    /// The TLS certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "GATEWAY_CONTROL_PLANE_TLS_KEY")]
    pub control_plane_tls_key: Option<PathBuf>,
}

impl Default for ControlPlaneListen {
    fn default() -> Self {
        Self {
            control_plane_addr: parse_addr(DEFAULT_CONTROL_PLANE_ADDR),
            control_plane_tls_cert: None,
            control_plane_tls_key: None,
        }
    }
}

impl ControlPlaneListen {
    /// The certificate in use when TLS is configured, loaded (an error names the file).
    pub fn certificates(
        &self,
    ) -> Result<Option<std::sync::Arc<domain::tls::Certificates>>, TlsError> {
        self.tls_files()?
            .map(domain::tls::Certificates::load)
            .transpose()
    }

    /// The certificate the control plane serves HTTPS with, when its settings name one.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, TlsError> {
        TlsFiles::from_settings(
            self.control_plane_tls_cert.as_deref(),
            self.control_plane_tls_key.as_deref(),
            false,
            TlsSettingNames {
                cert: "GATEWAY_CONTROL_PLANE_TLS_CERT",
                key: "GATEWAY_CONTROL_PLANE_TLS_KEY",
                addr: "",
            },
        )
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
                ..ControlPlaneListen::default()
            },
            dashboard: DashboardSettings::default(),
        }
    }
}
