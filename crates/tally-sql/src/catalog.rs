//! Which typed property columns a tenant's events relation has, as the compiler needs
//! to know it. The engine fills it from the store's property catalog and table schema;
//! the compiler only reads it.
//!
//! The store's rule (`docs/STORAGE.md`) that makes this sound: a *materialised* key's
//! typed columns are complete for every stored event carrying it with that type, and
//! nulls, arrays and objects are only ever in the `properties` JSON. A key that is not
//! materialised (or unknown) is read from the JSON.

use std::collections::BTreeMap;

/// The typed columns of one materialised key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyColumns {
    /// `prop:str:<key>` exists.
    pub string: bool,
    /// `prop:num:<key>` exists.
    pub number: bool,
    /// `prop:bool:<key>` exists.
    pub boolean: bool,
    /// Some events carried the key as an array or object (only in the JSON).
    pub other: bool,
}

/// The tenant's materialised property keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyCatalog {
    materialized: BTreeMap<String, KeyColumns>,
}

impl PropertyCatalog {
    /// An empty catalog: every property is read from the JSON.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `key` is materialised with these columns.
    pub fn insert(&mut self, key: impl Into<String>, columns: KeyColumns) {
        self.materialized.insert(key.into(), columns);
    }

    /// The columns of `key` when it is materialised.
    pub fn get(&self, key: &str) -> Option<KeyColumns> {
        self.materialized.get(key).copied()
    }
}
