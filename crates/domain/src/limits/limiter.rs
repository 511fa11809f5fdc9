//! Chooses the store per request: Redis while it answers in time, the in-process store while it
//! does not (or 503 when configured fail-closed), and back to Redis by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::local::LocalStore;
use super::redis::RedisStore;
use super::{Decision, Params, Subject};
use crate::clock::SharedClock;
use crate::plan::PlanLimits;

pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(20);
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
pub struct LimiterSettings {
    /// A Redis answer slower than this counts as Redis being down.
    pub redis_timeout: Duration,
    /// While Redis is down: refuse requests (503) instead of limiting in process.
    pub fail_closed: bool,
    /// How often a down Redis is probed.
    pub probe_interval: Duration,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        Self {
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            fail_closed: false,
            probe_interval: DEFAULT_PROBE_INTERVAL,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Redis,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimiterError {
    #[error("the rate-limit store is unavailable")]
    Unavailable,
}

pub struct Limiter {
    local: LocalStore,
    redis: Option<RedisStore>,
    redis_up: AtomicBool,
    settings: LimiterSettings,
    clock: SharedClock,
    fallbacks: AtomicU64,
}

impl Limiter {
    pub fn new(
        redis: Option<RedisStore>,
        settings: LimiterSettings,
        clock: SharedClock,
    ) -> Arc<Self> {
        if redis.is_none() {
            tracing::warn!(
                "no Redis configured: rate limits and quotas are counted in this process only; \
                 run several data planes only with GATEWAY_REDIS_URL set"
            );
        }
        Arc::new(Self {
            local: LocalStore::default(),
            redis_up: AtomicBool::new(redis.is_some()),
            redis,
            settings,
            clock,
            fallbacks: AtomicU64::new(0),
        })
    }

    pub fn redis_configured(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether Redis is currently used (false when not configured).
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// Requests decided in process because Redis was configured but down.
    pub fn fallback_count(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Checks and consumes one request of `subject` under `limits`.
    pub async fn check(
        &self,
        subject: Subject,
        limits: &PlanLimits,
    ) -> Result<(Decision, StoreKind), LimiterError> {
        let params = Params::new(limits, self.clock.now_ms());
        if let Some(redis) = &self.redis {
            if self.redis_up() {
                match tokio::time::timeout(
                    self.settings.redis_timeout,
                    redis.check(subject, &params),
                )
                .await
                {
                    Ok(Ok(decision)) => return Ok((decision, StoreKind::Redis)),
                    Ok(Err(e)) => self.mark_down(&e.to_string()),
                    Err(_) => self.mark_down("timed out"),
                }
            }
            if self.settings.fail_closed {
                return Err(LimiterError::Unavailable);
            }
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        Ok((self.local.check(subject, &params), StoreKind::Local))
    }

    fn mark_down(&self, why: &str) {
        if self.redis_up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                reason = why,
                fail_closed = self.settings.fail_closed,
                "Redis unavailable: limiting in process until it answers again"
            );
        }
    }

    /// Probes a down Redis until it answers, then switches back to it. Runs until `stop` fires.
    pub async fn probe_until(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(self.settings.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if self.redis_up() {
                continue;
            }
            // A generous timeout for the probe: a slow first connection is still a live Redis.
            let probe = tokio::time::timeout(self.settings.redis_timeout * 10, redis.ping()).await;
            if matches!(probe, Ok(Ok(()))) && !self.redis_up.swap(true, Ordering::Relaxed) {
                tracing::info!("Redis answers again: limits are shared across data planes again");
            }
        }
    }
}
