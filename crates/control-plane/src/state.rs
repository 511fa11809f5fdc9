//! State shared by every handler, passed in through `web::Data<AppState>`.

use std::sync::Arc;

use domain::limits::Limiter;
use domain::sea_orm::DatabaseConnection;
use domain::store::ConfigWriter;
use domain::upstream::UpstreamUrl;
use domain::upstream_policy::UpstreamPolicy;

use crate::config::DashboardSettings;

pub struct AppState {
    pub db: DatabaseConnection,
    /// Every configuration write goes through it: it tells the data planes.
    pub config: ConfigWriter,
    /// The project's own limiter, here throttling logins per account and per address.
    pub limiter: Arc<Limiter>,
    pub settings: DashboardSettings,
    /// The data plane's address as callers reach it (`GATEWAY_PUBLIC_URL`): gateway URLs, curl
    /// examples, and the issuer of the tenant's tokens.
    pub public_url: String,
    /// Short hash of the static assets, appended to their URLs to bust caches.
    pub asset_version: String,
    /// Which upstream addresses APIs may use (checked again by the data plane at connect time).
    pub upstream_policy: UpstreamPolicy,
    /// What each data plane last reported of the targets' state.
    pub health: domain::target_health::HealthReports,
}

impl AppState {
    /// What is wrong with an API's upstream for this tenant, for the `upstream_url` field.
    /// The live state of API `api_id`'s targets (which must be `tenant_id`'s), per target and
    /// data plane, in target order: what each node reported in the last 15 s.
    pub async fn target_health(
        &self,
        tenant_id: i64,
        api_id: i64,
    ) -> Result<Vec<TargetHealth>, domain::store::StoreError> {
        let targets = domain::store::list_targets(&self.db, tenant_id, api_id).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let reports = self.health.read(api_id, now).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the targets' health reports");
            Vec::new()
        });
        let mut out = Vec::new();
        for t in &targets {
            for r in &reports {
                if let Some(seen) = r.targets.iter().find(|s| s.target_id == t.id) {
                    out.push(TargetHealth {
                        node: r.node.clone(),
                        reported_at_ms: r.at_ms,
                        report: seen.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    pub async fn upstream_problem(&self, url: &UpstreamUrl, trusted: bool) -> Option<String> {
        // The data planes' listeners as they registered them.
        if let Ok(listeners) = domain::store::listeners(&self.db).await {
            self.upstream_policy.set_peers(&listeners);
        }
        self.upstream_policy
            .problem(&url.connect_addr(), trusted)
            .await
            .map(|p| format!("Upstream URL is refused: {p}."))
    }
}

/// One target as one data plane reported it.
#[derive(Debug, Clone)]
pub struct TargetHealth {
    pub node: String,
    pub reported_at_ms: i64,
    pub report: domain::target_health::TargetReport,
}
