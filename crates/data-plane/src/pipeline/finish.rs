//! The finish phase: what a request counted for, once it was answered — its usage (when it
//! reached the limit phase), its analytics (status class, bytes, latency), the latency metric and
//! its request log record. Each engine keeps a [`Trace`] of the request from its head on, the
//! phases fill it in as they learn who called and how it went, and the engine hands it to
//! [`Gateway::finish`] when the answer's last byte is out (or the caller left).

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use domain::analytics::Hit;
use domain::limits::Decision;
use domain::request_log::{KeyPrefix, Record, flags};
use domain::usage::{Bucket, Counts};
use http::Response;
use http_body_util::Full;
use hyper::body::Body as _;

use super::Auth;
use crate::errors::GatewayError;
use crate::gateway::Gateway;
use crate::headers::{HeaderSource, request_id};

/// A request's life as the finish phase records it.
#[derive(Debug)]
pub(crate) struct Trace {
    pub(crate) started: Instant,
    /// When it arrived, by the gateway's clock (ms since the epoch).
    pub(crate) ts_ms: i64,
    /// `X-Request-ID`: the caller's, or one the gateway made.
    pub(crate) rid: String,
    pub(crate) client_ip: IpAddr,
    // Who: filled in by the admit phase as far as it got (0: not known).
    pub(crate) tenant_id: i64,
    pub(crate) api_id: i64,
    pub(crate) route_id: i64,
    pub(crate) key_id: i64,
    pub(crate) key_prefix: Option<KeyPrefix>,
    pub(crate) client_row_id: i64,
    pub(crate) client_id: Option<String>,
    pub(crate) method: Cow<'static, str>,
    /// The path as logged (with the query when the API keeps it); empty when nothing is logged.
    pub(crate) path: String,
    // How it went.
    pub(crate) bytes_in: u64,
    pub(crate) upstream_us: Option<u64>,
    pub(crate) target_id: i64,
    pub(crate) flags: i32,
    pub(crate) error: Option<&'static str>,
    pub(crate) status: u16,
    pub(crate) bytes_out: u64,
    /// What the limit phase counted (nothing when the request never got there).
    pub(crate) usage: Counts,
    /// A gRPC call (only the hyper engine serves HTTP/2, so only it sets this): the gateway's
    /// refusals are answered the gRPC way ([`crate::errors::grpc_refusal`]).
    pub(crate) grpc: bool,
}

/// A request method as logged: the common ones without an allocation.
fn method_name(m: &str) -> Cow<'static, str> {
    match m {
        "GET" => Cow::Borrowed("GET"),
        "POST" => Cow::Borrowed("POST"),
        "PUT" => Cow::Borrowed("PUT"),
        "PATCH" => Cow::Borrowed("PATCH"),
        "DELETE" => Cow::Borrowed("DELETE"),
        "HEAD" => Cow::Borrowed("HEAD"),
        "OPTIONS" => Cow::Borrowed("OPTIONS"),
        other => Cow::Owned(other.chars().take(32).collect()),
    }
}

/// Longest path kept in a record.
const MAX_LOGGED_PATH: usize = 2048;

impl Trace {
    /// The trace of a request whose head (its `headers`) was just read, from `client_ip`: its
    /// request id is the caller's `X-Request-ID` or a new one of this moment.
    pub(crate) fn start(
        gw: &Gateway,
        headers: &(impl HeaderSource + ?Sized),
        client_ip: IpAddr,
    ) -> Self {
        let ts_ms = gw.clock.now_ms();
        let (rid, given) = request_id(headers, ts_ms);
        Self {
            started: Instant::now(),
            ts_ms,
            rid,
            client_ip,
            tenant_id: 0,
            api_id: 0,
            route_id: 0,
            key_id: 0,
            key_prefix: None,
            client_row_id: 0,
            client_id: None,
            method: Cow::Borrowed(""),
            path: String::new(),
            bytes_in: 0,
            upstream_us: None,
            target_id: 0,
            flags: if given { flags::REQUEST_ID_GIVEN } else { 0 },
            error: None,
            status: 0,
            bytes_out: 0,
            usage: Counts::default(),
            grpc: false,
        }
    }

    /// The admit phase found the tenant (and, with `api`, the API) a request's path names: from
    /// here on it is the tenant's, and logged as such.
    pub(crate) fn tenant(
        &mut self,
        gw: &Gateway,
        tenant_id: i64,
        api: Option<(i64, bool)>,
        method: &str,
        path: &str,
        query: Option<&str>,
    ) {
        self.tenant_id = tenant_id;
        self.method = method_name(method);
        let (api_id, log_query) = api.unwrap_or((0, false));
        self.api_id = api_id;
        if gw.request_log.enabled() {
            let mut p = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
            p.push_str(path);
            if let (true, Some(q)) = (log_query, query) {
                p.push('?');
                p.push_str(q);
            }
            if p.len() > MAX_LOGGED_PATH {
                let mut cut = MAX_LOGGED_PATH;
                while !p.is_char_boundary(cut) {
                    cut -= 1;
                }
                p.truncate(cut);
            }
            self.path = p;
        }
    }

