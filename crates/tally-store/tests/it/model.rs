//! Property test: random sequences of apply / flush / compact / reopen (with WAL
//! replay from `durable_lsn`) against a trivial reference, the set of distinct
//! `(tenant, uuid)` applied so far.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use tally_core::time::{MICROS_PER_DAY, now_micros};
use tally_core::{EventBatch, TenantId};
use tally_store::EmbeddedStore;

use crate::*;

#[derive(Debug, Clone)]
enum Op {
    /// Apply events with these uuid numbers (from a small pool, so resends are common);
    /// `historic` timestamps them months back.
    Apply {
        tenant: u32,
        uuids: Vec<u8>,
        historic: bool,
    },
    Flush,
    Compact,
    /// Drop the store (losing its buffer, like a crash) and reopen, replaying the WAL.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..=2, prop::collection::vec(0u8..40, 1..12), any::<bool>())
            .prop_map(|(tenant, uuids, historic)| Op::Apply { tenant, uuids, historic }),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let open = || EmbeddedStore::open(config(dir.path()));
    let mut store: Arc<EmbeddedStore> = open().await.unwrap();
    let mut wal: Vec<(u64, EventBatch)> = Vec::new();
    let mut reference: BTreeMap<TenantId, BTreeMap<u128, tally_core::Event>> = BTreeMap::new();
    let now = now_micros();
    for op in ops {
        match op {
            Op::Apply {
                tenant,
                uuids,
                historic,
            } => {
                let events = uuids
                    .iter()
                    .map(|&u| {
                        let n = u as u128;
                        // Content is a function of the uuid, so the first copy and
                        // any resend are the same event.
                        let back = if historic { 120 } else { 0 } * MICROS_PER_DAY;
                        let mut e = event(n, now - back - n as i64 * 1000);
                        e.received_at = now;
                        e
                    })
                    .collect::<Vec<_>>();
                let lsn = wal.len() as u64 + 1;
                let b = batch(TenantId(tenant), events);
                store.apply(lsn, &b).unwrap();
                let slot = reference.entry(TenantId(tenant)).or_default();
                for e in &b.events {
                    slot.entry(e.uuid.as_u128()).or_insert_with(|| e.clone());
                }
                wal.push((lsn, b));
            }
            Op::Flush => {
                store.flush().await.unwrap();
            }
            Op::Compact => {
                store.compact_once().await.unwrap();
            }
            Op::Reopen => {
                drop(store);
                store = open().await.unwrap();
                let durable = store.durable_lsn();
                for (lsn, b) in wal.iter().filter(|(lsn, _)| *lsn > durable) {
                    store.apply(*lsn, b).unwrap();
                }
            }
        }
        for tenant in [TenantId(1), TenantId(2)] {
            let mut expected: Vec<_> = reference
                .get(&tenant)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            expected.sort_by_key(|e| (e.timestamp, e.uuid));
            let actual = store.scan_events(tenant).await.unwrap();
            prop_assert_eq!(actual.len(), expected.len(), "tenant {}", tenant);
            prop_assert_eq!(actual, expected);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 100, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_a_deduplicating_reference(ops in prop::collection::vec(op(), 1..16)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops))?;
    }
}
