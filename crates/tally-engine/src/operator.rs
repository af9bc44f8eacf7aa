//! Operator (cross-tenant) queries: trends, funnels and retention over several
//! tenants' events at once, with breakdowns and filters on tenant fields (`id`, `name`)
//! and tenant attributes (`plan`, `arr`, ...).
//!
//! Owns: choosing the tenants a [`Scope::Operator`] selects from the [`TenantInfo`]s the
//! caller passes (the engine does not read the metadata store), and one DataFusion
//! session in which every selected tenant's events, identity map and persons are
//! registered under their own names and combined by `UNION ALL` views that the
//! compiler reads as if they were one tenant's relations (the compiler's tenant
//! scoping is unchanged: the query it sees is scoped to the reserved
//! [`OPERATOR_SCOPE`] id, whose relations exist only in these sessions):
//!
//! - persons stay per tenant: each view prefixes distinct ids and person ids with
//!   `<tenant>:` (zero-padded, so text order is (tenant, id) order, as the funnel
//!   persons view pages), so the same id in two tenants is two persons, merges apply
//!   within a tenant, and `COUNT(DISTINCT person)` counts (tenant, person) pairs;
//! - typed property columns differ between tenants: the view has the union of them;
//!   a tenant that materialises a key supplies its columns (NULL for types it has no
//!   column for: the store's completeness rule says it has no such values), a tenant
//!   that does not supplies the same typed values extracted from its JSON;
//! - tenant fields become constant columns of each tenant's branch, read through
//!   reserved event-property keys ([`TENANT_ID_KEY`], [`TENANT_NAME_KEY`],
//!   [`TENANT_ATTRIBUTE_PREFIX`]): the query is rewritten to use them, and the scope's
//!   tenant filters become global filters (they are constant per tenant, so they
//!   select tenants). A real event property with a reserved key is not readable in
//!   operator queries.
//!
//! Does not own: SQL shapes (tally-sql), results (the tenant code paths in the
//! crate root and [`crate::retention`] run unchanged on the prepared session).
//! Not supported: group properties (as for tenant queries).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;
use tally_core::TenantId;
use tally_query::funnel::{FunnelView, PersonCursor, PersonKey};
use tally_query::{
    Filter, FunnelQuery, FunnelResult, Math, PropertyRef, PropertySource, RetentionQuery,
    RetentionResult, Scope, TrendsQuery, TrendsResult,
};
use tally_sql::{DataFusionDialect, Dialect, KeyColumns, PropertyCatalog};

use crate::person_key::{NumberedPersonKeys, PersonKeyUdf};
use tally_store::{PropertyType, parse_property_column};

use crate::{Engine, Error, Result};

/// The reserved tenant id the rewritten query is scoped to. Its relations are the
/// `UNION ALL` views, registered only in operator sessions.
pub const OPERATOR_SCOPE: TenantId = TenantId(u32::MAX);
/// Reserved event-property key of the tenant id (a number).
pub const TENANT_ID_KEY: &str = "$tally_tenant.id";
/// Reserved event-property key of the tenant name (a string).
pub const TENANT_NAME_KEY: &str = "$tally_tenant.name";
/// Reserved event-property key prefix of tenant attributes (strings).
pub const TENANT_ATTRIBUTE_PREFIX: &str = "$tally_tenant_attribute.";
/// Every reserved key starts with this; real keys with it are hidden.
const RESERVED_PREFIX: &str = "$tally_tenant";

/// What an operator query needs to know about a tenant (from the metadata store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantInfo {
    /// The tenant's id.
    pub id: TenantId,
    /// The tenant's slug.
    pub name: String,
    /// Its IANA time zone (unused by operator queries, which default to UTC).
    pub time_zone: String,
    /// Operator-managed attributes.
    pub attributes: BTreeMap<String, String>,
}

/// Rewrites tenant-source properties to the reserved event keys and remembers which
/// attributes the query reads.
#[derive(Default)]
struct Rewriter {
    attributes: BTreeSet<String>,
    /// Event-property keys the query reads: only their typed columns go into the view.
    event_keys: BTreeSet<String>,
}

