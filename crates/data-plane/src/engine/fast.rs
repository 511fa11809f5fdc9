//! The fast engine: the common proxied HTTP/1.1 request served straight off the socket.
//!
//! A connection starts here. Each request head is parsed in place (httparse, framing by
//! `crate::wire`) and put through the pipeline's phases (`crate::pipeline`: admit, limit, the
//! upstream request and response fields, finish); the upstream head is written to a kept-alive
//! upstream connection and the answer streamed back with its framing untouched (`Content-Length`,
//! chunked, or until close). No per-request task, channel, header map or timer (deadlines are
//! kept by [`crate::watchdog`]): the upstream connection belongs to the client connection while
//! it is used (and goes back to the worker's pool, `crate::upstream::UpstreamPool`, when the
//! client leaves).
//!
//! The client connection may be TCP or TLS (ALPN `http/1.1`). Anything else — HTTP/1.0, chunked
//! or `Expect` uploads, `Upgrade` (WebSocket), HTTP/2 with prior knowledge, duplicate lengths,
//! non-origin-form targets, `https` upstreams, `/health` and `/metrics` — hands the connection,
//! with every byte read so far, to the hyper engine (`crate::engine::hyper`), which serves the
//! rest of it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::Response;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::errors::{GatewayError, HeadLimit};
use crate::gateway::is_local_path;
use crate::headers::{HeaderSource, X_FORWARDED_FOR, connection_has_option};
use crate::pipeline::target::split_at_byte;
use crate::pipeline::{
    self, Admission, Admitted, Auth, Gateway, Piece, Refused, RequestHead, Trace, forwarded_fields,
    forwards_request_field, forwards_response_field,
};
use crate::upstream::balance::{Picked, Tried};
use crate::upstream::{UpstreamPool, looks_open};
use crate::watchdog::Watchdog;
use domain::snapshot::TargetEntry;
use wire::{
    ChunkScan, RequestFraming, content_length_value, encode_head, push_field, quick_head,
    request_framing,
};

pub use wire::MAX_HEADERS;
const NO_HEADERS: &[httparse::Header<'_>] = &[];
const READ_CHUNK: usize = 16 * 1024;
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Bodies up to this size already in the buffer go out in the same write as the head.
const INLINE_BODY: usize = 16 * 1024;

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
    /// What the finish phase records of it (its request id among them).
    trace: Trace,
    /// The body's length as the gateway framed it (0 without `Content-Length`).
    body_len: u64,
    close: bool,
    is_head: bool,
    /// Safe to send twice (RFC 9110 9.2.2), so retried on a kept-alive connection found closed,
    /// and on another target when it failed before an answer.
    idempotent: bool,
    /// The target it goes to (`None` once told the outcome).
    picked: Option<Picked>,
    /// Where the target's part of the upstream head is, for a retry on another target.
    line: HeadLine,
}

enum Step {
    NeedMore,
    HandOff,
    Fail {
        head_len: usize,
        err: GatewayError,
        trace: Box<Trace>,
        close: bool,
    },
    Forward(Box<Prepared>),
}

/// A client connection on the fast engine: a TCP stream, or a TLS one (`https`) whose ALPN chose
/// HTTP/1.1.
pub struct Conn<'a, C = TcpStream> {
    gw: &'a Gateway,
    pool: &'a UpstreamPool,
    /// This connection's deadline: the request head's, then the upstream answer's.
    dog: &'a Watchdog,
    client: C,
    /// The caller spoke TLS to the gateway (`X-Forwarded-Proto: https`).
    https: bool,
    /// The caller's address as `X-Forwarded-For` names it, formatted once per connection.
    peer_ip: String,
    peer_addr: IpAddr,
    buf: BytesMut,
    ubuf: BytesMut,
    out: Vec<u8>,
    upstream: Option<(Box<str>, TcpStream)>,
    /// Part of the current request's body is still unread (it was being streamed upstream): the
    /// connection is out of step with the client after a failure.
    body_unread: bool,
}

impl<'a, C: AsyncRead + AsyncWrite + Unpin> Conn<'a, C> {
    pub fn new(
        gw: &'a Gateway,
        pool: &'a UpstreamPool,
        dog: &'a Watchdog,
        client: C,
        peer: SocketAddr,
        https: bool,
    ) -> Self {
        Self {
            gw,
            pool,
            dog,
            client,
            https,
            peer_ip: peer.ip().to_string(),
            peer_addr: peer.ip(),
            buf: BytesMut::with_capacity(READ_CHUNK),
            ubuf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
            upstream: None,
            body_unread: false,
        }
    }

