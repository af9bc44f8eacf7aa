//! The Arrow shape of stored events and the per-tenant property catalog.
//!
//! Owns the fixed columns, the naming of materialised property columns, the
//! [`PropertyCatalog`] (which keys a tenant sends, with which JSON types, and which of
//! them became typed columns), and the conversions between [`Event`]s and Arrow
//! [`RecordBatch`]es. It does not own files, buffers or queries.
//!
//! Property columns are named `prop:<type>:<key>` where type is `str`, `num` or `bool`.
//! Fixed column names never contain `:`, so no property key can collide with them, and
//! a key sent both as a number and as a string gets two columns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, FixedSizeBinaryArray, FixedSizeBinaryBuilder, Float64Builder,
    Int64Array, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder, UInt32Array, new_null_array,
};
use arrow::compute::{SortColumn, cast, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use tally_core::{Event, Properties};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Names of the columns every events file has.
pub mod columns {
    pub const UUID: &str = "uuid";
    pub const EVENT: &str = "event";
    pub const DISTINCT_ID: &str = "distinct_id";
    /// The distinct id's number within its tenant (`distinct_ids.rs`): what queries
    /// group persons by. Null only in files written before numbering existed, which
    /// `EmbeddedStore::open` rewrites.
    pub const DISTINCT_ID_NUMBER: &str = "distinct_id_number";
    pub const TIMESTAMP: &str = "timestamp";
    pub const RECEIVED_AT: &str = "received_at";
    /// All event properties as a JSON object, for fidelity and for keys that are not
    /// materialised (nested values, keys beyond the per-tenant cap).
    pub const PROPERTIES: &str = "properties";
    pub const PERSON_SET: &str = "person_set";
    pub const PERSON_SET_ONCE: &str = "person_set_once";
    /// Prefix of every materialised property column.
    pub const PROPERTY_PREFIX: &str = "prop:";
}

/// The type class of a materialised property column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PropertyType {
    /// JSON strings, as Arrow `Utf8`.
    Str,
    /// JSON numbers, as Arrow `Float64` (integers beyond 2^53 lose precision here; the
    /// JSON column keeps them exact).
    Num,
    /// JSON booleans, as Arrow `Boolean`.
    Bool,
}

impl PropertyType {
    pub const ALL: [PropertyType; 3] = [PropertyType::Str, PropertyType::Num, PropertyType::Bool];

    fn tag(self) -> &'static str {
        match self {
            PropertyType::Str => "str",
            PropertyType::Num => "num",
            PropertyType::Bool => "bool",
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            PropertyType::Str => DataType::Utf8,
            PropertyType::Num => DataType::Float64,
            PropertyType::Bool => DataType::Boolean,
        }
    }

    /// The type class of a JSON value, or `None` for values that stay JSON-only
    /// (null, objects, arrays).
    pub fn of(value: &serde_json::Value) -> Option<PropertyType> {
        match value {
            serde_json::Value::String(_) => Some(PropertyType::Str),
            serde_json::Value::Number(_) => Some(PropertyType::Num),
            serde_json::Value::Bool(_) => Some(PropertyType::Bool),
            _ => None,
        }
    }
}

/// The column name for a property key of a type: `prop:num:amount`.
pub fn property_column(key: &str, ty: PropertyType) -> String {
    format!("{}{}:{key}", columns::PROPERTY_PREFIX, ty.tag())
}

/// The inverse of [`property_column`]; `None` for fixed columns.
pub fn parse_property_column(name: &str) -> Option<(PropertyType, &str)> {
    let rest = name.strip_prefix(columns::PROPERTY_PREFIX)?;
    let (tag, key) = rest.split_once(':')?;
    let ty = PropertyType::ALL.into_iter().find(|t| t.tag() == tag)?;
    Some((ty, key))
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The fixed columns, in file order.
pub fn fixed_fields() -> Vec<Field> {
    vec![
        Field::new(columns::UUID, DataType::FixedSizeBinary(16), false),
        Field::new(columns::EVENT, DataType::Utf8, false),
        Field::new(columns::DISTINCT_ID, DataType::Utf8, false),
        Field::new(columns::DISTINCT_ID_NUMBER, DataType::UInt32, true),
        Field::new(columns::TIMESTAMP, timestamp_type(), false),
        Field::new(columns::RECEIVED_AT, timestamp_type(), false),
        Field::new(columns::PROPERTIES, DataType::Utf8, false),
        Field::new(columns::PERSON_SET, DataType::Utf8, true),
        Field::new(columns::PERSON_SET_ONCE, DataType::Utf8, true),
    ]
}

/// The schema of a file or table with these property columns: the fixed columns then
/// the property columns in name order. Names that are not property columns are ignored.
pub fn events_schema<'a>(property_columns: impl IntoIterator<Item = &'a String>) -> SchemaRef {
    let mut fields = fixed_fields();
    let sorted: BTreeSet<&String> = property_columns.into_iter().collect();
    for name in sorted {
        if let Some((ty, _)) = parse_property_column(name) {
            fields.push(Field::new(name.as_str(), ty.data_type(), true));
        }
    }
    Arc::new(Schema::new(fields))
}

