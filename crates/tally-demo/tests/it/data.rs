//! Shared fixtures: one moderately large data set generated once per test binary.

use std::sync::LazyLock;

use chrono::{TimeZone, Utc};
use tally_core::{Event, TenantId};
use tally_demo::{DemoConfig, TenantPlan, default_tenants};

/// A fixed window so results do not depend on the day the tests run.
pub fn config(total_events: u64, tenants: usize, seed: u64) -> DemoConfig {
    DemoConfig {
        total_events,
        tenants: default_tenants(tenants),
        days: 90,
        end: Utc.with_ymd_and_hms(2025, 6, 1, 13, 0, 0).unwrap(),
        seed,
    }
}

/// Every event of one tenant, in output order.
pub fn collect(cfg: &DemoConfig, tenant_index: usize, chunk: usize) -> Vec<Event> {
    let plan = TenantPlan::new(cfg, tenant_index).unwrap();
    let mut events = Vec::new();
    for batch in plan
        .events_iter(TenantId(tenant_index as u32 + 1), chunk)
        .unwrap()
    {
        assert!(!batch.events.is_empty() && batch.events.len() <= chunk);
        assert_eq!(batch.tenant, TenantId(tenant_index as u32 + 1));
        events.extend(batch.events);
    }
    events
}

pub struct DataSet {
    pub cfg: DemoConfig,
    /// Events per tenant, in output order.
    pub tenants: Vec<Vec<Event>>,
}

/// 150k events over 2 tenants; the first one (about 75 %) is large enough for
/// retention and funnel statistics.
pub static DATA: LazyLock<DataSet> = LazyLock::new(|| {
    let cfg = config(150_000, 2, 7);
    let tenants = (0..cfg.tenants.len())
        .map(|i| collect(&cfg, i, 4096))
        .collect();
    DataSet { cfg, tenants }
});
