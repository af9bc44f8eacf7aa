//! `tally_person_key(distinct_id)`: an integer that is equal for two events exactly
//! when their persons (`coalesce(map.person_id, distinct_id)`) are, computed from the
//! distinct id alone.
//!
//! Grouping by person is the heart of unique-person trends, DAU/WAU/MAU, funnels and
//! retention. Spelled as the identity-map join it costs, for every event, a probe of
//! the join's hash table, a copy of the person string into the join's output and then
//! a string hash and compare in the aggregation; on the benchmark's 14 M events that
//! was most of those queries' time. Here each event costs one lookup in a map built
//! once per identity-map version, and the aggregation groups 64-bit integers.
//!
//! Exactness: the map holds every mapped distinct id (→ its person's number) and every
//! person id (→ the same number), so a distinct id without a mapping that happens to
//! equal some person's id lands in that person's group — exactly as the string
//! `coalesce` would. Any other distinct id is a person of its own and is numbered on
//! first sight by a per-query interner; numbers are only compared within one
//! statement, never shown or stored.
//!
//! Only statements that group or compare persons use the key; statements that output
//! person ids (persons lists) keep the join.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, StringArray, make_view};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use foldhash::fast::RandomState;
use parking_lot::Mutex;

/// The function's SQL name (the DataFusion dialect of `tally-sql` emits it).
pub const PERSON_KEY_FUNCTION: &str = "tally_person_key";

/// `id` packed in a `u128` if it has at most 12 bytes: its length and bytes, laid
/// out as Arrow's inline string view (so equal ids, and only those, pack equally).
fn short_id(id: &str) -> Option<u128> {
    (id.len() <= 12).then(|| make_view(id.as_bytes(), 0, 0))
}

/// Distinct ids and person ids → person numbers, for one identity-map version.
#[derive(Debug, Default)]
pub struct PersonKeyMap {
    keys: HashMap<Box<str>, i64, RandomState>,
    /// The same keys for the ids of at most 12 bytes, by the ids' bytes and length
    /// packed in a `u128` (Arrow's inline string view): most distinct ids are short
    /// (`user-20677`), and one `u128` hashes and compares faster than a string whose
    /// bytes live behind a pointer.
    short: HashMap<u128, i64, RandomState>,
    /// Numbers `0..persons` are taken by mapped persons.
    persons: i64,
}

impl PersonKeyMap {
    /// From `(distinct_id, person_id)` pairs (each distinct id at most once).
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut person_numbers: HashMap<&str, i64, RandomState> = HashMap::default();
        let mut keys: HashMap<Box<str>, i64, RandomState> = HashMap::default();
        for (distinct_id, person_id) in pairs {
            let next = person_numbers.len() as i64;
            let number = *person_numbers.entry(person_id).or_insert(next);
            keys.insert(distinct_id.into(), number);
        }
        // A person id equal to a mapped distinct id keeps that distinct id's mapping
        // (the join finds the mapping first); otherwise an unmapped distinct id equal
        // to the person id belongs to that person.
        for (person_id, number) in &person_numbers {
            keys.entry((*person_id).into()).or_insert(*number);
        }
        let mut map = PersonKeyMap {
            persons: person_numbers.len() as i64,
            keys,
            short: HashMap::default(),
        };
        map.index_short_ids();
        map
    }

    /// Moves the short ids from `keys` to `short` (each id is in one of them).
    fn index_short_ids(&mut self) {
        let short = &mut self.short;
        self.keys.retain(|id, key| match short_id(id) {
            Some(packed) => {
                short.insert(packed, *key);
                false
            }
            None => true,
        });
    }

    /// Every id with its number.
    fn entries(&self) -> impl Iterator<Item = (String, i64)> + '_ {
        let long = self.keys.iter().map(|(id, key)| (id.to_string(), *key));
        let short = self.short.iter().map(|(packed, key)| {
            let len = *packed as u32 as usize;
            let bytes = (*packed >> 32).to_le_bytes();
            // Packed from a `&str`, so the bytes are UTF-8.
            (String::from_utf8_lossy(&bytes[..len]).into_owned(), *key)
        });
        long.chain(short)
    }

    /// The key of a mapped id (`PersonKeyUdf::keys` inlines this with its
    /// previous-row checks).
    #[cfg(test)]
    fn get(&self, id: &str) -> Option<i64> {
        match short_id(id) {
            Some(short) => self.short.get(&short).copied(),
            None => self.keys.get(id).copied(),
        }
    }

    /// Prefixes every id with `prefix` and offsets every number by `offset`: one
    /// tenant's share of a cross-tenant (operator) map, whose ids are qualified.
    fn extend_qualified(&mut self, prefix: &str, other: &PersonKeyMap, offset: i64) {
        self.keys.reserve(other.keys.len() + other.short.len());
        for (id, number) in other.entries() {
            self.keys
                .insert(format!("{prefix}{id}").into_boxed_str(), number + offset);
        }
        self.persons = self.persons.max(offset + other.persons);
    }

    /// The map of several tenants whose ids are qualified by their prefixes.
    pub fn qualified<'a>(tenants: impl IntoIterator<Item = (&'a str, &'a PersonKeyMap)>) -> Self {
        let mut merged = PersonKeyMap::default();
        let mut offset = 0;
        for (prefix, map) in tenants {
            merged.extend_qualified(prefix, map, offset);
            offset += map.persons;
        }
        merged.index_short_ids();
        merged
    }
}