/// The property columns of a schema.
pub fn property_columns_of(schema: &Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .filter(|f| parse_property_column(f.name()).is_some())
        .map(|f| f.name().clone())
        .collect()
}

/// What one tenant has sent for one property key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStats {
    /// Whether the key has typed columns. Decided when the key is first seen and never
    /// changed afterwards, so a typed column is complete for every event that carries
    /// the key with that type (see docs/STORAGE.md).
    pub materialized: bool,
    /// Events seen with a string / number / boolean / other (null, object, array)
    /// value. Approximate: events replayed after a crash may be counted twice.
    #[serde(default)]
    pub string: u64,
    #[serde(default)]
    pub number: u64,
    #[serde(default)]
    pub boolean: u64,
    #[serde(default)]
    pub other: u64,
}

/// Numbers of values of one key by type class: string, number, boolean, other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TypeCounts(pub [u64; 4]);

impl TypeCounts {
    pub fn of(value: &serde_json::Value) -> Self {
        let mut c = TypeCounts::default();
        c.add(value);
        c
    }

    pub fn add(&mut self, value: &serde_json::Value) {
        let slot = PropertyType::of(value).map_or(3, |t| t as usize);
        self.0[slot] += 1;
    }
}

/// Type counts per property key in first-seen order: catalog updates decide which new
/// keys are materialised in the order given, so the order must be the events' own.
pub(crate) type OrderedTypeCounts<'a> =
    indexmap::IndexMap<&'a str, TypeCounts, foldhash::fast::RandomState>;

/// Counts the property types of events per key, in first-seen order (one catalog
/// update per key instead of one per event and key).
pub(crate) fn count_properties<'a>(
    events: impl IntoIterator<Item = &'a Event>,
) -> OrderedTypeCounts<'a> {
    let mut counts = OrderedTypeCounts::default();
    for e in events {
        for (key, value) in &e.properties {
            counts.entry(key.as_str()).or_default().add(value);
        }
    }
    counts
}

impl KeyStats {
    /// Adds counts; returns whether a type class was seen for the first time.
    fn add(&mut self, c: &TypeCounts) -> bool {
        let new_type = PropertyType::ALL
            .into_iter()
            .any(|t| self.count(t) == 0 && c.0[t as usize] > 0);
        self.string += c.0[0];
        self.number += c.0[1];
        self.boolean += c.0[2];
        self.other += c.0[3];
        new_type
    }

    pub fn count(&self, ty: PropertyType) -> u64 {
        match ty {
            PropertyType::Str => self.string,
            PropertyType::Num => self.number,
            PropertyType::Bool => self.boolean,
        }
    }
}

/// A tenant's property keys. Persisted beside the tenant's partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyCatalog {
    pub keys: BTreeMap<String, KeyStats>,
}

impl PropertyCatalog {
    /// Records the properties of an event, materialising new keys while fewer than
    /// `max_materialized` are. Returns whether the catalog changed beyond its counts
    /// (a new key, or a type seen for the first time).
    pub fn observe(&mut self, properties: &Properties, max_materialized: usize) -> bool {
        let mut changed = false;
        for (key, value) in properties {
            changed |= self.record(key, &TypeCounts::of(value), max_materialized);
        }
        changed
    }

    /// Records pre-aggregated counts (bulk loads count in parallel, then merge here).
    /// New keys are decided in the order given.
    pub(crate) fn observe_counts<'a>(
        &mut self,
        counts: impl IntoIterator<Item = (&'a str, TypeCounts)>,
        max_materialized: usize,
    ) -> bool {
        let mut changed = false;
        for (key, c) in counts {
            changed |= self.record(key, &c, max_materialized);
        }
        changed
    }

