//! HTTP/1.1 on the wire, as the fast path sees it: pipelining, bodies arriving in pieces, every
//! response framing, upstreams that close kept-alive connections, and what it hands to hyper.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::TestEnv;

/// Sends `raw` on a new connection and reads until the gateway closes it.
async fn exchange(env: &TestEnv, raw: &[u8]) -> String {
    let addr = env.gw.address.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the gateway kept the connection open")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn statuses(answer: &str) -> Vec<&str> {
    answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let env = TestEnv::new().await;
    let (path, key) = (env.fx.path("/items"), &env.fx.key);
    let raw = format!(
        "GET {path}?n=1 HTTP/1.1\r\nHost: gw\r\nX-API-Key: {key}\r\n\r\n\
         POST {path}?n=2 HTTP/1.1\r\nHost: gw\r\nX-API-Key: {key}\r\nContent-Length: 5\r\n\r\nhello\
         GET {path}?n=3 HTTP/1.1\r\nHost: gw\r\nX-API-Key: nope\r\n\r\n\
         DELETE {path}?n=4 HTTP/1.1\r\nHost: gw\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
    );
    let answer = exchange(&env, raw.as_bytes()).await;
    assert_eq!(statuses(&answer), ["200", "200", "403", "200"], "{answer}");
    let seen = env.upstream.seen.lock().unwrap().clone();
    let got: Vec<(String, u64)> = seen
        .iter()
        .map(|s| (format!("{} {}", s.method, s.uri), s.body_len))
        .collect();
    assert_eq!(
        got,
        [
            ("GET /base/items?n=1".to_owned(), 0),
            ("POST /base/items?n=2".to_owned(), 5),
            ("DELETE /base/items?n=4".to_owned(), 0),
        ]
    );
    assert!(answer.contains("connection: close"), "{answer}");
}

#[tokio::test]
async fn a_body_arriving_in_pieces_reaches_the_upstream_whole() {
    let env = TestEnv::new().await;
    let addr = env.gw.address.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: gw\r\nX-API-Key: {}\r\nContent-Length: 300000\r\n\r\n",
        env.fx.path("/blob"),
        env.fx.key
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let piece = vec![b'z'; 100_000];
    for _ in 0..3 {
        s.write_all(&piece).await.unwrap();
        s.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let seen = env.upstream.last();
    assert_eq!((seen.method.as_str(), seen.body_len), ("PUT", 300_000));
}

/// An upstream speaking raw HTTP/1.1: for each connection, answers one request with `answer` and
/// then closes the connection without announcing it.
async fn raw_upstream(answer: &'static [u8]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(s);
                let mut line = String::new();
                // Read the head up to its blank line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let mut s = reader.into_inner();
                let _ = s.write_all(answer).await;
                // Closing after one answer, as an upstream's idle timeout would.
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn chunked_and_close_delimited_bodies_pass_through_intact() {
    let env = TestEnv::new().await;
    let chunked = raw_upstream(
        // A stray Content-Length beside chunked must not reach the client (two framings).
        b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n\
          5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n",
    )
    .await;
    env.point_api_at(chunked, 2000).await;
    for _ in 0..3 {
        let resp = env.get("/x").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["transfer-encoding"], "chunked");
        assert!(resp.headers().get("content-length").is_none());
        assert!(resp.headers().contains_key("x-ratelimit-limit"));
        assert_eq!(resp.text().await.unwrap(), "hello, world");
    }
    let until_close = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nno length, ends at close",
    )
    .await;
    env.point_api_at(until_close, 2000).await;
    let resp = env.get("/x").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "no length, ends at close");
}