    /// The client socket, for hyper after a hand-off ([`Self::run`] has pooled the upstream).
    pub fn into_client(self) -> C {
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
                    mut trace,
                    close,
                } => {
                    self.buf.advance(head_len);
                    let resp = self.gw.refuse_traced(&err, &mut trace, None);
                    let answered = self.answer(resp, close).await;
                    self.gw.finish(*trace);
                    if !answered || close {
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
            peer_addr,
            https,
            ..
        } = self;
        if buf.is_empty() {
            return Step::NeedMore;
        }
        // HTTP/2 with prior knowledge (h2c) starts with its preface, `PRI * HTTP/2.0`: hyper's.
        if buf.starts_with(b"PRI ") {
            return Step::HandOff;
        }
        let max_head = gw.settings.max_header_bytes;
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut storage);
        let head_len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() <= max_head => return Step::NeedMore,
            unparsed => return unparsable(gw, unparsed.err(), buf.len(), max_head, *peer_addr),
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
        let (length, close, hosts) = match request_framing(headers) {
            Ok(RequestFraming::Length {
                body_len,
                close,
                hosts,
            }) => (body_len, close, hosts),
            Ok(RequestFraming::HandOff) => return Step::HandOff,
            Err(wire::BadFraming(why)) => {
                return Step::Fail {
                    head_len,
                    err: GatewayError::BadRequest(why),
                    trace: Box::new(Trace::start(gw, headers, *peer_addr)),
                    close: true,
                };
            }
        };
        let (path, query) = match split_at_byte(target, b'?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        if is_local_path(path) {
            return Step::HandOff;
        }
        let body_len = length.unwrap_or(0);
        let head = FastHead {
            method,
            path,
            query,
            headers,
            head_len,
            hosts,
            length,
        };
        let mut trace = Trace::start(gw, headers, *peer_addr);
        let Admitted {
            target: t,
            auth,
            key,
            picked,
        } = match gw.admit(&head, false, &mut trace) {
            Ok(Admission::Admitted(a)) => a,
            // hyper speaks TLS to upstreams: the request is its to serve, from the start.
            Ok(Admission::HandOff) => return Step::HandOff,
            // An error answered without reading a body must close: the body would be read as a
            // request.
            Err(r) => return refused(r, head_len, trace, close || body_len > 0),
        };

