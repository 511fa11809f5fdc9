//! The body of a request the hyper engine forwards: what was read ahead of the upstream request,
//! then the rest of the caller's body, counted against the size limit. When it fails it says
//! whose failure it was, so the caller gets a 400 or 413 rather than a 502, and the upstream
//! connection it was being written to is closed by hyper's client, never pooled.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// How much of a body without a length (chunked) is read before the upstream is contacted: a
/// body that ends within it is checked whole — malformed or too large is refused before anything
/// is sent — and forwarded with a `Content-Length`.
pub const READ_AHEAD: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body exceeds {0} bytes")]
    TooLarge(u64),
    #[error("the request body is malformed or ended early: {0}")]
    Client(hyper::Error),
}

pub struct UpstreamBody {
    ahead: VecDeque<Frame<Bytes>>,
    rest: Option<Incoming>,
    /// The body's whole length when known: a `Content-Length`, or all of it read ahead.
    len: Option<u64>,
    limit: u64,
    seen: u64,
}

impl UpstreamBody {
    /// Reads up to `ahead` bytes ([`READ_AHEAD`], or 0 for a stream the upstream answers as it
    /// goes) ahead of the upstream request (a body with a length is left to stream: its size was
    /// checked against `limit` already).
    pub async fn read_ahead(
        mut body: Incoming,
        limit: u64,
        read_ahead: u64,
    ) -> Result<Self, BodyError> {
        if let Some(len) = body.size_hint().exact() {
            return Ok(Self {
                ahead: VecDeque::new(),
                rest: Some(body),
                len: Some(len),
                limit,
                seen: 0,
            });
        }
        let mut ahead = VecDeque::new();
        let mut seen = 0u64;
        let mut trailers = false;
        let ended = loop {
            if seen >= read_ahead {
                break false;
            }
            match body.frame().await {
                None => break true,
                Some(Err(e)) => return Err(BodyError::Client(e)),
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        seen += d.len() as u64;
                        if seen > limit {
                            return Err(BodyError::TooLarge(limit));
                        }
                    } else {
                        trailers = true;
                    }
                    ahead.push_back(frame);
                }
            }
        };
        Ok(Self {
            ahead,
            rest: (!ended).then_some(body),
            // With trailers the body stays chunked: they go on after it.
            len: (ended && !trailers).then_some(seen),
            limit,
            seen,
        })
    }

    /// A second copy of the body for another try, when all of it is at hand (read ahead, or
    /// empty); `None` when part of it is still to be streamed from the caller.
    pub fn replay(&self) -> Option<Self> {
        if !self.rest.as_ref().is_none_or(Body::is_end_stream) {
            return None;
        }
        let ahead = self
            .ahead
            .iter()
            .map(|f| match (f.data_ref(), f.trailers_ref()) {
                (Some(d), _) => Some(Frame::data(d.clone())),
                (None, Some(t)) => Some(Frame::trailers(t.clone())),
                (None, None) => None,
            })
            .collect::<Option<VecDeque<_>>>()?;
        Some(Self {
            ahead,
            rest: None,
            len: self.len,
            limit: self.limit,
            seen: self.seen,
        })
    }

    /// The body's length when the gateway knows it: the upstream request's `Content-Length`.
    pub fn known_len(&self) -> Option<u64> {
        self.len
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(frame) = self.ahead.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(rest).poll_frame(cx)) {
            None => {
                self.rest = None;
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    self.seen += d.len() as u64;
                    if self.seen > self.limit {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(self.limit))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// The body failure behind a client error, if the request failed because of its own body.
pub fn body_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e BodyError> {
    let mut cur: Option<&'e (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<BodyError>() {
            return Some(b);
        }
        cur = err.source();
    }
    None
}
