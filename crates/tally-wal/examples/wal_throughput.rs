//! Throughput micro-benchmark of the write-ahead log's group commit.
//!
//! `cargo run -p tally-wal --example wal_throughput [--release] -- [DIR] [SCALE]`
//!
//! Appends records of 1 KiB and of 100 KiB from many concurrent appenders (tokio
//! tasks awaiting each append, and plain threads blocking on each append) into a
//! log in DIR (default: a temporary directory on the same disk as the system temp
//! dir), and prints records/s, MB/s and the average group size (records per
//! fdatasync). SCALE (default 1.0) multiplies the record counts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tally_wal::{FaultInjector, Wal, WalConfig};

/// Counts segment fsyncs through the fault-injection hook (it never fails).
#[derive(Debug, Default)]
struct SyncCounter {
    syncs: AtomicU64,
}

impl FaultInjector for SyncCounter {
    fn before_sync(&self, _segment: &Path) -> std::io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Appenders {
    TokioTasks(usize),
    Threads(usize),
}

struct Outcome {
    records: u64,
    bytes: u64,
    elapsed: Duration,
    syncs: u64,
}

fn run(dir: &Path, record_bytes: usize, records: u64, appenders: Appenders) -> Outcome {
    let _ = std::fs::remove_dir_all(dir);
    let counter = Arc::new(SyncCounter::default());
    let mut config = WalConfig::new(dir);
    config.faults = Some(counter.clone());
    let (wal, _) = Wal::open(config).expect("open the benchmark log");
    let wal = Arc::new(wal);
    let started = Instant::now();
    match appenders {
        Appenders::TokioTasks(tasks) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .expect("tokio runtime");
            runtime.block_on(async {
                let handles: Vec<_> = (0..tasks as u64)
                    .map(|task| {
                        let wal = Arc::clone(&wal);
                        let share =
                            records / tasks as u64 + u64::from(task < records % tasks as u64);
                        tokio::spawn(async move {
                            for _ in 0..share {
                                append_retrying(&wal, record_bytes).await;
                            }
                        })
                    })
                    .collect();
                for handle in handles {
                    handle.await.expect("appender task");
                }
            });
        }
        Appenders::Threads(threads) => {
            let handles: Vec<_> = (0..threads as u64)
                .map(|t| {
                    let wal = Arc::clone(&wal);
                    let share = records / threads as u64 + u64::from(t < records % threads as u64);
                    thread::spawn(move || {
                        for _ in 0..share {
                            loop {
                                match wal.append(vec![7u8; record_bytes]) {
                                    Ok(future) => {
                                        future.wait().expect("durable");
                                        break;
                                    }
                                    Err(tally_wal::Error::Backpressure { .. }) => {
                                        thread::sleep(Duration::from_millis(1))
                                    }
                                    Err(e) => panic!("append failed: {e}"),
                                }
                            }
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.join().expect("appender thread");
            }
        }
    }
    let elapsed = started.elapsed();
    let syncs = counter.syncs.load(Ordering::Relaxed);
    drop(wal);
    let _ = std::fs::remove_dir_all(dir);
    Outcome {
        records,
        bytes: records * record_bytes as u64,
        elapsed,
        syncs,
    }
}

async fn append_retrying(wal: &Wal, record_bytes: usize) {
    loop {
        match wal.append(vec![7u8; record_bytes]) {
            Ok(future) => {
                future.await.expect("durable");
                return;
            }
            Err(tally_wal::Error::Backpressure { .. }) => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) => panic!("append failed: {e}"),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let holder;
    let base: PathBuf = match args.next().filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            holder = tempfile::tempdir().expect("temporary directory");
            holder.path().to_path_buf()
        }
    };
    let scale: f64 = args
        .next()
        .map(|s| s.parse().expect("SCALE must be a number"))
        .unwrap_or(1.0);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("profile: {profile}; log directory under {}", base.display());
    let scenarios = [
        (1024, 200_000.0, Appenders::TokioTasks(512)),
        (1024, 50_000.0, Appenders::Threads(64)),
        (100 * 1024, 4_000.0, Appenders::TokioTasks(64)),
        (100 * 1024, 2_000.0, Appenders::Threads(16)),
    ];
    for (record_bytes, records, appenders) in scenarios {
        let records = ((records * scale) as u64).max(1);
        let outcome = run(&base.join("wal"), record_bytes, records, appenders);
        let secs = outcome.elapsed.as_secs_f64();
        let who = match appenders {
            Appenders::TokioTasks(n) => format!("{n} tokio tasks"),
            Appenders::Threads(n) => format!("{n} threads"),
        };
        println!(
            "{:>6} B records, {who:>15}: {:>9.0} records/s {:>8.1} MB/s  ({} records in {:.2} s, {:.1} records per fdatasync)",
            record_bytes,
            outcome.records as f64 / secs,
            outcome.bytes as f64 / secs / 1e6,
            outcome.records,
            secs,
            outcome.records as f64 / outcome.syncs.max(1) as f64,
        );
    }
}
