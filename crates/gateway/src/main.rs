use clap::Parser;
use gateway::GatewaySettings;

/// Gateway, both planes in one process, with a demo tenant on a fresh database.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    settings: GatewaySettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    domain::telemetry::init();
    gateway::run(Cli::parse().settings).await
}
