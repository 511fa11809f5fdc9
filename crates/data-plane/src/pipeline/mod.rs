//! The request's life as phases, in the order every request goes through them, whichever engine
//! (`engine::fast`, `engine::hyper`) moves its bytes. A new decision about a request goes into one
//! of these, once:
//!
//! 1. **admit** ([`Gateway::admit`], over a [`RequestHead`] either engine read) — the head's
//!    size, the head as a whole ([`admit_head`]: method, `Host`), the target
//!    ([`target::parse_target_parts`]: tenant, API, the rest of the path and its checks), the
//!    tenant and API ([`api_for`]), the API's route for the method and path ([`route_for`]: 404
//!    or 405 when it has routes and none takes the request), who is calling ([`Gateway::authenticate`]: key, client,
//!    plan), the body's declared size, and the **pick** of a target ([`Gateway::pick`]: smooth
//!    weighted round robin over the targets that are up, `crate::upstream::balance`; none up is
//!    a 503) — all before anything is spent;
//! 2. **limit** — the plan's windows ([`Gateway::limit`]): admitted with a [`Decision`], or the
//!    429 (counted as usage);
//! 3. **exchange** — the engine sends the request to the picked target; after a failed try,
//!    [`Gateway::retry`] picks another when [`retryable`] says it may (the failed target's circuit
//!    is told by [`Gateway::report`], as every try's outcome is);
//! 4. **upstream request** — what the upstream receives: the path and query
//!    ([`upstream_target`]: the target's path, the rest of the caller's, both queries), `Host`
//!    ([`upstream_host`]), the
//!    caller's fields that pass [`forwards_request_field`] and the gateway's own
//!    ([`forwarded_fields`]). Pure work, so the fast engine prepares it before the limit call;
//!    nothing is sent before the request is admitted;
//! 5. **upstream response fields** — what the caller receives: the upstream's fields that pass
//!    [`forwards_response_field`], then the gateway's ([`answer_fields`]: request id, rate-limit
//!    fields);
//! 6. **finish** — what the request counted for ([`Gateway::finish`], over the [`Trace`] the
//!    phases filled in; [`Gateway::refuse_traced`] for the gateway's own answers): usage,
//!    analytics, the latency metric, the request log record.

pub mod finish;
pub mod target;
pub mod token;

use std::sync::Arc;

use bytes::Bytes;
use domain::apikey::KeyHash;
use domain::calendar::Calendar;
use domain::limits::{Decision, LinkedLimits, RouteOwner, Subject};
use domain::plan::{Enforcement, PlanLimits};
use domain::route::{Route, RouteMatch};
use domain::snapshot::{ApiEntry, KeyEntry, Snapshot, TargetEntry, TenantEntry};
use http::Response;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::Full;

pub(crate) use finish::Trace;
pub use target::{Target, parse_target, parse_target_parts};

use crate::errors::{GatewayError, HeadLimit};
pub use crate::gateway::Gateway;
use crate::headers::{
    HeaderSource, X_CLIENT_ID, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
    X_GATEWAY_CLIENT_ID, X_GATEWAY_JWT, X_GATEWAY_KEY_ID, X_GATEWAY_TENANT, X_REAL_IP,
    X_REQUEST_ID, insert_rate_limit, rate_limit_fields,
};
pub use crate::headers::{forwards_request_field, forwards_response_field};
use crate::metrics::Outcome;
use crate::upstream::balance::{ApiUpstream, Now, Picked, Tried};

/// Longest key value hashed; anything longer is refused without work.
const MAX_KEY_LEN: usize = 512;

/// Who is calling, once authenticated: the key (and client), its tenant, and the plan whose
/// windows it spends.
pub(crate) struct Caller {
    pub(crate) tenant_id: i64,
    pub(crate) tenant_slug: HeaderValue,
    pub(crate) key_id: i64,
    pub(crate) plan_id: i64,
    pub(crate) client: Option<(i64, HeaderValue)>,
    pub(crate) subject: Subject,
    pub(crate) limits: PlanLimits,
    pub(crate) enforcement: Enforcement,
    /// The tenant's ceiling, shared by all of its callers (a platform admin's).
    pub(crate) ceiling: Option<PlanLimits>,
    /// Where the tenant's day and month windows begin and end.
    pub(crate) calendar: Calendar,
}

