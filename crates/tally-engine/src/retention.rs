//! Retention on DataFusion: the `tally_retention(period, mask, ts, uuid, row, spec)`
//! aggregate and the execution of [`tally_sql::RetentionPlan`] statements into a
//! [`RetentionResult`], with exactly the rules of `docs/QUERY-SEMANTICS.md`
//! ("Retention") as `tally_query::reference::retention` states them.
//!
//! Owns: per person, keeping the earliest start event of each period (by timestamp,
//! then uuid: the event that forms a membership and gives its breakdown row) and the
//! set of periods with a return event; turning those into cells (see
//! [`tally_sql::retention`] for the encoding); ranking breakdown values; null cells
//! for periods that have not started; percentages; zero-filling. Does not own: SQL,
//! the period calendar (the compiler computes period indexes), or the semantics.
//!
//! The aggregate's state is small and mergeable: per start period one
//! `(period, ts, uuid, row)` and the distinct return periods, as `List<Int64>`s (the
//! uuid as two halves), so partial aggregation and repartitioning work and a person
//! with many events costs memory in periods, not events. The aggregate is a
//! [`GroupsAccumulator`] ([`RetentionGroups`]): per person two small sorted vectors
//! inside one object, sized from their capacities, so the memory pool sees the real
//! footprint and no boxed accumulator exists per person. The per-row
//! [`RetentionAccumulator`] stays for plans that ask for one; both share
//! [`PersonRetention`].
//!
//! Without a breakdown the aggregate is skipped: [`PeriodSets`] folds the rows of
//! [`RetentionPlan::person_periods_sql`] into two bit sets per person (start and
//! return periods), indexed by the dense person key.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, Int64Array, ListArray,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, ScalarValue, exec_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use serde_json::Value;
use tally_query::retention::{RetentionBreakdownRow, RetentionCohort};
use tally_query::{BreakdownValue, RetentionQuery, RetentionResult, Scope};
use tally_sql::retention::{RETURN_BIT, START_BIT};
use tally_sql::{
    CompileContext, DataFusionDialect, PropertyCatalog, RetentionPlan, RetentionSpec,
    compile_retention,
};

use crate::{Engine, Result, breakdown_value, compare_keys, int_column, keys_equal, to_sql_keys};

/// The aggregate's name, as the compiler spells it.
pub const AGGREGATE: &str = "tally_retention";

/// The aggregate, ready to register.
pub fn tally_retention() -> AggregateUDF {
    AggregateUDF::from(RetentionUdaf {
        // The uuid argument is `FixedSizeBinary(16)` with a breakdown and NULL
        // without one, so the signature takes any six arguments and the accumulator
        // checks the types.
        signature: Signature::any(6, Volatility::Immutable),
    })
}

fn list_of_int64() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RetentionUdaf {
    signature: Signature,
}

impl AggregateUDFImpl for RetentionUdaf {
    fn name(&self) -> &str {
        AGGREGATE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(list_of_int64())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(RetentionAccumulator::new(decode_spec(&args)?)))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(RetentionGroups::new(decode_spec(&args)?)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(STATE_FIELDS
            .iter()
            .map(|f| {
                Arc::new(Field::new(
                    format!("{}[{f}]", args.name),
                    list_of_int64(),
                    true,
                ))
            })
            .collect())
    }
}

/// The spec argument: a constant string, decoded once per accumulator.
fn decode_spec(args: &AccumulatorArgs) -> DfResult<Arc<RetentionSpec>> {
    let text =
        crate::udf::constant_string_arg(args, 5, AGGREGATE, "(period, mask, ts, uuid, row, spec)")?;
    let spec = RetentionSpec::decode(&text).map_err(DataFusionError::Execution)?;
    Ok(Arc::new(spec))
}

/// The state lists, in order.
const STATE_FIELDS: [&str; 6] = [
    "start_period",
    "start_ts",
    "start_uuid_hi",
    "start_uuid_lo",
    "start_row",
    "return_period",
];

/// The earliest start event of one period: (timestamp, uuid) orders, row is its
/// breakdown row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FirstStart {
    ts: i64,
    /// The uuid's (high, low) halves, which order like the `u128`: a `u128` field would
    /// align the struct to 16 bytes and make each `(period, FirstStart)` 64 bytes
    /// instead of 40.
    uuid: [u64; 2],
    row: i64,
}

impl FirstStart {
    fn earlier_than(&self, other: &FirstStart) -> bool {
        (self.ts, self.uuid) < (other.ts, other.uuid)
    }
}

/// One person's retention facts: two short sorted vectors (a person has a handful of
/// periods), cheaper than ordered maps and sized exactly by their capacities.
#[derive(Debug, Default, Clone)]
pub struct PersonRetention {
    /// Per start period (-1: before the date range), its earliest start event,
    /// ascending by period.
    starts: Vec<(i64, FirstStart)>,
    /// Periods (>= 0) with a return event, ascending and distinct.
    returns: Vec<i64>,
}

impl PersonRetention {
    /// Records a start event.
    pub fn add_start(&mut self, period: i64, ts: i64, uuid: u128, row: i64) {
        let candidate = FirstStart {
            ts,
            uuid: [(uuid >> 64) as u64, uuid as u64],
            row,
        };
        match self.starts.binary_search_by_key(&period, |(p, _)| *p) {
            Ok(i) => {
                let first = &mut self.starts[i].1;
                if candidate.earlier_than(first) {
                    *first = candidate;
                }
            }
            Err(i) => self.starts.insert(i, (period, candidate)),
        }
    }

