//! The `tally_funnel(ts BIGINT, mask BIGINT, spec VARCHAR)` aggregate: one person's
//! events in, the person's best chain out, with exactly the rules of
//! `docs/QUERY-SEMANTICS.md` ("Funnels") as `tally_query::reference::funnel` states
//! them.
//!
//! Owns: collecting `(timestamp, mask)` pairs per group (state: two `List<Int64>`, so
//! partial aggregation and repartitioning work), and the chain search. The aggregate
//! is a [`GroupsAccumulator`] ([`FunnelGroups`]): one flat vector of pairs per person
//! inside a single object, sized exactly in `size()`, so a query over millions of
//! persons costs no boxed accumulator per person and the memory pool sees the real
//! footprint. The per-row [`Accumulator`] stays for plans that ask for one; both run
//! the same per-person search ([`best_chain`]). Does not own:
//! the masks' meaning beyond [`tally_sql::funnel`]'s bit layout, or SQL.
//!
//! The search, per person, sorts the events by timestamp and then:
//! - ordered and strict: from every entry (a step-0 event in the date range) walks the
//!   chains depth first, trying for each next step only the events between the
//!   previous chain event's instant and the window's end (binary search), checking
//!   strictness and exclusions with binary searches over the sorted instants, and
//!   expanding each chain state once (see `Walk::visited`), so the work is polynomial
//!   in the person's events rather than in their chains (worst case about steps ×
//!   events² for a person whose events all match every step within one window). The
//!   work is bounded by [`MAX_SEARCH_WORK`] candidate checks per person: beyond it the
//!   query fails with a clear error instead of running for minutes.
//! - any order: from every entry grows the set of events within the window in time
//!   order and keeps a maximum matching of events to distinct steps incrementally
//!   (augmenting paths), per step the entry event is forced to cover.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, Int64Builder, ListArray,
};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, ScalarValue, exec_err};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DfResult;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator,
    ScalarUDF, Signature, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;
use tally_query::FunnelOrder;
use tally_sql::FunnelSpec;
use tally_sql::funnel::{ENTRY_BIT, EXCLUSION_SHIFT, STEP_BIT};

use crate::Engine;

/// Starts the message of the error a person over [`MAX_SEARCH_WORK`] causes, so the
/// engine can tell it from internal failures.
pub const TOO_COMPLEX: &str = "funnel too complex:";

/// The most candidate events the ordered/strict search examines for one person
/// (a fraction of a second of work in release builds).
pub const MAX_SEARCH_WORK: u64 = 100_000_000;

/// The aggregate, ready to register.
pub fn tally_funnel() -> AggregateUDF {
    AggregateUDF::from(FunnelUdaf {
        signature: Signature::exact(
            vec![DataType::Int64, DataType::Int64, DataType::Utf8],
            Volatility::Immutable,
        ),
    })
}

/// `tally_funnel_step(list, i)`: element `i` (0-based) of a `tally_funnel` result,
/// NULL when the list is NULL, shorter, or the element is NULL.
pub fn tally_funnel_step() -> ScalarUDF {
    create_udf(
        tally_sql::funnel::STEP_FUNCTION,
        vec![list_of_int64(), DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(a) => Some(a.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let (Some(lists), Some(index)) = (args.first(), args.get(1)) else {
                return exec_err!("tally_funnel_step takes (list, index)");
            };
            let lists = lists.clone().into_array(rows)?;
            let index = index.clone().into_array(rows)?;
            let Some(lists) = lists.as_any().downcast_ref::<ListArray>() else {
                return exec_err!("tally_funnel_step: the first argument is not a list");
            };
            let index = int64s(&index, "index")?;
            let values = int64s(lists.values(), "list element")?;
            // Read through the offsets: `ListArray::value` would slice an array per row.
            let offsets = lists.value_offsets();
            let mut out = Int64Builder::with_capacity(rows);
            for row in 0..rows {
                let element = (lists.is_valid(row) && index.is_valid(row))
                    .then(|| usize::try_from(index.value(row)).ok())
                    .flatten()
                    .and_then(|i| {
                        let start = usize::try_from(offsets[row]).ok()?;
                        let end = usize::try_from(offsets[row + 1]).ok()?;
                        let at = start.checked_add(i).filter(|at| *at < end)?;
                        values.is_valid(at).then(|| values.value(at))
                    });
                out.append_option(element);
            }
            let out: ArrayRef = Arc::new(out.finish());
            if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
            } else {
                Ok(ColumnarValue::Array(out))
            }
        }),
    )
}

fn list_of_int64() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FunnelUdaf {
    signature: Signature,
}

impl AggregateUDFImpl for FunnelUdaf {
    fn name(&self) -> &str {
        "tally_funnel"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(list_of_int64())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(FunnelAccumulator {
            spec: decode_spec(&args)?,
            ts: Vec::new(),
            mask: Vec::new(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(FunnelGroups::new(decode_spec(&args)?)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[ts]", args.name),
                list_of_int64(),
                true,
            )),
            Arc::new(Field::new(
                format!("{}[mask]", args.name),
                list_of_int64(),
                true,
            )),
        ])
    }
}

/// The spec argument: a constant string, decoded once per accumulator.
fn decode_spec(args: &AccumulatorArgs) -> DfResult<Arc<FunnelSpec>> {
    let text = crate::udf::constant_string_arg(args, 2, "tally_funnel", "(ts, mask, spec)")?;
    let spec = FunnelSpec::decode(&text).map_err(DataFusionError::Execution)?;
    Ok(Arc::new(spec))
}

#[derive(Debug)]
struct FunnelAccumulator {
    spec: Arc<FunnelSpec>,
    ts: Vec<i64>,
    mask: Vec<i64>,
}

fn int64s<'a>(array: &'a ArrayRef, what: &str) -> DfResult<&'a Int64Array> {
    array
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Execution(format!("tally_funnel: {what} is not BIGINT")))
}

fn one_list(values: &[i64]) -> ScalarValue {
    let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(
        values.iter().map(|v| Some(*v)),
    )]);
    ScalarValue::List(Arc::new(list))
}