#[tokio::test]
async fn an_upstream_closing_kept_alive_connections_fails_no_request() {
    let env = TestEnv::new().await;
    // Says nothing about closing, then closes: every reuse of its connections meets a closed socket.
    let closing =
        raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
            .await;
    env.point_api_at(closing, 2000).await;
    let client = reqwest::Client::new();
    let url = format!("{}{}", env.gw.address, env.fx.path("/again"));
    for i in 0..20 {
        let resp = client
            .get(&url)
            .header("X-API-Key", &env.fx.key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.text().await.unwrap(), "ok");
        if i % 2 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test]
async fn http_1_0_chunked_uploads_and_health_are_served_on_the_same_connection_types() {
    let env = TestEnv::new().await;
    let (path, key) = (env.fx.path("/old"), &env.fx.key);
    // HTTP/1.0 goes to hyper, which answers it and closes.
    let answer = exchange(
        &env,
        format!("GET {path} HTTP/1.0\r\nHost: gw\r\nX-API-Key: {key}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert_eq!(env.upstream.last().uri, "/base/old");
    // A chunked upload after a fast-path request on the same connection.
    let answer = exchange(
        &env,
        format!(
            "GET {path} HTTP/1.1\r\nHost: gw\r\nX-API-Key: {key}\r\n\r\n\
             POST {path} HTTP/1.1\r\nHost: gw\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\n\r\n\
             3\r\nabc\r\n0\r\n\r\n\
             GET /health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(statuses(&answer), ["200", "200", "200"], "{answer}");
    assert_eq!(env.upstream.last().body_len, 3);
    assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");
}

#[tokio::test]
async fn idle_connections_and_trickled_heads_are_closed_at_the_header_deadline() {
    let env = crate::helpers::TestEnv::with(crate::helpers::EnvOptions {
        proxy: Some(data_plane::config::ProxySettings {
            header_timeout_ms: 300,
            ..data_plane::config::ProxySettings::default()
        }),
        ..crate::helpers::EnvOptions::default()
    })
    .await;
    let addr = env.gw.address.trim_start_matches("http://").to_owned();
    // After one answered request, the kept-alive connection sits idle and is closed.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let raw = format!(
        "GET {} HTTP/1.1\r\nHost: gw\r\nX-API-Key: {}\r\n\r\n",
        env.fx.path("/idle"),
        env.fx.key
    );
    s.write_all(raw.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an idle connection must be closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() >= Duration::from_millis(250));
    // A head sent a byte at a time, each within the deadline, still runs out of time in all.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut closed = false;
    for b in raw.bytes().cycle().take(400) {
        tick.tick().await;
        if s.write_all(&[b]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled head must not hold the connection open");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn answers_with_bare_lf_line_ends_or_interim_heads_are_relayed() {
    let env = TestEnv::new().await;
    for (answer, body) in [
        // Bare LF line ends, and a body that holds CRLF CRLF (not the end of the head).
        (
            &b"HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 9\n\nab\r\n\r\ncde"[..],
            "ab\r\n\r\ncde",
        ),
        // An interim 103 before the answer: only the answer reaches the client.
        (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "ok",
        ),
    ] {
        env.point_api_at(raw_upstream(answer).await, 2000).await;
        let resp = env.get("/x").await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("x-ratelimit-limit"));
        assert_eq!(resp.text().await.unwrap(), body);
    }
}

#[tokio::test]
async fn an_answer_with_conflicting_lengths_is_a_502_not_passed_on() {
    let env = TestEnv::new().await;
    let bad = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\nok and then some more",
    )
    .await;
    env.point_api_at(bad, 2000).await;
    let resp = env.get("/x").await;
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_unreachable");
}

#[tokio::test]
async fn every_forwarded_for_line_reaches_the_upstream_as_one_list_on_both_paths() {
    let env = TestEnv::new().await;
    let (path, key) = (env.fx.path("/xff"), &env.fx.key);
    // HTTP/1.1 takes the fast path, HTTP/1.0 the hyper one.
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let answer = exchange(
            &env,
            format!(
                "GET {path} {version}\r\nHost: gw\r\nX-API-Key: {key}\r\n\
                 X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.7, 192.0.2.1\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert!(answer.contains(" 200 "), "{version}: {answer}");
        let seen = env.upstream.last().headers;
        assert_eq!(
            seen.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["203.0.113.9, 198.51.100.7, 192.0.2.1, 127.0.0.1"],
            "{version}"
        );
    }
}
