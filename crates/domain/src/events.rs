//! Config-change events: the control plane publishes after every write, data planes reload.

use deadpool_redis::Pool;
use futures_util::StreamExt;

/// The pub/sub channel of config changes.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}:config")
}

/// Tells every data plane that configuration changed (the message is the new config version).
pub async fn publish(pool: &Pool, prefix: &str, version: i64) -> Result<(), redis::RedisError> {
    let mut conn = pool.get().await.map_err(|e| {
        redis::RedisError::from((redis::ErrorKind::Io, "redis pool", e.to_string()))
    })?;
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel(prefix))
        .arg(version)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// Subscribes to config changes and calls `on_change` for each; returns when the connection ends
/// (the caller reconnects).
pub async fn listen(
    url: &str,
    prefix: &str,
    mut on_change: impl FnMut(),
) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel(prefix)).await?;
    // A change may have happened while (re)connecting.
    on_change();
    let mut messages = pubsub.on_message();
    while messages.next().await.is_some() {
        on_change();
    }
    Ok(())
}

/// What writers of configuration hold: publishes the change event when Redis is configured
/// (data planes without it notice the bumped config version by polling).
#[derive(Clone)]
pub struct Publisher {
    pool: Option<Pool>,
    prefix: String,
}

impl Publisher {
    pub fn new(pool: Option<Pool>, prefix: impl Into<String>) -> Self {
        Self {
            pool,
            prefix: prefix.into(),
        }
    }

    /// Announces the current config version. A failure is logged, not returned: the write already
    /// happened and polling data planes will still see it.
    pub async fn config_changed(&self, db: &impl sea_orm::ConnectionTrait) {
        let Some(pool) = &self.pool else { return };
        let version = crate::store::config_version(db).await.unwrap_or_default();
        if let Err(e) = publish(pool, &self.prefix, version).await {
            tracing::warn!(error = %e, "could not publish the config-change event");
        }
    }
}
