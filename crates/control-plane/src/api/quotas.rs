//! Where a tenant's day and month quota windows begin and end: its time zone.

use actix_web::{HttpResponse, get, put, web};
use chrono::{DateTime, Utc};
use domain::calendar::{self, Kind};
use domain::entities::tenant;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::ApiCaller;
use super::errors::{ApiError, ApiJson};
use crate::state::AppState;

/// The tenant's quota calendar.
#[derive(Serialize, ToSchema)]
pub struct QuotaSettingsOut {
    /// The IANA zone day and month windows are in: they reset at local midnight and on the first
    /// of the month, daylight saving included.
    pub time_zone: String,
    /// After a change: the zone before it, and where the first day and month windows of the new
    /// zone start (the windows running at the change end as they would have in the zone before).
    pub previous_time_zone: Option<String>,
    pub changed_at: Option<DateTime<Utc>>,
    pub day_windows_from: Option<DateTime<Utc>>,
    pub month_windows_from: Option<DateTime<Utc>>,
}

impl From<&tenant::Model> for QuotaSettingsOut {
    fn from(t: &tenant::Model) -> Self {
        let cal = t.calendar();
        let from = |kind| {
            cal.new_zone_from_us(kind)
                .and_then(DateTime::from_timestamp_micros)
        };
        Self {
            time_zone: cal.zone.name().to_owned(),
            previous_time_zone: cal.before.map(|(z, _)| z.name().to_owned()),
            changed_at: cal.before.and(t.time_zone_changed_at),
            day_windows_from: from(Kind::Day),
            month_windows_from: from(Kind::Month),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettingsIn {
    /// An IANA zone name: `Europe/Berlin`, `America/New_York`, `UTC`.
    pub time_zone: String,
}

/// The tenant's quota calendar.
#[utoipa::path(tag = "plans", security(("bearer" = [])),
    responses((status = 200, body = QuotaSettingsOut), (status = 401)))]
#[get("/quota-settings")]
pub async fn quota_settings(c: ApiCaller) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(QuotaSettingsOut::from(&c.tenant)))
}

/// Sets the time zone of the tenant's day and month windows. It takes effect from the next
/// window of each kind: the running day and month end as they would have in the zone before, so
/// no count is granted again or lost. A second change before the first has taken effect for the
/// month is refused (409, saying from when).
#[utoipa::path(tag = "plans", security(("bearer" = [])), request_body = QuotaSettingsIn,
    responses((status = 200, body = QuotaSettingsOut), (status = 401), (status = 409), (status = 422)))]
#[put("/quota-settings")]
pub async fn set_quota_settings(
    c: ApiCaller,
    state: web::Data<AppState>,
    body: ApiJson<QuotaSettingsIn>,
) -> Result<HttpResponse, ApiError> {
    let zone = calendar::parse_zone(&body.into_inner().time_zone)
        .map_err(|m| ApiError::invalid("time_zone", format!("time_zone {m}")))?;
    let t = state.config.set_time_zone(c.tenant.id, zone).await?;
    Ok(HttpResponse::Ok().json(QuotaSettingsOut::from(&t)))
}