    /// Records a return event.
    pub fn add_return(&mut self, period: i64) {
        if period >= 0
            && let Err(i) = self.returns.binary_search(&period)
        {
            self.returns.insert(i, period);
        }
    }

    /// The person's cells under `spec`, ascending (see [`tally_sql::retention`]).
    pub fn cells(&self, spec: &RetentionSpec) -> Vec<i64> {
        // Memberships: (global period, row).
        let memberships: Vec<(i64, i64)> = if spec.first_time {
            // The first start event ever; a cohort only if it is in the range.
            self.starts
                .iter()
                .min_by(|(_, a), (_, b)| (a.ts, a.uuid).cmp(&(b.ts, b.uuid)))
                .filter(|(period, _)| *period >= 0)
                .map(|(period, first)| vec![(*period, first.row)])
                .unwrap_or_default()
        } else {
            self.starts
                .iter()
                .filter(|(period, _)| *period >= 0)
                .map(|(period, first)| (*period, first.row))
                .collect()
        };
        let last_return = self.returns.last().copied();
        let mut cells = Vec::new();
        for (period, row) in memberships {
            let Ok(cohort) = spec.cohorts.binary_search(&period) else {
                continue;
            };
            cells.push(spec.cell(cohort, 0, row));
            for n in 1..=spec.periods {
                let target = period + i64::from(n);
                let returned = if spec.on_or_after {
                    last_return.is_some_and(|r| r >= target)
                } else {
                    self.returns.binary_search(&target).is_ok()
                };
                if returned {
                    cells.push(spec.cell(cohort, n, row));
                }
            }
        }
        cells.sort_unstable();
        cells
    }

    /// Bytes on the heap (the vectors' capacities).
    fn heap_bytes(&self) -> usize {
        self.starts.capacity() * std::mem::size_of::<(i64, FirstStart)>()
            + self.returns.capacity() * std::mem::size_of::<i64>()
    }
}

/// One person's retention facts, as a per-row [`Accumulator`].
#[derive(Debug)]
pub struct RetentionAccumulator {
    spec: Arc<RetentionSpec>,
    person: PersonRetention,
}

impl RetentionAccumulator {
    /// An empty accumulator.
    pub fn new(spec: Arc<RetentionSpec>) -> Self {
        RetentionAccumulator {
            spec,
            person: PersonRetention::default(),
        }
    }

    /// Records a start event.
    pub fn add_start(&mut self, period: i64, ts: i64, uuid: u128, row: i64) {
        self.person.add_start(period, ts, uuid, row);
    }

    /// Records a return event.
    pub fn add_return(&mut self, period: i64) {
        self.person.add_return(period);
    }

    /// The person's cells, ascending (see [`tally_sql::retention`]).
    pub fn cells(&self) -> Vec<i64> {
        self.person.cells(&self.spec)
    }
}

fn int64s<'a>(array: &'a ArrayRef, what: &str) -> DfResult<&'a Int64Array> {
    array
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Execution(format!("{AGGREGATE}: {what} is not BIGINT")))
}

/// The uuid column: 16-byte binaries, or all NULL (no breakdown: ties do not matter).
enum Uuids<'a> {
    Binary(&'a FixedSizeBinaryArray),
    Absent,
}

impl Uuids<'_> {
    fn of(array: &ArrayRef) -> DfResult<Uuids<'_>> {
        if array.data_type() == &DataType::Null {
            return Ok(Uuids::Absent);
        }
        match array.as_any().downcast_ref::<FixedSizeBinaryArray>() {
            Some(a) if a.value_length() == 16 => Ok(Uuids::Binary(a)),
            _ => exec_err!(
                "{AGGREGATE}: uuid must be FixedSizeBinary(16) or NULL, got {}",
                array.data_type()
            ),
        }
    }

    fn at(&self, i: usize) -> u128 {
        match self {
            Uuids::Binary(a) if a.is_valid(i) => {
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(a.value(i));
                u128::from_be_bytes(bytes)
            }
            _ => 0,
        }
    }
}

fn one_list(values: impl IntoIterator<Item = i64>) -> ScalarValue {
    let list =
        ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(values.into_iter().map(Some))]);
    ScalarValue::List(Arc::new(list))
}

/// The aggregate's input columns, checked once per batch.
struct Inputs<'a> {
    period: &'a Int64Array,
    mask: &'a Int64Array,
    ts: &'a Int64Array,
    uuid: Uuids<'a>,
    row: &'a Int64Array,
}

impl<'a> Inputs<'a> {
    fn of(values: &'a [ArrayRef]) -> DfResult<Self> {
        let [period, mask, ts, uuid, row, ..] = values else {
            return exec_err!("{AGGREGATE} takes (period, mask, ts, uuid, row, spec)");
        };
        let inputs = Inputs {
            period: int64s(period, "period")?,
            mask: int64s(mask, "mask")?,
            ts: int64s(ts, "ts")?,
            uuid: Uuids::of(uuid)?,
            row: int64s(row, "row")?,
        };
        let n = inputs.period.len();
        if inputs.mask.len() != n || inputs.ts.len() != n || inputs.row.len() != n {
            return exec_err!("{AGGREGATE}: argument columns differ in length");
        }
        if let Uuids::Binary(u) = &inputs.uuid
            && u.len() != n
        {
            return exec_err!("{AGGREGATE}: argument columns differ in length");
        }
        Ok(inputs)
    }

