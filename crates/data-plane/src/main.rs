use clap::Parser;
use data_plane::{Application, DataPlaneSettings};
use mimalloc::MiMalloc;

/// Gateway data plane: the authenticated, rate-limited proxy.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    settings: DataPlaneSettings,
}

/// mimalloc: fewer cycles per allocation than glibc's malloc on the proxy's many small buffers.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    domain::telemetry::init();
    let app = Application::build(Cli::parse().settings).await?;
    tracing::info!(addr = %app.local_addr(), "data plane listening");
    if let Some(tls) = app.tls_addr() {
        tracing::info!(https = %tls, "data plane serving HTTPS (HTTP/2 and HTTP/1.1)");
    }
    let handle = app.shutdown_handle();
    tokio::spawn(async move {
        domain::shutdown::signal().await;
        handle.shutdown();
    });
    app.run_until_stopped().await
}
