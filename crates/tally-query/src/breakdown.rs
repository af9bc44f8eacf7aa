//! Breakdowns: splitting a result by the values of up to three properties, keeping the
//! top N value combinations and folding the rest into "other".
//!
//! Owns the request ([`Breakdown`]) and the value that labels a result row
//! ([`BreakdownValue`]). How values are ranked is part of each query kind's semantics
//! (see `docs/QUERY-SEMANTICS.md`); what a value *is* is [`crate::filter::semantics::breakdown_value`].

use serde::{Deserialize, Serialize};

use crate::error::{QueryError, Result};
use crate::filter::{PropertyRef, ValidationContext};

/// Most properties one breakdown may combine.
pub const MAX_BREAKDOWN_PROPERTIES: usize = 3;
/// Largest top-N.
pub const MAX_BREAKDOWN_LIMIT: u32 = 1000;
/// The top-N when the query does not say.
pub const DEFAULT_BREAKDOWN_LIMIT: u32 = 25;

fn default_limit() -> u32 {
    DEFAULT_BREAKDOWN_LIMIT
}

/// Split the result by property values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Breakdown {
    /// The properties, one to three; a row is one combination of their values.
    pub properties: Vec<PropertyRef>,
    /// How many value combinations to keep (the top ones); the rest become one
    /// "other" row. Default 25, at most 1000.
    #[serde(default = "default_limit")]
    pub limit: u32,
}

impl Breakdown {
    /// A breakdown by one property with the default limit.
    pub fn by(property: PropertyRef) -> Self {
        Breakdown {
            properties: vec![property],
            limit: DEFAULT_BREAKDOWN_LIMIT,
        }
    }

    pub(crate) fn validate(&self, field: &str, ctx: &ValidationContext) -> Result<()> {
        if self.properties.is_empty() || self.properties.len() > MAX_BREAKDOWN_PROPERTIES {
            return Err(QueryError::invalid(
                format!("{field}.properties"),
                format!(
                    "a breakdown needs 1 to {MAX_BREAKDOWN_PROPERTIES} properties, got {}",
                    self.properties.len()
                ),
            ));
        }
        for (i, p) in self.properties.iter().enumerate() {
            p.validate(&format!("{field}.properties[{i}]"), ctx)?;
        }
        if self.limit == 0 || self.limit > MAX_BREAKDOWN_LIMIT {
            return Err(QueryError::invalid(
                format!("{field}.limit"),
                format!(
                    "must be between 1 and {MAX_BREAKDOWN_LIMIT}, got {}",
                    self.limit
                ),
            ));
        }
        Ok(())
    }
}

/// The label of a breakdown row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BreakdownValue {
    /// One combination of values, in the order of the breakdown's properties. Each is
    /// the canonical value (`null` when the property is not set).
    Values {
        /// The values.
        values: Vec<serde_json::Value>,
    },
    /// Everything outside the top N.
    Other,
}