    fn len(&self) -> usize {
        self.period.len()
    }

    /// Records row `i` into `person`.
    fn apply(&self, i: usize, person: &mut PersonRetention) {
        if self.period.is_null(i) || self.mask.is_null(i) {
            return;
        }
        let (p, m) = (self.period.value(i), self.mask.value(i));
        if m & START_BIT != 0 {
            let t = if self.ts.is_valid(i) {
                self.ts.value(i)
            } else {
                0
            };
            let r = if self.row.is_valid(i) {
                self.row.value(i)
            } else {
                -1
            };
            person.add_start(p, t, self.uuid.at(i), r);
        }
        if m & RETURN_BIT != 0 {
            person.add_return(p);
        }
    }
}

/// A batch of states: six `List<Int64>` columns, checked once per batch and read
/// through their offsets (no per-row array slices).
struct States<'a> {
    lists: [&'a ListArray; 6],
    ints: [&'a Int64Array; 6],
}

impl<'a> States<'a> {
    fn of(states: &'a [ArrayRef]) -> DfResult<Self> {
        let list = |i: usize| -> DfResult<&'a ListArray> {
            states
                .get(i)
                .and_then(|a| a.as_any().downcast_ref::<ListArray>())
                .ok_or_else(|| DataFusionError::Execution(format!("{AGGREGATE}: bad state")))
        };
        let lists = [list(0)?, list(1)?, list(2)?, list(3)?, list(4)?, list(5)?];
        if lists.iter().any(|l| l.len() != lists[0].len()) {
            return exec_err!("{AGGREGATE}: state columns differ in length");
        }
        let int = |i: usize| int64s(lists[i].values(), "state");
        let ints = [int(0)?, int(1)?, int(2)?, int(3)?, int(4)?, int(5)?];
        Ok(States { lists, ints })
    }

    fn len(&self) -> usize {
        self.lists[0].len()
    }

    /// Records state row `r` into `person`.
    fn apply(&self, r: usize, person: &mut PersonRetention) -> DfResult<()> {
        if self.lists.iter().any(|l| l.is_null(r)) {
            return Ok(());
        }
        let range = |i: usize| {
            let offsets = self.lists[i].value_offsets();
            offsets[r] as usize..offsets[r + 1] as usize
        };
        let [period, ts, hi, lo, row] = [0, 1, 2, 3, 4].map(range);
        let n = period.len();
        if [&ts, &hi, &lo, &row].iter().any(|r| r.len() != n) {
            return exec_err!("{AGGREGATE}: state lists differ in length");
        }
        // The five start lists share one length per row, not necessarily one offset.
        let ints = &self.ints;
        for k in 0..n {
            // The uuid's halves were stored bit-for-bit as i64.
            let uuid = (u128::from(ints[2].value(hi.start + k) as u64) << 64)
                | u128::from(ints[3].value(lo.start + k) as u64);
            person.add_start(
                ints[0].value(period.start + k),
                ints[1].value(ts.start + k),
                uuid,
                ints[4].value(row.start + k),
            );
        }
        for &p in &self.ints[5].values()[range(5)] {
            person.add_return(p);
        }
        Ok(())
    }
}

/// Builds one `List<Int64>` column, a non-null list per group.
fn list_column<'g, I>(
    groups: &'g [PersonRetention],
    values: impl Fn(&'g PersonRetention) -> I,
) -> ArrayRef
where
    I: Iterator<Item = i64> + 'g,
{
    Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
        groups.iter().map(|g| Some(values(g).map(Some))),
    ))
}

/// The state columns of `groups`, in [`STATE_FIELDS`] order.
fn state_columns(groups: &[PersonRetention]) -> Vec<ArrayRef> {
    vec![
        list_column(groups, |g| g.starts.iter().map(|(p, _)| *p)),
        list_column(groups, |g| g.starts.iter().map(|(_, s)| s.ts)),
        list_column(groups, |g| g.starts.iter().map(|(_, s)| s.uuid[0] as i64)),
        list_column(groups, |g| g.starts.iter().map(|(_, s)| s.uuid[1] as i64)),
        list_column(groups, |g| g.starts.iter().map(|(_, s)| s.row)),
        list_column(groups, |g| g.returns.iter().copied()),
    ]
}

impl Accumulator for RetentionAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let inputs = Inputs::of(values)?;
        for i in 0..inputs.len() {
            inputs.apply(i, &mut self.person);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let states = States::of(states)?;
        for r in 0..states.len() {
            states.apply(r, &mut self.person)?;
        }
        Ok(())
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        state_columns(std::slice::from_ref(&self.person))
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0))
            .collect()
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(one_list(self.cells()))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.person.heap_bytes()
    }
}

/// Whether row `i` takes part, under DataFusion's optional `FILTER (WHERE ...)` mask
/// (NULL counts as false).
fn selected(filter: Option<&BooleanArray>, i: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(i) && f.value(i))
}

/// The `tally_retention` aggregate for all groups (persons) of one partition.
#[derive(Debug)]
pub struct RetentionGroups {
    spec: Arc<RetentionSpec>,
    persons: Vec<PersonRetention>,
    /// The sum of the persons' `heap_bytes`, kept as they grow and are emitted so that
    /// `size()` is exact without visiting every group.
    heap_bytes: usize,
}

impl RetentionGroups {
    /// No groups yet.
    pub fn new(spec: Arc<RetentionSpec>) -> Self {
        RetentionGroups {
            spec,
            persons: Vec::new(),
            heap_bytes: 0,
        }
    }

