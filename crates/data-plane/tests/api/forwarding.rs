//! Routing and forwarding: paths, queries, methods, bodies, headers, statuses, upstream failures.

use data_plane::config::ProxySettings;
use reqwest::Method;

use crate::helpers::{EnvOptions, TestEnv};
use crate::upstream::{refused_addr, resetting_upstream};

#[tokio::test]
async fn path_prefix_is_kept_and_the_query_passes_byte_for_byte() {
    let env = TestEnv::new().await;
    let resp = env
        .get("/v1/items/a%20b?tag=x&tag=y&empty=&q=%E2%9C%93&plus=a+b")
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        env.upstream.last().uri,
        "/base/v1/items/a%20b?tag=x&tag=y&empty=&q=%E2%9C%93&plus=a+b"
    );
    env.get("").await;
    assert_eq!(env.upstream.last().uri, "/base");
    env.get("/").await;
    assert_eq!(env.upstream.last().uri, "/base/");
    env.get("?only=query").await;
    assert_eq!(env.upstream.last().uri, "/base?only=query");
}

#[tokio::test]
async fn every_method_passes_through_with_its_body() {
    let env = TestEnv::new().await;
    for method in [
        "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PROPFIND",
    ] {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let body = if method == "GET" || method == "HEAD" {
            String::new()
        } else {
            "x".repeat(1234)
        };
        let resp = env
            .gw
            .client
            .request(m, env.gw.url(&env.fx.path("/m")))
            .header("x-api-key", &env.fx.key)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        let seen = env.upstream.last();
        assert_eq!(seen.method.as_str(), method);
        assert_eq!(seen.body_len, body.len() as u64, "{method}");
    }
}

#[tokio::test]
async fn upstream_statuses_and_error_bodies_pass_through_untouched() {
    let env = TestEnv::new().await;
    for code in [201u16, 204, 301, 404, 418, 500, 503] {
        let resp = env.get(&format!("/status/{code}")).await;
        assert_eq!(resp.status().as_u16(), code);
        if code != 204 {
            assert_eq!(
                resp.text().await.unwrap(),
                format!("upstream says {code}"),
                "not our envelope"
            );
        }
    }
}

#[tokio::test]
async fn repeated_set_cookie_headers_stay_separate() {
    let env = TestEnv::new().await;
    let resp = env.get("/cookies").await;
    let cookies: Vec<_> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"]);
}

#[tokio::test]
async fn request_headers_are_rewritten_for_the_upstream() {
    let env = TestEnv::new().await;
    let resp = env
        .gw
        .client
        .get(env.gw.url(&env.fx.path("/h")))
        .header("x-api-key", &env.fx.key)
        .header("connection", "x-private-hop")
        .header("x-private-hop", "must not pass")
        .header("te", "trailers")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-gateway-tenant", "spoofed")
        .header("x-gateway-key-id", "999")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = env.upstream.last().headers;
    assert!(
        h.get("x-api-key").is_none(),
        "the key must never reach the upstream"
    );
    assert!(h.get("x-private-hop").is_none());
    assert!(h.get("te").is_none());
    assert_eq!(h["host"], env.upstream.addr.to_string());
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(
        h["x-forwarded-host"],
        env.gw.address.trim_start_matches("http://")
    );
    assert_eq!(h["x-gateway-tenant"], "acme");
    assert_eq!(h["x-gateway-key-id"], env.fx.key_id.to_string().as_str());
    assert!(h.get("x-gateway-client-id").is_none());
    assert_eq!(h["x-custom"], "kept");
    // A generated request id, the same one both ways.
    let rid = resp.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(rid.len(), 36);
    assert_eq!(h["x-request-id"], rid);
}

