//! Prometheus metrics of one data plane, served at `/metrics`.
//!
//! What every request records (its outcome, its latency) is counted by the recording thread in
//! counters of its own ([`prometheus::local`]) and added to the registered metrics when they are
//! scraped: a request writes no cache line another worker writes. With the shared metrics written
//! directly, two threads recording at full speed took 186 ns per request against 13 ns for one
//! (`cargo run --release -p data-plane --example metrics_contention`); on a many-core node every
//! worker would wait on those lines.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::lock;

/// What became of a request, as `gateway_requests_total` and `gateway_upstream_errors_total`
/// count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded and answered by the upstream.
    Proxied,
    /// Refused by its plan's limits (429).
    Rejected,
    /// Refused by the gateway: authentication, bad input (4xx of ours).
    Denied,
    /// Failed in the gateway (5xx of ours).
    Error,
    /// Forwarded, and the upstream failed (5xx, unreachable, timed out); counted beside the above.
    UpstreamError,
}

/// One thread's counts, merged into the registered metrics at scrape.
struct Local {
    /// By [`Outcome`], in its order.
    counters: [LocalIntCounter; 5],
    latency: LocalHistogram,
}

impl Local {
    fn flush(&self) {
        self.counters.iter().for_each(LocalIntCounter::flush);
        self.latency.flush();
    }
}

/// The `outcome` labels of `gateway_requests_total`, in [`Outcome`]'s order.
const OUTCOMES: [&str; 4] = ["proxied", "rejected", "denied", "error"];

static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's counts, per [`Metrics`] it recorded into (one in a data plane; tests run
    /// several gateways in one process).
    static LOCALS: RefCell<Vec<(u64, Arc<Mutex<Local>>)>> = const { RefCell::new(Vec::new()) };
}

