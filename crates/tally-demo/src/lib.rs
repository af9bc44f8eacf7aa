//! Realistic, deterministic demo data: 90 days of product analytics for a handful of
//! fictional products (tenants), shaped like what PostHog's SDKs send.
//!
//! This crate is pure: it does no IO, spawns no threads and reads the clock only in
//! [`DemoConfig::ending_now`]. It produces [`tally_core::Event`]s; writing them to the
//! store and feeding identity merges is the caller's business. The same
//! [`DemoConfig`] (seed included) always yields the same events, byte for byte.
//!
//! # Using it
//!
//! ```
//! use tally_core::TenantId;
//! use tally_demo::{DemoConfig, TenantPlan};
//!
//! let cfg = DemoConfig::ending_now(2_000, 3, 42);
//! let targets = cfg.tenant_targets()?;
//! for (index, target) in targets.iter().enumerate() {
//!     let plan = TenantPlan::new(&cfg, index)?;
//!     assert_eq!(plan.events(), *target);
//!     let mut n = 0;
//!     for batch in plan.events_iter(TenantId(index as u32 + 1), 500)? {
//!         n += batch.events.len() as u64; // hand `batch` to the store here
//!     }
//!     assert_eq!(n, *target);
//! }
//! # Ok::<(), tally_demo::Error>(())
//! ```
//!
//! Tenants are independent, so the natural unit of parallelism is one tenant per
//! thread; a single large tenant can be split further with [`TenantPlan::shard`].
//!
//! # The simulated world
//!
//! People arrive over the window (growing, weekdays busier, one launch-day spike per
//! tenant), each with a fixed country, device (browser, OS, screen; or the tenant's
//! native app), acquisition channel and engagement level. Sessions follow a diurnal
//! curve in the person's local time. One-off visitors leave after a visit or two,
//! casual users churn over weeks, regulars and a few power users stay, so weekly
//! retention falls from roughly 45 % to roughly 15 % with a stable tail.
//!
//! Anonymous visitors browse with a random anonymous id (`$device_id`). About 40 %
//! sign up, which identifies them (`$identify` with `$anon_distinct_id`, then their
//! user id `user-N`); some later log in on a second device, which identifies that
//! device too. The funnel `signed_up` → `project_created` → `invited_teammate` →
//! `purchase` converts at about 55 % / 35 % / 20 % per step after sign-up, varying by
//! country, `utm_source` and plan, with delays from minutes to days.
//!
//! # Event schema
//!
//! Every event has a UUIDv7 built from its timestamp, and `received_at == timestamp`.
//!
//! | event | distinct id | properties beyond the common ones |
//! |---|---|---|
//! | `$pageview` (web) | anon id, user id once identified | `$current_url`, `$pathname`, `$title`, `$prev_pageview_pathname`, `$prev_pageview_duration` (s); first event also `utm_source`, `utm_medium`, `utm_campaign` and `$set_once` `$initial_*` |
//! | `$screen` (app) | same | `$screen_name` |
//! | `dashboard_viewed`, `insight_viewed`, `insight_created`, `search_performed`, `filter_applied`, `report_exported` | user id | `duration_ms`, `items`, and one of `dashboard`, `insight_type`, `search_scope`, `filter_type`, `export_format` |
//! | `$identify` | user id | `$anon_distinct_id`; `$set`: `email`, `name`, `plan`, `company` |
//! | `signed_up` | user id | `signup_method`, `plan` |
//! | `$groupidentify` | user id | `$group_type` = `company`, `$group_key`, `$group_set`: `name`, `industry`, `employees` |
//! | `project_created` | user id | `project_template`, `duration_ms` |
//! | `invited_teammate` (server) | user id | `role`, `invitee_count` |
//! | `purchase` (server) | user id | `amount` (log-normal), `currency`, `plan`, `items`, `billing_period` |
//!
//! Common web properties (about 30, ~1 KB per event as JSON): `$os`, `$os_version`,
//! `$browser`, `$browser_version`, `$device_type`, `$raw_user_agent`,
//! `$browser_language`, `$screen_height`/`_width`, `$viewport_height`/`_width`, `$lib`
//! (`web`), `$lib_version`, `$timezone`, `$geoip_country_code`/`_name`,
//! `$geoip_city_name`, `$geoip_continent_code`, `$device_id`, `$session_id`,
//! `$window_id`, `$is_identified`, `$host`, `$referrer`, `$referring_domain`, and
//! `$groups` (`{"company": key}`) once identified. App events replace the browser
//! fields with `$device_manufacturer`, `$device_model`, `$app_name`, `$app_version`,
//! `$app_build`, `$app_namespace`, `$locale`, `$network_wifi` and `$lib`
//! `posthog-ios`/`posthog-android`. Server events carry only `$lib` (`posthog-node`),
//! `$lib_version` and `$groups`.
//!
//! Determinism holds for the same seed, crate version and `rand` version on 64-bit
//! targets (the simulation uses `rand`'s `SmallRng`).

mod build;
mod catalog;
mod config;
mod generate;
mod model;
mod person;
mod sample;

use tally_core::{Classify, ErrorClass};

pub use build::COMPANY_GROUP_TYPE;
pub use config::{
    DEFAULT_DAYS, DemoConfig, DemoTenant, MAX_DAYS, MAX_TENANT_NAME_LEN, MAX_TOTAL_EVENTS,
    default_tenants,
};
pub use generate::{TenantEvents, TenantPlan, generate_tenant};

/// A demo configuration or call that cannot be generated. Every variant is the
/// caller's mistake (a CLI flag, a config file), never an internal failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("the demo needs at least one tenant")]
    NoTenants,
    #[error("demo window must be 1 to {max} days long, got {days}")]
    InvalidDays { days: u32, max: u32 },
    #[error("a demo window of {days} days ending at {end} would start before 1970")]
    WindowBeforeEpoch {
        end: chrono::DateTime<chrono::Utc>,
        days: u32,
    },
    #[error("{requested} demo events requested; at most {max} are supported")]
    TooManyEvents { requested: u64, max: u64 },
    #[error(
        "invalid demo tenant name {0:?}: use 1 to 63 lowercase letters, digits and inner hyphens"
    )]
    InvalidTenantName(String),
    #[error("demo tenant name {0:?} is used twice")]
    DuplicateTenant(String),
    #[error("demo tenant {tenant:?} has share {share}; shares must be finite and non-negative")]
    InvalidShare { tenant: String, share: f64 },
    #[error("demo tenant {tenant:?} has mobile_share {mobile_share}; it must be between 0 and 1")]
    InvalidMobileShare { tenant: String, mobile_share: f64 },
    #[error("demo tenant shares add up to zero")]
    ZeroShares,
    #[error("demo tenant index {index} is out of range ({count} tenants)")]
    UnknownTenant { index: usize, count: usize },
    #[error("demo chunk size must be at least 1")]
    ZeroChunk,
    #[error("demo shard {shard} is out of range for {shards} shards")]
    InvalidShard { shard: u64, shards: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadRequest
    }
}
