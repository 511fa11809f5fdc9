//! Calendar windows (days and months) in a tenant's time zone: a day ends at local midnight and a
//! month on the first, daylight saving included (a 23- or 25-hour day is that long).
//!
//! A change of zone takes effect from the next window of each kind: the day (or month) running
//! when it was made ends where it would have in the zone before, and windows in the new zone
//! follow. The first of them starts where the old one ended, so it can be shorter than a day; when
//! the new zone's date there is the same as (or earlier than) the old window's — a move west —
//! the old window lasts until that date ends in the new zone instead. Either way no window's count
//! is granted again or lost, and no two windows share an id.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// Where a tenant's day and month windows begin and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Calendar {
    pub zone: Tz,
    /// The zone before the last change and when that change was made (µs since the epoch): the
    /// windows running then end as they would have in it.
    pub before: Option<(Tz, i64)>,
}

impl Default for Calendar {
    fn default() -> Self {
        Self::UTC
    }
}

/// One window: its id (`20261122` for a day, `202611` for a month, as dated where it ends) and
/// where it starts and ends (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub id: i64,
    pub start_us: i64,
    pub end_us: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Day,
    Month,
}

/// A zone's IANA name (`Asia/Tokyo`), checked.
pub fn parse_zone(name: &str) -> Result<Tz, &'static str> {
    let name = name.trim();
    if name.is_empty() {
        return Err("must be an IANA time zone name, such as Europe/Berlin or UTC");
    }
    name.parse::<Tz>()
        .map_err(|_| "must be an IANA time zone name, such as Europe/Berlin or UTC")
}

impl Calendar {
    pub const UTC: Self = Self {
        zone: Tz::UTC,
        before: None,
    };

    pub fn new(zone: Tz) -> Self {
        Self { zone, before: None }
    }

    /// In `zone`, with the windows running at `changed_at_us` ending in `before`.
    pub fn changed(zone: Tz, before: Tz, changed_at_us: i64) -> Self {
        Self {
            zone,
            before: (before != zone).then_some((before, changed_at_us)),
        }
    }

    /// The calendar of a tenant's stored columns (a zone this build does not know reads as UTC).
    pub fn of_columns(zone: &str, before: Option<&str>, changed_at: Option<DateTime<Utc>>) -> Self {
        let zone = zone.parse().unwrap_or(Tz::UTC);
        match (before.and_then(|b| b.parse().ok()), changed_at) {
            (Some(before), Some(at)) => Self::changed(zone, before, at.timestamp_micros()),
            _ => Self::new(zone),
        }
    }

    /// Plain UTC, never changed: the windows of every tenant before zones existed.
    pub fn is_utc(&self) -> bool {
        self.zone == Tz::UTC && self.before.is_none()
    }

    pub fn day(&self, now_us: i64) -> Span {
        self.span(Kind::Day, now_us)
    }

    pub fn month(&self, now_us: i64) -> Span {
        self.span(Kind::Month, now_us)
    }

    /// The window of `kind` that `now_us` is in.
    pub fn span(&self, kind: Kind, now_us: i64) -> Span {
        let Some((before, changed_at)) = self.before else {
            return local_span(self.zone, kind, now_us);
        };
        let old = local_span(before, kind, changed_at);
        let end = self.old_end(kind, &old);
        if now_us < end {
            return Span { end_us: end, ..old };
        }
        let span = local_span(self.zone, kind, now_us);
        // The first window in the new zone starts where the old one ended.
        Span {
            start_us: span.start_us.max(end),
            ..span
        }
    }

    /// Where the window of `kind` running at the change (`old`) ends: where it would have in the
    /// zone before, or — while the new zone's window there is dated the same or earlier — where
    /// that one ends (never two windows with one id).
    fn old_end(&self, kind: Kind, old: &Span) -> i64 {
        let mut end = old.end_us;
        for _ in 0..4 {
            let next = local_span(self.zone, kind, end);
            if next.id > old.id {
                break;
            }
            end = next.end_us;
        }
        end
    }

    /// Where the first window of `kind` in the current zone starts after the last change (µs), when
    /// there was one.
    pub fn new_zone_from_us(&self, kind: Kind) -> Option<i64> {
        let (before, changed_at) = self.before?;
        Some(self.old_end(kind, &local_span(before, kind, changed_at)))
    }

    /// When the last change has taken effect for every window (µs; `i64::MIN` when there was
    /// none): before then, another change would leave a window of the zone before unfinished.
    pub fn settled_at_us(&self) -> i64 {
        match self.before {
            None => i64::MIN,
            Some((before, changed_at)) => {
                let old = local_span(before, Kind::Month, changed_at);
                self.old_end(Kind::Month, &old)
            }
        }
    }
}

/// The window of `kind` in `zone` that `at_us` is in.
pub fn local_span(zone: Tz, kind: Kind, at_us: i64) -> Span {
    let at = DateTime::from_timestamp_micros(at_us).unwrap_or_default();
    let date = at.with_timezone(&zone).date_naive();
    let (first, next, id) = match kind {
        Kind::Day => (
            date,
            date.succ_opt().unwrap_or(date),
            i64::from(date.year()) * 10_000 + i64::from(date.month()) * 100 + i64::from(date.day()),
        ),
        Kind::Month => {
            let first = date.with_day(1).unwrap_or(date);
            let (y, m) = if date.month() == 12 {
                (date.year() + 1, 1)
            } else {
                (date.year(), date.month() + 1)
            };
            (
                first,
                NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(date),
                i64::from(date.year()) * 100 + i64::from(date.month()),
            )
        }
    };
    Span {
        id,
        start_us: midnight_us(zone, first),
        end_us: midnight_us(zone, next),
    }
}

