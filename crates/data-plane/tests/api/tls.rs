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
