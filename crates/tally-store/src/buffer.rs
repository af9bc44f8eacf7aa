//! The in-memory write buffer: committed events not yet in published Parquet files.
//!
//! Owns the per-(tenant, partition) accumulation of applied events, their conversion
//! to Arrow (in sealed chunks, so queries do not re-convert the whole buffer each
//! time) and size accounting for flush triggers and backpressure. It does not own
//! locking (the store's state lock guards it), dedup, or writing files.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use tally_core::{Event, TenantId};

use crate::config::PartitionStart;
use crate::error::Result;
use crate::schema::{PropertyCatalog, events_to_batch, uuid_at, uuid_column};

/// Events per sealed chunk: large enough that Arrow conversion is amortised, small
/// enough that converting the open tail at query time stays cheap.
const SEAL_ROWS: usize = 4096;

/// A buffered event not yet converted to Arrow.
#[derive(Debug, Clone)]
pub(crate) struct TailEvent {
    pub event: Event,
    /// The event's properties as compact JSON, when the caller had serialised them
    /// already (the ingest pipeline's log record); otherwise serialised at conversion.
    pub properties_json: Option<String>,
    /// The distinct id's number, assigned by `apply`.
    pub distinct_id_number: u32,
}

impl TailEvent {
    fn as_row(&self) -> (&Event, Option<&str>, u32) {
        (
            &self.event,
            self.properties_json.as_deref(),
            self.distinct_id_number,
        )
    }
}

/// Events of one tenant partition.
#[derive(Debug, Default, Clone)]
pub(crate) struct PartitionBuffer {
    /// Immutable converted chunks, each with its own schema (typed columns present in
    /// that chunk only).
    pub sealed: Vec<RecordBatch>,
    /// Events not yet converted.
    pub tail: Vec<TailEvent>,
    pub rows: usize,
}

impl PartitionBuffer {
    /// All events as record batches (the tail converted on the fly).
    pub fn batches(&self, catalog: &PropertyCatalog) -> Result<Vec<RecordBatch>> {
        let mut out = self.sealed.clone();
        if !self.tail.is_empty() {
            out.push(events_to_batch(
                self.tail.iter().map(TailEvent::as_row),
                catalog,
            )?);
        }
        Ok(out)
    }

    /// Calls `each` with every buffered uuid.
    pub fn for_each_uuid(&self, mut each: impl FnMut(u128)) -> Result<()> {
        for batch in &self.sealed {
            let uuids = uuid_column(batch)?;
            for row in 0..batch.num_rows() {
                each(uuid_at(&uuids, row));
            }
        }
        for e in &self.tail {
            each(e.event.uuid.as_u128());
        }
        Ok(())
    }
}

/// A set of buffered events, either the active buffer that `apply` appends to or a
/// frozen one being flushed.
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    pub groups: BTreeMap<(TenantId, PartitionStart), PartitionBuffer>,
    pub rows: usize,
    /// Sum of `Event::approx_size` of buffered events.
    pub bytes: usize,
    /// Highest lsn applied into this buffer.
    pub max_lsn: Option<u64>,
}

impl WriteBuffer {
    pub fn push(
        &mut self,
        tenant: TenantId,
        partition: PartitionStart,
        event: Event,
        properties_json: Option<String>,
        distinct_id_number: u32,
        catalog: &PropertyCatalog,
    ) {
        self.bytes += event.approx_size();
        self.rows += 1;
        let group = self.groups.entry((tenant, partition)).or_default();
        group.tail.push(TailEvent {
            event,
            properties_json,
            distinct_id_number,
        });
        group.rows += 1;
        if group.tail.len() >= SEAL_ROWS {
            // Infallible in practice; if conversion ever fails the events simply stay
            // in the tail (converted again at query and flush time) rather than being
            // lost after `apply` already counted them as stored.
            match events_to_batch(group.tail.iter().map(TailEvent::as_row), catalog) {
                Ok(batch) => {
                    group.tail.clear();
                    group.sealed.push(batch);
                }
                Err(error) => tracing::warn!(%error, "could not seal buffer chunk"),
            }
        }
    }

    pub fn note_lsn(&mut self, lsn: u64) {
        self.max_lsn = Some(self.max_lsn.map_or(lsn, |m| m.max(lsn)));
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Partition buffers of one tenant.
    pub fn tenant_groups(
        &self,
        tenant: TenantId,
    ) -> impl Iterator<Item = (&PartitionStart, &PartitionBuffer)> {
        self.groups
            .range((tenant, PartitionStart(i64::MIN))..=(tenant, PartitionStart(i64::MAX)))
            .map(|((_, p), g)| (p, g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::Properties;

    #[test]
    fn seals_chunks_and_keeps_every_uuid() {
        let mut buffer = WriteBuffer::default();
        let catalog = PropertyCatalog::default();
        let n = SEAL_ROWS * 2 + 5;
        for i in 0..n {
            let e = Event {
                uuid: uuid::Uuid::from_u128(i as u128),
                event: "e".into(),
                distinct_id: "d".into(),
                timestamp: 0,
                received_at: 0,
                properties: Properties::new(),
                person_set: Properties::new(),
                person_set_once: Properties::new(),
            };
            buffer.push(TenantId(1), PartitionStart(0), e, None, 0, &catalog);
        }
        let (_, group) = buffer.tenant_groups(TenantId(1)).next().unwrap();
        assert_eq!(group.sealed.len(), 2);
        assert_eq!(group.tail.len(), 5);
        let mut seen = Vec::new();
        group.for_each_uuid(|u| seen.push(u)).unwrap();
        assert_eq!(seen, (0..n as u128).collect::<Vec<_>>());
        let rows: usize = group
            .batches(&catalog)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, n);
        assert_eq!(buffer.tenant_groups(TenantId(2)).count(), 0);
    }
}
