//! The request log, off the request's path: the finish phase pushes each request's record into
//! its worker thread's bounded buffer (one short lock no other worker takes), and a writer task
//! moves the buffers into the database about every second (and at a graceful stop), a few hundred
//! records per `INSERT`. When the database is slow or stalled the buffers fill; the oldest records
//! are then dropped and counted (`gateway_request_log_dropped_total`): a request never waits for
//! its record. The writer also prunes records past their retention.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use domain::request_log::Record;
use domain::sea_orm::DatabaseConnection;
use domain::store::request_log::{self as store, RequestLogWriter};

use crate::lock;
use crate::usage::{SHARDS, thread_shard};

/// How often the writer prunes records past their retention.
const PRUNE_EVERY_MS: i64 = 10 * 60 * 1000;
/// Longest a write may take before it is given up (and its records kept for the next one).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One worker thread's records, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<VecDeque<Record>>);

/// What the writer has done so far, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogCounts {
    pub written: u64,
    pub dropped: u64,
    pub write_errors: u64,
}

pub struct RequestLog {
    enabled: bool,
    shards: Vec<Shard>,
    /// Most records a worker's buffer holds.
    capacity: usize,
    /// Most records held in all (what the writer keeps after a failed write included).
    total: usize,
    /// Records taken from the buffers and not written yet (a write that failed is tried again).
    backlog: Mutex<Vec<Record>>,
    writer: RequestLogWriter,
    db: DatabaseConnection,
    retention_ms: i64,
    /// The records of the flush under way (one at a time), in a buffer kept from one flush to
    /// the next: moving a second of records into fresh memory every second cost more than
    /// writing them (page faults, regrowing), and so did the workers' buffers starting empty.
    batch: tokio::sync::Mutex<Vec<Record>>,
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    last_prune_ms: AtomicI64,
}

impl RequestLog {
    /// `capacity`: records one worker's buffer holds; `total`: records held in all.
    pub fn new(
        db: DatabaseConnection,
        enabled: bool,
        capacity: usize,
        total: usize,
        retention_days: u32,
    ) -> Self {
        Self {
            enabled,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            capacity: capacity.max(1),
            total: total.max(1),
            backlog: Mutex::new(Vec::new()),
            writer: RequestLogWriter::default(),
            db,
            retention_ms: i64::from(retention_days) * 86_400_000,
            batch: tokio::sync::Mutex::new(Vec::new()),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            last_prune_ms: AtomicI64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Keeps a record for the writer (hot path: this thread's buffer; when it is full its oldest
    /// record makes room and is counted as dropped).
    pub fn push(&self, record: Record) {
        let mut shard = lock(&self.shards[thread_shard()].0);
        if shard.len() >= self.capacity {
            shard.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        shard.push_back(record);
    }

    pub fn counts(&self) -> LogCounts {
        LogCounts {
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Moves what failed to be written before, then every buffered record, into `out` (dropping
    /// the oldest beyond the capacity). The workers' buffers keep their room.
    fn gather(&self, out: &mut Vec<Record>) {
        out.append(&mut lock(&self.backlog));
        for shard in &self.shards {
            out.extend(lock(&shard.0).drain(..));
        }
        if out.len() > self.total {
            let over = out.len() - self.total;
            out.drain(..over);
            self.dropped.fetch_add(over as u64, Ordering::Relaxed);
        }
    }

    /// Writes what was recorded so far; what could not be written stays for the next flush.
    /// Returns whether everything was written.
    pub async fn flush(&self, now_ms: i64) -> bool {
        let mut records = self.batch.lock().await;
        records.clear();
        self.gather(&mut records);
        // Records past the retention (kept long by a database that was down) would only be
        // pruned: they go now, counted as dropped.
        let before = records.len();
        records.retain(|r| r.ts_ms >= now_ms - self.retention_ms);
        self.dropped
            .fetch_add((before - records.len()) as u64, Ordering::Relaxed);
        if records.is_empty() {
            self.prune(now_ms).await;
            return true;
        }
        let written =
            tokio::time::timeout(WRITE_TIMEOUT, self.writer.insert(&self.db, &records)).await;
        match written {
            Ok(Ok(())) => {
                self.written
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                records.clear();
                self.prune(now_ms).await;
                true
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {WRITE_TIMEOUT:?}"),
                };
                tracing::warn!(error = %why, records = records.len(), "request log write failed; will retry");
                self.write_errors.fetch_add(1, Ordering::Relaxed);
                // Kept for the next flush, in front of anything buffered since (oldest first).
                let mut backlog = lock(&self.backlog);
                let newer = std::mem::take(&mut *backlog);
                *backlog = std::mem::take(&mut *records);
                backlog.extend(newer);
                false
            }
        }
    }

    /// Deletes records past the retention, at most every few minutes.
    async fn prune(&self, now_ms: i64) {
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now_ms - last < PRUNE_EVERY_MS
            || self
                .last_prune_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match store::prune(&self.db, now_ms - self.retention_ms).await {
            Ok(n) if n > 0 => tracing::info!(pruned = n, "request log pruned"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not prune the request log"),
        }
    }

    /// Prunes now, whatever the last prune (for tests and the admin).
    pub async fn prune_now(&self, now_ms: i64) -> Result<u64, domain::store::StoreError> {
        self.last_prune_ms.store(now_ms, Ordering::Relaxed);
        store::prune(&self.db, now_ms - self.retention_ms).await
    }
}
