//! The two engines are one gateway: a table of requests — ordinary, refused, failing upstream and
//! hostile — goes once through the fast engine and once through hyper (`GATEWAY_ENGINE=hyper`), on
//! twin set-ups, and both must answer alike: the same status, the same fields (but `Date`), the same
//! body, and the same request received by the upstream.

use std::net::SocketAddr;

use data_plane::config::{Engine, ProxySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{EnvOptions, TestEnv, add_api, limits, metric_at, read_answers};
use crate::upstream::{refused_addr, spawn_tls_upstream};

const MAX_HEAD: usize = 4 * 1024;
const MAX_BODY: u64 = 1024;

/// An upstream that answers every request with two different lengths.
async fn conflicting_lengths_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello!!",
                    )
                    .await;
            });
        }
    });
    addr
}

/// One engine's set-up: the fixture's API `svc` on the recording upstream (plan: a burst of 12,
/// nothing refilled: the test clock stands still), and APIs of the same tenant on a closed port, on the slow route
/// with a short timeout, and on an upstream that sends conflicting lengths.
async fn setup(engine: Engine) -> TestEnv {
    let env = TestEnv::with(EnvOptions {
        limits: limits(60, Some(12), None, None),
        proxy: Some(ProxySettings {
            engine,
            max_header_bytes: MAX_HEAD,
            max_body_bytes: MAX_BODY,
            ..ProxySettings::default()
        }),
        ..EnvOptions::default()
    })
    .await;
    let refused = format!("http://{}", refused_addr().await);
    let slow = env.upstream.url("/base");
    let conflicting = format!("http://{}", conflicting_lengths_upstream().await);
    // An https upstream whose certificate this gateway does not trust.
    let (tls, _) = spawn_tls_upstream().await;
    for (slug, url, timeout_ms) in [
        ("down", refused, 1_000),
        ("slow", slow, 200),
        ("twolengths", conflicting, 1_000),
        ("tls", tls.url("/base"), 1_000),
    ] {
        add_api(&env.db.db, env.fx.tenant.id, slug, &url, timeout_ms, false).await;
    }
    env.gw.reload().await;
    env
}

/// What a client and the upstream saw of one request.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    status: u16,
    /// Lowercase names with values, sorted; `Date` left out.
    fields: Vec<(String, String)>,
    body: String,
    /// What reached the upstream: method, path and query, fields (sorted), body length.
    upstream: Vec<String>,
}

async fn observe(env: &TestEnv, raw: &[u8]) -> Observed {
    let before = env.upstream.count();
    let mut s = TcpStream::connect(env.gw.address.trim_start_matches("http://"))
        .await
        .unwrap();
    // The gateway may refuse before reading all of it.
    let _ = s.write_all(raw).await;
    let answer = read_answers(&mut s, 1)
        .await
        .into_iter()
        .next()
        .expect("closed without a whole answer");
    let (status, body) = (answer.status, answer.body);
    let mut fields: Vec<(String, String)> = answer
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    fields.retain(|(k, _)| k != "date");
    fields.sort();
    // Each twin has its own upstream port.
    let upstream_addr = env.upstream.addr.to_string();
    let upstream = env.upstream.seen.lock().unwrap()[before..]
        .iter()
        .map(|seen| {
            let mut h: Vec<String> = seen
                .headers
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .to_str()
                        .unwrap_or("<bytes>")
                        .replace(&upstream_addr, "UPSTREAM");
                    format!("{k}: {v}")
                })
                .collect();
            h.sort();
            format!("{} {} {h:?} body {}", seen.method, seen.uri, seen.body_len)
        })
        .collect();
    Observed {
        status,
        fields,
        body: String::from_utf8_lossy(&body).into_owned(),
        upstream,
    }
}

