//! The HTTP/1.1 fast path: the common proxied request handled straight off the socket.
//!
//! A connection starts here. Each request head is parsed in place (httparse), authenticated and
//! limited by the same code as the hyper path ([`Gateway::authenticate`], the limiter), written to a
//! kept-alive upstream connection with the gateway's fields, and the answer is streamed back with
//! its framing untouched (`Content-Length`, chunked, or until close). No per-request task, channel,
//! header map or timer (deadlines are kept by [`crate::watchdog`]): the upstream connection belongs
//! to the client connection while it is used (and goes back to the worker's pool when the client
//! leaves).
//!
//! Anything else — HTTP/1.0, chunked or `Expect` uploads, duplicate lengths, non-origin-form
//! targets, `https` upstreams, `/health` and `/metrics` — hands the connection, with every byte
//! read so far, to hyper, which serves the rest of it ([`crate::proxy::Gateway::handle`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::errors::{GatewayError, HeadLimit};
use crate::headers::{
    X_FORWARDED_FOR, connection_has_option, forwards_request_field, forwards_response_field,
    rate_limit_fields, request_id,
};
use crate::lock;
use crate::proxy::{
    Auth, Gateway, admit_head, forwarded_fields, parse_target_parts, split_at_byte,
};
use crate::watchdog::Watchdog;

