//! Planning a tenant (how many people make exactly its share of events) and sweeping
//! through its window day by day to build the events in bounded memory.
//!
//! The plan is a counting pass: people are simulated one after another, without
//! building properties, until their events reach the tenant's target; the last person
//! is cut short so the total is exact. The sweep then keeps only people who are still
//! active, filed under the day of their next session, and emits each day's sessions
//! before moving to the next day. Output is therefore ordered by day (within a day,
//! by person), and each person's events are in time order across chunks.
//!
//! People are independent, so the sweep can be split into shards (every `n`-th person)
//! that run on separate threads and together produce exactly the unsharded events.

use std::sync::Arc;

use tally_core::{Event, EventBatch, TenantId};

use crate::build::EventBuilder;
use crate::config::DemoConfig;
use crate::model::TenantModel;
use crate::person::{NEVER, Person, Spec};
use crate::{Error, Result};

/// Preallocation cap for a chunk buffer, so a huge `chunk` does not reserve gigabytes
/// up front.
const MAX_CHUNK_PREALLOC: usize = 1 << 16;

/// The outcome of planning one tenant: how many people produce its exact event target.
/// Cheap to clone and share between the threads that generate its shards.
#[derive(Debug, Clone)]
pub struct TenantPlan {
    model: Arc<TenantModel>,
    events: u64,
    persons: u64,
    last_person_events: u64,
}

impl TenantPlan {
    /// Plans tenant `tenant_index` of `cfg`. Costs a simulation of every person without
    /// building events (a few percent of generating them).
    pub fn new(cfg: &DemoConfig, tenant_index: usize) -> Result<Self> {
        let targets = cfg.tenant_targets()?;
        let target = *targets.get(tenant_index).ok_or(Error::UnknownTenant {
            index: tenant_index,
            count: targets.len(),
        })?;
        let model = TenantModel::new(cfg, tenant_index);
        let mut specs: Vec<Spec> = Vec::new();
        let mut events = 0u64;
        let mut persons = 0u64;
        let mut last_person_events = 0u64;
        while events < target {
            let mut person = Person::new(&model, persons, u64::MAX);
            let mut n = 0u64;
            while person.next_session(&mut specs) {
                n += specs.len() as u64;
            }
            persons += 1;
            last_person_events = n.min(target - events);
            events += last_person_events;
        }
        Ok(TenantPlan {
            model: Arc::new(model),
            events,
            persons,
            last_person_events,
        })
    }

    /// Events the tenant will get (its exact share of `total_events`).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Distinct people (before identity merging: one per simulated human).
    pub fn persons(&self) -> u64 {
        self.persons
    }

    /// The tenant's name and plan, as configured.
    pub fn tenant(&self) -> &crate::DemoTenant {
        &self.model.tenant
    }

    /// All of the tenant's events, in chunks of at most `chunk`.
    ///
    /// Throughput is bound by allocation (each event owns ~60 heap objects through
    /// its property map) and by cache misses on the chunk itself: chunks of about a
    /// thousand events, converted (to Arrow, say) as they arrive, are several times
    /// faster than chunks of 100k. Measured numbers are in `examples/gen_speed.rs`.
    pub fn events_iter(&self, tenant: TenantId, chunk: usize) -> Result<TenantEvents> {
        self.shard(tenant, chunk, 0, 1)
    }

    /// Shard `shard` of `shards` (every `shards`-th person): generate the shards on
    /// separate threads to use several cores for one tenant. Each shard is ordered by
    /// day on its own; together they are exactly [`TenantPlan::events_iter`]'s events.
    pub fn shard(
        &self,
        tenant: TenantId,
        chunk: usize,
        shard: u64,
        shards: u64,
    ) -> Result<TenantEvents> {
        if chunk == 0 {
            return Err(Error::ZeroChunk);
        }
        if shards == 0 || shard >= shards {
            return Err(Error::InvalidShard { shard, shards });
        }
        let days = self.model.days as usize;
        let mut arrivals: Vec<Vec<u64>> = vec![Vec::new(); days];
        let mut index = shard;
        while index < self.persons {
            arrivals[Person::arrival_day(&self.model, index)].push(index);
            index += shards;
        }
        // Popped from the back: reverse so each day starts with its lowest index.
        for day in &mut arrivals {
            day.reverse();
        }
        Ok(TenantEvents {
            builder: EventBuilder::new(&self.model.tenant, self.model.seed, self.persons),
            plan: self.clone(),
            tenant,
            chunk,
            arrivals,
            returning: (0..days).map(|_| Vec::new()).collect(),
            current_day: 0,
            next_day: 0,
            today_returning: Vec::new(),
            today_new: Vec::new(),
            specs: Vec::new(),
            out: Vec::with_capacity(chunk.min(MAX_CHUNK_PREALLOC)),
        })
    }
}

