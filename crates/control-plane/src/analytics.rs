//! What the management API and the dashboard share of analytics and the request log: reading a
//! range and a granularity (checked against what is kept), and the names that go with ids.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use domain::analytics::retention_days;
use domain::entities::{api, api_key};
use domain::sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use domain::store::StoreResult;
use domain::store::analytics::MAX_POINTS;

/// A range of analytics: `[from, to)` on the boundaries of periods of `resolution` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub resolution: i64,
}

impl Range {
    pub fn seconds(&self) -> i64 {
        (self.to - self.from).num_seconds().max(1)
    }

    /// `minute`, `hour` or `day`.
    pub fn granularity(&self) -> &'static str {
        match self.resolution {
            60 => "minute",
            3600 => "hour",
            _ => "day",
        }
    }
}

/// What is wrong with a range: the field and a sentence.
pub type RangeError = (&'static str, String);

fn resolution_of(granularity: &str) -> Option<i64> {
    match granularity {
        "minute" => Some(60),
        "hour" => Some(3600),
        "day" => Some(86_400),
        _ => None,
    }
}

/// The finest granularity that shows `span` in at most [`MAX_POINTS`] periods and still has
/// data for `from`.
fn auto_resolution(span: Duration, from: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    for res in [60, 3600, 86_400] {
        let kept_from = now - Duration::days(retention_days(res));
        if span.num_seconds() / res <= MAX_POINTS && from >= kept_from {
            return res;
        }
    }
    86_400
}

/// The range a query asks for: `to` defaults to now, `from` to 24 hours before `to`; the
/// granularity, when not given, is the finest that fits. Both ends are widened to whole periods.
pub fn range(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    granularity: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Range, RangeError> {
    let to = to.unwrap_or(now);
    let out_of_range = |field| {
        (
            field,
            "must be a time between the years 1970 and 9999".into(),
        )
    };
    let bounds = DateTime::UNIX_EPOCH..=DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(now);
    if !bounds.contains(&to) {
        return Err(out_of_range("to"));
    }
    let from = from.unwrap_or(to - Duration::hours(24));
    if !bounds.contains(&from) {
        return Err(out_of_range("from"));
    }
    if from >= to {
        return Err(("from", "from must be before to".into()));
    }
    let span = to - from;
    let resolution = match granularity.map(str::trim).filter(|g| !g.is_empty()) {
        None => auto_resolution(span, from, now),
        Some(g) => resolution_of(g).ok_or_else(|| {
            (
                "granularity",
                format!("granularity must be minute, hour or day, not {g:?}"),
            )
        })?,
    };
    let points = span.num_seconds().div_euclid(resolution) + 1;
    if points > MAX_POINTS {
        return Err((
            "granularity",
            format!(
                "{points} {}s is too many for one query (at most {MAX_POINTS}): ask for a coarser granularity or a shorter range",
                Range {
                    from,
                    to,
                    resolution
                }
                .granularity()
            ),
        ));
    }
    let kept = retention_days(resolution);
    if from < now - Duration::days(kept) {
        return Err((
            "from",
            format!(
                "per-{} analytics are kept for {kept} days: ask for a later from or a coarser granularity",
                Range {
                    from,
                    to,
                    resolution
                }
                .granularity()
            ),
        ));
    }
    let floor = |t: DateTime<Utc>| {
        DateTime::from_timestamp(t.timestamp().div_euclid(resolution) * resolution, 0).unwrap_or(t)
    };
    let to_floor = floor(to);
    let to = if to_floor == to {
        to
    } else {
        to_floor + Duration::seconds(resolution)
    };
    Ok(Range {
        from: floor(from),
        to,
        resolution,
    })
}

/// Names of a tenant's APIs (all tenants' with `None`), by id.
pub async fn api_names(
    db: &impl ConnectionTrait,
    tenant_id: Option<i64>,
) -> StoreResult<HashMap<i64, String>> {
    let mut q = api::Entity::find();
    if let Some(t) = tenant_id {
        q = q.filter(api::Column::TenantId.eq(t));
    }
    Ok(q.all(db)
        .await?
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect())
}

/// Names and prefixes of a tenant's keys (all tenants' with `None`), by id.
pub async fn key_names(
    db: &impl ConnectionTrait,
    tenant_id: Option<i64>,
) -> StoreResult<HashMap<i64, (String, String)>> {
    let mut q = api_key::Entity::find();
    if let Some(t) = tenant_id {
        q = q.filter(api_key::Column::TenantId.eq(t));
    }
    Ok(q.all(db)
        .await?
        .into_iter()
        .map(|k| (k.id, (k.name, k.prefix)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_default_widen_and_refuse_what_is_not_kept() {
        let now = at("2026-12-07T10:30:20Z");
        let r = range(None, None, None, now).unwrap();
        assert_eq!(r.resolution, 60, "a day of minutes");
        assert_eq!(r.from, at("2026-12-06T10:30:00Z"));
        assert_eq!(r.to, at("2026-12-07T10:31:00Z"));
        let week = range(Some(now - Duration::days(7)), None, None, now).unwrap();
        assert_eq!(week.resolution, 3600);
        let year = range(Some(now - Duration::days(300)), None, None, now).unwrap();
        assert_eq!(year.resolution, 86_400);
        assert_eq!(
            range(Some(now - Duration::days(30)), None, Some("minute"), now)
                .unwrap_err()
                .0,
            "granularity"
        );
        assert_eq!(
            range(
                Some(now - Duration::days(8)),
                Some(now - Duration::days(7)),
                Some("minute"),
                now
            )
            .unwrap_err()
            .0,
            "from"
        );
        assert_eq!(
            range(Some(now), Some(now), None, now).unwrap_err().0,
            "from"
        );
        assert_eq!(
            range(None, None, Some("week"), now).unwrap_err().0,
            "granularity"
        );
    }
}
