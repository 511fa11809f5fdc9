//! Plan limits: a per-minute rate with a burst, and optional calendar quotas per day and month.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanLimitsError {
    #[error("must be a positive whole number")]
    RequestsPerMinute,
    #[error("must be at least 1")]
    Burst,
    #[error("must be a positive whole number")]
    RequestsPerDay,
    #[error("must be a positive whole number")]
    RequestsPerMonth,
    #[error("cannot be above requests per month")]
    DayAboveMonth,
}

/// Largest value accepted for any limit (fits the database's signed 64-bit integers with room).
pub const MAX_LIMIT: u64 = 1 << 48;

/// Validated plan limits. `burst` defaults to `requests_per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanLimits {
    pub requests_per_minute: u64,
    pub burst: u64,
    pub requests_per_day: Option<u64>,
    pub requests_per_month: Option<u64>,
}

fn positive(v: i64, err: PlanLimitsError) -> Result<u64, PlanLimitsError> {
    match u64::try_from(v) {
        Ok(v) if v > 0 && v <= MAX_LIMIT => Ok(v),
        _ => Err(err),
    }
}

impl PlanLimits {
    pub fn new(
        requests_per_minute: i64,
        burst: Option<i64>,
        requests_per_day: Option<i64>,
        requests_per_month: Option<i64>,
    ) -> Result<Self, PlanLimitsError> {
        let rpm = positive(requests_per_minute, PlanLimitsError::RequestsPerMinute)?;
        let burst = burst.map_or(Ok(rpm), |b| positive(b, PlanLimitsError::Burst))?;
        let day = requests_per_day
            .map(|d| positive(d, PlanLimitsError::RequestsPerDay))
            .transpose()?;
        let month = requests_per_month
            .map(|m| positive(m, PlanLimitsError::RequestsPerMonth))
            .transpose()?;
        if let (Some(d), Some(m)) = (day, month)
            && d > m
        {
            return Err(PlanLimitsError::DayAboveMonth);
        }
        Ok(Self {
            requests_per_minute: rpm,
            burst,
            requests_per_day: day,
            requests_per_month: month,
        })
    }
}

/// A platform admin's ceiling over all of a tenant's traffic: any of a per-minute rate (with a
/// burst), a per-day and a per-month quota; what is not set does not limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TenantLimits {
    pub requests_per_minute: Option<u64>,
    /// Defaults to `requests_per_minute`.
    pub burst: Option<u64>,
    pub requests_per_day: Option<u64>,
    pub requests_per_month: Option<u64>,
}

impl TenantLimits {
    /// The ceiling of the stored columns (`None`: none is set).
    pub fn from_columns(
        rpm: Option<i64>,
        burst: Option<i64>,
        day: Option<i64>,
        month: Option<i64>,
    ) -> Option<Self> {
        let get = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0);
        let t = Self {
            requests_per_minute: get(rpm),
            burst: get(burst),
            requests_per_day: get(day),
            requests_per_month: get(month),
        };
        (!t.is_empty()).then_some(t)
    }

    /// Whether no window is set.
    pub fn is_empty(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.requests_per_day.is_none()
            && self.requests_per_month.is_none()
    }

    /// The windows as the limiter decides them: a ceiling with no per-minute rate has a bucket
    /// no request fills.
    pub fn as_plan(&self) -> PlanLimits {
        let rpm = self.requests_per_minute.unwrap_or(MAX_LIMIT);
        PlanLimits {
            requests_per_minute: rpm,
            burst: self.burst.unwrap_or(rpm),
            requests_per_day: self.requests_per_day,
            requests_per_month: self.requests_per_month,
        }
    }

    /// The four columns as stored.
    pub fn columns(t: Option<&Self>) -> [Option<i64>; 4] {
        let c = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
        t.map_or([None; 4], |t| {
            [
                c(t.requests_per_minute),
                c(t.burst),
                c(t.requests_per_day),
                c(t.requests_per_month),
            ]
        })
    }
}

/// How a plan's limits are enforced across data planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Enforcement {
    /// Every request is checked in one atomic Redis operation: exact across nodes.
    #[default]
    Strict,
    /// Data planes spend local budgets leased from Redis: faster, bounded overshoot.
    Fast,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Fast => "fast",
        }
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 'strict' or 'fast'")]
pub struct EnforcementError;

impl FromStr for Enforcement {
    type Err = EnforcementError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Self::Strict),
            "fast" => Ok(Self::Fast),
            _ => Err(EnforcementError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_defaults_to_rate() {
        let l = PlanLimits::new(60, None, None, None).unwrap();
        assert_eq!(l.burst, 60);
        let l = PlanLimits::new(60, Some(1), Some(1000), Some(20_000)).unwrap();
        assert_eq!(
            (l.burst, l.requests_per_day, l.requests_per_month),
            (1, Some(1000), Some(20_000))
        );
    }

    #[test]
    fn refuses_non_positive_values() {
        assert_eq!(
            PlanLimits::new(0, None, None, None),
            Err(PlanLimitsError::RequestsPerMinute)
        );
        assert_eq!(
            PlanLimits::new(-5, None, None, None),
            Err(PlanLimitsError::RequestsPerMinute)
        );
        assert_eq!(
            PlanLimits::new(10, Some(0), None, None),
            Err(PlanLimitsError::Burst)
        );
        assert_eq!(
            PlanLimits::new(10, None, Some(0), None),
            Err(PlanLimitsError::RequestsPerDay)
        );
        assert_eq!(
            PlanLimits::new(10, None, None, Some(-1)),
            Err(PlanLimitsError::RequestsPerMonth)
        );
        assert_eq!(
            PlanLimits::new(10, None, Some(10), Some(5)),
            Err(PlanLimitsError::DayAboveMonth)
        );
        assert_eq!(
            PlanLimits::new(i64::MAX, None, None, None),
            Err(PlanLimitsError::RequestsPerMinute)
        );
    }

    #[test]
    fn enforcement_round_trips() {
        for e in [Enforcement::Strict, Enforcement::Fast] {
            assert_eq!(e.as_str().parse::<Enforcement>(), Ok(e));
        }
        assert!("eventual".parse::<Enforcement>().is_err());
    }
}
