//! Prometheus metrics of one data plane, served at `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Requests by outcome: proxied, rejected, denied (auth/4xx of ours), error (5xx of ours).
    pub requests: IntCounterVec,
    /// The `requests` counters, resolved once (no label lookup per request).
    pub proxied: IntCounter,
    pub rejected: IntCounter,
    pub denied: IntCounter,
    pub errors: IntCounter,
    pub upstream_errors: IntCounter,
    pub latency: Histogram,
    pub redis_up: IntGauge,
    pub limiter_fallbacks: IntGauge,
    pub snapshot_version: IntGauge,
    pub snapshot_keys: IntGauge,
    pub snapshot_reloads: IntCounter,
    pub key_updates: IntCounter,
    pub usage_flush_errors: IntGauge,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are constants; an error here is a programming error caught by tests.
    #[allow(clippy::expect_used)]
    r.expect("valid metric definition")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("gateway".into()), None).unwrap_or_default();
        let requests = must(IntCounterVec::new(
            Opts::new("requests_total", "Requests handled, by outcome"),
            &["outcome"],
        ));
        let upstream_errors = must(IntCounter::new(
            "upstream_errors_total",
            "Proxied requests whose upstream failed (5xx, unreachable, timeout)",
        ));
        let latency = must(Histogram::with_opts(
            HistogramOpts::new("request_duration_seconds", "Time to the response head").buckets(
                vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                ],
            ),
        ));
        let redis_up = must(IntGauge::new(
            "redis_up",
            "1 when limits are shared through Redis",
        ));
        let limiter_fallbacks = must(IntGauge::new(
            "limiter_fallback_requests",
            "Requests limited in process because Redis was down",
        ));
        let snapshot_version = must(IntGauge::new("snapshot_version", "Config version served"));
        let snapshot_keys = must(IntGauge::new("snapshot_keys", "API keys in the snapshot"));
        let snapshot_reloads = must(IntCounter::new("snapshot_reloads_total", "Snapshot loads"));
        let key_updates = must(IntCounter::new(
            "key_updates_total",
            "Keys applied from change events without a reload",
        ));
        let usage_flush_errors = must(IntGauge::new(
            "usage_flush_errors",
            "Failed usage flushes (retried)",
        ));
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_errors.clone()),
            Box::new(latency.clone()),
            Box::new(redis_up.clone()),
            Box::new(limiter_fallbacks.clone()),
            Box::new(snapshot_version.clone()),
            Box::new(snapshot_keys.clone()),
            Box::new(snapshot_reloads.clone()),
            Box::new(key_updates.clone()),
            Box::new(usage_flush_errors.clone()),
        ] {
            must(registry.register(c));
        }
        Self {
            registry,
            proxied: requests.with_label_values(&["proxied"]),
            rejected: requests.with_label_values(&["rejected"]),
            denied: requests.with_label_values(&["denied"]),
            errors: requests.with_label_values(&["error"]),
            requests,
            upstream_errors,
            latency,
            redis_up,
            limiter_fallbacks,
            snapshot_version,
            snapshot_keys,
            snapshot_reloads,
            key_updates,
            usage_flush_errors,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
