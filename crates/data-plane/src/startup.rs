//! The listener and the accept loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use domain::sea_orm::DatabaseConnection;
use domain::settings::Settings;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Pause after a failed `accept` (EMFILE and friends) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub struct State {
    pub db: DatabaseConnection,
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<State>,
    shutdown_tx: watch::Sender<bool>,
}

/// Asks a running data plane to stop gracefully (what SIGTERM does in `main`).
#[derive(Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = domain::db::connect_and_migrate(&settings.database_url).await?;
        let listener = TcpListener::bind(settings.data_plane_addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, _) = watch::channel(false);
        Ok(Self {
            listener,
            addr,
            state: Arc::new(State { db }),
            shutdown_tx,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown_tx.clone())
    }

    /// Serves until [`ShutdownHandle::shutdown`], then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let mut stop = self.shutdown_tx.subscribe();
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed; continuing");
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let state = self.state.clone();
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(
                            TokioIo::new(stream),
                            service_fn(move |req| handle(state.clone(), peer, req)),
                        );
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                _ = stop.changed() => break,
            }
        }
        drop(self.listener);
        graceful.shutdown().await;
        Ok(())
    }
}

async fn handle(
    state: Arc<State>,
    _peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/health" | "/health/live" => (StatusCode::OK, r#"{"status":"ok"}"#.to_owned()),
        "/health/ready" => match state.db.ping().await {
            Ok(()) => (
                StatusCode::OK,
                r#"{"status":"ready","database":"up"}"#.to_owned(),
            ),
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"not_ready","database":"down"}"#.to_owned(),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"error":{"code":404,"type":"not_found","message":"no such route"}}"#.to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
