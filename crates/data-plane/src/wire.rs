//! The HTTP/1.1 wire codec of the fast engine, as pure functions over bytes: a request head's
//! framing ([`request_framing`]), a response head's end and status ([`quick_head`]), where a chunked
//! body ends ([`ChunkScan`]), and the writing of head fields ([`push_field`], [`encode_head`]).

use http::StatusCode;

use crate::errors::GatewayError;
use crate::headers::connection_has_option;

/// Most header fields in a request head (431 above), and in a response head.
pub const MAX_HEADERS: usize = 128;

/// A `Content-Length` value: decimal digits only (no sign, no spaces inside, no list).
pub(crate) fn content_length_value(v: &[u8]) -> Option<u64> {
    // 19 digits at most: never more than u64 holds.
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

pub(crate) const BAD_LENGTH: &str =
    "Content-Length must be one decimal number (repeated only with the same value).";

/// How a request's body is framed, as the fast path reads its head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// Framed by a `Content-Length` (or none: no body).
    Length {
        body_len: Option<u64>,
        /// The request asks to close the connection after its answer.
        close: bool,
        /// How many `Host` fields the head has (counted in the same pass, for the admit phase).
        hosts: usize,
    },
    /// `Transfer-Encoding` or `Expect`: hyper's to serve.
    HandOff,
}

/// How the body after this head is framed, or why nothing after it can be read: framing that is
/// no framing (a `Content-Length` that is not one number, two that differ, a `Transfer-Encoding`
/// that does not end in chunked).
pub(crate) fn request_framing(
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
    if te && !chunked_last {
        return Err(GatewayError::BadRequest(
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

pub(crate) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn encode_head(
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
pub(crate) fn quick_head(buf: &[u8]) -> Option<(u16, usize)> {
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
pub(crate) struct ChunkScan {
    state: ChunkState,
    size: u64,
    digits: u8,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkState {
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
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
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
