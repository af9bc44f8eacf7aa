//! `tally_person_key(distinct_id_number)`: an integer that is equal for two events
//! exactly when their persons (`coalesce(map.person_id, distinct_id)`) are, computed
//! from the number the store gave the event's distinct id.
//!
//! Grouping by person is the heart of unique-person trends, DAU/WAU/MAU, funnels and
//! retention. Spelled as the identity-map join it costs, for every event, a probe of
//! the join's hash table, a copy of the person string and a string hash in the
//! aggregation. Computed from the distinct-id string it still costs decoding the
//! string and a hash lookup per event — the lookups alone were a quarter of a
//! funnel's time. Here it is
//! one array index: [`NumberedPersonKeys`] holds the key of every distinct-id number
//! of the tenant, built once per identity-map version and extended as new ids arrive
//! (the store numbers ids densely, in order of first sight; see tally-store's
//! `distinct_ids.rs`).
//!
//! Exactness: [`PersonKeyMap`] holds every mapped distinct id (→ its person's number)
//! and every person id (→ the same number), so a distinct id without a mapping that
//! happens to equal some person's id lands in that person's group — exactly as the
//! string `coalesce` would. Any other distinct id is a person of its own, keyed by
//! `persons + its number`, above every mapped person's key. Keys are only compared
//! within one statement, never shown or stored.
//!
//! Only statements that group or compare persons use the key; statements that output
//! person ids (persons lists) keep the join.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Int64Type, UInt32Type};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use foldhash::fast::RandomState;
use tally_store::DistinctIdRange;

/// The function's SQL name (the DataFusion dialect of `tally-sql` emits it).
pub const PERSON_KEY_FUNCTION: &str = "tally_person_key";

/// Distinct ids and person ids → person numbers, for one identity-map version.
#[derive(Debug, Default)]
pub struct PersonKeyMap {
    keys: HashMap<Box<str>, i64, RandomState>,
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
        PersonKeyMap {
            persons: person_numbers.len() as i64,
            keys,
        }
    }

    /// The person number of a mapped distinct id or of a person id.
    fn get(&self, id: &str) -> Option<i64> {
        self.keys.get(id).copied()
    }
}

/// The person key of every distinct-id number `0..len()` of one tenant under one
/// identity-map version; in an operator session, of several tenants' numbers one
/// after another ([`NumberedPersonKeys::concat`]).
#[derive(Debug, Clone, Default)]
pub struct NumberedPersonKeys {
    keys: Vec<i64>,
    /// One more than the largest key any number can have.
    key_bound: i64,
}

impl NumberedPersonKeys {
    /// The keys of `ids`, which must continue the numbers already keyed.
    pub fn extend(&mut self, map: &PersonKeyMap, ids: &DistinctIdRange) {
        debug_assert_eq!(ids.first as usize, self.keys.len());
        let first = self.keys.len() as i64;
        self.keys.reserve(ids.len());
        for (offset, id) in ids.iter().enumerate() {
            let number = first + offset as i64;
            self.keys.push(map.get(id).unwrap_or(map.persons + number));
        }
        self.key_bound = map.persons + self.keys.len() as i64;
    }

    /// How many numbers have keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Several tenants' keys one after another, each tenant's keys shifted past the
    /// previous tenants' so that no two tenants share a key. Returns the keys and,
    /// per tenant, the offset to add to its distinct-id numbers.
    pub fn concat<'a>(
        tenants: impl IntoIterator<Item = &'a NumberedPersonKeys>,
    ) -> (Self, Vec<i64>) {
        let mut all = NumberedPersonKeys::default();
        let mut number_offsets = Vec::new();
        for tenant in tenants {
            number_offsets.push(all.keys.len() as i64);
            let shift = all.key_bound;
            all.keys.extend(tenant.keys.iter().map(|k| k + shift));
            all.key_bound = shift + tenant.key_bound;
        }
        (all, number_offsets)
    }

    fn key_of(&self, number: usize) -> DfResult<i64> {
        match self.keys.get(number) {
            Some(&key) => Ok(key),
            // The store numbers an id before any event with it is visible, and the
            // keys are extended after the session's snapshot is taken.
            None => exec_err!(
                "{PERSON_KEY_FUNCTION}: distinct-id number {number} is beyond the {} known",
                self.keys.len()
            ),
        }
    }
}

