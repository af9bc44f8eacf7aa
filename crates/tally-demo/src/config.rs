//! What to generate: the time window, the total volume, the seed and the demo tenants
//! with their share of the volume.
//!
//! This module owns validation and the split of `total_events` into exact per-tenant
//! targets. It does not simulate anything; `plan` and `generate` consume a validated
//! [`DemoConfig`].

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use tally_core::time::MICROS_PER_DAY;

use crate::{Error, Result};

/// The default length of the demo window.
pub const DEFAULT_DAYS: u32 = 90;
/// Longest window accepted; longer ones are almost certainly a typo.
pub const MAX_DAYS: u32 = 3650;
/// Most events accepted in one configuration (100 billion): beyond that a typo in a
/// CLI flag would silently run for days.
pub const MAX_TOTAL_EVENTS: u64 = 100_000_000_000;
/// Longest tenant name accepted; names become host names in URLs.
pub const MAX_TENANT_NAME_LEN: usize = 63;

/// The whole demo data set.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    /// Events across all tenants. Generation hits it exactly.
    pub total_events: u64,
    pub tenants: Vec<DemoTenant>,
    /// Length of the window ending at `end`.
    pub days: u32,
    /// Exclusive end of the window; every event is in `[end - days, end)`.
    pub end: DateTime<Utc>,
    /// The same seed (with the same crate version) produces the same events.
    pub seed: u64,
}

/// One demo tenant: a fictional product whose analytics the demo shows.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoTenant {
    /// Short lowercase name (`acme`), also the product's host (`acme.example`).
    pub name: String,
    /// Relative weight of this tenant's events; shares are normalised over all tenants.
    pub share: f64,
    /// The tenant's Tally plan, for the metadata store; it does not shape the events.
    pub plan: String,
    /// Fraction of this product's people whose main device is its native mobile app
    /// (`$screen` events from `posthog-ios`/`posthog-android`); 0 for a web-only product.
    pub mobile_share: f64,
}

impl DemoTenant {
    /// The host of the tenant's fictional product (`.example` is reserved for this).
    pub fn host(&self) -> String {
        format!("{}.example", self.name)
    }
}

impl DemoConfig {
    /// A 90-day window ending at the current hour (so "last 24 hours" charts have data
    /// up to now), with [`default_tenants`].
    pub fn ending_now(total_events: u64, tenant_count: usize, seed: u64) -> Self {
        let now = Utc::now();
        // Truncation to an hour cannot fail for any current date; fall back to the
        // untruncated time rather than panicking if chrono ever disagrees.
        let end = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
        DemoConfig {
            total_events,
            tenants: default_tenants(tenant_count),
            days: DEFAULT_DAYS,
            end,
            seed,
        }
    }

    /// The window in UTC microseconds: `[start, end)`.
    pub fn window_micros(&self) -> (i64, i64) {
        let end = self.end.timestamp_micros();
        (end - i64::from(self.days) * MICROS_PER_DAY, end)
    }

    /// Checks everything generation relies on; every public entry point calls it.
    pub fn validate(&self) -> Result<()> {
        if self.total_events > MAX_TOTAL_EVENTS {
            return Err(Error::TooManyEvents {
                requested: self.total_events,
                max: MAX_TOTAL_EVENTS,
            });
        }
        if self.days == 0 || self.days > MAX_DAYS {
            return Err(Error::InvalidDays {
                days: self.days,
                max: MAX_DAYS,
            });
        }
        let end = self.end.timestamp_micros();
        if end - i64::from(self.days) * MICROS_PER_DAY < 0 {
            return Err(Error::WindowBeforeEpoch {
                end: self.end,
                days: self.days,
            });
        }
        if self.tenants.is_empty() {
            return Err(Error::NoTenants);
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tenants {
            validate_tenant_name(&t.name)?;
            if !seen.insert(t.name.as_str()) {
                return Err(Error::DuplicateTenant(t.name.clone()));
            }
            if !t.share.is_finite() || t.share < 0.0 {
                return Err(Error::InvalidShare {
                    tenant: t.name.clone(),
                    share: t.share,
                });
            }
            if !(0.0..=1.0).contains(&t.mobile_share) {
                return Err(Error::InvalidMobileShare {
                    tenant: t.name.clone(),
                    mobile_share: t.mobile_share,
                });
            }
        }
        let total_share: f64 = self.tenants.iter().map(|t| t.share).sum();
        if !(total_share > 0.0 && total_share.is_finite()) {
            return Err(Error::ZeroShares);
        }
        Ok(())
    }

    /// The exact number of events each tenant gets: `total_events` split by share with
    /// the largest-remainder method, so the targets add up to `total_events` exactly.
    pub fn tenant_targets(&self) -> Result<Vec<u64>> {
        self.validate()?;
        Ok(apportion(
            self.total_events,
            &self.tenants.iter().map(|t| t.share).collect::<Vec<_>>(),
        ))
    }
}

fn validate_tenant_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TENANT_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTenantName(name.to_owned()))
    }
}

