use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;

/// Liveness and database reachability.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(1), state.db.ping()).await;
    match ping.unwrap_or_else(|_| {
        Err(domain::sea_orm::DbErr::Custom(
            "no answer within 1 s".into(),
        ))
    }) {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ok", "database": "up"})),
        Err(e) => {
            tracing::warn!(error = %e, "database ping failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "degraded", "database": "down"}))
        }
    }
}