impl Caller {
    /// Whose counters a route's own window spends: this key's or this client's on the route.
    pub(crate) fn route_subject(&self, route_id: i64) -> Subject {
        Subject::Route {
            tenant_id: self.tenant_id,
            route_id,
            owner: match &self.client {
                Some((row_id, _)) => RouteOwner::client(*row_id),
                None => RouteOwner::key(self.key_id),
            },
        }
    }
}

/// A request that passed authentication: what limiting, forwarding and recording need.
pub(crate) struct Auth {
    pub(crate) caller: Caller,
    pub(crate) api: Arc<ApiEntry>,
    /// The API's route it takes (index into `api.routes`), when the API has routes.
    pub(crate) route: Option<u32>,
    /// The identity token for the upstream (`X-Gateway-JWT`), when the API asks for one.
    pub(crate) identity: Option<HeaderValue>,
}

impl Auth {
    /// The route the request takes, when its API has routes.
    pub(crate) fn route(&self) -> Option<&Route> {
        self.route.and_then(|i| self.api.routes.get(i))
    }

    /// How long the upstream may take: the route's timeout, else the API's.
    pub(crate) fn timeout(&self) -> std::time::Duration {
        self.route()
            .and_then(|r| r.timeout)
            .unwrap_or(self.api.timeout)
    }

    /// Tries after a failed one: the route's retries, else the API's.
    pub(crate) fn retries(&self) -> u32 {
        self.route()
            .and_then(|r| r.retries)
            .unwrap_or_else(|| self.api.resilience.retries(self.api.targets.len()))
    }

    /// The rest of the caller's path as forwarded: after the route's literal prefix when its
    /// route strips it.
    pub(crate) fn forwarded_rest<'t>(&self, rest: &'t str) -> &'t str {
        self.route().map_or(rest, |r| r.forwarded_rest(rest))
    }
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

/// A request head as an engine read it — httparse's request on the fast engine, hyper's request
/// on the other — so that each phase is written once for both.
pub(crate) trait RequestHead: HeaderSource {
    fn method(&self) -> &str;
    /// The target's path, as received (origin form).
    fn path(&self) -> &str;
    /// The target's query, without its `?`.
    fn query(&self) -> Option<&str>;
    /// Bytes of the head as received: request line and fields.
    fn head_len(&self) -> usize;
    /// How many `Host` fields it has.
    fn hosts(&self) -> usize;
    fn is_http11(&self) -> bool;
    /// The body's declared length, when it has one.
    fn content_length(&self) -> Option<u64>;
}

/// The caller's end of a connection: its address, and whether it spoke TLS to the gateway
/// (`X-Forwarded-Proto: https` upstream).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    pub https: bool,
}

/// A request the admit phase let through: where it goes and who sent it.
pub(crate) struct Admitted<'h> {
    pub target: Target<'h>,
    pub auth: Auth,
    /// The key as presented (for the field cleanup to strip wherever else it appears).
    pub key: &'h str,
    /// The target it goes to first.
    pub picked: Picked,
}

/// What the admit phase makes of a request.
#[allow(clippy::large_enum_variant)] // moved once per request, never stored: no box to allocate
pub(crate) enum Admission<'h> {
    Admitted(Admitted<'h>),
    /// For the hyper engine to serve from the start (an `https` upstream, when the engine that
    /// asked speaks no TLS): nothing about it was decided yet.
    HandOff,
}

/// A request the admit phase refused: why, and whether the connection must close after the
/// answer (a head that cannot be trusted, a body too large to be read past).
pub(crate) struct Refused {
    pub err: GatewayError,
    pub close: bool,
}

impl Refused {
    fn open(err: GatewayError) -> Self {
        Self { err, close: false }
    }

    fn closing(err: GatewayError) -> Self {
        Self { err, close: true }
    }
}

