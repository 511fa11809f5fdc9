//! The request path on hyper (what the fast path in `fast.rs` hands over), top to bottom: parse ->
//! authenticate -> limit -> forward -> respond -> record. Authentication, the error answers and the
//! forwarded fields here serve both paths.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use domain::apikey::KeyHash;
use domain::clock::SharedClock;
use domain::limits::{Decision, Limiter, Subject};
use domain::plan::{Enforcement, PlanLimits};
use domain::sea_orm::DatabaseConnection;
use domain::snapshot::{ApiEntry, Snapshot};
use domain::upstream_policy::UpstreamPolicy;
use domain::usage::{Bucket, Counts};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use serde_json::json;

use crate::body::{BodyError, UpstreamBody, body_error};
use crate::config::ProxySettings;
use crate::errors::{GatewayError, HeadLimit, json_response};
use crate::headers::{
    HeaderSource, X_CLIENT_ID, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
    X_GATEWAY_CLIENT_ID, X_GATEWAY_KEY_ID, X_GATEWAY_TENANT, X_REAL_IP, X_REQUEST_ID,
    forwards_request_field, forwards_response_field, head_size, insert_rate_limit, request_id,
};
use crate::metrics::{Metrics, Outcome};
use crate::upstream::{UpstreamClient, UpstreamClients, refusal};
use crate::usage::UsageRecorder;

/// Key entries newer than the snapshot, by hash, with the config version they came with.
pub type KeyOverlay = foldhash::HashMap<KeyHash, (i64, domain::snapshot::KeyEntry)>;

/// What the gateway answers with: the upstream's body streamed through, or one of its own.
pub type Body = Either<Incoming, Full<Bytes>>;
/// Longest key value hashed; anything longer is refused without work.
const MAX_KEY_LEN: usize = 512;

pub struct Gateway {
    pub snapshot: ArcSwap<Snapshot>,
    /// Keys changed after the snapshot was loaded (applied from change events), with the config
    /// version that carried them; emptied of what a newer snapshot already has.
    pub key_overlay: ArcSwap<KeyOverlay>,
    pub limiter: Arc<Limiter>,
    pub usage: UsageRecorder,
    pub metrics: Metrics,
    pub db: DatabaseConnection,
    pub clock: SharedClock,
    pub settings: ProxySettings,
    /// Which upstream addresses may be connected to, for which tenants.
    pub policy: Arc<UpstreamPolicy>,
    /// Set once the first snapshot is loaded.
    pub loaded: AtomicBool,
    /// Where this data plane listens (registered in the database for the other planes' policy).
    pub bound: std::sync::Mutex<Option<SocketAddr>>,
}

/// A request that passed authentication: what limiting, forwarding and recording need.
pub(crate) struct Auth {
    pub(crate) tenant_id: i64,
    pub(crate) tenant_slug: HeaderValue,
    pub(crate) api: Arc<ApiEntry>,
    pub(crate) key_id: i64,
    pub(crate) client: Option<(i64, HeaderValue)>,
    pub(crate) subject: Subject,
    pub(crate) limits: PlanLimits,
    pub(crate) enforcement: Enforcement,
}

impl Auth {
    /// The usage bucket this request is counted in, for the minute of `now_ms`.
    pub(crate) fn bucket(&self, now_ms: i64) -> Bucket {
        Bucket {
            tenant_id: self.tenant_id,
            api_id: self.api.id,
            key_id: self.key_id,
            client_id: self.client.as_ref().map_or(0, |c| c.0),
            minute: now_ms.div_euclid(60_000),
        }
    }
}

