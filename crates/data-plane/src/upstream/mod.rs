//! Connections to upstreams, for both engines: every new one is made to an address the
//! [`UpstreamPolicy`] allows for the API's tenant, checked after resolution (so a name rebound to
//! a forbidden address gains nothing). The fast engine connects through [`connect`]; hyper's
//! client through [`GuardedConnector`], one client per trust level so a pooled connection made for
//! a trusted tenant never serves another.

pub mod balance;
pub mod health;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use domain::header::UpstreamProtocol;
use domain::upstream_policy::{Refusal, ResolveError, UpstreamPolicy};
use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::body::UpstreamBody;
use crate::errors::GatewayError;
use crate::lock;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_mins(1);

/// hyper's keep-alive pool to upstreams (HTTP, and HTTPS with the system's roots).
pub type UpstreamClient = Client<HttpsConnector<GuardedConnector>, UpstreamBody>;

/// A worker's hyper clients: for tenants trusted with private upstreams and for the rest, each
/// in HTTP/1.1 and HTTP/2.
#[derive(Clone)]
pub struct UpstreamClients {
    untrusted: UpstreamClient,
    trusted: UpstreamClient,
    untrusted_h2: UpstreamClient,
    trusted_h2: UpstreamClient,
}

impl UpstreamClients {
    pub fn new(policy: &Arc<UpstreamPolicy>) -> anyhow::Result<Self> {
        Ok(Self {
            untrusted: client(policy, false, UpstreamProtocol::Http1)?,
            trusted: client(policy, true, UpstreamProtocol::Http1)?,
            untrusted_h2: client(policy, false, UpstreamProtocol::H2)?,
            trusted_h2: client(policy, true, UpstreamProtocol::H2)?,
        })
    }

    /// The client for an API of a tenant (`trusted` or not) that speaks `protocol` upstream.
    pub fn for_api(&self, trusted: bool, protocol: UpstreamProtocol) -> &UpstreamClient {
        match (trusted, protocol) {
            (true, UpstreamProtocol::Http1) => &self.trusted,
            (false, UpstreamProtocol::Http1) => &self.untrusted,
            (true, UpstreamProtocol::H2) => &self.trusted_h2,
            (false, UpstreamProtocol::H2) => &self.untrusted_h2,
        }
    }
}

fn client<B>(
    policy: &Arc<UpstreamPolicy>,
    trusted: bool,
    protocol: UpstreamProtocol,
) -> anyhow::Result<Client<HttpsConnector<GuardedConnector>, B>>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The provider is named, not left to crate features: another crate enabling a second rustls
    // backend would otherwise make the default ambiguous.
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())?
        .https_or_http();
    let guard = GuardedConnector {
        policy: policy.clone(),
        trusted,
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(usize::MAX);
    let https = match protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(guard),
        // HTTP/2 only: ALPN `h2` over TLS, prior knowledge (h2c) in the clear.
        UpstreamProtocol::H2 => {
            client.http2_only(true);
            builder.enable_http2().wrap_connector(guard)
        }
    };
    Ok(client.build(https))
}

/// A client for the active health checks (`crate::upstream::health`), through the same guard.
pub(crate) fn check_client(
    policy: &Arc<UpstreamPolicy>,
    trusted: bool,
) -> anyhow::Result<Client<HttpsConnector<GuardedConnector>, http_body_util::Empty<bytes::Bytes>>> {
    client(policy, trusted, UpstreamProtocol::Http1)
}

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Forbidden(Refusal),
    #[error("{0}")]
    Unreachable(std::io::Error),
}

impl From<ConnectError> for GatewayError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Forbidden(_) => GatewayError::UpstreamForbidden,
            ConnectError::Unreachable(_) => GatewayError::UpstreamUnreachable,
        }
    }
}

/// A TCP connection to `host_port` (`host:port`, as the snapshot has it) at the first address the
/// policy allows that answers.
pub async fn connect(
    policy: &UpstreamPolicy,
    host_port: &str,
    trusted: bool,
) -> Result<TcpStream, ConnectError> {
    let addrs = match policy.resolve(host_port, trusted).await {
        Ok(a) => a,
        Err(ResolveError::Refused(r)) => {
            tracing::warn!(upstream = host_port, refusal = %r, "upstream address refused");
            return Err(ConnectError::Forbidden(r));
        }
        Err(ResolveError::Lookup(e)) => return Err(ConnectError::Unreachable(e)),
    };
    let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::ErrorKind::TimedOut.into(),
        }
    }
    tracing::debug!(error = %last, upstream = host_port, "upstream connect failed");
    Err(ConnectError::Unreachable(last))
}

/// hyper's connector: [`connect`] for the URI's host and port.
#[derive(Clone)]
pub struct GuardedConnector {
    policy: Arc<UpstreamPolicy>,
    trusted: bool,
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (policy, trusted) = (self.policy.clone(), self.trusted);
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            let host_port = format!("{host}:{port}");
            connect(&policy, &host_port, trusted)
                .await
                .map(TokioIo::new)
        })
    }
}

/// The policy refusal behind a failed upstream request, if that is why it failed.
pub fn refusal<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e Refusal> {
    let mut cur: Option<&'e (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(ConnectError::Forbidden(r)) = err.downcast_ref::<ConnectError>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// Most idle connections kept per upstream address by the fast engine's pool.
const FAST_POOL_MAX_IDLE_PER_ADDR: usize = 512;

/// Idle upstream connections of one worker thread, by `host:port`.
#[derive(Default)]
pub struct UpstreamPool {
    idle: Mutex<IdleConnections>,
}

type IdleConnections = HashMap<Box<str>, Vec<(TcpStream, Instant)>>;

impl UpstreamPool {
    pub(crate) fn take(&self, addr: &str) -> Option<TcpStream> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(addr)?;
        while let Some((stream, since)) = list.pop() {
            if since.elapsed() < POOL_IDLE_TIMEOUT && looks_open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    pub(crate) fn put(&self, addr: Box<str>, stream: TcpStream) {
        if !looks_open(&stream) {
            return;
        }
        let mut idle = lock(&self.idle);
        let list = idle.entry(addr).or_default();
        list.retain(|(_, since)| since.elapsed() < POOL_IDLE_TIMEOUT);
        if list.len() < FAST_POOL_MAX_IDLE_PER_ADDR {
            list.push((stream, Instant::now()));
        }
    }
}

/// An idle upstream connection is usable when nothing (data or EOF) arrived on it since its last
/// answer; tokio's cached readiness answers that without a system call in the usual case.
pub(crate) fn looks_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}
