//! Keeps the snapshot current: reloads on every config-change event (Redis pub/sub) and when the
//! polled config version moves (the path without Redis, and a safety net with it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use domain::snapshot::Snapshot;
use tokio::sync::{Notify, watch};

use domain::events::Change;

use crate::gateway::{Gateway, KeyOverlay};

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
    let version = snap.version;
    // Loads can overlap (an event and the poll, or an explicit reload): one that read an older
    // config version and finished later must not replace a newer snapshot. The version is read
    // before the data, so a snapshot's data is at least as new as its version.
    let fresh = Arc::new(snap);
    let prev = gw.snapshot.rcu(|cur| {
        if cur.version > version {
            Arc::clone(cur)
        } else {
            Arc::clone(&fresh)
        }
    });
    if prev.version > version {
        gw.metrics.snapshot_version.set(prev.version);
        tracing::debug!(
            version,
            current = prev.version,
            "an older snapshot load finished late; kept the newer one"
        );
        return Ok(());
    }
    gw.upstreams.refresh(&fresh);
    // The other planes' listeners: never upstreams.
    if let Ok(listeners) = domain::store::listeners(&gw.db).await {
        gw.policy.set_peers(&listeners);
    }
    // What the new snapshot already has no longer needs the overlay.
    gw.key_overlay.rcu(|o| {
        let mut o = KeyOverlay::clone(o);
        o.retain(|_, (v, _)| *v > version);
        o
    });
    gw.loaded.store(true, Ordering::Relaxed);
    Ok(())
}

/// The first snapshot, if the database's schema is initialised: otherwise (or when the load
/// fails) the data plane stays not ready, and [`run`] tries again at every poll.
pub async fn first_load(gw: &Gateway) -> bool {
    if !domain::db::schema_ready(&gw.db).await {
        tracing::warn!(
            "the database schema is not initialised (or older than this data plane): not ready \
             until the control plane (or `control-plane migrate`) has migrated it"
        );
        return false;
    }
    match reload(gw).await {
        Ok(()) => {
            let bound = *crate::lock(&gw.bound);
            if let Some(addr) = bound
                && let Err(e) = domain::store::register_listener(&gw.db, "data plane", addr).await
            {
                tracing::warn!(error = %e, "could not register this data plane's address");
            }
            let snap = gw.snapshot.load();
            tracing::info!(
                version = snap.version,
                keys = snap.key_count(),
                "snapshot loaded"
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not load the snapshot; not ready, retrying");
            false
        }
    }
}

/// Applies changed keys without reloading the snapshot: what makes a revocation take effect within
/// a second whatever the number of keys.
pub async fn apply_keys(gw: &Gateway, ids: &[i64]) -> Result<(), domain::sea_orm::DbErr> {
    let version = domain::store::config_version(&gw.db).await.unwrap_or(0);
    let entries = domain::snapshot::load_key_entries(&gw.db, ids).await?;
    gw.key_overlay.rcu(|o| {
        let mut o = KeyOverlay::clone(o);
        for (hash, entry) in &entries {
            o.insert(*hash, (version, *entry));
        }
        o
    });
    gw.metrics
        .key_updates
        .inc_by(u64::try_from(entries.len()).unwrap_or(0));
    tracing::debug!(?ids, version, "keys applied from a change event");
    Ok(())
}

/// Runs until `stop` fires.
pub async fn run(
    gw: Arc<Gateway>,
    redis: Option<(domain::redis_pool::Endpoint, String)>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let notify = Arc::new(Notify::new());
    let (keys_tx, mut keys_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<i64>>();
    if let Some((endpoint, prefix)) = redis {
        let notify = notify.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let (n, keys) = (notify.clone(), keys_tx.clone());
                let on_change = move |change: Change| match change {
                    Change::Any => n.notify_one(),
                    Change::Keys(ids) => {
                        let _ = keys.send(ids);
                    }
                };
                tokio::select! {
                    res = domain::events::listen(&endpoint, &prefix, on_change) => {
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
            Some(ids) = keys_rx.recv() => {
                if let Err(e) = apply_keys(&gw, &ids).await {
                    tracing::warn!(error = %e, "could not apply changed keys; the next reload will");
                }
                continue;
            }
            _ = tick.tick() => false,
            _ = stop.changed() => return,
        };
        if !gw.loaded.load(Ordering::Relaxed) {
            // No snapshot yet: the schema was missing or the first load failed.
            if domain::db::schema_ready(&gw.db).await {
                first_load(&gw).await;
            }
            continue;
        }
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
