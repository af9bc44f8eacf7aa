//! A separate, low-priority runtime for the store's flushes and compactions.
//!
//! Both are seconds of CPU at a time (sorting and Parquet-encoding hundreds of
//! thousands of rows) on a machine whose two cores also serve ingest. On the request
//! runtime they delay every request queued behind them: at half of the maximum ingest
//! rate, a flush every few seconds put the 99th-percentile acknowledgement latency
//! above 100 ms. Here they run on their own threads with a higher nice value, so the
//! kernel gives the request path the CPU first and background work the rest — which,
//! below full load, is plenty. DataFusion tasks that a compaction spawns land on this
//! runtime too, not on the request workers.
//!
//! Background work cannot starve forever: CFS gives a nice-10 thread about a tenth of
//! a contended core, and at full load the buffer limit (`max_buffer_bytes`) turns a
//! backlog into 503s with Retry-After instead of unbounded memory.

use std::future::Future;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Owns the background runtime. Dropping it stops the runtime without blocking, so it
/// may be dropped from async code.
pub(crate) struct BackgroundRuntime {
    runtime: Option<Runtime>,
}

impl BackgroundRuntime {
    /// One worker thread (flushes and compactions run one at a time anyway, under the
    /// store's publish lock) plus a small blocking pool for file writes, every thread
    /// at `niceness` (0 leaves the priority alone; only Linux supports per-thread nice
    /// values, elsewhere it is ignored).
    pub(crate) fn new(niceness: i32) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .thread_name("tally-background")
            .enable_all()
            .on_thread_start(move || lower_priority(niceness))
            .build()?;
        Ok(BackgroundRuntime {
            runtime: Some(runtime),
        })
    }

    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .spawn(future)
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_priority(niceness: i32) {
    if niceness == 0 {
        return;
    }
    // On Linux the nice value is per thread: PRIO_PROCESS with `who == 0` sets the
    // calling thread's, not the whole process's.
    // SAFETY: setpriority has no memory-safety preconditions.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, niceness) };
    if result != 0 {
        tracing::warn!(
            niceness,
            error = %std::io::Error::last_os_error(),
            "Could not lower the background threads' priority; flushes and compactions compete with requests."
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_niceness: i32) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn current_thread_niceness() -> i32 {
        // SAFETY: getpriority has no memory-safety preconditions.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn background_threads_run_at_the_configured_niceness() {
        let before = current_thread_niceness();
        let runtime = BackgroundRuntime::new(7).unwrap();
        let worker = runtime.spawn(async { current_thread_niceness() });
        let blocking = runtime.spawn(async {
            tokio::task::spawn_blocking(current_thread_niceness)
                .await
                .unwrap()
        });
        let on_runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(on_runtime.block_on(worker).unwrap(), (before + 7).min(19));
        assert_eq!(on_runtime.block_on(blocking).unwrap(), (before + 7).min(19));
        // The caller's thread is untouched.
        assert_eq!(current_thread_niceness(), before);
    }

    #[tokio::test]
    async fn dropping_inside_async_code_does_not_panic() {
        let runtime = BackgroundRuntime::new(0).unwrap();
        let handle = runtime.spawn(async { 41 + 1 });
        assert_eq!(handle.await.unwrap(), 42);
        drop(runtime);
    }
}
