//! The one place where an [`ErrorClass`] becomes an HTTP response.
//!
//! Body: `{"error": "<message>", "code": "<ErrorClass::code>"}`. `Unavailable` answers
//! 503 with a `Retry-After` header (whole seconds, at least 1). `Internal` answers 500
//! with a generic message and logs the real one, because internal details (paths,
//! SQL, peer addresses) are not the tenant's business.
//!
//! Kept free of ingest specifics so the GraphQL/REST API crate can reuse it for any
//! error type that implements [`Classify`].

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tally_core::{Classify, ErrorClass};

/// The status code for a class.
pub fn status_for(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
        ErrorClass::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorClass::Forbidden => StatusCode::FORBIDDEN,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The message a client may see for `err`.
pub fn client_message<E: Classify + std::fmt::Display + ?Sized>(err: &E) -> String {
    if err.class().is_client_visible() {
        err.to_string()
    } else {
        "internal error; the details are in the server log".to_string()
    }
}

/// Builds the response for `err`, logging internal errors.
pub fn error_response<E: Classify + std::fmt::Display + ?Sized>(err: &E) -> Response {
    error_response_with(err, serde_json::Map::new())
}

/// Like [`error_response`], with extra fields merged into the JSON body (for example
/// the per-event `rejected` list of a partially refused batch).
pub fn error_response_with<E: Classify + std::fmt::Display + ?Sized>(
    err: &E,
    mut extra: serde_json::Map<String, Value>,
) -> Response {
    let class = err.class();
    if class == ErrorClass::Internal {
        tracing::error!(error = %err, "internal error answering a request");
    }
    extra.insert("error".into(), json!(client_message(err)));
    extra.insert("code".into(), json!(class.code()));
    let mut response = (status_for(class), Json(Value::Object(extra))).into_response();
    if let ErrorClass::Unavailable { retry_after } = class {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after_value(retry_after));
    }
    response
}

/// `Retry-After` in whole seconds, rounded up, never 0 (0 invites a hot retry loop).
pub fn retry_after_value(delay: Duration) -> HeaderValue {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(ErrorClass, &'static str);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.1)
        }
    }
    impl Classify for E {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }

    #[test]
    fn unavailable_sets_retry_after_rounded_up() {
        let r = error_response(&E(
            ErrorClass::Unavailable {
                retry_after: Duration::from_millis(1500),
            },
            "busy",
        ));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(retry_after_value(Duration::ZERO), "1");
    }

    #[test]
    fn internal_hides_details() {
        assert_eq!(
            client_message(&E(ErrorClass::Internal, "/var/secret path")),
            "internal error; the details are in the server log"
        );
        assert_eq!(client_message(&E(ErrorClass::BadRequest, "bad")), "bad");
        let r = error_response(&E(ErrorClass::Internal, "x"));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
