//! HTTPS upstreams: the data plane verifies an upstream's certificate against the roots it trusts
//! (the system's, or those in `SSL_CERT_FILE`) and refuses one it cannot verify.

use domain::testing::TestDb;
use serde_json::Value;

use crate::helpers::{generous, seed};
use crate::process::Proc;
use crate::upstream::spawn_tls_upstream;

#[tokio::test]
async fn https_upstreams_are_verified_against_the_trusted_roots() {
    let (trusted, trusted_pem) = spawn_tls_upstream().await;
    let (untrusted, _) = spawn_tls_upstream().await;
    let db = TestDb::sqlite().await;
    let good = seed(&db.db, "good", &trusted.url("/base"), generous()).await;
    let bad = seed(&db.db, "bad", &untrusted.url(""), generous()).await;
    let roots = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(roots.path(), trusted_pem).unwrap();
    let roots = roots.path().to_str().unwrap();
    let proc = Proc::spawn(&db.url, None, &[("SSL_CERT_FILE", roots)]);
    let client = reqwest::Client::new();

    for _ in 0..2 {
        let resp = client
            .post(format!("{}{}", proc.address, good.path("/items?x=1")))
            .header("x-api-key", &good.key)
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "a verified upstream is served");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            (
                body["method"].as_str(),
                body["uri"].as_str(),
                body["body_len"].as_u64()
            ),
            (Some("POST"), Some("/base/items?x=1"), Some(5))
        );
    }
    assert_eq!(trusted.count(), 2);

    let resp = client
        .get(format!("{}{}", proc.address, bad.path("/x")))
        .header("x-api-key", &bad.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502, "an unverifiable certificate is refused");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_unreachable");
    assert_eq!(untrusted.count(), 0, "nothing was sent to it");
    proc.terminate();
}

/// An upstream speaking HTTP/2 only, over TLS (ALPN `h2`): it answers with the protocol version
/// it was spoken to in. Its address and certificate (PEM).
async fn spawn_h2_tls_upstream() -> (std::net::SocketAddr, String) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (config, pem) = crate::upstream::self_signed_tls(&[b"h2"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?}", req.version());
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, pem)
}

#[tokio::test]
async fn an_api_set_to_h2_speaks_http2_over_tls_to_its_upstream() {
    let (upstream, pem) = spawn_h2_tls_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(&db.db, "acme", &format!("https://{upstream}"), generous()).await;
    let mut a = domain::sea_orm::IntoActiveModel::into_active_model(fx.api.clone());
    a.upstream_protocol = domain::sea_orm::ActiveValue::Set("h2".to_owned());
    let _: domain::entities::api::Model = domain::sea_orm::ActiveModelTrait::update(a, &db.db)
        .await
        .unwrap();
    let roots = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(roots.path(), pem).unwrap();
    let proc = Proc::spawn(
        &db.url,
        None,
        &[("SSL_CERT_FILE", roots.path().to_str().unwrap())],
    );
    let resp = reqwest::Client::new()
        .get(format!("{}{}", proc.address, fx.path("/v")))
        .header("x-api-key", &fx.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        "HTTP/2.0",
        "HTTP/2 to the upstream, by ALPN"
    );
    proc.terminate();
}
