//! Delivers webhook events (see `domain::webhook`): fans each recorded event out to the tenant's
//! endpoints that want it, sends what is due — signed, one endpoint's failure never holding up
//! another's — and retries a failure with backoff for 24 h, recording every attempt. Also records
//! `key.expiring` for keys that expire within 7 days. Several control planes may run it: a
//! delivery is claimed before it is sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use domain::sea_orm::DatabaseConnection;
use domain::store::{self, Attempt, Due};
use domain::upstream::UpstreamUrl;
use domain::upstream_policy::{ResolveError, UpstreamPolicy};
use domain::webhook::{self, NewEvent};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often due deliveries are looked for.
const TICK: Duration = Duration::from_millis(250);
/// How often keys about to expire are looked for.
const KEY_SCAN_EVERY: Duration = Duration::from_mins(1);

/// The connector's resolver: the addresses the policy allowed when the attempt began. The
/// connection goes to one of them, never to what the name resolves to a moment later (a name that
/// passed the check and then resolves to a private or metadata address — DNS rebinding — is not
/// reached).
#[derive(Clone)]
struct Checked(Vec<SocketAddr>);

impl tower_service::Service<Name> for Checked {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        std::future::ready(Ok(self.0.clone().into_iter()))
    }
}

/// The addresses `url` may be reached at for a tenant (`trusted` or not), or why not.
async fn checked_addrs(
    policy: &UpstreamPolicy,
    url: &UpstreamUrl,
    trusted: bool,
) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        policy.resolve(&url.connect_addr(), trusted),
    )
    .await
    {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(ResolveError::Refused(r))) => Err(format!("the endpoint's address is refused: {r}")),
        Ok(Err(ResolveError::Lookup(e))) => Err(format!("could not reach the endpoint: {e}")),
        Err(_) => Err(format!(
            "the endpoint's name did not resolve within {} s",
            ATTEMPT_TIMEOUT.as_secs()
        )),
    }
}

pub struct Deliverer {
    db: DatabaseConnection,
    /// TLS settings (the system's roots), shared by every attempt's connector.
    tls: Arc<rustls::ClientConfig>,
    policy: UpstreamPolicy,
    /// The first retry's wait (doubled each time, at most an hour).
    retry_base: Duration,
}

impl Deliverer {
    pub fn new(
        db: DatabaseConnection,
        policy: UpstreamPolicy,
        retry_base: Duration,
    ) -> anyhow::Result<Self> {
        use hyper_rustls::ConfigBuilderExt as _;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_native_roots()?
        .with_no_client_auth();
        Ok(Self {
            db,
            tls: Arc::new(tls),
            policy,
            retry_base,
        })
    }

    /// Runs until the task is dropped.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_key_scan: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            if last_key_scan.is_none_or(|at| at.elapsed() >= KEY_SCAN_EVERY) {
                last_key_scan = Some(tokio::time::Instant::now());
                if let Err(e) = self.keys_expiring().await {
                    tracing::warn!(error = %e, "could not look for expiring keys");
                }
            }
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "webhook deliveries failed this round");
            }
        }
    }

    /// One round: fan out what was recorded, send what is due (concurrently).
    pub async fn round(&self) -> Result<(), store::StoreError> {
        let now = Utc::now();
        store::fan_out(&self.db, now).await?;
        let due = store::claim_due(&self.db, now, chrono::Duration::seconds(60), 50).await?;
        let sends = due.into_iter().map(|d| self.send(d));
        futures_util::future::join_all(sends).await;
        Ok(())
    }

    async fn keys_expiring(&self) -> Result<(), store::StoreError> {
        let keys = store::keys_expiring(&self.db, Utc::now(), webhook::KEY_EXPIRING_AHEAD).await?;
        let events: Vec<NewEvent> = keys
            .iter()
            .filter_map(|k| {
                let at = k.expires_at?;
                Some(NewEvent::key_expiring(
                    k.tenant_id,
                    k.id,
                    &k.name,
                    &k.prefix,
                    at,
                ))
            })
            .collect();
        store::record_events(&self.db, &events).await?;
        Ok(())
    }

    async fn send(&self, d: Due) {
        let outcome = match self.attempt(&d).await {
            Ok(status) if (200..300).contains(&status) => Attempt::Delivered(i32::from(status)),
            Ok(status) => self.failed(&d, Some(i32::from(status)), format!("answered {status}")),
            Err(why) => self.failed(&d, None, why),
        };
        if let Err(e) = store::record_attempt(&self.db, &d.delivery, outcome, Utc::now()).await {
            tracing::warn!(error = %e, delivery = d.delivery.id, "could not record a webhook attempt");
        }
    }

    /// A failed attempt: tried again after the backoff, unless that is past 24 h of trying.
    fn failed(&self, d: &Due, status: Option<i32>, error: String) -> Attempt {
        let attempts = u32::try_from(d.delivery.attempts + 1).unwrap_or(u32::MAX);
        let next = Utc::now() + webhook::backoff(self.retry_base, attempts);
        let give_up = next > d.delivery.created_at + webhook::RETRY_FOR;
        tracing::info!(
            delivery = d.delivery.id,
            webhook = d.webhook.id,
            attempts,
            error = %error,
            "webhook delivery failed{}",
            if give_up { "; giving up" } else { "" }
        );
        Attempt::Failed {
            status,
            error,
            next: (!give_up).then_some(next),
        }
    }

    /// Sends one delivery: the event's JSON, signed. The endpoint's address is checked against
    /// the upstream address policy (loopback and private addresses only for trusted tenants).
    async fn attempt(&self, d: &Due) -> Result<u16, String> {
        let url = UpstreamUrl::parse(&d.webhook.url).map_err(|e| e.to_string())?;
        let trusted = domain::store::tenant_trusted(&self.db, d.webhook.tenant_id)
            .await
            .unwrap_or(false);
        // Checked once: the connection goes only to these addresses (see `Checked`).
        let addrs = checked_addrs(&self.policy, &url, trusted).await?;
        let mut http = HttpConnector::new_with_resolver(Checked(addrs));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(https);
        let body = Bytes::from(d.event.payload.clone());
        let t = Utc::now().timestamp();
        let req = hyper::Request::post(d.webhook.url.as_str())
            .header("content-type", "application/json")
            .header("user-agent", "gateway-webhooks/1")
            .header("x-gateway-event", d.event.kind.as_str())
            .header("x-gateway-event-id", d.event.event_id.as_str())
            .header("x-gateway-delivery", d.delivery.id.to_string())
            .header(
                "x-gateway-signature",
                webhook::signature(&d.webhook.secret, t, &body),
            )
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp.status().as_u16()),
            Ok(Err(e)) => Err(format!("could not reach the endpoint: {e}")),
            Err(_) => Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr as _;
    use tower_service::Service as _;

    /// The addresses a delivery connects to come from the policy: a name that resolves to a
    /// loopback address is refused for a tenant no admin trusts, and kept, with the URL's port,
    /// for a trusted one; the connector is handed exactly those.
    #[tokio::test]
    async fn the_connection_resolves_names_through_the_address_policy() {
        let policy = UpstreamPolicy::new(Vec::new());
        let url = UpstreamUrl::parse("http://localhost:8080/hook").unwrap();
        let err = checked_addrs(&policy, &url, false).await.unwrap_err();
        assert!(err.contains("refused") && err.contains("loopback"), "{err}");
        let addrs = checked_addrs(&policy, &url, true).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{addrs:?}"
        );
        let handed: Vec<SocketAddr> = Checked(addrs.clone())
            .call(Name::from_str("rebound.example").unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(handed, addrs);
    }
}