/// The table: (case, raw request). Every request names its own `X-Request-ID`, so ids match.
fn cases(env: &TestEnv) -> Vec<(&'static str, String)> {
    let key = &env.fx.key;
    let t = &env.fx.tenant.slug;
    let head = |method: &str, target: &str, fields: &str, n: usize| {
        format!(
            "{method} {target} HTTP/1.1\r\nHost: gw\r\nX-API-Key: {key}\r\n\
             X-Request-ID: case-{n}\r\n{fields}\r\n"
        )
    };
    let svc = |rest: &str| format!("/{t}/svc{rest}");
    let mut cases = vec![
        ("plain GET", head("GET", &svc("/items"), "", 1)),
        ("query", head("GET", &svc("/items?a=1&b=two"), "", 2)),
        (
            "POST with a length",
            head("POST", &svc("/items"), "Content-Length: 5\r\n", 3) + "hello",
        ),
        (
            "chunked upload",
            head("POST", &svc("/items"), "Transfer-Encoding: chunked\r\n", 4)
                + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        ),
        (
            "Expect: 100-continue",
            head(
                "PUT",
                &svc("/items/1"),
                "Expect: 100-continue\r\nContent-Length: 4\r\n",
                5,
            ) + "data",
        ),
        (
            "oversize head",
            head(
                "GET",
                &svc("/items"),
                &format!("X-Padding: {}\r\n", "p".repeat(MAX_HEAD)),
                6,
            ),
        ),
        (
            "oversize body",
            head("POST", &svc("/items"), "Content-Length: 5000\r\n", 7) + &"b".repeat(5000),
        ),
        (
            "no key",
            format!(
                "GET {} HTTP/1.1\r\nHost: gw\r\nX-Request-ID: case-8\r\n\r\n",
                svc("/a")
            ),
        ),
        (
            "bad key",
            format!(
                "GET {} HTTP/1.1\r\nHost: gw\r\nX-API-Key: gw_live_nope\r\nX-Request-ID: case-9\r\n\r\n",
                svc("/a")
            ),
        ),
        ("unknown API", head("GET", &format!("/{t}/nope/a"), "", 10)),
        ("upstream 5xx", head("GET", &svc("/status/503"), "", 11)),
        (
            "upstream unreachable",
            head("GET", &format!("/{t}/down/a"), "", 12),
        ),
        (
            "upstream timeout",
            head("GET", &format!("/{t}/slow/slow/2000"), "", 13),
        ),
        (
            "conflicting upstream lengths",
            head("GET", &format!("/{t}/twolengths/a"), "", 14),
        ),
        (
            "upstream sends RateLimit fields",
            head("GET", &svc("/ratelimit"), "", 15),
        ),
        // The fast engine hands these to hyper before looking at the key: one authentication.
        (
            "https upstream, bad key",
            format!(
                "GET /{t}/tls/a HTTP/1.1\r\nHost: gw\r\nX-API-Key: gw_live_nope\r\nX-Request-ID: case-16\r\n\r\n"
            ),
        ),
        (
            "https upstream not trusted",
            head("GET", &format!("/{t}/tls/a"), "", 17),
        ),
        (
            "malformed request line",
            "GET /has space HTTP/1.1 extra\r\nHost: gw\r\n\r\n".to_owned(),
        ),
    ];
    // The eleven admitted cases above spent eleven of the burst of 12: one more, then the 429.
    for n in 0..1 {
        cases.push(("spend the burst", head("GET", &svc("/items"), "", 100 + n)));
    }
    cases.push(("429", head("GET", &svc("/items"), "", 200)));
    cases
}