    fn ensure_groups(&mut self, total_num_groups: usize) {
        if self.persons.len() < total_num_groups {
            // Empty vectors allocate nothing.
            self.persons
                .resize_with(total_num_groups, PersonRetention::default);
        }
    }

    /// Runs `change` on one group, keeping `heap_bytes` in step.
    fn with_group(
        &mut self,
        group: usize,
        change: impl FnOnce(&mut PersonRetention) -> DfResult<()>,
    ) -> DfResult<()> {
        let groups = self.persons.len();
        let Some(person) = self.persons.get_mut(group) else {
            return Err(DataFusionError::Internal(format!(
                "{AGGREGATE}: group index {group} beyond {groups} groups"
            )));
        };
        let before = person.heap_bytes();
        let outcome = change(person);
        // Vectors only grow while a group is live.
        self.heap_bytes += person.heap_bytes() - before;
        outcome
    }

    /// Removes the groups `emit_to` asks for, keeping `heap_bytes` in step.
    fn take(&mut self, emit_to: EmitTo) -> Vec<PersonRetention> {
        let taken = emit_to.take_needed(&mut self.persons);
        let released: usize = taken.iter().map(PersonRetention::heap_bytes).sum();
        self.heap_bytes -= released;
        taken
    }
}

impl GroupsAccumulator for RetentionGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        let inputs = Inputs::of(values)?;
        if inputs.len() != group_indices.len() {
            return exec_err!("{AGGREGATE}: arguments and group indices differ in length");
        }
        self.ensure_groups(total_num_groups);
        for (i, &group) in group_indices.iter().enumerate() {
            if selected(opt_filter, i) {
                self.with_group(group, |person| {
                    inputs.apply(i, person);
                    Ok(())
                })?;
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
        let states = States::of(values)?;
        if states.len() != group_indices.len() {
            return exec_err!("{AGGREGATE}: states and group indices differ in length");
        }
        self.ensure_groups(total_num_groups);
        for (r, &group) in group_indices.iter().enumerate() {
            self.with_group(group, |person| states.apply(r, person))?;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        let spec = Arc::clone(&self.spec);
        let persons = self.take(emit_to);
        Ok(Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
            persons
                .iter()
                .map(|person| Some(person.cells(&spec).into_iter().map(Some))),
        )))
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        Ok(state_columns(&self.take(emit_to)))
    }

    /// Each row as its own group (a person of one event).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        let inputs = Inputs::of(values)?;
        let rows: Vec<PersonRetention> = (0..inputs.len())
            .map(|i| {
                let mut person = PersonRetention::default();
                if selected(opt_filter, i) {
                    inputs.apply(i, &mut person);
                }
                person
            })
            .collect();
        Ok(state_columns(&rows))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.persons.capacity() * std::mem::size_of::<PersonRetention>()
            + self.heap_bytes
    }
}

/// Persons per (cohort, offset) of one breakdown row (or all persons).
type Counts = Vec<Vec<u64>>;

/// Answers a retention query (the engine's entry point wraps this in its limits).
pub(crate) async fn run(
    engine: &Engine,
    query: &RetentionQuery,
    now: i64,
    tenant_time_zone: Option<&str>,
) -> Result<RetentionResult> {
    let catalog = match query.scope {
        Scope::Tenant(tenant) => engine.catalog(tenant)?,
        // The compiler refuses operator scopes with a clear error.
        Scope::Operator { .. } => PropertyCatalog::new(),
    };
    let ctx = CompileContext {
        now,
        tenant_time_zone,
        catalog: &catalog,
    };
    let plan = compile_retention(query, &DataFusionDialect, &ctx)?;
    let session = engine.session(plan.tenant).await?;
    run_on(engine, &session, &catalog, query, now, tenant_time_zone).await
}

/// Retention on a prepared session (a tenant's, or an operator query's views).
pub(crate) async fn run_on(
    engine: &Engine,
    session: &SessionContext,
    catalog: &PropertyCatalog,
    query: &RetentionQuery,
    now: i64,
    tenant_time_zone: Option<&str>,
) -> Result<RetentionResult> {
    let ctx = CompileContext {
        now,
        tenant_time_zone,
        catalog,
    };
    let plan = compile_retention(query, &DataFusionDialect, &ctx)?;

    let periods = query.periods as usize;
    let empty = || vec![vec![0u64; periods + 1]; plan.cohorts.len()];
    if let Some(sql) = plan.person_periods_sql()? {
        let sets = PeriodSets::read(engine, session, &sql).await?;
        return Ok(RetentionResult {
            total: table(&plan, &sets.counts(&plan)),
            breakdowns: Vec::new(),
        });
    }
    // Rows: the ranked breakdown keys, then "other" when more values were counted.
    let ranked = ranking(engine, session, &plan).await?;
    let top = ranked.as_ref().map(|(keys, _)| to_sql_keys(keys));
    let sql = plan.cells_sql(top.as_deref())?;
    let mut total = empty();
    let row_count = ranked.as_ref().map_or(0, |(keys, _)| keys.len());
    // Index 0 is "other" (row -1), then the top keys (row 0 ..).
    let mut by_row = vec![empty(); row_count + 1];
    for batch in engine.run(session, &sql).await? {
        let (cohort, offset) = (int_column(&batch, 0)?, int_column(&batch, 1)?);
        let (row, persons) = (int_column(&batch, 2)?, int_column(&batch, 3)?);
        for r in 0..batch.num_rows() {
            let (Ok(c), Ok(n), Ok(slot), Ok(count)) = (
                usize::try_from(cohort.value(r)),
                usize::try_from(offset.value(r)),
                usize::try_from(row.value(r) + 1),
                u64::try_from(persons.value(r)),
            ) else {
                continue;
            };
            if c >= plan.cohorts.len() || n > periods {
                continue;
            }
            // A membership has exactly one row, so the rows add up to the total.
            total[c][n] += count;
            if ranked.is_some()
                && let Some(cells) = by_row.get_mut(slot)
            {
                cells[c][n] += count;
            }
        }
    }
    let breakdowns = match ranked {
        None => Vec::new(),
        Some((keys, with_other)) => {
            let mut rows: Vec<RetentionBreakdownRow> = keys
                .into_iter()
                .enumerate()
                .map(|(i, values)| RetentionBreakdownRow {
                    breakdown: BreakdownValue::Values { values },
                    cohorts: table(&plan, &by_row[i + 1]),
                })
                .collect();
            if with_other {
                rows.push(RetentionBreakdownRow {
                    breakdown: BreakdownValue::Other,
                    cohorts: table(&plan, &by_row[0]),
                });
            }
            rows
        }
    };
    Ok(RetentionResult {
        total: table(&plan, &total),
        breakdowns,
    })
}