impl Accumulator for FunnelAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let (Some(ts), Some(mask)) = (values.first(), values.get(1)) else {
            return exec_err!("tally_funnel takes (ts, mask, spec)");
        };
        let (ts, mask) = (int64s(ts, "ts")?, int64s(mask, "mask")?);
        for i in 0..ts.len() {
            if ts.is_valid(i) && mask.is_valid(i) {
                self.ts.push(ts.value(i));
                self.mask.push(mask.value(i));
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let lists = |i: usize| -> DfResult<&ListArray> {
            states
                .get(i)
                .and_then(|a| a.as_any().downcast_ref::<ListArray>())
                .ok_or_else(|| DataFusionError::Execution("tally_funnel: bad state".into()))
        };
        let (ts, mask) = (lists(0)?, lists(1)?);
        for row in 0..ts.len() {
            if ts.is_null(row) || mask.is_null(row) {
                continue;
            }
            let (t, m) = (ts.value(row), mask.value(row));
            let (t, m) = (int64s(&t, "state ts")?, int64s(&m, "state mask")?);
            if t.len() != m.len() {
                return exec_err!("tally_funnel: state lists differ in length");
            }
            self.ts.extend(t.values().iter().copied());
            self.mask.extend(m.values().iter().copied());
        }
        Ok(())
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok(vec![one_list(&self.ts), one_list(&self.mask)])
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let mut events: Vec<(i64, i64)> = self
            .ts
            .iter()
            .copied()
            .zip(self.mask.iter().copied())
            .collect();
        match best_chain(&self.spec, &mut events)? {
            Some(steps) => {
                let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(steps)]);
                Ok(ScalarValue::List(Arc::new(list)))
            }
            None => ScalarValue::try_from(list_of_int64()),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + (self.ts.capacity() + self.mask.capacity()) * std::mem::size_of::<i64>()
    }
}

/// Whether row `i` takes part, under DataFusion's optional `FILTER (WHERE ...)` mask
/// (NULL counts as false).
fn selected(filter: Option<&BooleanArray>, i: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(i) && f.value(i))
}

/// The `tally_funnel` aggregate for all groups (persons) of one partition: per group
/// its `(timestamp, mask)` pairs, in arrival order until evaluation sorts them.
#[derive(Debug)]
pub struct FunnelGroups {
    spec: Arc<FunnelSpec>,
    /// Per group index, its events.
    events: Vec<Vec<(i64, i64)>>,
    /// The sum of `events[g].capacity()`, kept as the vectors grow and are emitted so
    /// that `size()` is exact without visiting every group.
    event_capacity: usize,
}

impl FunnelGroups {
    /// No groups yet.
    pub fn new(spec: Arc<FunnelSpec>) -> Self {
        FunnelGroups {
            spec,
            events: Vec::new(),
            event_capacity: 0,
        }
    }

    fn ensure_groups(&mut self, total_num_groups: usize) {
        if self.events.len() < total_num_groups {
            // An empty Vec allocates nothing: a group costs its 24-byte header until
            // it has events.
            self.events.resize_with(total_num_groups, Vec::new);
        }
    }

    fn group_mut(&mut self, group: usize) -> DfResult<&mut Vec<(i64, i64)>> {
        let groups = self.events.len();
        self.events.get_mut(group).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "tally_funnel: group index {group} beyond {groups} groups"
            ))
        })
    }

    /// Appends to one group, keeping `event_capacity` in step.
    fn extend_group(
        &mut self,
        group: usize,
        pairs: impl IntoIterator<Item = (i64, i64)>,
    ) -> DfResult<()> {
        let events = self.group_mut(group)?;
        let before = events.capacity();
        events.extend(pairs);
        let grown = events.capacity() - before;
        self.event_capacity += grown;
        Ok(())
    }

    /// Removes the groups `emit_to` asks for, keeping `event_capacity` in step.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<(i64, i64)>> {
        let taken = emit_to.take_needed(&mut self.events);
        let released: usize = taken.iter().map(Vec::capacity).sum();
        self.event_capacity -= released;
        taken
    }
}

impl GroupsAccumulator for FunnelGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        let (Some(ts), Some(mask)) = (values.first(), values.get(1)) else {
            return exec_err!("tally_funnel takes (ts, mask, spec)");
        };
        let (ts, mask) = (int64s(ts, "ts")?, int64s(mask, "mask")?);
        if ts.len() != group_indices.len() || mask.len() != group_indices.len() {
            return exec_err!("tally_funnel: arguments and group indices differ in length");
        }
        self.ensure_groups(total_num_groups);
        for (i, &group) in group_indices.iter().enumerate() {
            if selected(opt_filter, i) && ts.is_valid(i) && mask.is_valid(i) {
                self.extend_group(group, [(ts.value(i), mask.value(i))])?;
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> DfResult<()> {
        let lists = |i: usize| -> DfResult<&ListArray> {
            values
                .get(i)
                .and_then(|a| a.as_any().downcast_ref::<ListArray>())
                .ok_or_else(|| DataFusionError::Execution("tally_funnel: bad state".into()))
        };
        let (ts, mask) = (lists(0)?, lists(1)?);
        if ts.len() != group_indices.len() || mask.len() != group_indices.len() {
            return exec_err!("tally_funnel: states and group indices differ in length");
        }
        // Read the lists through their offsets: no per-row array slices.
        let (ts_values, mask_values) = (
            int64s(ts.values(), "state ts")?,
            int64s(mask.values(), "state mask")?,
        );
        let (ts_offsets, mask_offsets) = (ts.value_offsets(), mask.value_offsets());
        self.ensure_groups(total_num_groups);
        for (row, &group) in group_indices.iter().enumerate() {
            if ts.is_null(row) || mask.is_null(row) {
                continue;
            }
            let (t0, t1) = (ts_offsets[row] as usize, ts_offsets[row + 1] as usize);
            let (m0, m1) = (mask_offsets[row] as usize, mask_offsets[row + 1] as usize);
            if t1 - t0 != m1 - m0 {
                return exec_err!("tally_funnel: state lists differ in length");
            }
            let pairs = ts_values.values()[t0..t1]
                .iter()
                .copied()
                .zip(mask_values.values()[m0..m1].iter().copied());
            self.extend_group(group, pairs)?;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        let spec = Arc::clone(&self.spec);
        let chains = self
            .take(emit_to)
            .into_iter()
            .map(|mut events| best_chain(&spec, &mut events))
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
            chains,
        )))
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        let groups = self.take(emit_to);
        let column = |part: fn(&(i64, i64)) -> i64| -> ArrayRef {
            Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
                groups
                    .iter()
                    .map(|events| Some(events.iter().map(|e| Some(part(e))))),
            ))
        };
        Ok(vec![column(|e| e.0), column(|e| e.1)])
    }

    /// Each row as its own group: a one-pair state, or empty lists for a row that is
    /// filtered out or NULL (so the final phase sees exactly the rows `update_batch`
    /// would have kept).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        let (Some(ts), Some(mask)) = (values.first(), values.get(1)) else {
            return exec_err!("tally_funnel takes (ts, mask, spec)");
        };
        let (ts, mask) = (int64s(ts, "ts")?, int64s(mask, "mask")?);
        if ts.len() != mask.len() {
            return exec_err!("tally_funnel: ts and mask differ in length");
        }
        let keep = |i: usize| selected(opt_filter, i) && ts.is_valid(i) && mask.is_valid(i);
        let column = |values: &Int64Array| -> ArrayRef {
            Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
                (0..values.len()).map(|i| Some(keep(i).then(|| Some(values.value(i))))),
            ))
        };
        Ok(vec![column(ts), column(mask)])
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.events.capacity() * std::mem::size_of::<Vec<(i64, i64)>>()
            + self.event_capacity * std::mem::size_of::<(i64, i64)>()
    }
}