    /// Who the admit phase found calling.
    pub(crate) fn caller(&mut self, auth: &Auth, key: &str) {
        self.route_id = auth.route().map_or(0, |r| r.id);
        self.key_id = auth.caller.key_id;
        // A token's own first characters say nothing of the key: no prefix then.
        if key.starts_with(domain::apikey::KEY_PREFIX) {
            self.key_prefix = Some(domain::request_log::key_prefix(key));
        }
        if let Some((row, id)) = &auth.caller.client {
            self.client_row_id = *row;
            self.client_id = id.to_str().ok().map(str::to_owned);
        }
    }

    /// One of the gateway's own answers is going out: its status, size and error type (and,
    /// for a 503 because every target is out, the `circuit_open` flag).
    pub(crate) fn answered(&mut self, err: &GatewayError, resp: &Response<Full<Bytes>>) {
        self.status = resp.status().as_u16();
        self.bytes_out = resp.body().size_hint().exact().unwrap_or(0);
        self.error = Some(err.kind());
        match err {
            GatewayError::UpstreamUnavailable { .. } => self.flags |= flags::CIRCUIT_OPEN,
            GatewayError::UpstreamUnreachable
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamForbidden => {
                self.flags |= flags::UPSTREAM_ERROR;
            }
            GatewayError::RateLimited { .. } | GatewayError::TooCostly { .. } => {
                self.flags |= flags::RATE_LIMITED;
            }
            _ => {}
        }
    }

    /// The upstream answered with `status` (a 5xx of its own is its failure).
    pub(crate) fn upstream_answered(&mut self, status: u16) {
        self.status = status;
        if status >= 500 {
            self.flags |= flags::UPSTREAM_ERROR;
        }
    }

    /// The gateway answers it with `resp`, its refusal `err`: recorded, and turned into a gRPC
    /// refusal for a gRPC caller (recorded with the HTTP status it stands for).
    pub(crate) fn answer(
        &mut self,
        err: &GatewayError,
        resp: Response<Full<Bytes>>,
    ) -> Response<Full<Bytes>> {
        self.answered(err, &resp);
        if self.grpc {
            return crate::errors::grpc_refusal(err, resp);
        }
        resp
    }

    /// The limit phase counted it: admitted (`units` consumed) or refused.
    pub(crate) fn counted(&mut self, admitted: bool, units: i64) {
        self.usage = Counts {
            requests: 1,
            rejected: i64::from(!admitted),
            upstream_errors: 0,
            units: if admitted { units } else { 0 },
        };
    }
}

impl Gateway {
    /// The finish phase: the latency metric; then, for a request on a tenant's path, its usage
    /// and analytics (one entry of this thread's map) and its request log record.
    pub(crate) fn finish(&self, t: Trace) {
        let elapsed = t.started.elapsed();
        self.metrics.observe_latency(elapsed);
        if t.tenant_id == 0 {
            return;
        }
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let upstream_error = t.flags & flags::UPSTREAM_ERROR != 0;
        let mut usage = t.usage;
        if usage.requests > 0 && usage.rejected == 0 {
            usage.upstream_errors = i64::from(upstream_error);
        }
        let hit = Hit {
            status: t.status,
            rate_limited: t.flags & flags::RATE_LIMITED != 0,
            upstream_error,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            latency_us,
        };
        let bucket = Bucket {
            tenant_id: t.tenant_id,
            api_id: t.api_id,
            key_id: t.key_id,
            client_id: t.client_row_id,
            route_id: t.route_id,
            minute: t.ts_ms.div_euclid(60_000),
        };
        self.usage.record(bucket, usage, &hit);
        if self.request_log.enabled() {
            self.request_log.push(Record {
                ts_ms: t.ts_ms,
                tenant_id: t.tenant_id,
                request_id: t.rid,
                api_id: t.api_id,
                route_id: t.route_id,
                key_id: t.key_id,
                key_prefix: t.key_prefix,
                client_row_id: t.client_row_id,
                client_id: t.client_id,
                method: t.method,
                path: t.path,
                status: t.status,
                latency_us,
                upstream_latency_us: t.upstream_us,
                bytes_in: t.bytes_in,
                bytes_out: t.bytes_out,
                target_id: t.target_id,
                client_ip: t.client_ip,
                flags: t.flags,
                error_type: t.error,
            });
        }
    }

    /// The gateway's own answer to a request it refused or failed ([`Gateway::refuse`]), noted in
    /// its trace.
    pub(crate) fn refuse_traced(
        &self,
        err: &GatewayError,
        t: &mut Trace,
        decision: Option<&Decision>,
    ) -> Response<Full<Bytes>> {
        let resp = self.refuse(err, &t.rid, decision);
        t.answer(err, resp)
    }
}