/// Every person's start and return periods as two bit sets (period `p` is bit
/// `p + 1`), indexed by person key: the plan of
/// [`RetentionPlan::person_periods_sql`]. Folding rows into an array indexed by the
/// dense person key costs a few instructions per event, where grouping by person
/// costs a hash-table probe and the aggregate's per-person vectors.
struct PeriodSets {
    /// `[start periods, return periods]` per person key.
    persons: Vec<[u64; 2]>,
    /// The person of events without a distinct id, if any (grouped as one person, as
    /// `GROUP BY` does).
    null_person: [u64; 2],
    /// The array's bytes, held against the query's memory pool.
    reservation: MemoryReservation,
}

impl PeriodSets {
    fn new(pool: &Arc<dyn MemoryPool>) -> PeriodSets {
        PeriodSets {
            persons: Vec::new(),
            null_person: [0; 2],
            reservation: MemoryConsumer::new("tally retention period sets").register(pool),
        }
    }

    /// Each partition of the statement folds into its own sets
    /// ([`Engine::fold_partitions`]); the sets are then ORed together.
    async fn read(engine: &Engine, session: &SessionContext, sql: &str) -> Result<PeriodSets> {
        let parts = engine
            .fold_partitions(session, sql, PeriodSets::new, |sets, batch| {
                sets.add(&batch)
            })
            .await?;
        let pool = Arc::clone(&session.runtime_env().memory_pool);
        let mut total = PeriodSets::new(&pool);
        for sets in parts {
            total.absorb(sets).map_err(|e| engine.df_error(e))?;
        }
        Ok(total)
    }

    /// ORs another partition's sets into these.
    fn absorb(&mut self, other: PeriodSets) -> DfResult<()> {
        if self.persons.is_empty() {
            // Take the first partition's array (and its reservation) as it is.
            let null_person = self.null_person;
            *self = other;
            self.null_person[0] |= null_person[0];
            self.null_person[1] |= null_person[1];
            return Ok(());
        }
        if other.persons.len() > self.persons.len() {
            self.grow(other.persons.len())?;
        }
        for (mine, theirs) in self.persons.iter_mut().zip(&other.persons) {
            mine[0] |= theirs[0];
            mine[1] |= theirs[1];
        }
        self.null_person[0] |= other.null_person[0];
        self.null_person[1] |= other.null_person[1];
        Ok(())
    }

    fn add(&mut self, batch: &RecordBatch) -> DfResult<()> {
        let column = |i: usize| -> DfResult<&Int64Array> {
            batch
                .columns()
                .get(i)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .ok_or_else(|| {
                    DataFusionError::Internal(format!("period sets: column {i} is not BIGINT"))
                })
        };
        let (keys, period, mask) = (column(0)?, column(1)?, column(2)?);
        for i in 0..batch.num_rows() {
            if period.is_null(i) || mask.is_null(i) {
                continue;
            }
            let (p, m) = (period.value(i), mask.value(i));
            let Some(bit) = u32::try_from(p + 1).ok().filter(|b| *b < 64) else {
                return Err(DataFusionError::Internal(format!(
                    "period sets: period {p} outside -1..=62"
                )));
            };
            let person = if keys.is_null(i) {
                &mut self.null_person
            } else {
                let key = usize::try_from(keys.value(i)).map_err(|_| {
                    DataFusionError::Internal("period sets: negative person key".into())
                })?;
                if key >= self.persons.len() {
                    self.grow(key + 1)?;
                }
                &mut self.persons[key]
            };
            if m & START_BIT != 0 {
                person[0] |= 1 << bit;
            }
            if m & RETURN_BIT != 0 {
                person[1] |= 1 << bit;
            }
        }
        Ok(())
    }

    /// Makes room for `len` persons (doubling, so that growth is amortised), under
    /// the memory pool.
    fn grow(&mut self, len: usize) -> DfResult<()> {
        let new_len = len.max(self.persons.len() * 2).max(1024);
        let bytes = (new_len - self.persons.len()) * std::mem::size_of::<[u64; 2]>();
        self.reservation.try_grow(bytes)?;
        self.persons.resize(new_len, [0; 2]);
        Ok(())
    }

