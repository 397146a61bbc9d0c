//! Every error the HTTP API returns: `{"error": "<message>", "kind": "<stable label>"}` with one status code per
//! class of cause, used the same way by every endpoint:
//!
//! | status | kind(s) | meaning |
//! |---|---|---|
//! | 400 | `bad_request`, `bad_input` | the request is malformed or does not fit the model (JSON, datatype, shape, sizes, undecodable image) — checked in the supervisor before any worker sees it, except image decoding, which happens inside the sandbox |
//! | 404 | `not_found` | no such model, version or route |
//! | 413 | `body_too_large` | the body exceeds `--max-body-mib` |
//! | 429 | `queue_full` | the model's bounded queue is full: back off and retry |
//! | 503 | `not_ready`, `shutting_down`, `timeout` | the model is not (yet) serving, the server is draining, or the request's deadline passed (in the queue, or the worker was killed at its deadline) |
//! | 500 | `crashed`, `caffe_check_failed`, `seccomp_violation`, `memory_limit`, `cpu_limit`, `protocol_violation`, `exited_without_answer`, `bad_model`, `sandbox`, `internal` | the worker serving this request died (it is replaced) or the model/sandbox failed |
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use caffe_sandbox_supervisor::{Error, WorkerFailure};

/// An API error: status, stable kind label, human message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn not_ready(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    }

    pub fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
    }

    pub fn queue_full(model: &str, capacity: usize) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!(
                "the queue of model '{model}' is full ({capacity} requests waiting); retry later"
            ),
        )
    }

    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The status and kind for a supervisor error raised while serving one request.
    pub fn from_supervisor(e: &Error) -> ApiError {
        let (status, kind) = match e {
            Error::BadInput { .. } => (StatusCode::BAD_REQUEST, "bad_input"),
            Error::Worker {
                failure: WorkerFailure::Timeout { .. },
                ..
            } => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Error::Worker { failure, .. } => (StatusCode::INTERNAL_SERVER_ERROR, failure.label()),
            other => (StatusCode::INTERNAL_SERVER_ERROR, other.label()),
        };
        ApiError::new(status, kind, e.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}]: {}",
            self.status.as_u16(),
            self.kind,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "kind": self.kind });
        (self.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_errors_map_to_documented_statuses() {
        let bad = Error::BadInput {
            message: "x".into(),
            input: None,
        };
        assert_eq!(
            ApiError::from_supervisor(&bad).status,
            StatusCode::BAD_REQUEST
        );
        let crash = Error::Worker {
            failure: WorkerFailure::Crashed {
                signal: 11,
                signal_name: "SIGSEGV".into(),
            },
            stderr_tail: String::new(),
        };
        let e = ApiError::from_supervisor(&crash);
        assert_eq!(
            (e.status, e.kind),
            (StatusCode::INTERNAL_SERVER_ERROR, "crashed")
        );
        assert!(e.message.contains("SIGSEGV"));
        let t = Error::Worker {
            failure: WorkerFailure::Timeout {
                phase: "inference".into(),
                limit_ms: 5,
            },
            stderr_tail: String::new(),
        };
        let e = ApiError::from_supervisor(&t);
        assert_eq!(
            (e.status, e.kind),
            (StatusCode::SERVICE_UNAVAILABLE, "timeout")
        );
    }
}