impl Rewriter {
    fn property(&mut self, p: &mut PropertyRef) {
        let key = match p.source {
            PropertySource::Tenant => match p.key.as_str() {
                "id" => TENANT_ID_KEY.to_string(),
                "name" => TENANT_NAME_KEY.to_string(),
                // Validation admits only `id` and `name`; anything else is never set.
                other => format!("{RESERVED_PREFIX}.{other}"),
            },
            PropertySource::TenantAttribute => {
                self.attributes.insert(p.key.clone());
                format!("{TENANT_ATTRIBUTE_PREFIX}{}", p.key)
            }
            PropertySource::Event => {
                self.event_keys.insert(p.key.clone());
                return;
            }
            PropertySource::Person | PropertySource::Group => return,
        };
        *p = PropertyRef::event(key);
    }

    fn filters(&mut self, filters: &mut [Filter]) {
        for f in filters {
            match f {
                Filter::Property(pf) => self.property(&mut pf.property),
                Filter::And { filters } | Filter::Or { filters } => self.filters(filters),
            }
        }
    }

    fn breakdown(&mut self, b: &mut Option<tally_query::Breakdown>) {
        for p in b.iter_mut().flat_map(|b| b.properties.iter_mut()) {
            self.property(p);
        }
    }

    /// The scope's tenant filters as global filters, and the selected ids.
    fn scope(&mut self, scope: &mut Scope, filters: &mut Vec<Filter>) -> Option<Vec<TenantId>> {
        let Scope::Operator { tenants } = scope else {
            return None;
        };
        let ids = tenants.ids.clone();
        filters.extend(tenants.filters.iter().cloned());
        *scope = Scope::Tenant(OPERATOR_SCOPE);
        self.filters(filters);
        Some(ids)
    }
}

/// An operator query made ready to run: the session with the views, their catalog.
struct Prepared {
    session: SessionContext,
    catalog: PropertyCatalog,
}

/// A person or distinct id as the operator views spell it: `<tenant, 10 digits>:<id>`,
/// so that text order is (tenant, id) order.
fn qualified(tenant: TenantId, id: &str) -> String {
    format!("{:010}:{id}", tenant.0)
}

/// The (tenant, person) of a [`qualified`] person id.
fn unqualified(id: &str) -> Result<PersonKey> {
    id.split_once(':')
        .and_then(|(t, p)| {
            Some(PersonKey {
                tenant: TenantId(t.parse().ok()?),
                person_id: p.to_string(),
            })
        })
        .ok_or_else(|| Error::Execution(format!("operator view person id `{id}` has no tenant")))
}

fn df(e: datafusion::error::DataFusionError) -> Error {
    Error::Execution(e.to_string())
}

fn not_operator() -> Error {
    Error::Compile(tally_sql::Error::Unsupported(
        "an operator method needs an operator scope".to_string(),
    ))
}

impl Engine {
    /// Answers an operator trends query over the `tenants` its scope selects (ids and
    /// tenant filters are matched against this list; tenants missing from it are not
    /// read).
    pub async fn trends_operator(
        &self,
        query: &TrendsQuery,
        now: i64,
        tenants: &[TenantInfo],
    ) -> Result<TrendsResult> {
        self.measured("operator_trends", async {
            query.validate().map_err(tally_sql::Error::from)?;
            let mut q = query.clone();
            let mut rw = Rewriter::default();
            let ids = rw
                .scope(&mut q.scope, &mut q.filters)
                .ok_or_else(not_operator)?;
            rw.filters(&mut q.filters);
            for s in &mut q.series {
                rw.filters(&mut s.filters);
                if let Math::Property { property, .. } = &mut s.math {
                    rw.property(property);
                }
            }
            rw.breakdown(&mut q.breakdown);
            let p = self.operator_session(&ids, tenants, &rw).await?;
            self.trends_on(&p.session, &p.catalog, &q, now, None).await
        })
        .await
    }

