//! Building and running the data plane: bind first (port 0 in tests), then serve until stopped,
//! finishing in-flight requests and flushing usage on the way out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use domain::clock::{SharedClock, SystemClock};
use domain::limits::Limiter;
use domain::limits::redis::{RedisStore, checked_pool};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{DataPlaneSettings, Engine};
use crate::engine::fast::{Conn, Exit, MAX_HEADERS, Prefixed};
use crate::gateway::Gateway;
use crate::pipeline::Peer;
use crate::pipeline::token::Tokens;
use crate::reload;
use crate::upstream::UpstreamClients;
use crate::upstream::UpstreamPool;
use crate::usage::UsageRecorder;
use crate::watchdog::Watchdogs;

/// Pause after a failed `accept` (EMFILE and friends) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
const LISTEN_BACKLOG: i32 = 1024;
/// Attempts of the last usage flush at shutdown.
const FINAL_FLUSH_ATTEMPTS: u32 = 5;

pub struct Application {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    /// TLS termination, when configured: the certificate in use, and a second listener when
    /// HTTPS has an address of its own (else `listener` speaks HTTPS only).
    tls: Option<Tls>,
    gateway: Arc<Gateway>,
    settings: DataPlaneSettings,
    /// Where Redis is (`GATEWAY_REDIS_URL` with its CA, read once at the start) and the prefix of
    /// its keys and channels.
    redis: Option<(domain::redis_pool::Endpoint, String)>,
    stop_tx: watch::Sender<bool>,
    /// Webhook events (the limiter's quota alerts, circuits that opened and closed), recorded
    /// while running.
    events: tokio::sync::mpsc::UnboundedReceiver<domain::webhook::NewEvent>,
}

/// TLS termination: the certificate (reloaded as its files change) and where HTTPS is served.
struct Tls {
    certificates: Arc<domain::tls::Certificates>,
    /// HTTPS's own listener (`GATEWAY_DATA_PLANE_TLS_ADDR`), beside plain HTTP on the main one.
    listener: Option<std::net::TcpListener>,
}

/// ALPN protocols offered, most preferred first.
const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Asks a running data plane to stop gracefully (what SIGTERM does in `main`).
#[derive(Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