    fn record(&mut self, key: &str, counts: &TypeCounts, max_materialized: usize) -> bool {
        if let Some(stats) = self.keys.get_mut(key) {
            return stats.add(counts);
        }
        let mut stats = KeyStats {
            materialized: self.materialized_count() < max_materialized,
            ..KeyStats::default()
        };
        stats.add(counts);
        self.keys.insert(key.to_owned(), stats);
        true
    }

    pub fn materialized_count(&self) -> usize {
        self.keys.values().filter(|k| k.materialized).count()
    }

    pub fn is_materialized(&self, key: &str) -> bool {
        self.keys.get(key).is_some_and(|k| k.materialized)
    }

    /// Every typed column this tenant has.
    pub fn property_columns(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (key, stats) in &self.keys {
            if !stats.materialized {
                continue;
            }
            for ty in PropertyType::ALL {
                if stats.count(ty) > 0 {
                    out.insert(property_column(key, ty));
                }
            }
        }
        out
    }

    /// The tenant's table schema: fixed columns plus every typed column.
    pub fn schema(&self) -> SchemaRef {
        events_schema(&self.property_columns())
    }
}

/// The typed columns of one property key, indexed by `PropertyType as usize`.
struct KeyColumns {
    materialized: bool,
    columns: [Option<SparseColumn>; 3],
}

enum TypedBuilder {
    Str(StringBuilder),
    Num(Float64Builder),
    Bool(BooleanBuilder),
}

/// A typed column under construction; rows without the key are nulls, filled lazily.
struct SparseColumn {
    builder: TypedBuilder,
    rows: usize,
}

impl SparseColumn {
    fn new(ty: PropertyType) -> Self {
        let builder = match ty {
            PropertyType::Str => TypedBuilder::Str(StringBuilder::new()),
            PropertyType::Num => TypedBuilder::Num(Float64Builder::new()),
            PropertyType::Bool => TypedBuilder::Bool(BooleanBuilder::new()),
        };
        SparseColumn { builder, rows: 0 }
    }

    fn pad_to(&mut self, row: usize) {
        let missing = row - self.rows;
        if missing > 0 {
            match &mut self.builder {
                TypedBuilder::Str(b) => b.append_nulls(missing),
                TypedBuilder::Num(b) => b.append_nulls(missing),
                TypedBuilder::Bool(b) => b.append_nulls(missing),
            }
            self.rows = row;
        }
    }

    fn push(&mut self, row: usize, value: &serde_json::Value) {
        self.pad_to(row);
        match (&mut self.builder, value) {
            (TypedBuilder::Str(b), serde_json::Value::String(s)) => b.append_value(s),
            (TypedBuilder::Num(b), serde_json::Value::Number(n)) => match n.as_f64() {
                Some(f) => b.append_value(f),
                None => b.append_null(),
            },
            (TypedBuilder::Bool(b), serde_json::Value::Bool(v)) => b.append_value(*v),
            (TypedBuilder::Str(b), _) => b.append_null(),
            (TypedBuilder::Num(b), _) => b.append_null(),
            (TypedBuilder::Bool(b), _) => b.append_null(),
        }
        self.rows = row + 1;
    }

    fn finish(mut self, rows: usize) -> ArrayRef {
        self.pad_to(rows);
        match self.builder {
            TypedBuilder::Str(mut b) => Arc::new(b.finish()),
            TypedBuilder::Num(mut b) => Arc::new(b.finish()),
            TypedBuilder::Bool(mut b) => Arc::new(b.finish()),
        }
    }
}

fn json_text(map: &Properties) -> String {
    // Serialising a Map<String, Value> cannot fail (no non-string keys, no I/O).
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned())
}

