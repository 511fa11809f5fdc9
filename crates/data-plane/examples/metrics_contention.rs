//! What the metric writes of one request cost (a latency observation and an outcome count), in
//! ns per request, with one and with two threads recording at full speed: into shared Prometheus
//! metrics (every thread writing the same cache lines), and through [`Metrics`] (each thread into
//! counts of its own, merged at scrape).
//!
//! `cargo run --release -p data-plane --example metrics_contention`

use std::time::{Duration, Instant};

use data_plane::metrics::{Metrics, Outcome};
use prometheus::{Histogram, HistogramOpts, IntCounter};

const REQUESTS: u32 = 5_000_000;

fn per_request(threads: usize, record: &(impl Fn(u32) + Sync)) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| (0..REQUESTS).for_each(record));
        }
    });
    started.elapsed().as_secs_f64() * 1e9 / f64::from(REQUESTS)
}

fn main() -> anyhow::Result<()> {
    let latency = Histogram::with_opts(HistogramOpts::new("latency", "shared").buckets(vec![
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
    ]))?;
    let proxied = IntCounter::new("proxied", "shared")?;
    let shared = |i: u32| {
        latency.observe(f64::from(i % 1000) * 1e-6);
        proxied.inc();
    };
    let metrics = Metrics::new();
    let per_thread = |i: u32| {
        metrics.observe_latency(Duration::from_micros(u64::from(i % 1000)));
        metrics.count(Outcome::Proxied);
    };
    for threads in [1, 2] {
        println!(
            "threads={threads} shared_ns_per_request={:.1} per_thread_ns_per_request={:.1}",
            per_request(threads, &shared),
            per_request(threads, &per_thread)
        );
    }
    Ok(())
}