    /// Answers an operator funnel query (every view; persons are ordered by tenant,
    /// then person id, and cursors name a tenant's person).
    pub async fn funnel_operator(
        &self,
        query: &FunnelQuery,
        now: i64,
        tenants: &[TenantInfo],
    ) -> Result<FunnelResult> {
        self.measured("operator_funnel", async {
            query.validate().map_err(tally_sql::Error::from)?;
            let mut q = query.clone();
            // Persons: the client's cursor names a (tenant, person); the views' person
            // ids are `<tenant>:<person>` with the tenant zero-padded, so their text
            // order is (tenant, person id) order and the cursor maps onto one of them.
            if let FunnelView::Persons {
                cursor: Some(cursor),
                ..
            } = &mut q.view
            {
                let c = PersonCursor::decode(cursor).map_err(tally_sql::Error::from)?;
                *cursor = PersonCursor(PersonKey {
                    tenant: OPERATOR_SCOPE,
                    person_id: qualified(c.0.tenant, &c.0.person_id),
                })
                .encode();
            }
            let mut rw = Rewriter::default();
            let ids = rw
                .scope(&mut q.scope, &mut q.filters)
                .ok_or_else(not_operator)?;
            rw.filters(&mut q.filters);
            for s in &mut q.steps {
                rw.filters(&mut s.filters);
            }
            for x in &mut q.exclusions {
                rw.filters(&mut x.filters);
            }
            rw.breakdown(&mut q.breakdown);
            let p = self.operator_session(&ids, tenants, &rw).await?;
            let mut result = self
                .funnel_on(&p.session, &p.catalog, &q, now, None)
                .await?;
            if let FunnelResult::Persons(page) = &mut result {
                page.persons = page
                    .persons
                    .iter()
                    .map(|k| unqualified(&k.person_id))
                    .collect::<Result<_>>()?;
                if page.next_cursor.is_some() {
                    page.next_cursor = page
                        .persons
                        .last()
                        .map(|k| PersonCursor(k.clone()).encode());
                }
            }
            Ok(result)
        })
        .await
    }

    /// Answers an operator retention query.
    pub async fn retention_operator(
        &self,
        query: &RetentionQuery,
        now: i64,
        tenants: &[TenantInfo],
    ) -> Result<RetentionResult> {
        self.measured("operator_retention", async {
            query.validate().map_err(tally_sql::Error::from)?;
            let mut q = query.clone();
            let mut rw = Rewriter::default();
            let ids = rw
                .scope(&mut q.scope, &mut q.filters)
                .ok_or_else(not_operator)?;
            rw.filters(&mut q.filters);
            rw.filters(&mut q.start.filters);
            rw.filters(&mut q.return_event.filters);
            rw.breakdown(&mut q.breakdown);
            let p = self.operator_session(&ids, tenants, &rw).await?;
            crate::retention::run_on(self, &p.session, &p.catalog, &q, now, None).await
        })
        .await
    }

