//! OpenAI-shaped errors: `{"error":{"message","type","param","code"}}` with the right status.

use super::wire::{ErrorBody, ErrorDetail};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::bucket::BucketError;
use crate::sandbox::SandboxError;
use crate::store::StoreError;
use crate::store::blobs::BlobError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        let kind = match status.as_u16() {
            401 => "invalid_request_error",
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 400 about one request field.
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::bad_request(message).param(param)
    }

    pub fn not_found(noun: &str, id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No {noun} found with id '{id}'."),
        )
    }

    pub fn internal(err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request. Sorry about that!",
        )
    }

    /// A 503: a service the server depends on (`what`) does not answer; the request changed
    /// nothing and may be tried again.
    pub fn unavailable(what: &str, err: impl std::fmt::Display) -> ApiError {
        tracing::warn!(error = %err, "{what} unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The {what} is unavailable right now; please try again shortly."),
        )
    }

    pub fn param(mut self, param: &str) -> ApiError {
        self.param = Some(param.to_string());
        self
    }

    pub fn code(mut self, code: &str) -> ApiError {
        self.code = Some(code.to_string());
        self
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        })
        .unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { kind, id } => ApiError::not_found(kind, &id),
            StoreError::BadCursor { param, id } => ApiError::invalid(
                param,
                format!("Invalid '{param}': no object with id '{id}' in this list."),
            ),
            StoreError::Duplicate(id) => {
                ApiError::bad_request(format!("An object with id '{id}' already exists."))
            }
            StoreError::Unavailable(e) => {
                crate::metrics::store_error("unavailable");
                ApiError::unavailable("database", e)
            }
            StoreError::Other(e) => {
                crate::metrics::store_error("other");
                ApiError::internal(format!("{e:#}"))
            }
        }
    }
}

impl From<BucketError> for ApiError {
    fn from(e: BucketError) -> ApiError {
        match e {
            BucketError::NotFound(key) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("No such object: {key}"))
            }
            BucketError::InvalidKey(_) => ApiError::internal(e),
            BucketError::Unavailable { .. } => ApiError::unavailable("file store", e),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> ApiError {
        match e {
            BlobError::Store(e) => e.into(),
            BlobError::Bucket(e) => e.into(),
            BlobError::OverLimit(max) => {
                crate::metrics::limit_refused("storage");
                super::scope::storage_full(max)
            }
        }
    }
}

impl From<SandboxError> for ApiError {
    fn from(e: SandboxError) -> ApiError {
        match e {
            SandboxError::UnknownImage { .. } => ApiError::invalid("image", e.to_string()),
            SandboxError::InvalidSessionId(_) => ApiError::invalid("session_id", e.to_string()),
            SandboxError::InvalidInput(_) => ApiError::invalid("code", e.to_string()),
            SandboxError::QuotaExceeded(_) => ApiError::invalid("file_ids", e.to_string()),
            SandboxError::ImageMismatch { .. } => ApiError::invalid("image", e.to_string()),
            SandboxError::Unavailable { what, message } => ApiError::unavailable(what, message),
            SandboxError::Internal(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal(e)
    }
}