    /// Persons per (cohort, offset).
    fn counts(&self, plan: &RetentionPlan<'_>) -> Counts {
        let spec = plan.spec(None);
        let periods = spec.periods as usize;
        let mut counts = vec![vec![0u64; periods + 1]; spec.cohorts.len()];
        // Global period -> cohort position.
        let last = usize::try_from(plan.last_period()).unwrap_or(0);
        let mut cohort_of = vec![None; last + 1];
        for (c, &k) in spec.cohorts.iter().enumerate() {
            if let Some(slot) = usize::try_from(k).ok().and_then(|k| cohort_of.get_mut(k)) {
                *slot = Some(c);
            }
        }
        let offsets = if periods >= 64 {
            u64::MAX
        } else {
            (1u64 << periods) - 1
        };
        for &[starts, returns] in self.persons.iter().chain([&self.null_person]) {
            // Period -1 (before the range) forms no membership and is no return.
            let returns = returns & !1;
            let memberships = if spec.first_time {
                // The first start event ever is in the lowest start period.
                starts & starts.wrapping_neg() & !1
            } else {
                starts & !1
            };
            let mut rest = memberships;
            while rest != 0 {
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                let Some(c) = cohort_of.get(bit as usize - 1).copied().flatten() else {
                    continue;
                };
                let cells = &mut counts[c];
                cells[0] += 1;
                // Bit `bit + n` is offset n.
                let later = returns.checked_shr(bit + 1).unwrap_or(0);
                if spec.on_or_after {
                    // Returned in offset n or later: every offset up to the last return.
                    let last_offset = (64 - later.leading_zeros()) as usize;
                    for cell in &mut cells[1..=last_offset.min(periods)] {
                        *cell += 1;
                    }
                } else {
                    let mut on = later & offsets;
                    while on != 0 {
                        cells[on.trailing_zeros() as usize + 1] += 1;
                        on &= on - 1;
                    }
                }
            }
        }
        counts
    }
}

/// The ranked breakdown keys (canonical values; memberships descending, then value
/// ascending) and whether an "other" row exists.
async fn ranking(
    engine: &Engine,
    session: &SessionContext,
    plan: &RetentionPlan<'_>,
) -> Result<Option<(Vec<Vec<Value>>, bool)>> {
    let (Some(b), Some(sql)) = (&plan.query.breakdown, plan.ranking_sql()?) else {
        return Ok(None);
    };
    let mut counts: Vec<(Vec<Value>, i64)> = Vec::new();
    for batch in engine.run(session, &sql).await? {
        let memberships = int_column(&batch, batch.num_columns() - 1)?;
        for r in 0..batch.num_rows() {
            let key = (0..b.properties.len())
                .map(|i| breakdown_value(&batch, i, r))
                .collect::<Result<Vec<_>>>()?;
            let n = memberships.value(r);
            // Values with the same canonical form (1 and "1"...) are one row.
            match counts.iter_mut().find(|(k, _)| keys_equal(k, &key)) {
                Some((_, total)) => *total += n,
                None => counts.push((key, n)),
            }
        }
    }
    counts.sort_by(|(ka, ca), (kb, cb)| cb.cmp(ca).then_with(|| compare_keys(ka, kb)));
    let with_other = counts.len() > b.limit as usize;
    counts.truncate(b.limit as usize);
    Ok(Some((
        counts.into_iter().map(|(k, _)| k).collect(),
        with_other,
    )))
}