        let fields = HeadFields {
            headers,
            key: key.as_bytes(),
            length,
        };
        let line = write_upstream_head(
            out,
            method,
            &t,
            &fields,
            &auth,
            picked.target(),
            (peer_ip, *https),
            &trace.rid,
        );
        Step::Forward(Box::new(Prepared {
            head_len,
            auth,
            trace,
            body_len,
            close,
            is_head: method == "HEAD",
            idempotent: pipeline::is_idempotent(method),
            picked: Some(picked),
            line,
        }))
    }

    /// Limits, forwards and answers one request, then finishes it; false when the connection
    /// must end.
    async fn exchange(&mut self, mut p: Prepared) -> bool {
        let keep = self.limit_and_forward(&mut p).await;
        self.gw.finish(p.trace);
        keep
    }

    async fn limit_and_forward(&mut self, p: &mut Prepared) -> bool {
        self.buf.advance(p.head_len);
        let gw = self.gw;
        let refusal = match gw.limit(&p.auth, &mut p.trace).await {
            Ok(decision) => return self.forward(p, &decision).await,
            Err(refusal) => refusal,
        };
        // A refused request's body is never read, so the connection cannot go on after it.
        let close = p.close || p.body_len > 0;
        self.answer(refusal, close).await && !close
    }

    /// Sends an admitted request upstream and relays the answer; false when the connection must
    /// end.
    async fn forward(&mut self, p: &mut Prepared, decision: &domain::limits::Decision) -> bool {
        let gw = self.gw;
        let sent_at = Instant::now();
        let head = self.send(p).await;
        p.trace.upstream_us =
            Some(u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX));
        self.dog.disarm();
        if let Some(picked) = p.picked.take() {
            gw.report(picked, head.as_ref().map(|(status, _)| *status));
        }
        let (status, head_len) = match head {
            Ok(h) => h,
            Err(e) => {
                // Never back to the pool: a request may be half written on it.
                self.upstream = None;
                gw.count_forwarded(false, e.status().is_server_error());
                tracing::debug!(error = ?e, api_id = p.auth.api.id, "upstream request failed");
                let resp = gw.refuse_traced(&e, &mut p.trace, Some(decision));
                // A body left half read puts the connection out of step: it closes after this.
                let close = p.close || self.body_unread;
                return self.answer(resp, close).await && !close;
            }
        };
        gw.count_forwarded(true, status >= 500);
        p.trace.upstream_answered(status);
        self.relay(p, decision, head_len).await
    }

    /// Sends the request (head in `self.out`, then its body) and reads the upstream's response
    /// head into `self.ubuf`: its status and length. A kept-alive connection that turns out to be
    /// closed is replaced once, when the whole request is still at hand; a try that failed (or
    /// got no answer within the API's or route's timeout: each try has its own) is made again on
    /// another target while the pipeline says it may ([`pipeline::retryable`]).
    async fn send(&mut self, p: &mut Prepared) -> Result<(u16, usize), GatewayError> {
        let timeout = p.auth.timeout();
        let dog = self.dog;
        let body_len = usize::try_from(p.body_len).unwrap_or(usize::MAX);
        let inline = body_len <= self.buf.len().min(INLINE_BODY);
        if inline {
            self.out.extend_from_slice(&self.buf[..body_len]);
            self.buf.advance(body_len);
        }
        self.body_unread = !inline;
        let mut stale_retried = false;
        let mut tried = Tried::default();
        let mut tries_left = p.auth.retries();
        loop {
            let Some(picked) = p.picked.as_ref() else {
                return Err(GatewayError::UpstreamUnreachable);
            };
            p.trace.target_id = picked.target().id;
            dog.arm(timeout);
            let timed_out = || GatewayError::UpstreamTimeout {
                timeout_ms: timeout.as_millis(),
            };
            let checked_out = dog
                .guard(
                    false,
                    self.checkout(picked.target(), p.auth.api.trusted_upstreams),
                )
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            let (key, mut up, reused) = match checked_out {
                Ok(c) => c,
                Err(e @ GatewayError::UpstreamForbidden) => return Err(e),
                Err(e) => {
                    // Nothing was sent, and the body is still at hand (inline, or unread).
                    let may = pipeline::retryable(false, p.idempotent, true);
                    self.next_target(p, &mut tried, &mut tries_left, may, e)?;
                    continue;
                }
            };
            let mut streamed = false;
            let exchange = async {
                up.write_all(&self.out).await.map_err(Side::Upstream)?;
                if !inline {
                    streamed = true;
                    copy_exact(&mut self.client, &mut up, &mut self.buf, p.body_len).await?;
                    self.body_unread = false;
                }
                read_response_head(&mut up, &mut self.ubuf)
                    .await
                    .map_err(Side::Upstream)
            };
            let sent = dog
                .guard(false, exchange)
                .await
                .unwrap_or(Err(Side::TimedOut));
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
                        && !stale_retried
                        && self.ubuf.is_empty()
                        && e.kind() != io::ErrorKind::InvalidData =>
                {
                    stale_retried = true;
                    tracing::debug!(error = %e, "kept-alive upstream connection was closed; retrying");
                }
                Err(Side::Upstream(e)) => {
                    tracing::debug!(error = %e, "upstream exchange failed");
                    // Before any answer byte, with the body still at hand (it went with the head).
                    let before_answer =
                        self.ubuf.is_empty() && e.kind() != io::ErrorKind::InvalidData;
                    let may = before_answer && pipeline::retryable(true, p.idempotent, !streamed);
                    self.next_target(
                        p,
                        &mut tried,
                        &mut tries_left,
                        may,
                        GatewayError::UpstreamUnreachable,
                    )?;
                }
                Err(Side::TimedOut) => {
                    tracing::debug!(?timeout, "upstream did not answer in time");
                    // Like a failure before any answer byte, when none came.
                    let may =
                        self.ubuf.is_empty() && pipeline::retryable(true, p.idempotent, !streamed);
                    self.next_target(p, &mut tried, &mut tries_left, may, timed_out())?;
                }
                Err(Side::Client(e)) => {
                    tracing::debug!(error = %e, "request body ended early");
                    return Err(GatewayError::BadBody);
                }
            }
        }
    }

    /// After a failed try: the next target into `p` (its head rewritten for it) when the request
    /// `may` be tried again and has tries left, else `err`.
    fn next_target(
        &mut self,
        p: &mut Prepared,
        tried: &mut Tried,
        tries_left: &mut u32,
        may: bool,
        err: GatewayError,
    ) -> Result<(), GatewayError> {
        let Some(failed) = p.picked.take() else {
            return Err(err);
        };
        let Some(next) = self.gw.retry(failed, tried, tries_left, may) else {
            return Err(err);
        };
        retarget(&mut self.out, &mut p.line, next.target());
        p.picked = Some(next);
        p.trace.flags |= domain::request_log::flags::RETRIED;
        Ok(())
    }

    /// A connection to `target` (with its pool key): this client's own, a pooled one, or a new
    /// one the upstream policy allows. Pools are keyed by address and the tenant's trust, so a
    /// connection made for a trusted tenant never serves another.
    async fn checkout(
        &mut self,
        target: &TargetEntry,
        trusted: bool,
    ) -> Result<(Box<str>, TcpStream, bool), GatewayError> {
        let key = &*target.pool_key;
        if let Some((a, s)) = self.upstream.take() {
            if *a == *key && looks_open(&s) {
                return Ok((a, s, true));
            }
            self.pool.put(a, s);
        }
        if let Some(s) = self.pool.take(key) {
            return Ok((key.into(), s, true));
        }
        let stream = crate::upstream::connect(&self.gw.policy, &target.addr, trusted).await?;
        Ok((key.into(), stream, false))
    }

    /// Writes the response head (the upstream's, with ours added) and streams its body.
    async fn relay(
        &mut self,
        p: &mut Prepared,
        decision: &domain::limits::Decision,
        head_len: usize,
    ) -> bool {
        let Some((framing, reusable, close)) = self.response_head(p, decision, head_len) else {
            // Conflicting lengths: nothing of it can be passed on safely.
            self.upstream = None;
            let resp = self.gw.refuse_traced(
                &GatewayError::UpstreamUnreachable,
                &mut p.trace,
                Some(decision),
            );
            // The request was all sent: the client's connection is still in step.
            return self.answer(resp, p.close).await && !p.close;
        };
        self.ubuf.advance(head_len);
        let streamed = self.stream_body(framing, &mut p.trace.bytes_out).await;
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
        // (Inlined at each of its calls, as the request's field writer.)
        pipeline::answer_fields(
            &p.trace.rid,
            decision,
            #[inline(always)]
            |n, v| {
                push_field(out, n.as_str().as_bytes(), v);
            },
        );
        let close = p.close || framing == Framing::UntilClose;
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let reusable = !upstream_close && framing != Framing::UntilClose;
        Some((framing, reusable, close))
    }

    /// Streams the response body from upstream to client in its own framing; `self.out` holds the
    /// head, sent with the first bytes. `sent`: the body's bytes passed on so far.
    async fn stream_body(&mut self, framing: Framing, sent: &mut u64) -> bool {
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
                    Err(wire::BadChunk) => return false,
                },
            };
            if let Framing::Length(_) = framing {
                left -= take as u64;
            }
            if framing == Framing::None {
                left = 0;
            }
            if self.out.is_empty() {
                if take > 0 && send(&mut self.client, &self.ubuf[..take]).await.is_err() {
                    return false;
                }
            } else {
                self.out.extend_from_slice(&self.ubuf[..take]);
                if send(&mut self.client, &self.out).await.is_err() {
                    return false;
                }
                self.out.clear();
            }
            self.ubuf.advance(take);
            *sent += take as u64;
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
    async fn answer(&mut self, resp: Response<Full<Bytes>>, close: bool) -> bool {
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let out = &mut self.out;
        out.clear();
        encode_head(out, parts.status, &parts.headers, body.len(), close);
        out.extend_from_slice(&body);
        send(&mut self.client, out).await.is_ok()
    }
}

