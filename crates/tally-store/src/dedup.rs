//! In-memory dedup state: which `(tenant, uuid)` pairs the store already holds.
//!
//! Two tiers, both bounded:
//! - the *recent index*, every uuid received within the dedup window (by
//!   `received_at`), rebuilt at `open` from recent files and then by WAL replay;
//! - *historic partition sets*, the complete uuid set of a tenant partition, loaded
//!   lazily (by the store) when an event with an old timestamp arrives, kept in an
//!   LRU bounded by the total number of uuids.
//!
//! This module owns the data structures and their bounds; the store decides when to
//! consult which tier and loads partition sets (it owns the files).

use std::collections::{HashMap, HashSet};

use lru::LruCache;
use tally_core::TenantId;

use crate::config::PartitionStart;

pub(crate) type PartitionKey = (TenantId, PartitionStart);

#[derive(Debug)]
pub(crate) struct DedupIndex {
    /// `(tenant, uuid)` -> received_at.
    recent: HashMap<(u32, u128), i64>,
    window_micros: i64,
    max_recent: usize,
    last_sweep: i64,
    /// Unbounded by entry count on purpose: the bound is on uuids, enforced in
    /// `install_historic`.
    historic: LruCache<PartitionKey, HashSet<u128>>,
    historic_uuids: usize,
    max_historic: usize,
}

impl DedupIndex {
    pub fn new(window_micros: i64, max_recent: usize, max_historic: usize) -> Self {
        DedupIndex {
            recent: HashMap::new(),
            window_micros,
            max_recent: max_recent.max(1),
            last_sweep: i64::MIN,
            historic: LruCache::unbounded(),
            historic_uuids: 0,
            max_historic,
        }
    }

    pub fn contains_recent(&self, tenant: TenantId, uuid: u128) -> bool {
        self.recent.contains_key(&(tenant.0, uuid))
    }

    /// Records a stored uuid. Returns how many entries were evicted early because the
    /// index is full.
    pub fn insert_recent(&mut self, tenant: TenantId, uuid: u128, received_at: i64) -> usize {
        let slot = self.recent.entry((tenant.0, uuid)).or_insert(received_at);
        *slot = (*slot).max(received_at);
        if self.recent.len() > self.max_recent {
            self.evict_oldest()
        } else {
            0
        }
    }

    /// Drops entries that fell out of the window.
    pub fn sweep(&mut self, now_micros: i64) {
        let cutoff = now_micros.saturating_sub(self.window_micros);
        self.recent.retain(|_, received| *received >= cutoff);
        self.last_sweep = now_micros;
    }

    /// Sweeps when a 24th of the window has passed since the last sweep: a sweep
    /// walks the whole index (under the lock `apply` needs), so not on every flush;
    /// entries outliving the window by a little only make dedup slightly stricter.
    pub fn maybe_sweep(&mut self, now_micros: i64) {
        if now_micros.saturating_sub(self.last_sweep) >= self.window_micros / 24 {
            self.sweep(now_micros);
        }
    }

    // Evicts the oldest tenth so that eviction is amortised rather than per insert.
    fn evict_oldest(&mut self) -> usize {
        let target = self.max_recent - self.max_recent / 10;
        let excess = self.recent.len().saturating_sub(target);
        if excess == 0 {
            return 0;
        }
        let mut times: Vec<i64> = self.recent.values().copied().collect();
        let (_, cutoff, _) = times.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        let before = self.recent.len();
        self.recent.retain(|_, received| *received > cutoff);
        before - self.recent.len()
    }

    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    pub fn historic_uuids(&self) -> usize {
        self.historic_uuids
    }

    /// The loaded set of a partition, if any (marks it recently used).
    #[cfg(test)]
    pub fn historic_set(&mut self, key: &PartitionKey) -> Option<&mut HashSet<u128>> {
        self.historic.get_mut(key)
    }

    /// Removes and returns a partition's loaded set; give it back with
    /// [`Self::install_historic`].
    pub fn take_historic(&mut self, key: &PartitionKey) -> Option<HashSet<u128>> {
        let set = self.historic.pop(key)?;
        self.historic_uuids -= set.len();
        Some(set)
    }

    /// Installs a freshly loaded partition set, evicting least recently used sets
    /// while over budget. The new set itself is always kept, even if it alone exceeds
    /// the budget: it is needed for the event being applied.
    pub fn install_historic(&mut self, key: PartitionKey, set: HashSet<u128>) {
        self.historic_uuids += set.len();
        if let Some(old) = self.historic.put(key, set) {
            self.historic_uuids -= old.len();
        }
        while self.historic_uuids > self.max_historic && self.historic.len() > 1 {
            match self.historic.pop_lru() {
                Some((_, evicted)) => self.historic_uuids -= evicted.len(),
                None => break,
            }
        }
    }

    /// Adds a uuid to a loaded partition set (no-op if not loaded).
    pub fn note_historic(&mut self, key: &PartitionKey, uuid: u128) {
        if let Some(set) = self.historic.peek_mut(key)
            && set.insert(uuid)
        {
            self.historic_uuids += 1;
        }
    }

    /// Forgets a partition set, e.g. because files were added to it behind its back.
    pub fn invalidate(&mut self, key: &PartitionKey) {
        self.take_historic(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_index_sweeps_by_window_and_caps_size() {
        let mut d = DedupIndex::new(100, 10, 0);
        for i in 0..10u128 {
            assert_eq!(d.insert_recent(TenantId(1), i, i as i64 * 10), 0);
        }
        assert!(d.contains_recent(TenantId(1), 3));
        assert!(!d.contains_recent(TenantId(2), 3), "tenant scoped");
        // One more than the cap evicts the oldest tenth-plus.
        assert!(d.insert_recent(TenantId(1), 99, 1000) > 0);
        assert!(d.recent_len() <= 10);
        assert!(!d.contains_recent(TenantId(1), 0));
        assert!(d.contains_recent(TenantId(1), 99));
        d.sweep(1050);
        assert!(d.contains_recent(TenantId(1), 99));
        assert!(
            !d.contains_recent(TenantId(1), 9),
            "received at 90 < 1050 - 100"
        );
    }

    #[test]
    fn historic_sets_are_bounded_by_uuid_count() {
        let mut d = DedupIndex::new(100, 10, 5);
        let key = |p| (TenantId(1), PartitionStart(p));
        d.install_historic(key(1), (0..3).collect());
        d.install_historic(key(2), (0..3).collect());
        assert!(
            d.historic_set(&key(1)).is_none(),
            "evicted to stay within 5"
        );
        assert_eq!(d.historic_uuids(), 3);
        d.note_historic(&key(2), 7);
        assert!(d.historic_set(&key(2)).unwrap().contains(&7));
        assert_eq!(d.historic_uuids(), 4);
        d.invalidate(&key(2));
        assert_eq!(d.historic_uuids(), 0);
        d.install_historic(key(3), (0..9).collect());
        assert_eq!(
            d.historic_uuids(),
            9,
            "a single oversized set is still kept"
        );
    }
}