/// One cohort table: sizes, values (null where the period has not started) and
/// percentages.
fn table(plan: &RetentionPlan<'_>, counts: &Counts) -> Vec<RetentionCohort> {
    plan.cohorts
        .iter()
        .zip(counts)
        .enumerate()
        .map(|(c, (bucket, cells))| {
            let size = cells[0];
            let values: Vec<Option<u64>> = cells
                .iter()
                .enumerate()
                .map(|(n, v)| plan.observable(c, n as u32).then_some(*v))
                .collect();
            let percentages = values
                .iter()
                .map(|v| v.and_then(|v| (size > 0).then(|| v as f64 * 100.0 / size as f64)))
                .collect();
            RetentionCohort {
                period: bucket.clone(),
                size,
                values,
                percentages,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(first_time: bool, on_or_after: bool) -> Arc<RetentionSpec> {
        Arc::new(RetentionSpec {
            first_time,
            on_or_after,
            periods: 3,
            cohorts: vec![0, 1, 2],
            row_slots: 4,
        })
    }

    /// (cohort, offset, row) of each cell.
    fn decoded(acc: &RetentionAccumulator) -> Vec<(i64, i64, i64)> {
        let s = &acc.spec;
        let width = i64::from(s.periods) + 1;
        acc.cells()
            .into_iter()
            .map(|c| {
                (
                    c / s.row_slots / width,
                    (c / s.row_slots) % width,
                    c % s.row_slots - 1,
                )
            })
            .collect()
    }

    #[test]
    fn first_time_versus_recurring() {
        // Starts in periods 0 and 1, a return in period 2 (the spec's worked example).
        for first_time in [true, false] {
            let mut acc = RetentionAccumulator::new(spec(first_time, false));
            acc.add_start(1, 200, 1, 1);
            acc.add_start(0, 100, 1, 0);
            acc.add_return(2);
            let expected = if first_time {
                vec![(0, 0, 0), (0, 2, 0)]
            } else {
                vec![(0, 0, 0), (0, 2, 0), (1, 0, 1), (1, 1, 1)]
            };
            assert_eq!(decoded(&acc), expected, "first_time={first_time}");
        }
    }

    #[test]
    fn on_or_after_accumulates_and_returns_in_the_cohort_do_not_count() {
        let mut acc = RetentionAccumulator::new(spec(true, true));
        acc.add_start(0, 100, 1, 0);
        acc.add_return(0);
        acc.add_return(2);
        assert_eq!(decoded(&acc), vec![(0, 0, 0), (0, 1, 0), (0, 2, 0)]);
        let mut on = RetentionAccumulator::new(spec(true, false));
        on.add_start(0, 100, 1, 0);
        on.add_return(0);
        on.add_return(2);
        assert_eq!(decoded(&on), vec![(0, 0, 0), (0, 2, 0)]);
    }

    #[test]
    fn first_start_before_the_range_forms_no_cohort() {
        let mut acc = RetentionAccumulator::new(spec(true, false));
        acc.add_start(-1, 50, 9, 0);
        acc.add_start(1, 200, 1, 0);
        acc.add_return(2);
        assert!(acc.cells().is_empty());
        // Recurring: the in-range start still counts.
        let mut rec = RetentionAccumulator::new(spec(false, false));
        rec.add_start(-1, 50, 9, 0);
        rec.add_start(1, 200, 1, 0);
        rec.add_return(2);
        assert_eq!(decoded(&rec), vec![(1, 0, 0), (1, 1, 0)]);
    }

    #[test]
    fn earliest_start_of_a_period_gives_the_row_ties_by_uuid() {
        let mut acc = RetentionAccumulator::new(spec(false, false));
        acc.add_start(0, 300, 1, 2);
        acc.add_start(0, 100, 7, 1);
        acc.add_start(0, 100, 3, 0);
        acc.add_start(0, 100, 5, -1);
        assert_eq!(decoded(&acc), vec![(0, 0, 0)]);
    }

    #[test]
    fn periods_outside_the_cohorts_are_ignored() {
        // Cohorts 0 and 2 only (a period with no instant between them).
        let s = Arc::new(RetentionSpec {
            first_time: false,
            on_or_after: false,
            periods: 2,
            cohorts: vec![0, 2],
            row_slots: 2,
        });
        let mut acc = RetentionAccumulator::new(s);
        acc.add_start(1, 100, 1, 0);
        acc.add_start(2, 200, 1, 0);
        acc.add_return(4);
        assert_eq!(decoded(&acc), vec![(1, 0, 0), (1, 2, 0)]);
    }

    #[test]
    fn partial_states_merge_to_the_same_result() {
        let events: Vec<(i64, i64, i64, u128, i64)> = vec![
            // (period, mask, ts, uuid, row)
            (0, START_BIT, 100, 5, 1),
            (0, START_BIT | RETURN_BIT, 90, 6, 2),
            (1, RETURN_BIT, 200, 7, 0),
            (2, START_BIT, 300, 8, 0),
            (3, RETURN_BIT, 400, 9, -1),
            (-1, START_BIT, 10, 1, 0),
        ];
        for first_time in [true, false] {
            for on_or_after in [true, false] {
                let s = spec(first_time, on_or_after);
                let mut whole = RetentionAccumulator::new(s.clone());
                for &(p, m, t, u, r) in &events {
                    if m & START_BIT != 0 {
                        whole.add_start(p, t, u, r);
                    }
                    if m & RETURN_BIT != 0 {
                        whole.add_return(p);
                    }
                }
                // Split in two, through `state` and `merge_batch`.
                let mut merged = RetentionAccumulator::new(s.clone());
                for part in events.chunks(3) {
                    let mut acc = RetentionAccumulator::new(s.clone());
                    let col = |f: fn(&(i64, i64, i64, u128, i64)) -> i64| -> ArrayRef {
                        Arc::new(Int64Array::from(part.iter().map(f).collect::<Vec<_>>()))
                    };
                    let uuids: ArrayRef = Arc::new(
                        FixedSizeBinaryArray::try_from_iter(
                            part.iter().map(|e| e.3.to_be_bytes().to_vec()),
                        )
                        .unwrap(),
                    );
                    acc.update_batch(&[
                        col(|e| e.0),
                        col(|e| e.1),
                        col(|e| e.2),
                        uuids,
                        col(|e| e.4),
                    ])
                    .unwrap();
                    let state: Vec<ArrayRef> = acc
                        .state()
                        .unwrap()
                        .into_iter()
                        .map(|v| v.to_array().unwrap())
                        .collect();
                    merged.merge_batch(&state).unwrap();
                }
                assert_eq!(merged.cells(), whole.cells());
                // First time: the pre-range start at ts 10 is the first, so no cohort.
                assert_eq!(whole.cells().is_empty(), first_time);
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let mut acc = RetentionAccumulator::new(spec(false, false));
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let text: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec!["x"]));
        assert!(acc.update_batch(std::slice::from_ref(&ints)).is_err());
        assert!(
            acc.update_batch(&[ints.clone(), ints.clone(), ints.clone(), text, ints.clone()])
                .is_err()
        );
        assert!(acc.merge_batch(&[ints]).is_err());
    }

    /// (group, period, mask, ts, uuid, row, kept by the filter)
    type Row = (usize, i64, i64, i64, u128, i64, bool);

    fn columns(rows: &[Row]) -> (Vec<ArrayRef>, BooleanArray, Vec<usize>) {
        let col = |f: fn(&Row) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
        };
        let uuids: ArrayRef = Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                rows.iter().map(|r| Some(r.4.to_be_bytes())),
                16,
            )
            .unwrap(),
        );
        let values = vec![
            col(|r| r.1),
            col(|r| r.2),
            col(|r| r.3),
            uuids,
            col(|r| r.5),
        ];
        let filter = BooleanArray::from_iter(rows.iter().map(|r| Some(r.6)));
        (values, filter, rows.iter().map(|r| r.0).collect())
    }

    fn cells_of(array: &ArrayRef) -> Vec<Vec<i64>> {
        let lists = array.as_any().downcast_ref::<ListArray>().unwrap();
        (0..lists.len())
            .map(|r| {
                let values = lists.value(r);
                let values = values.as_any().downcast_ref::<Int64Array>().unwrap();
                values.values().to_vec()
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn groups_accumulator_agrees_with_the_per_person_accumulator(
            groups in 1usize..6,
            raw in proptest::collection::vec(
                (0usize..6, -1i64..5, 1i64..4, 0i64..50, 0u128..4, -1i64..3,
                 proptest::bool::weighted(0.85)),
                0..50,
            ),
            first_time: bool,
            on_or_after: bool,
            split in 0usize..7,
        ) {
            let s = spec(first_time, on_or_after);
            let rows: Vec<Row> = raw
                .into_iter()
                .map(|(g, p, m, t, u, r, keep)| (g % groups, p, m, t, u, r, keep))
                .collect();
            let expected: Vec<Vec<i64>> = (0..groups)
                .map(|g| {
                    let mut acc = RetentionAccumulator::new(s.clone());
                    let mine: Vec<Row> =
                        rows.iter().filter(|r| r.0 == g && r.6).copied().collect();
                    acc.update_batch(&columns(&mine).0).unwrap();
                    acc.cells()
                })
                .collect();

            // Half through update_batch and a two-part state, half through
            // convert_to_state; the final accumulator merges and emits in two parts.
            let (direct, converted) = rows.split_at(rows.len() / 2);
            let mut partial = RetentionGroups::new(s.clone());
            for chunk in direct.chunks(direct.len().div_ceil(2).max(1)) {
                let (values, filter, indices) = columns(chunk);
                partial.update_batch(&values, &indices, Some(&filter), groups).unwrap();
            }
            partial.ensure_groups(groups);
            let split = split.min(groups);
            let first = partial.state(EmitTo::First(split)).unwrap();
            let rest = partial.state(EmitTo::All).unwrap();
            proptest::prop_assert_eq!(partial.size(), std::mem::size_of::<RetentionGroups>());
            let mut last = RetentionGroups::new(s.clone());
            last.merge_batch(&first, &(0..split).collect::<Vec<_>>(), groups).unwrap();
            last.merge_batch(&rest, &(split..groups).collect::<Vec<_>>(), groups).unwrap();
            let (values, filter, indices) = columns(converted);
            let states = last.convert_to_state(&values, Some(&filter)).unwrap();
            last.merge_batch(&states, &indices, groups).unwrap();
            let mut actual = cells_of(&last.evaluate(EmitTo::First(split)).unwrap());
            actual.extend(cells_of(&last.evaluate(EmitTo::All).unwrap()));
            proptest::prop_assert_eq!(actual, expected);
            proptest::prop_assert_eq!(last.size(), std::mem::size_of::<RetentionGroups>());
        }
    }

    #[test]
    fn groups_size_follows_the_persons_held() {
        let mut acc = RetentionGroups::new(spec(false, false));
        let empty = acc.size();
        // 100 persons, each starting and returning in periods 0..4.
        let rows: Vec<Row> = (0..400)
            .map(|i| {
                (
                    i % 100,
                    (i / 100) as i64,
                    START_BIT | RETURN_BIT,
                    i as i64,
                    1,
                    0,
                    true,
                )
            })
            .collect();
        let (values, _, indices) = columns(&rows);
        acc.update_batch(&values, &indices, None, 100).unwrap();
        let held = acc.size() - empty;
        let per_person = 4 * std::mem::size_of::<(i64, FirstStart)>() + 4 * 8;
        assert!(held >= 100 * per_person, "{held}");
        assert!(
            held <= 100 * (per_person + std::mem::size_of::<PersonRetention>()),
            "{held}"
        );
        acc.state(EmitTo::All).unwrap();
        assert_eq!(acc.size(), empty);
    }

    #[test]
    fn groups_reject_bad_input_without_panicking() {
        let mut acc = RetentionGroups::new(spec(false, false));
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let text: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec!["x"]));
        assert!(
            acc.update_batch(std::slice::from_ref(&ints), &[0], None, 1)
                .is_err()
        );
        let wrong = [ints.clone(), ints.clone(), ints.clone(), text, ints.clone()];
        assert!(acc.update_batch(&wrong, &[0], None, 1).is_err());
        let nulls: ArrayRef = Arc::new(datafusion::arrow::array::NullArray::new(1));
        let fine = [
            ints.clone(),
            ints.clone(),
            ints.clone(),
            nulls,
            ints.clone(),
        ];
        assert!(acc.update_batch(&fine, &[3], None, 1).is_err());
        assert!(acc.update_batch(&fine, &[0, 0], None, 1).is_err());
        assert!(acc.merge_batch(&[ints], &[0], 1).is_err());
    }
}