/// The name under which [`chains_table`] is registered for one query.
pub(crate) const CHAINS_TABLE: &str = "funnel_chains";

/// Every person's best chain, from the rows of [`tally_sql::FunnelPlan::person_rows_sql`]
/// grouped here rather than by `GROUP BY person_id` through [`FunnelGroups`]: the
/// person key is dense, so a counting sort by key groups the events in two linear
/// passes, with no hash table and no vector per person (whose allocations, and the
/// partial/final aggregation's copies of every event as list state, were most of a
/// funnel's time). The table has the columns of the per-person statement the plan
/// would otherwise aggregate (`person_id` BIGINT, `f` the aggregate's list), one row
/// per person with events.
pub(crate) async fn chains_table(
    engine: &Engine,
    session: &SessionContext,
    sql: &str,
    spec: &FunnelSpec,
) -> crate::Result<MemTable> {
    let parts = engine
        .fold_partitions(session, sql, PartitionRows::new, |part, batch| {
            part.add(batch)
        })
        .await?;
    // Per person, the events of all partitions.
    let persons = parts.iter().map(|p| p.counts.len()).max().unwrap_or(0);
    let mut counts = vec![0u32; persons];
    let mut rows = 0usize;
    let mut null_person: Vec<(i64, i64)> = Vec::new();
    let mut batches: Vec<[Int64Array; 3]> = Vec::new();
    let mut reservations = Vec::with_capacity(parts.len());
    for part in parts {
        for (total, n) in counts.iter_mut().zip(&part.counts) {
            *total += n;
        }
        rows += part.rows;
        null_person.extend(part.null_person);
        batches.extend(part.batches);
        reservations.push(part.reservation);
    }
    // Counting sort by key: offsets[k] .. offsets[k + 1] are person k's events, in
    // the order they arrived.
    let mut offsets = Vec::with_capacity(counts.len() + 1);
    offsets.push(0usize);
    for &n in &counts {
        offsets.push(offsets[offsets.len() - 1] + n as usize);
    }
    drop(counts);
    // The persons split over the session's partitions: contiguous key ranges with
    // about equal numbers of events. Each thread scatters its persons' events into
    // its part of the grouped array (the scatter is random writes, so two of them
    // overlap their cache misses) and then searches their chains.
    let parts = session.copied_config().target_partitions().max(1);
    let persons = offsets.len() - 1;
    let mut bounds = vec![0usize];
    for p in 1..parts {
        let target = rows * p / parts;
        let at = offsets.partition_point(|&o| o < target).min(persons);
        bounds.push(at.max(bounds[bounds.len() - 1]));
    }
    bounds.push(persons);
    let mut grouped = vec![(0i64, 0i64); rows];
    let mut slices: Vec<&mut [(i64, i64)]> = Vec::with_capacity(parts);
    let mut rest: &mut [(i64, i64)] = &mut grouped;
    for w in bounds.windows(2) {
        let (head, tail) = rest.split_at_mut(offsets[w[1]] - offsets[w[0]]);
        slices.push(head);
        rest = tail;
    }
    let (offsets, held) = (&offsets, &batches);
    let results: Vec<DfResult<PersonChains>> = std::thread::scope(|scope| {
        let handles: Vec<_> = bounds
            .windows(2)
            .zip(slices)
            .map(|(w, events)| {
                let (first, last) = (w[0], w[1]);
                scope.spawn(move || {
                    let base = offsets[first];
                    // Where each of this range's persons' next event goes.
                    let mut next: Vec<usize> =
                        offsets[first..last].iter().map(|o| o - base).collect();
                    for [key, ts, mask] in held {
                        for i in 0..key.len() {
                            if ts.is_null(i) || mask.is_null(i) || key.is_null(i) {
                                continue;
                            }
                            // Keys were checked while streaming.
                            let Some(slot) = usize::try_from(key.value(i))
                                .ok()
                                .and_then(|k| k.checked_sub(first))
                                .and_then(|k| next.get_mut(k))
                            else {
                                continue;
                            };
                            events[*slot] = (ts.value(i), mask.value(i));
                            *slot += 1;
                        }
                    }
                    drop(next);
                    let mut ids = Vec::new();
                    let mut chains = Vec::new();
                    for k in first..last {
                        let (lo, hi) = (offsets[k] - base, offsets[k + 1] - base);
                        if lo == hi {
                            continue;
                        }
                        ids.push(Some(k as i64));
                        chains.push(best_chain(spec, &mut events[lo..hi])?);
                    }
                    Ok((ids, chains))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DataFusionError::Internal(
                        "funnel chain search panicked".into(),
                    ))
                })
            })
            .collect()
    });
    drop(batches);
    drop(grouped);
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Int64, true),
        Field::new("f", list_of_int64(), true),
    ]));
    let batch = |ids: Vec<Option<i64>>, chains: Vec<Option<Vec<Option<i64>>>>| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(chains)),
            ],
        )
        .map_err(|e| crate::Error::Execution(e.to_string()))
    };
    let mut partitions = Vec::with_capacity(results.len() + 1);
    for result in results {
        let (ids, chains) = result.map_err(|e| engine.df_error(e))?;
        partitions.push(vec![batch(ids, chains)?]);
    }
    if !null_person.is_empty() {
        let chain = best_chain(spec, &mut null_person).map_err(|e| engine.df_error(e))?;
        partitions.push(vec![batch(vec![None], vec![chain])?]);
    }
    MemTable::try_new(schema, partitions).map_err(|e| engine.df_error(e))
}

/// One partition's person rows as [`chains_table`] reads them: the batches as they
/// arrived (no copy) and each person's event count.
struct PartitionRows {
    batches: Vec<[Int64Array; 3]>,
    counts: Vec<u32>,
    rows: usize,
    /// Events without a distinct id: one person, as `GROUP BY` groups NULLs.
    null_person: Vec<(i64, i64)>,
    /// The batches, and a pair per row in the grouped copy.
    reservation: MemoryReservation,
}

impl PartitionRows {
    fn new(pool: &Arc<dyn MemoryPool>) -> Self {
        PartitionRows {
            batches: Vec::new(),
            counts: Vec::new(),
            rows: 0,
            null_person: Vec::new(),
            reservation: MemoryConsumer::new("tally funnel person events").register(pool),
        }
    }

