//! Schema discovery: the event names, property names and property values a tenant has
//! sent, with types and counts, so that query builders can offer them.
//!
//! Owns the requests ([`SchemaQuery`], [`SchemaRequest`]) and results.

use serde::{Deserialize, Serialize};

use crate::error::{QueryError, Result};
use crate::filter::{PropertyRef, PropertySource, validate_event_name};
use crate::scope::Scope;
use crate::time::{DateRange, WeekStart, parse_time_zone};

/// Largest number of entries one schema answer lists.
pub const MAX_SCHEMA_LIMIT: u32 = 1000;

fn default_limit() -> u32 {
    100
}

/// A schema-discovery query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SchemaQuery {
    /// The tenants read. Set by the API from the credentials.
    pub scope: Scope,
    /// Only events in this range; absent means all time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_range: Option<DateRange>,
    /// IANA time zone for the date range; absent means the tenant's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// First day of a week (for `this week` ranges).
    #[serde(default)]
    pub week_start: WeekStart,
    /// What to list.
    pub request: SchemaRequest,
}

/// What to list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SchemaRequest {
    /// Event names with their counts, most frequent first.
    EventNames {
        /// Only names containing this text (ignoring case).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        search: Option<String>,
        /// At most this many, 1 to 1000; default 100.
        #[serde(default = "default_limit")]
        limit: u32,
    },
    /// Property keys of one source with their JSON types and counts.
    PropertyNames {
        /// `event`, `person` or `group`.
        source: PropertySource,
        /// The group type, for `group`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_type: Option<String>,
        /// Only properties seen on events with this name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        /// Only keys containing this text (ignoring case).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        search: Option<String>,
        /// At most this many, 1 to 1000; default 100.
        #[serde(default = "default_limit")]
        limit: u32,
    },
    /// The most frequent values of one property.
    PropertyValues {
        /// The property.
        property: PropertyRef,
        /// Only values seen on events with this name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        /// Only values whose text contains this (ignoring case).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        search: Option<String>,
        /// At most this many, 1 to 1000; default 100.
        #[serde(default = "default_limit")]
        limit: u32,
    },
}

impl SchemaQuery {
    /// Checks everything that can be checked without the clock or data.
    pub fn validate(&self) -> Result<()> {
        self.scope.validate("scope")?;
        let ctx = self.scope.context();
        if let Some(r) = &self.date_range {
            r.validate("date_range")?;
        }
        if let Some(tz) = &self.time_zone {
            parse_time_zone("time_zone", tz)?;
        }
        let check_limit = |limit: u32| {
            if limit == 0 || limit > MAX_SCHEMA_LIMIT {
                return Err(QueryError::invalid(
                    "request.limit",
                    format!("must be between 1 and {MAX_SCHEMA_LIMIT}, got {limit}"),
                ));
            }
            Ok(())
        };
        match &self.request {
            SchemaRequest::EventNames { limit, .. } => check_limit(*limit),
            SchemaRequest::PropertyNames {
                source,
                group_type,
                event,
                limit,
                ..
            } => {
                validate_event_name("request.event", event.as_deref())?;
                // Reuse the property-reference rules with a placeholder key.
                PropertyRef {
                    source: *source,
                    key: "key".into(),
                    group_type: group_type.clone(),
                }
                .validate("request", &ctx)?;
                if *source == PropertySource::Tenant {
                    return Err(QueryError::invalid(
                        "request.source",
                        "the tenant's built-in fields are `id` and `name`; there is nothing to discover",
                    ));
                }
                check_limit(*limit)
            }
            SchemaRequest::PropertyValues {
                property,
                event,
                limit,
                ..
            } => {
                validate_event_name("request.event", event.as_deref())?;
                property.validate("request.property", &ctx)?;
                check_limit(*limit)
            }
        }
    }
}

/// A schema-discovery answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SchemaResult {
    /// Answers [`SchemaRequest::EventNames`].
    EventNames {
        /// Most frequent first, then by name.
        events: Vec<EventNameInfo>,
    },
    /// Answers [`SchemaRequest::PropertyNames`].
    PropertyNames {
        /// Most frequent first, then by key.
        properties: Vec<PropertyInfo>,
    },
    /// Answers [`SchemaRequest::PropertyValues`].
    PropertyValues {
        /// Most frequent first, then by value.
        values: Vec<ValueCount>,
    },
}

/// An event name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventNameInfo {
    /// The event name.
    pub name: String,
    /// Events with this name.
    pub count: u64,
    /// The latest such event (UTC microseconds).
    pub last_seen: i64,
}

/// The JSON type of a property value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PropertyType {
    /// JSON strings.
    String,
    /// JSON numbers.
    Number,
    /// JSON booleans.
    Boolean,
    /// Arrays and objects.
    Json,
}

impl PropertyType {
    /// The type of a non-null value.
    pub fn of(value: &serde_json::Value) -> Option<Self> {
        match value {
            serde_json::Value::Null => None,
            serde_json::Value::Bool(_) => Some(PropertyType::Boolean),
            serde_json::Value::Number(_) => Some(PropertyType::Number),
            serde_json::Value::String(_) => Some(PropertyType::String),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => Some(PropertyType::Json),
        }
    }
}

/// A property key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PropertyInfo {
    /// The property key.
    pub key: String,
    /// Every JSON type the key was seen with, sorted.
    pub types: Vec<PropertyType>,
    /// Events (event properties), persons (person properties) or groups (group
    /// properties) carrying the key with a non-null value.
    pub count: u64,
}

/// A property value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ValueCount {
    /// The canonical value (as in breakdowns).
    pub value: serde_json::Value,
    /// Events, persons or groups with this value, as for [`PropertyInfo::count`].
    pub count: u64,
}