impl Gateway {
    /// A gateway serving an empty snapshot until the first [`crate::reload::reload`].
    pub fn new(
        limiter: Arc<Limiter>,
        usage: UsageRecorder,
        db: DatabaseConnection,
        clock: SharedClock,
        settings: ProxySettings,
        policy: Arc<UpstreamPolicy>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            key_overlay: ArcSwap::from_pointee(KeyOverlay::default()),
            limiter,
            usage,
            metrics: Metrics::new(),
            db,
            clock,
            settings,
            policy,
            loaded: AtomicBool::new(false),
            bound: std::sync::Mutex::new(None),
        })
    }

    /// Entry point of every request; `clients` are the calling worker's upstream pools.
    pub async fn handle(
        self: Arc<Self>,
        clients: UpstreamClients,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let resp = match req.uri().path() {
            "/health" | "/health/live" => {
                json_response(StatusCode::OK, &json!({"status": "ok"})).map(Either::Right)
            }
            "/health/ready" => self.readiness().await.map(Either::Right),
            "/metrics" => self.metrics_page().map(Either::Right),
            _ => self.proxy(&clients, peer, req).await,
        };
        Ok(resp)
    }

    async fn proxy(
        &self,
        clients: &UpstreamClients,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let started = Instant::now();
        let rid = request_id(req.headers());
        let mut resp = self.proxy_phases(clients, peer, req, &rid).await;
        if let Ok(v) = HeaderValue::from_str(&rid) {
            resp.headers_mut().insert(&X_REQUEST_ID, v);
        }
        self.metrics.observe_latency(started.elapsed());
        resp
    }

    fn fail(&self, err: &GatewayError, rid: &str) -> Response<Body> {
        self.fail_response(err, rid).map(Either::Right)
    }

    /// The gateway's own answer to a failed request, counted.
    pub(crate) fn fail_response(&self, err: &GatewayError, rid: &str) -> Response<Full<Bytes>> {
        if err.status().is_server_error() {
            self.metrics.count(Outcome::Error);
        } else {
            self.metrics.count(Outcome::Denied);
        }
        err.to_response(rid)
    }

    async fn proxy_phases(
        &self,
        clients: &UpstreamClients,
        peer: SocketAddr,
        req: Request<Incoming>,
        rid: &str,
    ) -> Response<Body> {
        // Parse.
        let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if head_size(uri_len, req.headers()) > self.settings.max_header_bytes {
            return self.fail(
                &GatewayError::HeadersTooLarge {
                    limit: self.settings.max_header_bytes,
                    what: HeadLimit::Bytes,
                },
                rid,
            );
        }
        let hosts = req.headers().get_all(header::HOST).iter().count();
        if let Err(e) = admit_head(
            req.method().as_str(),
            hosts,
            req.version() == Version::HTTP_11,
        ) {
            return self.fail_closing(&e, rid);
        }
        let target = match parse_target(req.uri()) {
            Ok(t) => t,
            Err(e) => return self.fail(&e, rid),
        };

        // Authenticate.
        let auth = match self.authenticate(&target, req.headers()) {
            Ok((a, _)) => a,
            Err(e) => return self.fail(&e, rid),
        };
        let upstream_uri = match upstream_uri(&auth.api, &target) {
            Ok(u) => u,
            Err(e) => return self.fail(&e, rid),
        };

        // The body: too large or malformed is refused before it costs a token.
        let max_body = self.settings.max_body_bytes;
        let (parts, body) = req.into_parts();
        if content_length(&parts.headers).is_some_and(|len| len > max_body) {
            return self.fail_closing(&GatewayError::BodyTooLarge { limit: max_body }, rid);
        }
        let body = match UpstreamBody::read_ahead(body, max_body).await {
            Ok(b) => b,
            Err(e) => return self.fail_closing(&body_failure(&e, max_body), rid),
        };
        let bucket = auth.bucket(self.clock.now_ms());

        // Limit.
        let Ok((decision, _)) = self
            .limiter
            .check_with(auth.subject, &auth.limits, auth.enforcement)
            .await
        else {
            return self.fail(&GatewayError::LimiterUnavailable, rid);
        };
        if !decision.allowed {
            self.record_rejected(bucket);
            return self.rejected(&decision, rid);
        }

        // Forward.
        let client = clients.for_tenant(auth.api.trusted_upstreams);
        let result = self
            .forward(client, peer, parts, body, upstream_uri, &auth, rid)
            .await;

        // Respond and record.
        let upstream_failed = match &result {
            Ok(r) => r.status().is_server_error(),
            Err(e) => e.status().is_server_error(),
        };
        self.record_forwarded(bucket, result.is_ok(), upstream_failed);
        let mut resp = match result {
            Ok(r) => r.map(Either::Left),
            // The caller's body broke mid-way: what is left of it cannot be read as a request.
            Err(e @ (GatewayError::BadBody | GatewayError::BodyTooLarge { .. })) => {
                self.fail_closing(&e, rid)
            }
            Err(e) => self.fail(&e, rid),
        };
        insert_rate_limit(resp.headers_mut(), &decision);
        resp
    }

    /// [`Self::fail`], closing the connection after the answer (the rest of it cannot be trusted).
    fn fail_closing(&self, err: &GatewayError, rid: &str) -> Response<Body> {
        let mut resp = self.fail(err, rid);
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }

    /// Counts a request its limits refused (the 429 is counted by [`Self::rejected_response`]).
    pub(crate) fn record_rejected(&self, bucket: Bucket) {
        self.usage.record(
            bucket,
            Counts {
                requests: 1,
                rejected: 1,
                upstream_errors: 0,
            },
        );
    }

    /// Counts an admitted request: whether the upstream answered, and whether it failed (a 5xx,
    /// or no answer: unreachable, timed out).
    pub(crate) fn record_forwarded(&self, bucket: Bucket, answered: bool, upstream_failed: bool) {
        if upstream_failed {
            self.metrics.count(Outcome::UpstreamError);
        }
        if answered {
            self.metrics.count(Outcome::Proxied);
        }
        self.usage.record(
            bucket,
            Counts {
                requests: 1,
                rejected: 0,
                upstream_errors: i64::from(upstream_failed),
            },
        );
    }

    fn rejected(&self, decision: &Decision, rid: &str) -> Response<Body> {
        self.rejected_response(decision, rid).map(Either::Right)
    }

    /// The 429 for a refused request, counted, with its rate-limit fields.
    pub(crate) fn rejected_response(
        &self,
        decision: &Decision,
        rid: &str,
    ) -> Response<Full<Bytes>> {
        self.metrics.count(Outcome::Rejected);
        let tight = decision.tightest();
        let err = GatewayError::RateLimited {
            window: decision.hit.map_or("minute", domain::limits::Window::name),
            retry_after_secs: decision.retry_after_secs(),
            reset_secs: tight.map_or(0, |w| (w.reset_ms + 999) / 1000),
        };
        let mut resp = err.to_response(rid);
        insert_rate_limit(resp.headers_mut(), decision);
        resp
    }

    /// Who the request is, and the key it presented (borrowed from its fields, for the field
    /// cleanup to strip wherever else it appears).
    pub(crate) fn authenticate<'h, H: HeaderSource + ?Sized>(
        &self,
        t: &Target<'_>,
        headers: &'h H,
    ) -> Result<(Auth, &'h str), GatewayError> {
        let snap = self.snapshot.load();
        let tenant = snap
            .tenant(t.tenant)
            .filter(|t| t.is_active)
            .ok_or(GatewayError::UnknownApi)?;
        let api = tenant
            .api(t.api)
            .filter(|a| a.is_active)
            .ok_or(GatewayError::UnknownApi)?;
        if t.encoded_slash && !api.pass_encoded_slashes {
            return Err(GatewayError::BadRequest(
                "The path must not contain an encoded slash (%2F): this API does not pass them.",
            ));
        }
        let raw = presented_key(api, headers)?;
        let hash = KeyHash::of(raw);
        // Keys changed since the snapshot was loaded win over the snapshot's copy.
        let overlay = self.key_overlay.load();
        let key = overlay
            .get(&hash)
            .map(|(_, entry)| entry)
            .or_else(|| snap.key(&hash))
            .ok_or(GatewayError::InvalidKey)?;
        // Another tenant's key is indistinguishable from an unknown one.
        if key.tenant_id != tenant.id {
            return Err(GatewayError::InvalidKey);
        }
        if !key.is_active {
            return Err(GatewayError::KeyRevoked);
        }
        if key
            .expires_at_ms
            .is_some_and(|at| at <= self.clock.now_ms())
        {
            return Err(GatewayError::KeyExpired);
        }
        let (plan_id, subject, client) = match headers.header(X_CLIENT_ID.as_str()) {
            Some(v) => {
                let id = std::str::from_utf8(v).map_err(|_| GatewayError::UnknownClient)?;
                let value = HeaderValue::from_str(id).map_err(|_| GatewayError::UnknownClient)?;
                let c = tenant
                    .client(id)
                    .filter(|c| c.is_active)
                    .ok_or(GatewayError::UnknownClient)?;
                let subject = Subject::Client {
                    tenant_id: tenant.id,
                    client_row_id: c.id,
                };
                (c.plan_id, subject, Some((c.id, value)))
            }
            None => (
                key.plan_id,
                Subject::Key {
                    tenant_id: tenant.id,
                    key_id: key.id,
                },
                None,
            ),
        };
        let plan = snap
            .plan(plan_id)
            .filter(|p| p.is_active)
            .ok_or(GatewayError::PlanUnavailable)?;
        let auth = Auth {
            tenant_id: tenant.id,
            tenant_slug: HeaderValue::from_str(&tenant.slug)
                .map_err(|_| GatewayError::UnknownApi)?,
            api: api.clone(),
            key_id: key.id,
            client,
            subject,
            limits: plan.limits,
            enforcement: plan.enforcement,
        };
        Ok((auth, raw))
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        client: &UpstreamClient,
        peer: SocketAddr,
        mut parts: http::request::Parts,
        body: UpstreamBody,
        uri: Uri,
        auth: &Auth,
        rid: &str,
    ) -> Result<Response<Incoming>, GatewayError> {
        let max_body = self.settings.max_body_bytes;
        let received = std::mem::take(&mut parts.headers);
        let connection: Vec<&[u8]> = received
            .get_all(header::CONNECTION)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let key = presented_key(&auth.api, &received)
            .unwrap_or_default()
            .as_bytes();
        let h = &mut parts.headers;
        h.reserve(received.len() + 8);
        let mut original_host = None;
        let mut prior_xff = Vec::new();
        for (name, value) in &received {
            if name == header::HOST {
                original_host = Some(value.as_bytes());
            } else if name == X_FORWARDED_FOR {
                prior_xff.push(value.as_bytes());
            } else if forwards_request_field(
                name.as_str(),
                value.as_bytes(),
                connection.iter().copied(),
                &auth.api.key_header,
                key,
            ) {
                h.append(name, value.clone());
            }
        }
        // The body's framing, from what hyper read of it and what was read ahead: a length when
        // known, else chunked (hyper's client writes it).
        if let Some(n) = body
            .known_len()
            .filter(|n| *n > 0 || received.contains_key(header::CONTENT_LENGTH))
        {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        forwarded_fields(
            auth,
            &peer.ip().to_string(),
            &prior_xff,
            original_host,
            rid,
            |name, value| {
                if let Ok(v) = HeaderValue::from_bytes(value) {
                    h.insert(name, v);
                }
            },
        );
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, body);

        let timeout = auth.api.timeout;
        match tokio::time::timeout(timeout, client.request(upstream_req)).await {
            Err(_) => Err(GatewayError::UpstreamTimeout {
                timeout_ms: timeout.as_millis(),
            }),
            Ok(Err(e)) => {
                if let Some(b) = body_error(&e) {
                    return Err(body_failure(b, max_body));
                }
                if refusal(&e).is_some() {
                    return Err(GatewayError::UpstreamForbidden);
                }
                tracing::debug!(error = %e, api_id = auth.api.id, "upstream request failed");
                Err(GatewayError::UpstreamUnreachable)
            }
            Ok(Ok(mut resp)) => {
                let received = std::mem::take(resp.headers_mut());
                let connection: Vec<&[u8]> = received
                    .get_all(header::CONNECTION)
                    .iter()
                    .map(HeaderValue::as_bytes)
                    .collect();
                let h = resp.headers_mut();
                for (name, value) in &received {
                    // hyper framed the body by its `Content-Length`: kept, whatever
                    // `Connection` says (the client's framing follows from it).
                    if name == header::CONTENT_LENGTH
                        || forwards_response_field(name.as_str(), connection.iter().copied())
                    {
                        h.append(name, value.clone());
                    }
                }
                Ok(resp)
            }
        }
    }

    async fn readiness(&self) -> Response<Full<Bytes>> {
        let db_up = self.db.ping().await.is_ok();
        let loaded = self.loaded.load(Ordering::Relaxed);
        let redis = match (self.limiter.redis_configured(), self.limiter.redis_up()) {
            (false, _) => "not_configured",
            (true, true) => "up",
            (true, false) => "down",
        };
        let fail_closed_and_down = self.settings.redis_fail_closed && redis == "down";
        let ready = db_up && loaded && !fail_closed_and_down;
        let body = json!({
            "status": if ready { "ready" } else { "not_ready" },
            "database": if db_up { "up" } else { "down" },
            "snapshot": if loaded { "loaded" } else { "waiting_for_schema" },
            "snapshot_version": self.snapshot.load().version,
            "redis": redis,
            "limiter": match (self.limiter.redis_up(), self.limiter.settling()) {
                (false, _) => "local",
                (true, true) => "settling",
                (true, false) => "redis",
            },
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, &body)
    }

    fn metrics_page(&self) -> Response<Full<Bytes>> {
        self.metrics
            .redis_up
            .set(i64::from(self.limiter.redis_up()));
        self.metrics
            .limiter_fallbacks
            .set(i64::try_from(self.limiter.fallback_count()).unwrap_or(i64::MAX));
        self.metrics
            .data_planes
            .set(i64::try_from(self.limiter.nodes()).unwrap_or(i64::MAX));
        self.metrics
            .usage_flush_errors
            .set(i64::try_from(self.usage.flush_errors()).unwrap_or(i64::MAX));
        let mut page = self.metrics.render();
        if let Some(store) = self.limiter.redis_store() {
            redis_call_times(&mut page, store.call_times());
        }
        let mut resp = Response::new(Full::new(Bytes::from(page)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }
}

/// The key a request presents in its API's key field (after `Bearer ` when that field is
/// `Authorization`), trimmed.
pub(crate) fn presented_key<'h, H: HeaderSource + ?Sized>(
    api: &ApiEntry,
    headers: &'h H,
) -> Result<&'h str, GatewayError> {
    let missing = || GatewayError::MissingKey {
        header: api.key_header_name.to_string(),
    };
    let raw = headers.header(&api.key_header).ok_or_else(missing)?;
    let raw = std::str::from_utf8(raw)
        .map_err(|_| GatewayError::InvalidKey)?
        .trim();
    let raw = if api.key_header.as_ref() == "authorization" {
        raw.strip_prefix("Bearer ").unwrap_or(raw).trim()
    } else {
        raw
    };
    if raw.is_empty() {
        return Err(missing());
    }
    if raw.len() > MAX_KEY_LEN {
        return Err(GatewayError::InvalidKey);
    }
    Ok(raw)
}