/// The answer to a request the admit phase refused; `close`: the connection cannot go on after it
/// anyway.
fn refused(r: Refused, head_len: usize, trace: Trace, close: bool) -> Step {
    Step::Fail {
        head_len,
        err: r.err,
        trace: Box::new(trace),
        close: r.close || close,
    }
}

/// The answer to a head that cannot be parsed (`None`: one still partial past the size limit);
/// nothing after it can be framed, so the connection closes.
fn unparsable(
    gw: &Gateway,
    err: Option<httparse::Error>,
    buffered: usize,
    max_head: usize,
    peer: IpAddr,
) -> Step {
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
        trace: Box::new(Trace::start(gw, NO_HEADERS, peer)),
        close: true,
    }
}

/// httparse's request as the pipeline reads a head, with what the framing pass counted.
struct FastHead<'h, 'b> {
    method: &'b str,
    path: &'b str,
    query: Option<&'b str>,
    headers: &'h [httparse::Header<'b>],
    head_len: usize,
    hosts: usize,
    length: Option<u64>,
}

impl HeaderSource for FastHead<'_, '_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.header(name)
    }
}

impl RequestHead for FastHead<'_, '_> {
    fn method(&self) -> &str {
        self.method
    }

    fn path(&self) -> &str {
        self.path
    }

