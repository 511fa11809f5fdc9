use clap::Parser;
use control_plane::Application;
use domain::settings::Settings;

/// Gateway control plane: dashboard, management API and platform admin.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    domain::telemetry::init();
    let cli = Cli::parse();
    let app = Application::build(cli.settings).await?;
    tracing::info!(addr = %app.local_addr(), "control plane listening");
    app.run_until_stopped().await?;
    Ok(())
}
