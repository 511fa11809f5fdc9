//! A real upstream for the tests: a small hyper server on 127.0.0.1:0 that records what it got.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query exactly as received.
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: u64,
    /// Which of the upstream's connections carried it (numbered from 1 as accepted).
    pub conn: u64,
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    scheme: &'static str,
}

impl Upstream {
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

type Out = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Out> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r
}

async fn handle(
    seen: Arc<Mutex<Vec<Seen>>>,
    conn: u64,
    req: Request<Incoming>,
) -> Result<Response<Out>, Infallible> {
    let (parts, mut body) = req.into_parts();
    // Count the body without keeping it: a 100 MB upload must not grow anything.
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let uri = parts
        .uri
        .path_and_query()
        .map_or_else(String::new, |p| p.as_str().to_owned());
    seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        uri: uri.clone(),
        headers: parts.headers.clone(),
        body_len,
        conn,
    });
    let path = parts.uri.path();
    // Routes are matched on the last segments, whatever prefix the API's upstream URL has.
    let segs: Vec<&str> = path.split('/').collect();
    let tail = |n: usize| segs.get(segs.len().wrapping_sub(n)).copied().unwrap_or("");
    let resp = match (tail(2), tail(1)) {
        ("status", code) => {
            let code = code.parse().unwrap_or(500);
            full(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                format!("upstream says {code}"),
            )
        }
        ("slow", ms) => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(1000))).await;
            full(StatusCode::OK, "slow")
        }
        ("bytes", n) => {
            let total: u64 = n.parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = total.div_ceil(chunk.len() as u64);
            let s = stream::iter((0..chunks).map(move |i| {
                let left = total - i * chunk.len() as u64;
                let take = usize::try_from(left.min(chunk.len() as u64)).unwrap();
                Ok::<_, Infallible>(Frame::data(chunk.slice(..take)))
            }));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(s)));
            r.headers_mut().insert("content-length", total.into());
            r
        }
        (_, "cookies") => {
            let mut r = full(StatusCode::OK, "cookies");
            r.headers_mut()
                .append("set-cookie", "a=1; Path=/".parse().unwrap());
            r.headers_mut()
                .append("set-cookie", "b=2; Path=/".parse().unwrap());
            r
        }
        (_, "ratelimit") => {
            // An upstream with limits of its own: the caller must see only the gateway's.
            let mut r = full(StatusCode::OK, "limited upstream");
            for (name, value) in [
                ("x-ratelimit-limit", "999"),
                ("x-ratelimit-remaining", "999"),
                ("ratelimit", "\"up\";r=999;t=1"),
                ("ratelimit-policy", "\"up\";q=999;w=1"),
            ] {
                r.headers_mut().insert(name, value.parse().unwrap());
            }
            r
        }
        (_, "hop") => {
            let mut r = full(StatusCode::OK, "hop");
            r.headers_mut()
                .insert("connection", "x-upstream-hop".parse().unwrap());
            r.headers_mut()
                .insert("x-upstream-hop", "secret".parse().unwrap());
            r.headers_mut()
                .insert("keep-alive", "timeout=5".parse().unwrap());
            r.headers_mut()
                .insert("x-upstream-kept", "yes".parse().unwrap());
            r
        }
        _ => {
            let body = serde_json::json!({
                "method": parts.method.as_str(),
                "uri": uri,
                "body_len": body_len,
            });
            let mut r = full(StatusCode::OK, body.to_string());
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
    };
    Ok(resp)
}

/// Starts the upstream on 127.0.0.1:0.
pub async fn spawn_upstream() -> Upstream {
    serve(None).await
}

/// Starts the upstream on 127.0.0.1:0 speaking HTTPS only, with a new self-signed certificate for
/// `127.0.0.1`; also returns that certificate (PEM), for a client to trust or not.
pub async fn spawn_tls_upstream() -> (Upstream, String) {
    let (config, pem) = self_signed_tls(&[]);
    let up = serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;
    (up, pem)
}

/// A server configuration with a fresh self-signed certificate for 127.0.0.1, offering `alpn`:
/// it and the certificate (PEM), for clients to trust.
pub fn self_signed_tls(alpn: &[&[u8]]) -> (rustls::ServerConfig, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    (config, cert.pem())
}

async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = Upstream {
        addr,
        seen: seen.clone(),
        scheme: if tls.is_some() { "https" } else { "http" },
    };
    tokio::spawn(async move {
        let mut conns = 0;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            conns += 1;
            let (seen, tls, conn) = (seen.clone(), tls.clone(), conns);
            tokio::spawn(async move {
                match tls {
                    None => serve_connection(stream, seen, conn).await,
                    // A client that refuses the certificate ends here, unserved.
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            serve_connection(stream, seen, conn).await;
                        }
                    }
                }
            });
        }
    });
    up
}

async fn serve_connection<S>(stream: S, seen: Arc<Mutex<Vec<Seen>>>, conn: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _ = http1::Builder::new()
        .serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| handle(seen.clone(), conn, req)),
        )
        .await;
}

/// An address where nothing listens (connection refused).
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// An upstream that accepts connections and closes them at once (connection reset).
pub async fn resetting_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            if let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        }
    });
    addr
}