/// An iterator over one tenant's (or one shard's) events in [`EventBatch`]es of at
/// most `chunk` events. Memory is bounded by the people active at once plus one chunk,
/// not by the number of events.
pub struct TenantEvents {
    plan: TenantPlan,
    tenant: TenantId,
    chunk: usize,
    builder: EventBuilder,
    /// Person indices by arrival day, for people not yet met.
    arrivals: Vec<Vec<u64>>,
    /// Active people by the day of their next session.
    returning: Vec<Vec<Person>>,
    current_day: usize,
    next_day: usize,
    today_returning: Vec<Person>,
    today_new: Vec<u64>,
    specs: Vec<Spec>,
    out: Vec<Event>,
}

impl std::fmt::Debug for TenantEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantEvents")
            .field("tenant", &self.tenant)
            .field("chunk", &self.chunk)
            .field("current_day", &self.current_day)
            .finish_non_exhaustive()
    }
}

impl TenantEvents {
    /// Simulates and builds one person-day. Returns `false` when the window is done.
    fn step(&mut self) -> bool {
        loop {
            if let Some(person) = self.today_returning.pop() {
                self.run_day(person);
                return true;
            }
            if let Some(index) = self.today_new.pop() {
                let model = &self.plan.model;
                let cap = if index + 1 == self.plan.persons {
                    self.plan.last_person_events
                } else {
                    u64::MAX
                };
                let person = Person::new(model, index, cap);
                self.run_day(person);
                return true;
            }
            if self.next_day >= self.arrivals.len() {
                return false;
            }
            self.current_day = self.next_day;
            self.next_day += 1;
            self.today_new = std::mem::take(&mut self.arrivals[self.current_day]);
            self.today_returning = std::mem::take(&mut self.returning[self.current_day]);
            self.today_returning.reverse();
        }
    }

    /// Runs the person's sessions that start on the current day, then files them under
    /// the day of their next session (or drops them if they have none left).
    fn run_day(&mut self, mut person: Person) {
        let model = &self.plan.model;
        let day_end =
            model.start + (self.current_day as i64 + 1) * tally_core::time::MICROS_PER_DAY;
        while person.next_start() < day_end {
            if !person.next_session(&mut self.specs) {
                break;
            }
            let take = (self.specs.len() as u64).min(person.remaining) as usize;
            self.builder
                .build(&person, &self.specs[..take], &mut self.out);
            person.remaining -= take as u64;
            if person.remaining == 0 {
                return;
            }
        }
        let next = person.next_start();
        if next == NEVER || next >= model.end {
            return;
        }
        // A session never starts before the end of the day just processed.
        let day = (model.day_of(next).max(self.current_day as i64 + 1)) as usize;
        if let Some(bucket) = self.returning.get_mut(day) {
            bucket.push(person);
        }
    }

    fn take_chunk(&mut self) -> EventBatch {
        let len = self.out.len().min(self.chunk);
        let mut rest =
            Vec::with_capacity(self.chunk.min(MAX_CHUNK_PREALLOC).max(self.out.len() - len));
        rest.extend(self.out.drain(len..));
        let events = std::mem::replace(&mut self.out, rest);
        EventBatch {
            tenant: self.tenant,
            events,
        }
    }
}

impl Iterator for TenantEvents {
    type Item = EventBatch;

    fn next(&mut self) -> Option<EventBatch> {
        loop {
            if self.out.len() >= self.chunk {
                return Some(self.take_chunk());
            }
            if !self.step() {
                return (!self.out.is_empty()).then(|| self.take_chunk());
            }
        }
    }
}

/// Generates tenant `tenant_index` of `cfg` as `tenant`, handing `sink` batches of at
/// most `chunk` events in day order. Returns the number of events generated (the
/// tenant's exact share of `total_events`).
///
/// To stop early or propagate a sink error, iterate [`TenantPlan::events_iter`]
/// instead; to use several cores for one tenant, see [`TenantPlan::shard`].
pub fn generate_tenant(
    cfg: &DemoConfig,
    tenant_index: usize,
    tenant: TenantId,
    chunk: usize,
    mut sink: impl FnMut(EventBatch),
) -> Result<u64> {
    let plan = TenantPlan::new(cfg, tenant_index)?;
    let mut generated = 0u64;
    for batch in plan.events_iter(tenant, chunk)? {
        generated += batch.events.len() as u64;
        sink(batch);
    }
    Ok(generated)
}
