//! Protocols beyond plain HTTP/1.1 from clients: TLS termination (ALPN `h2` and `http/1.1`,
//! certificate reload), HTTP/2 with prior knowledge (h2c) on the plain listener, and WebSocket
//! relays — each with real peers (rustls, hyper's HTTP/2 client, tokio-tungstenite).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use domain::entities::api;
use domain::sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};
use domain::store;
use domain::testing::TestDb;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{TestEnv, generous, limits, seed, settings_for, spawn_gateway};
use crate::upstream::spawn_upstream;

/// A self-signed certificate for 127.0.0.1 written to `dir`: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    (cert.pem(), signing_key.serialize_pem())
}

/// A TLS client trusting `root_pem` only, offering `alpn`.
fn tls_client(root_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(
    addr: SocketAddr,
    root_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tls_client(root_pem, alpn).connect(name, tcp).await
}

/// An HTTP/2 connection over `io` (TLS with ALPN `h2`, or cleartext with prior knowledge).
async fn h2<I>(io: I) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// `GET uri` with `key` on an HTTP/2 connection: status, rate-limit remaining, body.
async fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    uri: &str,
    key: &str,
) -> (StatusCode, Option<String>, Bytes) {
    let req = Request::get(uri)
        .header("x-api-key", key)
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let remaining = resp
        .headers()
        .get("x-ratelimit-remaining")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, remaining, body)
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one connection of each kind, then the reload
async fn https_speaks_h2_and_http11_by_alpn_beside_plain_http_and_reloads_its_certificate() {
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(&db.db, "acme", &upstream.url("/base"), generous()).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (first_cert, first_key) = certificate();
    std::fs::write(&cert_path, &first_cert).unwrap();
    std::fs::write(&key_path, &first_key).unwrap();
    let mut settings = settings_for(&db.url, None);
    settings.listen.data_plane_tls_cert = Some(cert_path.clone());
    settings.listen.data_plane_tls_key = Some(key_path.clone());
    settings.listen.data_plane_tls_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let gw = spawn_gateway(settings, None).await;
    let tls_addr = gw.tls_addr.expect("an HTTPS address");
    let uri = format!(
        "https://127.0.0.1:{}{}",
        tls_addr.port(),
        fx.path("/items?q=1")
    );

    // HTTP/2 by ALPN: the same pipeline (the key, the limits' fields, the upstream's answer).
    let stream = tls_connect(tls_addr, &first_cert, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut kept = h2(stream).await;
    let (status, remaining, body) = h2_get(&mut kept, &uri, &fx.key).await;
    assert_eq!(status, 200, "{body:?}");
    assert!(
        remaining.is_some(),
        "the rate-limit fields are on HTTP/2 answers too"
    );
    let seen = upstream.last();
    assert_eq!(seen.uri, "/base/items?q=1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert!(
        seen.headers["forwarded"]
            .to_str()
            .unwrap()
            .ends_with(";proto=https"),
        "{:?}",
        seen.headers["forwarded"]
    );
    let (status, _, _) = h2_get(&mut kept, &uri, "gw_nonsense").await;
    assert_eq!(
        status, 403,
        "a bad key is refused over HTTP/2 as over HTTP/1.1"
    );

    // HTTP/1.1 by ALPN.
    let stream = tls_connect(tls_addr, &first_cert, &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(fx.path("/one"))
        .header("host", "127.0.0.1")
        .header("x-api-key", &fx.key)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = h1.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let _ = resp.into_body().collect().await.unwrap();
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "https");
    // Large bodies both ways on the same connection (the fast engine streams them through TLS).
    let req = Request::get(fx.path("/bytes/3000000"))
        .header("host", "127.0.0.1")
        .header("x-api-key", &fx.key)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = h1.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().len(),
        3_000_000
    );
    let (mut h1, conn) = {
        let stream = tls_connect(tls_addr, &first_cert, &[b"http/1.1"])
            .await
            .unwrap();
        hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap()
    };
    tokio::spawn(conn);
    let req = Request::post(fx.path("/upload"))
        .header("host", "127.0.0.1")
        .header("x-api-key", &fx.key)
        .body(http_body_util::Full::new(Bytes::from(vec![
            b'u';
            1_000_000
        ])))
        .unwrap();
    let resp = h1.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["body_len"], 1_000_000);

    // Plain HTTP on the main address, side by side.
    let resp = gw.get(&fx.path("/plain"), &fx.key).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "http");

    // A new certificate (another key) is picked up without a restart...
    let (second_cert, second_key) = certificate();
    std::fs::write(&key_path, &second_key).unwrap();
    std::fs::write(&cert_path, &second_cert).unwrap();
    let changed = Instant::now();
    loop {
        if tls_connect(tls_addr, &second_cert, &[b"h2"]).await.is_ok() {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "the new certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tls_connect(tls_addr, &first_cert, &[b"h2"]).await.is_err(),
        "the old certificate is no longer served"
    );
    // ...and the connection opened before it still works.
    let (status, _, _) = h2_get(&mut kept, &uri, &fx.key).await;
    assert_eq!(status, 200, "an open connection survives the reload");
    gw.stop().await;
}