/// What every request head must be, whichever engine read it: not `CONNECT` (the gateway makes
/// no tunnels: a 2xx to it would turn the connection into one), and exactly one `Host` on
/// HTTP/1.1, at most one before (RFC 9112 3.2: two could name two different hosts).
pub(crate) fn admit_head(method: &str, hosts: usize, http11: bool) -> Result<(), GatewayError> {
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(GatewayError::MethodNotAllowed {
            method: "CONNECT".to_owned(),
        });
    }
    if hosts > 1 {
        return Err(GatewayError::BadRequest(
            "The request has more than one Host field.",
        ));
    }
    if hosts == 0 && http11 {
        return Err(GatewayError::BadRequest(
            "An HTTP/1.1 request must have a Host field.",
        ));
    }
    Ok(())
}

/// `gateway_redis_call_duration_seconds`, the histogram of Redis script calls, in the text format.
fn redis_call_times(page: &mut String, times: &domain::limits::redis::CallTimes) {
    use std::fmt::Write;
    let (cumulative, total, sum_us) = times.snapshot();
    let name = "gateway_redis_call_duration_seconds";
    let _ = writeln!(
        page,
        "# HELP {name} Redis limit script calls, from sent to answered (late answers included)"
    );
    let _ = writeln!(page, "# TYPE {name} histogram");
    for (bound, n) in domain::limits::redis::CALL_BUCKETS_MS
        .iter()
        .zip(cumulative)
    {
        let le = f64::from(u32::try_from(*bound).unwrap_or(u32::MAX)) / 1000.0;
        let _ = writeln!(page, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(page, "{name}_bucket{{le=\"+Inf\"}} {total}");
    #[allow(clippy::cast_precision_loss)] // a sum of µs: far below 2^53
    let sum = sum_us as f64 / 1e6;
    let _ = writeln!(page, "{name}_sum {sum}");
    let _ = writeln!(page, "{name}_count {total}");
}

thread_local! {
    /// Where each request's `Forwarded` value is built (reused: no allocation per request).
    static FORWARDED_VALUE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The fields the gateway sets on a forwarded request, once the caller's copies of them, the key
/// and hop-by-hop fields are gone: `Host`, `X-Forwarded-*`, `X-Request-ID`, `X-Gateway-*`.
pub(crate) fn forwarded_fields(
    auth: &Auth,
    peer_ip: &str,
    prior_xff: &[&[u8]],
    original_host: Option<&[u8]>,
    rid: &str,
    mut emit: impl FnMut(&HeaderName, &[u8]),
) {
    emit(&header::HOST, auth.api.upstream_authority.as_bytes());
    // Every `X-Forwarded-For` line the caller sent, in order (one list, RFC 9110 5.3), then the peer.
    if prior_xff.iter().all(|p| p.is_empty()) {
        emit(&X_FORWARDED_FOR, peer_ip.as_bytes());
    } else {
        let mut v = Vec::with_capacity(64);
        for prior in prior_xff.iter().filter(|p| !p.is_empty()) {
            v.extend_from_slice(prior);
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(peer_ip.as_bytes());
        emit(&X_FORWARDED_FOR, &v);
    }
    emit(&X_FORWARDED_PROTO, b"http");
    if let Some(host) = original_host {
        emit(&X_FORWARDED_HOST, host);
    }
    // The caller's own `X-Real-IP` and `Forwarded` were dropped: these name this hop only.
    emit(&X_REAL_IP, peer_ip.as_bytes());
    FORWARDED_VALUE.with_borrow_mut(|fwd| {
        fwd.clear();
        fwd.extend_from_slice(b"for=");
        // (A byte loop: `contains` sets up a SIMD search that costs more on a string this short.)
        if peer_ip.bytes().any(|b| b == b':') {
            fwd.extend_from_slice(b"\"[");
            fwd.extend_from_slice(peer_ip.as_bytes());
            fwd.extend_from_slice(b"]\"");
        } else {
            fwd.extend_from_slice(peer_ip.as_bytes());
        }
        if let Some(host) = original_host {
            fwd.extend_from_slice(b";host=\"");
            if host.iter().any(|b| *b == b'"' || *b == b'\\') {
                for &b in host {
                    if b == b'"' || b == b'\\' {
                        fwd.push(b'\\');
                    }
                    fwd.push(b);
                }
            } else {
                fwd.extend_from_slice(host);
            }
            fwd.push(b'"');
        }
        fwd.extend_from_slice(b";proto=http");
        emit(&header::FORWARDED, fwd);
    });
    emit(&X_REQUEST_ID, rid.as_bytes());
    emit(&X_GATEWAY_TENANT, auth.tenant_slug.as_bytes());
    emit(
        &X_GATEWAY_KEY_ID,
        itoa::Buffer::new().format(auth.key_id).as_bytes(),
    );
    if let Some((_, client_id)) = &auth.client {
        emit(&X_GATEWAY_CLIENT_ID, client_id.as_bytes());
    }
}

/// `/{tenant}/{api}{rest}?{query}` split out of a request URI.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    pub tenant: &'a str,
    pub api: &'a str,
    /// Empty, or starting with `/`.
    pub rest: &'a str,
    pub query: Option<&'a str>,
    /// `rest` holds a percent-encoded slash (refused unless the API passes them).
    pub encoded_slash: bool,
}

/// The parse phase: which tenant and API a request is for, and the rest of its path.
pub fn parse_target(uri: &Uri) -> Result<Target<'_>, GatewayError> {
    parse_target_parts(uri.path(), uri.query())
}

/// [`parse_target`] of a path and query already split apart.
pub fn parse_target_parts<'a>(
    path: &'a str,
    query: Option<&'a str>,
) -> Result<Target<'a>, GatewayError> {
    let path = path.strip_prefix('/').ok_or(GatewayError::NoRoute)?;
    let (tenant, after) = split_at_byte(path, b'/').ok_or(GatewayError::NoRoute)?;
    let (api, rest) = byte_at(after, b'/').map_or((after, ""), |i| after.split_at(i));
    if tenant.is_empty() || api.is_empty() {
        return Err(GatewayError::NoRoute);
    }
    let encoded_slash = check_path(rest)?;
    Ok(Target {
        tenant,
        api,
        rest,
        query,
        encoded_slash,
    })
}

