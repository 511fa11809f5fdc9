//! Gateway in one process: control plane, data plane and a demo upstream, sharing one database.
//! `cargo run -p gateway` on a fresh machine starts everything on embedded defaults.

pub mod demo;

use std::net::SocketAddr;

use control_plane::ControlPlaneSettings;
use control_plane::config::{ControlPlaneListen, DashboardSettings};
use data_plane::DataPlaneSettings;
use data_plane::config::{DataPlaneListen, ProxySettings};
use domain::settings::Settings;

pub const DEFAULT_DEMO_UPSTREAM_ADDR: &str = "127.0.0.1:7070";

#[derive(Debug, Clone, clap::Args)]
pub struct GatewaySettings {
    #[command(flatten)]
    pub shared: Settings,
    #[command(flatten)]
    pub data_plane: DataPlaneListen,
    #[command(flatten)]
    pub proxy: ProxySettings,
    #[command(flatten)]
    pub control_plane: ControlPlaneListen,
    #[command(flatten)]
    pub dashboard: DashboardSettings,
    /// Where the demo upstream listens.
    #[arg(long, env = "GATEWAY_DEMO_UPSTREAM_ADDR", default_value = DEFAULT_DEMO_UPSTREAM_ADDR)]
    pub demo_upstream_addr: SocketAddr,
    /// Do not create the demo tenant or start the demo upstream.
    #[arg(long, env = "GATEWAY_NO_DEMO", default_value_t = false)]
    pub no_demo: bool,
}

/// Where the all-in-one keeps its secret when none is set: beside its SQLite file
/// (`gateway.db` → `gateway.db.secret`); `None` for any other database.
pub fn secret_file(database_url: &str) -> Option<std::path::PathBuf> {
    let rest = database_url.strip_prefix("sqlite:")?;
    let file = rest.trim_start_matches("//");
    let file = file.split('?').next().unwrap_or(file);
    if file.is_empty() || file.starts_with(":memory:") {
        return None;
    }
    Some(std::path::PathBuf::from(format!("{file}.secret")))
}

/// The secret kept in `path` (made there, readable by this user only, when missing): what signs
/// sessions and seals the tenants' token signing keys when neither `GATEWAY_SECRET_KEY` nor
/// `GATEWAY_TOKEN_KEY` is set, so that both survive a restart.
pub fn kept_secret(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Write;
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().len() >= domain::jwt::MIN_SECRET_LEN => return Ok(s.trim().to_owned()),
        Ok(_) => anyhow::bail!(
            "{} holds no secret of {} bytes or more: delete it (sessions end, token signing keys \
             must be rotated) or set GATEWAY_SECRET_KEY",
            path.display(),
            domain::jwt::MIN_SECRET_LEN
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let secret = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(secret.as_bytes())?;
    Ok(secret)
}

/// Runs both planes until SIGTERM or Ctrl-C.
pub async fn run(mut s: GatewaySettings) -> anyhow::Result<()> {
    // Migrate once, before either plane opens the database.
    let db = domain::db::connect_and_migrate(&s.shared.database_url).await?;
    // On embedded defaults, a secret of its own beside the database: sessions and the tenants'
    // token signing keys survive a restart, and tokens can be minted out of the box.
    let kept = match (&s.shared.secret_key, &s.shared.token_key) {
        (None, None) => secret_file(&s.shared.database_url),
        _ => None,
    };
    if let Some(path) = &kept {
        s.shared.secret_key = Some(kept_secret(path)?);
    }
    let demo = if s.no_demo {
        None
    } else {
        let upstream = demo::spawn_upstream(s.demo_upstream_addr).await?;
        // The demo upstream is on loopback: allowed as that one socket, nothing more.
        s.shared.upstream_allow_sockets.push(upstream);
        let secret = s.shared.token_secret()?;
        Some((
            upstream,
            demo::seed_if_empty(&db, upstream, secret.as_ref()).await?,
        ))
    };
    drop(db);

    // The control plane first: it registers its address, which the data plane's upstream
    // policy then refuses.
    let cp = control_plane::Application::build(ControlPlaneSettings {
        shared: s.shared.clone(),
        listen: s.control_plane.clone(),
        dashboard: s.dashboard.clone(),
    })
    .await?;
    let dp = data_plane::Application::build(DataPlaneSettings {
        shared: s.shared.clone(),
        listen: s.data_plane.clone(),
        proxy: s.proxy.clone(),
    })
    .await?;
    let scheme = if s.control_plane.control_plane_tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let dashboard = format!("{scheme}://localhost:{}", cp.port());
    let gateway = s.shared.public_url.clone();
    println!();
    println!("Gateway is running.");
    println!("  Dashboard  {dashboard}");
    if let Some(path) = &kept {
        println!(
            "  Secret     {} (signs sessions, seals token keys; or set GATEWAY_SECRET_KEY)",
            path.display()
        );
    }
    println!(
        "  Gateway    {gateway}  (data plane on {})",
        dp.local_addr()
    );
    if let Some(tls) = dp.tls_addr() {
        println!("  HTTPS      data plane on {tls} (HTTP/2 and HTTP/1.1)");
    }
    match &demo {
        Some((_, Some(d))) => {
            println!("  Demo login {}  /  {}", demo::DEMO_USER, d.password);
            println!(
                "  Try        curl -H 'X-API-Key: {}' {gateway}/{}/{}/hello",
                d.key,
                demo::DEMO_TENANT_SLUG,
                demo::DEMO_API_SLUG
            );
            println!(
                "  Token      curl -X POST -H 'X-API-Key: {}' {gateway}/_gateway/token",
                d.key
            );
            println!("  (The password and key are shown this once: only their hashes are stored.");
            println!(
                "   Lost the password? cargo run -p control-plane -- reset-password --username {})",
                demo::DEMO_USER
            );
        }
        Some((_, None)) => println!(
            "  The database already has accounts: log in with yours (the demo was created on first start)."
        ),
        None => {}
    }
    println!();

    let dp_stop = dp.shutdown_handle();
    let cp_stop = cp.handle();
    let dp_task = tokio::spawn(dp.run_until_stopped());
    let cp_task = tokio::spawn(cp.run_until_stopped());
    domain::shutdown::signal().await;
    dp_stop.shutdown();
    cp_stop.stop(true).await;
    dp_task.await??;
    cp_task.await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_kept_beside_a_sqlite_file_only() {
        assert_eq!(
            secret_file("sqlite://gateway.db?mode=rwc"),
            Some(std::path::PathBuf::from("gateway.db.secret"))
        );
        assert_eq!(
            secret_file("sqlite:///var/lib/gw/g.db"),
            Some(std::path::PathBuf::from("/var/lib/gw/g.db.secret"))
        );
        assert_eq!(secret_file("sqlite::memory:"), None);
        assert_eq!(secret_file("postgres://u@h/db"), None);
    }

    #[test]
    fn a_kept_secret_is_made_once_private_then_read_back() {
        let dir = std::env::temp_dir().join(format!("gw-secret-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.db.secret");
        let made = kept_secret(&path).unwrap();
        assert_eq!(made.len(), 64);
        assert_eq!(
            kept_secret(&path).unwrap(),
            made,
            "the same after a restart"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let perms = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(perms & 0o077, 0, "readable by its owner only: {perms:o}");
        }
        std::fs::write(&path, "short").unwrap();
        assert!(
            kept_secret(&path)
                .unwrap_err()
                .to_string()
                .contains("GATEWAY_SECRET_KEY")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn uuid_like() -> String {
        let mut b = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
        hex::encode(b)
    }
}