    fn query(&self) -> Option<&str> {
        self.query
    }

    fn head_len(&self) -> usize {
        self.head_len
    }

    fn hosts(&self) -> usize {
        self.hosts
    }

    fn is_http11(&self) -> bool {
        true
    }

    fn content_length(&self) -> Option<u64> {
        self.length
    }
}

/// The caller's fields as the fast path read them: with the key it presented and the body length
/// it framed.
#[derive(Clone, Copy)]
struct HeadFields<'h, 'b> {
    headers: &'h [httparse::Header<'b>],
    key: &'h [u8],
    length: Option<u64>,
}

/// Where the target's part of an upstream head is — from after the method to the end of the
/// `Host` line — and where the caller's path rest and query are inside it: what a retry on
/// another target rewrites ([`retarget`]).
#[derive(Debug, Clone, Copy, Default)]
struct HeadLine {
    method_len: usize,
    rest: (usize, usize),
    query: Option<(usize, usize)>,
    end: usize,
}

/// The request target on `target` and the `Host` line, after the method already in `out`.
fn write_target_line(
    out: &mut Vec<u8>,
    method_len: usize,
    target: &TargetEntry,
    rest: &str,
    query: Option<&str>,
) -> HeadLine {
    let mut line = HeadLine {
        method_len,
        ..HeadLine::default()
    };
    pipeline::upstream_target(target, rest, query, |piece, b| {
        let at = out.len();
        out.extend_from_slice(b);
        match piece {
            Piece::Rest => line.rest = (at, out.len()),
            Piece::Query => line.query = Some((at, out.len())),
            Piece::Target => {}
        }
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_field(out, b"host", pipeline::upstream_host(target));
    line.end = out.len();
    line
}

/// The upstream head in `out` (and any body after it), rewritten for `target`: its request
/// target and `Host`; the rest stays as it was.
fn retarget(out: &mut Vec<u8>, line: &mut HeadLine, target: &TargetEntry) {
    let old = std::mem::replace(out, Vec::with_capacity(out.len() + 64));
    let text = |(a, b): (usize, usize)| std::str::from_utf8(&old[a..b]).unwrap_or_default();
    out.extend_from_slice(&old[..=line.method_len]);
    let next = write_target_line(
        out,
        line.method_len,
        target,
        text(line.rest),
        line.query.map(text),
    );
    out.extend_from_slice(&old[line.end..]);
    *line = next;
}

/// The upstream's request head into `out`: request line and `Host` for `target`, the caller's
/// end-to-end fields, then the gateway's.
#[allow(clippy::too_many_arguments)]
fn write_upstream_head(
    out: &mut Vec<u8>,
    method: &str,
    t: &pipeline::Target<'_>,
    fields: &HeadFields<'_, '_>,
    auth: &Auth,
    target: &TargetEntry,
    (peer_ip, https): (&str, bool),
    rid: &str,
) -> HeadLine {
    let HeadFields {
        headers,
        key,
        length,
    } = *fields;
    let api = &auth.api;
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    let line = write_target_line(
        out,
        method.len(),
        target,
        auth.forwarded_rest(t.rest),
        t.query,
    );
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
    // (Inlined at each of its calls: out of line, the calls cost more than the copies.)
    forwarded_fields(
        auth,
        https,
        peer_ip,
        &prior_xff,
        original_host,
        rid,
        #[inline(always)]
        |n, v| {
            push_field(out, n.as_str().as_bytes(), v);
        },
    );
    out.extend_from_slice(b"\r\n");
    line
}

/// Which side of an exchange failed: the caller's (its body ended early) or the upstream's (an
/// error, or no answer in time).
enum Side {
    Client(io::Error),
    Upstream(io::Error),
    TimedOut,
}

/// Writes `bytes` to the client, all of them on the wire (a TLS stream holds records back until
/// flushed; for TCP the flush is nothing).
async fn send<C: AsyncWrite + Unpin>(client: &mut C, bytes: &[u8]) -> io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

/// Copies exactly `len` body bytes from the client to the upstream: first those already in `buf`.
async fn copy_exact<C: AsyncRead + Unpin>(
    client: &mut C,
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

/// The client socket with the bytes the fast path already read put back in front, for hyper.
pub struct Prefixed<C = TcpStream> {
    pre: BytesMut,
    inner: C,
}

impl<C> Prefixed<C> {
    pub fn new(pre: BytesMut, inner: C) -> Self {
        Self { pre, inner }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Prefixed<C> {
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

impl<C: AsyncWrite + Unpin> AsyncWrite for Prefixed<C> {
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