/// Most header fields in a request head (431 above).
pub const MAX_HEADERS: usize = 128;
const NO_HEADERS: &[httparse::Header<'_>] = &[];
const READ_CHUNK: usize = 16 * 1024;
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Bodies up to this size already in the buffer go out in the same write as the head.
const INLINE_BODY: usize = 16 * 1024;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_mins(1);
const POOL_MAX_IDLE_PER_ADDR: usize = 512;

/// Idle upstream connections of one worker thread, by `host:port`.
#[derive(Default)]
pub struct UpstreamPool {
    idle: Mutex<IdleConnections>,
}

type IdleConnections = HashMap<Box<str>, Vec<(TcpStream, Instant)>>;

impl UpstreamPool {
    fn take(&self, addr: &str) -> Option<TcpStream> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(addr)?;
        while let Some((stream, since)) = list.pop() {
            if since.elapsed() < POOL_IDLE_TIMEOUT && looks_open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    fn put(&self, addr: Box<str>, stream: TcpStream) {
        if !looks_open(&stream) {
            return;
        }
        let mut idle = lock(&self.idle);
        let list = idle.entry(addr).or_default();
        list.retain(|(_, since)| since.elapsed() < POOL_IDLE_TIMEOUT);
        if list.len() < POOL_MAX_IDLE_PER_ADDR {
            list.push((stream, Instant::now()));
        }
    }
}

/// An idle upstream connection is usable when nothing (data or EOF) arrived on it since its last
/// answer; tokio's cached readiness answers that without a system call in the usual case.
fn looks_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// What ended the fast path on a connection.
pub enum Exit {
    /// The connection is finished (closed by either side, or answered and closed).
    Done,
    /// hyper serves the rest of the connection, starting with these already-read bytes.
    HandOff(BytesMut),
}

/// How the upstream's response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A request the fast path forwards: the upstream head is already in `Conn::out`.
struct Prepared {
    head_len: usize,
    auth: Auth,
    rid: String,
    /// The body's length as the gateway framed it (0 without `Content-Length`).
    body_len: u64,
    close: bool,
    is_head: bool,
    /// Safe to send twice (RFC 9110 9.2.2), so retried once on a kept-alive connection found closed.
    idempotent: bool,
}

enum Step {
    NeedMore,
    HandOff,
    Fail {
        head_len: usize,
        err: GatewayError,
        rid: String,
        close: bool,
    },
    Forward(Box<Prepared>),
}

pub struct Conn<'a> {
    gw: &'a Gateway,
    pool: &'a UpstreamPool,
    /// This connection's deadline: the request head's, then the upstream answer's.
    dog: &'a Watchdog,
    client: TcpStream,
    /// The caller's address as `X-Forwarded-For` names it, formatted once per connection.
    peer_ip: String,
    buf: BytesMut,
    ubuf: BytesMut,
    out: Vec<u8>,
    upstream: Option<(Box<str>, TcpStream)>,
}

impl<'a> Conn<'a> {
    pub fn new(
        gw: &'a Gateway,
        pool: &'a UpstreamPool,
        dog: &'a Watchdog,
        client: TcpStream,
        peer: SocketAddr,
    ) -> Self {
        Self {
            gw,
            pool,
            dog,
            client,
            peer_ip: peer.ip().to_string(),
            buf: BytesMut::with_capacity(READ_CHUNK),
            ubuf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
            upstream: None,
        }
    }

    /// The client socket, for hyper after a hand-off ([`Self::run`] has pooled the upstream).
    pub fn into_client(self) -> TcpStream {
        self.client
    }

    fn release_upstream(&mut self) {
        if let Some((addr, stream)) = self.upstream.take() {
            self.pool.put(addr, stream);
        }
    }

    /// Serves requests until the connection ends, a request needs hyper, or the worker drains
    /// while the connection is idle.
    pub async fn run(&mut self) -> Exit {
        let exit = self.serve().await;
        self.dog.disarm();
        self.release_upstream();
        exit
    }

    async fn serve(&mut self) -> Exit {
        // One deadline for the whole head, however slowly its bytes trickle in.
        let mut head_armed = false;
        loop {
            let step = self.plan();
            if !matches!(step, Step::NeedMore) {
                head_armed = false;
                self.dog.disarm();
            }
            match step {
                Step::NeedMore => {
                    let idle = self.buf.is_empty();
                    // From the end of the previous exchange (or the connection's start) to the
                    // head's last byte: idle keep-alive connections and slow senders alike.
                    if !head_armed {
                        let within = Duration::from_millis(self.gw.settings.header_timeout_ms);
                        self.dog.arm(within);
                        head_armed = true;
                    }
                    self.buf.reserve(READ_CHUNK);
                    let read = self
                        .dog
                        .guard(idle, self.client.read_buf(&mut self.buf))
                        .await;
                    match read {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return Exit::Done,
                    }
                }
                Step::HandOff => return Exit::HandOff(std::mem::take(&mut self.buf)),
                Step::Fail {
                    head_len,
                    err,
                    rid,
                    close,
                } => {
                    self.buf.advance(head_len);
                    let resp = self.gw.fail_response(&err, &rid);
                    if !self.answer(resp, &rid, close).await || close {
                        return Exit::Done;
                    }
                }
                Step::Forward(p) => {
                    if !self.exchange(*p).await {
                        return Exit::Done;
                    }
                }
            }
        }
    }

    /// Parses the buffered head and decides what happens to it; the upstream head of a forwarded
    /// request is written into `self.out`.
    fn plan(&mut self) -> Step {
        let Self {
            gw,
            buf,
            out,
            peer_ip,
            ..
        } = self;
        if buf.is_empty() {
            return Step::NeedMore;
        }
        let max_head = gw.settings.max_header_bytes;
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut storage);
        let head_len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() <= max_head => return Step::NeedMore,
            unparsed => return unparsable(unparsed.err(), buf.len(), max_head),
        };
        let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
            return Step::HandOff;
        };
        let headers: &[httparse::Header<'_>] = req.headers;
        // Anything but origin-form, and targets with a fragment (hyper's URI drops it), are
        // hyper's; so are bodies framed by anything but one plain `Content-Length`.
        if !target.starts_with('/') || target.contains('#') {
            return Step::HandOff;
        }
        let (length, close) = match request_framing(method, headers) {
            Ok(RequestFraming::Length(length, close)) => (length, close),
            Ok(RequestFraming::HandOff) => return Step::HandOff,
            Err(err) => {
                return Step::Fail {
                    head_len,
                    err,
                    rid: request_id(headers),
                    close: true,
                };
            }
        };
        let body_len = length.unwrap_or(0);
        let (path, query) = match split_at_byte(target, b'?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        if matches!(
            path,
            "/health" | "/health/live" | "/health/ready" | "/metrics"
        ) {
            return Step::HandOff;
        }
        let rid = request_id(headers);
        // An error answered without reading a body must close: the body would be read as a request.
        let fail = |err, rid| Step::Fail {
            head_len,
            err,
            rid,
            close: close || body_len > 0,
        };
        if head_len > max_head {
            return fail(
                GatewayError::HeadersTooLarge {
                    limit: max_head,
                    what: HeadLimit::Bytes,
                },
                rid,
            );
        }
        let t = match parse_target_parts(path, query) {
            Ok(t) => t,
            Err(e) => return fail(e, rid),
        };
        let (auth, key) = match gw.authenticate(&t, headers) {
            Ok(a) => a,
            Err(e) => return fail(e, rid),
        };
        if auth.api.upstream_tls {
            return Step::HandOff;
        }
        if body_len > gw.settings.max_body_bytes {
            let limit = gw.settings.max_body_bytes;
            return fail(GatewayError::BodyTooLarge { limit }, rid);
        }

        let fields = HeadFields {
            headers,
            key: key.as_bytes(),
            length,
        };
        write_upstream_head(out, method, &t, &fields, &auth, peer_ip, &rid);
        Step::Forward(Box::new(Prepared {
            head_len,
            auth,
            rid,
            body_len,
            close,
            is_head: method == "HEAD",
            idempotent: matches!(
                method,
                "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
            ),
        }))
    }

    /// Limits, forwards and answers one request; false when the connection must end.
    async fn exchange(&mut self, p: Prepared) -> bool {
        let started = Instant::now();
        let keep = self.limit_and_forward(p).await;
        self.gw.metrics.observe_latency(started.elapsed());
        keep
    }

    async fn limit_and_forward(&mut self, p: Prepared) -> bool {
        self.buf.advance(p.head_len);
        let gw = self.gw;
        let auth = &p.auth;
        let bucket = auth.bucket(gw.clock.now_ms());
        let refusal = match gw
            .limiter
            .check_with(auth.subject, &auth.limits, auth.enforcement)
            .await
        {
            Err(_) => gw.fail_response(&GatewayError::LimiterUnavailable, &p.rid),
            Ok((decision, _)) if !decision.allowed => {
                gw.record_rejected(bucket);
                gw.rejected_response(&decision, &p.rid)
            }
            Ok((decision, _)) => return self.forward(&p, bucket, &decision).await,
        };
        // A refused request's body is never read, so the connection cannot go on after it.
        let close = p.close || p.body_len > 0;
        self.answer(refusal, &p.rid, close).await && !close
    }

    /// Sends an admitted request upstream and relays the answer; false when the connection must
    /// end.
    async fn forward(
        &mut self,
        p: &Prepared,
        bucket: domain::usage::Bucket,
        decision: &domain::limits::Decision,
    ) -> bool {
        let gw = self.gw;
        let auth = &p.auth;
        let timeout = auth.api.timeout;
        self.dog.arm(timeout);
        let dog = self.dog;
        let sent = dog.guard(false, self.send(p)).await;
        self.dog.disarm();
        let head = match sent {
            Ok(Ok(head)) => Ok(head),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(GatewayError::UpstreamTimeout {
                timeout_ms: timeout.as_millis(),
            }),
        };
        let (status, head_len) = match head {
            Ok(h) => h,
            Err(e) => {
                // Never back to the pool: a request may be half written on it.
                self.upstream = None;
                let upstream_failed = e.status().is_server_error();
                gw.record_forwarded(bucket, false, upstream_failed);
                tracing::debug!(error = ?e, api_id = auth.api.id, "upstream request failed");
                let mut resp = gw.fail_response(&e, &p.rid);
                crate::headers::insert_rate_limit(resp.headers_mut(), decision);
                // The body may be half sent: this connection cannot be trusted to stay in step.
                self.answer(resp, &p.rid, true).await;
                return false;
            }
        };
        gw.record_forwarded(bucket, true, status >= 500);
        self.relay(p, decision, head_len).await
    }

    /// Sends the request (head in `self.out`, then its body) and reads the upstream's response
    /// head into `self.ubuf`: its status and length. A kept-alive connection that turns out to be
    /// closed is replaced once, when the whole request is still at hand.
    async fn send(&mut self, p: &Prepared) -> Result<(u16, usize), GatewayError> {
        let api = &p.auth.api;
        let body_len = usize::try_from(p.body_len).unwrap_or(usize::MAX);
        let inline = body_len <= self.buf.len().min(INLINE_BODY);
        if inline {
            self.out.extend_from_slice(&self.buf[..body_len]);
            self.buf.advance(body_len);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (key, mut up, reused) = self.checkout(api).await?;
            let sent = async {
                up.write_all(&self.out).await.map_err(Side::Upstream)?;
                if !inline {
                    copy_exact(&mut self.client, &mut up, &mut self.buf, p.body_len).await?;
                }
                read_response_head(&mut up, &mut self.ubuf)
                    .await
                    .map_err(Side::Upstream)
            }
            .await;
            // On any error `up` is dropped here: a connection that failed mid-request is closed.
            match sent {
                Ok(head) => {
                    self.upstream = Some((key, up));
                    return Ok(head);
                }
                Err(Side::Upstream(e))
                    if reused
                        && inline
                        && p.idempotent
                        && attempt == 1
                        && self.ubuf.is_empty()
                        && e.kind() != io::ErrorKind::InvalidData =>
                {
                    tracing::debug!(error = %e, "kept-alive upstream connection was closed; retrying");
                }
                Err(Side::Upstream(e)) => {
                    tracing::debug!(error = %e, "upstream exchange failed");
                    return Err(GatewayError::UpstreamUnreachable);
                }
                Err(Side::Client(e)) => {
                    tracing::debug!(error = %e, "request body ended early");
                    return Err(GatewayError::BadBody);
                }
            }
        }
    }

    /// A connection to the API's upstream (with its pool key): this client's own, a pooled one,
    /// or a new one the upstream policy allows. Pools are keyed by address and the tenant's trust,
    /// so a connection made for a trusted tenant never serves another.
    async fn checkout(
        &mut self,
        api: &domain::snapshot::ApiEntry,
    ) -> Result<(Box<str>, TcpStream, bool), GatewayError> {
        let key = &*api.pool_key;
        if let Some((a, s)) = self.upstream.take() {
            if *a == *key && looks_open(&s) {
                return Ok((a, s, true));
            }
            self.pool.put(a, s);
        }
        if let Some(s) = self.pool.take(key) {
            return Ok((key.into(), s, true));
        }
        let stream =
            crate::upstream::connect(&self.gw.policy, &api.upstream_addr, api.trusted_upstreams)
                .await?;
        Ok((key.into(), stream, false))
    }

    /// Writes the response head (the upstream's, with ours added) and streams its body.
    async fn relay(
        &mut self,
        p: &Prepared,
        decision: &domain::limits::Decision,
        head_len: usize,
    ) -> bool {
        let Some((framing, reusable, close)) = self.response_head(p, decision, head_len) else {
            // Conflicting lengths: nothing of it can be passed on safely.
            self.upstream = None;
            let resp = self
                .gw
                .fail_response(&GatewayError::UpstreamUnreachable, &p.rid);
            self.answer(resp, &p.rid, true).await;
            return false;
        };
        self.ubuf.advance(head_len);
        let streamed = self.stream_body(framing).await;
        if !(streamed && reusable && self.ubuf.is_empty()) {
            self.upstream = None;
        }
        streamed && !close
    }

    /// The client's response head, from the upstream's in `self.ubuf`, into `self.out`: with the
    /// body's framing, whether the upstream connection can be kept, whether the client's closes.
    fn response_head(
        &mut self,
        p: &Prepared,
        decision: &domain::limits::Decision,
        head_len: usize,
    ) -> Option<(Framing, bool, bool)> {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut storage);
        // The head must end where `read_response_head` found its end (it did not parse it).
        if resp.parse(&self.ubuf) != Ok(httparse::Status::Complete(head_len)) {
            return None;
        }
        let status = resp.code.unwrap_or(502);
        let headers: &[httparse::Header<'_>] = resp.headers;
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut length = None;
        let mut upstream_close = false;
        // Transfer-Encoding decides the framing, and a Content-Length beside it is not forwarded
        // (RFC 9112 6.3): the client must not see two framings.
        let coding = headers
            .iter()
            .rfind(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
            .map(|h| h.value);
        let coded = coding.is_some();
        let chunked = coding.is_some_and(|v| {
            v.rsplit(|b| *b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        });
        let connection = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .map(|h| h.value);
        // The framing fields are never copied: the client's are written below from what the
        // gateway decided, whatever `Connection` nominates.
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("transfer-encoding") {
                continue;
            }
            if name.eq_ignore_ascii_case("connection") {
                upstream_close |= connection_has_option([h.value], "close");
                continue;
            }
            if name.eq_ignore_ascii_case("content-length") {
                let n = content_length_value(h.value);
                if n.is_none() || length.is_some_and(|l| Some(l) != n) {
                    return None;
                }
                length = n;
                continue;
            }
            if forwards_response_field(name, connection.clone()) {
                push_field(out, name.as_bytes(), h.value);
            }
        }
        let framing = if p.is_head || status == 204 || status == 304 {
            Framing::None
        } else if chunked {
            Framing::Chunked
        } else if coded {
            Framing::UntilClose
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        match (framing, coding, length) {
            (Framing::Chunked, _, _) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            // A coding other than chunked last: passed on as it is, the body ending at close.
            (Framing::UntilClose, Some(v), _) => push_field(out, b"transfer-encoding", v),
            // Transfer-Encoding decides the framing, and a Content-Length beside it is not
            // forwarded (RFC 9112 6.3); a 204 has none. A HEAD or 304 answer keeps the length
            // of the body it stands for.
            (Framing::Length(_) | Framing::None, None, Some(n)) if status != 204 => push_field(
                out,
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
            ),
            _ => {}
        }
        push_field(out, b"x-request-id", p.rid.as_bytes());
        rate_limit_fields(decision, |n, v| {
            push_field(out, n.as_str().as_bytes(), v);
        });
        let close = p.close || framing == Framing::UntilClose;
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let reusable = !upstream_close && framing != Framing::UntilClose;
        Some((framing, reusable, close))
    }

    /// Streams the response body from upstream to client in its own framing; `self.out` holds the
    /// head, sent with the first bytes.
    async fn stream_body(&mut self, framing: Framing) -> bool {
        let Some((_, up)) = self.upstream.as_mut() else {
            return false;
        };
        let mut scan = ChunkScan::default();
        let mut left = match framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            // Forward what is buffered, up to the body's end.
            let take = match framing {
                Framing::None => 0,
                Framing::Length(_) => {
                    usize::try_from(left).map_or(self.ubuf.len(), |l| l.min(self.ubuf.len()))
                }
                Framing::UntilClose => self.ubuf.len(),
                Framing::Chunked => match scan.feed(&self.ubuf) {
                    Ok(Some(end)) => {
                        left = 0;
                        end
                    }
                    Ok(None) => self.ubuf.len(),
                    Err(()) => return false,
                },
            };
            if let Framing::Length(_) = framing {
                left -= take as u64;
            }
            if framing == Framing::None {
                left = 0;
            }
            if self.out.is_empty() {
                if take > 0 && self.client.write_all(&self.ubuf[..take]).await.is_err() {
                    return false;
                }
            } else {
                self.out.extend_from_slice(&self.ubuf[..take]);
                if self.client.write_all(&self.out).await.is_err() {
                    return false;
                }
                self.out.clear();
            }
            self.ubuf.advance(take);
            if left == 0 {
                return true;
            }
            self.ubuf.reserve(READ_CHUNK * 4);
            match up.read_buf(&mut self.ubuf).await {
                Ok(0) => return framing == Framing::UntilClose,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Writes one of the gateway's own answers; false when the client is gone.
    async fn answer(&mut self, resp: Response<Full<Bytes>>, rid: &str, close: bool) -> bool {
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let out = &mut self.out;
        out.clear();
        encode_head(out, parts.status, &parts.headers, body.len(), rid, close);
        out.extend_from_slice(&body);
        self.client.write_all(out).await.is_ok()
    }
}

/// The answer to a head that cannot be parsed (`None`: one still partial past the size limit);
/// nothing after it can be framed, so the connection closes.
fn unparsable(err: Option<httparse::Error>, buffered: usize, max_head: usize) -> Step {
    let err = match err {
        None => GatewayError::HeadersTooLarge {
            limit: max_head,
            what: HeadLimit::Bytes,
        },
        Some(httparse::Error::TooManyHeaders) => GatewayError::HeadersTooLarge {
            limit: MAX_HEADERS,
            what: HeadLimit::Fields,
        },
        Some(_) => GatewayError::BadRequest("The request is not valid HTTP/1.1."),
    };
    Step::Fail {
        head_len: buffered,
        err,
        rid: request_id(NO_HEADERS),
        close: true,
    }
}

/// A `Content-Length` value: decimal digits only (no sign, no spaces inside, no list).
fn content_length_value(v: &[u8]) -> Option<u64> {
    // 19 digits at most: never more than u64 holds.
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

const BAD_LENGTH: &str =
    "Content-Length must be one decimal number (repeated only with the same value).";

/// How a request's body is framed, as the fast path reads its head.
#[derive(Debug, PartialEq, Eq)]
enum RequestFraming {
    /// A `Content-Length` (or none: no body), and whether the request asks to close.
    Length(Option<u64>, bool),
    /// `Transfer-Encoding` or `Expect`: hyper's to serve.
    HandOff,
}

/// How the body after this head is framed, or why nothing after it can be read: framing that is
/// no framing (a `Content-Length` that is not one number, two that differ, a `Transfer-Encoding`
/// that does not end in chunked), or a head [`admit_head`] refuses.
fn request_framing(
    method: &str,
    headers: &[httparse::Header<'_>],
) -> Result<RequestFraming, GatewayError> {
    let (mut hosts, mut te) = (0, false);
    let mut body_len = None;
    let mut close = false;
    let mut coded = false;
    let mut chunked_last = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        }
        if name.eq_ignore_ascii_case("expect") {
            coded = true;
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            te = true;
            chunked_last = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
        if name.eq_ignore_ascii_case("content-length") {
            match (body_len, content_length_value(h.value)) {
                (_, None) => return Err(GatewayError::BadRequest(BAD_LENGTH)),
                (Some(a), Some(b)) if a != b => return Err(GatewayError::BadRequest(BAD_LENGTH)),
                (_, n) => body_len = n,
            }
        }
        if name.eq_ignore_ascii_case("connection") && connection_has_option([h.value], "close") {
            close = true;
        }
    }
    admit_head(method, hosts, true)?;
    if te && !chunked_last {
        return Err(GatewayError::BadRequest(
            "A request's Transfer-Encoding must end in chunked (RFC 9112 6.3).",
        ));
    }
    if coded {
        // Transfer-Encoding beside a Content-Length wins over it (RFC 9112 6.3); hyper reads it.
        return Ok(RequestFraming::HandOff);
    }
    Ok(RequestFraming::Length(body_len, close))
}

/// The caller's fields as the fast path read them: with the key it presented and the body length
/// it framed.
#[derive(Clone, Copy)]
struct HeadFields<'h, 'b> {
    headers: &'h [httparse::Header<'b>],
    key: &'h [u8],
    length: Option<u64>,
}

/// The upstream's request head into `out`: request line, the caller's end-to-end fields, then
/// the gateway's.
fn write_upstream_head(
    out: &mut Vec<u8>,
    method: &str,
    t: &crate::proxy::Target<'_>,
    fields: &HeadFields<'_, '_>,
    auth: &Auth,
    peer_ip: &str,
    rid: &str,
) {
    let HeadFields {
        headers,
        key,
        length,
    } = *fields;
    let api = &auth.api;
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(api.upstream_path.as_bytes());
    out.extend_from_slice(t.rest.as_bytes());
    match (api.upstream.query(), t.query) {
        (Some(a), Some(b)) => {
            out.push(b'?');
            out.extend_from_slice(a.as_bytes());
            out.push(b'&');
            out.extend_from_slice(b.as_bytes());
        }
        (Some(q), None) | (None, Some(q)) => {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        (None, None) => {}
    }
    if api.upstream_path.is_empty() && t.rest.is_empty() {
        // "GET ?q" is not a request line; the root it means is "/".
        let at = method.len() + 1;
        out.insert(at, b'/');
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let connection = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .map(|h| h.value);
    let mut original_host = None;
    let mut prior_xff = Vec::new();
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            original_host = Some(h.value);
        } else if name.eq_ignore_ascii_case(X_FORWARDED_FOR.as_str()) {
            prior_xff.push(h.value);
        } else if forwards_request_field(name, h.value, connection.clone(), &api.key_header, key) {
            push_field(out, name.as_bytes(), h.value);
        }
    }
    // The body's framing, from the gateway's own reading of the head (never the caller's field).
    if let Some(n) = length {
        push_field(
            out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        );
    }
    forwarded_fields(auth, peer_ip, &prior_xff, original_host, rid, |n, v| {
        push_field(out, n.as_str().as_bytes(), v);
    });
    out.extend_from_slice(b"\r\n");
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &http::HeaderMap,
    body_len: usize,
    rid: &str,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    push_field(out, b"x-request-id", rid.as_bytes());
    push_field(
        out,
        b"content-length",
        itoa::Buffer::new().format(body_len).as_bytes(),
    );
    push_field(
        out,
        b"date",
        httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes(),
    );
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Which side of an exchange failed: the caller's (its body ended early) or the upstream's.
enum Side {
    Client(io::Error),
    Upstream(io::Error),
}

/// Copies exactly `len` body bytes from the client to the upstream: first those already in `buf`.
async fn copy_exact(
    client: &mut TcpStream,
    up: &mut TcpStream,
    buf: &mut BytesMut,
    len: u64,
) -> Result<(), Side> {
    let mut left = len;
    loop {
        let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        if take > 0 {
            up.write_all(&buf[..take]).await.map_err(Side::Upstream)?;
            buf.advance(take);
            left -= take as u64;
        }
        if left == 0 {
            return Ok(());
        }
        buf.reserve(READ_CHUNK * 4);
        match client.read_buf(buf).await {
            Ok(0) => return Err(Side::Client(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Err(Side::Client(e)),
        }
    }
}

/// Reads until `ubuf` starts with a final (non-1xx) response head: its status and length.
async fn read_response_head(up: &mut TcpStream, ubuf: &mut BytesMut) -> io::Result<(u16, usize)> {
    ubuf.clear();
    loop {
        // The usual head (CRLF line ends, all of it in the buffer) is found without parsing it;
        // `Conn::response_head` parses it once, as it writes the client's.
        if let Some((code, n)) = quick_head(ubuf) {
            match code {
                101 => return Err(io::Error::new(io::ErrorKind::InvalidData, "101")),
                100..=199 => ubuf.advance(n),
                _ => return Ok((code, n)),
            }
            continue;
        }
        if !ubuf.is_empty() {
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut storage);
            match resp.parse(ubuf) {
                Ok(httparse::Status::Complete(n)) => {
                    let code = resp.code.unwrap_or(0);
                    match code {
                        101 => return Err(io::Error::new(io::ErrorKind::InvalidData, "101")),
                        100..=199 => ubuf.advance(n),
                        _ => return Ok((code, n)),
                    }
                    continue;
                }
                Ok(httparse::Status::Partial) if ubuf.len() < MAX_RESPONSE_HEAD => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unreadable response head",
                    ));
                }
            }
        }
        ubuf.reserve(READ_CHUNK);
        if up.read_buf(ubuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The status code of a response head that is all in `buf` with CRLF line ends, and where the head
/// ends; `None` when the head is partial, ends its lines otherwise, or has no sane status line.
fn quick_head(buf: &[u8]) -> Option<(u16, usize)> {
    // The first blank line ends the head: CRLF CRLF, with no bare-LF blank line before it. (A
    // line-by-line scan: `memmem` sets up more than it saves on a head this short.)
    let mut end = None;
    for lf in memchr::memchr_iter(b'\n', buf) {
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\r'), Some(b'\n')) if lf > 0 && buf[lf - 1] == b'\r' => {
                end = Some(lf + 3);
                break;
            }
            (Some(b'\r' | b'\n') | None, _) => return None,
            _ => {}
        }
    }
    let end = end?;
    // "HTTP/1.1 200 OK\r\n", or without the reason phrase.
    let line = buf.get(..13)?;
    let digits = &line[9..12];
    if !(line.starts_with(b"HTTP/1.")
        && line[7].is_ascii_digit()
        && line[8] == b' '
        && digits.iter().all(u8::is_ascii_digit)
        && matches!(line[12], b' ' | b'\r'))
    {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Some((code, end))
}

/// Finds where a chunked body ends without decoding it (the bytes pass through as they are).
#[derive(Default)]
struct ChunkScan {
    state: ChunkState,
    size: u64,
    digits: u8,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    FinalLf,
}

impl ChunkScan {
    /// Consumes `bytes` (everything after the previous call's); `Some(n)` when the body ends after
    /// its first `n` bytes.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        use ChunkState as S;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                S::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = u64::from(char::from(b).to_digit(16).unwrap_or(0));
                        self.size = self.size.checked_mul(16).ok_or(())? + d;
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(());
                        }
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = S::Ext,
                    b'\r' if self.digits > 0 => self.state = S::SizeLf,
                    b'\n' if self.digits > 0 => self.end_size_line(),
                    _ => return Err(()),
                },
                S::Ext => match b {
                    b'\r' => self.state = S::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => {}
                },
                S::SizeLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.end_size_line();
                }
                S::Data => {
                    let avail = (bytes.len() - i) as u64;
                    let skip = avail.min(self.size);
                    self.size -= skip;
                    i += usize::try_from(skip).map_err(|_| ())?;
                    if self.size == 0 {
                        self.state = S::DataCr;
                    }
                    continue;
                }
                S::DataCr => match b {
                    b'\r' => self.state = S::DataLf,
                    b'\n' => self.next_chunk(),
                    _ => return Err(()),
                },
                S::DataLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.next_chunk();
                }
                S::TrailerStart => match b {
                    b'\r' => self.state = S::FinalLf,
                    b'\n' => return Ok(Some(i + 1)),
                    _ => self.state = S::Trailer,
                },
                S::Trailer => {
                    if b == b'\n' {
                        self.state = S::TrailerStart;
                    }
                }
                S::FinalLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    return Ok(Some(i + 1));
                }
            }
            i += 1;
        }
        Ok(None)
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        };
    }

    fn next_chunk(&mut self) {
        self.state = ChunkState::Size;
        self.size = 0;
        self.digits = 0;
    }
}