/// Refuses what an upstream could read as a way out of the API's path prefix once it decodes or
/// normalises the path: dot segments (`..`, `%2e%2e`, `..;x` as Tomcat reads it), backslashes,
/// NUL, and double-encoded dots, slashes, backslashes and NULs (`%252e`). Says whether the path
/// holds an encoded slash, which only an API that passes them accepts.
fn check_path(rest: &str) -> Result<bool, GatewayError> {
    // One pass: segments end at `/` and, as an upstream that decodes `%2F` would see them, at
    // `%2F` too.
    let b = rest.as_bytes();
    let hex = |at: usize| {
        b.get(at..at + 2)
            .map(|h| [h[0].to_ascii_lowercase(), h[1].to_ascii_lowercase()])
    };
    let mut encoded_slash = false;
    let (mut seg, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'/' => {
                refuse_dot_segment(&b[seg..i])?;
                i += 1;
                seg = i;
            }
            b'\\' => {
                return Err(GatewayError::BadRequest(
                    "The path must not contain backslashes.",
                ));
            }
            b'%' => match hex(i + 1).as_ref() {
                Some(b"2f") => {
                    encoded_slash = true;
                    refuse_dot_segment(&b[seg..i])?;
                    i += 3;
                    seg = i;
                }
                Some(b"5c") => {
                    return Err(GatewayError::BadRequest(
                        "The path must not contain backslashes, encoded or not.",
                    ));
                }
                Some(b"00") => {
                    return Err(GatewayError::BadRequest(
                        "The path must not contain an encoded NUL (%00).",
                    ));
                }
                Some(b"25")
                    if matches!(hex(i + 3).as_ref(), Some(b"2e" | b"2f" | b"5c" | b"00")) =>
                {
                    return Err(GatewayError::BadRequest(
                        "The path must not contain double-encoded dots, slashes or NULs.",
                    ));
                }
                _ => i += 1,
            },
            _ => i += 1,
        }
    }
    refuse_dot_segment(&b[seg..])?;
    Ok(encoded_slash)
}

