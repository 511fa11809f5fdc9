//! HTTPS on the control plane: `GATEWAY_CONTROL_PLANE_TLS_CERT` / `_KEY`, served by rustls to a
//! rustls client, and a new certificate picked up without a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control_plane::config::ControlPlaneSettings;
use control_plane::startup::Application;
use domain::testing::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

fn certificate() -> (String, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    (cert.pem(), signing_key.serialize_pem())
}

/// `GET path` over TLS trusting `root_pem` only: the answer's head and body, or the handshake's
/// error.
async fn https_get(addr: SocketAddr, root_pem: &str, path: &str) -> std::io::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn the_control_plane_serves_https_and_reloads_its_certificate() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (first_cert, first_key) = certificate();
    std::fs::write(&cert_path, &first_cert).unwrap();
    std::fs::write(&key_path, &first_key).unwrap();
    let mut settings = ControlPlaneSettings::for_tests(&db.url);
    settings.listen.control_plane_tls_cert = Some(cert_path.clone());
    settings.listen.control_plane_tls_key = Some(key_path.clone());
    let app = Application::build(settings).await.unwrap();
    let addr = app.local_addr();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());

    let answer = https_get(addr, &first_cert, "/login").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = https_get(addr, &first_cert, "/health").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Plain HTTP is not served on the HTTPS address.
    let plain = reqwest::get(format!("http://{addr}/health")).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    let (second_cert, second_key) = certificate();
    std::fs::write(&key_path, &second_key).unwrap();
    std::fs::write(&cert_path, &second_cert).unwrap();
    let changed = Instant::now();
    while https_get(addr, &second_cert, "/health").await.is_err() {
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "the new certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.stop(true).await;
}

#[tokio::test]
async fn a_key_without_a_certificate_stops_the_start_naming_the_setting() {
    let db = TestDb::sqlite().await;
    let mut settings = ControlPlaneSettings::for_tests(&db.url);
    settings.listen.control_plane_tls_key = Some("/nonexistent/key.pem".into());
    let err = Application::build(settings).await.err().expect("refused");
    assert!(
        err.to_string().contains("GATEWAY_CONTROL_PLANE_TLS_CERT"),
        "{err}"
    );
}
