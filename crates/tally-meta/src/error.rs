//! The metadata store's error type and its mapping onto API error classes.
//!
//! Validation errors carry enough context to be shown to the operator or API client as
//! they are; database errors are internal (or "retry later" when SQLite is merely busy)
//! and are logged by the boundary rather than shown.

use std::path::PathBuf;
use std::time::Duration;

use tally_core::{Classify, ErrorClass, TenantId};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid tenant name {name:?}: {reason} (use 1-63 characters: lower-case letters, digits, '_' and '-', starting with a letter or digit)"
    )]
    InvalidTenantName { name: String, reason: &'static str },

    #[error("a tenant named {name:?} already exists")]
    TenantAlreadyExists { name: String },

    #[error("tenant {0} does not exist")]
    TenantNotFound(TenantId),

    #[error(
        "unknown time zone {timezone:?}: use an IANA name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\" (case-sensitive)"
    )]
    InvalidTimezone { timezone: String },

    #[error("invalid tenant attribute {key:?}: {reason}")]
    InvalidAttribute { key: String, reason: &'static str },

    #[error("invalid operator key label {label:?}: {reason}")]
    InvalidLabel { label: String, reason: &'static str },

    #[error("invalid log position {lsn}: {reason}")]
    InvalidLsn { lsn: u64, reason: &'static str },

    #[error("all {} tenant ids are in use", u32::MAX)]
    TenantIdsExhausted,

    #[error("cannot open the metadata database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },

    #[error(
        "the metadata database has schema version {found}, but this build knows only up to {supported}; upgrade Tally"
    )]
    SchemaTooNew { found: i64, supported: i64 },

    /// Stored data that this code did not write in this shape: a bug or a hand edit.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),

    #[error("metadata database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt(what.into())
    }
}

/// SQLite's primary result codes for "another connection holds the lock".
const SQLITE_BUSY: &str = "5";
const SQLITE_LOCKED: &str = "6";

fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Extended codes (e.g. 517 SQLITE_BUSY_SNAPSHOT) share the low byte.
            let primary = code.parse::<i64>().map(|c| (c & 0xff).to_string());
            matches!(primary.as_deref(), Ok(SQLITE_BUSY) | Ok(SQLITE_LOCKED))
        }),
        _ => false,
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::InvalidTenantName { .. }
            | Error::TenantAlreadyExists { .. }
            | Error::InvalidTimezone { .. }
            | Error::InvalidAttribute { .. }
            | Error::InvalidLabel { .. } => ErrorClass::BadRequest,
            Error::TenantNotFound(_) => ErrorClass::NotFound,
            Error::Database(e) if is_transient(e) => ErrorClass::Unavailable {
                retry_after: Duration::from_secs(1),
            },
            Error::InvalidLsn { .. }
            | Error::TenantIdsExhausted
            | Error::Open { .. }
            | Error::SchemaTooNew { .. }
            | Error::Corrupt(_)
            | Error::Database(_) => ErrorClass::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_are_client_visible_and_database_errors_are_not() {
        let e = Error::TenantAlreadyExists {
            name: "acme".into(),
        };
        assert_eq!(e.class(), ErrorClass::BadRequest);
        assert!(e.to_string().contains("acme"));
        assert_eq!(
            Error::TenantNotFound(TenantId(7)).class(),
            ErrorClass::NotFound
        );
        assert_eq!(
            Error::Database(sqlx::Error::RowNotFound).class(),
            ErrorClass::Internal
        );
        assert!(matches!(
            Error::Database(sqlx::Error::PoolTimedOut).class(),
            ErrorClass::Unavailable { .. }
        ));
    }
}