/// Converts events into a record batch. The batch has the fixed columns plus a typed
/// column for each materialised (key, type) that occurs in these events, so a file
/// only carries its own tenant's keys.
///
/// Each event may come with its properties already serialised as compact JSON (the
/// ingest pipeline writes exactly that text into the log, so it is not serialised a
/// second time here); `None` serialises them. Each comes with its distinct id's number
/// (`DistinctIdNumbers`).
pub fn events_to_batch<'a>(
    events: impl ExactSizeIterator<Item = (&'a Event, Option<&'a str>, u32)>,
    catalog: &PropertyCatalog,
) -> Result<RecordBatch> {
    let rows = events.len();
    let mut uuid = FixedSizeBinaryBuilder::with_capacity(rows, 16);
    let mut event = StringBuilder::with_capacity(rows, rows * 16);
    let mut distinct_id = StringBuilder::with_capacity(rows, rows * 24);
    let mut distinct_id_number: Vec<u32> = Vec::with_capacity(rows);
    let mut timestamp = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut received_at = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut properties = StringBuilder::with_capacity(rows, rows * 256);
    let mut person_set = StringBuilder::new();
    let mut person_set_once = StringBuilder::new();
    // Keyed by the borrowed key so the per-property work is one hash lookup, without
    // allocating a column name per value (this loop dominates bulk-load time).
    let mut typed: HashMap<&'a str, KeyColumns, foldhash::fast::RandomState> = HashMap::default();

    for (row, (e, properties_json, number)) in events.enumerate() {
        uuid.append_value(e.uuid.as_bytes())?;
        event.append_value(&e.event);
        distinct_id.append_value(&e.distinct_id);
        distinct_id_number.push(number);
        timestamp.append_value(e.timestamp);
        received_at.append_value(e.received_at);
        match properties_json {
            Some(text) => properties.append_value(text),
            None => properties.append_value(json_text(&e.properties)),
        }
        for (builder, map) in [
            (&mut person_set, &e.person_set),
            (&mut person_set_once, &e.person_set_once),
        ] {
            if map.is_empty() {
                builder.append_null();
            } else {
                builder.append_value(json_text(map));
            }
        }
        for (key, value) in &e.properties {
            let Some(ty) = PropertyType::of(value) else {
                continue;
            };
            let columns = typed.entry(key.as_str()).or_insert_with(|| KeyColumns {
                materialized: catalog.is_materialized(key),
                columns: [None, None, None],
            });
            if !columns.materialized {
                continue;
            }
            columns.columns[ty as usize]
                .get_or_insert_with(|| SparseColumn::new(ty))
                .push(row, value);
        }
    }

    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(uuid.finish()),
        Arc::new(event.finish()),
        Arc::new(distinct_id.finish()),
        Arc::new(UInt32Array::from(distinct_id_number)),
        Arc::new(timestamp.finish()),
        Arc::new(received_at.finish()),
        Arc::new(properties.finish()),
        Arc::new(person_set.finish()),
        Arc::new(person_set_once.finish()),
    ];
    // Same order as `events_schema`: property columns by name.
    let mut named: BTreeMap<String, SparseColumn> = BTreeMap::new();
    for (key, columns) in typed {
        for (ty, column) in PropertyType::ALL.into_iter().zip(columns.columns) {
            if let Some(column) = column {
                named.insert(property_column(key, ty), column);
            }
        }
    }
    let names: Vec<String> = named.keys().cloned().collect();
    for (_, column) in named {
        arrays.push(column.finish(rows));
    }
    let schema = events_schema(&names);
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// Re-shapes a batch to `schema`: columns it lacks become nulls, columns the schema
/// lacks are dropped, types are cast where they differ (e.g. `Utf8View` from a query).
pub fn adapt_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch.clone());
    }
    let rows = batch.num_rows();
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let array = match batch.column_by_name(field.name()) {
            Some(a) if a.data_type() == field.data_type() => a.clone(),
            Some(a) => cast(a, field.data_type())?,
            None => new_null_array(field.data_type(), rows),
        };
        arrays.push(array);
    }
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &options,
    )?)
}

