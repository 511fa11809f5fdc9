//! The Redis counter store: one Lua script (EVALSHA) per request on pooled connections.

use deadpool_redis::{Config, Pool, Runtime};
use redis::Script;

use super::{Decision, Params, State, Subject, decide};

/// Connections kept per data plane.
pub const POOL_SIZE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    #[error("redis pool: {0}")]
    Pool(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Builds a connection pool for `url` (nothing is connected until first use).
pub fn pool(url: &str) -> Result<Pool, RedisStoreError> {
    let mut cfg = Config::from_url(url);
    cfg.pool = Some(deadpool_redis::PoolConfig::new(POOL_SIZE));
    cfg.create_pool(Some(Runtime::Tokio1))
        .map_err(|e| RedisStoreError::Pool(e.to_string()))
}

#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    prefix: String,
    script: Script,
}

impl RedisStore {
    pub fn new(pool: Pool, prefix: impl Into<String>) -> Self {
        Self {
            pool,
            prefix: prefix.into(),
            script: Script::new(include_str!("limits.lua")),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Checks and, when admitted, consumes one request of `subject` in every window, atomically.
    pub async fn check(&self, subject: Subject, p: &Params) -> Result<Decision, RedisStoreError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| RedisStoreError::Pool(e.to_string()))?;
        let (dl, day) = p.day.map_or((0, None), |(l, per)| (l, Some(per)));
        let (ml, month) = p.month.map_or((0, None), |(l, per)| (l, Some(per)));
        let reply: (i64, i64, i64, i64, i64, i64) = self
            .script
            .key(subject.redis_key(&self.prefix))
            .arg(p.now_us)
            .arg(p.interval_us)
            .arg(p.burst)
            .arg(dl)
            .arg(day.map_or(0, |d| d.id))
            .arg(day.map_or(0, |d| d.end_us))
            .arg(ml)
            .arg(month.map_or(0, |m| m.id))
            .arg(month.map_or(0, |m| m.end_us))
            .invoke_async(&mut conn)
            .await?;
        let (allowed, tat, dp, dc, mp, mc) = reply;
        let before = State {
            tat_us: tat,
            day_id: dp,
            day_count: u64::try_from(dc).unwrap_or(0),
            month_id: mp,
            month_count: u64::try_from(mc).unwrap_or(0),
        };
        let (decision, _) = decide(p, &before);
        if decision.allowed != (allowed == 1) {
            tracing::error!(
                ?before,
                ?p,
                "limits.lua and decide() disagree; trusting Redis"
            );
            return Ok(Decision {
                allowed: allowed == 1,
                ..decision
            });
        }
        Ok(decision)
    }

    /// A cheap round trip, used to tell whether Redis is back.
    pub async fn ping(&self) -> Result<(), RedisStoreError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| RedisStoreError::Pool(e.to_string()))?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}
