//! Usage totals and series of the caller's tenant.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Duration, Utc};
use domain::store::{self, UsageFilter};
use domain::usage::Counts;

use super::auth::ApiCaller;
use super::errors::ApiError;
use super::models::{UsageOut, UsagePoint, UsageQuery, UsageTotals};
use crate::state::AppState;

/// Longest range of one query: 400 days of days, or the two days minutes are kept.
const MAX_DAYS: i64 = 400;
const MAX_MINUTES: i64 = store::MINUTE_RETENTION_MINUTES;

fn point(start: DateTime<Utc>, c: Counts) -> UsagePoint {
    UsagePoint {
        start,
        requests: c.requests,
        rejected: c.rejected,
        upstream_errors: c.upstream_errors,
    }
}

/// Usage between `from` and `to`, per minute or per day, optionally for one API, key or client.
#[utoipa::path(tag = "usage", security(("bearer" = [])), params(UsageQuery),
    responses((status = 200, body = UsageOut), (status = 401), (status = 422)))]
#[get("/usage")]
pub async fn usage(
    caller: ApiCaller,
    state: web::Data<AppState>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let f = UsageFilter {
        api_id: q.api_id,
        key_id: q.key_id,
        client_id: q.client_id,
    };
    let minute = match q.granularity.as_deref() {
        None | Some("day") => false,
        Some("minute") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "granularity",
                "granularity must be 'minute' or 'day'",
            ));
        }
    };
    let to = q.to.unwrap_or_else(Utc::now);
    let from = q.from.unwrap_or(
        to - if minute {
            Duration::hours(24)
        } else {
            Duration::days(30)
        },
    );
    if from > to {
        return Err(ApiError::invalid("from", "from must not be after to"));
    }
    let series: Vec<UsagePoint> = if minute {
        let (a, b) = (
            from.timestamp().div_euclid(60),
            to.timestamp().div_euclid(60),
        );
        if b - a > MAX_MINUTES {
            return Err(ApiError::invalid(
                "from",
                "minute usage is kept for two days: ask for at most 2880 minutes",
            ));
        }
        store::minutes(&state.db, caller.tenant.id, a, b, f)
            .await?
            .into_iter()
            .filter_map(|(m, counts)| DateTime::from_timestamp(m * 60, 0).map(|t| point(t, counts)))
            .collect()
    } else {
        let (a, b) = (from.date_naive(), to.date_naive());
        if (b - a).num_days() > MAX_DAYS {
            return Err(ApiError::invalid(
                "from",
                format!("ask for at most {MAX_DAYS} days at once"),
            ));
        }
        store::daily(&state.db, caller.tenant.id, a, b, f)
            .await?
            .into_iter()
            .filter_map(|(d, counts)| d.and_hms_opt(0, 0, 0).map(|t| point(t.and_utc(), counts)))
            .collect()
    };
    let mut totals = UsageTotals::default();
    for p in &series {
        totals.requests += p.requests;
        totals.rejected += p.rejected;
        totals.upstream_errors += p.upstream_errors;
    }
    Ok(HttpResponse::Ok().json(UsageOut { totals, series }))
}