impl Gateway {
    /// The admit phase, in order: the head's size, the head as a whole ([`admit_head`]), the
    /// target, the tenant and API, who is calling, and the body's declared size — all before the
    /// request costs anything. `speaks_tls`: whether the calling engine can reach an `https`
    /// upstream (else the request is handed off before its key is looked at). What it learns of
    /// the request goes into its `trace`.
    #[inline]
    pub(crate) fn admit<'h, H: RequestHead + ?Sized>(
        &self,
        head: &'h H,
        speaks_tls: bool,
        trace: &mut Trace,
    ) -> Result<Admission<'h>, Refused> {
        admit_head_size(self, head.head_len()).map_err(Refused::open)?;
        admit_head(head.method(), head.hosts(), head.is_http11()).map_err(Refused::closing)?;
        let target = parse_target_parts(head.path(), head.query()).map_err(Refused::open)?;
        let snap = self.snapshot.load();
        let tenant = snap
            .tenant(target.tenant)
            .filter(|t| t.is_active)
            .ok_or(Refused::open(GatewayError::UnknownApi))?;
        let api = tenant.api(target.api).filter(|a| a.is_active);
        if api.is_some_and(|a| a.upstream_tls && !speaks_tls) {
            return Ok(Admission::HandOff);
        }
        trace.tenant(
            self,
            tenant.id,
            api.map(|a| (a.id, a.log_query)),
            head.method(),
            head.path(),
            head.query(),
        );
        let api = api.ok_or(Refused::open(GatewayError::UnknownApi))?;
        let route = route_for(api, head.method(), target.rest).map_err(Refused::open)?;
        trace.route_id = route.and_then(|i| api.routes.get(i)).map_or(0, |r| r.id);
        let (mut auth, key) = self
            .authenticate(&snap, tenant, api, &target, head, trace)
            .map_err(Refused::open)?;
        auth.route = route;
        trace.caller(&auth, key);
        auth.identity = self
            .identity_token(&auth, &trace.rid)
            .map_err(Refused::open)?;
        if let Some(len) = head.content_length() {
            trace.bytes_in = len;
            admit_body_len(self, len).map_err(Refused::closing)?;
        }
        let upstream = self.upstreams.of(&auth.api);
        let picked = self
            .pick(&upstream, Tried::default())
            .map_err(Refused::open)?;
        Ok(Admission::Admitted(Admitted {
            target,
            auth,
            key,
            picked,
        }))
    }
}

/// The admit phase's route match: which of the API's routes takes `method` to `path` (`None`
/// when the API has none: every path and method goes through). Before the key is looked at, so
/// a path no route takes costs nothing.
#[inline]
fn route_for(api: &ApiEntry, method: &str, path: &str) -> Result<Option<u32>, GatewayError> {
    if api.routes.is_empty() {
        return Ok(None);
    }
    match api.routes.find(method, path) {
        RouteMatch::Found(i, _) => Ok(Some(i)),
        RouteMatch::NoPath => Err(GatewayError::RouteNotFound),
        RouteMatch::WrongMethod(allow) => Err(GatewayError::MethodNotRouted {
            method: method.to_owned(),
            allow,
        }),
    }
}

/// The admit phase's size check of a head of `size` bytes.
fn admit_head_size(gw: &Gateway, size: usize) -> Result<(), GatewayError> {
    let limit = gw.settings.max_header_bytes;
    if size > limit {
        return Err(GatewayError::HeadersTooLarge {
            limit,
            what: HeadLimit::Bytes,
        });
    }
    Ok(())
}

