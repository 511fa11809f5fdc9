//! WebSocket on the hyper engine (the fast engine hands every `Upgrade` request over): the
//! request is admitted, limited and forwarded like any other (one request of the caller's plan);
//! when the upstream answers `101 Switching Protocols` both upgraded connections are relayed
//! byte for byte until either side closes, the API's idle timeout passes, or — unless the
//! gateway lets open sockets finish — the caller's key is revoked or expires (checked every
//! [`KEY_CHECK_EVERY`]). The request's finish phase runs when the relay ends, with the bytes
//! that crossed it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::apikey::KeyHash;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::RevokedSockets;
use crate::headers::connection_has_option;
use crate::pipeline::{Gateway, Trace};

/// How often an open socket's key is looked at (revocation closes it within this).
pub const KEY_CHECK_EVERY: Duration = Duration::from_millis(250);
const RELAY_CHUNK: usize = 16 * 1024;

/// Whether the request asks to become a WebSocket (RFC 6455 4.1: an HTTP/1.1 `GET` with
/// `Upgrade: websocket` and `Connection: upgrade`).
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && req
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .any(|v| connection_has_option([v.as_bytes()], "websocket"))
        && connection_has_option(
            req.headers()
                .get_all(header::CONNECTION)
                .iter()
                .map(HeaderValue::as_bytes),
            "upgrade",
        )
}

/// The hop-by-hop fields an upgrade needs, on the upstream request and on the caller's `101`
/// (the field cleanup drops the received ones with every other hop-by-hop field).
pub(crate) fn upgrade_fields(h: &mut HeaderMap) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// An upgrade under way: the caller's connection once hyper hands it over, and the upstream's.
pub(crate) struct Relay {
    pub client: OnUpgrade,
    pub upstream: UpstreamHalf,
}

/// What the exchange hands on when the upstream took an upgrade: its connection, and what the
/// relay needs to know of the request.
pub(crate) struct UpstreamHalf {
    pub upstream: OnUpgrade,
    /// The key the caller spends (by its hash, as the snapshot finds it).
    pub key: KeyHash,
    pub idle: Duration,
}

/// The socket's request, finished when the relay ends — or when its task is dropped (the worker
/// stopping), so that what it counted is never lost.
struct Finishing {
    gw: Arc<Gateway>,
    trace: Option<Trace>,
    /// Bytes relayed from the caller, and to it.
    bytes_in: u64,
    bytes_out: u64,
    open: bool,
}

impl Drop for Finishing {
    fn drop(&mut self) {
        if self.open {
            self.gw.metrics.websockets_open.dec();
        }
        if let Some(mut t) = self.trace.take() {
            t.bytes_in += self.bytes_in;
            t.bytes_out += self.bytes_out;
            self.gw.finish(t);
        }
    }
}

impl Gateway {
    /// Relays an upgraded connection both ways (see the module's notes), then runs the finish
    /// phase with what crossed it.
    pub(crate) async fn relay(self: Arc<Self>, relay: Relay, trace: Trace) {
        let Relay {
            client,
            upstream: half,
        } = relay;
        let mut done = Finishing {
            gw: self.clone(),
            trace: Some(trace),
            bytes_in: 0,
            bytes_out: 0,
            open: false,
        };
        let (client, upstream) = match tokio::try_join!(client, half.upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                return;
            }
        };
        self.metrics.websockets_open.inc();
        done.open = true;
        let (mut cr, mut cw) = tokio::io::split(TokioIo::new(client));
        let (mut ur, mut uw) = tokio::io::split(TokioIo::new(upstream));
        let (mut cbuf, mut ubuf) = (vec![0u8; RELAY_CHUNK], vec![0u8; RELAY_CHUNK]);
        let (mut client_open, mut upstream_open) = (true, true);
        let mut last = Instant::now();
        let mut check = tokio::time::interval(KEY_CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            if !client_open && !upstream_open {
                break "closed";
            }
            tokio::select! {
                n = cr.read(&mut cbuf), if client_open => match n {
                    Ok(n) if n > 0 => {
                        last = Instant::now();
                        done.bytes_in += n as u64;
                        if uw.write_all(&cbuf[..n]).await.is_err() {
                            break "upstream write failed";
                        }
                    }
                    _ => {
                        client_open = false;
                        let _ = uw.shutdown().await;
                    }
                },
                n = ur.read(&mut ubuf), if upstream_open => match n {
                    Ok(n) if n > 0 => {
                        last = Instant::now();
                        done.bytes_out += n as u64;
                        if cw.write_all(&ubuf[..n]).await.is_err() {
                            break "client write failed";
                        }
                    }
                    _ => {
                        upstream_open = false;
                        let _ = cw.shutdown().await;
                    }
                },
                _ = check.tick() => {
                    if last.elapsed() >= half.idle {
                        break "idle";
                    }
                    if self.settings.websocket_revoked == RevokedSockets::Close
                        && !self.key_still_admitted(&half.key)
                    {
                        break "key revoked";
                    }
                }
            }
        };
        tracing::debug!(why, "WebSocket relay ended");
        // Both connections close as the halves drop; then the request is finished.
        drop((cr, cw, ur, uw));
    }

    /// Whether the key with `hash` may still be used (not revoked, not expired, not deleted).
    pub(crate) fn key_still_admitted(&self, hash: &KeyHash) -> bool {
        let snap = self.snapshot.load();
        self.live_key(&snap, hash)
            .is_some_and(|k| self.check_key(&k).is_ok())
    }
}
