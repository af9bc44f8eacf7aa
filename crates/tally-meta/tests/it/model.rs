//! Property test: random sequences of identify / alias / `$set` / `$set_once` /
//! `$unset` over a handful of ids, split into random `apply_events` calls, must leave
//! the store in the same observable state as a deliberately simple reference model of
//! the rules in docs/IDENTITY.md.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{Value, json};
use tally_core::identity::is_denylisted_distinct_id;
use tally_core::{Event, TenantId};
use tally_meta::PersonStore;

use crate::{alias, batch, event, identify, pageview};

/// Few ids, so merges and refusals are frequent; "null" is denylisted.
const IDS: &[&str] = &["a", "b", "c", "d", "e", "null"];
const KEYS: &[&str] = &["k1", "k2", "k3"];

#[derive(Debug, Clone)]
enum Op {
    Identify(usize, Option<usize>),
    Alias(usize, Option<usize>),
    Set(usize, usize, u8),
    SetOnce(usize, usize, u8),
    Unset(usize, usize),
    Pageview(usize),
    /// `$identify` that also sets a property, to cover "link first, then properties".
    IdentifyWithSet(usize, usize, usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS.len();
    let key = 0..KEYS.len();
    prop_oneof![
        3 => (id.clone(), proptest::option::weighted(0.85, id.clone())).prop_map(|(d, a)| Op::Identify(d, a)),
        2 => (id.clone(), proptest::option::weighted(0.85, id.clone())).prop_map(|(d, x)| Op::Alias(d, x)),
        3 => (id.clone(), key.clone(), 0u8..3).prop_map(|(d, k, v)| Op::Set(d, k, v)),
        3 => (id.clone(), key.clone(), 0u8..3).prop_map(|(d, k, v)| Op::SetOnce(d, k, v)),
        1 => (id.clone(), key.clone()).prop_map(|(d, k)| Op::Unset(d, k)),
        1 => id.clone().prop_map(Op::Pageview),
        1 => (id.clone(), id, key, 0u8..3).prop_map(|(d, a, k, v)| Op::IdentifyWithSet(d, a, k, v)),
    ]
}

fn to_event(op: &Op) -> Event {
    let props = |k: usize, v: u8| {
        json!({ KEYS[k]: v })
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    match *op {
        Op::Identify(d, Some(a)) => identify(IDS[d], IDS[a]),
        Op::Identify(d, None) => event("$identify", IDS[d]),
        Op::Alias(d, Some(x)) => alias(IDS[d], IDS[x]),
        Op::Alias(d, None) => event("$create_alias", IDS[d]),
        Op::Set(d, k, v) => {
            let mut e = event("e", IDS[d]);
            e.person_set = props(k, v);
            e
        }
        Op::SetOnce(d, k, v) => {
            let mut e = event("e", IDS[d]);
            e.person_set_once = props(k, v);
            e
        }
        Op::Unset(d, k) => {
            let mut e = event("e", IDS[d]);
            e.properties = json!({ "$unset": [KEYS[k]] })
                .as_object()
                .cloned()
                .unwrap_or_default();
            e
        }
        Op::Pageview(d) => pageview(IDS[d]),
        Op::IdentifyWithSet(d, a, k, v) => {
            let mut e = identify(IDS[d], IDS[a]);
            e.person_set = props(k, v);
            e
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct ModelPerson {
    ids: BTreeSet<String>,
    props: BTreeMap<String, Value>,
    identified: bool,
}

/// The rules, written as plainly as possible: a list of persons, found by scanning.
#[derive(Default)]
struct Model {
    persons: Vec<ModelPerson>,
}

impl Model {
    fn owner(&self, id: &str) -> Option<usize> {
        self.persons.iter().position(|p| p.ids.contains(id))
    }

    fn create(&mut self, ids: &[&str]) -> usize {
        self.persons.push(ModelPerson {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            props: BTreeMap::new(),
            identified: false,
        });
        self.persons.len() - 1
    }

    fn ensure(&mut self, id: &str) -> usize {
        self.owner(id).unwrap_or_else(|| self.create(&[id]))
    }

    /// Returns the index of `d`'s person afterwards.
    fn link(&mut self, d: &str, other: Option<&str>, identify: bool) -> usize {
        let other = other.filter(|o| !is_denylisted_distinct_id(o) && *o != d);
        let p = match other {
            None => self.ensure(d),
            Some(o) => match (self.owner(d), self.owner(o)) {
                (None, None) => self.create(&[d, o]),
                (Some(p), None) => {
                    self.persons[p].ids.insert(o.to_string());
                    p
                }
                (None, Some(q)) => {
                    self.persons[q].ids.insert(d.to_string());
                    q
                }
                (Some(p), Some(q)) if p == q => p,
                (Some(p), Some(q)) => {
                    if self.persons[q].identified {
                        p
                    } else {
                        let source = self.persons.remove(q);
                        let p = if q < p { p - 1 } else { p };
                        let target = &mut self.persons[p];
                        target.ids.extend(source.ids);
                        for (k, v) in source.props {
                            target.props.entry(k).or_insert(v);
                        }
                        p
                    }
                }
            },
        };
        if identify {
            self.persons[p].identified = true;
        }
        p
    }

    fn apply(&mut self, op: &Op) {
        let d = match *op {
            Op::Identify(d, _)
            | Op::Alias(d, _)
            | Op::Set(d, ..)
            | Op::SetOnce(d, ..)
            | Op::Unset(d, _)
            | Op::Pageview(d)
            | Op::IdentifyWithSet(d, ..) => IDS[d],
        };
        if is_denylisted_distinct_id(d) {
            return;
        }
        match *op {
            Op::Identify(_, a) => {
                self.link(d, a.map(|a| IDS[a]), true);
            }
            Op::Alias(_, x) => {
                self.link(d, x.map(|x| IDS[x]), false);
            }
            Op::Set(_, k, v) => {
                let p = self.ensure(d);
                self.persons[p].props.insert(KEYS[k].into(), json!(v));
            }
            Op::SetOnce(_, k, v) => {
                let p = self.ensure(d);
                self.persons[p]
                    .props
                    .entry(KEYS[k].into())
                    .or_insert(json!(v));
            }
            Op::Unset(_, k) => {
                if let Some(p) = self.owner(d) {
                    self.persons[p].props.remove(KEYS[k]);
                }
            }
            Op::Pageview(_) => {}
            Op::IdentifyWithSet(_, a, k, v) => {
                let p = self.link(d, Some(IDS[a]), true);
                self.persons[p].props.insert(KEYS[k].into(), json!(v));
            }
        }
    }
}

fn run_case(ops: Vec<Op>, cuts: Vec<usize>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (_dir, meta) = crate::open_temp().await;
        let tenant = TenantId(1);
        let mut model = Model::default();
        for op in &ops {
            model.apply(op);
        }

        // Split the sequence into consecutive calls at the given cut points; the
        // other tenant gets the same events so isolation is exercised too.
        let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c % (ops.len() + 1)).collect();
        bounds.extend([0, ops.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let events: Vec<Event> = ops.iter().map(to_event).collect();
        for (lsn, pair) in bounds.windows(2).enumerate() {
            let chunk = events[pair[0]..pair[1]].to_vec();
            let mixed = vec![batch(1, chunk.clone()), batch(2, chunk)];
            meta.apply_events(lsn as u64 + 1, &mixed).await.unwrap();
        }

        for id in IDS {
            let expected = model.owner(id).map(|p| model.persons[p].clone());
            let actual = meta
                .person_for_distinct_id(tenant, id)
                .await
                .unwrap()
                .map(|p| ModelPerson {
                    ids: p.distinct_ids.into_iter().collect(),
                    props: p.properties.into_iter().collect(),
                    identified: p.is_identified,
                });
            prop_assert_eq!(&actual, &expected, "distinct id {}", id);
            let other_tenant = meta.person_for_distinct_id(TenantId(2), id).await.unwrap();
            prop_assert_eq!(
                other_tenant.map(|p| p.distinct_ids.len()),
                expected.map(|p| p.ids.len())
            );
        }
        let persons = meta.persons(tenant, None, 100).await.unwrap();
        prop_assert_eq!(persons.len(), model.persons.len());
        let (_, map) = meta.distinct_id_map(tenant).await.unwrap();
        let mapped: usize = model.persons.iter().map(|p| p.ids.len()).sum();
        prop_assert_eq!(map.len(), mapped);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_reference_model(
        ops in proptest::collection::vec(op(), 1..40),
        cuts in proptest::collection::vec(0usize..40, 0..4),
    ) {
        run_case(ops, cuts)?;
    }
}