/// The admit phase's check of a declared body length, before the body costs a token.
fn admit_body_len(gw: &Gateway, len: u64) -> Result<(), GatewayError> {
    let limit = gw.settings.max_body_bytes;
    if len > limit {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    Ok(())
}

impl Gateway {
    /// The admit phase's authentication, once the tenant and API are known ([`api_for`]): who
    /// the request is (key, client, plan), and the key it presented (borrowed from its fields,
    /// for the field cleanup to strip wherever else it appears).
    pub(crate) fn authenticate<'h, H: HeaderSource + ?Sized>(
        &self,
        snap: &Snapshot,
        tenant: &TenantEntry,
        api: &Arc<ApiEntry>,
        t: &Target<'_>,
        headers: &'h H,
        trace: &mut Trace,
    ) -> Result<(Auth, &'h str), GatewayError> {
        if t.encoded_slash && !api.pass_encoded_slashes {
            return Err(GatewayError::BadRequest(
                "The path must not contain an encoded slash (%2F): this API does not pass them.",
            ));
        }
        let token = if api.auth.takes_token() {
            token::bearer_token(headers)
        } else {
            None
        };
        let header_client = || {
            headers
                .header(X_CLIENT_ID.as_str())
                .map(|v| std::str::from_utf8(v).map_err(|_| GatewayError::UnknownClient))
                .transpose()
        };
        let (caller, presented) = if let Some(token) = token {
            let (key, client) = self.verify_token(snap, tenant, token)?;
            trace.key_id = key.id;
            let client = match &client {
                Some(c) => Some(&**c),
                None => header_client()?,
            };
            (caller_of(snap, tenant, &key, client)?, token)
        } else if api.auth.takes_key() {
            let raw = presented_key(api, headers)?;
            let key = self
                .live_key(snap, &KeyHash::of(raw))
                // Another tenant's key is indistinguishable from an unknown one.
                .filter(|k| k.tenant_id == tenant.id)
                .ok_or(GatewayError::InvalidKey)?;
            // From here on the key is the tenant's: its refusals name it.
            trace.key_id = key.id;
            trace.key_prefix = Some(domain::request_log::key_prefix(raw));
            self.check_key(&key)?;
            (caller_of(snap, tenant, &key, header_client()?)?, raw)
        } else {
            return Err(GatewayError::TokenRequired);
        };
        let auth = Auth {
            caller,
            api: api.clone(),
            route: None,
            identity: None,
        };
        Ok((auth, presented))
    }

    /// The key with hash `hash` as this data plane knows it now: a change applied since the
    /// snapshot wins over the snapshot's copy.
    pub(crate) fn live_key(&self, snap: &Snapshot, hash: &KeyHash) -> Option<KeyEntry> {
        let overlay = self.key_overlay.load();
        overlay
            .get(hash)
            .map(|(_, entry)| *entry)
            .or_else(|| snap.key(hash).copied())
    }

    /// A key that may be used now: not revoked, not expired.
    pub(crate) fn check_key(&self, key: &KeyEntry) -> Result<(), GatewayError> {
        if !key.is_active {
            return Err(GatewayError::KeyRevoked);
        }
        if key
            .expires_at_ms
            .is_some_and(|at| at <= self.clock.now_ms())
        {
            return Err(GatewayError::KeyExpired);
        }
        Ok(())
    }
}

