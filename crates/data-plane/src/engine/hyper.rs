//! The hyper engine: serves what the fast engine hands over (HTTP/1.0, chunked and `Expect`
//! uploads, `https` upstreams, the gateway's own paths) and every connection when
//! `GATEWAY_ENGINE=hyper`. It moves the request between hyper's types and calls the pipeline's
//! phases (`crate::pipeline`) in order.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use ::hyper::body::{Frame, Incoming, SizeHint};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};

use crate::body::{BodyError, READ_AHEAD, UpstreamBody, body_error};
use crate::engine::websocket::{self, Relay, UpstreamHalf};
use crate::errors::GatewayError;
use domain::apikey::KeyHash;
use domain::header::UpstreamProtocol;
use domain::limits::Decision;

use crate::headers::HeaderSource;
use crate::headers::{X_FORWARDED_FOR, head_size};
use crate::pipeline::{
    self, Admission, Admitted, Auth, Gateway, Peer, Refused, RequestHead, Trace, forwarded_fields,
    forwards_request_field, forwards_response_field,
};
use crate::upstream::balance::{Picked, Tried};
use crate::upstream::{UpstreamClient, UpstreamClients, refusal};
use domain::snapshot::TargetEntry;

/// What the gateway answers with: the upstream's body streamed through, or one of its own.
pub type Inner = Either<Incoming, Full<Bytes>>;

impl Gateway {
    /// Entry point of every request; `clients` are the calling worker's upstream pools.
    pub async fn handle(
        self: Arc<Self>,
        clients: UpstreamClients,
        peer: Peer,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        if let Some(local) = self
            .local_answer(
                req.method(),
                req.uri().path(),
                req.headers(),
                peer.addr.ip(),
            )
            .await
        {
            return Ok(local.map(|b| Body::untraced(Either::Right(b))));
        }
        let mut trace = Trace::start(&self, req.headers(), peer.addr.ip());
        trace.grpc = crate::errors::is_grpc(req.headers());
        let (resp, relay) = self.proxy(&clients, peer, req, &mut trace).await;
        // (Every phase that answers has recorded its status: a gRPC refusal's is the HTTP status
        // it stands for, not its wire 200.)
        if trace.status == 0 {
            trace.status = resp.status().as_u16();
        }
        trace.bytes_out = 0;
        // An upgraded connection's finish phase runs when the relay ends.
        if let Some(relay) = relay {
            tokio::spawn(self.clone().relay(relay, trace));
            return Ok(resp.map(Body::untraced));
        }
        // The finish phase runs when the answer's last byte is out (or the caller left), with
        // the bytes the body counted.
        Ok(resp.map(|b| Body::traced(b, self.clone(), trace)))
    }

    /// The pipeline's phases, in order, on hyper's request and response types.
    /// With the relay to run when the request was a WebSocket upgrade the upstream took.
    async fn proxy(
        &self,
        clients: &UpstreamClients,
        peer: Peer,
        mut req: Request<Incoming>,
        trace: &mut Trace,
    ) -> (Response<Inner>, Option<Relay>) {
        let upgrade = websocket::is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        let (resp, half) = self
            .exchange(clients, peer, req, upgrade.is_some(), trace)
            .await;
        let relay = upgrade
            .zip(half)
            .map(|(client, upstream)| Relay { client, upstream });
        (resp, relay)
    }