/// Splits `total` proportionally to `weights` (finite, non-negative, positive sum) into
/// integers that add up to `total`.
pub(crate) fn apportion(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let quotas: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut counts: Vec<u64> = quotas
        .iter()
        .map(|q| (q.floor() as u64).min(total))
        .collect();
    let assigned: u64 = counts.iter().sum();
    // Floating-point rounding can, in principle, overshoot by a few; take them back
    // from the largest counts so the sum is exact either way.
    let mut excess = assigned.saturating_sub(total);
    while excess > 0 {
        if let Some(max) = counts.iter_mut().max_by_key(|c| **c) {
            let take = excess.min(*max);
            *max -= take;
            excess -= take;
        }
    }
    let mut deficit = total.saturating_sub(counts.iter().sum());
    let mut order: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0.0).collect();
    order.sort_by(|&a, &b| {
        let fa = quotas[a] - quotas[a].floor();
        let fb = quotas[b] - quotas[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    // The deficit is below the number of tenants unless rounding misbehaved; cycling
    // keeps it exact in that case too.
    while deficit > 0 {
        for &i in &order {
            if deficit == 0 {
                break;
            }
            counts[i] += 1;
            deficit -= 1;
        }
    }
    counts
}

const FAMOUS_NAMES: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "soylent",
    "cyberdyne",
    "tyrell",
    "vandelay",
    "piedpiper",
    "aperture",
    "oscorp",
    "massive-dynamic",
    "dunder-mifflin",
    "nakatomi",
    "gringotts",
    "monarch",
    "buynlarge",
    "virtucon",
    "prestige",
    "bluth",
];

const GENERATED_FIRST: &[&str] = &[
    "amber", "birch", "cobalt", "dune", "echo", "fjord", "glade", "haze", "iris", "jade", "kite",
    "lark", "mesa", "north", "opal", "pine", "quill", "reef", "sage", "thistle",
];
const GENERATED_SECOND: &[&str] = &[
    "works", "labs", "hq", "apps", "soft", "ware", "ly", "io", "hub", "stack", "base", "flow",
];

/// Largest tenant's share of all events when there are enough tenants to allow it.
const LARGEST_SHARE: f64 = 0.14;

/// `n` demo tenants with Zipf-like sizes: the largest gets about 14 % of the events
/// (more when there are too few tenants for that), the smallest a sliver. The first
/// two dozen have familiar fictional names, later ones generated names
/// (`amber-works`, ...). Deterministic in `n`.
pub fn default_tenants(n: usize) -> Vec<DemoTenant> {
    let shares = zipf_shares(n, (1.5 / n as f64).clamp(LARGEST_SHARE, 1.0));
    shares
        .into_iter()
        .enumerate()
        .map(|(i, share)| DemoTenant {
            name: tenant_name(i),
            share,
            plan: match i {
                0..=1 => "enterprise",
                2..=5 => "growth",
                _ if i % 3 == 0 => "free",
                _ => "pro",
            }
            .to_owned(),
            mobile_share: match i % 3 {
                0 => 0.25,
                1 => 0.0,
                _ => 0.10,
            },
        })
        .collect()
}

fn tenant_name(i: usize) -> String {
    if let Some(name) = FAMOUS_NAMES.get(i) {
        return (*name).to_owned();
    }
    let j = i - FAMOUS_NAMES.len();
    let combos = GENERATED_FIRST.len() * GENERATED_SECOND.len();
    let base = format!(
        "{}-{}",
        GENERATED_FIRST[j % GENERATED_FIRST.len()],
        GENERATED_SECOND[(j / GENERATED_FIRST.len()) % GENERATED_SECOND.len()]
    );
    // Numbered once the word pairs run out, so names stay unique for any n.
    match j / combos {
        0 => base,
        round => format!("{base}-{}", round + 1),
    }
}

/// Shares proportional to `rank^-s`, with `s` chosen so the first is `largest`.
fn zipf_shares(n: usize, largest: f64) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    let first_share = |s: f64| {
        let h: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
        1.0 / h
    };
    // first_share rises monotonically from 1/n (s = 0) towards 1; bisect for s.
    let (mut lo, mut hi) = (0.0_f64, 16.0_f64);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if first_share(mid) < largest {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let s = (lo + hi) / 2.0;
    let h: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
    (1..=n).map(|k| (k as f64).powf(-s) / h).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn config(tenants: Vec<DemoTenant>) -> DemoConfig {
        DemoConfig {
            total_events: 1000,
            tenants,
            days: 90,
            end: Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap(),
            seed: 1,
        }
    }

    #[test]
    fn default_tenants_are_skewed_unique_and_valid() {
        let tenants = default_tenants(40);
        assert_eq!(tenants.len(), 40);
        assert!(
            (tenants[0].share - 0.14).abs() < 1e-6,
            "{}",
            tenants[0].share
        );
        assert!(tenants.windows(2).all(|w| w[0].share > w[1].share));
        let total: f64 = tenants.iter().map(|t| t.share).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert_eq!(tenants[0].name, "acme");
        assert_eq!(tenants[1].name, "globex");
        assert_eq!(tenants[2].name, "initech");
        config(tenants).validate().unwrap();
        // Many tenants: names stay unique past the word-pair combinations.
        let many = default_tenants(400);
        let names: std::collections::HashSet<_> = many.iter().map(|t| &t.name).collect();
        assert_eq!(names.len(), 400);
        config(many).validate().unwrap();
    }

    #[test]
    fn few_tenants_get_a_larger_but_still_skewed_top_share() {
        assert_eq!(default_tenants(0), vec![]);
        assert_eq!(default_tenants(1)[0].share, 1.0);
        let three = default_tenants(3);
        assert!((three[0].share - 0.5).abs() < 1e-6);
        assert!(three[1].share > three[2].share);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut t = default_tenants(2);
        t[1].name = "Bad Name".into();
        assert_eq!(
            config(t).validate(),
            Err(Error::InvalidTenantName("Bad Name".into()))
        );
        let mut t = default_tenants(2);
        t[1].name = "acme".into();
        assert_eq!(
            config(t).validate(),
            Err(Error::DuplicateTenant("acme".into()))
        );
        let mut t = default_tenants(2);
        t[0].share = f64::NAN;
        assert!(matches!(
            config(t).validate(),
            Err(Error::InvalidShare { .. })
        ));
        let mut t = default_tenants(2);
        t[0].share = 0.0;
        t[1].share = 0.0;
        assert_eq!(config(t).validate(), Err(Error::ZeroShares));
        let mut t = default_tenants(2);
        t[0].mobile_share = 1.5;
        assert!(matches!(
            config(t).validate(),
            Err(Error::InvalidMobileShare { .. })
        ));
        assert_eq!(config(vec![]).validate(), Err(Error::NoTenants));
        let mut c = config(default_tenants(1));
        c.days = 0;
        assert!(matches!(c.validate(), Err(Error::InvalidDays { .. })));
        c.days = 90;
        c.end = Utc.with_ymd_and_hms(1970, 2, 1, 0, 0, 0).unwrap();
        assert!(matches!(c.validate(), Err(Error::WindowBeforeEpoch { .. })));
        let mut c = config(default_tenants(1));
        c.total_events = MAX_TOTAL_EVENTS + 1;
        assert!(matches!(c.validate(), Err(Error::TooManyEvents { .. })));
    }

    #[test]
    fn ending_now_ends_on_an_hour() {
        let c = DemoConfig::ending_now(10, 3, 9);
        c.validate().unwrap();
        assert_eq!(c.end.timestamp() % 3600, 0);
        let (start, end) = c.window_micros();
        assert_eq!(end - start, 90 * MICROS_PER_DAY);
    }

    proptest! {
        #[test]
        fn apportion_is_exact_and_proportional(
            total in 0u64..10_000_000_000,
            weights in proptest::collection::vec(0.0f64..100.0, 1..50),
        ) {
            prop_assume!(weights.iter().sum::<f64>() > 0.0);
            let counts = apportion(total, &weights);
            prop_assert_eq!(counts.iter().sum::<u64>(), total);
            let sum: f64 = weights.iter().sum();
            for (c, w) in counts.iter().zip(&weights) {
                let quota = total as f64 * w / sum;
                // Largest remainder never strays more than one from the exact quota.
                prop_assert!((*c as f64 - quota).abs() <= 1.0 + quota * 1e-9, "{} vs {}", c, quota);
                if *w == 0.0 {
                    prop_assert_eq!(*c, 0);
                }
            }
        }
    }
}
