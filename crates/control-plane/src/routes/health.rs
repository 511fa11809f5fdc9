use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;

/// Liveness and database reachability.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    match state.db.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ok", "database": "up"})),
        Err(e) => {
            tracing::warn!(error = %e, "database ping failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "degraded", "database": "down"}))
        }
    }
}
