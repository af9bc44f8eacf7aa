//! The events list, by brute force: filter, sort newest first, page.

use super::eval::{CompiledMatcher, Prepared};
use super::{RefContext, RefEvent, Result};
use crate::events::{EventRow, EventsCursor, EventsQuery, EventsResult};
use crate::filter::EventMatcher;

/// Answers an events query.
pub fn events(q: &EventsQuery, events: &[RefEvent], ctx: &RefContext) -> Result<EventsResult> {
    q.validate()?;
    let prep = Prepared::new(&q.scope, q.time_zone.as_deref(), q.week_start, ctx)?;
    let range = q
        .date_range
        .as_ref()
        .map(|r| r.resolve(ctx.now, &prep.calendar, "date_range"))
        .transpose()?;
    let matcher = CompiledMatcher::new(
        &EventMatcher {
            event: q.event.clone(),
            filters: Vec::new(),
        },
        &q.filters,
    )?;
    let after = q.cursor.as_deref().map(EventsCursor::decode).transpose()?;
    let position = |e: &RefEvent| EventsCursor {
        timestamp: e.timestamp,
        tenant: e.tenant,
        uuid: e.uuid,
    };
    let mut selected: Vec<&RefEvent> = prep
        .scoped(events)
        .into_iter()
        .filter(|e| range.is_none_or(|r| r.contains(e.timestamp)))
        .filter(|e| q.person_id.as_ref().is_none_or(|p| *p == e.person_id))
        .filter(|e| matcher.matches(e, prep.tenant_of(e)))
        // Newest first, so the next page holds positions below the cursor.
        .filter(|e| after.is_none_or(|a| position(e) < a))
        .collect();
    selected.sort_by_key(|e| std::cmp::Reverse(position(e)));
    let limit = q.limit as usize;
    let next_cursor = (selected.len() > limit).then(|| position(selected[limit - 1]).encode());
    selected.truncate(limit);
    Ok(EventsResult {
        events: selected
            .into_iter()
            .map(|e| EventRow {
                tenant: e.tenant,
                uuid: e.uuid,
                event: e.event.clone(),
                distinct_id: e.distinct_id.clone(),
                person_id: e.person_id.clone(),
                timestamp: e.timestamp,
                properties: e.properties.clone(),
            })
            .collect(),
        next_cursor,
    })
}
