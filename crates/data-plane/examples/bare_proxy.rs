//! The floor under the data plane: hyper server + hyper-util client forwarding every request to one
//! upstream, with nothing else, on the same thread-per-core layout. Compare its CPU per request
//! with the data plane's to see what the gateway's own work costs.
//! `cargo run --release -p data-plane --example bare_proxy -- 127.0.0.1:7500 127.0.0.1:UPSTREAM`

use std::convert::Infallible;

use http::Uri;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[path = "common/mod.rs"]
mod common;

thread_local! {
    /// One keep-alive pool per worker thread, as in the data plane.
    static CLIENT: Client<HttpConnector, hyper::body::Incoming> = {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(http)
    };
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7500".into())
        .parse()?;
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());
    common::serve_on_every_core(listen, move |stream| {
        let upstream = upstream.clone();
        async move {
            let client = CLIENT.with(Clone::clone);
            let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                let client = client.clone();
                let uri: Uri = format!("http://{upstream}{}", req.uri().path())
                    .parse()
                    .unwrap_or_default();
                *req.uri_mut() = uri;
                async move {
                    Ok::<_, Infallible>(match client.request(req).await {
                        Ok(r) => r.map(http_body_util::Either::Left),
                        Err(_) => http::Response::new(http_body_util::Either::Right(
                            http_body_util::Empty::<bytes::Bytes>::new(),
                        )),
                    })
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
}
