//! Puts durable batches back into log order.
//!
//! Group commit completes many appends at once, and the tasks waiting on them wake in
//! any order. The store's watermark ("every record up to LSN n is in Parquet") is only
//! meaningful if records are applied in LSN order, so each completed append parks its
//! batch here and the run of consecutive LSNs starting at `next` is applied in order.

use std::collections::BTreeMap;

use tally_core::SinkError;
use tokio::sync::oneshot;

type Done = oneshot::Sender<Result<(), SinkError>>;

/// Parks items (durable batches, with whatever travels with them) until their LSN's
/// turn comes.
pub struct Sequencer<T> {
    next: u64,
    parked: BTreeMap<u64, (T, Done)>,
}

impl<T> Sequencer<T> {
    pub fn new(next: u64) -> Self {
        Sequencer {
            next,
            parked: BTreeMap::new(),
        }
    }

    /// Parks a durable batch; the receiver resolves once it has been applied.
    pub fn enqueue(&mut self, lsn: u64, batch: T) -> oneshot::Receiver<Result<(), SinkError>> {
        let (tx, rx) = oneshot::channel();
        if lsn < self.next {
            // Cannot happen with a correct log (LSNs are unique and start after the
            // replayed ones); refuse rather than apply out of order.
            let _ = tx.send(Err(SinkError::Internal(format!(
                "LSN {lsn} arrived after {} was applied",
                self.next - 1
            ))));
        } else {
            self.parked.insert(lsn, (batch, tx));
        }
        rx
    }

    /// Whether the next batch in LSN order has arrived.
    pub fn has_next(&self) -> bool {
        self.parked.contains_key(&self.next)
    }

    /// The next batch in LSN order, if it has arrived.
    pub fn pop_next(&mut self) -> Option<(u64, T, Done)> {
        let (batch, done) = self.parked.remove(&self.next)?;
        let lsn = self.next;
        self.next += 1;
        Some((lsn, batch, done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::{EventBatch, TenantId};

    fn batch(n: u32) -> EventBatch {
        EventBatch {
            tenant: TenantId(n),
            events: vec![],
        }
    }

    #[test]
    fn releases_only_consecutive_runs() {
        let mut s = Sequencer::new(1);
        let _r3 = s.enqueue(3, batch(3));
        let _r2 = s.enqueue(2, batch(2));
        assert!(s.pop_next().is_none(), "1 has not arrived");
        assert!(!s.has_next());
        let _r1 = s.enqueue(1, batch(1));
        assert!(s.has_next());
        let order: Vec<u64> = std::iter::from_fn(|| s.pop_next().map(|(lsn, _, _)| lsn)).collect();
        assert_eq!(order, vec![1, 2, 3]);
        let _r5 = s.enqueue(5, batch(5));
        assert!(s.pop_next().is_none());
    }

    #[test]
    fn refuses_an_already_applied_lsn() {
        let mut s = Sequencer::new(4);
        let mut rx = s.enqueue(2, batch(2));
        assert!(matches!(rx.try_recv(), Ok(Err(SinkError::Internal(_)))));
    }
}
