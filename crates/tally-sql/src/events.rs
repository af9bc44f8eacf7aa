//! The events list compiled to one statement: the latest events of the query's tenant
//! passing the filters, newest first, one page (plus one row, so the caller knows
//! whether there is a next page), after the cursor.
//!
//! Rows are `(row_uuid, row_event, row_distinct_id, row_person_id, row_ts,
//! row_properties)`: the uuid as lower-case hyphenated text, the person as resolved
//! through the identity map at query time, the timestamp in UTC microseconds and the
//! properties as JSON text. The order is `(timestamp, tenant, uuid)` descending, as in
//! `tally_query::events`; with one tenant per statement that is timestamp then uuid.
//!
//! Does not own: turning rows into `EventRow`s or building the next cursor (the
//! engine does, from the last row it keeps).

use tally_core::TenantId;
use tally_query::time::parse_time_zone;
use tally_query::{Calendar, DateRange, EventsCursor, EventsQuery, TimeRange, WeekStart};

use crate::dialect::Dialect;
use crate::expr::Scoped;
use crate::{CompileContext, Result, scope_tenant};

/// A compiled events query.
pub struct EventsPlan<'a> {
    /// The query.
    pub query: &'a EventsQuery,
    /// The tenant, from the query's scope.
    pub tenant: TenantId,
    /// The resolved date range, when the query has one.
    pub range: Option<TimeRange>,
    dialect: &'a dyn Dialect,
    ctx: CompileContext<'a>,
}

/// Resolves an optional date range in the query's time zone, else the tenant's.
pub(crate) fn resolve_range(
    date_range: Option<&DateRange>,
    time_zone: Option<&str>,
    week_start: WeekStart,
    ctx: &CompileContext<'_>,
) -> Result<Option<TimeRange>> {
    let Some(date_range) = date_range else {
        return Ok(None);
    };
    let default_tz = match ctx.tenant_time_zone {
        Some(name) => parse_time_zone("tenant.time_zone", name)?,
        None => chrono_tz::Tz::UTC,
    };
    let calendar = Calendar::from_settings("time_zone", time_zone, default_tz, week_start)?;
    Ok(Some(date_range.resolve(
        ctx.now,
        &calendar,
        "date_range",
    )?))
}

/// Compiles an events query: validates it and resolves its range.
pub fn compile_events<'a>(
    query: &'a EventsQuery,
    dialect: &'a dyn Dialect,
    ctx: &CompileContext<'a>,
) -> Result<EventsPlan<'a>> {
    query.validate()?;
    let tenant = scope_tenant(&query.scope)?;
    let range = resolve_range(
        query.date_range.as_ref(),
        query.time_zone.as_deref(),
        query.week_start,
        ctx,
    )?;
    let plan = EventsPlan {
        query,
        tenant,
        range,
        dialect,
        ctx: ctx.clone(),
    };
    // Unsupported filters (group properties) fail here rather than at execution.
    plan.page_sql()?;
    Ok(plan)
}