/// The scalar function over one [`PersonKeyMap`], with the per-query numbering of
/// unmapped distinct ids. Register a fresh one per query session.
#[derive(Debug)]
pub struct PersonKeyUdf {
    signature: Signature,
    map: Arc<PersonKeyMap>,
    /// Unmapped distinct ids seen so far, numbered from `map.persons` up. Locked once
    /// per batch, only when the batch holds ids the map does not.
    unmapped: Mutex<HashMap<Box<str>, i64, RandomState>>,
}

impl PersonKeyUdf {
    pub fn new(map: Arc<PersonKeyMap>) -> Self {
        PersonKeyUdf {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
            map,
            unmapped: Mutex::new(HashMap::default()),
        }
    }

    pub fn into_udf(self) -> ScalarUDF {
        ScalarUDF::new_from_impl(self)
    }

    fn keys(&self, ids: &StringArray) -> Int64Array {
        let mut keys: Vec<i64> = Vec::with_capacity(ids.len());
        let mut misses: Vec<usize> = Vec::new();
        // Files are sorted by (event, day, distinct_id, ...), so an id often repeats
        // on the next row: comparing with the previous row's id is cheaper than a
        // hash lookup (and for a short id, one `u128` comparison).
        let mut previous_short: Option<(u128, i64)> = None;
        let mut previous_long: Option<(&str, i64)> = None;
        for row in 0..ids.len() {
            if ids.is_null(row) {
                keys.push(0);
                continue;
            }
            let id = ids.value(row);
            let found = match short_id(id) {
                Some(packed) => {
                    if let Some((last, key)) = previous_short
                        && last == packed
                    {
                        keys.push(key);
                        continue;
                    }
                    let found = self.map.short.get(&packed).copied();
                    previous_short = found.map(|key| (packed, key));
                    found
                }
                None => {
                    if let Some((last, key)) = previous_long
                        && last == id
                    {
                        keys.push(key);
                        continue;
                    }
                    let found = self.map.keys.get(id).copied();
                    previous_long = found.map(|key| (id, key));
                    found
                }
            };
            match found {
                Some(key) => keys.push(key),
                None => {
                    misses.push(row);
                    keys.push(0);
                }
            }
        }
        if !misses.is_empty() {
            let mut unmapped = self.unmapped.lock();
            for row in misses {
                let id = ids.value(row);
                let next = self.map.persons + unmapped.len() as i64;
                keys[row] = match unmapped.get(id) {
                    Some(&key) => key,
                    None => {
                        unmapped.insert(id.into(), next);
                        next
                    }
                };
            }
        }
        Int64Array::new(keys.into(), ids.nulls().cloned())
    }
}

// DataFusion compares and hashes functions to deduplicate expressions: two
// instances are the same function when they read the same map (the per-query
// numbering of unmapped ids follows from it).
impl PartialEq for PersonKeyUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.map, &other.map)
    }
}

impl Eq for PersonKeyUdf {}

impl std::hash::Hash for PersonKeyUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.map).hash(state);
    }
}