    fn add(&mut self, batch: RecordBatch) -> DfResult<()> {
        let column = |i: usize| {
            batch
                .columns()
                .get(i)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .cloned()
                .ok_or_else(|| {
                    DataFusionError::Internal(
                        "funnel person rows: expected three BIGINT columns".into(),
                    )
                })
        };
        let (key, ts, mask) = (column(0)?, column(1)?, column(2)?);
        self.reservation.try_grow(
            batch.get_array_memory_size() + batch.num_rows() * std::mem::size_of::<(i64, i64)>(),
        )?;
        for i in 0..batch.num_rows() {
            // As the aggregate: rows without a timestamp or mask are skipped.
            if ts.is_null(i) || mask.is_null(i) {
                continue;
            }
            if key.is_null(i) {
                self.null_person.push((ts.value(i), mask.value(i)));
                continue;
            }
            let k = person_index(key.value(i))?;
            if k >= self.counts.len() {
                self.counts.resize((k + 1).max(self.counts.len() * 2), 0);
            }
            self.counts[k] += 1;
            self.rows += 1;
        }
        self.batches.push([key, ts, mask]);
        Ok(())
    }
}

/// Person ids and their chains (a `tally_funnel` result each), in one order.
type PersonChains = (Vec<Option<i64>>, Vec<Option<Vec<Option<i64>>>>);

/// A person key as an index (keys are dense and non-negative).
fn person_index(key: i64) -> DfResult<usize> {
    usize::try_from(key)
        .ok()
        .filter(|k| *k <= u32::MAX as usize)
        .ok_or_else(|| {
            DataFusionError::Internal(format!("funnel person rows: person key {key} out of range"))
        })
}

/// A person's result: `None` when they never entered; otherwise per step the
/// microseconds from the previous required step's event (0 for step 0), or `None`
/// when the step was not reached. Sorts `events` by timestamp.
pub fn best_chain(
    spec: &FunnelSpec,
    events: &mut [(i64, i64)],
) -> DfResult<Option<Vec<Option<i64>>>> {
    best_chain_within(spec, events, MAX_SEARCH_WORK)
}

fn best_chain_within(
    spec: &FunnelSpec,
    events: &mut [(i64, i64)],
    budget: u64,
) -> DfResult<Option<Vec<Option<i64>>>> {
    events.sort_by_key(|(t, _)| *t);
    if let Some(result) = simple_ordered_chain(spec, events) {
        return Ok(result);
    }
    let search = Search::new(spec, events, budget);
    match spec.order {
        FunnelOrder::AnyOrder => search.any_order(),
        FunnelOrder::Ordered | FunnelOrder::Strict => search.sequential(),
    }
}

/// The best chain of the common funnel — ordered, every step required, one window,
/// no exclusions — computed directly instead of searched, when each of the person's
/// events matches at most one step; `None` when that does not hold (the general
/// search then runs). `events` are sorted by time.
///
/// With one step per event, chain events are distinct by construction, and:
/// - from an entry at `t0`, taking for each next step its earliest event at or
///   after the previous one reaches the furthest level any chain from `t0` reaches,
///   with the earliest completion (each greedy event is no later than the same step's
///   event of any other chain, by induction);
/// - the best chain (`better`: furthest level, earliest completion, then latest
///   earlier instants, the entry's first) therefore starts at the latest entry among
///   those whose greedy chain has the best (level, completion);
/// - its intermediate events are, walking back from the completion, each step's
///   latest event at or before the next one's: no chain with that entry and
///   completion has a later event at any step, so it is the lexicographically
///   latest.
///
/// Each entry costs one binary search per step.
fn simple_ordered_chain(
    spec: &FunnelSpec,
    events: &[(i64, i64)],
) -> Option<Option<Vec<Option<i64>>>> {
    if spec.order != FunnelOrder::Ordered
        || !spec.exclusions.is_empty()
        || spec.steps.iter().any(|s| s.optional || s.window.is_some())
    {
        return None;
    }
    let n = spec.steps.len();
    let all_steps = (STEP_BIT << n) - STEP_BIT;
    // Per step, the instants of its events (ascending, as `events` is).
    let mut times: Vec<Vec<i64>> = vec![Vec::new(); n];
    let mut entries: Vec<i64> = Vec::new();
    for &(t, mask) in events {
        let steps = mask & all_steps;
        if steps == 0 {
            continue;
        }
        if steps.count_ones() > 1 {
            return None;
        }
        let step = (steps / STEP_BIT).trailing_zeros() as usize;
        times[step].push(t);
        if step == 0 && mask & ENTRY_BIT != 0 {
            entries.push(t);
        }
    }
    // (level, completion, entry) of the best greedy chain so far.
    let mut best: Option<(usize, i64, i64)> = None;
    for &t0 in &entries {
        let mut level = 0;
        let mut last = t0;
        for (step, at) in times.iter().enumerate().skip(1) {
            let next = at.partition_point(|&t| t < last);
            match at.get(next) {
                Some(&t) if t - t0 <= spec.window => {
                    last = t;
                    level = step;
                }
                _ => break,
            }
        }
        let improves = match best {
            None => true,
            Some((l, c, e)) => level > l || (level == l && (last < c || (last == c && t0 > e))),
        };
        if improves {
            best = Some((level, last, t0));
        }
    }
    let Some((level, completion, t0)) = best else {
        return Some(None);
    };
    // Walk back from the completion: each step's latest event at or before the next.
    let mut chain = vec![0i64; level + 1];
    chain[0] = t0;
    chain[level] = completion;
    for step in (1..level).rev() {
        let at = &times[step];
        let upto = at.partition_point(|&t| t <= chain[step + 1]);
        // The greedy chain's event of this step is at or before the next one, so
        // `upto` > 0.
        chain[step] = at[upto.checked_sub(1)?];
    }
    let mut out = vec![None; n];
    out[0] = Some(0);
    for step in 1..=level {
        out[step] = Some(chain[step] - chain[step - 1]);
    }
    Some(Some(out))
}

/// A candidate best chain: (level, completion, earlier instants); see `better`.
type Rank = (usize, i64, Vec<i64>);

/// Furthest level, then earliest completion, then latest earlier events.
fn better(candidate: &Rank, best: Option<&Rank>) -> bool {
    match best {
        None => true,
        Some((level, completion, earlier)) => {
            candidate.0 > *level
                || (candidate.0 == *level
                    && (candidate.1 < *completion
                        || (candidate.1 == *completion && candidate.2 > *earlier)))
        }
    }
}

