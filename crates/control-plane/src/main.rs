use clap::{Parser, Subcommand};
use control_plane::{Application, ControlPlaneSettings};

/// Gateway control plane: dashboard, management API and platform admin.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    settings: ControlPlaneSettings,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the dashboard and the management API (the default).
    Serve,
    /// Create a platform admin (or make an existing user one).
    CreateAdmin(control_plane::admin_cli::CreateAdmin),
    /// Set a user's password (random and printed unless given) and end all their sessions.
    ResetPassword(control_plane::admin_cli::ResetPassword),
    /// Create the database if it is missing and apply every pending migration, then exit (the
    /// data plane never migrates; `serve` does this too).
    Migrate,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    domain::telemetry::init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CreateAdmin(args)) => {
            control_plane::admin_cli::run(&cli.settings.shared, args).await
        }
        Some(Command::ResetPassword(args)) => {
            control_plane::admin_cli::reset_password(&cli.settings.shared, args).await
        }
        Some(Command::Migrate) => {
            domain::db::connect_and_migrate(&cli.settings.shared.database_url).await?;
            println!("The database is migrated.");
            Ok(())
        }
        Some(Command::Serve) | None => {
            let app = Application::build(cli.settings).await?;
            tracing::info!(addr = %app.local_addr(), "control plane listening");
            app.run_until_stopped().await?;
            Ok(())
        }
    }
}