/// Who calls with `key` (for `client` when it names one of the tenant's clients): the plan
/// whose windows it spends.
pub(crate) fn caller_of(
    snap: &Snapshot,
    tenant: &TenantEntry,
    key: &KeyEntry,
    client: Option<&str>,
) -> Result<Caller, GatewayError> {
    let (plan_id, subject, client) = match client {
        Some(id) => {
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
    Ok(Caller {
        tenant_id: tenant.id,
        tenant_slug: HeaderValue::from_str(&tenant.slug).map_err(|_| GatewayError::UnknownApi)?,
        key_id: key.id,
        plan_id,
        client,
        subject,
        limits: plan.limits,
        enforcement: plan.enforcement,
        ceiling: tenant.ceiling,
        calendar: tenant.calendar,
    })
}

impl Gateway {
    /// The pick-upstream phase: the target a request goes to, other than those it `tried`
    /// (smooth weighted round robin over the targets that are up); none up is a 503 at once.
    pub(crate) fn pick(
        &self,
        upstream: &Arc<ApiUpstream>,
        tried: Tried,
    ) -> Result<Picked, GatewayError> {
        let read = || self.clock.now_ms();
        upstream
            .pick(&Now::of(&read), tried)
            .map_err(|u| GatewayError::UpstreamUnavailable {
                retry_after_secs: u
                    .retry_after_ms
                    .map(|ms| u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000).max(1)),
            })
    }

    /// What an exchange with the picked target says of it: an answer (`Ok(status)`) other than
    /// 502, 503 or 504 is a success for its circuit; no answer (refused, reset, timed out) a
    /// failure; an address the policy refused, or the caller's own body failing, says nothing of
    /// the target (a probe gives its place back).
    pub(crate) fn report(&self, picked: Picked, outcome: Result<u16, &GatewayError>) {
        let read = || self.clock.now_ms();
        let now = Now::of(&read);
        match outcome {
            Ok(s) if !matches!(s, 502..=504) => picked.succeeded(&now),
            Err(
                GatewayError::UpstreamForbidden
                | GatewayError::BadBody
                | GatewayError::BodyTooLarge { .. },
            ) => drop(picked),
            _ => picked.failed(&now),
        }
    }

    /// After a try failed on `picked`: the next target, when the request may be tried again
    /// ([`retryable`]) and has tries left. The failed target is told (its circuit counts it).
    pub(crate) fn retry(
        &self,
        picked: Picked,
        tried: &mut Tried,
        tries_left: &mut u32,
        may: bool,
    ) -> Option<Picked> {
        *tried = picked.tried(*tried);
        let upstream = picked.api().clone();
        self.report(picked, Err(&GatewayError::UpstreamUnreachable));
        if !may || *tries_left == 0 {
            return None;
        }
        *tries_left -= 1;
        let next = self.pick(&upstream, *tried).ok()?;
        tracing::debug!(target_id = next.target().id, "retrying on another target");
        Some(next)
    }

    /// The limit phase: the plan's windows for this request. A refusal is counted as usage and
    /// answered with the 429 (its rate-limit fields on it); a limiter that cannot answer is a 503.
    pub(crate) async fn limit(
        &self,
        auth: &Auth,
        trace: &mut Trace,
    ) -> Result<Decision, Response<Full<Bytes>>> {
        self.limit_caller(&auth.caller, auth.route(), trace).await
    }

    /// The limit phase for `caller` on `route` (when its API has routes).
    pub(crate) async fn limit_caller(
        &self,
        caller: &Caller,
        route: Option<&Route>,
        trace: &mut Trace,
    ) -> Result<Decision, Response<Full<Bytes>>> {
        let units = route.map_or(1, |r| i64::from(r.cost));
        let cost = route.map_or(1, |r| u64::from(r.cost));
        let route_limits = route.and_then(|r| {
            r.rate_limit
                .map(|rl| (caller.route_subject(r.id), rl.limits()))
        });
        let tenant = Subject::Tenant {
            tenant_id: caller.tenant_id,
        };
        // A route's own window, its cost and the tenant's ceiling are decided with the plan's
        // windows, in one step; days and months are the tenant's.
        let checked = self
            .limiter
            .check_request(
                caller.subject,
                &caller.limits,
                caller.enforcement,
                cost,
                LinkedLimits {
                    route: route_limits.as_ref().map(|(s, l)| (*s, l)),
                    tenant: caller.ceiling.as_ref().map(|l| (tenant, l)),
                    calendar: caller.calendar,
                },
            )
            .await;
        let Ok((decision, _)) = checked else {
            return Err(self.refuse_traced(&GatewayError::LimiterUnavailable, trace, None));
        };
        trace.counted(decision.allowed, units);
        if !decision.allowed {
            return Err(self.rejected_response(&decision, trace));
        }
        Ok(decision)
    }

    /// Counts a forwarded request in the metrics: answered by the upstream or not, and whether
    /// the upstream failed (a 5xx, or no answer: unreachable, timed out).
    pub(crate) fn count_forwarded(&self, answered: bool, upstream_failed: bool) {
        if upstream_failed {
            self.metrics.count(Outcome::UpstreamError);
        }
        if answered {
            self.metrics.count(Outcome::Proxied);
        }
    }

    /// The 429 for a refused request, counted, with its rate-limit fields.
    pub(crate) fn rejected_response(
        &self,
        decision: &Decision,
        trace: &mut Trace,
    ) -> Response<Full<Bytes>> {
        self.metrics.count(Outcome::Rejected);
        let tight = decision.tightest();
        let window = tight.map_or("minute", domain::limits::WindowState::label);
        let level = decision.level.name();
        let err = match (decision.too_costly(), tight) {
            (Some((cost, holds)), _) => GatewayError::TooCostly {
                level,
                window,
                cost,
                holds,
            },
            _ => GatewayError::RateLimited {
                level,
                window,
                retry_after_secs: decision.retry_after_secs(),
                reset_secs: tight.map_or(0, |w| (w.reset_ms + 999) / 1000),
            },
        };
        let mut resp = err.to_response(&trace.rid);
        insert_rate_limit(resp.headers_mut(), decision);
        trace.answer(&err, resp)
    }

    /// The gateway's own answer to a request it refused or failed, counted: the JSON envelope,
    /// and the rate-limit fields when the request had been through the limit phase.
    pub(crate) fn refuse(
        &self,
        err: &GatewayError,
        rid: &str,
        decision: Option<&Decision>,
    ) -> Response<Full<Bytes>> {
        if err.status().is_server_error() {
            self.metrics.count(Outcome::Error);
        } else {
            self.metrics.count(Outcome::Denied);
        }
        let mut resp = err.to_response(rid);
        if let Ok(v) = HeaderValue::from_str(rid) {
            resp.headers_mut().insert(&X_REQUEST_ID, v);
        }
        if let Some(d) = decision {
            insert_rate_limit(resp.headers_mut(), d);
        }
        resp
    }
}

/// The key a request presents in its API's key field (after `Bearer ` when that field is
/// `Authorization`), trimmed.
pub(crate) fn presented_key<'h, H: HeaderSource + ?Sized>(
    api: &ApiEntry,
    headers: &'h H,
) -> Result<&'h str, GatewayError> {
    presented_key_in(headers, &api.key_header, &api.key_header_name)
}

