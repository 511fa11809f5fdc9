//! Keeps the snapshot current: reloads on every config-change event (Redis pub/sub) and when the
//! polled config version moves (the path without Redis, and a safety net with it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use domain::snapshot::Snapshot;
use tokio::sync::{Notify, watch};

use crate::proxy::Gateway;

const RESUBSCRIBE_BACKOFF: Duration = Duration::from_millis(500);

/// Loads the snapshot now and installs it.
pub async fn reload(gw: &Gateway) -> Result<(), domain::sea_orm::DbErr> {
    let started = std::time::Instant::now();
    let snap = Snapshot::load(&gw.db).await?;
    gw.metrics.snapshot_version.set(snap.version);
    gw.metrics
        .snapshot_keys
        .set(i64::try_from(snap.key_count()).unwrap_or(i64::MAX));
    gw.metrics.snapshot_reloads.inc();
    tracing::debug!(version = snap.version, keys = snap.key_count(), took = ?started.elapsed(), "snapshot loaded");
    gw.snapshot.store(Arc::new(snap));
    gw.loaded.store(true, Ordering::Relaxed);
    Ok(())
}

/// Runs until `stop` fires.
pub async fn run(
    gw: Arc<Gateway>,
    redis: Option<(String, String)>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let notify = Arc::new(Notify::new());
    if let Some((url, prefix)) = redis {
        let notify = notify.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let n = notify.clone();
                tokio::select! {
                    res = domain::events::listen(&url, &prefix, move || n.notify_one()) => {
                        if let Err(e) = res {
                            tracing::warn!(error = %e, "config-change subscription lost; reconnecting");
                        }
                    }
                    _ = stop.changed() => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(RESUBSCRIBE_BACKOFF) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
    let mut tick = tokio::time::interval(poll.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            () = notify.notified() => true,
            _ = tick.tick() => false,
            _ = stop.changed() => return,
        };
        if !event {
            let current = gw.snapshot.load().version;
            match domain::store::config_version(&gw.db).await {
                Ok(v) if v == current => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the config version");
                    continue;
                }
            }
        }
        if let Err(e) = reload(&gw).await {
            tracing::warn!(error = %e, "snapshot reload failed; serving the previous one");
        }
    }
}