/// The scalar function over one [`NumberedPersonKeys`]. Register one per query
/// session, after the session's events tables (so the keys cover every number their
/// snapshots hold).
#[derive(Debug)]
pub struct PersonKeyUdf {
    signature: Signature,
    keys: Arc<NumberedPersonKeys>,
}

impl PersonKeyUdf {
    pub fn new(keys: Arc<NumberedPersonKeys>) -> Self {
        PersonKeyUdf {
            // The store's UInt32 column in a tenant session; a BIGINT (number plus the
            // tenant's offset) in an operator session's view.
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::UInt32]),
                    TypeSignature::Exact(vec![DataType::Int64]),
                ],
                Volatility::Immutable,
            ),
            keys,
        }
    }

    pub fn into_udf(self) -> ScalarUDF {
        ScalarUDF::new_from_impl(self)
    }

    fn keys_of(&self, numbers: &dyn Array) -> DfResult<Int64Array> {
        let keys: Vec<i64> = match numbers.data_type() {
            DataType::UInt32 => {
                let values = numbers.as_primitive::<UInt32Type>().values();
                values
                    .iter()
                    .map(|&n| self.keys.key_of(n as usize))
                    .collect::<DfResult<_>>()?
            }
            DataType::Int64 => {
                let values = numbers.as_primitive::<Int64Type>().values();
                values
                    .iter()
                    .enumerate()
                    .map(|(row, &n)| match usize::try_from(n) {
                        Ok(n) => self.keys.key_of(n),
                        // Null slots may hold anything.
                        Err(_) if numbers.is_null(row) => Ok(0),
                        Err(_) => exec_err!("{PERSON_KEY_FUNCTION}: negative number {n}"),
                    })
                    .collect::<DfResult<_>>()?
            }
            other => {
                return exec_err!("{PERSON_KEY_FUNCTION} takes a distinct-id number, not {other}");
            }
        };
        Ok(Int64Array::new(keys.into(), numbers.nulls().cloned()))
    }
}

// DataFusion compares and hashes functions to deduplicate expressions: two
// instances are the same function when they read the same keys.
impl PartialEq for PersonKeyUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.keys, &other.keys)
    }
}

impl Eq for PersonKeyUdf {}

