//! Hostile requests, on both engines: smuggling through `Connection` nominations, CL+TE, duplicate
//! lengths, malformed chunks, two `Host` fields, fragments, `CONNECT`, bodies that break or end
//! mid-way. In every case the upstream sees at most the one request the client meant, on its
//! API's path, and a connection that carried a broken request is never used again.

use data_plane::config::{Engine, ProxySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Answer, EnvOptions, Fixture, TestEnv, generous, limits, read_answers, seed};
use crate::upstream::Seen;

const ENGINES: [Engine; 2] = [Engine::Fast, Engine::Hyper];

/// A request the body of a hostile one carries, aimed at another tenant's upstream path with
/// gateway fields of the attacker's choosing.
const SMUGGLED: &str = "GET /bobbase/SMUGGLED-RAW HTTP/1.1\r\nHost: up\r\n\
                        X-Gateway-Tenant: bob\r\nX-Gateway-Key-Id: 1\r\n\r\n";

/// Tenant `acme` (the attacker) and tenant `bob` on one upstream, on one engine.
struct Hostile {
    env: TestEnv,
    bob: Fixture,
    engine: Engine,
}

async fn hostile_env(
    engine: Engine,
    max_body_bytes: u64,
    acme_limits: Option<(i64, i64)>,
) -> Hostile {
    let env = TestEnv::with(EnvOptions {
        limits: acme_limits.map_or_else(generous, |(rpm, day)| limits(rpm, None, Some(day), None)),
        proxy: Some(ProxySettings {
            engine,
            max_body_bytes,
            ..ProxySettings::default()
        }),
        ..EnvOptions::default()
    })
    .await;
    let bob = seed(&env.db.db, "bob", &env.upstream.url("/bobbase"), generous()).await;
    env.gw.reload().await;
    Hostile { env, bob, engine }
}