struct Search<'a> {
    spec: &'a FunnelSpec,
    ts: Vec<i64>,
    mask: Vec<i64>,
    required: Vec<usize>,
    /// Per exclusion: the instants of its events, ascending.
    exclusion_times: Vec<Vec<i64>>,
    /// The most candidate checks allowed.
    budget: u64,
}

/// What the rest of a chain can do depends on only this and the entry's instant: the
/// level, the last event's instant, the masks of the chain events at the last instant
/// (the only ones a later step could otherwise reuse), and the instants of the steps
/// open exclusions are measured from.
type StateKey = (usize, i64, Vec<i64>, Vec<i64>);

struct Walk {
    /// States already expanded. The walk takes entries, then candidates, in decreasing
    /// time order, so the first prefix reaching a state has the latest entry (whose
    /// window reaches at least as far, so every continuation of a later prefix is also
    /// one of the first) and then the latest earlier events: a later prefix reaching the
    /// state ranks no better with any continuation, and is skipped.
    visited: HashSet<StateKey, foldhash::fast::RandomState>,
    best: Option<(Rank, Vec<usize>)>,
    /// Per optional step: its own best (rank, time from the previous required step).
    optional_best: Vec<Option<(Rank, i64)>>,
    /// Candidate checks so far.
    nodes: u64,
}

impl<'a> Search<'a> {
    fn new(spec: &'a FunnelSpec, events: &[(i64, i64)], budget: u64) -> Self {
        let ts: Vec<i64> = events.iter().map(|e| e.0).collect();
        let mask: Vec<i64> = events.iter().map(|e| e.1).collect();
        let exclusion_times = (0..spec.exclusions.len())
            .map(|x| {
                let bit = 1i64 << (EXCLUSION_SHIFT + x as u32);
                events
                    .iter()
                    .filter(|e| e.1 & bit != 0)
                    .map(|e| e.0)
                    .collect()
            })
            .collect();
        let required = (0..spec.steps.len())
            .filter(|s| !spec.steps[*s].optional)
            .collect();
        Search {
            spec,
            ts,
            mask,
            required,
            exclusion_times,
            budget,
        }
    }

    fn matches(&self, event: usize, step: usize) -> bool {
        self.mask[event] & (STEP_BIT << step) != 0
    }

    fn is_entry(&self, event: usize) -> bool {
        self.mask[event] & ENTRY_BIT != 0
    }

    /// The first event at or after `t`.
    fn first_at_or_after(&self, t: i64) -> usize {
        self.ts.partition_point(|&x| x < t)
    }

    /// The first event after `t`.
    fn first_after(&self, t: i64) -> usize {
        self.ts.partition_point(|&x| x <= t)
    }

    fn sequential(&self) -> DfResult<Option<Vec<Option<i64>>>> {
        let n = self.spec.steps.len();
        let mut walk = Walk {
            best: None,
            optional_best: vec![None; n],
            nodes: 0,
            visited: HashSet::default(),
        };
        for e in (0..self.ts.len()).rev() {
            if self.matches(e, 0) && self.is_entry(e) {
                let mut path = vec![e];
                self.extend(&mut path, &mut walk)?;
            }
        }
        let Some((_, path)) = walk.best else {
            return Ok(None);
        };
        let mut out = vec![None; n];
        for (level, &event) in path.iter().enumerate() {
            let step = self.required[level];
            out[step] = Some(if level == 0 {
                0
            } else {
                self.ts[event] - self.ts[path[level - 1]]
            });
        }
        for (step, own) in walk.optional_best.into_iter().enumerate() {
            if let Some((_, time)) = own {
                out[step] = Some(time);
            }
        }
        Ok(Some(out))
    }

    fn extend(&self, path: &mut Vec<usize>, walk: &mut Walk) -> DfResult<()> {
        if !walk.visited.insert(self.state_key(path)) {
            return Ok(());
        }
        let t = |i: usize| self.ts[i];
        let level = path.len() - 1;
        let last = path[level];
        let rank: Rank = (
            level,
            t(last),
            path[..level].iter().map(|&i| t(i)).collect(),
        );
        if better(&rank, walk.best.as_ref().map(|(r, _)| r)) {
            walk.best = Some((rank, path.clone()));
        }
        let this_step = self.required[level];
        let next_required = self
            .required
            .get(level + 1)
            .copied()
            .unwrap_or(self.spec.steps.len());
        let lo = self.first_at_or_after(t(last));
        let hi = self.first_after(t(path[0]).saturating_add(self.spec.window));
        // Every loop below looks at the candidates [lo, hi) once.
        let loops = (next_required - this_step) as u64;
        walk.nodes += 1 + loops * hi.saturating_sub(lo) as u64;
        if walk.nodes > self.budget {
            return exec_err!(
                "{TOO_COMPLEX} one person's events need more than {} candidate checks; narrow the steps (event names, filters) or the window",
                self.budget
            );
        }
        for step in this_step + 1..next_required {
            for x in lo..hi {
                if !self.matches(x, step) || path.contains(&x) || !self.fits(path, x, step) {
                    continue;
                }
                let rank: Rank = (0, t(x), path.iter().map(|&i| t(i)).collect());
                let own = &mut walk.optional_best[step];
                if better(&rank, own.as_ref().map(|(r, _)| r)) {
                    *own = Some((rank, t(x) - t(last)));
                }
            }
        }
        if next_required == self.spec.steps.len() {
            return Ok(());
        }
        for x in (lo..hi).rev() {
            if self.matches(x, next_required)
                && !path.contains(&x)
                && self.fits(path, x, next_required)
            {
                path.push(x);
                self.extend(path, walk)?;
                path.pop();
            }
        }
        Ok(())
    }

    fn state_key(&self, path: &[usize]) -> StateKey {
        let level = path.len() - 1;
        let last = self.ts[path[level]];
        // Events with the same instant and mask are interchangeable: which of them
        // were used does not matter, only how many of each mask.
        let mut at_last: Vec<i64> = path
            .iter()
            .filter(|&&i| self.ts[i] == last)
            .map(|&i| self.mask[i])
            .collect();
        at_last.sort_unstable();
        let open_from = self
            .spec
            .exclusions
            .iter()
            .filter_map(|&(from, to)| {
                let from_level = self.required.iter().position(|s| *s == from)?;
                let to_level = self.required.iter().position(|s| *s == to)?;
                (from_level <= level && level < to_level).then(|| self.ts[path[from_level]])
            })
            .collect();
        (level, last, at_last, open_from)
    }