    /// The phases up to the answer's head. `upgrade`: the caller asks for a WebSocket (then a
    /// `101` from the upstream comes with the relay's upstream half).
    async fn exchange(
        &self,
        clients: &UpstreamClients,
        peer: Peer,
        req: Request<Incoming>,
        upgrade: bool,
        trace: &mut Trace,
    ) -> (Response<Inner>, Option<UpstreamHalf>) {
        // Admit.
        let head = HyperHead(&req);
        let admitted = match self.admit(&head, true, trace) {
            Ok(Admission::Admitted(a)) => a,
            // hyper speaks TLS: nothing is handed on from here.
            Ok(Admission::HandOff) => unreachable!("the hyper engine serves every upstream"),
            Err(Refused { err, close }) => {
                let resp = self.refused(&err, trace, None);
                return (if close { closing(resp) } else { resp }, None);
            }
        };
        let Admitted {
            target,
            auth,
            key,
            picked,
        } = admitted;
        // Prepare the upstream request's target and fields (before the limit, as the fast engine
        // writes its head: pure work, and a target no upstream URI can carry costs nothing).
        let place = Place {
            rest: auth.forwarded_rest(target.rest).to_owned(),
            query: target.query.map(str::to_owned),
        };
        let Ok(uri) = place.uri(picked.target()) else {
            let e = GatewayError::BadRequest("The path is not valid.");
            return (self.refused(&e, trace, None), None);
        };
        let authority = req.uri().authority().map(|a| a.as_str().as_bytes());
        let mut fields = upstream_fields(req.headers(), authority, key, &auth, peer, &trace.rid);
        if upgrade {
            websocket::upgrade_fields(&mut fields);
        }
        let relay_key = upgrade.then(|| {
            let snap = self.snapshot.load();
            snap.key_by_id(auth.caller.key_id)
                .map_or_else(|| KeyHash::of(key), |(hash, _)| *hash)
        });
        let max_body = self.settings.max_body_bytes;
        let (parts, body) = req.into_parts();
        // A body without a declared length is read ahead (up to the limit) before it costs a
        // token; not a gRPC call's (a stream the upstream answers as it goes).
        let ahead = if trace.grpc { 0 } else { READ_AHEAD };
        let body = match UpstreamBody::read_ahead(body, max_body, ahead).await {
            Ok(b) => b,
            Err(e) => {
                let resp = self.refused(&body_failure(&e, max_body), trace, None);
                return (closing(resp), None);
            }
        };
        if let Some(n) = body.known_len() {
            trace.bytes_in = n;
        }

        // Limit.
        let decision = match self.limit(&auth, trace).await {
            Ok(d) => d,
            Err(refusal) => return (refusal.map(Either::Right), None),
        };

        // Upstream request and response fields, around the exchange.
        let client = clients.for_api(auth.api.trusted_upstreams, auth.api.upstream_protocol);
        let sent_at = Instant::now();
        let result = self
            .forward(
                client,
                parts,
                fields,
                body,
                (picked, uri, &place),
                &auth,
                trace,
            )
            .await;
        trace.upstream_us = Some(u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX));

