//! Schema discovery, by brute force: walk the events and count.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tally_core::{Properties, TenantId};

use super::eval::{Key, Prepared, property_value};
use super::{RefContext, RefEvent, Result};
use crate::filter::semantics::breakdown_value;
use crate::filter::{PropertyRef, PropertySource};
use crate::schema::{
    EventNameInfo, PropertyInfo, PropertyType, SchemaQuery, SchemaRequest, SchemaResult, ValueCount,
};

/// Answers a schema-discovery query.
pub fn schema(q: &SchemaQuery, events: &[RefEvent], ctx: &RefContext) -> Result<SchemaResult> {
    q.validate()?;
    let prep = Prepared::new(&q.scope, q.time_zone.as_deref(), q.week_start, ctx)?;
    let range = q
        .date_range
        .as_ref()
        .map(|r| r.resolve(ctx.now, &prep.calendar, "date_range"))
        .transpose()?;
    let in_range: Vec<&RefEvent> = prep
        .scoped(events)
        .into_iter()
        .filter(|e| range.is_none_or(|r| r.contains(e.timestamp)))
        .collect();
    let found = |text: &str, search: &Option<String>| {
        search
            .as_ref()
            .is_none_or(|s| text.to_lowercase().contains(&s.to_lowercase()))
    };
    Ok(match &q.request {
        SchemaRequest::EventNames { search, limit } => {
            let mut names: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
            for e in &in_range {
                let entry = names.entry(&e.event).or_insert((0, i64::MIN));
                entry.0 += 1;
                entry.1 = entry.1.max(e.timestamp);
            }
            let mut events: Vec<EventNameInfo> = names
                .into_iter()
                .filter(|(name, _)| found(name, search))
                .map(|(name, (count, last_seen))| EventNameInfo {
                    name: name.to_string(),
                    count,
                    last_seen,
                })
                .collect();
            events.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
            events.truncate(*limit as usize);
            SchemaResult::EventNames { events }
        }
        SchemaRequest::PropertyNames {
            source,
            group_type,
            event,
            search,
            limit,
        } => {
            let mut keys: BTreeMap<String, (BTreeSet<PropertyType>, u64)> = BTreeMap::new();
            for props in entities(
                &prep,
                &in_range,
                *source,
                group_type.as_deref(),
                event.as_deref(),
            )
            .values()
            {
                for (k, v) in props.iter() {
                    if let Some(t) = PropertyType::of(v) {
                        let entry = keys.entry(k.clone()).or_default();
                        entry.0.insert(t);
                        entry.1 += 1;
                    }
                }
            }
            let mut properties: Vec<PropertyInfo> = keys
                .into_iter()
                .filter(|(k, _)| found(k, search))
                .map(|(key, (types, count))| PropertyInfo {
                    key,
                    types: types.into_iter().collect(),
                    count,
                })
                .collect();
            properties.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
            properties.truncate(*limit as usize);
            SchemaResult::PropertyNames { properties }
        }
        SchemaRequest::PropertyValues {
            property,
            event,
            search,
            limit,
        } => {
            let mut counts: BTreeMap<Key, u64> = BTreeMap::new();
            let by_entity = entities(
                &prep,
                &in_range,
                property.source,
                property.group_type.as_deref(),
                event.as_deref(),
            );
            for props in by_entity.values() {
                if let Some(v) = props.get(&property.key).filter(|v| !v.is_null()) {
                    *counts
                        .entry(Key(vec![breakdown_value(Some(v))]))
                        .or_default() += 1;
                }
            }
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let mut values: Vec<(Key, u64)> = counts
                .into_iter()
                .filter(|(k, _)| found(&text(&k.0[0]), search))
                .collect();
            values.sort_by(|(ka, ca), (kb, cb)| cb.cmp(ca).then_with(|| ka.cmp(kb)));
            values.truncate(*limit as usize);
            SchemaResult::PropertyValues {
                values: values
                    .into_iter()
                    .map(|(mut k, count)| ValueCount {
                        value: k.0.remove(0),
                        count,
                    })
                    .collect(),
            }
        }
    })
}

/// The entity whose properties a source describes: an event, a person, a group or a
/// tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Entity {
    Event(usize),
    Person(TenantId, String),
    Group(TenantId, String),
    Tenant(TenantId),
}

