//! The Redis counter store: one Lua script (EVALSHA) per request on pooled connections.

use deadpool_redis::{Config, Pool, Runtime};
use redis::Script;

use super::{Decision, Params, State, Subject, grant};

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
        self.grant(subject, p, 1, 0).await.map(|(_, d)| d)
    }

    /// Grants up to `want` requests at once (a fast-mode lease), see [`grant`].
    pub async fn grant(
        &self,
        subject: Subject,
        p: &Params,
        want: u64,
        share_div: u64,
    ) -> Result<(u64, Decision), RedisStoreError> {
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
            .arg(want)
            .arg(share_div)
            .invoke_async(&mut conn)
            .await?;
        let (granted_by_redis, tat, dp, dc, mp, mc) = reply;
        let before = State {
            tat_us: tat,
            day_id: dp,
            day_count: u64::try_from(dc).unwrap_or(0),
            month_id: mp,
            month_count: u64::try_from(mc).unwrap_or(0),
        };
        let (granted, decision, _) = grant(p, &before, want, share_div);
        let by_redis = u64::try_from(granted_by_redis).unwrap_or(0);
        if granted != by_redis {
            tracing::error!(
                ?before,
                ?p,
                granted,
                by_redis,
                "limits.lua and grant() disagree; trusting Redis"
            );
            return Ok((
                by_redis,
                Decision {
                    allowed: by_redis > 0,
                    ..decision
                },
            ));
        }
        Ok((granted, decision))
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