#[tokio::test]
async fn both_engines_answer_every_request_alike() {
    let fast = setup(Engine::Fast).await;
    let hyper = setup(Engine::Hyper).await;
    // Twin set-ups: the same slugs, ids and key on each side, so the answers can be compared.
    assert_eq!(fast.fx.tenant.slug, hyper.fx.tenant.slug);
    let mut differences = Vec::new();
    let mut answers = Vec::new();
    for ((case, raw_fast), (_, raw_hyper)) in cases(&fast).into_iter().zip(cases(&hyper)) {
        let a = observe(&fast, raw_fast.as_bytes()).await;
        let mut b = observe(&hyper, raw_hyper.as_bytes()).await;
        if case == "malformed request line" {
            // hyper answers a head it cannot parse itself (no hook to answer it otherwise): the
            // same 400, closing, but with an empty body. The fast engine — every connection's
            // first reader by default — answers with the JSON envelope (asserted below).
            assert_eq!((b.status, b.body.as_str()), (400, ""), "{b:?}");
            assert!(b.fields.contains(&("connection".into(), "close".into())));
            assert!(a.fields.contains(&("connection".into(), "close".into())));
            answers.push((case, a));
            continue;
        }
        // The key differs between the twins: compare the answers with it named alike.
        b.body = b.body.replace(&hyper.fx.key, &fast.fx.key);
        if a != b {
            differences.push(format!("{case}:\n  fast:  {a:?}\n  hyper: {b:?}"));
        }
        answers.push((case, a));
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));

    assert_answers(&answers, &fast, &hyper).await;
}

/// What each case must answer (both engines answered alike), and the differences the engines
/// used to have, each on its own.
async fn assert_answers(answers: &[(&str, Observed)], fast: &TestEnv, hyper: &TestEnv) {
    let answer = |case: &str| &answers.iter().find(|(c, _)| *c == case).unwrap().1;
    let field = |o: &Observed, name: &str| {
        o.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let statuses: Vec<(&str, u16)> = answers
        .iter()
        .filter(|(c, _)| *c != "spend the burst")
        .map(|(c, o)| (*c, o.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("plain GET", 200),
            ("query", 200),
            ("POST with a length", 200),
            ("chunked upload", 200),
            ("Expect: 100-continue", 200),
            ("oversize head", 431),
            ("oversize body", 413),
            ("no key", 401),
            ("bad key", 403),
            ("unknown API", 404),
            ("upstream 5xx", 503),
            ("upstream unreachable", 502),
            ("upstream timeout", 504),
            ("conflicting upstream lengths", 502),
            ("upstream sends RateLimit fields", 200),
            ("https upstream, bad key", 403),
            ("https upstream not trusted", 502),
            ("malformed request line", 400),
            ("429", 429),
        ]
    );
    // The differences the engines used to have, each on its own:
    // a 413 is refused before the limit: no token spent, no rate-limit fields;
    assert_eq!(
        field(answer("oversize body"), "x-ratelimit-remaining"),
        None
    );
    // the 502 for conflicting upstream lengths carries the rate-limit fields;
    assert!(
        field(
            answer("conflicting upstream lengths"),
            "x-ratelimit-remaining"
        )
        .is_some()
    );
    // the upstream's own rate-limit fields never pass: the gateway's are the only ones;
    let own = answer("upstream sends RateLimit fields");
    assert_eq!(field(own, "x-ratelimit-limit").as_deref(), Some("60"));
    assert_eq!(
        own.fields
            .iter()
            .filter(|(k, _)| k.starts_with("ratelimit") || k.starts_with("x-ratelimit-limit"))
            .count(),
        own.fields
            .iter()
            .filter(|(k, _)| k == "ratelimit"
                || k == "ratelimit-policy"
                || k.starts_with("x-ratelimit-limit"))
            .count()
    );
    assert!(
        !own.fields.iter().any(|(_, v)| v.contains("999")),
        "{own:?}"
    );
    // a malformed request gets the JSON envelope, and is counted;
    let malformed = answer("malformed request line");
    assert!(
        malformed.body.contains("\"type\":\"bad_request\""),
        "{malformed:?}"
    );
    // Denied: oversize head and body, no key, two bad keys, unknown API, and the malformed
    // request where the gateway (not hyper) answered it.
    for (env, denied) in [(fast, 7), (hyper, 6)] {
        let counted = metric_at(
            &reqwest::Client::new(),
            &env.gw.address,
            "gateway_requests_total{outcome=\"denied\"}",
        )
        .await;
        assert_eq!(counted, denied);
    }
    // and the 429 is what the burst leaves: every admitted case spent one token, the refused
    // ones none.
    assert_eq!(
        field(answer("429"), "x-ratelimit-remaining").as_deref(),
        Some("0")
    );
}
