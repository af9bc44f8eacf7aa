//! Who a query reads: one tenant, or (operator queries) a selection of tenants.
//!
//! Owns the [`Scope`] every query carries and its validation. The API layer sets it
//! from the credentials (a tenant's secret key can only produce `Scope::Tenant` for
//! that tenant; only an operator key produces `Scope::Operator`), never from what the
//! client wrote; engines apply it to every table they read.

use serde::{Deserialize, Serialize};
use tally_core::TenantId;

use crate::error::{QueryError, Result};
use crate::filter::{Filter, ValidationContext, validate_filters};

/// Most tenant ids an operator query may list explicitly.
pub const MAX_SCOPE_TENANTS: usize = 10_000;

/// The tenants a query reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Scope {
    /// One tenant's data: `{"tenant": 7}`.
    Tenant(#[cfg_attr(feature = "schema", schemars(with = "u32"))] TenantId),
    /// Several tenants' data, for the operator's staff: `{"operator": {"tenants": {...}}}`.
    Operator {
        /// Which tenants.
        #[serde(default)]
        tenants: TenantSelector,
    },
}

impl Scope {
    /// Whether this is an operator (cross-tenant) scope.
    pub fn is_operator(&self) -> bool {
        matches!(self, Scope::Operator { .. })
    }

    pub(crate) fn context(&self) -> ValidationContext {
        ValidationContext {
            operator: self.is_operator(),
        }
    }

    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        match self {
            Scope::Tenant(_) => Ok(()),
            Scope::Operator { tenants } => tenants.validate(&format!("{field}.operator.tenants")),
        }
    }
}

/// A selection of tenants for an operator query: the listed ids (all tenants when the
/// list is empty) that also pass the filters on tenant fields and attributes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantSelector {
    /// Tenant ids to include; empty means every tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<u32>"))]
    pub ids: Vec<TenantId>,
    /// Filters on `tenant` fields (`id`, `name`) and `tenant_attribute`s, all of which
    /// a tenant must pass, e.g. `plan equals "pro"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
}

impl TenantSelector {
    fn validate(&self, field: &str) -> Result<()> {
        if self.ids.len() > MAX_SCOPE_TENANTS {
            return Err(QueryError::invalid(
                format!("{field}.ids"),
                format!(
                    "lists {} tenants, more than the limit of {MAX_SCOPE_TENANTS}; use filters on tenant attributes instead",
                    self.ids.len()
                ),
            ));
        }
        let ctx = ValidationContext { operator: true };
        validate_filters(&format!("{field}.filters"), &self.filters, &ctx)?;
        for (i, f) in self.filters.iter().enumerate() {
            if let Some(p) = f
                .predicates()
                .into_iter()
                .find(|p| !p.property.source.is_operator_only())
            {
                return Err(QueryError::invalid(
                    format!("{field}.filters[{i}]"),
                    format!(
                        "selects tenants, so it can only use \"tenant\" and \"tenant_attribute\" properties, not \"{}\" property `{}`",
                        p.property.source.as_str(),
                        p.property.key
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::PropertyRef;

    #[test]
    fn json_shapes() {
        let tenant: Scope = serde_json::from_str(r#"{"tenant": 7}"#).unwrap();
        assert_eq!(tenant, Scope::Tenant(TenantId(7)));
        let all: Scope = serde_json::from_str(r#"{"operator": {}}"#).unwrap();
        assert_eq!(
            all,
            Scope::Operator {
                tenants: TenantSelector::default()
            }
        );
        let some: Scope = serde_json::from_str(
            r#"{"operator": {"tenants": {"ids": [1, 2], "filters": [
                {"type": "property", "property": {"source": "tenant_attribute", "key": "plan"}, "operator": "equals", "value": "pro"}]}}}"#,
        )
        .unwrap();
        some.validate("scope").unwrap();
        assert!(serde_json::from_str::<Scope>(r#"{"tenant": 7, "operator": {}}"#).is_err());
    }

    #[test]
    fn tenant_selectors_only_use_tenant_properties() {
        let scope = Scope::Operator {
            tenants: TenantSelector {
                ids: vec![],
                filters: vec![Filter::equals(PropertyRef::event("plan"), "pro")],
            },
        };
        let msg = scope.validate("scope").unwrap_err().to_string();
        assert!(
            msg.contains("scope.operator.tenants.filters[0]") && msg.contains("tenant_attribute"),
            "{msg}"
        );
    }
}