/// The key a request presents in field `field` (lowercase; after `Bearer ` when it is
/// `Authorization`), trimmed; `name`: the field as a refusal names it.
pub(crate) fn presented_key_in<'h, H: HeaderSource + ?Sized>(
    headers: &'h H,
    field: &str,
    name: &str,
) -> Result<&'h str, GatewayError> {
    let missing = || GatewayError::MissingKey {
        header: name.to_owned(),
    };
    let raw = headers.header(field).ok_or_else(missing)?;
    let raw = std::str::from_utf8(raw)
        .map_err(|_| GatewayError::InvalidKey)?
        .trim();
    let raw = if field == "authorization" {
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
    // A mistyped or made-up key (wrong shape or checksum) costs no hash and no lookup.
    if !domain::apikey::plausible(raw) {
        return Err(GatewayError::InvalidKey);
    }
    Ok(raw)
}

/// What part of the upstream request target a piece pushed by [`upstream_target`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// The target's own (its path, its query and the separators).
    Target,
    /// The rest of the caller's path.
    Rest,
    /// The caller's query.
    Query,
}

/// The upstream-request phase: the upstream's path and query on `target` for a caller's `rest`
/// (the path after the API, or after the route's literal prefix when the route strips it, see
/// [`Auth::forwarded_rest`]) and `query` — the target's path, the rest, the target's query then
/// the caller's — handed to `push` piece by piece (the fast engine writes them into its head,
/// hyper builds a URI of them).
pub(crate) fn upstream_target(
    target: &TargetEntry,
    rest: &str,
    query: Option<&str>,
    mut push: impl FnMut(Piece, &[u8]),
) {
    if target.path.is_empty() && rest.is_empty() {
        // "GET ?q" is not a request line; the root it means is "/".
        push(Piece::Target, b"/");
    } else {
        push(Piece::Target, target.path.as_bytes());
        push(Piece::Rest, rest.as_bytes());
    }
    match (target.url.query(), query) {
        (Some(a), Some(b)) => {
            push(Piece::Target, b"?");
            push(Piece::Target, a.as_bytes());
            push(Piece::Target, b"&");
            push(Piece::Query, b.as_bytes());
        }
        (Some(q), None) => {
            push(Piece::Target, b"?");
            push(Piece::Target, q.as_bytes());
        }
        (None, Some(q)) => {
            push(Piece::Target, b"?");
            push(Piece::Query, q.as_bytes());
        }
        (None, None) => {}
    }
}

/// The `Host` an upstream request carries: its target's authority.
pub(crate) fn upstream_host(target: &TargetEntry) -> &[u8] {
    target.authority.as_bytes()
}

/// Whether a request that failed on a target may be tried on another: when nothing of it
/// reached the target (no connection), or when it is idempotent and failed before any answer
/// byte came back (an error, or no answer within its timeout) — and in both cases only when its
/// body can be sent again (a body already streamed is gone).
pub(crate) fn retryable(connected: bool, idempotent: bool, body_replayable: bool) -> bool {
    body_replayable && (!connected || idempotent)
}

/// Safe to send twice (RFC 9110 9.2.2).
pub(crate) fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

