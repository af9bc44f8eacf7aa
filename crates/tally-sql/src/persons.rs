//! The persons list compiled to one statement over the tenant's persons relation
//! (`person_id`, `properties` JSON): person ids passing the person-property filters,
//! in id order, after the cursor, one page plus one row.
//!
//! Persons are read from the persons relation alone, never from events: a person is
//! listed whether or not any of their events are stored. Resolving a `distinct_id`
//! lookup to a person id is the caller's (it holds the identity map); the statement
//! then only checks that id.

use tally_core::TenantId;
use tally_query::PersonsQuery;
use tally_query::funnel::PersonCursor;

use crate::dialect::Dialect;
use crate::expr::Scoped;
use crate::{PropertyCatalog, Result, scope_tenant};

/// A compiled persons query.
pub struct PersonsPlan<'a> {
    /// The query.
    pub query: &'a PersonsQuery,
    /// The tenant, from the query's scope.
    pub tenant: TenantId,
    dialect: &'a dyn Dialect,
}

/// Compiles a persons query: validates it (filters on person properties only).
pub fn compile_persons<'a>(
    query: &'a PersonsQuery,
    dialect: &'a dyn Dialect,
) -> Result<PersonsPlan<'a>> {
    query.validate()?;
    let tenant = scope_tenant(&query.scope)?;
    let plan = PersonsPlan {
        query,
        tenant,
        dialect,
    };
    plan.page_sql(None)?;
    Ok(plan)
}

impl PersonsPlan<'_> {
    /// The page statement returning `row_person_id`, at most `limit + 1` rows, or
    /// `None` when the cursor is past every person of this tenant (persons are ordered
    /// by tenant, then id). `only_person`: restrict to this person id (the resolved
    /// `distinct_id` lookup).
    pub fn page_sql(&self, only_person: Option<&str>) -> Result<Option<String>> {
        let q = self.query;
        // Person properties never read event columns, so the catalog is irrelevant.
        let catalog = PropertyCatalog::new();
        let s = Scoped::new(self.dialect, &catalog, self.tenant);
        let id = s.col("pp", "person_id");
        let mut conds = Vec::new();
        let filters = s.filters(&q.filters)?;
        if filters != "TRUE" {
            conds.push(filters);
        }
        if let Some(cursor) = q.cursor.as_deref().map(PersonCursor::decode).transpose()? {
            match cursor.0.tenant.cmp(&self.tenant) {
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Equal => {
                    conds.push(format!("{id} > {}", s.lit(&cursor.0.person_id)))
                }
                std::cmp::Ordering::Less => {}
            }
        }
        if let Some(person) = only_person {
            conds.push(format!("{id} = {}", s.lit(person)));
        }
        Ok(Some(format!(
            "SELECT {id} AS row_person_id {from} ORDER BY row_person_id LIMIT {limit}{suffix}",
            from = s.persons_source(&conds),
            limit = u64::from(q.limit) + 1,
            suffix = self.dialect.statement_suffix(),
        )))
    }
}