        self.answer(result, &decision, relay_key, &auth, trace)
    }

    /// The response-fields phase on the exchange's outcome (the finish phase follows the body).
    fn answer(
        &self,
        result: Result<Response<Incoming>, GatewayError>,
        decision: &Decision,
        relay_key: Option<KeyHash>,
        auth: &Auth,
        trace: &mut Trace,
    ) -> (Response<Inner>, Option<UpstreamHalf>) {
        let upstream_failed = match &result {
            Ok(r) => r.status().is_server_error(),
            Err(e) => e.status().is_server_error(),
        };
        self.count_forwarded(result.is_ok(), upstream_failed);
        match result {
            Ok(mut r) => {
                trace.upstream_answered(r.status().as_u16());
                // The upstream took the upgrade: its half of the relay.
                let relay = match relay_key {
                    Some(key) if r.status() == StatusCode::SWITCHING_PROTOCOLS => {
                        websocket::upgrade_fields(r.headers_mut());
                        Some(UpstreamHalf {
                            upstream: hyper::upgrade::on(&mut r),
                            key,
                            idle: auth.api.websocket_idle,
                        })
                    }
                    _ => None,
                };
                let h = r.headers_mut();
                pipeline::answer_fields(&trace.rid, decision, |name, value| {
                    if let Ok(v) = HeaderValue::from_bytes(value) {
                        h.insert(name, v);
                    }
                });
                (r.map(Either::Left), relay)
            }
            // The caller's body broke mid-way: what is left of it cannot be read as a request.
            Err(e @ (GatewayError::BadBody | GatewayError::BodyTooLarge { .. })) => {
                (closing(self.refused(&e, trace, Some(decision))), None)
            }
            Err(e) => (self.refused(&e, trace, Some(decision)), None),
        }
    }

    fn refused(
        &self,
        err: &GatewayError,
        trace: &mut Trace,
        decision: Option<&Decision>,
    ) -> Response<Inner> {
        self.refuse_traced(err, trace, decision).map(Either::Right)
    }

    /// The exchange with the picked target, tried again on another while the pipeline says it
    /// may ([`pipeline::retryable`]: here only with a body all read ahead, or none, since a
    /// streamed body cannot be sent twice).
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        client: &UpstreamClient,
        mut parts: http::request::Parts,
        mut fields: HeaderMap,
        body: UpstreamBody,
        (mut picked, mut uri, place): (Picked, Uri, &Place),
        auth: &Auth,
        trace: &mut Trace,
    ) -> Result<Response<Incoming>, GatewayError> {
        let max_body = self.settings.max_body_bytes;
        let declared_length = parts.headers.contains_key(header::CONTENT_LENGTH);
        // The body's framing, from what hyper read of it and what was read ahead: a length when
        // known, else chunked (hyper's client writes it).
        if let Some(n) = body.known_len().filter(|n| *n > 0 || declared_length) {
            fields.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        parts.version = match auth.api.upstream_protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::H2 => {
                // gRPC's servers look for it (RFC 9113 8.2.2: the one `TE` HTTP/2 allows).
                if trace.grpc {
                    fields.insert(header::TE, HeaderValue::from_static("trailers"));
                }
                Version::HTTP_2
            }
        };
        let idempotent = pipeline::is_idempotent(parts.method.as_str());
        let mut tries_left = auth.retries();
        let spare = if tries_left > 0 { body.replay() } else { None };
        let replayable = spare.is_some();
        let mut body = Some(body);
        let mut tried = Tried::default();
        let timeout = auth.timeout();
        loop {
            let this_body = match body.take() {
                Some(b) => b,
                None => match spare.as_ref().and_then(UpstreamBody::replay) {
                    Some(b) => b,
                    None => return Err(GatewayError::UpstreamUnreachable),
                },
            };
            let mut req = Request::new(this_body);
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = std::mem::take(&mut uri);
            *req.version_mut() = parts.version;
            *req.headers_mut() = if replayable && tries_left > 0 {
                fields.clone()
            } else {
                std::mem::take(&mut fields)
            };
            if let Ok(host) = HeaderValue::from_bytes(pipeline::upstream_host(picked.target())) {
                req.headers_mut().insert(header::HOST, host);
            }
            trace.target_id = picked.target().id;
            let (err, may) = match tokio::time::timeout(timeout, client.request(req)).await {
                // No answer in time (each try has its own): like a failure before any answer
                // byte.
                Err(_) => (
                    GatewayError::UpstreamTimeout {
                        timeout_ms: timeout.as_millis(),
                    },
                    pipeline::retryable(true, idempotent, replayable),
                ),
                Ok(Ok(resp)) => {
                    self.report(picked, Ok(resp.status().as_u16()));
                    return Ok(response_fields(resp));
                }
                Ok(Err(failure)) => {
                    let own = match (body_error(&failure), refusal(&failure)) {
                        (Some(b), _) => Some(body_failure(b, max_body)),
                        (None, Some(_)) => Some(GatewayError::UpstreamForbidden),
                        (None, None) => None,
                    };
                    if let Some(e) = own {
                        self.report(picked, Err(&e));
                        return Err(e);
                    }
                    tracing::debug!(error = %failure, api_id = auth.api.id, "upstream request failed");
                    (
                        GatewayError::UpstreamUnreachable,
                        pipeline::retryable(!failure.is_connect(), idempotent, replayable),
                    )
                }
            };
            match self.retry(picked, &mut tried, &mut tries_left, may) {
                Some(next) => {
                    uri = place
                        .uri(next.target())
                        .map_err(|_| GatewayError::BadRequest("The path is not valid."))?;
                    picked = next;
                    trace.flags |= domain::request_log::flags::RETRIED;
                }
                None => return Err(err),
            }
        }
    }
}

/// The upstream-response-fields phase on hyper's types: the upstream's fields that pass
/// [`forwards_response_field`] (the gateway's own are added by the caller).
fn response_fields(mut resp: Response<Incoming>) -> Response<Incoming> {
    let received = std::mem::take(resp.headers_mut());
    let connection: Vec<&[u8]> = received
        .get_all(header::CONNECTION)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let h = resp.headers_mut();
    for (name, value) in &received {
        // hyper framed the body by its `Content-Length`: kept, whatever `Connection` says (the
        // client's framing follows from it).
        if name == header::CONTENT_LENGTH
            || forwards_response_field(name.as_str(), connection.iter().copied())
        {
            h.append(name, value.clone());
        }
    }
    resp
}

/// Where a request goes on any target: the caller's path rest (after the route's prefix when it
/// strips it) and query.
struct Place {
    rest: String,
    query: Option<String>,
}

