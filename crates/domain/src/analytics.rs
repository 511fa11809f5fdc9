//! Traffic analytics: what the data plane counts of every request it answers on a tenant's path,
//! per (tenant, API, key, client, route) and minute, hour and day — requests by status class,
//! rate-limited, upstream errors, bytes, and a latency histogram — and how percentiles come out
//! of merged histograms.
//!
//! ## The latency buckets
//! Log-linear, as `HdrHistogram`'s with four bits of precision: below 16 µs one bucket per
//! microsecond; above, every power of two is split into 16 equal buckets. A latency `v` falls in
//! a bucket `[lo, hi)` with `hi - lo <= lo / 16`, and a percentile is reported as its bucket's
//! midpoint, so it is within `1/32` (3.125 %) of the exact value (nearest rank), and within half a
//! microsecond below 16 µs. Buckets of any minutes, keys or data planes add up: a percentile over a
//! month is as exact as over a minute.

use std::collections::BTreeMap;

/// Sub-buckets per power of two (4 bits).
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Latencies are counted up to 2^36 µs (about 19 hours); longer ones in the last bucket.
const MAX_EXP: u32 = 36;
/// The last bucket's index.
pub const MAX_BIN: u16 = bin_of(u64::MAX);

/// The bucket of a latency of `us` microseconds.
#[must_use]
pub const fn bin_of(us: u64) -> u16 {
    if us < SUB {
        #[allow(clippy::cast_possible_truncation)] // below 16
        return us as u16;
    }
    let mut exp = us.ilog2();
    let mut us = us;
    if exp >= MAX_EXP {
        exp = MAX_EXP - 1;
        us = (1 << MAX_EXP) - 1;
    }
    let sub = (us >> (exp - SUB_BITS)) & (SUB - 1);
    #[allow(clippy::cast_possible_truncation)] // at most (36 - 3) * 16 + 15
    let bin = ((exp - SUB_BITS + 1) as u64 * SUB + sub) as u16;
    bin
}

/// The latencies (µs) bucket `bin` holds: `[lo, hi)`.
#[must_use]
pub const fn bin_bounds(bin: u16) -> (u64, u64) {
    let b = bin as u64;
    if b < SUB {
        return (b, b + 1);
    }
    let shift = b / SUB - 1;
    let sub = b % SUB;
    ((SUB + sub) << shift, (SUB + sub + 1) << shift)
}

/// The value a percentile falling in `bin` is reported as: the bucket's midpoint, in µs.
#[must_use]
#[allow(clippy::cast_precision_loss)] // bounds below 2^37
pub fn bin_value(bin: u16) -> f64 {
    let (lo, hi) = bin_bounds(bin);
    (lo as f64 + hi as f64 - 1.0) / 2.0
}

/// A latency histogram: counts per bucket, sparse (a minute of one key's traffic usually fills
/// a handful of buckets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    bins: Vec<(u16, u64)>,
}

impl Histogram {
    /// Counts one latency of `us` microseconds.
    pub fn record(&mut self, us: u64) {
        self.add_bin(bin_of(us), 1);
    }

    /// Adds `n` to bucket `bin`.
    pub fn add_bin(&mut self, bin: u16, n: u64) {
        if let Some(slot) = self.bins.iter_mut().find(|(b, _)| *b == bin) {
            slot.1 += n;
        } else {
            self.bins.push((bin, n));
        }
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Self) {
        for (bin, n) in &other.bins {
            self.add_bin(*bin, *n);
        }
    }

    /// The non-empty buckets and their counts, in no particular order.
    pub fn bins(&self) -> &[(u16, u64)] {
        &self.bins
    }

    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    pub fn count(&self) -> u64 {
        self.bins.iter().map(|(_, n)| n).sum()
    }
}

/// Merged buckets of any number of histograms, ordered: what percentiles are read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    bins: BTreeMap<u16, u64>,
}

impl Merged {
    pub fn add_bin(&mut self, bin: u16, n: u64) {
        *self.bins.entry(bin.min(MAX_BIN)).or_default() += n;
    }

    pub fn add(&mut self, h: &Histogram) {
        for (bin, n) in h.bins() {
            self.add_bin(*bin, *n);
        }
    }

    pub fn count(&self) -> u64 {
        self.bins.values().sum()
    }

    /// The `q`-quantile (0 < q <= 1) by nearest rank, in µs: the midpoint of the bucket holding
    /// the `ceil(q * count)`-th smallest latency; `None` without any.
    #[must_use]
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bin, n) in &self.bins {
            seen += n;
            if seen >= rank {
                return Some(bin_value(*bin));
            }
        }
        self.bins.keys().next_back().map(|b| bin_value(*b))
    }

    /// The `q`-quantile in milliseconds, rounded to the microsecond.
    #[must_use]
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.quantile_us(q).map(|us| (us.round()) / 1000.0)
    }
}

/// What one request counts for in analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub status: u16,
    pub rate_limited: bool,
    pub upstream_error: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency_us: u64,
}