impl Application {
    pub async fn build(settings: DataPlaneSettings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Connects the database (which must exist: the control plane creates and migrates it), loads
    /// the first snapshot when the schema is there (until then the data plane serves and is not
    /// ready, and the reloader keeps trying), binds the listener.
    pub async fn build_with_clock(
        settings: DataPlaneSettings,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let shared = &settings.shared;
        let tls = settings
            .listen
            .tls_files()?
            .map(domain::tls::Certificates::load)
            .transpose()?;
        let listener = reuseport_listener(settings.listen.data_plane_addr)?;
        let addr = listener.local_addr()?;
        let tls = match (tls, settings.listen.data_plane_tls_addr) {
            (Some(certificates), Some(at)) => Some(Tls {
                certificates,
                listener: Some(reuseport_listener(at)?),
            }),
            (Some(certificates), None) => Some(Tls {
                certificates,
                listener: None,
            }),
            (None, _) => None,
        };
        let mut own = vec![(addr, "data plane")];
        if let Some(l) = tls.as_ref().and_then(|t| t.listener.as_ref()) {
            own.push((l.local_addr()?, "data plane (HTTPS)"));
        }
        let policy = Arc::new(shared.upstream_policy(&own).await);
        let db = domain::db::connect_existing(&shared.database_url).await?;
        let redis = (shared.redis_endpoint().map_err(anyhow::Error::msg)?)
            .map(|e| (e, shared.redis_prefix.clone()));
        let redis_pool = match redis.as_ref().map(|(e, _)| e) {
            Some(endpoint) => Some(checked_pool(endpoint).await.map_err(anyhow::Error::msg)?),
            None => None,
        };
        let store = redis_pool
            .clone()
            .map(|p| RedisStore::new(p, shared.redis_prefix.clone()));
        // Counters a store does not have (Redis lost them, the in-process store after a restart,
        // an outage's first decision of a subject) start from the usage the database holds.
        let recorded: Arc<dyn domain::limits::UsageSource> =
            Arc::new(domain::store::DbUsage(db.clone()));
        let limiter = Limiter::new(
            store,
            settings.proxy.limiter(),
            clock.clone(),
            Some(recorded),
        );
        let (event_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let alert_tx = event_tx.clone();
        limiter.alerts_to(Arc::new(move |a| {
            if let Some(e) = domain::webhook::NewEvent::of_alert(&a) {
                let _ = alert_tx.send(e);
            }
        }));
        let usage = UsageRecorder::new(
            db.clone(),
            redis_pool.map(|p| (p, shared.redis_prefix.clone())),
            clock.clone(),
        );
        let gateway = Arc::new(Gateway::new(
            limiter,
            usage,
            db,
            clock,
            settings.proxy.clone(),
            policy,
            Tokens::new(
                shared.token_secret().map_err(|e| {
                    anyhow::anyhow!("GATEWAY_TOKEN_KEY (or GATEWAY_SECRET_KEY): {e}")
                })?,
                &shared.public_url,
            ),
        )?);
        *gateway
            .bound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(addr);
        gateway.upstreams.events_to(event_tx);
        reload::first_load(&gateway).await;
        let (stop_tx, _) = watch::channel(false);
        Ok(Self {
            listener,
            addr,
            tls,
            gateway,
            settings,
            redis,
            stop_tx,
            events,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where HTTPS is served, when TLS is configured: its own address, or the one address.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        let tls = self.tls.as_ref()?;
        match &tls.listener {
            Some(l) => l.local_addr().ok(),
            None => Some(self.addr),
        }
    }

    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.clone()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop_tx.clone())
    }

    /// Serves until [`ShutdownHandle::shutdown`]; then stops accepting, lets in-flight requests
    /// finish (up to the grace period) and flushes every usage count.
    #[allow(clippy::too_many_lines)] // every task of a running data plane, started and stopped
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            tls,
            gateway,
            settings,
            redis,
            stop_tx,
            events,
            ..
        } = self;
        let stop_rx = stop_tx.subscribe();
        let (listeners, cert_watch) = Listeners::start(listener, tls, &stop_rx);
        let poll = Duration::from_millis(settings.proxy.reload_poll_ms);
        let reloader = tokio::spawn(reload::run(
            gateway.clone(),
            redis.clone(),
            poll,
            stop_rx.clone(),
        ));
        let prober = tokio::spawn(gateway.limiter.clone().probe_until(stop_rx.clone()));
        let heart = tokio::spawn(gateway.limiter.clone().heartbeat_until(stop_rx.clone()));
        let checks = tokio::spawn(crate::upstream::health::run(
            gateway.clone(),
            stop_rx.clone(),
        ));
        let reports = domain::target_health::HealthReports::new(
            gateway
                .limiter
                .redis_store()
                .map(|s| (s.pool().clone(), settings.shared.redis_prefix.clone())),
            gateway.db.clone(),
        );
        let node = settings
            .proxy
            .node_name
            .clone()
            .unwrap_or_else(|| crate::upstream::health::default_node_name(addr_port(&gateway)));
        let reporter = tokio::spawn(crate::upstream::health::report_until(
            gateway.clone(),
            reports,
            node,
            Duration::from_millis(settings.proxy.health_report_ms),
            stop_rx.clone(),
        ));
        let flusher = tokio::spawn(flush_every(
            gateway.clone(),
            Duration::from_millis(settings.proxy.usage_flush_ms.max(10)),
            stop_rx.clone(),
        ));
        let event_writer = tokio::spawn(record_events(gateway.db.clone(), events, stop_rx.clone()));
        let log_writer = tokio::spawn(write_log_every(
            gateway.clone(),
            Duration::from_millis(settings.proxy.request_log_flush_ms.max(10)),
            stop_rx.clone(),
        ));

        let workers = spawn_workers(
            listeners,
            &gateway,
            &settings,
            redis.as_ref().map(|(e, _)| e),
            &stop_rx,
        )?;
        let joined = tokio::task::spawn_blocking(move || {
            workers
                .into_iter()
                .map(|w| w.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?)
                .collect::<anyhow::Result<Vec<()>>>()
        })
        .await?;
        if let Err(e) = joined {
            tracing::error!(error = %e, "worker failed");
        }

        let _ = stop_tx.send(true);
        let _ = tokio::join!(
            reloader,
            prober,
            heart,
            flusher,
            checks,
            reporter,
            log_writer,
            event_writer
        );
        if let Some(w) = cert_watch {
            let _ = w.await;
        }
        for attempt in 1..=FINAL_FLUSH_ATTEMPTS {
            let report = gateway.usage.flush().await;
            if report.db_ok && report.redis_ok {
                break;
            }
            tracing::warn!(attempt, "final usage flush incomplete; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for attempt in 1..=FINAL_FLUSH_ATTEMPTS {
            if gateway.request_log.flush(gateway.clock.now_ms()).await {
                break;
            }
            tracing::warn!(attempt, "final request log write incomplete; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!("data plane stopped");
        Ok(())
    }
}

/// The port this data plane listens on.
fn addr_port(gw: &Gateway) -> u16 {
    crate::lock(&gw.bound).map_or(0, |a| a.port())
}

/// A listening socket with `SO_REUSEPORT`, so each worker thread can accept on its own socket.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The data plane's listening sockets: the main one (plain HTTP, or HTTPS only when TLS has no
/// address of its own) and HTTPS's own, with the acceptor that terminates TLS.
struct Listeners {
    main: std::net::TcpListener,
    main_tls: bool,
    tls: Option<std::net::TcpListener>,
    acceptor: Option<TlsAcceptor>,
}

impl Listeners {
    /// The listeners, with TLS's acceptor and the task that reloads its certificate.
    fn start(
        main: std::net::TcpListener,
        tls: Option<Tls>,
        stop: &watch::Receiver<bool>,
    ) -> (Self, Option<tokio::task::JoinHandle<()>>) {
        let Some(Tls {
            certificates,
            listener,
        }) = tls
        else {
            let plain = Self {
                main,
                main_tls: false,
                tls: None,
                acceptor: None,
            };
            return (plain, None);
        };
        let acceptor = TlsAcceptor::from(certificates.server_config(ALPN));
        let watch = tokio::spawn(certificates.watch(stop.clone()));
        let listeners = Self {
            main,
            main_tls: listener.is_none(),
            tls: listener,
            acceptor: Some(acceptor),
        };
        (listeners, Some(watch))
    }
}

/// One worker per core (or `GATEWAY_WORKERS`): a single-threaded runtime with its own listening
/// sockets and upstream pool, like nginx's worker processes. A request stays on one thread from
/// accept to response; the shared state (snapshot, limits, usage) is behind atomics and sharded
/// locks.
fn spawn_workers(
    first: Listeners,
    gateway: &Arc<Gateway>,
    settings: &DataPlaneSettings,
    redis: Option<&domain::redis_pool::Endpoint>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<anyhow::Result<()>>>> {
    let addr = first.main.local_addr()?;
    let tls_addr = first
        .tls
        .as_ref()
        .map(std::net::TcpListener::local_addr)
        .transpose()?;
    let (main_tls, acceptor) = (first.main_tls, first.acceptor.clone());
    let count = settings.proxy.worker_count();
    let mut first = Some(first);
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let listeners = match first.take() {
            Some(l) => l,
            None => Listeners {
                main: reuseport_listener(addr)?,
                main_tls,
                tls: tls_addr.map(reuseport_listener).transpose()?,
                acceptor: acceptor.clone(),
            },
        };
        let (gw, settings, stop, redis) = (
            gateway.clone(),
            settings.clone(),
            stop.clone(),
            redis.cloned(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("gw-worker-{i}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    if let (Some(store), Some(endpoint)) = (gw.limiter.redis_store(), &redis) {
                        store.attach_current_thread(endpoint)?;
                    }
                    let client = UpstreamClients::new(&gw.policy)?;
                    serve(listeners, &gw, &client, &settings, stop).await?;
                    Ok(())
                })
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// A connection accepted on `listener`, or never when there is none.
async fn accept_on(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve(
    listeners: Listeners,
    gateway: &Arc<Gateway>,
    client: &UpstreamClients,
    settings: &DataPlaneSettings,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let main = TcpListener::from_std(listeners.main)?;
    let tls = listeners.tls.map(TcpListener::from_std).transpose()?;
    // Every connection holds a receiver until it ends: a send asks idle ones to close, and
    // `closed` says when the last one has.
    let (drain_tx, drain_rx) = watch::channel(());
    let pool = Arc::new(UpstreamPool::default());
    let dogs = Watchdogs::new();
    let sweeper = tokio::spawn(dogs.clone().run());
    let max_buf = (settings.proxy.max_header_bytes * 2).max(16 * 1024);
    loop {
        let (accepted, https) = tokio::select! {
            a = main.accept() => (a, listeners.main_tls),
            a = accept_on(tls.as_ref()) => (a, true),
            _ = stop.changed() => break,
        };
        let (stream, addr) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; continuing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Accepted {
            gw: gateway.clone(),
            client: client.clone(),
            pool: pool.clone(),
            dog: dogs.watch(),
            peer: Peer { addr, https },
            max_buf,
            drain: drain_rx.clone(),
        };
        let hyper_only = settings.proxy.engine == Engine::Hyper;
        match (https, listeners.acceptor.clone()) {
            (true, Some(acceptor)) => tokio::spawn(async move {
                // The handshake has the head's time limit.
                let within = Duration::from_millis(conn.gw.settings.header_timeout_ms);
                match tokio::time::timeout(within, acceptor.accept(stream)).await {
                    // HTTP/2 (ALPN `h2`) is hyper's; HTTP/1.1 starts on the fast engine, as in
                    // the clear.
                    Ok(Ok(io)) => {
                        let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
                        conn.serve(io, hyper_only || h2).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }),
            _ => tokio::spawn(conn.serve(stream, hyper_only)),
        };
    }
    drop(drain_rx);
    // Idle fast-path connections end at once; hyper's close after their current exchange.
    dogs.drain();
    let _ = drain_tx.send(());
    let grace = Duration::from_millis(settings.proxy.shutdown_grace_ms);
    if tokio::time::timeout(grace, drain_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "in-flight requests still running after the grace period"
        );
    }
    sweeper.abort();
    Ok(())
}

/// An accepted connection (TCP, or TLS once its handshake is done) and what serving it takes.
struct Accepted {
    gw: Arc<Gateway>,
    client: UpstreamClients,
    pool: Arc<UpstreamPool>,
    dog: Arc<crate::watchdog::Watchdog>,
    peer: Peer,
    max_buf: usize,
    drain: watch::Receiver<()>,
}

impl Accepted {
    /// Serves it: on the fast engine, which hands hyper what it does not serve, or on hyper
    /// from the start (`hyper_only`).
    async fn serve<I>(self, io: I, hyper_only: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            gw,
            client,
            pool,
            dog,
            peer,
            max_buf,
            drain,
        } = self;
        if hyper_only {
            return serve_with_hyper(gw, client, peer, io, max_buf, drain).await;
        }
        let mut conn = Conn::new(&gw, &pool, &dog, io, peer.addr, peer.https);
        if let Exit::HandOff(read) = conn.run().await {
            let io = Prefixed::new(read, conn.into_client());
            serve_with_hyper(gw, client, peer, io, max_buf, drain).await;
        }
    }
}

/// A connection hyper serves (the rest of one the fast path handed over, or one over TLS):
/// HTTP/1.1, or HTTP/2 when it starts with HTTP/2's preface (ALPN `h2`, or h2c with prior
/// knowledge), through [`Gateway::handle`], closing gracefully when `drain` fires.
async fn serve_with_hyper<I>(
    gw: Arc<Gateway>,
    client: UpstreamClients,
    peer: Peer,
    io: I,
    max_buf: usize,
    mut drain: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout_ms = gw.settings.header_timeout_ms;
    let max_head = u32::try_from(gw.settings.max_header_bytes).unwrap_or(u32::MAX);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(header_timeout_ms))
        .max_buf_size(max_buf)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(max_head);
    let conn = builder.serve_connection_with_upgrades(
        TokioIo::new(io),
        service_fn(move |req| gw.clone().handle(client.clone(), peer, req)),
    );
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = drain.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Writes the request log's records every `every` (a slow database delays only this task).
async fn write_log_every(gw: Arc<Gateway>, every: Duration, mut stop: watch::Receiver<bool>) {
    if !gw.request_log.enabled() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => { gw.request_log.flush(gw.clock.now_ms()).await; }
            _ = stop.changed() => return,
        }
    }
}

async fn flush_every(gw: Arc<Gateway>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => { gw.usage.flush().await; }
            _ = stop.changed() => return,
        }
    }
}

/// Records webhook events (each once, see `domain::webhook`) a batch at a time until `stop`
/// fires; what is queued then is recorded before it returns.
async fn record_events(
    db: domain::sea_orm::DatabaseConnection,
    mut events: tokio::sync::mpsc::UnboundedReceiver<domain::webhook::NewEvent>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            n = events.recv_many(&mut batch, 256) => {
                if n == 0 {
                    return;
                }
            }
            _ = stop.changed() => {
                while let Ok(e) = events.try_recv() {
                    batch.push(e);
                }
                write_events(&db, &batch).await;
                return;
            }
        }
        write_events(&db, &batch).await;
    }
}

/// Records a batch of webhook events.
async fn write_events(
    db: &domain::sea_orm::DatabaseConnection,
    events: &[domain::webhook::NewEvent],
) {
    if events.is_empty() {
        return;
    }
    if let Err(e) = domain::store::record_events(db, events).await {
        tracing::warn!(error = %e, n = events.len(), "could not record webhook events");
    }
}
