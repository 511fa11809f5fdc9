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
    /// Short hash of the static assets, appended to their URLs to bust caches.
    pub asset_version: String,
    /// Which upstream addresses APIs may use (checked again by the data plane at connect time).
    pub upstream_policy: UpstreamPolicy,
}

impl AppState {
    /// What is wrong with an API's upstream for this tenant, for the `upstream_url` field.
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