/// Counts of one bucket of traffic (one (tenant, API, key, client, route) in one period).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: i64,
    pub status_2xx: i64,
    pub status_3xx: i64,
    pub status_4xx: i64,
    pub status_5xx: i64,
    pub rate_limited: i64,
    pub upstream_errors: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub latency_us_sum: i64,
    pub latency: Histogram,
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Stats {
    pub fn count(&mut self, hit: &Hit) {
        self.requests += 1;
        match hit.status {
            200..=299 => self.status_2xx += 1,
            300..=399 => self.status_3xx += 1,
            400..=499 => self.status_4xx += 1,
            500..=599 => self.status_5xx += 1,
            _ => {}
        }
        self.rate_limited += i64::from(hit.rate_limited);
        self.upstream_errors += i64::from(hit.upstream_error);
        self.bytes_in = self.bytes_in.saturating_add(as_i64(hit.bytes_in));
        self.bytes_out = self.bytes_out.saturating_add(as_i64(hit.bytes_out));
        self.latency_us_sum = self.latency_us_sum.saturating_add(as_i64(hit.latency_us));
        self.latency.record(hit.latency_us);
    }

    /// Adds another bucket's counts (the latency histogram included).
    pub fn merge(&mut self, o: &Self) {
        self.add_counts(o);
        self.latency.merge(&o.latency);
    }

    /// Adds another bucket's counts, but not its latency histogram.
    pub fn add_counts(&mut self, o: &Self) {
        self.requests += o.requests;
        self.status_2xx += o.status_2xx;
        self.status_3xx += o.status_3xx;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.rate_limited += o.rate_limited;
        self.upstream_errors += o.upstream_errors;
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        self.latency_us_sum = self.latency_us_sum.saturating_add(o.latency_us_sum);
    }
}

/// Who a bucket of traffic is: 0 where a part is unknown or absent (no key presented, no client,
/// an API without routes, a path naming no API of the tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dims {
    pub tenant_id: i64,
    pub api_id: i64,
    pub key_id: i64,
    pub client_id: i64,
    pub route_id: i64,
}

/// The periods every bucket is kept at, in seconds: minute, hour, day (UTC).
pub const RESOLUTIONS: [i64; 3] = [60, 3600, 86_400];

/// How long rows of each resolution are kept, in days.
pub const fn retention_days(resolution: i64) -> i64 {
    match resolution {
        60 => 7,
        3600 => 92,
        _ => 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_narrow() {
        let mut prev_hi = 0;
        for bin in 0..=MAX_BIN {
            let (lo, hi) = bin_bounds(bin);
            assert_eq!(lo, prev_hi, "bucket {bin} starts where the last ended");
            assert!(hi > lo);
            if lo >= SUB {
                assert!(
                    (hi - lo) * 16 <= lo,
                    "bucket {bin} is at most 1/16 of its start wide"
                );
            }
            assert_eq!(bin_of(lo), bin);
            assert_eq!(bin_of(hi - 1), bin);
            prev_hi = hi;
        }
        assert_eq!(bin_of(u64::MAX), MAX_BIN);
    }

    #[test]
    fn a_reported_value_is_within_a_thirty_second_of_the_latency() {
        for us in (0..100_000u64).chain((1..40).map(|e| (1u64 << e) + 12_345)) {
            let v = bin_value(bin_of(us));
            #[allow(clippy::cast_precision_loss)]
            let exact = us as f64;
            if us < (1 << MAX_EXP) {
                assert!(
                    (v - exact).abs() <= (exact / 32.0).max(0.5),
                    "{us} us reported as {v}"
                );
            }
        }
    }

    #[test]
    fn quantiles_of_merged_histograms_are_nearest_rank_within_the_bound() {
        // 1..=1000 ms in three histograms: p50 500 ms, p95 950 ms, p99 990 ms.
        let mut parts = [
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        ];
        for ms in 1..=1000u64 {
            #[allow(clippy::cast_possible_truncation)]
            parts[(ms % 3) as usize].record(ms * 1000);
        }
        let mut m = Merged::default();
        for p in &parts {
            m.add(p);
        }
        assert_eq!(m.count(), 1000);
        for (q, exact) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = m.quantile_ms(q).unwrap();
            assert!(
                (got - exact).abs() <= exact / 32.0,
                "p{q}: {got} ms for {exact} ms"
            );
        }
        assert_eq!(Merged::default().quantile_ms(0.5), None);
    }

    #[test]
    fn stats_count_status_classes_and_flags() {
        let mut s = Stats::default();
        for (status, rl, ue) in [(200, false, false), (429, true, false), (502, false, true)] {
            s.count(&Hit {
                status,
                rate_limited: rl,
                upstream_error: ue,
                bytes_in: 10,
                bytes_out: 100,
                latency_us: 1500,
            });
        }
        assert_eq!(
            (s.requests, s.status_2xx, s.status_4xx, s.status_5xx),
            (3, 1, 1, 1)
        );
        assert_eq!((s.rate_limited, s.upstream_errors), (1, 1));
        assert_eq!((s.bytes_in, s.bytes_out, s.latency_us_sum), (30, 300, 4500));
        assert_eq!(s.latency.count(), 3);
    }
}
