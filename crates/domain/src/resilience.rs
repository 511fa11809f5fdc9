//! How an API survives its upstreams' failures: its targets (URL and weight), its retries, its
//! active health check and its circuit breaker's settings. The data plane's `upstream` module
//! keeps the live state (round robin, health, circuits); this is what the tenant configured.

use serde::{Deserialize, Serialize};

use crate::entities::api;

/// Most targets an API may have.
pub const MAX_TARGETS: u64 = 32;
/// Highest weight of a target.
pub const MAX_WEIGHT: i64 = 1000;
/// Most tries after the first.
pub const MAX_RETRIES: i64 = crate::route::MAX_RETRIES;

/// The passive health check of every target of an API: its circuit opens after
/// `failure_threshold` consecutive failures, lets `half_open_max_calls` probes through after
/// `recovery_timeout_ms`, and closes when they all succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreaker {
    pub enabled: bool,
    pub failure_threshold: u32,
    pub recovery_timeout_ms: u32,
    pub half_open_max_calls: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 5,
            recovery_timeout_ms: 30_000,
            half_open_max_calls: 3,
        }
    }
}

/// The active health check of an API's targets: `GET path` every `interval_ms`; a target is out
/// after `unhealthy_threshold` failed checks in a row and back after `healthy_threshold` good ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// The statuses that count as healthy, inclusive.
    pub status_min: u16,
    pub status_max: u16,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: "/".to_owned(),
            interval_ms: 10_000,
            timeout_ms: 2_000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            status_min: 200,
            status_max: 399,
        }
    }
}

impl HealthCheck {
    pub fn healthy_status(&self, status: u16) -> bool {
        (self.status_min..=self.status_max).contains(&status)
    }
}

/// An API's retries, health check and circuit breaker, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiResilience {
    /// `None`: [`default_retries`].
    pub retries: Option<i32>,
    /// `None`: no active check.
    pub health_check: Option<HealthCheck>,
    pub circuit_breaker: CircuitBreaker,
}

impl ApiResilience {
    /// What a stored API says (a stored value that no longer reads is taken as the default, with
    /// a warning: the API keeps serving).
    pub fn of(a: &api::Model) -> Self {
        fn read<T: serde::de::DeserializeOwned>(api_id: i64, what: &str, v: &str) -> Option<T> {
            serde_json::from_str(v)
                .inspect_err(|e| tracing::warn!(api_id, what, error = %e, "unreadable setting"))
                .ok()
        }
        Self {
            retries: a.retries,
            health_check: a
                .health_check
                .as_deref()
                .and_then(|v| read(a.id, "health_check", v)),
            circuit_breaker: a
                .circuit_breaker
                .as_deref()
                .and_then(|v| read(a.id, "circuit_breaker", v))
                .unwrap_or_default(),
        }
    }

    pub fn stored_health_check(&self) -> Option<String> {
        self.health_check
            .as_ref()
            .map(|h| serde_json::to_string(h).unwrap_or_default())
    }

    /// `None` for the defaults, so that a later change of the defaults reaches the API.
    pub fn stored_circuit_breaker(&self) -> Option<String> {
        (self.circuit_breaker != CircuitBreaker::default())
            .then(|| serde_json::to_string(&self.circuit_breaker).unwrap_or_default())
    }

    /// Tries after a failed one, for an API of `targets` targets.
    pub fn retries(&self, targets: usize) -> u32 {
        self.retries
            .map_or_else(|| default_retries(targets), i32::unsigned_abs)
    }
}

/// Tries after a failed one when the API does not say: one when there is another target to try.
pub fn default_retries(targets: usize) -> u32 {
    u32::from(targets >= 2)
}

/// A target to store: its URL and weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTarget {
    pub url: crate::upstream::UpstreamUrl,
    pub weight: i32,
}
