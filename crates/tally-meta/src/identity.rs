//! The identity rules (PostHog's), as pure in-memory logic.
//!
//! [`extract`] decides, without touching storage, whether an event has identity,
//! person-property or group effects; most events have none and stop there.
//! [`TenantWork`] holds the slice of one tenant's identity state that a batch of
//! effects can touch, applies the effects in order, and then describes what changed so
//! the storage layer can write it back. Keeping the rules free of SQL makes them easy
//! to test and lets the PostgreSQL implementation reuse them unchanged.
//!
//! This module does not load or store anything, and knows nothing about log positions.
//! The rules themselves are documented with worked examples in `docs/IDENTITY.md`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::Value;
use tally_core::event::names;
use tally_core::identity::is_denylisted_distinct_id;
use tally_core::{Event, Properties, TenantId};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::persons::IdentityStats;

/// Event property listing person property names to remove.
pub const UNSET: &str = "$unset";

/// Longest accepted `$group_type`; PostHog uses short names such as `company`.
pub const MAX_GROUP_TYPE_LEN: usize = 128;
/// Longest accepted `$group_key`.
pub const MAX_GROUP_KEY_LEN: usize = 1024;

/// How an identity event links its two distinct ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkKind {
    /// `$identify`: links, and marks the person identified.
    Identify,
    /// `$create_alias`: links only.
    Alias,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Link<'a> {
    pub kind: LinkKind,
    /// The anonymous id (`$identify`) or the alias (`$create_alias`); `None` when it
    /// was missing, not a string, denylisted, or equal to the event's distinct id.
    pub other: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupUpsert<'a> {
    pub group_type: &'a str,
    pub key: Cow<'a, str>,
    pub set: Option<&'a Properties>,
}

/// The identity-relevant part of one event, borrowed from it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Effect<'a> {
    pub distinct_id: &'a str,
    pub timestamp: i64,
    pub link: Option<Link<'a>>,
    pub group: Option<GroupUpsert<'a>>,
    pub set: &'a Properties,
    pub set_once: &'a Properties,
    pub unset: Vec<&'a str>,
}

impl Effect<'_> {
    fn sets_properties(&self) -> bool {
        !self.set.is_empty() || !self.set_once.is_empty()
    }

    fn touches_person(&self) -> bool {
        self.link.is_some() || self.sets_properties() || !self.unset.is_empty()
    }
}

/// Whether the event can have identity, person-property or group effects: `false` for
/// the common plain event, decided without allocating. A caller (the pipeline) may use
/// it to queue only these events for [`crate::PersonStore::apply_events`]; passing
/// plain events along is harmless too.
pub fn has_identity_effects(event: &Event) -> bool {
    !event.person_set.is_empty()
        || !event.person_set_once.is_empty()
        || event.properties.contains_key(UNSET)
        || matches!(
            event.event.as_str(),
            names::IDENTIFY | names::CREATE_ALIAS | names::GROUP_IDENTIFY
        )
}

/// The event's identity effects, or `None` for the common event that has none. Counts
/// ignored (denylisted or malformed) parts into `stats`.
pub(crate) fn extract<'a>(event: &'a Event, stats: &mut IdentityStats) -> Option<Effect<'a>> {
    let props = &event.properties;
    let link_kind = match event.event.as_str() {
        names::IDENTIFY => Some(LinkKind::Identify),
        names::CREATE_ALIAS => Some(LinkKind::Alias),
        _ => None,
    };
    if !has_identity_effects(event) {
        return None;
    }
    let is_group_identify = event.event == names::GROUP_IDENTIFY;
    let unset_value = props.get(UNSET);

    let distinct_id = event.distinct_id.as_str();
    if is_denylisted_distinct_id(distinct_id) {
        // Ingest refuses these, so this is an import or an older log record; merging
        // on such an id would fuse unrelated people.
        stats.ignored_denylisted += 1;
        return None;
    }

    let link = link_kind.map(|kind| {
        let key = match kind {
            LinkKind::Identify => names::ANON_DISTINCT_ID,
            LinkKind::Alias => names::ALIAS,
        };
        let other = match props.get(key) {
            Some(Value::String(other)) if is_denylisted_distinct_id(other) => {
                stats.ignored_denylisted += 1;
                None
            }
            Some(Value::String(other)) if other != distinct_id => Some(other.as_str()),
            _ => None,
        };
        Link { kind, other }
    });

    let group = if is_group_identify {
        let parsed = parse_group_identify(props);
        if parsed.is_none() {
            stats.ignored_invalid += 1;
        }
        parsed
    } else {
        None
    };

    let unset = match unset_value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(key)) => vec![key.as_str()],
        Some(Value::Array(keys)) => keys.iter().filter_map(Value::as_str).collect(),
        Some(_) => {
            stats.ignored_invalid += 1;
            Vec::new()
        }
    };

    let effect = Effect {
        distinct_id,
        timestamp: event.timestamp,
        link,
        group,
        set: &event.person_set,
        set_once: &event.person_set_once,
        unset,
    };
    if !effect.touches_person() && effect.group.is_none() {
        return None;
    }
    stats.events_with_effects += 1;
    Some(effect)
}

