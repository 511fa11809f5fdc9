use clap::Parser;
use data_plane::Application;
use domain::settings::Settings;

/// Gateway data plane: the authenticated, rate-limited proxy.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    domain::telemetry::init();
    let cli = Cli::parse();
    let app = Application::build(cli.settings).await?;
    tracing::info!(addr = %app.local_addr(), "data plane listening");
    let handle = app.shutdown_handle();
    tokio::spawn(async move {
        domain::shutdown::signal().await;
        handle.shutdown();
    });
    app.run_until_stopped().await
}
