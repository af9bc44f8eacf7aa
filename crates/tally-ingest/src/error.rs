//! Ingest's errors: [`IngestError`] for a request as a whole (auth, body, decoding,
//! the sink) and [`EventRejection`] for one event inside an otherwise good request.
//!
//! Both classify into [`ErrorClass`]; turning a class into an HTTP response is the job
//! of [`crate::http_error`], not of this module.

use std::fmt;
use std::path::PathBuf;

use tally_core::{Classify, ErrorClass, SinkError};

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// Why a whole request was refused (or failed).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "missing API key: send it as `api_key`/`token` (PostHog), `writeKey` or HTTP Basic auth \
         (Segment), or `Authorization: Bearer <key>`"
    )]
    MissingApiKey,
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("the events in this request carry different API keys; send one project per request")]
    ConflictingApiKeys,
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request payload decodes to more than {limit} bytes")]
    DecodedTooLarge { limit: usize },
    #[error("request contains {count} events; at most {limit} are allowed per request")]
    TooManyEvents { count: usize, limit: usize },
    #[error("request contains no events")]
    NoEvents,
    #[error("unsupported Content-Encoding {0:?}: use gzip, deflate or none")]
    UnsupportedContentEncoding(String),
    #[error("unsupported compression {0:?}: use gzip, gzip-js, base64 or none")]
    UnsupportedCompression(String),
    #[error("body is not valid gzip/deflate data: {0}")]
    InvalidCompressedData(std::io::Error),
    #[error("payload is not valid base64")]
    InvalidBase64,
    #[error("invalid form body: {0}")]
    InvalidForm(String),
    #[error("invalid JSON: {0}")]
    InvalidJson(serde_json::Error),
    #[error("unexpected payload: {0}")]
    UnexpectedShape(String),
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// Every event of the request was rejected; the first rejection speaks for all.
    #[error("{first}{}", if *.count > 1 { format!(" (and {} more rejected events)", .count - 1) } else { String::new() })]
    AllEventsRejected { first: EventRejection, count: usize },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot open GeoIP database {path}: {source}")]
    GeoIpDatabase {
        path: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
    #[error(
        "no endpoint {method} {path}: Tally serves PostHog capture (/capture, /e, /i/v0/e, /batch, /decide, /flags), \
         Segment (/v1/track, /v1/identify, /v1/alias, /v1/group, /v1/page, /v1/screen, /v1/batch), \
         its own batch endpoint (/v1/events/batch), GraphQL (/graphql) and /healthz, /readyz, /metrics"
    )]
    UnknownEndpoint { method: String, path: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl Classify for IngestError {
    fn class(&self) -> ErrorClass {
        use IngestError::*;
        match self {
            MissingApiKey | UnknownApiKey => ErrorClass::Unauthorized,
            BodyTooLarge { .. } | DecodedTooLarge { .. } | TooManyEvents { .. } => {
                ErrorClass::PayloadTooLarge
            }
            ConflictingApiKeys
            | NoEvents
            | UnsupportedContentEncoding(_)
            | UnsupportedCompression(_)
            | InvalidCompressedData(_)
            | InvalidBase64
            | InvalidForm(_)
            | InvalidJson(_)
            | UnexpectedShape(_)
            | BodyRead(_) => ErrorClass::BadRequest,
            UnknownEndpoint { .. } => ErrorClass::NotFound,
            AllEventsRejected { first, .. } => first.class(),
            Sink(e) => e.class(),
            GeoIpDatabase { .. } | Internal(_) => ErrorClass::Internal,
        }
    }
}

/// Why one event was refused. The code is stable and doubles as the metric label, so
/// the set is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    NotAnObject,
    MissingEventName,
    InvalidEventName,
    EventNameTooLong,
    MissingDistinctId,
    InvalidDistinctId,
    DistinctIdTooLong,
    DenylistedDistinctId,
    EventTooLarge,
    TooManyProperties,
    NestingTooDeep,
    KeyTooLong,
    StringValueTooLong,
    InvalidField,
    InvalidTimestamp,
    UnknownMessageType,
}

impl RejectReason {
    pub const ALL: [RejectReason; 16] = [
        RejectReason::NotAnObject,
        RejectReason::MissingEventName,
        RejectReason::InvalidEventName,
        RejectReason::EventNameTooLong,
        RejectReason::MissingDistinctId,
        RejectReason::InvalidDistinctId,
        RejectReason::DistinctIdTooLong,
        RejectReason::DenylistedDistinctId,
        RejectReason::EventTooLarge,
        RejectReason::TooManyProperties,
        RejectReason::NestingTooDeep,
        RejectReason::KeyTooLong,
        RejectReason::StringValueTooLong,
        RejectReason::InvalidField,
        RejectReason::InvalidTimestamp,
        RejectReason::UnknownMessageType,
    ];

    /// Stable machine-readable code (API responses and the `reason` metric label).
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingEventName => "missing_event_name",
            RejectReason::InvalidEventName => "invalid_event_name",
            RejectReason::EventNameTooLong => "event_name_too_long",
            RejectReason::MissingDistinctId => "missing_distinct_id",
            RejectReason::InvalidDistinctId => "invalid_distinct_id",
            RejectReason::DistinctIdTooLong => "distinct_id_too_long",
            RejectReason::DenylistedDistinctId => "denylisted_distinct_id",
            RejectReason::EventTooLarge => "event_too_large",
            RejectReason::TooManyProperties => "too_many_properties",
            RejectReason::NestingTooDeep => "nesting_too_deep",
            RejectReason::KeyTooLong => "key_too_long",
            RejectReason::StringValueTooLong => "string_value_too_long",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::UnknownMessageType => "unknown_message_type",
        }
    }
}

/// One refused event: its position in the request, why, and a message a developer can
/// act on ("event 3: property key longer than 200 bytes: 'xxxx…'").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRejection {
    pub index: usize,
    pub reason: RejectReason,
    /// The detail, without the "event N: " prefix that `Display` adds.
    pub detail: String,
}

impl EventRejection {
    pub(crate) fn new(index: usize, reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            index,
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for EventRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {}: {}", self.index, self.detail)
    }
}

impl std::error::Error for EventRejection {}

impl Classify for EventRejection {
    fn class(&self) -> ErrorClass {
        match self.reason {
            RejectReason::EventTooLarge => ErrorClass::PayloadTooLarge,
            _ => ErrorClass::BadRequest,
        }
    }
}

/// A client-supplied string shortened for an error message: at most `max_chars`
/// characters, with an ellipsis when cut, so a 64 KiB key does not come back whole.
pub(crate) fn preview(s: &str, max_chars: usize) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(max_chars).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_unique() {
        let mut codes: Vec<_> = RejectReason::ALL.iter().map(|r| r.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), RejectReason::ALL.len());
    }

    #[test]
    fn rejection_message_names_the_event() {
        let r = EventRejection::new(3, RejectReason::KeyTooLong, "property key too long");
        assert_eq!(r.to_string(), "event 3: property key too long");
        let all = IngestError::AllEventsRejected {
            first: r.clone(),
            count: 2,
        };
        assert_eq!(
            all.to_string(),
            "event 3: property key too long (and 1 more rejected events)"
        );
        assert_eq!(all.class(), ErrorClass::BadRequest);
    }

    #[test]
    fn preview_cuts_on_char_boundaries() {
        assert_eq!(preview("abc", 5), "abc");
        assert_eq!(preview("ééééé", 2), "éé…");
    }
}
