//! In-memory dedup state: which `(tenant, uuid)` pairs the store already holds.
//!
//! Two tiers, both bounded:
//! - the *recent index*, every uuid received within the dedup window (by
//!   `received_at`), rebuilt at `open` from recent files and then by WAL replay;
//! - *historic partition sets*, the complete uuid set of a tenant partition, loaded
//!   lazily (by the store) when an event with an old timestamp arrives, kept in an
//!   LRU bounded by the total number of uuids.
//!
//! The recent index is *generational* so that no operation under the dedup lock
//! (which every `apply`, hence every ingest acknowledgement, waits for) touches more
//! than a small, bounded amount of memory: a generation is a hash set that is
//! allocated once and never grows (no rehash of millions of entries at a
//! power-of-two threshold), expiry and the size cap drop whole generations (no walk
//! over the index), and dropped generations are handed to the caller to free after
//! it releases the lock ([`DedupIndex::take_retired`]).
//!
//! This module owns the data structures and their bounds; the store decides when to
//! consult which tier, when to sweep, and loads partition sets (it owns the files).

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};

use lru::LruCache;
use tally_core::TenantId;

use crate::config::PartitionStart;

pub(crate) type PartitionKey = (TenantId, PartitionStart);

/// Entries of the first generation (and of the first one after the index emptied).
/// Small, so that an idle or small store does not pay for a big table; the doubling
/// reaches the per-generation cap after a few generations.
const FIRST_GENERATION_ENTRIES: usize = 64 * 1024;

/// A generation holds at most `max_recent / GENERATIONS_AT_CAP` entries, so a full
/// index is a handful of generations and the cap evicts a bounded fraction at once.
const GENERATIONS_AT_CAP: usize = 4;

/// A recent-index entry: 20 bytes, 4-aligned, no value (the received_at bounds live
/// on the generation). `(u32, u128)` would be 32 bytes because u128 is 16-aligned.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RecentKey {
    tenant: u32,
    uuid: [u8; 16],
}

impl RecentKey {
    fn new(tenant: TenantId, uuid: u128) -> Self {
        RecentKey {
            tenant: tenant.0,
            uuid: uuid.to_ne_bytes(),
        }
    }
}

impl Hash for RecentKey {
    // Two word writes instead of the derived per-byte slice hashing.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.uuid));
        state.write_u32(self.tenant);
    }
}

/// One generation of the recent index: a hash set allocated with its final capacity,
/// plus the range of `received_at` its entries were received at.
struct Generation {
    /// Seeded randomly per process and per set (foldhash `RandomState`), so a client
    /// choosing uuids cannot aim them at one bucket.
    keys: HashSet<RecentKey, foldhash::fast::RandomState>,
    /// Entries this generation takes before the next one starts; never above
    /// `keys.capacity()`, the bound under which the set cannot resize.
    limit: usize,
    /// Largest received_at of an entry: the generation expires once this leaves the
    /// window, so no entry expires early (some live a little longer than the window).
    newest_received_at: i64,
    /// Smallest received_at of an entry: the start of the window the generation
    /// covers, reported when the cap drops generations.
    oldest_received_at: i64,
}

impl Generation {
    /// A placeholder that takes no entries (and allocates nothing): the newest
    /// generation of an empty index.
    fn empty() -> Self {
        Generation {
            keys: HashSet::default(),
            limit: 0,
            newest_received_at: i64::MIN,
            oldest_received_at: i64::MAX,
        }
    }

    /// Allocates room for `requested` entries (`requested <= max_entries`). The hash
    /// set rounds its allocation up; the generation uses all of it, up to
    /// `max_entries`.
    fn with_room(requested: usize, max_entries: usize) -> Self {
        let keys = HashSet::with_capacity_and_hasher(requested, Default::default());
        let limit = keys.capacity().min(max_entries).max(1);
        Generation {
            keys,
            limit,
            ..Generation::empty()
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn is_full(&self) -> bool {
        self.keys.len() >= self.limit
    }

    fn note_received(&mut self, received_at: i64) {
        self.newest_received_at = self.newest_received_at.max(received_at);
        self.oldest_received_at = self.oldest_received_at.min(received_at);
    }

    /// Whether every entry was received before `cutoff`.
    fn expired(&self, cutoff: i64) -> bool {
        !self.keys.is_empty() && self.newest_received_at < cutoff
    }
}

// Not derived: a derived Debug would print millions of uuids.
impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generation")
            .field("len", &self.keys.len())
            .field("limit", &self.limit)
            .field("newest_received_at", &self.newest_received_at)
            .field("oldest_received_at", &self.oldest_received_at)
            .finish()
    }
}

