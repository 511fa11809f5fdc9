//! gRPC through the gateway, tonic on both ends: a unary and a server-streaming call pass over
//! HTTP/2 end to end (h2c from the client, `upstream_protocol: h2` to the upstream) with their
//! trailers intact, and the gateway's own refusals reach a gRPC caller as gRPC statuses.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use domain::entities::api;
use domain::header::UpstreamProtocol;
use domain::sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};
use domain::testing::TestDb;
use futures_util::StreamExt;
use http::uri::PathAndQuery;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use crate::helpers::{Fixture, TestGateway, limits, seed, settings_for, spawn_gateway};

/// Messages as raw bytes: no protobuf needed to prove the bytes pass unchanged.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `test.Echo`: `Unary` answers `echo: <request>`, `Count` streams `n` messages for a request
/// of `n` (one byte), `Fail` answers `NOT_FOUND` with a message.
#[derive(Clone)]
struct Echo;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Raw);
            Ok(match req.uri().path() {
                "/test.Echo/Unary" => grpc.unary(Unary, req).await,
                "/test.Echo/Count" => grpc.server_streaming(Count, req).await,
                "/test.Echo/Fail" => grpc.unary(Fail, req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

#[derive(Clone)]
struct Unary;

impl tower_service::Service<tonic::Request<Bytes>> for Unary {
    type Response = tonic::Response<Bytes>;
    type Error = Status;
    type Future = BoxFuture<Result<Self::Response, Status>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let msg = req.into_inner();
        Box::pin(async move {
            let mut out = b"echo: ".to_vec();
            out.extend_from_slice(&msg);
            Ok(tonic::Response::new(Bytes::from(out)))
        })
    }
}

#[derive(Clone)]
struct Fail;

impl tower_service::Service<tonic::Request<Bytes>> for Fail {
    type Response = tonic::Response<Bytes>;
    type Error = Status;
    type Future = BoxFuture<Result<Self::Response, Status>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: tonic::Request<Bytes>) -> Self::Future {
        Box::pin(async { Err(Status::not_found("no such thing: überall")) })
    }
}

#[derive(Clone)]
struct Count;

type Messages = Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, Status>> + Send>>;

impl tower_service::Service<tonic::Request<Bytes>> for Count {
    type Response = tonic::Response<Messages>;
    type Error = Status;
    type Future = BoxFuture<Result<Self::Response, Status>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let n = req.into_inner().first().copied().unwrap_or(0);
        Box::pin(async move {
            let items =
                futures_util::stream::iter((0..n).map(|i| Ok(Bytes::from(format!("message {i}")))));
            Ok(tonic::Response::new(Box::pin(items) as Messages))
        })
    }
}

/// The tonic upstream on h2c: its address.
fn spawn_grpc_upstream() -> SocketAddr {
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(Echo, incoming));
    addr
}

struct Env {
    _db: TestDb,
    fx: Fixture,
    gw: TestGateway,
}

/// A tenant whose API speaks h2 to `upstream`, under `burst`.
async fn env(upstream: &str, burst: i64) -> Env {
    let db = TestDb::sqlite().await;
    let fx = seed(
        &db.db,
        "acme",
        upstream,
        limits(60, Some(burst), None, None),
    )
    .await;
    let mut a = fx.api.clone().into_active_model();
    a.upstream_protocol = Set(UpstreamProtocol::H2.as_str().to_owned());
    let _: api::Model = a.update(&db.db).await.unwrap();
    let gw = spawn_gateway(settings_for(&db.url, None), None).await;
    Env { _db: db, fx, gw }
}

async fn client(gw: &TestGateway) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(gw.address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

fn request(msg: &'static [u8], key: Option<&str>) -> tonic::Request<Bytes> {
    let mut req = tonic::Request::new(Bytes::from_static(msg));
    if let Some(k) = key {
        req.metadata_mut().insert("x-api-key", k.parse().unwrap());
    }
    req
}

async fn unary(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &str,
    req: tonic::Request<Bytes>,
) -> Result<Bytes, Status> {
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(path.to_owned()).unwrap();
    grpc.unary(req, path, Raw)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn grpc_unary_and_streaming_calls_pass_end_to_end_with_their_trailers() {
    let upstream = spawn_grpc_upstream();
    let e = env(&format!("http://{upstream}"), 100).await;
    let mut grpc = client(&e.gw).await;
    let key = Some(e.fx.key.as_str());

    let got = unary(
        &mut grpc,
        &e.fx.path("/test.Echo/Unary"),
        request(b"hi", key),
    )
    .await
    .unwrap();
    assert_eq!(&got[..], b"echo: hi");

    // The upstream's own status arrives in its trailers, message and all.
    let err = unary(&mut grpc, &e.fx.path("/test.Echo/Fail"), request(b"", key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no such thing: überall");

    // A server stream: every message, in order, then the OK status in the trailers.
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(e.fx.path("/test.Echo/Count")).unwrap();
    let mut stream = grpc
        .server_streaming(request(&[5], key), path, Raw)
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.next().await {
        got.push(String::from_utf8(m.unwrap().to_vec()).unwrap());
    }
    assert_eq!(
        got,
        (0..5).map(|i| format!("message {i}")).collect::<Vec<_>>()
    );
    assert!(
        stream.trailers().await.unwrap().is_some(),
        "the trailers arrived"
    );
    e.gw.stop().await;
}

#[tokio::test]
async fn the_gateways_refusals_reach_a_grpc_caller_as_grpc_statuses() {
    let upstream = spawn_grpc_upstream();
    let e = env(&format!("http://{upstream}"), 1).await;
    let mut grpc = client(&e.gw).await;
    let path = e.fx.path("/test.Echo/Unary");

    // No key: UNAUTHENTICATED, with the gateway's message.
    let err = unary(&mut grpc, &path, request(b"x", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("X-API-Key"), "{}", err.message());

    // Over the limit: RESOURCE_EXHAUSTED (the burst is one call).
    let key = Some(e.fx.key.as_str());
    unary(&mut grpc, &path, request(b"x", key)).await.unwrap();
    let err = unary(&mut grpc, &path, request(b"x", key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.metadata().get("x-ratelimit-remaining").is_some(),
        "the rate-limit fields come along"
    );
    e.gw.stop().await;

    // No upstream answering: UNAVAILABLE.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = env(&format!("http://127.0.0.1:{port}"), 100).await;
    let mut grpc = client(&e.gw).await;
    let err = unary(
        &mut grpc,
        &e.fx.path("/test.Echo/Unary"),
        request(b"x", Some(&e.fx.key)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    e.gw.stop().await;
}
