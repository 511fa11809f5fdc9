//! 100 MB through the gateway each way, streamed: the data plane's memory must not grow with it.

use domain::testing::TestDb;
use futures_util::StreamExt;

use crate::helpers::{generous, seed};
use crate::process::Proc;
use crate::upstream::spawn_upstream;

const MB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_upload_and_download_stream_with_bounded_memory() {
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(&db.db, "acme", &upstream.url(""), generous()).await;
    let proc = Proc::spawn(
        &db.url,
        None,
        &[("GATEWAY_MAX_BODY_BYTES", &(200 * MB).to_string())],
    );
    let client = reqwest::Client::new();
    let url = |rest: &str| format!("{}{}", proc.address, fx.path(rest));

    // Warm up: connection pools, the first snapshot, allocator arenas.
    let resp = client
        .get(url("/bytes/1048576"))
        .header("x-api-key", &fx.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().len() as u64, MB);
    let baseline = proc.peak_rss_kib();

    // Upload: 100 MB generated on the fly, never held anywhere.
    let chunk = bytes::Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks =
        futures_util::stream::iter((0..400).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = client
        .post(url("/upload"))
        .header("x-api-key", &fx.key)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.last().body_len, 100 * MB);

    // Download: 100 MB from the upstream, counted as it arrives.
    let resp = client
        .get(url(&format!("/bytes/{}", 100 * MB)))
        .header("x-api-key", &fx.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut received = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, 100 * MB);

    let growth_mib = proc.peak_rss_kib().saturating_sub(baseline) / 1024;
    assert!(
        growth_mib < 32,
        "peak RSS grew by {growth_mib} MiB while streaming 200 MB"
    );
}