#[tokio::test]
async fn a_half_configured_certificate_stops_the_start_with_a_message_naming_the_setting() {
    let db = TestDb::sqlite().await;
    let mut settings = settings_for(&db.url, None);
    settings.listen.data_plane_tls_cert = Some("/nonexistent/cert.pem".into());
    let err = data_plane::Application::build(settings.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("GATEWAY_DATA_PLANE_TLS_KEY"),
        "{err}"
    );
    settings.listen.data_plane_tls_key = Some("/nonexistent/key.pem".into());
    let err = data_plane::Application::build(settings)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served_on_the_plain_listener_under_the_same_limits() {
    let env = TestEnv::with(crate::helpers::EnvOptions {
        limits: limits(60, Some(3), None, None),
        ..Default::default()
    })
    .await;
    let addr: SocketAddr = env
        .gw
        .address
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let mut send = h2(TcpStream::connect(addr).await.unwrap()).await;
    let uri = format!("http://{addr}{}", env.fx.path("/x"));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(h2_get(&mut send, &uri, &env.fx.key).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|s| s.0.as_u16()).collect();
    assert_eq!(codes, [200, 200, 200, 429], "a burst of 3 over h2c");
    assert_eq!(
        statuses.iter().map(|s| s.1.as_deref()).collect::<Vec<_>>(),
        [Some("2"), Some("1"), Some("0"), Some("0")]
    );
    let refusal: serde_json::Value = serde_json::from_slice(&statuses[3].2).unwrap();
    assert_eq!(refusal["error"]["type"], "rate_limited");
    assert_eq!(env.upstream.count(), 3);
    assert_eq!(env.upstream.last().headers["x-forwarded-proto"], "http");
    // HTTP/1.1 on the same listener still takes the fast path.
    assert_eq!(env.get("/y").await.status(), 429);
}

/// A WebSocket echo server (tokio-tungstenite): its address.
async fn spawn_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        break;
                    }
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_connect(
    gateway: &str,
    path: &str,
    key: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    ws_connect_as(gateway, path, key, "rid-ws").await
}

async fn ws_connect_as(
    gateway: &str,
    path: &str,
    key: Option<&str>,
    request_id: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let addr = gateway.trim_start_matches("http://");
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(k) = key {
        req.headers_mut().insert("x-api-key", k.parse().unwrap());
    }
    req.headers_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(req, tcp)
        .await
        .map(|(ws, _)| ws)
}

