//! The HTTP/1.1 wire codec of the fast engine, as pure functions over bytes: a request head's
//! framing ([`request_framing`]), a response head's end and status ([`quick_head`]), where a chunked
//! body ends ([`ChunkScan`]), and the writing of head fields ([`push_field`], [`encode_head`]).

use http::StatusCode;

/// Why a request head frames no body that can be read: the message for the caller's 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFraming(pub &'static str);

/// Whether one of the `Connection` values carries the option `token` (`close`, `keep-alive`).
#[inline]
pub fn connection_has_option<'a>(
    connection: impl IntoIterator<Item = &'a [u8]>,
    token: &str,
) -> bool {
    connection.into_iter().any(|v| {
        v.split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Most header fields in a request head (431 above), and in a response head.
pub const MAX_HEADERS: usize = 128;

/// A `Content-Length` value: decimal digits only (no sign, no spaces inside, no list).
#[inline]
pub fn content_length_value(v: &[u8]) -> Option<u64> {
    // 19 digits at most: never more than u64 holds.
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

pub const BAD_LENGTH: &str =
    "Content-Length must be one decimal number (repeated only with the same value).";

/// How a request's body is framed, as the fast path reads its head.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// Framed by a `Content-Length` (or none: no body).
    Length {
        body_len: Option<u64>,
        /// The request asks to close the connection after its answer.
        close: bool,
        /// How many `Host` fields the head has (counted in the same pass, for the admit phase).
        hosts: usize,
    },
    /// `Transfer-Encoding`, `Expect` or `Upgrade`: hyper's to serve.
    HandOff,
}

/// How the body after this head is framed, or why nothing after it can be read: framing that is
/// no framing (a `Content-Length` that is not one number, two that differ, a `Transfer-Encoding`
/// that does not end in chunked).
#[inline]
pub fn request_framing(headers: &[httparse::Header<'_>]) -> Result<RequestFraming, BadFraming> {
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
        // `Expect` waits for a `100 Continue`; `Upgrade` may become a WebSocket.
        if name.eq_ignore_ascii_case("expect") || name.eq_ignore_ascii_case("upgrade") {
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
                (_, None) => return Err(BadFraming(BAD_LENGTH)),
                (Some(a), Some(b)) if a != b => return Err(BadFraming(BAD_LENGTH)),
                (_, n) => body_len = n,
            }
        }
        if name.eq_ignore_ascii_case("connection") && connection_has_option([h.value], "close") {
            close = true;
        }
    }
    if te && !chunked_last {
        return Err(BadFraming(
            "A request's Transfer-Encoding must end in chunked (RFC 9112 6.3).",
        ));
    }
    if coded {
        // Transfer-Encoding beside a Content-Length wins over it (RFC 9112 6.3); hyper reads it.
        return Ok(RequestFraming::HandOff);
    }
    Ok(RequestFraming::Length {
        body_len,
        close,
        hosts,
    })
}

/// (Always inlined: four appends, called for every field of every request and answer.)
#[allow(clippy::inline_always)] // measured: scripts/bench-instructions, -260 per request
#[inline(always)]
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &http::HeaderMap,
    body_len: usize,
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

/// The status code of a response head that is all in `buf` with CRLF line ends, and where the head
/// ends; `None` when the head is partial, ends its lines otherwise, or has no sane status line.
#[inline]
pub fn quick_head(buf: &[u8]) -> Option<(u16, usize)> {
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
    // Only the versions httparse reads (1.0, 1.1), and a status of 100-999: anything else is
    // left to httparse, which refuses it (found by the `response_head` fuzz target:
    // "HTTP/1.2 025").
    if !(line.starts_with(b"HTTP/1.")
        && matches!(line[7], b'0' | b'1')
        && line[8] == b' '
        && digits.iter().all(u8::is_ascii_digit)
        && digits[0] != b'0'
        && matches!(line[12], b' ' | b'\r'))
    {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Some((code, end))
}

/// A chunked body that breaks the chunked syntax: nothing after it can be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

/// Finds where a chunked body ends without decoding it (the bytes pass through as they are).
#[derive(Default)]
pub struct ChunkScan {
    state: ChunkState,
    size: u64,
    digits: u8,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
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
    #[inline]
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        use ChunkState as S;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                S::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = u64::from(char::from(b).to_digit(16).unwrap_or(0));
                        self.size = self.size.checked_mul(16).ok_or(BadChunk)? + d;
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(BadChunk);
                        }
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = S::Ext,
                    b'\r' if self.digits > 0 => self.state = S::SizeLf,
                    b'\n' if self.digits > 0 => self.end_size_line(),
                    _ => return Err(BadChunk),
                },
                S::Ext => match b {
                    b'\r' => self.state = S::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => {}
                },
                S::SizeLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.end_size_line();
                }
                S::Data => {
                    let avail = (bytes.len() - i) as u64;
                    let skip = avail.min(self.size);
                    self.size -= skip;
                    i += usize::try_from(skip).map_err(|_| BadChunk)?;
                    if self.size == 0 {
                        self.state = S::DataCr;
                    }
                    continue;
                }
                S::DataCr => match b {
                    b'\r' => self.state = S::DataLf,
                    b'\n' => self.next_chunk(),
                    _ => return Err(BadChunk),
                },
                S::DataLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
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
                        return Err(BadChunk);
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

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use proptest::prelude::*;

    use super::*;

    /// `chunks` in chunked encoding, with an extension on every other size line and a trailer
    /// field when asked.
    fn encode_chunked(chunks: &[Vec<u8>], trailer: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, c) in chunks.iter().filter(|c| !c.is_empty()).enumerate() {
            out.extend_from_slice(format!("{:x}", c.len()).as_bytes());
            if i % 2 == 1 {
                out.extend_from_slice(b";ext=\"v\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        if trailer {
            out.extend_from_slice(b"X-Sum: 1\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        /// Encoded, then scanned in two pieces split anywhere: the end is found exactly where the
        /// encoding ends, whatever follows it.
        #[test]
        fn a_chunked_body_ends_where_its_encoding_ends(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            trailer in any::<bool>(),
            split in any::<prop::sample::Index>(),
            after in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let body = encode_chunked(&chunks, trailer);
            let mut wire = body.clone();
            wire.extend_from_slice(&after);
            let at = split.index(wire.len() + 1);
            prop_assert_eq!(end_of(&[&wire[..at], &wire[at..]]), Some(body.len()));
        }

        /// Any bytes, in any two pieces: no panic, and an end (if any) inside what was given.
        #[test]
        fn any_bytes_never_end_a_body_past_their_length(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
            split in any::<prop::sample::Index>(),
        ) {
            let at = split.index(bytes.len() + 1);
            let mut scan = ChunkScan::default();
            match scan.feed(&bytes[..at]) {
                Ok(Some(n)) => prop_assert!(n <= at),
                Ok(None) => {
                    if let Ok(Some(n)) = scan.feed(&bytes[at..]) {
                        prop_assert!(n <= bytes.len() - at);
                    }
                }
                Err(BadChunk) => {}
            }
        }

        /// Whenever the quick response-head reader answers, httparse agrees with it.
        #[test]
        fn the_quick_head_reader_agrees_with_httparse(
            status in 100u16..600,
            fields in prop::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,20}"), 0..6),
            lf_only in any::<bool>(),
            tail in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let eol = if lf_only { "\n" } else { "\r\n" };
            let mut head = format!("HTTP/1.1 {status} X{eol}");
            for (n, v) in &fields {
                let _ = write!(head, "{n}: {v}{eol}");
            }
            head.push_str(eol);
            let mut wire = head.into_bytes();
            wire.extend_from_slice(&tail);
            if let Some((code, n)) = quick_head(&wire) {
                let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut storage);
                prop_assert_eq!(resp.parse(&wire), Ok(httparse::Status::Complete(n)));
                prop_assert_eq!(resp.code, Some(code));
            }
        }

        /// Any request head: the framing reader never panics, and a length it reports is the one
        /// number the head's `Content-Length` fields all carry.
        #[test]
        fn request_framing_reports_only_a_length_the_head_states(
            lengths in prop::collection::vec("[0-9]{1,4}|[0-9a-z ,+-]{0,6}", 0..3),
            te in prop::option::of("chunked|gzip|gzip, chunked|chunked, gzip"),
        ) {
            let mut raw = String::from("POST /a HTTP/1.1\r\nHost: x\r\n");
            for l in &lengths {
                let _ = write!(raw, "Content-Length: {l}\r\n");
            }
            if let Some(te) = &te {
                let _ = write!(raw, "Transfer-Encoding: {te}\r\n");
            }
            raw.push_str("\r\n");
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut storage);
            if req.parse(raw.as_bytes()).is_ok()
                && let Ok(RequestFraming::Length { body_len: Some(n), .. }) = request_framing(req.headers)
            {
                prop_assert!(te.is_none());
                prop_assert!(lengths.iter().all(|l| l.trim().parse::<u64>().ok() == Some(n)), "{lengths:?} -> {n}");
            }
        }
    }

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
            // Found by fuzzing: a version and a status httparse does not read.
            (b"HTTP/1.2 025\r\n\r\n\x15\x81\x00P", false),
            (b"HTTP/1.1 025\r\n\r\n", false),
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
