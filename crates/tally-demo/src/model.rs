//! Per-tenant parameters derived once from the configuration: the tenant's seed, the
//! time window, and the day-by-day arrival curve of new people.
//!
//! The arrival curve is where the growth trend, the weekly rhythm (weekdays busier
//! than weekends) and a one-off launch spike come from. Everything about individual
//! people lives in `person`.

use tally_core::time::MICROS_PER_DAY;

use crate::config::{DemoConfig, DemoTenant};
use crate::sample::{Weighted, derive_seed};

/// Weekday of a UTC-microsecond instant shifted by `offset_minutes`; 0 is Monday.
pub(crate) fn local_weekday(at: i64, offset_minutes: i32) -> i64 {
    let local = at + i64::from(offset_minutes) * 60_000_000;
    // 1970-01-01 was a Thursday (index 3).
    (local.div_euclid(MICROS_PER_DAY) + 3).rem_euclid(7)
}

pub(crate) fn is_weekend(at: i64, offset_minutes: i32) -> bool {
    local_weekday(at, offset_minutes) >= 5
}

#[derive(Debug, Clone)]
pub(crate) struct TenantModel {
    pub tenant: DemoTenant,
    /// Root of every random stream of this tenant.
    pub seed: u64,
    /// Window `[start, end)` in UTC microseconds.
    pub start: i64,
    pub end: i64,
    pub days: u32,
    /// Calendar day number (days since the epoch) of `arrivals`' first entry.
    pub first_arrival_day: i64,
    /// Distribution of a new person's arrival over local calendar days, from
    /// `first_arrival_day`. It covers one day beyond each end of the window so that
    /// every time zone's local days are included; arrivals that land outside the
    /// window are redrawn.
    pub arrivals: Weighted,
}

impl TenantModel {
    /// Builds the model of a tenant of a validated configuration.
    pub fn new(cfg: &DemoConfig, tenant_index: usize) -> Self {
        let tenant = cfg.tenants[tenant_index].clone();
        let seed = derive_seed(cfg.seed, &[tenant_index as u64]);
        let (start, end) = cfg.window_micros();
        // Calendar days rather than window days: the window need not start at
        // midnight, and weekday seasonality must follow the calendar.
        let first_arrival_day = start.div_euclid(MICROS_PER_DAY) - 1;
        let last_arrival_day = (end - 1).div_euclid(MICROS_PER_DAY) + 1;
        let span = (last_arrival_day - first_arrival_day + 1) as u64;
        // A launch (Product Hunt, a big blog post) somewhere in the middle half of the
        // window gives every tenant one recognisable spike.
        let launch_day = (span >= 8).then(|| span / 4 + seed % (span / 2));
        let arrivals = Weighted::new((0..span).map(|d| {
            let growth = 0.6 + 0.8 * d as f64 / span as f64;
            let noon = (first_arrival_day + d as i64) * MICROS_PER_DAY + MICROS_PER_DAY / 2;
            let weekly = match local_weekday(noon, 0) {
                5 => 0.55,
                6 => 0.6,
                0 => 1.05,
                _ => 1.0,
            };
            let launch = match launch_day {
                Some(l) if d == l => 3.5,
                Some(l) if d == l + 1 => 1.8,
                _ => 1.0,
            };
            growth * weekly * launch
        }));
        TenantModel {
            tenant,
            seed,
            start,
            end,
            days: cfg.days,
            first_arrival_day,
            arrivals,
        }
    }

    /// Seed of person `index` of this tenant.
    pub fn person_seed(&self, index: u64) -> u64 {
        derive_seed(self.seed, &[index])
    }

    /// Index of the window day containing `at` (may be out of range).
    pub fn day_of(&self, at: i64) -> i64 {
        (at - self.start).div_euclid(MICROS_PER_DAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn weekdays_are_right() {
        // 2024-06-03 was a Monday.
        let monday = Utc
            .with_ymd_and_hms(2024, 6, 3, 12, 0, 0)
            .unwrap()
            .timestamp_micros();
        assert_eq!(local_weekday(monday, 0), 0);
        assert_eq!(local_weekday(monday + 5 * MICROS_PER_DAY, 0), 5);
        assert!(is_weekend(monday + 6 * MICROS_PER_DAY, 0));
        // Monday 01:00 UTC is still Sunday in New York.
        let early = Utc
            .with_ymd_and_hms(2024, 6, 3, 1, 0, 0)
            .unwrap()
            .timestamp_micros();
        assert_eq!(local_weekday(early, -300), 6);
    }

    #[test]
    fn arrivals_favour_weekdays_and_grow() {
        let cfg = DemoConfig {
            total_events: 10,
            tenants: crate::default_tenants(1),
            days: 91,
            end: Utc.with_ymd_and_hms(2024, 9, 2, 0, 0, 0).unwrap(),
            seed: 5,
        };
        let m = TenantModel::new(&cfg, 0);
        // The window ends at midnight: 91 days plus one margin day on each side.
        assert_eq!(m.arrivals.len(), 93);
        let weekday_sum: f64 = (0..93)
            .filter(|&d| local_weekday((m.first_arrival_day + d as i64) * MICROS_PER_DAY, 0) < 5)
            .map(|d| m.arrivals.probability(d))
            .sum();
        // 67 of 93 days are weekdays (72 %); busier weekdays push the share higher.
        assert!(weekday_sum > 0.77, "{weekday_sum}");
        // Growth: the last fortnight gets more arrivals than the first.
        let first: f64 = (0..14).map(|d| m.arrivals.probability(d)).sum();
        let last: f64 = (79..93).map(|d| m.arrivals.probability(d)).sum();
        assert!(last > first * 1.5, "{first} {last}");
    }
}