async fn connect(h: &Hostile) -> TcpStream {
    TcpStream::connect(h.env.gw.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Sends `raw` on a new connection and reads the first answer (`None` when the gateway closed
/// without one).
async fn first_answer(h: &Hostile, raw: &[u8]) -> Option<Answer> {
    let mut s = connect(h).await;
    // The gateway may refuse before reading all of it, and close.
    let _ = s.write_all(raw).await;
    read_answers(&mut s, 1).await.into_iter().next()
}

/// What the hostile request may have delivered upstream.
struct Meant {
    uri: &'static str,
    /// `None`: the body broke mid-way, so whatever part of it arrived.
    body_len: Option<u64>,
}

/// Bob's ordinary traffic after a hostile request: each gets its own answer; then the upstream's
/// log holds nothing but the one request the attacker meant (if any) and bob's, and a connection
/// that carried a broken request was not used again.
async fn assert_clean(
    h: &Hostile,
    before: usize,
    meant: Option<&Meant>,
    poisoned: bool,
    case: &str,
) {
    let engine = h.engine;
    for i in 0..6 {
        let path = h.bob.path(&format!("/after/{i}"));
        let resp = h.env.gw.get(&path, &h.bob.key).await;
        assert_eq!(resp.status(), 200, "{engine:?} {case}: bob's request {i}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            body["uri"],
            format!("/bobbase/after/{i}"),
            "{engine:?} {case}: bob got another request's answer"
        );
    }
    let seen: Vec<Seen> = h.env.upstream.seen.lock().unwrap()[before..].to_vec();
    let (bobs, others): (Vec<&Seen>, Vec<&Seen>) = seen
        .iter()
        .partition(|s| s.uri.starts_with("/bobbase/after/"));
    assert_eq!(bobs.len(), 6, "{engine:?} {case}");
    for s in &bobs {
        assert_eq!(s.headers["x-gateway-tenant"], "bob", "{engine:?} {case}");
    }
    match meant {
        None => assert!(
            others.is_empty(),
            "{engine:?} {case}: nothing should have reached the upstream: {others:?}"
        ),
        Some(m) => {
            assert!(others.len() <= 1, "{engine:?} {case}: smuggled: {others:?}");
            for s in &others {
                assert_eq!(s.uri, m.uri, "{engine:?} {case}");
                assert_eq!(s.headers["x-gateway-tenant"], "acme", "{engine:?} {case}");
                assert_eq!(s.headers.get_all("x-gateway-tenant").iter().count(), 1);
                if let Some(len) = m.body_len {
                    assert_eq!(s.body_len, len, "{engine:?} {case}");
                }
                if poisoned {
                    assert!(
                        bobs.iter().all(|b| b.conn != s.conn),
                        "{engine:?} {case}: a connection that carried a broken request was reused"
                    );
                }
            }
            if meant.is_some_and(|m| m.body_len.is_some()) && !poisoned {
                assert_eq!(others.len(), 1, "{engine:?} {case}: the request was lost");
            }
        }
    }
}

fn post_with(h: &Hostile, fields: &str, body: &str) -> String {
    format!(
        "POST {} HTTP/1.1\r\nHost: gw\r\nX-API-Key: {}\r\n{fields}\r\n{body}",
        h.env.fx.path("/a"),
        h.env.fx.key
    )
}

#[tokio::test]
async fn regression_connection_nominating_content_length_smuggles_nothing() {
    // The original report: a key on a 1-request/day plan, `Connection: content-length`, a body of
    // requests for another tenant's path with gateway fields of the attacker's choosing.
    for engine in ENGINES {
        let h = hostile_env(engine, 200_000, Some((1000, 1))).await;
        let body: String = (0..10)
            .map(|i| {
                if i % 3 == 0 {
                    "GET /bobbase/slow/300 HTTP/1.1\r\nHost: up\r\nX-Gateway-Tenant: bob\r\n\r\n"
                        .to_owned()
                } else {
                    SMUGGLED.to_owned()
                }
            })
            .collect();
        let raw = post_with(
            &h,
            &format!(
                "Connection: content-length\r\nContent-Length: {}\r\n",
                body.len()
            ),
            &body,
        );
        let answer = first_answer(&h, raw.as_bytes()).await.expect("an answer");
        assert_eq!(answer.status, 200, "{engine:?}: {answer:?}");
        let echoed: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(echoed["uri"], "/base/a");
        assert_eq!(echoed["body_len"], body.len());
        let meant = Meant {
            uri: "/base/a",
            body_len: Some(body.len() as u64),
        };
        assert_clean(&h, 0, Some(&meant), false, "regression").await;
        // The day's one request is spent: the smuggled ones were never delivered, so never
        // counted either, and the next one is refused.
        let again = h.env.get("/b").await;
        assert_eq!(again.status(), 429, "{engine:?}");
        let seen = h.env.upstream.seen.lock().unwrap().clone();
        assert!(
            seen.iter()
                .all(|s| !s.uri.contains("SMUGGLED") && !s.uri.contains("slow"))
        );
    }
}

#[tokio::test]
async fn connection_can_never_nominate_framing_host_or_gateway_fields() {
    let nominations: &[&str] = &[
        "Connection: content-length\r\n",
        "Connection: Content-LENGTH\r\n",
        "Connection: close, content-length\r\n",
        "Connection: keep-alive\r\nConnection: content-length\r\n",
        "Connection: transfer-encoding\r\n",
        "Connection: host\r\n",
        "Connection: x-gateway-tenant, X-Gateway-Key-Id\r\nX-Gateway-Tenant: bob\r\n",
        "Connection: x_gateway_tenant\r\nX_Gateway_Tenant: bob\r\n",
        "Connection: keep-alive, te, trailer, upgrade, content-length\r\n",
    ];
    for engine in ENGINES {
        let h = hostile_env(engine, 200_000, None).await;
        for nomination in nominations {
            let before = h.env.upstream.count();
            let raw = post_with(
                &h,
                &format!("{nomination}Content-Length: {}\r\n", SMUGGLED.len()),
                SMUGGLED,
            );
            let answer = first_answer(&h, raw.as_bytes()).await.expect("an answer");
            assert_eq!(answer.status, 200, "{engine:?} {nomination:?}: {answer:?}");
            let meant = Meant {
                uri: "/base/a",
                body_len: Some(SMUGGLED.len() as u64),
            };
            assert_clean(&h, before, Some(&meant), false, nomination).await;
            let seen = h.env.upstream.seen.lock().unwrap()[before].clone();
            assert_eq!(
                seen.headers["content-length"],
                SMUGGLED.len().to_string(),
                "{engine:?} {nomination:?}"
            );
            assert!(seen.headers.get("x_gateway_tenant").is_none());
            assert_eq!(seen.headers["host"], h.env.upstream.addr.to_string());
        }
    }
}

/// (case, fields, body, expected status, what the upstream may see)
type FramingCase = (&'static str, String, String, u16, Option<&'static Meant>);

static FIVE: Meant = Meant {
    uri: "/base/a",
    body_len: Some(5),
};

fn framing_cases() -> Vec<FramingCase> {
    vec![
        (
            "CL then TE",
            "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n".into(),
            format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            200,
            Some(&FIVE),
        ),
        (
            "TE then CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n".into(),
            format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            200,
            Some(&FIVE),
        ),
        (
            "same length twice",
            "Content-Length: 5\r\nContent-Length: 5\r\n".into(),
            "hello".into(),
            200,
            Some(&FIVE),
        ),
        (
            "two different lengths",
            "Content-Length: 5\r\nContent-Length: 50\r\n".into(),
            format!("hello{SMUGGLED}"),
            400,
            None,
        ),
        (
            "a length list",
            "Content-Length: 5, 50\r\n".into(),
            format!("hello{SMUGGLED}"),
            400,
            None,
        ),
        (
            "a signed length",
            "Content-Length: +5\r\n".into(),
            format!("hello{SMUGGLED}"),
            400,
            None,
        ),
        (
            "chunk size with leading spaces",
            "Transfer-Encoding: chunked\r\n".into(),
            format!("  5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            400,
            None,
        ),
        (
            "chunk size 0x5",
            "Transfer-Encoding: chunked\r\n".into(),
            format!("0x5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            400,
            None,
        ),
        (
            "negative chunk size",
            "Transfer-Encoding: chunked\r\n".into(),
            format!("-5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            400,
            None,
        ),
        (
            "chunk size overflow",
            "Transfer-Encoding: chunked\r\n".into(),
            format!("1ffffffffffffffff5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            400,
            None,
        ),
        (
            "bare LF in a chunk extension",
            "Transfer-Encoding: chunked\r\n".into(),
            format!("5;ext=1\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            400,
            None,
        ),
        (
            "chunk data longer than its size",
            "Transfer-Encoding: chunked\r\n".into(),
            format!("3\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            400,
            None,
        ),
        (
            "a coding other than chunked",
            "Transfer-Encoding: gzip\r\n".into(),
            format!("hello{SMUGGLED}"),
            400,
            None,
        ),
        (
            "two Host fields",
            "Host: other\r\nContent-Length: 5\r\n".into(),
            "hello".into(),
            400,
            None,
        ),
    ]
}

#[tokio::test]
async fn conflicting_framing_and_malformed_chunks_reach_no_upstream() {
    let cases = framing_cases();
    for engine in ENGINES {
        let h = hostile_env(engine, 200_000, None).await;
        for (case, fields, body, status, meant) in &cases {
            let before = h.env.upstream.count();
            let raw = post_with(&h, fields, body);
            let answer = first_answer(&h, raw.as_bytes()).await.expect("an answer");
            assert_eq!(answer.status, *status, "{engine:?} {case}: {answer:?}");
            // hyper answers a head it cannot parse with a bare 400 of its own; in front of it,
            // the fast engine answers those with the envelope.
            if *status == 400
                && (engine == Engine::Fast || !(case.contains("length") || case.contains("coding")))
            {
                let err: serde_json::Value = serde_json::from_slice(&answer.body)
                    .unwrap_or_else(|_| panic!("{engine:?} {case}: not the envelope: {answer:?}"));
                assert_eq!(err["error"]["code"], 400, "{engine:?} {case}");
            }
            assert_clean(&h, before, *meant, false, case).await;
        }
    }
}

#[tokio::test]
async fn fragments_and_connect_targets_never_leave_the_api_path() {
    for engine in ENGINES {
        let h = hostile_env(engine, 200_000, None).await;
        let (path, key) = (h.env.fx.path("/a"), h.env.fx.key.clone());
        // A fragment is not part of a request target: it goes nowhere.
        let before = h.env.upstream.count();
        let raw =
            format!("GET {path}#/../../bobbase HTTP/1.1\r\nHost: gw\r\nX-API-Key: {key}\r\n\r\n");
        let answer = first_answer(&h, raw.as_bytes()).await.expect("an answer");
        assert_eq!(answer.status, 200, "{engine:?}: {answer:?}");
        let meant = Meant {
            uri: "/base/a",
            body_len: Some(0),
        };
        assert_clean(&h, before, Some(&meant), false, "fragment").await;
        // CONNECT is refused, whatever its target: a 2xx would open a tunnel.
        for target in [
            path.clone(),
            "up:80".to_owned(),
            format!("{}:443", h.env.upstream.addr.ip()),
        ] {
            let before = h.env.upstream.count();
            let raw =
                format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nX-API-Key: {key}\r\n\r\n");
            let answer = first_answer(&h, raw.as_bytes()).await.expect("an answer");
            assert_eq!(
                answer.status, 405,
                "{engine:?} CONNECT {target}: {answer:?}"
            );
            assert_eq!(answer.header("connection"), Some("close"), "{engine:?}");
            assert_clean(&h, before, None, false, "CONNECT").await;
        }
    }
}

#[tokio::test]
async fn a_body_that_breaks_after_streaming_began_closes_that_upstream_connection() {
    for engine in ENGINES {
        let h = hostile_env(engine, 200_000, None).await;
        // A chunked body well past the read-ahead, then a chunk size that is not one.
        let before = h.env.upstream.count();
        let mut body = String::new();
        for _ in 0..10 {
            body.push_str("2710\r\n");
            body.push_str(&"x".repeat(10_000));
            body.push_str("\r\n");
        }
        body.push_str("zz\r\nhello\r\n0\r\n\r\n");
        body.push_str(SMUGGLED);
        let raw = post_with(&h, "Transfer-Encoding: chunked\r\n", &body);
        let answer = first_answer(&h, raw.as_bytes()).await;
        let a = answer.expect("an answer to the bad chunk");
        assert_eq!(a.status, 400, "{engine:?}: {a:?}");
        let meant = Meant {
            uri: "/base/a",
            body_len: None,
        };
        assert_clean(&h, before, Some(&meant), true, "bad chunk mid-body").await;

        // A chunked body that passes the size limit after streaming began: 413, connection gone.
        let before = h.env.upstream.count();
        let mut body = String::new();
        for _ in 0..30 {
            body.push_str("2710\r\n");
            body.push_str(&"y".repeat(10_000));
            body.push_str("\r\n");
        }
        body.push_str("0\r\n\r\n");
        let raw = post_with(&h, "Transfer-Encoding: chunked\r\n", &body);
        let answer = first_answer(&h, raw.as_bytes()).await;
        // The gateway stops reading at the limit and closes: the caller, still sending, may see
        // the reset before the answer.
        if let Some(a) = &answer {
            assert_eq!(a.status, 413, "{engine:?}: {a:?}");
        }
        assert_clean(&h, before, Some(&meant), true, "413 mid-body").await;

        // A body with a length that ends early (the caller stops sending): 400 to whoever is
        // still reading, and that upstream connection is closed.
        let before = h.env.upstream.count();
        let mut s = connect(&h).await;
        let head = post_with(&h, "Content-Length: 100000\r\n", "");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&vec![b'z'; 40_000]).await.unwrap();
        s.shutdown().await.unwrap();
        let answers = read_answers(&mut s, 1).await;
        let a = answers.first().expect("an answer to the short body");
        assert_eq!(a.status, 400, "{engine:?}: {a:?}");
        assert_clean(&h, before, Some(&meant), true, "early end").await;
    }
}

#[tokio::test]
async fn a_chunked_body_too_large_is_refused_before_the_upstream_hears_of_it() {
    for engine in ENGINES {
        let h = hostile_env(engine, 1000, None).await;
        let before = h.env.upstream.count();
        let body = format!("7d0\r\n{}\r\n0\r\n\r\n", "z".repeat(2000));
        let raw = post_with(&h, "Transfer-Encoding: chunked\r\n", &body);
        let answer = first_answer(&h, raw.as_bytes()).await.expect("an answer");
        assert_eq!(answer.status, 413, "{engine:?}: {answer:?}");
        assert_clean(&h, before, None, false, "chunked 413").await;
        // Within the limit, a chunked upload arrives with a length the gateway wrote.
        let before = h.env.upstream.count();
        let raw = post_with(
            &h,
            "Transfer-Encoding: chunked\r\n",
            "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        );
        let answer = first_answer(&h, raw.as_bytes()).await.expect("an answer");
        assert_eq!(answer.status, 200, "{engine:?}: {answer:?}");
        let seen = h.env.upstream.seen.lock().unwrap()[before].clone();
        assert_eq!(seen.body_len, 7);
        assert_eq!(seen.headers["content-length"], "7", "{engine:?}");
        assert!(seen.headers.get("transfer-encoding").is_none());
    }
}

/// An upstream that answers every request with `answer` (keeping the connection open).
async fn answering_upstream(answer: &'static [u8]) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Answer once per request head read.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_answer_whose_connection_field_nominates_its_length_keeps_its_framing() {
    for engine in ENGINES {
        let h = hostile_env(engine, 200_000, None).await;
        let up = answering_upstream(
            b"HTTP/1.1 200 OK\r\nConnection: content-length, x-up-hop\r\nX-Up-Hop: 1\r\n\
              Content-Length: 5\r\n\r\nhello",
        )
        .await;
        h.env.point_api_at(up, 2000).await;
        let mut s = connect(&h).await;
        let one = format!(
            "GET {} HTTP/1.1\r\nHost: gw\r\nX-API-Key: {}\r\n\r\n",
            h.env.fx.path("/x"),
            h.env.fx.key
        );
        s.write_all(format!("{one}{one}").as_bytes()).await.unwrap();
        let answers = read_answers(&mut s, 2).await;
        assert_eq!(answers.len(), 2, "{engine:?}: {answers:?}");
        for a in &answers {
            assert_eq!(a.status, 200, "{engine:?}");
            assert_eq!(a.header("content-length"), Some("5"), "{engine:?}: {a:?}");
            assert_eq!(a.body, b"hello");
            assert!(a.header("x-up-hop").is_none());
        }
    }
}

#[tokio::test]
async fn encoded_traversal_is_refused_and_encoded_slashes_pass_only_where_allowed() {
    for engine in ENGINES {
        let h = hostile_env(engine, 200_000, None).await;
        let (path, key) = (h.env.fx.path(""), h.env.fx.key.clone());
        for bad in [
            "/..%2f..%2fbobbase",
            "/%2e%2e%2fbobbase",
            "/%2E%2e/bobbase",
            "/..%5cbobbase",
            "/..\\bobbase",
            "/..;/bobbase",
            "/a/..;jsessionid=1/bobbase",
            "/a%00.json",
            "/%252e%252e/bobbase",
            "/a%2fb",
        ] {
            let before = h.env.upstream.count();
            let raw = format!("GET {path}{bad} HTTP/1.1\r\nHost: gw\r\nX-API-Key: {key}\r\n\r\n");
            let answer = first_answer(&h, raw.as_bytes()).await.expect("an answer");
            assert_eq!(answer.status, 400, "{engine:?} {bad}: {answer:?}");
            assert_clean(&h, before, None, false, bad).await;
        }
        // An API that passes encoded slashes gets them, byte for byte; traversal stays refused.
        let mut a = domain::sea_orm::IntoActiveModel::into_active_model(h.env.fx.api.clone());
        a.pass_encoded_slashes = domain::sea_orm::ActiveValue::Set(true);
        domain::sea_orm::ActiveModelTrait::update(a, &h.env.db.db)
            .await
            .unwrap();
        h.env.gw.reload().await;
        let resp = h.env.get("/files/a%2Fb.txt").await;
        assert_eq!(resp.status(), 200, "{engine:?}");
        assert_eq!(h.env.upstream.last().uri, "/base/files/a%2Fb.txt");
        let resp = h.env.get("/files/..%2F..%2Fbobbase").await;
        assert_eq!(resp.status(), 400, "{engine:?}");
    }
}