#[tokio::test]
async fn a_valid_request_id_is_kept() {
    let env = TestEnv::new().await;
    let resp = env
        .gw
        .client
        .get(env.gw.url(&env.fx.path("/")))
        .header("x-api-key", &env.fx.key)
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-abc.123");
    assert_eq!(env.upstream.last().headers["x-request-id"], "trace-abc.123");
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_stripped() {
    let env = TestEnv::new().await;
    let resp = env.get("/hop").await;
    assert!(resp.headers().get("x-upstream-hop").is_none());
    assert!(resp.headers().get("keep-alive").is_none());
    assert_eq!(resp.headers()["x-upstream-kept"], "yes");
}

#[tokio::test]
async fn slow_upstream_is_504_and_unreachable_or_reset_is_502() {
    let env = TestEnv::new().await;
    env.point_api_at(env.upstream.url(""), 100).await;
    let resp = env.get("/slow/2000").await;
    assert_eq!(resp.status(), 504);
    // The request was admitted, so its rate-limit fields come back with the gateway's error.
    assert!(resp.headers().contains_key("x-ratelimit-remaining"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_timeout");

    env.point_api_at(format!("http://{}", refused_addr().await), 1000)
        .await;
    let resp = env.get("/x").await;
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_unreachable");
    assert_eq!(body["error"]["code"], 502);

    env.point_api_at(format!("http://{}", resetting_upstream().await), 1000)
        .await;
    assert_eq!(env.get("/x").await.status(), 502);
}

#[tokio::test]
async fn oversized_bodies_are_413_and_oversized_heads_are_431() {
    let proxy = ProxySettings {
        max_body_bytes: 1_000,
        max_header_bytes: 4_000,
        ..ProxySettings::default()
    };
    let env = TestEnv::with(EnvOptions {
        proxy: Some(proxy),
        ..EnvOptions::default()
    })
    .await;
    let url = env.gw.url(&env.fx.path("/upload"));
    let post = |body: reqwest::Body| {
        env.gw
            .client
            .post(&url)
            .header("x-api-key", &env.fx.key)
            .body(body)
            .send()
    };
    // Declared length over the limit: refused before anything reaches the upstream.
    let resp = post("x".repeat(1_001).into()).await.unwrap();
    assert_eq!(resp.status(), 413);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["details"]["limit_bytes"], 1_000);
    assert_eq!(env.upstream.count(), 0);
    // Chunked (no length) over the limit: cut off while streaming.
    let chunks =
        futures_util::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 500])));
    let resp = post(reqwest::Body::wrap_stream(chunks)).await.unwrap();
    assert_eq!(resp.status(), 413);
    // At the limit: fine.
    assert_eq!(post("x".repeat(1_000).into()).await.unwrap().status(), 200);

    let resp = env
        .gw
        .client
        .get(env.gw.url(&env.fx.path("/")))
        .header("x-api-key", &env.fx.key)
        .header("x-big", "z".repeat(5_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "headers_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4000 bytes"),
        "{body}"
    );
    // Too many fields (small ones): the answer says that, not a byte count.
    let mut req = env
        .gw
        .client
        .get(env.gw.url(&env.fx.path("/")))
        .header("x-api-key", &env.fx.key);
    for i in 0..130 {
        req = req.header(format!("x-f{i}"), "1");
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 431);
    let body: serde_json::Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("more than 128 header fields"), "{body}");
    assert_eq!(body["error"]["details"]["limit_fields"], 128);
}

#[tokio::test]
async fn dot_segments_cannot_climb_out_of_the_upstream_prefix() {
    // Sent over a raw socket: HTTP client libraries normalise such paths away.
    let env = TestEnv::new().await;
    for rest in ["/../admin", "/%2e%2E/admin", "/a/./b"] {
        let head = raw_get(&env, &env.fx.path(rest)).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{rest}: {head}");
    }
    assert_eq!(env.upstream.count(), 0);
    assert!(
        raw_get(&env, &env.fx.path("/a..b/..c"))
            .await
            .starts_with("HTTP/1.1 200")
    );
}

async fn raw_get(env: &TestEnv, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = env.gw.address.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {}\r\nConnection: close\r\n\r\n",
        env.fx.key
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