    /// Whether event `x` can follow `path` as `step`.
    fn fits(&self, path: &[usize], x: usize, step: usize) -> bool {
        let prev = path[path.len() - 1];
        let (tp, tx) = (self.ts[prev], self.ts[x]);
        if tx < tp || tx - self.ts[path[0]] > self.spec.window {
            return false;
        }
        if let Some(w) = self.spec.steps[step].window
            && tx - tp > w
        {
            return false;
        }
        // Strict: no event strictly between the two instants.
        if self.spec.order == FunnelOrder::Strict
            && self.first_after(tp) < self.first_at_or_after(tx)
        {
            return false;
        }
        if !self.spec.steps[step].optional {
            for (xi, &(from_step, to_step)) in self.spec.exclusions.iter().enumerate() {
                if to_step != step {
                    continue;
                }
                let Some(from_level) = self.required.iter().position(|s| *s == from_step) else {
                    continue;
                };
                let Some(&from_event) = path.get(from_level) else {
                    continue;
                };
                let from = self.ts[from_event];
                let times = &self.exclusion_times[xi];
                let next = times.partition_point(|&y| y <= from);
                if times.get(next).is_some_and(|&y| y < tx) {
                    return false;
                }
            }
        }
        true
    }

    fn any_order(&self) -> DfResult<Option<Vec<Option<i64>>>> {
        let mut work: u64 = 0;
        let n = self.spec.steps.len();
        let all_steps = (STEP_BIT << n) - 1;
        let mut best: Option<(Rank, Vec<i64>)> = None;
        for e in 0..self.ts.len() {
            if self.mask[e] & all_steps == 0 || !self.is_entry(e) {
                continue;
            }
            let start = self.ts[e];
            let lo = self.first_at_or_after(start);
            let hi = self.first_after(start.saturating_add(self.spec.window));
            // Per step the entry event may cover: a maximum matching of the other
            // events seen so far to the other steps, grown one event at a time.
            let mut matchings: Vec<(usize, Vec<Option<usize>>, usize)> = (0..n)
                .filter(|&s| self.matches(e, s))
                .map(|s| (s, vec![None; n], 1))
                .collect();
            let mut completed: Vec<i64> = Vec::new();
            work += 1 + (hi - lo) as u64 * matchings.len() as u64 * n as u64;
            if work > self.budget {
                return exec_err!(
                    "{TOO_COMPLEX} one person's events need more than {} candidate checks; narrow the steps (event names, filters) or the window",
                    self.budget
                );
            }
            for x in lo..hi {
                if x != e {
                    for (forced, owner, size) in matchings.iter_mut() {
                        let mut seen = vec![false; n];
                        if self.augment(x, *forced, owner, &mut seen) {
                            *size += 1;
                        }
                    }
                }
                let size = matchings.iter().map(|m| m.2).max().unwrap_or(0);
                while completed.len() < size {
                    completed.push(self.ts[x]);
                }
            }
            let Some(&completion) = completed.last() else {
                continue;
            };
            let level = completed.len() - 1;
            let rank: Rank = (level, completion, completed[..level].to_vec());
            if better(&rank, best.as_ref().map(|(r, _)| r)) {
                best = Some((rank, completed));
            }
        }
        let Some((_, completed)) = best else {
            return Ok(None);
        };
        let mut out = vec![None; n];
        for (k, &t) in completed.iter().enumerate() {
            out[k] = Some(if k == 0 { 0 } else { t - completed[k - 1] });
        }
        Ok(Some(out))
    }

