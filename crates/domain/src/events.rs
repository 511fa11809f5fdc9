//! Config-change events: the control plane publishes after every write, data planes reload.

use crate::redis_pool::{Endpoint, Pool};
use futures_util::StreamExt;

/// The pub/sub channel of config changes.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}:config")
}

/// What a config-change event says: reload everything, or only these keys changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Anything may have changed: reload the snapshot.
    Any,
    /// Only these API keys changed (created, revoked, rotated, edited): data planes apply them at
    /// once without reloading every key.
    Keys(Vec<i64>),
}

impl Change {
    /// The pub/sub message: `<version>` or `<version> keys <id>,<id>`.
    pub fn message(&self, version: i64) -> String {
        match self {
            Self::Any => version.to_string(),
            Self::Keys(ids) => {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                format!("{version} keys {}", ids.join(","))
            }
        }
    }

    /// Reads a message; anything unexpected means "reload everything".
    pub fn parse(message: &str) -> Self {
        let mut parts = message.split(' ');
        let _version = parts.next();
        match (parts.next(), parts.next()) {
            (Some("keys"), Some(ids)) => {
                let ids: Result<Vec<i64>, _> = ids.split(',').map(str::parse).collect();
                ids.map_or(Self::Any, Self::Keys)
            }
            _ => Self::Any,
        }
    }
}

/// Tells every data plane that configuration changed (the message is the new config version).
pub async fn publish(pool: &Pool, prefix: &str, version: i64) -> Result<(), redis::RedisError> {
    publish_change(pool, prefix, version, &Change::Any).await
}

/// Publishes a change event.
pub async fn publish_change(
    pool: &Pool,
    prefix: &str,
    version: i64,
    change: &Change,
) -> Result<(), redis::RedisError> {
    let mut conn = pool.get().await?;
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel(prefix))
        .arg(change.message(version))
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// Subscribes to config changes and calls `on_change` for each; returns when the connection ends
/// (the caller reconnects). On a Redis Cluster this is classic pub/sub on one node (the first
/// that answers): the cluster bus carries a message published on any node to every node, and the
/// messages are a few bytes per config change, so sharded pub/sub's saving is not worth following
/// a channel's slot from node to node.
pub async fn listen(
    endpoint: &Endpoint,
    prefix: &str,
    mut on_change: impl FnMut(Change),
) -> Result<(), redis::RedisError> {
    let mut pubsub = endpoint.pubsub().await?;
    pubsub.subscribe(channel(prefix)).await?;
    // A change may have happened while (re)connecting.
    on_change(Change::Any);
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let payload: String = msg.get_payload().unwrap_or_default();
        on_change(Change::parse(&payload));
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
        self.changed(db, &Change::Any).await;
    }

    /// Announces that only these keys changed (data planes apply them without a full reload).
    pub async fn keys_changed(&self, db: &impl sea_orm::ConnectionTrait, key_ids: &[i64]) {
        self.changed(db, &Change::Keys(key_ids.to_vec())).await;
    }

    /// Announces `change` at the current config version.
    pub async fn changed(&self, db: &impl sea_orm::ConnectionTrait, change: &Change) {
        let Some(pool) = &self.pool else { return };
        let version = crate::store::config_version(db).await.unwrap_or_default();
        if let Err(e) = publish_change(pool, &self.prefix, version, change).await {
            tracing::warn!(error = %e, "could not publish the config-change event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Change;

    #[test]
    fn messages_round_trip_and_unknown_ones_mean_reload() {
        assert_eq!(Change::parse(&Change::Any.message(7)), Change::Any);
        assert_eq!(
            Change::parse(&Change::Keys(vec![3, 42]).message(8)),
            Change::Keys(vec![3, 42])
        );
        assert_eq!(Change::Keys(vec![1]).message(9), "9 keys 1");
        assert_eq!(Change::parse("9 keys x"), Change::Any);
        assert_eq!(Change::parse(""), Change::Any);
    }
}
