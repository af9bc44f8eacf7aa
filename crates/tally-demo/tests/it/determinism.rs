//! Same seed, same events; shards add up to the whole; totals are exact.

use std::collections::HashMap;

use tally_core::TenantId;
use tally_demo::{Error, TenantPlan, generate_tenant};

use crate::data::{collect, config};

#[test]
fn same_seed_same_events_other_seed_other_events() {
    let cfg = config(12_000, 3, 11);
    for tenant in 0..3 {
        let a = collect(&cfg, tenant, 1000);
        // A different chunk size must not change the events either.
        let b = collect(&cfg, tenant, 333);
        assert_eq!(a, b, "tenant {tenant}");
    }
    let other = config(12_000, 3, 12);
    assert_ne!(collect(&cfg, 0, 1000), collect(&other, 0, 1000));
}

#[test]
fn totals_and_shares_are_exact() {
    let cfg = config(40_003, 7, 3);
    let targets = cfg.tenant_targets().unwrap();
    assert_eq!(targets.iter().sum::<u64>(), 40_003);
    let share_sum: f64 = cfg.tenants.iter().map(|t| t.share).sum();
    let mut total = 0;
    for (i, target) in targets.iter().enumerate() {
        let exact = 40_003.0 * cfg.tenants[i].share / share_sum;
        assert!(
            (*target as f64 - exact).abs() <= 1.0,
            "tenant {i}: {target} vs {exact}"
        );
        let mut chunks = 0;
        let n = generate_tenant(&cfg, i, TenantId(9), 1024, |batch| {
            assert!(batch.events.len() <= 1024);
            assert_eq!(batch.tenant, TenantId(9));
            chunks += 1;
        })
        .unwrap();
        assert_eq!(n, *target, "tenant {i}");
        assert_eq!(chunks, n.div_ceil(1024));
        total += n;
    }
    assert_eq!(total, 40_003);
    // Shares are skewed: the first tenant is the largest.
    assert!(targets.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn tiny_and_empty_targets() {
    let cfg = config(1, 1, 1);
    assert_eq!(collect(&cfg, 0, 10).len(), 1);
    let mut cfg = config(0, 2, 1);
    assert!(collect(&cfg, 0, 10).is_empty());
    cfg.total_events = 100;
    cfg.tenants[1].share = 0.0;
    assert_eq!(collect(&cfg, 0, 7).len(), 100);
    assert!(collect(&cfg, 1, 7).is_empty());
}

#[test]
fn shards_partition_the_events() {
    let cfg = config(15_000, 1, 5);
    let whole = collect(&cfg, 0, 2000);
    let plan = TenantPlan::new(&cfg, 0).unwrap();
    let mut by_uuid: HashMap<_, _> = whole.into_iter().map(|e| (e.uuid, e)).collect();
    assert_eq!(by_uuid.len(), 15_000, "uuids are unique");
    for shard in 0..3 {
        for batch in plan.shard(TenantId(1), 700, shard, 3).unwrap() {
            for e in batch.events {
                let same = by_uuid
                    .remove(&e.uuid)
                    .expect("a shard event is in the whole");
                assert_eq!(same, e);
            }
        }
    }
    assert!(
        by_uuid.is_empty(),
        "{} events missing from shards",
        by_uuid.len()
    );
}

#[test]
fn bad_calls_get_clear_errors() {
    let cfg = config(100, 2, 1);
    assert_eq!(
        TenantPlan::new(&cfg, 2).unwrap_err(),
        Error::UnknownTenant { index: 2, count: 2 }
    );
    let plan = TenantPlan::new(&cfg, 0).unwrap();
    assert_eq!(
        plan.events_iter(TenantId(1), 0).unwrap_err(),
        Error::ZeroChunk
    );
    assert_eq!(
        plan.shard(TenantId(1), 10, 3, 3).unwrap_err(),
        Error::InvalidShard {
            shard: 3,
            shards: 3
        }
    );
    assert!(plan.shard(TenantId(1), 10, 0, 0).is_err());
    let mut bad = cfg.clone();
    bad.tenants.clear();
    assert_eq!(
        generate_tenant(&bad, 0, TenantId(1), 10, |_| {}).unwrap_err(),
        Error::NoTenants
    );
    let msg = Error::UnknownTenant { index: 2, count: 2 }.to_string();
    assert!(msg.contains("out of range"), "{msg}");
}