/// Generations dropped from the recent index but not yet freed. Freeing one (up to
/// a few hundred MB) returns its pages to the OS, which takes milliseconds: drop this
/// after releasing the dedup lock.
#[must_use = "drop it after releasing the dedup lock"]
#[derive(Debug, Default)]
pub(crate) struct RetiredGenerations(
    // Never read outside tests: the point of holding it is where it is dropped.
    #[allow(dead_code)] Vec<Generation>,
);

impl RetiredGenerations {
    /// Entries held by the retired generations.
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.0.iter().map(Generation::len).sum()
    }
}

#[derive(Debug)]
pub(crate) struct DedupIndex {
    /// Full generations, oldest first. Their limits never decrease front to back
    /// (each new generation doubles the previous limit up to the per-generation cap).
    older: VecDeque<Generation>,
    /// Where inserts go; replaced by a fresh generation once full.
    newest: Generation,
    /// Entries in `older` and `newest`.
    recent_len: usize,
    window_micros: i64,
    max_recent: usize,
    first_generation_entries: usize,
    max_generation_entries: usize,
    /// Generations dropped by expiry or the cap, for the caller to free unlocked.
    retired: Vec<Generation>,
    /// Unbounded by entry count on purpose: the bound is on uuids, enforced in
    /// `install_historic`.
    historic: LruCache<PartitionKey, HashSet<u128>>,
    historic_uuids: usize,
    max_historic: usize,
}

impl DedupIndex {
    pub fn new(window_micros: i64, max_recent: usize, max_historic: usize) -> Self {
        Self::with_first_generation(
            window_micros,
            max_recent,
            max_historic,
            FIRST_GENERATION_ENTRIES,
        )
    }

    fn with_first_generation(
        window_micros: i64,
        max_recent: usize,
        max_historic: usize,
        first_generation_entries: usize,
    ) -> Self {
        let max_recent = max_recent.max(1);
        let max_generation_entries = (max_recent / GENERATIONS_AT_CAP).max(1);
        DedupIndex {
            older: VecDeque::new(),
            newest: Generation::empty(),
            recent_len: 0,
            window_micros,
            max_recent,
            first_generation_entries: first_generation_entries.clamp(1, max_generation_entries),
            max_generation_entries,
            retired: Vec::new(),
            historic: LruCache::unbounded(),
            historic_uuids: 0,
            max_historic,
        }
    }

    /// Probes the generations newest first (a duplicate is most likely a retry of
    /// something received moments ago). The cost is one lookup per generation, which
    /// is acceptable because there are few: with the default 20 M cap the sizes go
    /// 112 Ki, 224 Ki, ... 3.5 Mi entries (doubling, then the largest that fits a
    /// quarter of the cap), so about 11 generations when the cap is first reached and
    /// 6 once the small ones are evicted (5 full + the newest; never more than
    /// `2 * GENERATIONS_AT_CAP + 1` at the cap). A lookup that misses reads one group
    /// of control bytes (a single cache line) and almost never an entry, so a new
    /// uuid costs ~6 cache misses (~0.5 µs) against ~1 for one big map: tens of
    /// milliseconds per second at 100k events/s, spread evenly over all applies,
    /// instead of one apply stalled for hundreds of milliseconds by a rehash.
    pub fn contains_recent(&self, tenant: TenantId, uuid: u128) -> bool {
        let key = RecentKey::new(tenant, uuid);
        self.newest.keys.contains(&key) || self.older.iter().rev().any(|g| g.keys.contains(&key))
    }

    /// Records a stored uuid. Returns how many entries were evicted early because the
    /// index is full (whole oldest generations; the returned generations wait in
    /// [`Self::take_retired`]).
    ///
    /// The probe for an existing entry repeats `contains_recent`'s, which `apply` has
    /// just made for the same key: the control bytes it reads are still in cache.
    pub fn insert_recent(&mut self, tenant: TenantId, uuid: u128, received_at: i64) -> usize {
        let key = RecentKey::new(tenant, uuid);
        // An entry already held stays where it is; its generation now lives at least
        // as long as this receipt requires.
        if self.newest.keys.contains(&key) {
            self.newest.note_received(received_at);
            return 0;
        }
        if let Some(generation) = self.older.iter_mut().rev().find(|g| g.keys.contains(&key)) {
            generation.note_received(received_at);
            return 0;
        }
        if self.newest.is_full() {
            self.start_generation();
        }
        // Cannot resize: `start_generation` guarantees len < limit <= capacity.
        self.newest.keys.insert(key);
        self.newest.note_received(received_at);
        self.recent_len += 1;
        if self.recent_len > self.max_recent {
            self.evict_oldest()
        } else {
            0
        }
    }