/// [`sort_batch`] over several batches of one schema, into one batch. Only the sort
/// keys are concatenated; rows are gathered straight from the inputs, so the wide
/// columns (the properties JSON above all) are copied once rather than concatenated
/// and then taken (the two copies were ~5 % of the server's CPU at full ingest).
pub fn sort_batches(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    match batches {
        [] => return Ok(RecordBatch::new_empty(schema.clone())),
        [one] => return sort_batch(one),
        _ => {}
    }
    // Only the sort keys are concatenated, from one narrow batch per input.
    let key_columns = [
        columns::EVENT,
        columns::DISTINCT_ID,
        columns::TIMESTAMP,
        columns::UUID,
    ];
    let narrow = batches
        .iter()
        .map(|b| {
            let indices = key_columns
                .iter()
                .map(|name| {
                    b.schema()
                        .index_of(name)
                        .map_err(|_| Error::unexpected("record batch", format!("no column {name}")))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(b.project(&indices)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let keys_batch = arrow::compute::concat_batches(&narrow[0].schema(), &narrow)?;
    let keys = sort_keys(&keys_batch)?;
    let order = lexsort_to_indices(&keys, None)?;
    // Global row number -> (input batch, row in it).
    let mut origin = Vec::with_capacity(order.len());
    for (i, b) in batches.iter().enumerate() {
        origin.extend((0..b.num_rows()).map(|row| (i, row)));
    }
    let picks: Vec<(usize, usize)> = order.values().iter().map(|&g| origin[g as usize]).collect();
    let inputs: Vec<&RecordBatch> = batches.iter().collect();
    Ok(arrow::compute::interleave_record_batch(&inputs, &picks)?)
}

/// The order of rows in every file the store writes: `(event, UTC day of timestamp,
/// distinct_id, timestamp, uuid)`.
///
/// Event first, then day, because nearly every question names its events and a
/// range of days: with the rows of one event and day contiguous, the min/max
/// statistics of Parquet pages (written for every column, see
/// `files::writer_properties`) let a scan skip every page of other events and other
/// days (the Parquet page index). Funnels and retention do not need the rows in
/// person order — their aggregates collect each person's `(timestamp, step)` pairs and
/// sort them per person — but within an event and day a person's events stay
/// together, which keeps `distinct_id` (and the per-session properties) compressing
/// well. The uuid makes the order total.
///
/// [`sort_key_day`] is the day; compaction sorts with the same key in DataFusion.
pub fn sort_batch(batch: &RecordBatch) -> Result<RecordBatch> {
    if batch.num_rows() <= 1 {
        return Ok(batch.clone());
    }
    let indices = lexsort_to_indices(&sort_keys(batch)?, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// The UTC day (days since the epoch, rounded down) of a microsecond timestamp: the
/// second component of the sort order ([`sort_batch`]).
pub fn sort_key_day(timestamp_micros: i64) -> i64 {
    timestamp_micros.div_euclid(tally_core::time::MICROS_PER_DAY)
}

/// The sort columns of [`sort_batch`] for one batch.
fn sort_keys(batch: &RecordBatch) -> Result<Vec<SortColumn>> {
    let column = |name: &str| -> Result<ArrayRef> {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| Error::unexpected("record batch", format!("no column {name}")))
    };
    let timestamps = timestamp_column(batch, columns::TIMESTAMP)?;
    let days: Int64Array = timestamps.iter().map(|t| t.map(sort_key_day)).collect();
    let key = |values: ArrayRef| SortColumn {
        values,
        options: None,
    };
    Ok(vec![
        key(column(columns::EVENT)?),
        key(Arc::new(days)),
        key(column(columns::DISTINCT_ID)?),
        key(column(columns::TIMESTAMP)?),
        key(column(columns::UUID)?),
    ])
}

fn string_column(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| Error::unexpected("events batch", format!("no column {name}")))?;
    let column = if column.data_type() == &DataType::Utf8 {
        column.clone()
    } else {
        cast(column, &DataType::Utf8)?
    };
    column
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::unexpected("events batch", format!("{name} is not a string")))
}

fn timestamp_column(batch: &RecordBatch, name: &str) -> Result<TimestampMicrosecondArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .cloned()
        .ok_or_else(|| {
            Error::unexpected(
                "events batch",
                format!("{name} is missing or not a microsecond timestamp"),
            )
        })
}

/// The uuid column of an events batch.
pub fn uuid_column(batch: &RecordBatch) -> Result<FixedSizeBinaryArray> {
    batch
        .column_by_name(columns::UUID)
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeBinaryArray>())
        .filter(|c| c.value_length() == 16)
        .cloned()
        .ok_or_else(|| Error::unexpected("events batch", "uuid is missing or not 16 bytes"))
}

/// A uuid cell as a `u128` (the in-memory dedup key).
pub fn uuid_at(uuids: &FixedSizeBinaryArray, row: usize) -> u128 {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(uuids.value(row));
    u128::from_be_bytes(bytes)
}

fn json_map(text: &str, context: &str) -> Result<Properties> {
    serde_json::from_str(text)
        .map_err(|e| Error::unexpected(context.to_owned(), format!("invalid JSON: {e}")))
}

/// Converts a batch with (at least) the fixed columns back into events. Typed property
/// columns are ignored: the JSON column is the source of truth.
pub fn batch_to_events(batch: &RecordBatch) -> Result<Vec<Event>> {
    let uuids = uuid_column(batch)?;
    let event = string_column(batch, columns::EVENT)?;
    let distinct_id = string_column(batch, columns::DISTINCT_ID)?;
    let timestamp = timestamp_column(batch, columns::TIMESTAMP)?;
    let received_at = timestamp_column(batch, columns::RECEIVED_AT)?;
    let properties = string_column(batch, columns::PROPERTIES)?;
    let person_set = string_column(batch, columns::PERSON_SET)?;
    let person_set_once = string_column(batch, columns::PERSON_SET_ONCE)?;
    let optional_map = |array: &StringArray, row: usize, name: &str| -> Result<Properties> {
        if array.is_null(row) {
            Ok(Properties::new())
        } else {
            json_map(array.value(row), name)
        }
    };
    (0..batch.num_rows())
        .map(|row| {
            Ok(Event {
                uuid: Uuid::from_u128(uuid_at(&uuids, row)),
                event: event.value(row).to_owned(),
                distinct_id: distinct_id.value(row).to_owned(),
                timestamp: timestamp.value(row),
                received_at: received_at.value(row),
                properties: optional_map(&properties, row, columns::PROPERTIES)?,
                person_set: optional_map(&person_set, row, columns::PERSON_SET)?,
                person_set_once: optional_map(&person_set_once, row, columns::PERSON_SET_ONCE)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array};
    use serde_json::json;

    fn event(n: u128, props: serde_json::Value) -> Event {
        Event {
            uuid: Uuid::from_u128(n),
            event: "e".into(),
            distinct_id: format!("u{n}"),
            timestamp: n as i64,
            received_at: n as i64,
            properties: props.as_object().cloned().unwrap_or_default(),
            person_set: Properties::new(),
            person_set_once: Properties::new(),
        }
    }

    #[test]
    fn column_names_round_trip_and_cannot_collide() {
        for key in ["plan", "a:b", "", "uuid", "prop:str:x"] {
            for ty in PropertyType::ALL {
                let name = property_column(key, ty);
                assert_eq!(parse_property_column(&name), Some((ty, key)));
                assert!(fixed_fields().iter().all(|f| f.name() != &name));
            }
        }
        for f in fixed_fields() {
            assert_eq!(parse_property_column(f.name()), None);
        }
    }

    #[test]
    fn type_changing_property_gets_two_columns() {
        let events = vec![
            event(1, json!({"amount": 5, "nested": {"a": 1}})),
            event(2, json!({"amount": "five", "flag": true})),
            event(3, json!({"other": null})),
        ];
        let mut catalog = PropertyCatalog::default();
        for e in &events {
            catalog.observe(&e.properties, 100);
        }
        let batch = events_to_batch(events.iter().map(|e| (e, None, 0)), &catalog).unwrap();
        let num = batch
            .column_by_name("prop:num:amount")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .clone();
        let text = string_column(&batch, "prop:str:amount").unwrap();
        assert_eq!(num.value(0), 5.0);
        assert!(num.is_null(1) && num.is_null(2));
        assert!(text.is_null(0) && text.is_null(2));
        assert_eq!(text.value(1), "five");
        let flag = batch.column_by_name("prop:bool:flag").unwrap();
        let flag = flag.as_any().downcast_ref::<BooleanArray>().unwrap();
        assert!(flag.is_null(0) && flag.value(1) && flag.is_null(2));
        // Objects and nulls stay JSON-only.
        assert!(batch.column_by_name("prop:str:nested").is_none());
        assert!(batch.column_by_name("prop:str:other").is_none());
        assert_eq!(batch_to_events(&batch).unwrap(), events);
        assert_eq!(
            catalog.schema().fields().len(),
            fixed_fields().len() + 3,
            "amount twice plus flag"
        );
    }

    #[test]
    fn cap_keeps_later_keys_json_only_forever() {
        let mut catalog = PropertyCatalog::default();
        catalog.observe(json!({"a": 1, "b": 2}).as_object().unwrap(), 1);
        catalog.observe(json!({"c": 3}).as_object().unwrap(), 10);
        assert!(catalog.is_materialized("a"));
        assert!(!catalog.is_materialized("b"), "b arrived after the cap");
        assert!(catalog.is_materialized("c"), "the cap was raised");
        let e = event(1, json!({"a": 1, "b": 2}));
        let batch = events_to_batch([(&e, None, 0)].into_iter(), &catalog).unwrap();
        assert!(batch.column_by_name("prop:num:b").is_none());
    }

    #[test]
    fn adapt_fills_missing_columns_with_nulls() {
        let mut catalog = PropertyCatalog::default();
        catalog.observe(json!({"a": 1}).as_object().unwrap(), 10);
        catalog.observe(json!({"b": "x"}).as_object().unwrap(), 10);
        let e = event(1, json!({"a": 1}));
        let batch = events_to_batch([(&e, None, 0)].into_iter(), &catalog).unwrap();
        let adapted = adapt_batch(&batch, &catalog.schema()).unwrap();
        assert_eq!(adapted.schema(), catalog.schema());
        assert!(adapted.column_by_name("prop:str:b").unwrap().is_null(0));
    }

    #[test]
    fn sort_orders_by_event_then_day_then_person_then_time() {
        const DAY: i64 = tally_core::time::MICROS_PER_DAY;
        // (uuid, event, distinct_id, timestamp)
        let rows = [
            (1, "view", "b", DAY + 5),
            (2, "view", "a", DAY + 9),
            (3, "buy", "z", 3 * DAY),
            (4, "view", "z", 7),
            (5, "view", "a", DAY + 1),
            (6, "view", "a", -1),
        ];
        let events: Vec<Event> = rows
            .iter()
            .map(|&(uuid, name, distinct_id, ts)| {
                let mut e = event(uuid, json!({}));
                e.event = name.into();
                e.distinct_id = distinct_id.into();
                e.timestamp = ts;
                e
            })
            .collect();
        let batch = events_to_batch(
            events.iter().map(|e| (e, None, 0)),
            &PropertyCatalog::default(),
        )
        .unwrap();
        let sorted = batch_to_events(&sort_batch(&batch).unwrap()).unwrap();
        let order: Vec<u128> = sorted.iter().map(|e| e.uuid.as_u128()).collect();
        // buy first; then view by day (-1 is day -1), then person, then time.
        assert_eq!(order, vec![3, 6, 4, 5, 2, 1]);
        assert_eq!(sort_key_day(-1), -1);
        assert_eq!(sort_key_day(DAY - 1), 0);
        assert_eq!(sort_key_day(DAY), 1);
    }

    proptest::proptest! {
        /// Sorting several batches at once gives exactly what sorting their
        /// concatenation gives (rows, order and every column).
        #[test]
        fn sorting_batches_equals_sorting_their_concatenation(
            rows in proptest::collection::vec((0u8..4, 0i64..5, 0u128..1000), 0..40),
            cuts in proptest::collection::vec(0usize..40, 0..4),
        ) {
            let events: Vec<Event> = rows
                .iter()
                .enumerate()
                .map(|(i, &(person, ts, id))| {
                    let mut e = event(id * 100 + i as u128, json!({"n": i, "s": format!("v{i}")}));
                    e.distinct_id = format!("p{person}");
                    e.timestamp = ts;
                    e
                })
                .collect();
            let mut bounds: Vec<usize> = cuts.into_iter().filter(|&c| c <= events.len()).collect();
            bounds.extend([0, events.len()]);
            bounds.sort_unstable();
            bounds.dedup();
            let catalog = PropertyCatalog::default();
            let schema = events_schema(&[] as &[String]);
            let batches: Vec<RecordBatch> = bounds
                .windows(2)
                .map(|w| {
                    let b = events_to_batch(events[w[0]..w[1]].iter().map(|e| (e, None, 0)), &catalog).unwrap();
                    adapt_batch(&b, &schema).unwrap()
                })
                .collect();
            let together = arrow::compute::concat_batches(&schema, &batches).unwrap();
            let expected = sort_batch(&together).unwrap();
            let actual = sort_batches(&schema, &batches).unwrap();
            proptest::prop_assert_eq!(actual, expected);
        }
    }
}