fn parse_group_identify(props: &Properties) -> Option<GroupUpsert<'_>> {
    let group_type = props
        .get(names::GROUP_TYPE)?
        .as_str()
        .filter(|t| !t.trim().is_empty() && t.len() <= MAX_GROUP_TYPE_LEN)?;
    // SDKs send numeric keys for numeric ids; they name the same group as the string.
    let key = match props.get(names::GROUP_KEY)? {
        Value::String(key) => Cow::Borrowed(key.as_str()),
        Value::Number(n) => Cow::Owned(n.to_string()),
        _ => return None,
    };
    if key.trim().is_empty() || key.len() > MAX_GROUP_KEY_LEN {
        return None;
    }
    let set = match props.get(names::GROUP_SET) {
        None | Some(Value::Null) => None,
        Some(Value::Object(set)) => Some(set),
        Some(_) => return None,
    };
    Some(GroupUpsert {
        group_type,
        key,
        set,
    })
}

/// Distinct ids whose current mapping the effects need.
pub(crate) fn distinct_ids_to_load<'a>(effects: &[Effect<'a>]) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for effect in effects.iter().filter(|e| e.touches_person()) {
        let other = effect.link.as_ref().and_then(|l| l.other);
        for id in std::iter::once(effect.distinct_id).chain(other) {
            if seen.insert(id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// `(group_type, group_key)` pairs the effects upsert.
pub(crate) fn groups_to_load<'e>(effects: &'e [Effect<'_>]) -> Vec<(&'e str, &'e str)> {
    let mut seen = HashSet::new();
    effects
        .iter()
        .filter_map(|e| e.group.as_ref())
        .map(|g| (g.group_type, g.key.as_ref()))
        .filter(|pair| seen.insert(*pair))
        .collect()
}

/// A person as stored.
#[derive(Debug, Clone)]
pub(crate) struct StoredPerson {
    pub id: Uuid,
    pub properties: Properties,
    pub is_identified: bool,
    pub created_at: i64,
}

/// A group as stored.
#[derive(Debug, Clone)]
pub(crate) struct StoredGroup {
    pub group_type: String,
    pub key: String,
    pub properties: Properties,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug)]
pub(crate) struct PersonWork {
    pub properties: Properties,
    pub is_identified: bool,
    pub created_at: i64,
    /// Created by this batch (needs an INSERT rather than an UPDATE).
    pub is_new: bool,
    pub dirty: bool,
}

#[derive(Debug)]
pub(crate) struct GroupWork {
    pub properties: Properties,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One tenant's identity state as far as a batch of effects can touch it.
///
/// Invariant: every distinct id the effects name was loaded, so an id absent from
/// `owner` really has no person; and every person an id maps to is in `persons`.
#[derive(Debug)]
pub(crate) struct TenantWork {
    tenant: TenantId,
    owner: HashMap<String, Uuid>,
    /// The loaded or attached distinct ids of each person: what a merge must move in
    /// memory. Ids that were not loaded are moved by the storage layer in bulk.
    members: HashMap<Uuid, Vec<String>>,
    persons: HashMap<Uuid, PersonWork>,
    merged_into: HashMap<Uuid, Uuid>,
    /// Stored persons merged away by this batch, in merge order.
    merged_stored: Vec<Uuid>,
    /// Distinct ids that had no person when loaded and have one now.
    attached: Vec<String>,
    groups: HashMap<(String, String), GroupWork>,
    known_group_types: HashSet<String>,
    stored_group_type_count: usize,
    new_group_types: Vec<String>,
}

impl TenantWork {
    /// Builds the working set from stored rows. `mappings` must cover every id from
    /// [`distinct_ids_to_load`] that has a person, and `persons` every person they
    /// name; a mapping to a missing person means the database is corrupt.
    pub fn new(
        tenant: TenantId,
        mappings: Vec<(String, Uuid)>,
        persons: Vec<StoredPerson>,
        groups: Vec<StoredGroup>,
        group_types: Vec<String>,
    ) -> Result<Self> {
        let persons: HashMap<Uuid, PersonWork> = persons
            .into_iter()
            .map(|p| {
                let work = PersonWork {
                    properties: p.properties,
                    is_identified: p.is_identified,
                    created_at: p.created_at,
                    is_new: false,
                    dirty: false,
                };
                (p.id, work)
            })
            .collect();
        let mut owner = HashMap::with_capacity(mappings.len());
        let mut members: HashMap<Uuid, Vec<String>> = HashMap::new();
        for (distinct_id, person) in mappings {
            if !persons.contains_key(&person) {
                return Err(Error::corrupt(format!(
                    "tenant {tenant}: distinct id {distinct_id:?} maps to missing person {person}"
                )));
            }
            members.entry(person).or_default().push(distinct_id.clone());
            owner.insert(distinct_id, person);
        }
        let groups = groups
            .into_iter()
            .map(|g| {
                let work = GroupWork {
                    properties: g.properties,
                    created_at: g.created_at,
                    updated_at: g.updated_at,
                };
                ((g.group_type, g.key), work)
            })
            .collect();
        Ok(TenantWork {
            tenant,
            owner,
            members,
            persons,
            merged_into: HashMap::new(),
            merged_stored: Vec::new(),
            attached: Vec::new(),
            groups,
            stored_group_type_count: group_types.len(),
            known_group_types: group_types.into_iter().collect(),
            new_group_types: Vec::new(),
        })
    }

    /// Applies one event's effects: first the identity link, then the group, then the
    /// person properties (`$set_once`, then `$set`, then `$unset`) on the event's person.
    pub fn apply(&mut self, effect: &Effect<'_>, stats: &mut IdentityStats) {
        let distinct_id = effect.distinct_id;
        let linked = effect
            .link
            .as_ref()
            .map(|link| self.link(distinct_id, link, effect.timestamp, stats));

        if let Some(group) = &effect.group {
            self.upsert_group(group, effect.timestamp);
            stats.groups_upserted += 1;
        }

        let person = match linked {
            Some(person) => Some(person),
            // Setting properties on an unknown id creates its person; unsetting does
            // not (there is nothing to remove), and neither does a plain event.
            None if effect.sets_properties() => {
                Some(self.ensure_person(distinct_id, effect.timestamp, stats))
            }
            None => self.owner.get(distinct_id).copied(),
        };
        if let Some(person) = person.and_then(|p| self.persons.get_mut(&p)) {
            let mut changed = false;
            for (key, value) in effect.set_once {
                if !person.properties.contains_key(key) {
                    person.properties.insert(key.clone(), value.clone());
                    changed = true;
                }
            }
            for (key, value) in effect.set {
                if person.properties.get(key) != Some(value) {
                    person.properties.insert(key.clone(), value.clone());
                    changed = true;
                }
            }
            for key in &effect.unset {
                changed |= person.properties.shift_remove(*key).is_some();
            }
            person.dirty |= changed;
        }
    }

    /// `$identify` / `$create_alias`: returns the person of `distinct_id` afterwards.
    fn link(
        &mut self,
        distinct_id: &str,
        link: &Link<'_>,
        timestamp: i64,
        stats: &mut IdentityStats,
    ) -> Uuid {
        let person = match link.other {
            None => self.ensure_person(distinct_id, timestamp, stats),
            Some(other) => {
                let mine = self.owner.get(distinct_id).copied();
                let theirs = self.owner.get(other).copied();
                match (mine, theirs) {
                    (None, None) => {
                        let person = self.create_person(timestamp, stats);
                        self.attach(distinct_id, person, stats);
                        self.attach(other, person, stats);
                        person
                    }
                    (Some(mine), None) => {
                        self.attach(other, mine, stats);
                        mine
                    }
                    (None, Some(theirs)) => {
                        self.attach(distinct_id, theirs, stats);
                        theirs
                    }
                    (Some(mine), Some(theirs)) if mine == theirs => mine,
                    (Some(mine), Some(theirs)) => {
                        let theirs_identified =
                            self.persons.get(&theirs).is_some_and(|p| p.is_identified);
                        if theirs_identified {
                            // Two people who each logged in are not one person just
                            // because a client said so; merging would be irreversible.
                            tracing::warn!(
                                tenant = %self.tenant,
                                distinct_id,
                                other_distinct_id = other,
                                kind = ?link.kind,
                                "Refused to merge an already identified person."
                            );
                            stats.refused_merges += 1;
                        } else {
                            self.merge(theirs, mine, stats);
                        }
                        mine
                    }
                }
            }
        };
        if link.kind == LinkKind::Identify
            && let Some(p) = self.persons.get_mut(&person)
            && !p.is_identified
        {
            p.is_identified = true;
            p.dirty = true;
        }
        person
    }

    fn ensure_person(
        &mut self,
        distinct_id: &str,
        timestamp: i64,
        stats: &mut IdentityStats,
    ) -> Uuid {
        if let Some(person) = self.owner.get(distinct_id) {
            return *person;
        }
        let person = self.create_person(timestamp, stats);
        self.attach(distinct_id, person, stats);
        person
    }

    fn create_person(&mut self, timestamp: i64, stats: &mut IdentityStats) -> Uuid {
        let id = Uuid::now_v7();
        self.persons.insert(
            id,
            PersonWork {
                properties: Properties::new(),
                is_identified: false,
                created_at: timestamp,
                is_new: true,
                dirty: true,
            },
        );
        stats.persons_created += 1;
        id
    }

    fn attach(&mut self, distinct_id: &str, person: Uuid, stats: &mut IdentityStats) {
        self.owner.insert(distinct_id.to_string(), person);
        self.members
            .entry(person)
            .or_default()
            .push(distinct_id.to_string());
        self.attached.push(distinct_id.to_string());
        stats.distinct_ids_attached += 1;
    }

    /// Moves everything of `source` into `survivor`. The survivor's property values
    /// win; the source only fills in keys the survivor lacks, which is exactly
    /// `$set_once` semantics for the source's properties.
    fn merge(&mut self, source: Uuid, survivor: Uuid, stats: &mut IdentityStats) {
        let Some(merged) = self.persons.remove(&source) else {
            return;
        };
        let moved = self.members.remove(&source).unwrap_or_default();
        for id in &moved {
            self.owner.insert(id.clone(), survivor);
        }
        self.members.entry(survivor).or_default().extend(moved);
        if let Some(target) = self.persons.get_mut(&survivor) {
            for (key, value) in merged.properties {
                if !target.properties.contains_key(&key) {
                    target.properties.insert(key, value);
                }
            }
            target.created_at = target.created_at.min(merged.created_at);
            target.is_identified |= merged.is_identified;
            target.dirty = true;
        }
        self.merged_into.insert(source, survivor);
        if !merged.is_new {
            self.merged_stored.push(source);
        }
        stats.merges += 1;
    }

    fn upsert_group(&mut self, group: &GroupUpsert<'_>, timestamp: i64) {
        if !self.known_group_types.contains(group.group_type) {
            self.known_group_types.insert(group.group_type.to_string());
            self.new_group_types.push(group.group_type.to_string());
        }
        let entry = self
            .groups
            .entry((group.group_type.to_string(), group.key.to_string()))
            .or_insert_with(|| GroupWork {
                properties: Properties::new(),
                created_at: timestamp,
                updated_at: timestamp,
            });
        if let Some(set) = group.set {
            for (key, value) in set {
                entry.properties.insert(key.clone(), value.clone());
            }
        }
        entry.updated_at = entry.updated_at.max(timestamp);
    }

    /// The live person that `person` ended up in.
    fn survivor_of(&self, mut person: Uuid) -> Uuid {
        // Merges form a forest (a survivor is never merged into its own source), so
        // this terminates; the bound guards against a bug turning it into a hang.
        for _ in 0..=self.merged_into.len() {
            match self.merged_into.get(&person) {
                Some(next) => person = *next,
                None => break,
            }
        }
        person
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Whether the distinct id -> person mapping changed.
    pub fn mapping_changed(&self) -> bool {
        !self.attached.is_empty() || !self.merged_into.is_empty()
    }

    /// Stored persons merged away, each with the live person that absorbed it. The
    /// storage layer must repoint their distinct ids and earlier merge records.
    pub fn stored_merges(&self) -> impl Iterator<Item = (Uuid, Uuid)> + '_ {
        self.merged_stored
            .iter()
            .map(|source| (*source, self.survivor_of(*source)))
    }

    /// Newly mapped distinct ids with their final person.
    pub fn new_mappings(&self) -> impl Iterator<Item = (&str, Uuid)> + '_ {
        self.attached
            .iter()
            .filter_map(|id| self.owner.get(id).map(|p| (id.as_str(), *p)))
    }

    /// Live persons that need writing.
    pub fn dirty_persons(&self) -> impl Iterator<Item = (Uuid, &PersonWork)> + '_ {
        self.persons
            .iter()
            .filter(|(_, p)| p.dirty)
            .map(|(id, p)| (*id, p))
    }

    /// Groups upserted by the batch (all of them changed at least `updated_at`).
    pub fn groups(&self) -> impl Iterator<Item = (&str, &str, &GroupWork)> + '_ {
        self.groups
            .iter()
            .map(|((t, k), g)| (t.as_str(), k.as_str(), g))
    }

    /// Group types first seen in this batch, with their `$group_N` index.
    pub fn new_group_types(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.new_group_types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), self.stored_group_type_count + i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(name: &str, distinct_id: &str, props: Value) -> Event {
        Event {
            uuid: Uuid::nil(),
            event: name.into(),
            distinct_id: distinct_id.into(),
            timestamp: 1_000,
            received_at: 1_000,
            properties: props.as_object().cloned().unwrap_or_default(),
            person_set: Properties::new(),
            person_set_once: Properties::new(),
        }
    }

    fn empty_work() -> TenantWork {
        TenantWork::new(TenantId(1), vec![], vec![], vec![], vec![]).unwrap()
    }

    fn apply_all(work: &mut TenantWork, events: &[Event]) -> IdentityStats {
        let mut stats = IdentityStats::default();
        let effects: Vec<_> = events
            .iter()
            .filter_map(|e| extract(e, &mut stats))
            .collect();
        for effect in &effects {
            work.apply(effect, &mut stats);
        }
        stats
    }

    #[test]
    fn plain_events_have_no_effect() {
        let mut stats = IdentityStats::default();
        let e = event("$pageview", "u1", json!({"$current_url": "/"}));
        assert!(!has_identity_effects(&e));
        assert!(extract(&e, &mut stats).is_none());
        assert_eq!(stats, IdentityStats::default());
        let mut with_set = e.clone();
        with_set.person_set.insert("plan".into(), json!("pro"));
        let with_unset = event("$pageview", "u1", json!({"$unset": ["plan"]}));
        let group = event("$groupidentify", "u1", json!({}));
        for e in [with_set, with_unset, group] {
            assert!(has_identity_effects(&e), "{}", e.event);
        }
    }

    #[test]
    fn identify_extracts_the_anonymous_id_unless_unusable() {
        let mut stats = IdentityStats::default();
        let e = event("$identify", "u1", json!({"$anon_distinct_id": "anon-1"}));
        let effect = extract(&e, &mut stats).unwrap();
        assert_eq!(
            effect.link,
            Some(Link {
                kind: LinkKind::Identify,
                other: Some("anon-1")
            })
        );
        for anon in [json!("null"), json!("u1"), json!(42), json!(null)] {
            let e = event("$identify", "u1", json!({ "$anon_distinct_id": anon }));
            let effect = extract(&e, &mut stats).unwrap();
            assert_eq!(effect.link.unwrap().other, None, "{anon}");
        }
        assert_eq!(stats.ignored_denylisted, 1);
    }

    #[test]
    fn denylisted_event_ids_are_ignored_entirely() {
        let mut stats = IdentityStats::default();
        let mut e = event("$identify", "undefined", json!({"$anon_distinct_id": "a"}));
        e.person_set.insert("email".into(), json!("x@example.com"));
        assert!(extract(&e, &mut stats).is_none());
        assert_eq!(stats.ignored_denylisted, 1);
    }

    #[test]
    fn group_identify_needs_a_type_and_a_key() {
        let mut stats = IdentityStats::default();
        let ok = event(
            "$groupidentify",
            "u1",
            json!({"$group_type": "company", "$group_key": 42, "$group_set": {"name": "Acme"}}),
        );
        let effect = extract(&ok, &mut stats).unwrap();
        let group = effect.group.unwrap();
        assert_eq!((group.group_type, group.key.as_ref()), ("company", "42"));
        for bad in [
            json!({"$group_key": "acme"}),
            json!({"$group_type": "company"}),
            json!({"$group_type": "", "$group_key": "acme"}),
            json!({"$group_type": "company", "$group_key": "acme", "$group_set": [1]}),
        ] {
            assert!(extract(&event("$groupidentify", "u1", bad), &mut stats).is_none());
        }
        assert_eq!(stats.ignored_invalid, 4);
    }

    #[test]
    fn identify_merges_an_anonymous_person_into_the_identified_one() {
        let mut work = empty_work();
        let mut anon_set = event("$pageview", "visitor", json!({}));
        anon_set
            .person_set_once
            .insert("first_url".into(), json!("/a"));
        anon_set.person_set.insert("plan".into(), json!("free"));
        let mut user_set = event("$pageview", "user", json!({}));
        user_set.person_set.insert("plan".into(), json!("pro"));
        let identify = event("$identify", "user", json!({"$anon_distinct_id": "visitor"}));
        let stats = apply_all(&mut work, &[anon_set, user_set, identify]);
        assert_eq!(stats.persons_created, 2);
        assert_eq!(stats.merges, 1);
        let user = work.owner["user"];
        assert_eq!(work.owner["visitor"], user);
        let person = &work.persons[&user];
        assert!(person.is_identified);
        assert_eq!(person.properties["plan"], json!("pro"), "survivor wins");
        assert_eq!(person.properties["first_url"], json!("/a"), "gaps filled");
        assert_eq!(work.persons.len(), 1);
        // Both persons were created in this batch, so nothing stored was merged.
        assert_eq!(work.stored_merges().count(), 0);
        let mut mapped: Vec<_> = work.new_mappings().collect();
        mapped.sort();
        assert_eq!(mapped, vec![("user", user), ("visitor", user)]);
    }

    #[test]
    fn identified_persons_are_never_merged_implicitly() {
        let mut work = empty_work();
        let events = [
            event("$identify", "alice", json!({})),
            event("$identify", "bob", json!({})),
            event("$identify", "alice", json!({"$anon_distinct_id": "bob"})),
            event("$create_alias", "alice", json!({"alias": "bob"})),
        ];
        let stats = apply_all(&mut work, &events);
        assert_eq!(stats.refused_merges, 2);
        assert_eq!(stats.merges, 0);
        assert_ne!(work.owner["alice"], work.owner["bob"]);
    }

    #[test]
    fn merges_of_stored_persons_resolve_to_the_final_survivor() {
        let (p1, p2, p3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let stored = |id| StoredPerson {
            id,
            properties: Properties::new(),
            is_identified: false,
            created_at: 0,
        };
        let mut work = TenantWork::new(
            TenantId(1),
            vec![("a".into(), p1), ("b".into(), p2), ("c".into(), p3)],
            vec![stored(p1), stored(p2), stored(p3)],
            vec![],
            vec![],
        )
        .unwrap();
        // a's person absorbs b's, then c's person absorbs a's (which holds b).
        let events = [
            event("$create_alias", "a", json!({"alias": "b"})),
            event("$create_alias", "c", json!({"alias": "a"})),
        ];
        let stats = apply_all(&mut work, &events);
        assert_eq!(stats.merges, 2);
        let mut merges: Vec<_> = work.stored_merges().collect();
        merges.sort();
        let mut expected = vec![(p1, p3), (p2, p3)];
        expected.sort();
        assert_eq!(merges, expected);
        assert!(work.mapping_changed());
        assert_eq!(work.new_mappings().count(), 0);
    }

    #[test]
    fn a_mapping_to_a_missing_person_is_corruption() {
        let err = TenantWork::new(
            TenantId(1),
            vec![("a".into(), Uuid::now_v7())],
            vec![],
            vec![],
            vec![],
        )
        .unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)));
    }
}