    /// Kuhn's augmenting path from event `x` over the steps other than `forced`.
    fn augment(
        &self,
        x: usize,
        forced: usize,
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for s in 0..owner.len() {
            if s == forced || !self.matches(x, s) || seen[s] {
                continue;
            }
            seen[s] = true;
            let free = match owner[s] {
                None => true,
                Some(other) => self.augment(other, forced, owner, seen),
            };
            if free {
                owner[s] = Some(x);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_sql::funnel::StepSpec;

    fn spec(order: FunnelOrder, steps: usize) -> FunnelSpec {
        FunnelSpec {
            order,
            window: 100,
            steps: (0..steps)
                .map(|_| StepSpec {
                    optional: false,
                    window: None,
                })
                .collect(),
            exclusions: vec![],
        }
    }

    const A: i64 = 1 | ENTRY_BIT;
    const B: i64 = 2 | ENTRY_BIT;

    #[test]
    fn ties_are_in_order_and_events_are_distinct() {
        let s = spec(FunnelOrder::Ordered, 2);
        // B recorded before A at the same instant still converts.
        assert_eq!(
            best_chain(&s, &mut [(10, B), (10, A)]).unwrap(),
            Some(vec![Some(0), Some(0)])
        );
        // One event matching both steps is not two steps.
        assert_eq!(
            best_chain(&s, &mut [(10, A | B)]).unwrap(),
            Some(vec![Some(0), None])
        );
        // Window is inclusive; shortest conversion wins (latest entry).
        assert_eq!(
            best_chain(&s, &mut [(0, A), (50, A), (100, B)]).unwrap(),
            Some(vec![Some(0), Some(50)])
        );
        assert_eq!(
            best_chain(&s, &mut [(0, A), (101, B)]).unwrap(),
            Some(vec![Some(0), None])
        );
        assert_eq!(best_chain(&s, &mut [(0, B)]).unwrap(), None);
    }

    #[test]
    fn best_chain_takes_the_latest_middle_event() {
        // Two prefixes reach the same state (C at 30); the later B must win.
        let s = spec(FunnelOrder::Ordered, 3);
        let c = 4 | ENTRY_BIT;
        assert_eq!(
            best_chain(&s, &mut [(0, A), (10, B), (20, B), (30, c)]).unwrap(),
            Some(vec![Some(0), Some(20), Some(10)])
        );
    }

    #[test]
    fn a_later_entry_reaches_further_through_a_shared_state() {
        // Both entries reach B at 60; only the later one's window reaches C at 140.
        let s = spec(FunnelOrder::Ordered, 3);
        let c = 4 | ENTRY_BIT;
        assert_eq!(
            best_chain(&s, &mut [(0, A), (50, A), (60, B), (140, c)]).unwrap(),
            Some(vec![Some(0), Some(10), Some(80)])
        );
    }

    #[test]
    fn exclusions_and_strictness() {
        let mut s = spec(FunnelOrder::Ordered, 2);
        s.exclusions = vec![(0, 1)];
        let x = (1i64 << EXCLUSION_SHIFT) | ENTRY_BIT;
        assert_eq!(
            best_chain(&s, &mut [(0, A), (5, x), (9, B)]).unwrap(),
            Some(vec![Some(0), None])
        );
        // At a boundary's instant it does not disqualify.
        assert_eq!(
            best_chain(&s, &mut [(0, A), (0, x), (9, B), (9, x)]).unwrap(),
            Some(vec![Some(0), Some(9)])
        );
        let s = spec(FunnelOrder::Strict, 2);
        assert_eq!(
            best_chain(&s, &mut [(0, A), (5, ENTRY_BIT), (9, B)]).unwrap(),
            Some(vec![Some(0), None])
        );
    }

    #[test]
    fn many_interchangeable_events_stay_polynomial() {
        // Without expanding each state once, 120 events give C(120, 4) ≈ 8 million
        // chains.
        let mut s = spec(FunnelOrder::Ordered, 4);
        s.window = 1_000;
        let all = 0b1111 | ENTRY_BIT;
        let mut spread: Vec<(i64, i64)> = (0..120).map(|t| (t, all)).collect();
        assert_eq!(
            best_chain(&s, &mut spread).unwrap(),
            Some(vec![Some(0), Some(1), Some(1), Some(1)])
        );
        let mut tied: Vec<(i64, i64)> = (0..120).map(|_| (5, all)).collect();
        assert_eq!(
            best_chain(&s, &mut tied).unwrap(),
            Some(vec![Some(0), Some(0), Some(0), Some(0)])
        );
    }

    #[test]
    fn search_work_is_bounded() {
        let mut s = spec(FunnelOrder::Ordered, 4);
        s.window = 1_000;
        let all = 0b1111 | ENTRY_BIT;
        let mut events: Vec<(i64, i64)> = (0..200).map(|t| (t, all)).collect();
        let err = best_chain_within(&s, &mut events, 10_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 10000 candidate checks"), "{err}");
        assert!(best_chain(&s, &mut events).unwrap().is_some());
    }

    #[test]
    fn partial_states_merge_to_the_same_result() {
        use datafusion::arrow::array::Int64Array;
        let spec = Arc::new(spec(FunnelOrder::Ordered, 2));
        let new = || FunnelAccumulator {
            spec: spec.clone(),
            ts: Vec::new(),
            mask: Vec::new(),
        };
        let batch = |ts: Vec<i64>, mask: Vec<i64>| -> Vec<ArrayRef> {
            vec![
                Arc::new(Int64Array::from(ts)),
                Arc::new(Int64Array::from(mask)),
            ]
        };
        let mut whole = new();
        whole
            .update_batch(&batch(vec![30, 0, 20], vec![B, A, A]))
            .unwrap();
        let mut first = new();
        first.update_batch(&batch(vec![30], vec![B])).unwrap();
        let mut second = new();
        second
            .update_batch(&batch(vec![0, 20], vec![A, A]))
            .unwrap();
        let states: Vec<ArrayRef> = second
            .state()
            .unwrap()
            .into_iter()
            .map(|v| v.to_array().unwrap())
            .collect();
        first.merge_batch(&states).unwrap();
        let expected = whole.evaluate().unwrap();
        assert_eq!(first.evaluate().unwrap(), expected);
        let ScalarValue::List(list) = expected else {
            panic!("not a list")
        };
        let values = list.value(0);
        let values = values.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(values.values().to_vec(), vec![0, 10]);
    }

    #[test]
    fn any_order_work_is_bounded() {
        let mut s = spec(FunnelOrder::AnyOrder, 4);
        s.window = 1_000;
        let all = 0b1111 | ENTRY_BIT;
        let mut events: Vec<(i64, i64)> = (0..200).map(|t| (t, all)).collect();
        let err = best_chain_within(&s, &mut events, 10_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("candidate checks"), "{err}");
    }

    #[test]
    fn any_order_counts_distinct_steps() {
        let s = spec(FunnelOrder::AnyOrder, 3);
        let c = 4 | ENTRY_BIT;
        assert_eq!(
            best_chain(&s, &mut [(0, B), (3, A | B), (7, c)]).unwrap(),
            Some(vec![Some(0), Some(3), Some(4)])
        );
    }

    /// The `List<Int64>` rows of an evaluated column.
    fn list_rows(array: &ArrayRef) -> Vec<Option<Vec<Option<i64>>>> {
        let lists = array.as_any().downcast_ref::<ListArray>().unwrap();
        (0..lists.len())
            .map(|r| {
                lists.is_valid(r).then(|| {
                    let values = lists.value(r);
                    let values = values.as_any().downcast_ref::<Int64Array>().unwrap();
                    (0..values.len())
                        .map(|i| values.is_valid(i).then(|| values.value(i)))
                        .collect()
                })
            })
            .collect()
    }

    /// Runs `rows` (group, ts, mask, kept by the filter) through two partial
    /// [`FunnelGroups`] (one fed by `update_batch`, emitting its state in two parts;
    /// one by `convert_to_state`) and a final one that merges both and emits in two
    /// parts.
    fn through_groups(
        spec: &Arc<FunnelSpec>,
        groups: usize,
        rows: &[(usize, i64, i64, bool)],
        split: usize,
    ) -> Vec<Option<Vec<Option<i64>>>> {
        let (direct, converted) = rows.split_at(rows.len() / 2);
        let columns = |rows: &[(usize, i64, i64, bool)]| {
            let values: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ];
            let filter = BooleanArray::from_iter(rows.iter().map(|r| Some(r.3)));
            let indices: Vec<usize> = rows.iter().map(|r| r.0).collect();
            (values, filter, indices)
        };
        let mut partial = FunnelGroups::new(spec.clone());
        // Two batches, so a group grows across calls.
        for chunk in direct.chunks(direct.len().div_ceil(2).max(1)) {
            let (values, filter, indices) = columns(chunk);
            partial
                .update_batch(&values, &indices, Some(&filter), groups)
                .unwrap();
        }
        partial.ensure_groups(groups);
        let split = split.min(groups);
        let first = partial.state(EmitTo::First(split)).unwrap();
        let rest = partial.state(EmitTo::All).unwrap();
        assert_eq!(partial.size(), std::mem::size_of::<FunnelGroups>());

        let mut last = FunnelGroups::new(spec.clone());
        last.merge_batch(&first, &(0..split).collect::<Vec<_>>(), groups)
            .unwrap();
        last.merge_batch(&rest, &(split..groups).collect::<Vec<_>>(), groups)
            .unwrap();
        let (values, filter, indices) = columns(converted);
        let states = last.convert_to_state(&values, Some(&filter)).unwrap();
        last.merge_batch(&states, &indices, groups).unwrap();
        let mut out = list_rows(&last.evaluate(EmitTo::First(split)).unwrap());
        out.extend(list_rows(&last.evaluate(EmitTo::All).unwrap()));
        out
    }

    /// The general search on `events` (never the direct computation).
    fn searched(spec: &FunnelSpec, events: &mut [(i64, i64)]) -> Option<Vec<Option<i64>>> {
        events.sort_by_key(|(t, _)| *t);
        Search::new(spec, events, MAX_SEARCH_WORK)
            .sequential()
            .unwrap()
    }

    #[test]
    fn the_direct_chain_applies_only_to_plain_ordered_funnels() {
        let mut events = [(0, A), (5, B)];
        assert!(simple_ordered_chain(&spec(FunnelOrder::Ordered, 2), &events).is_some());
        assert!(simple_ordered_chain(&spec(FunnelOrder::Strict, 2), &events).is_none());
        // An event matching two steps needs the search.
        events[1].1 |= 1;
        assert!(simple_ordered_chain(&spec(FunnelOrder::Ordered, 2), &events).is_none());
        let mut optional = spec(FunnelOrder::Ordered, 3);
        optional.steps[1].optional = true;
        assert!(simple_ordered_chain(&optional, &[(0, A)]).is_none());
    }

    proptest::proptest! {
        /// On the funnels it applies to, the direct computation finds exactly the
        /// chain the search finds (ties, repeated entries, window edges).
        #[test]
        fn the_direct_chain_equals_the_search(
            steps in 2usize..6,
            raw in proptest::collection::vec((0i64..120, 0usize..6, proptest::bool::weighted(0.7)), 0..40),
            window in 0i64..80,
        ) {
            let mut spec = spec(FunnelOrder::Ordered, steps);
            spec.window = window;
            let mut events: Vec<(i64, i64)> = raw
                .iter()
                .map(|&(t, step, entry)| {
                    let step = step % steps;
                    (t, (STEP_BIT << step) | if entry { ENTRY_BIT } else { 0 })
                })
                .collect();
            events.sort_by_key(|(t, _)| *t);
            let direct = simple_ordered_chain(&spec, &events);
            proptest::prop_assert!(direct.is_some());
            proptest::prop_assert_eq!(direct.unwrap(), searched(&spec, &mut events));
        }

        #[test]
        fn groups_accumulator_agrees_with_the_per_person_search(
            groups in 1usize..6,
            raw in proptest::collection::vec(
                (0usize..6, 0i64..150, 0i64..16, proptest::bool::weighted(0.85)),
                0..60,
            ),
            any_order: bool,
            split in 0usize..7,
        ) {
            let order = if any_order { FunnelOrder::AnyOrder } else { FunnelOrder::Ordered };
            let spec = Arc::new(spec(order, 3));
            // Masks: the three step bits, and the entry bit from the fourth.
            let rows: Vec<(usize, i64, i64, bool)> = raw
                .into_iter()
                .map(|(g, t, m, keep)| {
                    let mask = (m & 0b111) | if m & 0b1000 != 0 { ENTRY_BIT } else { 0 };
                    (g % groups, t, mask, keep)
                })
                .collect();
            let expected: Vec<Option<Vec<Option<i64>>>> = (0..groups)
                .map(|g| {
                    let mut events: Vec<(i64, i64)> = rows
                        .iter()
                        .filter(|r| r.0 == g && r.3)
                        .map(|r| (r.1, r.2))
                        .collect();
                    best_chain(&spec, &mut events).unwrap()
                })
                .collect();
            proptest::prop_assert_eq!(through_groups(&spec, groups, &rows, split), expected);
        }
    }

    #[test]
    fn groups_size_follows_the_events_held() {
        let spec = Arc::new(spec(FunnelOrder::Ordered, 2));
        let mut acc = FunnelGroups::new(spec);
        let empty = acc.size();
        let n = 1_000;
        let values: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(Int64Array::from_iter_values((0..n).map(|_| A))),
        ];
        let indices: Vec<usize> = (0..n as usize).map(|i| i % 10).collect();
        acc.update_batch(&values, &indices, None, 10).unwrap();
        let held = acc.size() - empty;
        // 1000 pairs of 16 bytes, plus the growth slack of 10 vectors (at most 2x).
        assert!((16_000..=32_000 + 10 * 24 + 64).contains(&held), "{held}");
        acc.evaluate(EmitTo::First(5)).unwrap();
        let half = acc.size() - empty;
        assert!(half < held && half >= 8_000, "{half} of {held}");
        acc.evaluate(EmitTo::All).unwrap();
        assert_eq!(acc.size(), empty);
    }

    #[test]
    fn step_elements_are_read_through_the_offsets() {
        let lists = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(9), Some(1), Some(2)]),
            None,
            Some(vec![Some(0)]),
            Some(vec![Some(0), None, Some(7)]),
            Some(vec![Some(0), Some(5)]),
        ]);
        // A slice starts at a non-zero offset, as a batch of a larger array does.
        let lists: ArrayRef = Arc::new(lists.slice(1, 4));
        let udf = tally_funnel_step();
        let step = |i: i64| -> Vec<Option<i64>> {
            let args = datafusion::logical_expr::ScalarFunctionArgs {
                args: vec![
                    ColumnarValue::Array(Arc::clone(&lists)),
                    ColumnarValue::Scalar(ScalarValue::Int64(Some(i))),
                ],
                arg_fields: vec![
                    Arc::new(Field::new("f", list_of_int64(), true)),
                    Arc::new(Field::new("i", DataType::Int64, true)),
                ],
                number_rows: 4,
                return_field: Arc::new(Field::new("s", DataType::Int64, true)),
                config_options: Arc::new(Default::default()),
            };
            let ColumnarValue::Array(out) = udf.invoke_with_args(args).unwrap() else {
                panic!("an array in, an array out");
            };
            int64s(&out, "out").unwrap().iter().collect()
        };
        assert_eq!(step(0), vec![None, Some(0), Some(0), Some(0)]);
        assert_eq!(
            step(1),
            vec![None, None, None, Some(5)],
            "short list, NULL element"
        );
        assert_eq!(step(2), vec![None, None, Some(7), None]);
        assert_eq!(step(-1), vec![None; 4]);
    }

    #[test]
    fn groups_reject_bad_input_without_panicking() {
        let spec = Arc::new(spec(FunnelOrder::Ordered, 2));
        let mut acc = FunnelGroups::new(spec);
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let text: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec!["x", "y"]));
        assert!(
            acc.update_batch(std::slice::from_ref(&ints), &[0, 1], None, 2)
                .is_err()
        );
        assert!(
            acc.update_batch(&[ints.clone(), text], &[0, 1], None, 2)
                .is_err()
        );
        // Fewer group indices than rows, and a group index beyond the groups.
        assert!(
            acc.update_batch(&[ints.clone(), ints.clone()], &[0], None, 1)
                .is_err()
        );
        assert!(
            acc.update_batch(&[ints.clone(), ints.clone()], &[0, 7], None, 2)
                .is_err()
        );
        assert!(acc.merge_batch(&[ints.clone(), ints], &[0, 1], 2).is_err());
    }
}
