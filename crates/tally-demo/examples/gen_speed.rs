//! One-off measurement of generation speed and event size.
//!
//! `cargo run -p tally-demo --example gen_speed -- [EVENTS] [TENANTS] [THREADS]`
//! (env `CHUNK`, default 10000; `SHOW_EXAMPLES=1` prints one event of each name).
//!
//! Generates EVENTS events over TENANTS default tenants (tenant-per-thread across
//! THREADS threads, largest tenant first), drops them, and prints throughput plus the
//! mean serialised size and property count of a sample.
//!
//! Measured once (release, 2-core shared box under load, glibc malloc, 1 tenant):
//! ~150k events/s per core with CHUNK=10000, ~295k with CHUNK=1000, ~290k with
//! CHUNK=100. The same code with mimalloc as the global allocator: ~330k / ~700k /
//! ~850k. A profile shows ~75 % of the glibc run in malloc/free and cloning the
//! session's property map, so the allocator of the final binary and the chunk size
//! matter far more than the simulation. Planning costs ~0.06 s per million events;
//! peak RSS was 15 MB for 1M events and 20 MB for 4M.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use tally_core::TenantId;
use tally_demo::{DemoConfig, TenantPlan};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let events: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let tenants: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let threads: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1)
        .max(1);
    let show = std::env::var("SHOW_EXAMPLES").is_ok_and(|v| v == "1");
    let chunk: usize = std::env::var("CHUNK")
        .ok()
        .map(|c| c.parse())
        .transpose()?
        .unwrap_or(10_000);
    let cfg = DemoConfig::ending_now(events, tenants, 42);

    let started = Instant::now();
    let plans = (0..tenants)
        .map(|i| TenantPlan::new(&cfg, i))
        .collect::<Result<Vec<_>, _>>()?;
    let planned = started.elapsed();

    let next = Mutex::new(0usize);
    let stats = Mutex::new((0u64, 0u64, 0u64, 0u64, BTreeMap::<String, String>::new()));
    let gen_started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(plan) = plans.get(i) else { break };
                    let (mut count, mut sampled, mut bytes, mut props) = (0u64, 0u64, 0u64, 0u64);
                    let mut examples = BTreeMap::new();
                    for batch in plan.events_iter(TenantId(i as u32 + 1), chunk).unwrap() {
                        for (j, e) in batch.events.iter().enumerate() {
                            if (count + j as u64).is_multiple_of(97) {
                                sampled += 1;
                                bytes += serde_json::to_vec(e).unwrap().len() as u64;
                                props += e.properties.len() as u64;
                            }
                            if show && !examples.contains_key(&e.event) {
                                examples.insert(
                                    e.event.clone(),
                                    serde_json::to_string_pretty(e).unwrap(),
                                );
                            }
                        }
                        count += batch.events.len() as u64;
                    }
                    let mut st = stats.lock().unwrap();
                    st.0 += count;
                    st.1 += sampled;
                    st.2 += bytes;
                    st.3 += props;
                    for (k, v) in examples {
                        st.4.entry(k).or_insert(v);
                    }
                }
            });
        }
    });
    let generated = gen_started.elapsed();
    let (count, sampled, bytes, props, examples) = stats.into_inner().unwrap();
    for e in examples.values() {
        println!("{e}");
    }
    let persons: u64 = plans.iter().map(|p| p.persons()).sum();
    println!(
        "profile={} events={count} persons={persons} tenants={tenants} threads={threads}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "plan {:.2}s, generate {:.2}s => {:.0} events/s ({:.0} per thread)",
        planned.as_secs_f64(),
        generated.as_secs_f64(),
        count as f64 / generated.as_secs_f64(),
        count as f64 / generated.as_secs_f64() / threads as f64
    );
    println!(
        "mean JSON size {:.0} B, mean properties {:.1} (sample of {sampled})",
        bytes as f64 / sampled.max(1) as f64,
        props as f64 / sampled.max(1) as f64
    );
    Ok(())
}