impl EventsPlan<'_> {
    /// The page statement: at most `limit + 1` rows after the query's cursor.
    pub fn page_sql(&self) -> Result<String> {
        let q = self.query;
        let d = self.dialect;
        let s = Scoped::new(d, self.ctx.catalog, self.tenant);
        let ts = s.ts();
        let uuid = d.uuid_text(&s.col("e", "uuid"));
        let mut conds = match self.range {
            Some(r) => s.time_bounds(Some(r.start), Some(r.end)),
            None => Vec::new(),
        };
        if let Some(name) = &q.event {
            conds.push(format!("{} = {}", s.col("e", "event"), s.lit(name)));
        }
        if let Some(person) = &q.person_id {
            conds.push(format!("{} = {}", s.person(), s.lit(person)));
        }
        let filters = s.filters(&q.filters)?;
        if filters != "TRUE" {
            conds.push(filters);
        }
        if let Some(cursor) = q.cursor.as_deref().map(EventsCursor::decode).transpose()? {
            conds.extend(self.after(&s, &uuid, &cursor));
        }
        Ok(format!(
            "SELECT {uuid} AS row_uuid, {event} AS row_event, {distinct} AS row_distinct_id, \
             {person} AS row_person_id, {ts} AS row_ts, {props} AS row_properties \
             {from} ORDER BY row_ts DESC, row_uuid DESC LIMIT {limit}{suffix}",
            event = s.col("e", "event"),
            distinct = s.col("e", "distinct_id"),
            person = s.person(),
            props = s.col("e", "properties"),
            from = s.scoped_source(&conds),
            limit = u64::from(q.limit) + 1,
            suffix = d.statement_suffix(),
        ))
    }

    /// Conditions selecting positions `(timestamp, tenant, uuid)` below the cursor's.
    /// The tenant is fixed, so the comparison is decided by the timestamp unless the
    /// cursor is of this tenant, where equal timestamps fall to the uuid. Written on
    /// the raw timestamp column so the store skips files newer than the cursor.
    fn after(&self, s: &Scoped<'_>, uuid: &str, c: &EventsCursor) -> Vec<String> {
        use std::cmp::Ordering;
        // Positions at the cursor's instant are below it exactly when this tenant
        // sorts below the cursor's (or equals it and the uuid is below).
        let at_or_before = c.timestamp.checked_add(1);
        match self.tenant.cmp(&c.tenant) {
            Ordering::Less => s.time_bounds(None, at_or_before),
            Ordering::Greater => s.time_bounds(None, Some(c.timestamp)),
            Ordering::Equal => {
                let mut conds = s.time_bounds(None, at_or_before);
                conds.push(format!(
                    "({} < {} OR {uuid} < {})",
                    s.col("e", "timestamp"),
                    self.dialect.timestamp_literal(c.timestamp),
                    s.lit(&c.uuid.to_string())
                ));
                conds
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tally_query::Scope;
    use uuid::Uuid;

    use super::*;
    use crate::catalog::PropertyCatalog;
    use crate::dialect::{ClickHouseDialect, DataFusionDialect};

    fn query(cursor: Option<EventsCursor>) -> EventsQuery {
        EventsQuery {
            scope: Scope::Tenant(TenantId(5)),
            date_range: None,
            time_zone: None,
            week_start: WeekStart::Monday,
            event: Some("it's".into()),
            person_id: Some("p'1".into()),
            filters: Vec::new(),
            limit: 10,
            cursor: cursor.map(|c| c.encode()),
        }
    }

    fn sql(q: &EventsQuery, d: &dyn Dialect) -> String {
        let catalog = PropertyCatalog::new();
        let ctx = CompileContext {
            now: 0,
            tenant_time_zone: None,
            catalog: &catalog,
        };
        compile_events(q, d, &ctx).unwrap().page_sql().unwrap()
    }

    #[test]
    fn cursor_of_another_tenant_compares_by_timestamp_only() {
        let cursor = |tenant| EventsCursor {
            timestamp: 100,
            tenant: TenantId(tenant),
            uuid: Uuid::from_u128(7),
        };
        let lower = sql(&query(Some(cursor(4))), &DataFusionDialect);
        assert!(lower.contains("e.\"timestamp\" < to_timestamp_micros(100)"));
        assert!(!lower.contains("tally_uuid_text(e.\"uuid\") <"), "{lower}");
        let higher = sql(&query(Some(cursor(6))), &DataFusionDialect);
        assert!(higher.contains("e.\"timestamp\" < to_timestamp_micros(101)"));
        let same = sql(&query(Some(cursor(5))), &DataFusionDialect);
        assert!(
            same.contains("tally_uuid_text(e.\"uuid\") < '00000000-0000-0000-0000-000000000007'"),
            "{same}"
        );
        assert!(same.contains("LIMIT 11"));
        assert!(same.contains("= 'it''s'") && same.contains("= 'p''1'"));
        let ch = sql(&query(Some(cursor(5))), &ClickHouseDialect);
        assert!(ch.contains("WHERE e.tenant_id = 5") && ch.contains("toString(e.`uuid`) <"));
    }

    #[test]
    fn a_cursor_at_the_last_instant_does_not_overflow() {
        let c = EventsCursor {
            timestamp: i64::MAX,
            tenant: TenantId(5),
            uuid: Uuid::nil(),
        };
        let text = sql(&query(Some(c)), &DataFusionDialect);
        assert!(text.contains(&format!("< to_timestamp_micros({})", i64::MAX)));
    }
}