    /// Moves the full newest generation to `older` and starts one with twice its
    /// limit, up to the per-generation cap. Allocating is cheap (the table's memory is
    /// touched as it fills); only the control bytes are initialised now.
    fn start_generation(&mut self) {
        let last_limit = if self.newest.limit > 0 {
            Some(self.newest.limit)
        } else {
            self.older.back().map(|g| g.limit)
        };
        // Doubling the previous (already rounded-up) capacity keeps every table
        // exactly full at its limit. Once doubling would pass the per-generation cap
        // the size stays: requesting the cap itself would allocate a table rounded up
        // to the next power of two and leave up to half of it unused.
        let requested = match last_limit {
            None => self.first_generation_entries,
            Some(last) if last.saturating_mul(2) <= self.max_generation_entries => last * 2,
            Some(last) => last,
        };
        let fresh = Generation::with_room(requested, self.max_generation_entries);
        tracing::debug!(
            limit = fresh.limit,
            generations = self.older.len() + 1,
            entries = self.recent_len,
            "recent dedup index starts a generation"
        );
        let full = std::mem::replace(&mut self.newest, fresh);
        if full.len() > 0 {
            self.older.push_back(full);
        }
        self.publish_generations();
    }

    /// Drops the oldest generations while the index is over its cap. The newest
    /// generation holds at most a quarter of the cap, so this always gets under it.
    fn evict_oldest(&mut self) -> usize {
        let mut evicted = 0;
        while self.recent_len > self.max_recent {
            let Some(oldest) = self.older.pop_front() else {
                break;
            };
            evicted += oldest.len();
            self.recent_len -= oldest.len();
            self.retired.push(oldest);
        }
        if evicted > 0 {
            metrics::counter!("tally_store_dedup_recent_evicted_total").increment(evicted as u64);
            self.publish_generations();
        }
        evicted
    }

    /// Drops generations whose every entry fell out of the window. Costs one
    /// comparison per generation, so the store may call it as often as it likes.
    pub fn sweep(&mut self, now_micros: i64) {
        let cutoff = now_micros.saturating_sub(self.window_micros);
        if self.newest.expired(cutoff) {
            let expired = std::mem::replace(&mut self.newest, Generation::empty());
            self.retire_expired(expired);
        }
        // Received_at is not monotonic (clock steps, the rebuild at open reads files
        // in partition order), so any generation may expire, not only the oldest.
        if self.older.iter().any(|g| g.expired(cutoff)) {
            let mut kept = VecDeque::with_capacity(self.older.len());
            for generation in std::mem::take(&mut self.older) {
                if generation.expired(cutoff) {
                    self.retire_expired(generation);
                } else {
                    kept.push_back(generation);
                }
            }
            self.older = kept;
        }
        self.publish_generations();
    }

    fn retire_expired(&mut self, generation: Generation) {
        self.recent_len -= generation.len();
        self.retired.push(generation);
    }

    /// Hands over the generations dropped since the last call, to be freed after the
    /// dedup lock is released. Generations not taken are freed by a later caller, so
    /// forgetting to call this delays freeing but leaks nothing for long (every
    /// `apply` takes them).
    pub fn take_retired(&mut self) -> RetiredGenerations {
        RetiredGenerations(std::mem::take(&mut self.retired))
    }

    pub fn recent_len(&self) -> usize {
        self.recent_len
    }

    /// Generations holding entries (the number of probes of a `contains_recent`).
    pub fn recent_generations(&self) -> usize {
        self.older.len() + usize::from(self.newest.len() > 0)
    }

    /// The smallest received_at still held: after the cap evicted generations,
    /// roughly where the exact window now starts (exactly, if received_at only grew).
    pub fn oldest_recent_received_at(&self) -> Option<i64> {
        self.older
            .iter()
            .chain(std::iter::once(&self.newest))
            .filter(|g| g.len() > 0)
            .map(|g| g.oldest_received_at)
            .min()
    }