    /// A session whose [`OPERATOR_SCOPE`] relations are the selected tenants' data.
    async fn operator_session(
        &self,
        ids: &[TenantId],
        tenants: &[TenantInfo],
        rewritten: &Rewriter,
    ) -> Result<Prepared> {
        let attributes = &rewritten.attributes;
        let mut selected: Vec<&TenantInfo> = tenants
            .iter()
            .filter(|t| ids.is_empty() || ids.contains(&t.id))
            .filter(|t| t.id != OPERATOR_SCOPE)
            .collect();
        selected.sort_by_key(|t| t.id);
        selected.dedup_by_key(|t| t.id);

        let session = self.new_session()?;
        let d = DataFusionDialect;
        let id = |s: &str| d.quote_identifier(s);
        let lit = |s: &str| d.quote_string(s);

        // Per tenant: its typed columns and materialised keys.
        let mut columns: BTreeMap<String, KeyColumns> = BTreeMap::new();
        let mut per_tenant = Vec::new();
        let mut person_keys = Vec::new();
        for t in &selected {
            let table = self.store.events_table(t.id)?;
            let mut own: BTreeMap<String, KeyColumns> = BTreeMap::new();
            for field in table.schema().fields() {
                if let Some((ty, key)) = parse_property_column(field.name()) {
                    // Keys the query does not read stay out of the view (the JSON has
                    // them anyway), so the view is as narrow as the query.
                    if key.starts_with(RESERVED_PREFIX) || !rewritten.event_keys.contains(key) {
                        continue;
                    }
                    let cols = own.entry(key.to_string()).or_default();
                    match ty {
                        PropertyType::Str => cols.string = true,
                        PropertyType::Num => cols.number = true,
                        PropertyType::Bool => cols.boolean = true,
                    }
                }
            }
            let catalog = self.store.property_catalog(t.id);
            let materialized: BTreeSet<String> = catalog
                .keys
                .iter()
                .filter(|(k, s)| s.materialized && !k.starts_with(RESERVED_PREFIX))
                .map(|(k, _)| k.clone())
                .collect();
            for (key, cols) in &own {
                let all = columns.entry(key.clone()).or_default();
                all.string |= cols.string;
                all.number |= cols.number;
                all.boolean |= cols.boolean;
            }
            let name = format!("operator_{}_events", t.id.0);
            session
                .register_table(name.clone(), Arc::new(table))
                .map_err(df)?;
            let map = self.person_map(t.id).await?;
            session
                .register_table(format!("operator_{}_person_map", t.id.0), map.table)
                .map_err(df)?;
            // After the tenant's events table: its snapshot's numbers are all keyed.
            person_keys.push(self.numbered_person_keys(t.id, &map.keys));
            session
                .register_table(
                    format!("operator_{}_persons", t.id.0),
                    Arc::new(crate::persons::LazyPersonsTable::new(
                        self.persons.clone(),
                        t.id,
                    )),
                )
                .map_err(df)?;
            per_tenant.push((*t, name, own, materialized));
        }

        // Person keys over every selected tenant's distinct-id numbers, each tenant's
        // numbers shifted past the previous tenants' (the view below shifts them
        // alike), so that no two tenants share a person.
        let (keys, number_offsets) =
            NumberedPersonKeys::concat(person_keys.iter().map(|k| k.as_ref()));
        session.register_udf(PersonKeyUdf::new(Arc::new(keys)).into_udf());

        // The events view: base columns, every typed column, the tenant columns.
        let typed = |key: &str, ty: &str| format!("prop:{ty}:{key}");
        let mut branches = Vec::new();
        for ((t, table, own, materialized), number_offset) in per_tenant.iter().zip(&number_offsets)
        {
            let prefix = lit(&qualified(t.id, ""));
            let mut cols = vec![
                format!("e.{0} AS {0}", id("uuid")),
                format!("e.{0} AS {0}", id("event")),
                format!("concat({prefix}, e.{0}) AS {0}", id("distinct_id")),
                format!(
                    "CAST(e.{0} AS BIGINT) + CAST({number_offset} AS BIGINT) AS {0}",
                    id("distinct_id_number")
                ),
                format!("e.{0} AS {0}", id("timestamp")),
                format!("e.{0} AS {0}", id("properties")),
            ];
            let json = format!("e.{}", id("properties"));
            for (key, all) in &columns {
                let has = own.get(key).copied().unwrap_or_default();
                let from_json = !materialized.contains(key);
                for (present, wanted, ty, sql_ty, extract) in [
                    (
                        has.string,
                        all.string,
                        "str",
                        "VARCHAR",
                        "tally_json_string",
                    ),
                    (has.number, all.number, "num", "DOUBLE", "tally_json_number"),
                    (
                        has.boolean,
                        all.boolean,
                        "bool",
                        "BOOLEAN",
                        "tally_json_bool",
                    ),
                ] {
                    if !wanted {
                        continue;
                    }
                    let value = if present {
                        format!("e.{}", id(&typed(key, ty)))
                    } else if from_json {
                        format!("{extract}({json}, {})", lit(key))
                    } else {
                        "NULL".to_string()
                    };
                    cols.push(format!(
                        "CAST({value} AS {sql_ty}) AS {}",
                        id(&typed(key, ty))
                    ));
                }
            }
            cols.push(format!(
                "CAST({} AS DOUBLE) AS {}",
                t.id.0,
                id(&typed(TENANT_ID_KEY, "num"))
            ));
            cols.push(format!(
                "CAST({} AS VARCHAR) AS {}",
                lit(&t.name),
                id(&typed(TENANT_NAME_KEY, "str"))
            ));
            for a in attributes {
                let value = t
                    .attributes
                    .get(a)
                    .map_or_else(|| "NULL".to_string(), |v| lit(v));
                cols.push(format!(
                    "CAST({value} AS VARCHAR) AS {}",
                    id(&typed(&format!("{TENANT_ATTRIBUTE_PREFIX}{a}"), "str"))
                ));
            }
            branches.push(format!(
                "SELECT {} FROM {} AS e",
                cols.join(", "),
                id(table)
            ));
        }
        let events_sql = if branches.is_empty() {
            // No tenant selected: an empty relation of the same shape.
            let table = self.store.events_table(OPERATOR_SCOPE)?;
            session
                .register_table("operator_none_events", Arc::new(table))
                .map_err(df)?;
            let mut cols: Vec<String> = ["uuid", "event", "distinct_id", "timestamp", "properties"]
                .iter()
                .map(|c| format!("e.{0} AS {0}", id(c)))
                .collect();
            cols.push(format!(
                "CAST(NULL AS BIGINT) AS {}",
                id("distinct_id_number")
            ));
            cols.push(format!(
                "CAST(NULL AS DOUBLE) AS {}",
                id(&typed(TENANT_ID_KEY, "num"))
            ));
            cols.push(format!(
                "CAST(NULL AS VARCHAR) AS {}",
                id(&typed(TENANT_NAME_KEY, "str"))
            ));
            for a in attributes {
                cols.push(format!(
                    "CAST(NULL AS VARCHAR) AS {}",
                    id(&typed(&format!("{TENANT_ATTRIBUTE_PREFIX}{a}"), "str"))
                ));
            }
            format!(
                "SELECT {} FROM operator_none_events AS e WHERE FALSE",
                cols.join(", ")
            )
        } else {
            branches.join(" UNION ALL ")
        };
        self.register_view(
            &session,
            &DataFusionDialect::events_table_name(OPERATOR_SCOPE),
            &events_sql,
        )
        .await?;

        // Identity map and persons, ids prefixed by tenant.
        let union = |kind: &str, cols: &dyn Fn(&str) -> String, empty: &str| {
            if per_tenant.is_empty() {
                return empty.to_string();
            }
            per_tenant
                .iter()
                .map(|(t, ..)| {
                    format!(
                        "SELECT {} FROM {}",
                        cols(&lit(&qualified(t.id, ""))),
                        id(&format!("operator_{}_{kind}", t.id.0))
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        };
        let map_sql = union(
            "person_map",
            &|prefix| {
                format!(
                    "concat({prefix}, {0}) AS {0}, concat({prefix}, {1}) AS {1}",
                    id("distinct_id"),
                    id("person_id")
                )
            },
            "SELECT CAST(NULL AS VARCHAR) AS distinct_id, CAST(NULL AS VARCHAR) AS person_id WHERE FALSE",
        );
        self.register_view(
            &session,
            &DataFusionDialect::person_map_table_name(OPERATOR_SCOPE),
            &map_sql,
        )
        .await?;
        let persons_sql = union(
            "persons",
            &|prefix| {
                format!(
                    "concat({prefix}, {0}) AS {0}, {1} AS {1}",
                    id("person_id"),
                    id("properties")
                )
            },
            "SELECT CAST(NULL AS VARCHAR) AS person_id, CAST(NULL AS VARCHAR) AS properties WHERE FALSE",
        );
        self.register_view(
            &session,
            &DataFusionDialect::persons_table_name(OPERATOR_SCOPE),
            &persons_sql,
        )
        .await?;

        // The catalog the compiler reads the views with.
        let mut catalog = PropertyCatalog::new();
        for (key, cols) in columns {
            // Arrays and objects are only ever in the JSON.
            catalog.insert(
                key,
                KeyColumns {
                    other: true,
                    ..cols
                },
            );
        }
        let number = KeyColumns {
            number: true,
            ..KeyColumns::default()
        };
        let string = KeyColumns {
            string: true,
            ..KeyColumns::default()
        };
        catalog.insert(TENANT_ID_KEY, number);
        catalog.insert(TENANT_NAME_KEY, string);
        for a in attributes {
            catalog.insert(format!("{TENANT_ATTRIBUTE_PREFIX}{a}"), string);
        }
        Ok(Prepared { session, catalog })
    }

    async fn register_view(&self, session: &SessionContext, name: &str, sql: &str) -> Result<()> {
        tracing::debug!(name, sql, "registering operator view");
        let view = session.sql(sql).await.map_err(|e| self.df_error(e))?;
        session.register_table(name, view.into_view()).map_err(df)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_query::{Operator, PropertyFilter};

    #[test]
    fn qualified_ids_sort_by_tenant_then_id_and_round_trip() {
        let keys = [(2, "b"), (10, "a"), (2, "a:b"), (u32::MAX - 1, "")];
        let mut texts: Vec<String> = keys
            .iter()
            .map(|(t, p)| qualified(TenantId(*t), p))
            .collect();
        texts.sort();
        let back: Vec<PersonKey> = texts.iter().map(|t| unqualified(t).unwrap()).collect();
        let mut expected: Vec<PersonKey> = keys
            .iter()
            .map(|(t, p)| PersonKey {
                tenant: TenantId(*t),
                person_id: p.to_string(),
            })
            .collect();
        expected.sort();
        assert_eq!(back, expected);
        assert!(unqualified("no-tenant").is_err());
    }

    #[test]
    fn tenant_properties_become_reserved_event_keys() {
        let mut rw = Rewriter::default();
        let attr = PropertyRef {
            source: PropertySource::TenantAttribute,
            key: "plan".into(),
            group_type: None,
        };
        let mut filters = vec![Filter::Or {
            filters: vec![Filter::Property(PropertyFilter {
                property: attr,
                operator: Operator::IsSet,
                value: None,
            })],
        }];
        let mut scope = Scope::Operator {
            tenants: tally_query::TenantSelector {
                ids: vec![TenantId(2)],
                filters: vec![Filter::Property(PropertyFilter {
                    property: PropertyRef {
                        source: PropertySource::Tenant,
                        key: "name".into(),
                        group_type: None,
                    },
                    operator: Operator::IsSet,
                    value: None,
                })],
            },
        };
        let ids = rw.scope(&mut scope, &mut filters).unwrap();
        assert_eq!(ids, vec![TenantId(2)]);
        assert_eq!(scope, Scope::Tenant(OPERATOR_SCOPE));
        assert_eq!(filters.len(), 2, "the selector's filter became global");
        let keys: Vec<String> = filters
            .iter()
            .flat_map(|f| f.predicates())
            .map(|p| {
                assert_eq!(p.property.source, PropertySource::Event);
                p.property.key.clone()
            })
            .collect();
        assert_eq!(keys, ["$tally_tenant_attribute.plan", "$tally_tenant.name"]);
        assert!(rw.attributes.contains("plan"));
        // A tenant scope is not rewritten.
        let mut tenant = Scope::Tenant(TenantId(1));
        assert!(rw.scope(&mut tenant, &mut Vec::new()).is_none());
    }
}
