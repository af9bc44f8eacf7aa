//! Error classification, done once at the boundary.
//!
//! Library crates define their own `thiserror` enums and implement [`Classify`]; the
//! HTTP layer (and later GraphQL) maps an [`ErrorClass`] to a status code or an
//! `extensions.code` in exactly one place. Internal errors never show their details to
//! a tenant: the boundary logs them and answers with a generic message.

use std::time::Duration;

/// Who is at fault and what the client should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is malformed or violates a documented limit; retrying it unchanged
    /// will fail again. The message is meant for the developer who sent it.
    BadRequest,
    /// The body is larger than a documented size limit.
    PayloadTooLarge,
    /// No credentials, or credentials that identify nobody.
    Unauthorized,
    /// Valid credentials that may not do this.
    Forbidden,
    /// The named thing does not exist.
    NotFound,
    /// Tally is temporarily unable to accept the request (backpressure, a stopped
    /// writer); the client should retry after the given delay.
    Unavailable { retry_after: Duration },
    /// A bug or an unexpected environment failure. Details are logged, not returned.
    Internal,
}

impl ErrorClass {
    /// A stable, machine-readable code for API responses (`extensions.code` in
    /// GraphQL, `code` in JSON error bodies).
    pub fn code(self) -> &'static str {
        match self {
            ErrorClass::BadRequest => "BAD_REQUEST",
            ErrorClass::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorClass::Unauthorized => "UNAUTHENTICATED",
            ErrorClass::Forbidden => "FORBIDDEN",
            ErrorClass::NotFound => "NOT_FOUND",
            ErrorClass::Unavailable { .. } => "UNAVAILABLE",
            ErrorClass::Internal => "INTERNAL",
        }
    }

    /// Whether the error's own message may be shown to the client.
    pub fn is_client_visible(self) -> bool {
        !matches!(self, ErrorClass::Internal)
    }
}

/// Implemented by every library error type that can reach an API boundary.
pub trait Classify {
    fn class(&self) -> ErrorClass;
}