fn refuse_dot_segment(seg: &[u8]) -> Result<(), GatewayError> {
    // Only a segment starting with '.' or '%' can be one (the common case costs a byte test).
    if matches!(seg.first(), Some(b'.' | b'%')) && is_dot_segment(seg) {
        return Err(GatewayError::BadRequest(
            "The path must not contain '.' or '..' segments.",
        ));
    }
    Ok(())
}

/// Where the ASCII byte `b` first occurs in `s` (a byte search: `str::find` with a `char` pattern
/// costs several times more on paths this short).
pub(crate) fn byte_at(s: &str, b: u8) -> Option<usize> {
    s.bytes().position(|c| c == b)
}

/// `s` split around the first ASCII byte `b`, as `str::split_once` with a `char` would.
#[inline]
pub(crate) fn split_at_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    // An ASCII byte is always a whole character, so both sides stay valid UTF-8.
    byte_at(s, b).map(|i| (&s[..i], &s[i + 1..]))
}

fn is_dot_segment(b: &[u8]) -> bool {
    // ".", "..", and their percent-encoded spellings (%2e, any case), without allocating; what
    // follows a `;` (or `%3b`) is a path parameter some servers strip before they normalise.
    let end = b
        .iter()
        .enumerate()
        .position(|(i, c)| {
            *c == b';'
                || (*c == b'%'
                    && b.get(i + 1..i + 3)
                        .is_some_and(|h| h.eq_ignore_ascii_case(b"3b")))
        })
        .unwrap_or(b.len());
    let b = &b[..end];
    let (mut dots, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'.' {
            i += 1;
        } else if b.len() - i >= 3 && b[i] == b'%' && b[i + 1] == b'2' && (b[i + 2] | 0x20) == b'e'
        {
            i += 3;
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

fn upstream_uri(api: &ApiEntry, t: &Target<'_>) -> Result<Uri, GatewayError> {
    let mut s = String::with_capacity(api.upstream_base.len() + t.rest.len() + 64);
    s.push_str(&api.upstream_base);
    s.push_str(t.rest);
    match (api.upstream.query(), t.query) {
        (Some(a), Some(b)) => {
            s.push('?');
            s.push_str(a);
            s.push('&');
            s.push_str(b);
        }
        (Some(q), None) | (None, Some(q)) => {
            s.push('?');
            s.push_str(q);
        }
        (None, None) => {}
    }
    s.parse()
        .map_err(|_| GatewayError::BadRequest("The path is not valid."))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(uri: &str) -> Result<Target<'_>, GatewayError> {
        // Leak-free: the Uri lives in a Box the test keeps.
        let uri: &'static Uri = Box::leak(Box::new(uri.parse::<Uri>().unwrap()));
        parse_target(uri)
    }

    #[test]
    fn targets_are_split() {
        assert_eq!(
            t("/acme/weather/v1/today?city=a&city=b").unwrap(),
            Target {
                tenant: "acme",
                api: "weather",
                rest: "/v1/today",
                query: Some("city=a&city=b"),
                encoded_slash: false,
            }
        );
        assert_eq!(t("/acme/weather").unwrap().rest, "");
        assert_eq!(t("/acme/weather/").unwrap().rest, "/");
        assert_eq!(t("/acme"), Err(GatewayError::NoRoute));
        assert_eq!(t("/acme/"), Err(GatewayError::NoRoute));
        assert_eq!(t("/"), Err(GatewayError::NoRoute));
        assert!(matches!(
            t("/acme/weather/../admin"),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(matches!(
            t("/acme/weather/%2E%2e/admin"),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(t("/acme/weather/a..b").is_ok());
        for bad in [
            "/acme/weather/..%2f..%2fadmin",
            "/acme/weather/%2e%2e%2fadmin",
            "/acme/weather/..%5cadmin",
            "/acme/weather/..\\admin",
            "/acme/weather/..;/admin",
            "/acme/weather/.;x/admin",
            "/acme/weather/%2e%2E%3bjsessionid=1/admin",
            "/acme/weather/a%00.json",
            "/acme/weather/%252e%252e/admin",
            "/acme/weather/a%252fb",
        ] {
            let r = t(bad);
            let encoded_slash_only = r.as_ref().is_ok_and(|t| t.encoded_slash);
            assert!(
                matches!(r, Err(GatewayError::BadRequest(_))) || encoded_slash_only,
                "{bad}"
            );
        }
        assert!(t("/acme/weather/a%2fb").unwrap().encoded_slash);
        assert!(matches!(
            t("/acme/weather/..%2f..%2fadmin"),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(!t("/acme/weather/a;b=c/%41%20").unwrap().encoded_slash);
    }
}