/// The client socket with the bytes the fast path already read put back in front, for hyper.
pub struct Prefixed {
    pre: BytesMut,
    inner: TcpStream,
}

impl Prefixed {
    pub fn new(pre: BytesMut, inner: TcpStream) -> Self {
        Self { pre, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pre.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.pre.len().min(buf.remaining());
        buf.put_slice(&self.pre[..n]);
        self.pre.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(parts: &[&[u8]]) -> Option<usize> {
        let mut scan = ChunkScan::default();
        let mut seen = 0;
        for p in parts {
            if let Some(n) = scan.feed(p).unwrap() {
                return Some(seen + n);
            }
            seen += p.len();
        }
        None
    }

    #[test]
    fn a_response_head_ends_where_httparse_says_or_is_left_to_it() {
        let parsed = |buf: &[u8]| {
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut storage);
            match resp.parse(buf) {
                Ok(httparse::Status::Complete(n)) => Some((resp.code.unwrap_or(0), n)),
                _ => None,
            }
        };
        // (head, found without httparse); the rest are left to httparse: partial heads, bare-LF
        // line ends (even with CRLF CRLF in the body), a status line that is not one.
        for (head, quick) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..], true),
            (b"HTTP/1.1 204\r\n\r\n", true),
            (b"HTTP/1.0 404 Not Found\r\nA: b\r\n\r\nbody\r\n\r\n", true),
            // A bare LF inside the head, CRLF CRLF at its end: the same end either way.
            (b"HTTP/1.1 200 OK\nA: b\r\n\r\n", true),
            (
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
                true,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", false),
            (b"HTTP/1.1 200 OK\nContent-Length: 4\n\n\r\n\r\n", false),
            (b"HTTP/1.1 2x0 OK\r\n\r\n", false),
            (b"HTTP/2.0 200 OK\r\n\r\n", false),
            (b"\r\n\r\n", false),
        ] {
            let expected = if quick { parsed(head) } else { None };
            assert!(!quick || expected.is_some());
            assert_eq!(
                quick_head(head),
                expected,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        assert_eq!(end_of(&[body]), Some(body.len() - 4));
        // Split at every byte: the same end.
        let parts: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(end_of(&parts), Some(body.len() - 4));
        let trailers = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n";
        assert_eq!(end_of(&[trailers]), Some(trailers.len()));
        assert_eq!(end_of(&[b"3\r\nab"]), None);
        assert!(ChunkScan::default().feed(b"zz\r\n").is_err());
        assert!(ChunkScan::default().feed(b"3\r\nabcX").is_err());
    }
}