/// Each entity seen on the (optionally name-filtered) events, with its properties.
fn entities(
    prep: &Prepared,
    events: &[&RefEvent],
    source: PropertySource,
    group_type: Option<&str>,
    event: Option<&str>,
) -> BTreeMap<Entity, Properties> {
    let mut out = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if event.is_some_and(|name| name != e.event) {
            continue;
        }
        match source {
            PropertySource::Event => {
                out.insert(Entity::Event(i), e.properties.clone());
            }
            PropertySource::Person => {
                out.entry(Entity::Person(e.tenant, e.person_id.clone()))
                    .or_insert_with(|| e.person_properties.clone());
            }
            PropertySource::Group => {
                if let Some(g) = group_type.and_then(|t| e.groups.get(t)) {
                    out.entry(Entity::Group(e.tenant, g.key.clone()))
                        .or_insert_with(|| g.properties.clone());
                }
            }
            PropertySource::TenantAttribute | PropertySource::Tenant => {
                out.entry(Entity::Tenant(e.tenant)).or_insert_with(|| {
                    let mut props = Properties::new();
                    for key in ["id", "name"] {
                        let p = PropertyRef::tenant(key);
                        if let Some(v) = property_value(e, prep.tenant_of(e), &p) {
                            props.insert(key.to_string(), v.into_owned());
                        }
                    }
                    if source == PropertySource::TenantAttribute {
                        props.clear();
                        if let Some(t) = prep.tenant_of(e) {
                            for (k, v) in &t.attributes {
                                props.insert(k.clone(), Value::String(v.clone()));
                            }
                        }
                    }
                    props
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scope::Scope;

    fn ev(name: &str, person: &str, props: Value) -> RefEvent {
        RefEvent {
            tenant: TenantId(1),
            uuid: uuid::Uuid::new_v4(),
            event: name.into(),
            distinct_id: person.into(),
            person_id: person.into(),
            timestamp: 1_700_000_000_000_000,
            properties: props.as_object().cloned().unwrap_or_default(),
            person_properties: json!({"email": format!("{person}@x.io")})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            groups: Default::default(),
        }
    }

    fn ask(request: SchemaRequest, events: &[RefEvent]) -> SchemaResult {
        let q = SchemaQuery {
            scope: Scope::Tenant(TenantId(1)),
            date_range: None,
            time_zone: None,
            week_start: Default::default(),
            request,
        };
        schema(&q, events, &RefContext::at(0)).unwrap()
    }

    #[test]
    fn discovers_names_types_and_values() {
        let mut other_tenant = ev("secret", "z", json!({"k": 1}));
        other_tenant.tenant = TenantId(2);
        let events = vec![
            ev("view", "a", json!({"plan": "pro", "n": 1})),
            ev("view", "b", json!({"plan": "pro", "n": "2"})),
            ev("Buy", "a", json!({"plan": 1.0, "n": null})),
            other_tenant,
        ];
        let names = ask(
            SchemaRequest::EventNames {
                search: None,
                limit: 10,
            },
            &events,
        );
        let SchemaResult::EventNames { events: names } = names else {
            panic!()
        };
        let names: Vec<(&str, u64)> = names.iter().map(|e| (e.name.as_str(), e.count)).collect();
        assert_eq!(names, [("view", 2), ("Buy", 1)]);

        let props = ask(
            SchemaRequest::PropertyNames {
                source: PropertySource::Event,
                group_type: None,
                event: None,
                search: None,
                limit: 10,
            },
            &events,
        );
        let SchemaResult::PropertyNames { properties } = props else {
            panic!()
        };
        assert_eq!(properties[0].key, "plan");
        assert_eq!(properties[0].count, 3);
        assert_eq!(
            properties[0].types,
            [PropertyType::String, PropertyType::Number]
        );
        assert_eq!(properties[1].key, "n");
        assert_eq!(properties[1].count, 2, "null values are not counted");

        let persons = ask(
            SchemaRequest::PropertyNames {
                source: PropertySource::Person,
                group_type: None,
                event: None,
                search: Some("MAIL".into()),
                limit: 10,
            },
            &events,
        );
        let SchemaResult::PropertyNames { properties } = persons else {
            panic!()
        };
        assert_eq!(properties.len(), 1);
        assert_eq!(properties[0].count, 2, "two persons");

        let values = ask(
            SchemaRequest::PropertyValues {
                property: PropertyRef::event("plan"),
                event: None,
                search: None,
                limit: 10,
            },
            &events,
        );
        let SchemaResult::PropertyValues { values } = values else {
            panic!()
        };
        let values: Vec<(Value, u64)> = values.into_iter().map(|v| (v.value, v.count)).collect();
        assert_eq!(values, [(json!("pro"), 2), (json!(1), 1)]);
    }
}
