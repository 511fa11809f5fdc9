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

/// Runs both planes until SIGTERM or Ctrl-C.
pub async fn run(mut s: GatewaySettings) -> anyhow::Result<()> {
    // Migrate once, before either plane opens the database.
    let db = domain::db::connect_and_migrate(&s.shared.database_url).await?;
    let demo = if s.no_demo {
        None
    } else {
        let upstream = demo::spawn_upstream(s.demo_upstream_addr).await?;
        // The demo upstream is on loopback: allowed as that one socket, nothing more.
        s.shared.upstream_allow_sockets.push(upstream);
        Some((upstream, demo::seed_if_empty(&db, upstream).await?))
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
    let dashboard = format!("http://localhost:{}", cp.port());
    let gateway = s.shared.public_url.clone();
    println!();
    println!("Gateway is running.");
    println!("  Dashboard  {dashboard}");
    println!(
        "  Gateway    {gateway}  (data plane on {})",
        dp.local_addr()
    );
    match &demo {
        Some((_, Some(d))) => {
            println!("  Demo login {}  /  {}", demo::DEMO_USER, d.password);
            println!(
                "  Try        curl -H 'X-API-Key: {}' {gateway}/{}/{}/hello",
                d.key,
                demo::DEMO_TENANT_SLUG,
                demo::DEMO_API_SLUG
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
