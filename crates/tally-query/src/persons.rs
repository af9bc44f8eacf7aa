//! The persons view: persons with their properties and distinct ids, paginated.
//!
//! Owns the request ([`PersonsQuery`]) and the row shape. Persons live in the metadata
//! store, not in events, so the reference implementation does not answer this query.

use serde::{Deserialize, Serialize};
use tally_core::{Properties, TenantId};

use crate::error::{QueryError, Result};
use crate::filter::{Filter, PropertySource, validate_filters, validate_name};
use crate::funnel::PersonCursor;
use crate::scope::Scope;

/// Largest page of persons.
pub const MAX_PERSONS_PAGE: u32 = 1000;

fn default_page() -> u32 {
    100
}

/// A page of persons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PersonsQuery {
    /// The tenants read. Set by the API from the credentials.
    pub scope: Scope,
    /// Only the person with this distinct id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_id: Option<String>,
    /// Filters on person properties (and, for operator queries, tenant fields).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Page size, 1 to 1000; default 100.
    #[serde(default = "default_page")]
    pub limit: u32,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl PersonsQuery {
    /// Checks everything that can be checked without data.
    pub fn validate(&self) -> Result<()> {
        self.scope.validate("scope")?;
        let ctx = self.scope.context();
        if let Some(d) = &self.distinct_id {
            validate_name("distinct_id", d)?;
        }
        validate_filters("filters", &self.filters, &ctx)?;
        for (i, f) in self.filters.iter().enumerate() {
            if let Some(p) = f.predicates().into_iter().find(|p| {
                matches!(
                    p.property.source,
                    PropertySource::Event | PropertySource::Group
                )
            }) {
                return Err(QueryError::invalid(
                    format!("filters[{i}]"),
                    format!(
                        "persons are filtered on person properties; \"{}\" property `{}` belongs to events",
                        p.property.source.as_str(),
                        p.property.key
                    ),
                ));
            }
        }
        if self.limit == 0 || self.limit > MAX_PERSONS_PAGE {
            return Err(QueryError::invalid(
                "limit",
                format!(
                    "must be between 1 and {MAX_PERSONS_PAGE}, got {}",
                    self.limit
                ),
            ));
        }
        if let Some(c) = &self.cursor {
            PersonCursor::decode(c)?;
        }
        Ok(())
    }
}

/// A page of persons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PersonsResult {
    /// Ordered by tenant, then person id.
    pub persons: Vec<PersonRow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PersonRow {
    /// The person's tenant.
    #[cfg_attr(feature = "schema", schemars(with = "u32"))]
    pub tenant: TenantId,
    /// The person id (persons merged into it resolve to it).
    pub person_id: String,
    /// Every distinct id known to be this person.
    pub distinct_ids: Vec<String>,
    /// The person's current properties.
    pub properties: Properties,
    /// When the person was created (UTC microseconds).
    pub created_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::PropertyRef;

    #[test]
    fn persons_filter_on_person_properties_only() {
        let mut q = PersonsQuery {
            scope: Scope::Tenant(TenantId(1)),
            distinct_id: None,
            filters: vec![Filter::equals(PropertyRef::person("email"), "a@x.io")],
            limit: 100,
            cursor: None,
        };
        q.validate().unwrap();
        q.filters
            .push(Filter::equals(PropertyRef::event("$browser"), "Chrome"));
        let msg = q.validate().unwrap_err().to_string();
        assert!(
            msg.contains("filters[1]") && msg.contains("belongs to events"),
            "{msg}"
        );
        q.filters.pop();
        q.limit = 5000;
        assert!(q.validate().unwrap_err().to_string().contains("limit"));
    }
}
