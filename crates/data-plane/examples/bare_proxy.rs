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

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7500".into())
        .parse()?;
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let upstream = upstream.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let socket =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                    socket.set_reuse_port(true)?;
                    socket.set_nonblocking(true)?;
                    socket.bind(&listen.into())?;
                    socket.listen(1024)?;
                    let listener = tokio::net::TcpListener::from_std(socket.into())?;
                    let mut http = HttpConnector::new();
                    http.set_nodelay(true);
                    let client: Client<HttpConnector, hyper::body::Incoming> =
                        Client::builder(TokioExecutor::new()).build(http);
                    loop {
                        let (stream, _) = listener.accept().await?;
                        let _ = stream.set_nodelay(true);
                        let (client, upstream) = (client.clone(), upstream.clone());
                        tokio::spawn(async move {
                            let svc =
                                service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                                    let client = client.clone();
                                    let uri: Uri = format!("http://{upstream}{}", req.uri().path())
                                        .parse()
                                        .unwrap_or_default();
                                    *req.uri_mut() = uri;
                                    async move {
                                        Ok::<_, Infallible>(match client.request(req).await {
                                            Ok(r) => r.map(http_body_util::Either::Left),
                                            Err(_) => {
                                                http::Response::new(http_body_util::Either::Right(
                                                    http_body_util::Empty::<bytes::Bytes>::new(),
                                                ))
                                            }
                                        })
                                    }
                                });
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                })
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    Ok(())
}