    fn publish_generations(&self) {
        metrics::gauge!("tally_store_dedup_recent_generations")
            .set(self.recent_generations() as f64);
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
        // The cap of 10 makes generations of 2: one more than the cap drops the
        // oldest generation.
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
    fn recent_keys_are_twenty_bytes() {
        assert_eq!(std::mem::size_of::<RecentKey>(), 20);
        assert_eq!(std::mem::align_of::<RecentKey>(), 4);
    }

    /// Structural invariants: no generation past its no-resize bound, limits never
    /// decrease, every older generation full, counts consistent.
    fn check_structure(d: &DedupIndex) {
        let mut previous_limit = 0;
        for g in &d.older {
            assert!(g.limit <= g.keys.capacity(), "{g:?} could resize");
            assert!(g.limit <= d.max_generation_entries, "{g:?}");
            assert_eq!(g.len(), g.limit, "older generations are full: {g:?}");
            assert!(g.limit >= previous_limit, "limits never decrease");
            previous_limit = g.limit;
        }
        assert!(d.newest.len() <= d.newest.limit);
        assert!(
            d.newest.limit <= d.newest.keys.capacity(),
            "the newest could resize"
        );
        assert!(d.newest.limit <= d.max_generation_entries);
        assert!(d.newest.limit == 0 || d.newest.limit >= previous_limit);
        let total: usize = d.older.iter().map(Generation::len).sum::<usize>() + d.newest.len();
        assert_eq!(total, d.recent_len());
        assert!(
            d.recent_len() <= d.max_recent,
            "the cap holds without slack"
        );
    }

    /// The generation-count bound argued on `contains_recent`: the generations below
    /// the plateau size at least double each time (log2 of cap / first, plus one), the
    /// plateau ones hold more than half the per-generation cap each and are full (so
    /// at most 2 * max / per-generation cap of them), plus the newest.
    fn generation_bound(d: &DedupIndex) -> usize {
        let ramp = (d.max_generation_entries / d.first_generation_entries).ilog2() as usize + 1;
        ramp + 2 * d.max_recent / d.max_generation_entries + 1
    }

    #[test]
    fn sustained_load_keeps_generations_few_and_the_window_nearly_full() {
        let max_recent = 4000;
        let mut d = DedupIndex::with_first_generation(i64::MAX, max_recent, 0, 16);
        let mut evicted_total = 0;
        for i in 0..100_000u128 {
            let evicted = d.insert_recent(TenantId(7), i, i as i64);
            evicted_total += evicted;
            // Eviction only ever drops whole generations of at most a quarter of the cap.
            assert!(evicted <= max_recent / GENERATIONS_AT_CAP);
            assert!(d.recent_generations() <= generation_bound(&d));
            if i % 997 == 0 {
                check_structure(&d);
            }
        }
        check_structure(&d);
        // At the cap: the small ramp-up generations are gone and a handful remain.
        assert!(d.recent_generations() <= 2 * GENERATIONS_AT_CAP + 1);
        assert!(d.recent_len() > max_recent - max_recent / GENERATIONS_AT_CAP);
        assert_eq!(evicted_total, 100_000 - d.recent_len());
        assert_eq!(d.take_retired().entries(), evicted_total);
        assert_eq!(d.take_retired().entries(), 0, "taken once");
        // The cap dropped a prefix in insertion order: what is left is a suffix.
        let oldest_kept = 100_000 - d.recent_len() as u128;
        assert!(!d.contains_recent(TenantId(7), oldest_kept - 1));
        assert!((oldest_kept..100_000).all(|i| d.contains_recent(TenantId(7), i)));
        assert_eq!(d.oldest_recent_received_at(), Some(oldest_kept as i64));
    }

    #[test]
    fn generations_double_then_plateau() {
        let mut d = DedupIndex::with_first_generation(i64::MAX, 1 << 20, 0, 8);
        for i in 0..200_000u128 {
            d.insert_recent(TenantId(1), i, 0);
        }
        check_structure(&d);
        let limits: Vec<usize> = d.older.iter().map(|g| g.limit).collect();
        for pair in limits.windows(2) {
            assert!(
                pair[1] == 2 * pair[0] || pair[1] == pair[0],
                "limits double, then stay: {limits:?}"
            );
            assert!(pair[1] <= (1 << 20) / GENERATIONS_AT_CAP);
        }
        assert!(limits.len() <= generation_bound(&d), "{limits:?}");
    }

    #[test]
    fn sweep_retires_whole_expired_generations_in_any_position() {
        let mut d = DedupIndex::with_first_generation(100, 1000, 0, 4);
        // Generations fill as received_at goes 1000..1040, except that the second
        // one also gets an entry received at 5000: it must outlive the others, even
        // the newest one.
        for i in 0..40u128 {
            d.insert_recent(TenantId(1), i, 1000 + i as i64);
        }
        let first_limit = d.older[0].limit;
        let second_generation_uuid = u128::try_from(first_limit).unwrap();
        d.insert_recent(TenantId(1), second_generation_uuid, 5000);
        let generations = d.recent_generations();
        assert!(generations >= 3);
        d.sweep(1000 + 100 + 6);
        assert_eq!(
            d.recent_generations(),
            generations,
            "nothing entirely expired"
        );
        d.sweep(1000 + 100 + 40);
        assert_eq!(
            d.recent_generations(),
            1,
            "only the one bumped to 5000 is left"
        );
        assert!(d.contains_recent(TenantId(1), second_generation_uuid));
        assert!(!d.contains_recent(TenantId(1), 0));
        assert!(!d.contains_recent(TenantId(1), 39));
        assert_eq!(d.take_retired().entries(), 40 - d.recent_len());
        check_structure(&d);
        d.sweep(5000 + 101);
        assert_eq!((d.recent_len(), d.recent_generations()), (0, 0));
        // Everything expired: the next generation starts small again.
        d.insert_recent(TenantId(1), 1, 6000);
        assert_eq!(d.newest.limit, first_limit);
        check_structure(&d);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { tenant: u32, uuid: u128, lag: i64 },
        Contains { tenant: u32, uuid: u128 },
        Advance(i64),
        Sweep,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..2u32, 0..48u128, 0..4i64)
                .prop_map(|(tenant, uuid, lag)| Op::Insert { tenant, uuid, lag }),
            3 => (0..2u32, 0..56u128).prop_map(|(tenant, uuid)| Op::Contains { tenant, uuid }),
            1 => (1..12i64).prop_map(Op::Advance),
            1 => Just(Op::Sweep),
        ]
    }

    /// The reference: a plain map of what the index must hold, keyed like the index,
    /// with the newest received_at. Entries leave it when a sweep's cutoff passes
    /// them, or when the index reports cap evictions (at most that many, see below).
    #[derive(Default)]
    struct Reference {
        must_hold: HashMap<(u32, u128), i64>,
        ever_inserted: HashSet<(u32, u128)>,
        newest_received_at: Option<i64>,
    }

    use std::collections::HashMap;

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn recent_index_matches_a_plain_map(
            window in 1..40i64,
            max_recent in 1..40usize,
            first in 1..6usize,
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let mut d = DedupIndex::with_first_generation(window, max_recent, 0, first);
            let mut reference = Reference::default();
            let mut now = 100i64;
            for op in ops {
                match op {
                    Op::Insert { tenant, uuid, lag } => {
                        let received_at = now - lag;
                        let before = d.recent_len();
                        let evicted = d.insert_recent(TenantId(tenant), uuid, received_at);
                        let added = (d.recent_len() + evicted).checked_sub(before);
                        prop_assert!(matches!(added, Some(0 | 1)), "len accounting");
                        reference.ever_inserted.insert((tenant, uuid));
                        let held = reference.must_hold.entry((tenant, uuid)).or_insert(received_at);
                        *held = (*held).max(received_at);
                        reference.newest_received_at =
                            reference.newest_received_at.max(Some(received_at));
                        prop_assert!(d.contains_recent(TenantId(tenant), uuid));
                        // A cap eviction drops whole generations of physical entries,
                        // each one key: at most `evicted` of the keys that must be held
                        // may go, and only by an insert that reports evicting.
                        let lost: Vec<_> = reference
                            .must_hold
                            .keys()
                            .filter(|(t, u)| !d.contains_recent(TenantId(*t), *u))
                            .copied()
                            .collect();
                        prop_assert!(lost.len() <= evicted, "lost {lost:?}, evicted {evicted}");
                        for key in lost {
                            reference.must_hold.remove(&key);
                        }
                    }
                    Op::Contains { tenant, uuid } => {
                        let found = d.contains_recent(TenantId(tenant), uuid);
                        if found {
                            prop_assert!(reference.ever_inserted.contains(&(tenant, uuid)));
                        }
                        if reference.must_hold.contains_key(&(tenant, uuid)) {
                            prop_assert!(found);
                        }
                    }
                    Op::Advance(by) => now += by,
                    Op::Sweep => {
                        d.sweep(now);
                        let cutoff = now - window;
                        reference.must_hold.retain(|_, received_at| *received_at >= cutoff);
                        if reference.newest_received_at.is_none_or(|newest| newest < cutoff) {
                            prop_assert_eq!(d.recent_len(), 0, "everything expired");
                        }
                    }
                }
                for (tenant, uuid) in reference.must_hold.keys() {
                    prop_assert!(d.contains_recent(TenantId(*tenant), *uuid));
                }
                prop_assert!(d.recent_len() <= max_recent);
                prop_assert!(d.recent_generations() <= generation_bound(&d));
                check_structure(&d);
            }
        }
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