impl std::hash::Hash for PersonKeyUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.keys).hash(state);
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
            return exec_err!("{PERSON_KEY_FUNCTION} takes one argument, the distinct-id number");
        };
        match arg {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(Arc::new(
                self.keys_of(array.as_ref())?,
            ))),
            ColumnarValue::Scalar(scalar) => {
                let array = scalar.to_array_of_size(1)?;
                let keys = self.keys_of(array.as_ref())?;
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
    use datafusion::arrow::array::{Int64Array, UInt32Array};
    use proptest::prelude::*;
    use tally_store::DistinctIdRange;

    /// The keys of `ids`, numbered 0.. in this order (each id once).
    fn keyed(map: &PersonKeyMap, ids: &[&str]) -> NumberedPersonKeys {
        let mut keys = NumberedPersonKeys::default();
        keys.extend(map, &DistinctIdRange::from_ids(0, ids));
        keys
    }

    fn keys_of(udf: &PersonKeyUdf, numbers: &[u32]) -> Vec<i64> {
        udf.keys_of(&UInt32Array::from(numbers.to_vec()))
            .unwrap()
            .iter()
            .map(|k| k.unwrap())
            .collect()
    }

    #[test]
    fn mapped_ids_share_their_persons_number_and_others_are_their_own() {
        let map = PersonKeyMap::new([("anon-1", "p1"), ("alice", "p1"), ("anon-2", "p2")]);
        let ids = ["anon-1", "alice", "anon-2", "stranger", "p1"];
        let udf = PersonKeyUdf::new(Arc::new(keyed(&map, &ids)));
        let k = keys_of(&udf, &[0, 1, 2, 3, 3, 4]);
        assert_eq!(k[0], k[1], "both map to p1");
        assert_ne!(k[0], k[2]);
        assert_eq!(k[3], k[4], "an unmapped id is one person");
        assert!(k[3] != k[0] && k[3] != k[2]);
        assert_eq!(
            k[5], k[0],
            "an unmapped id equal to a person id is that person"
        );
        assert!(
            udf.keys_of(&UInt32Array::from(vec![5])).is_err(),
            "beyond the known numbers"
        );
    }

    #[test]
    fn a_person_id_equal_to_a_mapped_distinct_id_keeps_the_mapping() {
        // "x" is mapped to person "p", and "x" is also the id of another person.
        let map = PersonKeyMap::new([("x", "p"), ("y", "x")]);
        let udf = PersonKeyUdf::new(Arc::new(keyed(&map, &["x", "p", "y"])));
        let k = keys_of(&udf, &[0, 1, 2]);
        assert_eq!(k[0], k[1], "x is in p's group (coalesce finds the mapping)");
        assert_ne!(k[2], k[0], "y's person is the person called x, not p");
    }

    #[test]
    fn extending_keys_new_numbers_like_a_fresh_build() {
        let map = PersonKeyMap::new([("b", "p"), ("c", "p")]);
        let mut grown = keyed(&map, &["a", "b"]);
        grown.extend(&map, &DistinctIdRange::from_ids(2, &["c", "d"]));
        let fresh = keyed(&map, &["a", "b", "c", "d"]);
        assert_eq!(grown.keys, fresh.keys);
        assert_eq!(grown.key_bound, fresh.key_bound);
    }

    #[test]
    fn concatenated_tenants_keep_apart_and_nulls_stay_null() {
        let a = keyed(&PersonKeyMap::new([("d", "p")]), &["d", "p", "x"]);
        let b = keyed(&PersonKeyMap::new([("d", "p")]), &["p", "d"]);
        let (all, offsets) = NumberedPersonKeys::concat([&a, &b]);
        assert_eq!(offsets, [0, 3]);
        let udf = PersonKeyUdf::new(Arc::new(all));
        let numbers = Int64Array::from(vec![Some(0), Some(1), Some(2), Some(3), Some(4), None]);
        let k: Vec<Option<i64>> = udf.keys_of(&numbers).unwrap().iter().collect();
        assert_eq!(k[0], k[1], "tenant a: d and p");
        assert_eq!(k[3], k[4], "tenant b: p and d");
        assert_ne!(k[0], k[3], "the same person id in two tenants");
        assert!(k[2] != k[0] && k[2] != k[3]);
        assert_eq!(k[5], None);
        assert!(udf.keys_of(&Int64Array::from(vec![-1])).is_err());
    }

    proptest! {
        /// Two numbers get equal keys exactly when their ids' persons (the string
        /// `coalesce` of the identity-map join) are equal, however the numbering
        /// was extended.
        #[test]
        fn keys_partition_ids_exactly_like_the_person_strings(
            pairs in proptest::collection::btree_map("[a-e]{1,2}", "[a-e]{1,2}", 0..12),
            ids in proptest::collection::btree_set("[a-e]{1,2}", 0..20),
            split in 0usize..20,
        ) {
            let map = PersonKeyMap::new(pairs.iter().map(|(d, p)| (d.as_str(), p.as_str())));
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let split = split.min(ids.len());
            let mut keys = NumberedPersonKeys::default();
            keys.extend(&map, &DistinctIdRange::from_ids(0, &ids[..split]));
            keys.extend(&map, &DistinctIdRange::from_ids(split as u32, &ids[split..]));
            let person = |d: &str| pairs.get(d).cloned().unwrap_or_else(|| d.to_string());
            for (a, ida) in ids.iter().enumerate() {
                for (b, idb) in ids.iter().enumerate() {
                    prop_assert_eq!(person(ida) == person(idb), keys.keys[a] == keys.keys[b]);
                }
                prop_assert!(keys.keys[a] < keys.key_bound);
            }
        }
    }
}