pub struct Metrics {
    registry: Registry,
    id: u64,
    /// Every recording thread's counts (each locked by its thread per request, uncontended, and
    /// by a scrape to flush it).
    locals: Mutex<Vec<Arc<Mutex<Local>>>>,
    /// Requests by outcome: proxied, rejected, denied (auth/4xx of ours), error (5xx of ours).
    requests: IntCounterVec,
    upstream_errors: IntCounter,
    latency: Histogram,
    pub redis_up: IntGauge,
    pub limiter_fallbacks: IntGauge,
    pub data_planes: IntGauge,
    pub snapshot_version: IntGauge,
    pub snapshot_keys: IntGauge,
    pub snapshot_reloads: IntCounter,
    pub key_updates: IntCounter,
    pub usage_flush_errors: IntGauge,
    /// WebSocket connections being relayed now.
    pub websockets_open: IntGauge,
    /// The request log's writer: records written, dropped (buffer full), failed writes.
    log_written: IntCounter,
    log_dropped: IntCounter,
    log_errors: IntCounter,
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
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from a request's head to the last byte of its answer",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
            ]),
        ));
        let redis_up = must(IntGauge::new(
            "redis_up",
            "1 when limits are shared through Redis",
        ));
        let limiter_fallbacks = must(IntGauge::new(
            "limiter_fallback_requests",
            "Requests limited in process because Redis was down",
        ));
        let data_planes = must(IntGauge::new(
            "data_planes",
            "Live data planes sharing Redis, as their heartbeats count them",
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
        let websockets_open = must(IntGauge::new(
            "websockets_open",
            "WebSocket connections being relayed",
        ));
        let log_written = must(IntCounter::new(
            "request_log_written_total",
            "Request log records written to the database",
        ));
        let log_dropped = must(IntCounter::new(
            "request_log_dropped_total",
            "Request log records dropped because the buffer was full (the database was slow)",
        ));
        let log_errors = must(IntCounter::new(
            "request_log_write_errors_total",
            "Request log writes that failed (their records are tried again)",
        ));
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_errors.clone()),
            Box::new(latency.clone()),
            Box::new(redis_up.clone()),
            Box::new(limiter_fallbacks.clone()),
            Box::new(data_planes.clone()),
            Box::new(snapshot_version.clone()),
            Box::new(snapshot_keys.clone()),
            Box::new(snapshot_reloads.clone()),
            Box::new(key_updates.clone()),
            Box::new(usage_flush_errors.clone()),
            Box::new(websockets_open.clone()),
            Box::new(log_written.clone()),
            Box::new(log_dropped.clone()),
            Box::new(log_errors.clone()),
        ] {
            must(registry.register(c));
        }
        // Every outcome is listed from the start, at 0, not from its first request.
        for outcome in OUTCOMES {
            requests.with_label_values(&[outcome]);
        }
        Self {
            registry,
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
            locals: Mutex::new(Vec::new()),
            requests,
            upstream_errors,
            latency,
            redis_up,
            limiter_fallbacks,
            data_planes,
            snapshot_version,
            snapshot_keys,
            snapshot_reloads,
            key_updates,
            usage_flush_errors,
            websockets_open,
            log_written,
            log_dropped,
            log_errors,
        }
    }

    /// The request log writer's counts, brought up to date (at scrape).
    pub fn set_request_log(&self, c: crate::request_log::LogCounts) {
        for (counter, now) in [
            (&self.log_written, c.written),
            (&self.log_dropped, c.dropped),
            (&self.log_errors, c.write_errors),
        ] {
            let was = counter.get();
            if now > was {
                counter.inc_by(now - was);
            }
        }
    }

    /// Counts one request's outcome.
    pub fn count(&self, outcome: Outcome) {
        self.with_local(|l| l.counters[outcome as usize].inc());
    }

    /// Records how long a request took to its response head.
    pub fn observe_latency(&self, took: Duration) {
        self.with_local(|l| l.latency.observe(took.as_secs_f64()));
    }

    /// Runs `f` on this thread's counts, made on its first use here.
    fn with_local<R>(&self, f: impl FnOnce(&Local) -> R) -> R {
        LOCALS.with(|t| {
            let mut t = t.borrow_mut();
            if let Some((_, local)) = t.iter().find(|(id, _)| *id == self.id) {
                return f(&lock(local));
            }
            // Entries of metrics dropped since (only this thread still holds them) go first.
            t.retain(|(_, local)| Arc::strong_count(local) > 1);
            let local = Arc::new(Mutex::new(self.new_local()));
            lock(&self.locals).push(local.clone());
            let out = f(&lock(&local));
            t.push((self.id, local));
            out
        })
    }

    fn new_local(&self) -> Local {
        let [proxied, rejected, denied, errors] =
            OUTCOMES.map(|name| self.requests.with_label_values(&[name]).local());
        Local {
            counters: [
                proxied,
                rejected,
                denied,
                errors,
                self.upstream_errors.local(),
            ],
            latency: self.latency.local(),
        }
    }

    /// The metrics in Prometheus's text format, with every thread's counts so far.
    pub fn render(&self) -> String {
        for local in lock(&self.locals).iter() {
            lock(local).flush();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, name: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    #[test]
    fn a_scrape_sees_what_every_thread_counted_once() {
        let metrics = Metrics::new();
        // Threads that record and end before the scrape, and this thread.
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..5 {
                        metrics.count(Outcome::Proxied);
                        metrics.observe_latency(Duration::from_micros(700));
                    }
                    metrics.count(Outcome::Denied);
                });
            }
        });
        metrics.count(Outcome::Rejected);
        metrics.count(Outcome::UpstreamError);
        metrics.observe_latency(Duration::from_millis(3));
        for _ in 0..2 {
            // Scraped twice: a flush moves counts, it does not add them again.
            let text = metrics.render();
            let requests = "gateway_requests_total{outcome=";
            assert_eq!(
                line(&text, &format!("{requests}\"proxied\"}}")),
                format!("{requests}\"proxied\"}} 15")
            );
            assert_eq!(
                line(&text, &format!("{requests}\"denied\"}}")),
                format!("{requests}\"denied\"}} 3")
            );
            assert_eq!(
                line(&text, &format!("{requests}\"rejected\"}}")),
                format!("{requests}\"rejected\"}} 1")
            );
            assert_eq!(
                line(&text, "gateway_upstream_errors_total"),
                "gateway_upstream_errors_total 1"
            );
            assert_eq!(
                line(&text, "gateway_request_duration_seconds_count"),
                "gateway_request_duration_seconds_count 16"
            );
            let le_1ms = "gateway_request_duration_seconds_bucket{le=\"0.001\"}";
            assert_eq!(line(&text, le_1ms), format!("{le_1ms} 15"));
            let le_5ms = "gateway_request_duration_seconds_bucket{le=\"0.005\"}";
            assert_eq!(line(&text, le_5ms), format!("{le_5ms} 16"));
        }
    }

    #[test]
    fn every_outcome_is_listed_before_any_request() {
        let text = Metrics::new().render();
        for outcome in OUTCOMES {
            let zero = format!("gateway_requests_total{{outcome=\"{outcome}\"}} 0");
            assert!(text.contains(&zero), "{text}");
        }
    }

    #[test]
    fn gateways_in_one_process_count_apart() {
        let first = Metrics::new();
        first.count(Outcome::Proxied);
        drop(first);
        let second = Metrics::new();
        second.count(Outcome::Proxied);
        second.count(Outcome::Proxied);
        let other = Metrics::new();
        other.count(Outcome::Error);
        let text = second.render();
        assert!(
            text.contains("gateway_requests_total{outcome=\"proxied\"} 2"),
            "{text}"
        );
        assert!(!text.contains("outcome=\"error\"} 1"), "{text}");
        // The dropped metrics' counts no longer ride along on this thread.
        LOCALS.with(|t| assert_eq!(t.borrow().len(), 2));
    }
}
