//! Quota webhooks: the events (what happened to whose window), how a delivery is signed, and how
//! long a failing endpoint is retried.
//!
//! An event is recorded once (`webhook_events.dedup`): a quota alert is raised by the one decision
//! that crossed the threshold — the counter's store decides one grant at a time, so with several
//! data planes still exactly one — and the unique key keeps a repeat (an outage's local decision,
//! say) out. The control plane fans each event out to the tenant's endpoints that want it and
//! delivers it: `POST` of the JSON with `X-Gateway-Event`, `X-Gateway-Delivery` and
//! `X-Gateway-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, retried with backoff for 24 h.

use chrono::{DateTime, Utc};
use ring::hmac;
use serde_json::json;

use crate::limits::{AlertKind, QuotaAlert, Subject};

/// The events an endpoint may ask for.
pub const EVENTS: [&str; 5] = [
    "quota.warning",
    "quota.exhausted",
    "key.expiring",
    "circuit.opened",
    "circuit.closed",
];

/// How long a delivery is retried before it is given up.
pub const RETRY_FOR: chrono::Duration = chrono::Duration::hours(24);

/// How long before a key expires `key.expiring` is sent.
pub const KEY_EXPIRING_AHEAD: chrono::Duration = chrono::Duration::days(7);

/// `X-Gateway-Signature` of `body` sent at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// The wait before attempt `attempts + 1` (after `attempts` failed): `base` doubled each time,
/// at most an hour.
pub fn backoff(base: std::time::Duration, attempts: u32) -> chrono::Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    let wait = base
        .saturating_mul(factor)
        .min(std::time::Duration::from_hours(1));
    chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1))
}

/// An event to record: its tenant, its type, the key it is recorded once under, and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub tenant_id: i64,
    pub kind: &'static str,
    pub dedup: String,
    pub event_id: String,
    pub payload: String,
}

impl NewEvent {
    fn new(tenant_id: i64, kind: &'static str, dedup: String, data: &serde_json::Value) -> Self {
        let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        let payload = json!({
            "id": event_id,
            "type": kind,
            "created_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": data,
        })
        .to_string();
        Self {
            tenant_id,
            kind,
            dedup,
            event_id,
            payload,
        }
    }

    /// The event of a quota alert (none for a login throttle).
    pub fn of_alert(a: &QuotaAlert) -> Option<Self> {
        let (who, mut data) = match a.subject {
            Subject::Key { key_id, .. } => (format!("k{key_id}"), json!({"key_id": key_id})),
            Subject::Client { client_row_id, .. } => (
                format!("c{client_row_id}"),
                json!({"client_row_id": client_row_id}),
            ),
            Subject::Route {
                route_id, owner, ..
            } => (
                format!(
                    "r{route_id}:{}:{}",
                    owner.key_id().unwrap_or(0),
                    owner.client_row_id().unwrap_or(0)
                ),
                json!({"route_id": route_id, "key_id": owner.key_id(), "client_row_id": owner.client_row_id()}),
            ),
            Subject::Tenant { .. } => ("t".to_owned(), json!({})),
            Subject::Login(_) => return None,
        };
        let al = a.alert;
        let kind = al.kind.event();
        data["level"] = json!(al.level.name());
        data["window"] = json!(al.window.name());
        data["period"] = json!(al.period.to_string());
        data["limit"] = json!(al.limit);
        data["used"] = json!(al.used);
        data["threshold"] = json!(match al.kind {
            AlertKind::Warning => 0.8,
            AlertKind::Exhausted => 1.0,
        });
        let tenant_id = a.subject.tenant_id();
        data["tenant_id"] = json!(tenant_id);
        let dedup = format!(
            "{kind}:{tenant_id}:{who}:{}:{}",
            al.window.name(),
            al.period
        );
        Some(Self::new(tenant_id, kind, dedup, &data))
    }

    /// `circuit.opened` (or `circuit.closed`) for target `target_id` of API `api_id` at `at_ms`.
    /// Each data plane keeps its own circuits: the event is recorded once per target, kind and
    /// minute, so data planes that open theirs within the same minute send one.
    pub fn circuit(
        tenant_id: i64,
        api_id: i64,
        target_id: i64,
        url: &str,
        opened: bool,
        at_ms: i64,
    ) -> Self {
        let kind = if opened {
            "circuit.opened"
        } else {
            "circuit.closed"
        };
        let at = DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
        let data = json!({
            "tenant_id": tenant_id,
            "api_id": api_id,
            "target_id": target_id,
            "target": url,
            "at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        let dedup = format!("{kind}:{target_id}:{}", at_ms.div_euclid(60_000));
        Self::new(tenant_id, kind, dedup, &data)
    }

    /// `key.expiring` for a key that expires at `expires_at`.
    pub fn key_expiring(
        tenant_id: i64,
        key_id: i64,
        name: &str,
        prefix: &str,
        expires_at: DateTime<Utc>,
    ) -> Self {
        let data = json!({
            "tenant_id": tenant_id,
            "key_id": key_id,
            "name": name,
            "prefix": prefix,
            "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        let dedup = format!("key.expiring:{key_id}:{}", expires_at.timestamp());
        Self::new(tenant_id, "key.expiring", dedup, &data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Alert, Level, Window};

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body() {
        // RFC 4231 style check against an independent computation.
        let sig = signature("whsec", 1_700_000_000, br#"{"a":1}"#);
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"whsec");
        let want = hmac::sign(&key, br#"1700000000.{"a":1}"#);
        assert_eq!(
            sig,
            format!("t=1700000000,v1={}", hex::encode(want.as_ref()))
        );
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let base = std::time::Duration::from_secs(10);
        let secs: Vec<i64> = (1..=12).map(|n| backoff(base, n).num_seconds()).collect();
        assert_eq!(&secs[..5], &[10, 20, 40, 80, 160]);
        assert_eq!(secs[11], 3_600);
    }

    #[test]
    fn an_alert_is_recorded_once_per_subject_window_and_period() {
        let a = QuotaAlert {
            subject: Subject::Key {
                tenant_id: 3,
                key_id: 7,
            },
            alert: Alert {
                kind: AlertKind::Exhausted,
                level: Level::Plan,
                window: Window::Day,
                period: 20_261_122,
                limit: 100,
                used: 100,
            },
        };
        let e = NewEvent::of_alert(&a).unwrap();
        assert_eq!(e.dedup, "quota.exhausted:3:k7:day:20261122");
        assert_eq!(NewEvent::of_alert(&a).unwrap().dedup, e.dedup);
        let body: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(body["type"], "quota.exhausted");
        assert_eq!(body["data"]["key_id"], 7);
        assert_eq!(body["data"]["period"], "20261122");
        assert_eq!(body["id"], e.event_id);
    }
}
