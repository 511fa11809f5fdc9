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