impl ScalarUDFImpl for PersonKeyUdf {
    fn name(&self) -> &str {
        PERSON_KEY_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("{PERSON_KEY_FUNCTION} takes one argument, the distinct id");
        };
        match arg {
            ColumnarValue::Array(array) => {
                let strings: ArrayRef = if array.data_type() == &DataType::Utf8 {
                    array.clone()
                } else {
                    cast(array, &DataType::Utf8)?
                };
                let Some(ids) = strings.as_any().downcast_ref::<StringArray>() else {
                    return exec_err!("{PERSON_KEY_FUNCTION}: the distinct id is not a string");
                };
                Ok(ColumnarValue::Array(Arc::new(self.keys(ids))))
            }
            ColumnarValue::Scalar(scalar) => {
                let array = scalar.to_array_of_size(1)?;
                let array = cast(&array, &DataType::Utf8)?;
                let Some(ids) = array.as_any().downcast_ref::<StringArray>() else {
                    return exec_err!("{PERSON_KEY_FUNCTION}: the distinct id is not a string");
                };
                let keys = self.keys(ids);
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &keys, 0,
                )?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys_of(udf: &PersonKeyUdf, ids: &[&str]) -> Vec<i64> {
        udf.keys(&StringArray::from(ids.to_vec()))
            .iter()
            .map(|k| k.unwrap())
            .collect()
    }

    #[test]
    fn mapped_ids_share_their_persons_number_and_others_are_their_own() {
        let map = PersonKeyMap::new([("anon-1", "p1"), ("alice", "p1"), ("anon-2", "p2")]);
        let udf = PersonKeyUdf::new(Arc::new(map));
        let k = keys_of(
            &udf,
            &["anon-1", "alice", "anon-2", "stranger", "stranger", "p1"],
        );
        assert_eq!(k[0], k[1], "both map to p1");
        assert_ne!(k[0], k[2]);
        assert_eq!(k[3], k[4], "an unmapped id is one person");
        assert!(k[3] != k[0] && k[3] != k[2]);
        assert_eq!(
            k[5], k[0],
            "an unmapped id equal to a person id is that person"
        );
    }

    #[test]
    fn a_person_id_equal_to_a_mapped_distinct_id_keeps_the_mapping() {
        // "x" is mapped to person "p", and "x" is also the id of another person.
        let map = PersonKeyMap::new([("x", "p"), ("y", "x")]);
        let udf = PersonKeyUdf::new(Arc::new(map));
        let k = keys_of(&udf, &["x", "p", "y"]);
        assert_eq!(k[0], k[1], "x is in p's group (coalesce finds the mapping)");
        assert_ne!(k[2], k[0], "y's person is the person called x, not p");
    }

    #[test]
    fn qualified_maps_keep_tenants_apart() {
        let a = PersonKeyMap::new([("d", "p")]);
        let b = PersonKeyMap::new([("d", "p")]);
        let merged = PersonKeyMap::qualified([("1:", &a), ("2:", &b)]);
        let udf = PersonKeyUdf::new(Arc::new(merged));
        let k = keys_of(&udf, &["1:d", "1:p", "2:d", "2:p", "3:d"]);
        assert_eq!(k[0], k[1]);
        assert_eq!(k[2], k[3]);
        assert_ne!(k[0], k[2]);
        assert!(k[4] != k[0] && k[4] != k[2]);
    }

    #[test]
    fn short_and_long_ids_are_found_and_qualified_alike() {
        // 12 bytes is the longest packed id; 13 is looked up as a string.
        let twelve = "abcdefghijkl";
        let thirteen = "abcdefghijklm";
        let map = PersonKeyMap::new([(twelve, "p"), (thirteen, "p"), ("é", "q")]);
        assert_eq!(map.short.len(), 4, "twelve, é, p, q");
        assert_eq!(map.keys.len(), 1, "thirteen");
        assert_eq!(map.get(twelve), map.get(thirteen));
        assert_eq!(map.get("p"), map.get(twelve));
        assert_ne!(map.get("é"), map.get("p"));
        assert_eq!(map.get("abcdefghijk"), None);
        let mut entries: Vec<(String, i64)> = map.entries().collect();
        entries.sort();
        let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["abcdefghijkl", "abcdefghijklm", "p", "q", "é"]);
        let merged = PersonKeyMap::qualified([("7:", &map)]);
        assert_eq!(merged.get("7:p"), merged.get("7:abcdefghijklm"));
        assert!(merged.get("7:é").is_some());
        assert_eq!(merged.get("p"), None);
    }

    proptest! {
        /// Two ids get equal keys exactly when their persons (the string `coalesce`
        /// of the identity-map join) are equal, across batches.
        #[test]
        fn keys_partition_ids_exactly_like_the_person_strings(
            pairs in proptest::collection::btree_map("[a-e]{1,2}|x{10}[a-e]{1,3}", "[a-e]{1,2}|x{10}[a-e]{1,3}", 0..12),
            batches in proptest::collection::vec(proptest::collection::vec("[a-e]{1,2}|x{10}[a-e]{1,3}", 0..10), 1..4),
        ) {
            let map = PersonKeyMap::new(pairs.iter().map(|(d, p)| (d.as_str(), p.as_str())));
            let udf = PersonKeyUdf::new(Arc::new(map));
            let person = |d: &str| pairs.get(d).cloned().unwrap_or_else(|| d.to_string());
            let mut seen: Vec<(String, i64)> = Vec::new();
            for batch in &batches {
                let ids: Vec<&str> = batch.iter().map(String::as_str).collect();
                for (id, key) in ids.iter().zip(keys_of(&udf, &ids)) {
                    seen.push((person(id), key));
                }
            }
            for (pa, ka) in &seen {
                for (pb, kb) in &seen {
                    prop_assert_eq!(pa == pb, ka == kb, "{} {} / {} {}", pa, ka, pb, kb);
                }
            }
        }
    }
}
