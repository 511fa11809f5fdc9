//! Building the actix application: bind the listener first (port 0 in tests), then serve.

use std::net::{SocketAddr, TcpListener};

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use domain::sea_orm::DatabaseConnection;
use domain::settings::Settings;

use crate::routes;

/// State shared by every handler.
pub struct AppState {
    pub db: DatabaseConnection,
}

pub struct Application {
    addr: SocketAddr,
    server: Server,
}

impl Application {
    /// Connects the database, applies migrations and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = domain::db::connect_and_migrate(&settings.database_url).await?;
        let listener = TcpListener::bind(settings.control_plane_addr)?;
        let addr = listener.local_addr()?;
        let state = web::Data::new(AppState { db });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(routes::configure)
        })
        .listen(listener)?
        .run();
        Ok(Self { addr, server })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
