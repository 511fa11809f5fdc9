//! Where each data plane reports the live state of every API's targets (up, circuit, last check,
//! failures, in flight) every few seconds, for the control plane to show: a hash per API in Redis
//! (`{prefix}:health:{api_id}`, one field per node, the key expiring when no node writes), or the
//! `target_health` table without Redis. A report older than [`STALE_MS`] is not shown: its node
//! stopped reporting.

use crate::redis_pool::Pool;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};

use crate::entities::target_health;

/// A report older than this is left out (its data plane is gone or cannot write).
pub const STALE_MS: i64 = 15_000;
/// How long Redis keeps an API's reports when no node writes them.
const KEY_TTL_MS: i64 = 60_000;

/// One target as one data plane sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetReport {
    pub target_id: i64,
    pub url: String,
    /// Taken by requests: not out by the active check, circuit not open.
    pub up: bool,
    /// `closed`, `open` or `half_open`.
    pub circuit: String,
    /// The last active check's latency, when it answered.
    pub last_check_ms: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub in_flight: u32,
}

/// What one data plane reported of one API's targets, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub at_ms: i64,
    pub targets: Vec<TargetReport>,
}

/// Where reports are written and read.
#[derive(Clone)]
pub struct HealthReports {
    redis: Option<(Pool, String)>,
    db: DatabaseConnection,
}

fn key(prefix: &str, api_id: i64) -> String {
    format!("{prefix}:health:{api_id}")
}

/// Why a report could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("redis: {0}")]
    Redis(String),
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}

#[allow(clippy::needless_pass_by_value)] // used as map_err(redis_err)
fn redis_err(e: impl std::fmt::Display) -> ReportError {
    ReportError::Redis(e.to_string())
}

impl HealthReports {
    pub fn new(redis: Option<(Pool, String)>, db: DatabaseConnection) -> Self {
        Self { redis, db }
    }

    /// Writes this node's reports, one per API.
    pub async fn write(&self, reports: &[(i64, NodeReport)]) -> Result<(), ReportError> {
        if reports.is_empty() {
            return Ok(());
        }
        if let Some((pool, prefix)) = &self.redis {
            let conn = pool.get().await.map_err(redis_err)?;
            // A pipeline per API: on a cluster, their keys live in different slots (the pipelines
            // share the multiplexed connection, so a single server gets them back to back).
            let writes = reports.iter().map(|(api_id, r)| {
                let k = key(prefix, *api_id);
                let mut pipe = redis::pipe();
                pipe.hset(&k, &r.node, serde_json::to_string(r).unwrap_or_default())
                    .ignore();
                pipe.pexpire(&k, KEY_TTL_MS).ignore();
                let mut conn = conn.clone();
                async move { pipe.query_async::<()>(&mut conn).await }
            });
            for r in futures_util::future::join_all(writes).await {
                r.map_err(redis_err)?;
            }
            return Ok(());
        }
        let rows = reports
            .iter()
            .map(|(api_id, r)| target_health::ActiveModel {
                api_id: Set(*api_id),
                node: Set(r.node.clone()),
                report: Set(serde_json::to_string(r).unwrap_or_default()),
                updated_at_ms: Set(r.at_ms),
                ..Default::default()
            });
        target_health::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([target_health::Column::ApiId, target_health::Column::Node])
                    .update_columns([
                        target_health::Column::Report,
                        target_health::Column::UpdatedAtMs,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Every node's fresh report of API `api_id` at `now_ms`, by node name.
    pub async fn read(&self, api_id: i64, now_ms: i64) -> Result<Vec<NodeReport>, ReportError> {
        let raw: Vec<String> = if let Some((pool, prefix)) = &self.redis {
            let mut conn = pool.get().await.map_err(redis_err)?;
            let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(key(prefix, api_id))
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            all.into_values().collect()
        } else {
            target_health::Entity::find()
                .filter(target_health::Column::ApiId.eq(api_id))
                .filter(target_health::Column::UpdatedAtMs.gt(now_ms - STALE_MS))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|r| r.report)
                .collect()
        };
        let mut reports: Vec<NodeReport> = raw
            .iter()
            .filter_map(|r| serde_json::from_str::<NodeReport>(r).ok())
            .filter(|r| r.at_ms > now_ms - STALE_MS)
            .collect();
        reports.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(reports)
    }
}
