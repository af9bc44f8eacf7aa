//! The one error type of the query model: everything a client can get wrong about a
//! query, with the location of the mistake and what to do about it.
//!
//! Every variant is the client's fault ([`ErrorClass::BadRequest`]): the model does no
//! IO, so nothing here can be an internal failure. Errors of the engines that run a
//! query (IO, memory limits, timeouts) are their own types, not this one.

use tally_core::{Classify, ErrorClass};

/// The crate's result type.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// A query that cannot be run as written.
///
/// `field` is a path into the query's JSON (`steps[2].filters[0].value`), so that a
/// developer can find the mistake without reading the whole query.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// A field has a value outside what the model accepts.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The path of the field in the query's JSON.
        field: String,
        /// What is wrong and what to do instead.
        reason: String,
    },
    /// A trends formula does not parse or names a series that does not exist.
    /// `position` is the 1-based character column in the formula text.
    #[error("invalid formula `{formula}` at column {position}: {reason}")]
    Formula {
        /// The formula text.
        formula: String,
        /// The 1-based column of the mistake.
        position: usize,
        /// What is wrong there.
        reason: String,
    },
    /// The time zone is not an IANA name known to the tz database.
    #[error(
        "unknown time zone `{name}` in `{field}`: use an IANA name such as `UTC`, `Europe/Paris` or `America/New_York`"
    )]
    UnknownTimeZone {
        /// Where the name was given.
        field: String,
        /// The name given.
        name: String,
    },
    /// The date range and interval produce more buckets than a result may hold.
    #[error(
        "the date range has {count} {interval} buckets, more than the limit of {max}: shorten the range or use a coarser interval"
    )]
    TooManyBuckets {
        /// About how many buckets the range has.
        count: usize,
        /// The limit.
        max: usize,
        /// The interval asked for.
        interval: &'static str,
    },
    /// A pagination cursor was not produced by this query kind (or was altered).
    #[error(
        "invalid cursor `{cursor}`: pass back the `next_cursor` of the previous page unchanged"
    )]
    InvalidCursor {
        /// The cursor given.
        cursor: String,
    },
}

impl QueryError {
    /// Shorthand for [`QueryError::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        QueryError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl Classify for QueryError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadRequest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_the_fix() {
        let e = QueryError::invalid("steps[2].window.value", "must be greater than zero");
        assert_eq!(
            e.to_string(),
            "invalid `steps[2].window.value`: must be greater than zero"
        );
        assert_eq!(e.class(), ErrorClass::BadRequest);
        let tz = QueryError::UnknownTimeZone {
            field: "time_zone".into(),
            name: "Mars/Olympus".into(),
        };
        assert!(tz.to_string().contains("Europe/Paris"), "{tz}");
    }
}
