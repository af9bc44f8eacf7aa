//! The API's error type and the one place where an error becomes a GraphQL error with
//! a code in `extensions.code`.
//!
//! Every failure that reaches a client goes through [`Error::to_graphql`]: the code
//! comes from [`tally_core::ErrorClass::code`] (plus `TIMEOUT` for a query over its
//! time limit, which the class system files under `BAD_REQUEST`), client-visible
//! messages are passed on, and internal ones are logged and replaced by a generic text.
//! Errors that async-graphql produces itself (syntax, validation, limits) are given
//! their code by [`crate::http`], which sees them only in the finished response.

use std::time::Duration;

use async_graphql::ErrorExtensions;
use tally_core::{Classify, ErrorClass, TenantId};

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The code of a query that ran over its time limit.
pub const TIMEOUT_CODE: &str = "TIMEOUT";

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No key, or a key that identifies nobody.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid key that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed in a way the query model does not describe (not an
    /// object, an operator query without a scope, too many queries at once).
    #[error("{0}")]
    BadRequest(String),
    /// The query does not parse as the model or fails its validation.
    #[error(transparent)]
    Query(#[from] tally_query::QueryError),
    /// The query names a tenant that does not exist.
    #[error("tenant {0} does not exist")]
    TenantNotFound(TenantId),
    /// The metadata store failed (key lookup, tenant settings, tenant list).
    #[error("metadata store: {0}")]
    Meta(#[from] tally_meta::Error),
    /// The engine failed to answer.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The GraphQL schema could not be built at start-up (a bug).
    #[error("building the GraphQL schema: {0}")]
    Schema(String),
}

/// An engine's failure, as the API needs to see it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The query ran longer than the engine's per-query time limit.
    #[error(
        "the query ran longer than its time limit of {limit:?}; narrow the date range or filters"
    )]
    Timeout {
        /// The limit.
        limit: Duration,
    },
    /// Any other failure, classified by the engine.
    #[error("{source}")]
    Failed {
        /// Whose fault it is.
        class: ErrorClass,
        /// What happened.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<tally_engine::Error> for RunError {
    fn from(e: tally_engine::Error) -> Self {
        match e {
            tally_engine::Error::Timeout(limit) => RunError::Timeout { limit },
            other => RunError::Failed {
                class: other.class(),
                source: Box::new(other),
            },
        }
    }
}

impl Classify for RunError {
    fn class(&self) -> ErrorClass {
        match self {
            // The client can do something about it (a narrower query), and retrying
            // unchanged will time out again.
            RunError::Timeout { .. } => ErrorClass::BadRequest,
            RunError::Failed { class, .. } => *class,
        }
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Unauthenticated(_) => ErrorClass::Unauthorized,
            Error::Forbidden(_) => ErrorClass::Forbidden,
            Error::BadRequest(_) => ErrorClass::BadRequest,
            Error::Query(e) => e.class(),
            Error::TenantNotFound(_) => ErrorClass::NotFound,
            Error::Meta(e) => e.class(),
            Error::Run(e) => e.class(),
            Error::Schema(_) => ErrorClass::Internal,
        }
    }
}

impl Error {
    /// The stable code for `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Run(RunError::Timeout { .. }) => TIMEOUT_CODE,
            other => other.class().code(),
        }
    }

    /// The GraphQL error the client sees. Internal details are logged here and never
    /// returned.
    pub fn to_graphql(&self) -> async_graphql::Error {
        let class = self.class();
        let message = if class.is_client_visible() {
            self.to_string()
        } else {
            tracing::error!(error = %self, "Query failed with an internal error.");
            "internal error; the details are in the server log".to_string()
        };
        let code = self.code();
        async_graphql::Error::new(message).extend_with(|_, extensions| {
            extensions.set("code", code);
            if let ErrorClass::Unavailable { retry_after } = class {
                extensions.set("retryAfterSeconds", retry_after.as_secs().max(1));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(e: &async_graphql::Error) -> String {
        let ext = e.extensions.as_ref().unwrap();
        match ext.get("code").unwrap() {
            async_graphql::Value::String(s) => s.clone(),
            other => panic!("code is not a string: {other:?}"),
        }
    }

    #[test]
    fn codes_come_from_the_error_class_and_timeouts_are_their_own() {
        let cases: Vec<(Error, &str)> = vec![
            (Error::Unauthenticated("no key".into()), "UNAUTHENTICATED"),
            (Error::Forbidden("other tenant".into()), "FORBIDDEN"),
            (Error::BadRequest("not an object".into()), "BAD_REQUEST"),
            (
                Error::Query(tally_query::QueryError::invalid("series", "empty")),
                "BAD_REQUEST",
            ),
            (Error::TenantNotFound(TenantId(9)), "NOT_FOUND"),
            (
                Error::Run(tally_engine::Error::Timeout(Duration::from_secs(3)).into()),
                "TIMEOUT",
            ),
            (
                Error::Run(tally_engine::Error::Execution("disk on fire".into()).into()),
                "INTERNAL",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(code_of(&error.to_graphql()), code);
        }
    }

    #[test]
    fn internal_details_are_not_shown() {
        let e = Error::Run(tally_engine::Error::Execution("secret path /var/x".into()).into());
        let shown = e.to_graphql().message;
        assert!(!shown.contains("/var/x"), "{shown}");
        let timeout = Error::Run(tally_engine::Error::Timeout(Duration::from_secs(3)).into());
        assert!(timeout.to_graphql().message.contains("3s"));
    }
}
