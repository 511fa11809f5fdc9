//! Where the gateway's planes listen, registered by each at start, so that every plane's upstream
//! address policy refuses them (a plane knows its own listeners; this tells it the others').

use std::net::{IpAddr, SocketAddr};

use chrono::{Duration, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::StoreResult;
use crate::entities::listener;

/// A registration not renewed for this long (a plane moved or gone) no longer counts.
pub const LISTENER_TTL_DAYS: i64 = 30;

/// The addresses a listener bound to `addr` is reached at: `addr` itself, or, bound to every
/// interface, each of this host's addresses (loopback included) with its port.
pub fn reachable_addrs(addr: SocketAddr) -> Vec<SocketAddr> {
    if !addr.ip().is_unspecified() {
        return vec![addr];
    }
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|ifs| ifs.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    ips.push(IpAddr::from([127, 0, 0, 1]));
    ips.sort();
    ips.dedup();
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, addr.port()))
        .collect()
}

/// Records that a plane of `kind` listens on `bound` (renewing earlier registrations).
pub async fn register_listener(
    db: &impl ConnectionTrait,
    kind: &str,
    bound: SocketAddr,
) -> StoreResult<()> {
    let now = Utc::now();
    let rows: Vec<listener::ActiveModel> = reachable_addrs(bound)
        .into_iter()
        .map(|a| listener::ActiveModel {
            kind: Set(kind.to_owned()),
            addr: Set(a.to_string()),
            seen_at: Set(now),
            ..Default::default()
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    listener::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([listener::Column::Kind, listener::Column::Addr])
                .update_column(listener::Column::SeenAt)
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// Every plane's registered listener, with its kind.
pub async fn listeners(db: &impl ConnectionTrait) -> StoreResult<Vec<(String, SocketAddr)>> {
    let live_since = Utc::now() - Duration::days(LISTENER_TTL_DAYS);
    Ok(listener::Entity::find()
        .filter(listener::Column::SeenAt.gt(live_since))
        .all(db)
        .await?
        .into_iter()
        .filter_map(|l| l.addr.parse().ok().map(|a| (l.kind, a)))
        .collect())
}