/// Waits (up to `within`) for the socket to end: closed by the gateway.
async fn ended_within(ws: &mut Ws, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(m)) if m.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn websockets_are_authenticated_counted_once_relayed_and_closed_when_their_key_is_revoked() {
    let echo = spawn_echo().await;
    let db = TestDb::sqlite().await;
    let fx = seed(
        &db.db,
        "acme",
        &format!("http://{echo}"),
        limits(60, Some(3), None, None),
    )
    .await;
    let gw = spawn_gateway(settings_for(&db.url, None), None).await;

    // No key: the upgrade is refused with the gateway's 401, nothing reaches the upstream.
    match ws_connect(&gw.address, &fx.path("/chat"), None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| ())),
    }

    // With the key: messages both ways, any number of them, for one request of the plan.
    let mut ws = ws_connect_as(&gw.address, &fx.path("/chat"), Some(&fx.key), "rid-echo")
        .await
        .unwrap();
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("hello {i}"))
        );
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.unwrap();
    assert!(ended_within(&mut ws, Duration::from_secs(5)).await);
    drop(ws);
    // Burst 3: the socket took one, so two plain requests are admitted (the upstream speaks
    // WebSocket only: its answer to them is the gateway's 502) and the third is refused.
    let statuses = [
        gw.get(&fx.path("/a"), &fx.key).await.status().as_u16(),
        gw.get(&fx.path("/b"), &fx.key).await.status().as_u16(),
        gw.get(&fx.path("/c"), &fx.key).await.status().as_u16(),
    ];
    assert_eq!(
        statuses,
        [502, 502, 429],
        "the socket counted as one request"
    );
    // The relay ends with the socket.
    let closed = Instant::now();
    while crate::helpers::metric_at(&gw.client, &gw.address, "gateway_websockets_open").await != 0 {
        assert!(
            closed.elapsed() < Duration::from_secs(5),
            "the relay outlived its socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop().await;
    // One record for the socket, when it ended, with the bytes that crossed it: five text
    // frames and a binary one each way (a client's frames carry a 4-byte mask), and the closes.
    let q = domain::store::request_log::LogQuery {
        request_id: Some("rid-echo".to_owned()),
        ..Default::default()
    };
    let logged = domain::store::request_log::list(&db.db, &q, None, 10)
        .await
        .unwrap();
    assert_eq!(logged.len(), 1);
    let (r, d) = (&logged[0], logged[0].detail());
    assert_eq!((r.status, r.method.as_str()), (101, "GET"));
    let (sent, echoed) = (5 * (7 + 6) + (4 + 6), 5 * (7 + 2) + (4 + 2));
    assert!(
        d.bytes_in >= sent && d.bytes_in < sent + 32,
        "{}",
        d.bytes_in
    );
    assert!(
        d.bytes_out >= echoed && d.bytes_out < echoed + 32,
        "{}",
        d.bytes_out
    );
}

#[tokio::test]
async fn an_open_websocket_is_closed_within_a_second_of_its_key_being_revoked() {
    let echo = spawn_echo().await;
    let db = TestDb::sqlite().await;
    let fx = seed(&db.db, "acme", &format!("http://{echo}"), generous()).await;
    let gw = spawn_gateway(settings_for(&db.url, None), None).await;
    let mut ws = ws_connect(&gw.address, &fx.path("/chat"), Some(&fx.key))
        .await
        .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    store::revoke_key(&db.db, fx.tenant.id, fx.key_id)
        .await
        .unwrap();
    let revoked = Instant::now();
    gw.reload().await; // what the config event (or the poll) does
    assert!(
        ended_within(&mut ws, Duration::from_secs(1)).await,
        "the socket was still open 1 s after the revocation"
    );
    assert!(revoked.elapsed() < Duration::from_secs(1));
    // A new socket with the revoked key is refused.
    match ws_connect(&gw.address, &fx.path("/chat"), Some(&fx.key)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_websocket_is_closed_after_its_apis_idle_timeout() {
    let echo = spawn_echo().await;
    let db = TestDb::sqlite().await;
    let fx = seed(&db.db, "acme", &format!("http://{echo}"), generous()).await;
    let mut a = fx.api.clone().into_active_model();
    a.websocket_idle_timeout_ms = Set(1_000);
    let _: api::Model = a.update(&db.db).await.unwrap();
    let gw = spawn_gateway(settings_for(&db.url, None), None).await;
    let mut ws = ws_connect(&gw.address, &fx.path("/chat"), Some(&fx.key))
        .await
        .unwrap();
    // Traffic keeps it open past the timeout...
    let opened = Instant::now();
    let mut quiet = Instant::now();
    while opened.elapsed() < Duration::from_millis(1_500) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ws.send(Message::text("ping")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
        quiet = Instant::now();
    }
    // ...silence closes it.
    assert!(ended_within(&mut ws, Duration::from_secs(5)).await);
    assert!(
        quiet.elapsed() >= Duration::from_secs(1),
        "closed after {:?} of silence",
        quiet.elapsed()
    );
    gw.stop().await;
}