impl Place {
    /// The upstream URI on `target` ([`pipeline::upstream_target`]).
    fn uri(&self, target: &TargetEntry) -> Result<Uri, http::Error> {
        let mut pq = Vec::with_capacity(self.rest.len() + 64);
        pipeline::upstream_target(target, &self.rest, self.query.as_deref(), |_, b| {
            pq.extend_from_slice(b);
        });
        Uri::builder()
            .scheme(if target.tls { "https" } else { "http" })
            .authority(&*target.authority)
            .path_and_query(pq)
            .build()
    }
}

/// The upstream-request-fields phase on hyper's types: the caller's fields that pass
/// [`forwards_request_field`] (`key`, the presented key, is stripped wherever it appears), then
/// the gateway's own ([`forwarded_fields`]). The framing field is the exchange's to set.
fn upstream_fields(
    received: &HeaderMap,
    authority: Option<&[u8]>,
    key: &str,
    auth: &Auth,
    peer: Peer,
    rid: &str,
) -> HeaderMap {
    let connection: Vec<&[u8]> = received
        .get_all(header::CONNECTION)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let mut h = HeaderMap::with_capacity(received.len() + 8);
    // HTTP/2 names the host in the target (`:authority`), not in a field.
    let mut original_host = authority;
    let mut prior_xff = Vec::new();
    for (name, value) in received {
        if name == header::HOST {
            original_host = Some(value.as_bytes());
        } else if name == X_FORWARDED_FOR {
            prior_xff.push(value.as_bytes());
        } else if forwards_request_field(
            name.as_str(),
            value.as_bytes(),
            connection.iter().copied(),
            &auth.api.key_header,
            key.as_bytes(),
        ) {
            h.append(name, value.clone());
        }
    }
    forwarded_fields(
        auth,
        peer.https,
        &peer.addr.ip().to_string(),
        &prior_xff,
        original_host,
        rid,
        |name, value| {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                h.insert(name, v);
            }
        },
    );
    h
}

/// `resp`, closing the connection after it (the rest of the request cannot be trusted).
fn closing(mut resp: Response<Inner>) -> Response<Inner> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// hyper's request as the pipeline reads a head.
struct HyperHead<'a>(&'a Request<Incoming>);

impl HeaderSource for HyperHead<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.headers().header(name)
    }
}

impl RequestHead for HyperHead<'_> {
    fn method(&self) -> &str {
        self.0.method().as_str()
    }

    fn path(&self) -> &str {
        self.0.uri().path()
    }

    fn query(&self) -> Option<&str> {
        self.0.uri().query()
    }

    fn head_len(&self) -> usize {
        let uri_len = self
            .0
            .uri()
            .path_and_query()
            .map_or(0, |p| p.as_str().len());
        head_size(uri_len, self.0.headers())
    }

    fn hosts(&self) -> usize {
        self.0.headers().get_all(header::HOST).iter().count()
    }

    fn is_http11(&self) -> bool {
        self.0.version() == Version::HTTP_11
    }

    fn content_length(&self) -> Option<u64> {
        content_length(self.0.headers())
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The caller's answer when its own body failed.
fn body_failure(e: &BodyError, max_body: u64) -> GatewayError {
    match e {
        BodyError::TooLarge(_) => GatewayError::BodyTooLarge { limit: max_body },
        BodyError::Client(_) => GatewayError::BadBody,
    }
}

/// An answer's body as hyper sends it: counts the bytes that go out and runs the finish phase
/// ([`Gateway::finish`]) when the last is out, the body fails, or the caller leaves (the body is
/// dropped unfinished).
pub struct Body {
    inner: Inner,
    finish: Option<(Arc<Gateway>, Box<Trace>)>,
}

impl Body {
    fn untraced(inner: Inner) -> Self {
        Self {
            inner,
            finish: None,
        }
    }

    fn traced(inner: Inner, gw: Arc<Gateway>, trace: Trace) -> Self {
        Self {
            inner,
            finish: Some((gw, Box::new(trace))),
        }
    }

    fn finish(&mut self) {
        if let Some((gw, trace)) = self.finish.take() {
            gw.finish(*trace);
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.finish();
    }
}

impl ::hyper::body::Body for Body {
    type Data = Bytes;
    type Error = <Inner as ::hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some((_, trace))) = (frame.data_ref(), self.finish.as_mut()) {
                    trace.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(_) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