/// The upstream-response-fields phase, the gateway's part: the request id and the rate-limit
/// fields of the decision, handed to `emit` (after the upstream's own fields that passed
/// [`forwards_response_field`], which drops the upstream's copies of these).
pub(crate) fn answer_fields(
    rid: &str,
    decision: &Decision,
    mut emit: impl FnMut(&HeaderName, &[u8]),
) {
    emit(&X_REQUEST_ID, rid.as_bytes());
    rate_limit_fields(decision, emit);
}

/// The last `Forwarded` value this thread built, with the peer and `Host` it was built of: the
/// requests of one connection (and of one client) repeat both, so the value is rebuilt only when
/// either changes.
#[derive(Default)]
struct ForwardedCache {
    https: bool,
    peer_ip: Vec<u8>,
    host: Option<Vec<u8>>,
    value: Vec<u8>,
}

thread_local! {
    static FORWARDED_VALUE: std::cell::RefCell<ForwardedCache> =
        std::cell::RefCell::new(ForwardedCache::default());
}

/// `Forwarded: for=<peer>;host="<host>";proto=http(s)` (RFC 7239), into `fwd`.
fn build_forwarded(fwd: &mut Vec<u8>, peer_ip: &str, original_host: Option<&[u8]>, https: bool) {
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
    fwd.extend_from_slice(if https {
        b";proto=https"
    } else {
        b";proto=http"
    });
}

/// The fields the gateway sets on a forwarded request, once the caller's copies of them, the key
/// and hop-by-hop fields are gone: `X-Forwarded-*`, `X-Request-ID`, `X-Gateway-*` (and `Host`,
/// [`upstream_host`], which the engines place themselves). `https`: whether the caller's
/// connection was TLS (the gateway terminated it).
pub(crate) fn forwarded_fields(
    auth: &Auth,
    https: bool,
    peer_ip: &str,
    prior_xff: &[&[u8]],
    original_host: Option<&[u8]>,
    rid: &str,
    mut emit: impl FnMut(&HeaderName, &[u8]),
) {
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
    emit(&X_FORWARDED_PROTO, if https { b"https" } else { b"http" });
    if let Some(host) = original_host {
        emit(&X_FORWARDED_HOST, host);
    }
    // The caller's own `X-Real-IP` and `Forwarded` were dropped: these name this hop only.
    emit(&X_REAL_IP, peer_ip.as_bytes());
    FORWARDED_VALUE.with_borrow_mut(|c| {
        if c.value.is_empty()
            || c.https != https
            || c.peer_ip != peer_ip.as_bytes()
            || c.host.as_deref() != original_host
        {
            build_forwarded(&mut c.value, peer_ip, original_host, https);
            c.https = https;
            c.peer_ip.clear();
            c.peer_ip.extend_from_slice(peer_ip.as_bytes());
            c.host = original_host.map(<[u8]>::to_vec);
        }
        emit(&header::FORWARDED, &c.value);
    });
    emit(&X_REQUEST_ID, rid.as_bytes());
    let caller = &auth.caller;
    emit(&X_GATEWAY_TENANT, caller.tenant_slug.as_bytes());
    emit(
        &X_GATEWAY_KEY_ID,
        itoa::Buffer::new().format(caller.key_id).as_bytes(),
    );
    if let Some((_, client_id)) = &caller.client {
        emit(&X_GATEWAY_CLIENT_ID, client_id.as_bytes());
    }
    if let Some(jwt) = &auth.identity {
        emit(&X_GATEWAY_JWT, jwt.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key whose checksum is wrong is refused where it is read, before the admit phase hashes
    /// it or looks it up.
    #[test]
    fn a_key_with_a_bad_checksum_is_refused_before_it_is_hashed() {
        let good = domain::apikey::ApiKey::generate();
        let raw = good.expose();
        let last = raw.as_bytes()[raw.len() - 1];
        let bad = format!(
            "{}{}",
            &raw[..raw.len() - 1],
            if last == b'0' { '1' } else { '0' }
        );
        let mut h = http::HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_str(&bad).unwrap());
        assert_eq!(
            presented_key_in(&h, "x-api-key", "X-API-Key"),
            Err(GatewayError::InvalidKey)
        );
        h.insert("x-api-key", HeaderValue::from_str(raw).unwrap());
        assert_eq!(presented_key_in(&h, "x-api-key", "X-API-Key"), Ok(raw));
    }
}