/// The first instant of local date `d` in `zone`: midnight, or — where daylight saving skips
/// midnight — the first local time after it that exists.
pub fn midnight_us(zone: Tz, d: NaiveDate) -> i64 {
    let mut t = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..8 {
        if let Some(x) = zone.from_local_datetime(&t).earliest() {
            return x.timestamp_micros();
        }
        t += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
        .timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(zone: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        zone.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .timestamp_micros()
    }

    const HOUR: i64 = 3_600_000_000;

    #[test]
    fn days_end_at_local_midnight_and_dst_days_are_23_or_25_hours() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let cal = Calendar::new(ny);
        // 2026-03-08: clocks go forward at 02:00, a 23-hour day.
        let d = cal.day(us(ny, 2026, 3, 8, 12, 0));
        assert_eq!(d.id, 20_260_308);
        assert_eq!(d.end_us - d.start_us, 23 * HOUR);
        assert_eq!(d.end_us, us(ny, 2026, 3, 9, 0, 0));
        // 2026-11-01: clocks go back at 02:00, a 25-hour day.
        let d = cal.day(us(ny, 2026, 11, 1, 12, 0));
        assert_eq!(d.end_us - d.start_us, 25 * HOUR);
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        let d = Calendar::new(tokyo).day(us(Tz::UTC, 2026, 12, 7, 15, 0));
        assert_eq!(
            (d.id, d.end_us),
            (20_261_208, us(Tz::UTC, 2026, 12, 8, 15, 0))
        );
        let m = Calendar::new(tokyo).month(us(Tz::UTC, 2026, 12, 31, 16, 0));
        assert_eq!(m.id, 202_701, "already January in Tokyo");
    }

    #[test]
    fn a_day_whose_midnight_does_not_exist_starts_at_the_first_local_time_after_it() {
        // Santiago moved clocks forward at 24:00 on 2026-09-05: 2026-09-06 starts at 01:00.
        let santiago: Tz = "America/Santiago".parse().unwrap();
        let start = midnight_us(santiago, NaiveDate::from_ymd_opt(2026, 9, 6).unwrap());
        assert_eq!(start, us(santiago, 2026, 9, 6, 1, 0));
        let day = local_span(santiago, Kind::Day, start + HOUR);
        assert_eq!(day.start_us, start);
        assert_eq!(day.end_us - day.start_us, 23 * HOUR);
        assert_eq!(day.id, 20_260_906);
    }

    #[test]
    fn a_zone_change_ends_the_running_window_in_the_old_zone_and_ids_never_repeat() {
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        // Eastward (UTC -> Tokyo), changed 2026-12-07 10:00 UTC: the UTC day runs to its end,
        // then a short first Tokyo day until Tokyo's midnight.
        let at = us(Tz::UTC, 2026, 12, 7, 10, 0);
        let cal = Calendar::changed(tokyo, Tz::UTC, at);
        let d = cal.day(us(Tz::UTC, 2026, 12, 7, 23, 0));
        assert_eq!(
            (d.id, d.end_us),
            (20_261_207, us(Tz::UTC, 2026, 12, 8, 0, 0))
        );
        let d = cal.day(us(Tz::UTC, 2026, 12, 8, 1, 0));
        assert_eq!(d.id, 20_261_208);
        assert_eq!(d.start_us, us(Tz::UTC, 2026, 12, 8, 0, 0));
        assert_eq!(d.end_us, us(tokyo, 2026, 12, 9, 0, 0));
        // Westward (Tokyo -> UTC), changed 2026-12-08 10:00 Tokyo: Tokyo's 8th ends at 15:00 UTC,
        // where UTC's date is still the 8th: the window lasts until the 8th ends in UTC.
        let at = us(tokyo, 2026, 12, 8, 10, 0);
        let cal = Calendar::changed(Tz::UTC, tokyo, at);
        let d = cal.day(us(Tz::UTC, 2026, 12, 8, 20, 0));
        assert_eq!(
            (d.id, d.end_us),
            (20_261_208, us(Tz::UTC, 2026, 12, 9, 0, 0))
        );
        let d = cal.day(us(Tz::UTC, 2026, 12, 9, 0, 0));
        assert_eq!(d.id, 20_261_209);
        // Across the date line (+14 -> -11): never an id again.
        let kiribati: Tz = "Pacific/Kiritimati".parse().unwrap();
        let niue: Tz = "Pacific/Niue".parse().unwrap();
        let cal = Calendar::changed(niue, kiribati, us(kiribati, 2026, 12, 8, 10, 0));
        let mut ids = Vec::new();
        let mut t = us(kiribati, 2026, 12, 8, 10, 0);
        for _ in 0..(24 * 5) {
            let id = cal.day(t).id;
            if ids.last() != Some(&id) {
                ids.push(id);
            }
            t += HOUR;
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(ids, sorted, "ids only grow: {ids:?}");
    }

    #[test]
    fn zone_names_are_checked() {
        assert_eq!(parse_zone(" Asia/Tokyo ").unwrap(), chrono_tz::Asia::Tokyo);
        assert!(parse_zone("Mars/Olympus").is_err());
        assert!(parse_zone("").is_err());
    }
}
