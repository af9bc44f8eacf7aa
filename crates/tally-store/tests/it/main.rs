//! Integration tests of the embedded store through its public API only.

mod basics;
mod compaction;
mod dedup;
mod model;
mod numbers;
mod restart;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tally_core::time::{MICROS_PER_DAY, now_micros};
use tally_core::{Event, EventBatch, Properties, TenantId};
use tally_store::{Codec, StoreConfig};
use uuid::Uuid;

pub const T1: TenantId = TenantId(1);
pub const T2: TenantId = TenantId(2);

/// Small thresholds so tests exercise row-group and file rolling on little data.
pub fn config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.row_group_rows = 64;
    c.target_file_rows = 256;
    c.compaction_min_l0_files = 2;
    c.compaction_max_l1_files = 2;
    c.compaction_memory_bytes = 64 << 20;
    c.flush_interval = Duration::from_millis(50);
    c.codec = Codec::Zstd(1);
    c
}

/// An event whose content is a function of `n`, so equal uuids mean equal events.
pub fn event(n: u128, timestamp: i64) -> Event {
    let mut properties = Properties::new();
    properties.insert("n".into(), json!(n as u64));
    properties.insert(
        "plan".into(),
        json!(if n.is_multiple_of(2) { "pro" } else { "free" }),
    );
    Event {
        uuid: Uuid::from_u128(n),
        event: format!("e{}", n % 3),
        distinct_id: format!("user-{}", n % 7),
        timestamp,
        received_at: now_micros(),
        properties,
        person_set: Properties::new(),
        person_set_once: Properties::new(),
    }
}

/// A recent time at least three days after the start of the current month, so that
/// events spread over the two days before it share one month partition whatever the
/// date the tests run on (it may lie up to three days in the future).
pub fn anchor() -> i64 {
    let now = now_micros();
    let month_start = tally_store::PartitionGranularity::Month.partition_of(now).0;
    now.max(month_start + 3 * MICROS_PER_DAY)
}

/// Events `range` timestamped over two days before [`anchor`].
pub fn events(range: std::ops::Range<u128>) -> Vec<Event> {
    let now = anchor();
    range
        .map(|n| event(n, now - (n as i64 % 5) * MICROS_PER_DAY / 2 - n as i64))
        .collect()
}

pub fn batch(tenant: TenantId, events: Vec<Event>) -> EventBatch {
    EventBatch { tenant, events }
}

pub fn uuids(events: &[Event]) -> Vec<u128> {
    let mut u: Vec<u128> = events.iter().map(|e| e.uuid.as_u128()).collect();
    u.sort_unstable();
    u
}
