//! The live events view: the latest events matching filters, newest first, paginated.
//!
//! Owns the request ([`EventsQuery`]), its validation, the row shape and the cursor.

use serde::{Deserialize, Serialize};
use tally_core::{Properties, TenantId};
use uuid::Uuid;

use crate::error::{QueryError, Result};
use crate::filter::{Filter, validate_event_name, validate_filters, validate_name};
use crate::scope::Scope;
use crate::time::{DateRange, WeekStart, parse_time_zone};

/// Largest page of events.
pub const MAX_EVENTS_PAGE: u32 = 1000;

fn default_page() -> u32 {
    100
}

/// A page of the latest events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
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
    /// Only events with this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Only events of this person (id as resolved at query time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_id: Option<String>,
    /// Filters the events must pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Page size, 1 to 1000; default 100.
    #[serde(default = "default_page")]
    pub limit: u32,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl EventsQuery {
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
        validate_event_name("event", self.event.as_deref())?;
        if let Some(p) = &self.person_id {
            validate_name("person_id", p)?;
        }
        validate_filters("filters", &self.filters, &ctx)?;
        if self.limit == 0 || self.limit > MAX_EVENTS_PAGE {
            return Err(QueryError::invalid(
                "limit",
                format!(
                    "must be between 1 and {MAX_EVENTS_PAGE}, got {}",
                    self.limit
                ),
            ));
        }
        if let Some(c) = &self.cursor {
            EventsCursor::decode(c)?;
        }
        Ok(())
    }
}

/// A page of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventsResult {
    /// Newest first: by timestamp, then tenant, then uuid, all descending.
    pub events: Vec<EventRow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One event as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventRow {
    /// The event's tenant.
    #[cfg_attr(feature = "schema", schemars(with = "u32"))]
    pub tenant: TenantId,
    /// The event's dedup key.
    pub uuid: Uuid,
    /// The event name.
    pub event: String,
    /// The distinct id the event was sent with.
    pub distinct_id: String,
    /// The person id as resolved at query time.
    pub person_id: String,
    /// UTC microseconds.
    pub timestamp: i64,
    /// The event's properties.
    pub properties: Properties,
}

/// The position after the last event of a page, as an opaque string
/// (`e1.<timestamp>.<tenant>.<uuid>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventsCursor {
    /// The last listed event's timestamp.
    pub timestamp: i64,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its uuid.
    pub uuid: Uuid,
}

impl EventsCursor {
    /// The cursor as the opaque text clients pass back.
    pub fn encode(&self) -> String {
        format!("e1.{}.{}.{}", self.timestamp, self.tenant, self.uuid)
    }

    /// Parses a cursor produced by [`EventsCursor::encode`].
    pub fn decode(cursor: &str) -> Result<Self> {
        let invalid = || QueryError::InvalidCursor {
            cursor: cursor.to_string(),
        };
        let mut parts = cursor.split('.');
        if parts.next() != Some("e1") {
            return Err(invalid());
        }
        let timestamp = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(invalid)?;
        let tenant = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(invalid)?;
        let uuid = parts
            .next()
            .and_then(|p| Uuid::parse_str(p).ok())
            .ok_or_else(invalid)?;
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(EventsCursor {
            timestamp,
            tenant: TenantId(tenant),
            uuid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_tampering() {
        let c = EventsCursor {
            timestamp: -5,
            tenant: TenantId(9),
            uuid: Uuid::from_u128(42),
        };
        assert_eq!(EventsCursor::decode(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "e1",
            "e1.1.2",
            "e2.1.2.00000000-0000-0000-0000-00000000002a",
            "e1.x.2.y",
        ] {
            assert!(EventsCursor::decode(bad).is_err(), "{bad}");
        }
    }
}
