//! Every error the API answers with, in one place: each error type of the
//! layers below gets one `From` into [`ApiError`], which renders as
//! `{"error": {"code", "message"}}` with the status and the stable code
//! ([`ApiCode`], listed in `docs/errors.md`). Handlers only use `?`.

use std::any::Any;

use axum::extract::rejection::PathRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::codes::ApiCode;
use super::json_response;
use crate::auth::AuthError;
use crate::store::StoreError;
use crate::wasm::plugins::PluginError;
use crate::workflow::{AdminError, CallbackError, StartError};

/// An API error: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ApiCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: ApiCode, message: impl Into<String>) -> Self {
        debug_assert!(
            code.statuses().contains(&status),
            "{code} is not documented with {status}"
        );
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ApiCode::BadRequest, message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ApiCode::NotFound, message)
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            &json!({ "error": { "code": self.code.as_str(), "message": self.message } }),
        )
    }
}

/// The answer of a handler that panicked (sled panics on some I/O errors,
/// such as a full disk failing an fsync): every request gets an answer,
/// and the client learns that nothing it asked for was acknowledged.
pub(super) fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let reason = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(panic = reason, "a request handler panicked; answered 500");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ApiCode::Internal,
        "the daemon failed while handling this request (see its log); nothing the request asked for was acknowledged",
    )
    .into_response()
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ApiCode::Storage,
            e.to_string(),
        )
    }
}

impl From<crate::auth::RevokeError> for ApiError {
    fn from(e: crate::auth::RevokeError) -> Self {
        use crate::auth::RevokeError;
        match e {
            RevokeError::NotFound(_) => Self::not_found(e.to_string()),
            RevokeError::LastAdmin(_) => {
                Self::new(StatusCode::CONFLICT, ApiCode::LastAdminToken, e.to_string())
            }
            RevokeError::Store(e) => e.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing
            | AuthError::Invalid
            | AuthError::Expired(_)
            | AuthError::Revoked(_) => Self::new(
                StatusCode::UNAUTHORIZED,
                ApiCode::Unauthorized,
                e.to_string(),
            ),
            AuthError::Forbidden(_) => {
                Self::new(StatusCode::FORBIDDEN, ApiCode::Forbidden, e.to_string())
            }
            AuthError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiCode::Storage,
                e.to_string(),
            ),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::UnknownWorkflow(_) => Self::new(
                StatusCode::NOT_FOUND,
                ApiCode::UnknownWorkflow,
                e.to_string(),
            ),
            StartError::UnknownPlugin(_) => {
                Self::new(StatusCode::NOT_FOUND, ApiCode::UnknownPlugin, e.to_string())
            }
            // The start handler answers these with the first start's
            // answer; anywhere else, the key was taken meanwhile.
            StartError::AlreadyStarted(_) => {
                Self::new(StatusCode::CONFLICT, ApiCode::Busy, e.to_string())
            }
            StartError::Store(e) => e.into(),
        }
    }
}

/// An operator's action that was refused: the [`AdminError`] with what
/// was asked of which execution, which its message names.
#[derive(Debug)]
pub(super) struct AdminRefusal {
    pub(super) action: &'static str,
    pub(super) id: String,
    pub(super) error: AdminError,
}

impl From<AdminRefusal> for ApiError {
    fn from(AdminRefusal { action, id, error }: AdminRefusal) -> Self {
        match error {
            AdminError::NotFound => Self::not_found(format!("no execution {id}")),
            AdminError::WrongState(state) => Self::new(
                StatusCode::CONFLICT,
                ApiCode::WrongState,
                format!("cannot {action} an execution that is {}", state.as_str()),
            ),
            AdminError::Busy => Self::new(StatusCode::CONFLICT, ApiCode::Busy, error.to_string()),
            AdminError::UnknownPlugin(_) => Self::new(
                StatusCode::CONFLICT,
                ApiCode::UnknownPlugin,
                error.to_string(),
            ),
            AdminError::Store(e) => e.into(),
        }
    }
}

impl From<CallbackError> for ApiError {
    fn from(e: CallbackError) -> Self {
        let (status, code) = match &e {
            CallbackError::NotFound => (StatusCode::NOT_FOUND, ApiCode::UnknownCallback),
            CallbackError::BadSecret | CallbackError::TokenRequired => {
                (StatusCode::UNAUTHORIZED, ApiCode::Unauthorized)
            }
            CallbackError::Duplicate(_) => (StatusCode::CONFLICT, ApiCode::DuplicateCallback),
            CallbackError::Gone(_) => (StatusCode::GONE, ApiCode::CallbackExpired),
            CallbackError::Store(StoreError::Conflict(_)) => (StatusCode::CONFLICT, ApiCode::Busy),
            CallbackError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, ApiCode::Storage),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        let (status, code) = match &e {
            PluginError::NotAComponent { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, ApiCode::NotAComponent)
            }
            PluginError::WrongWorld { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, ApiCode::WrongWorld)
            }
            PluginError::Describe { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, ApiCode::DescribeFailed)
            }
            PluginError::InvalidName(_) => (StatusCode::UNPROCESSABLE_ENTITY, ApiCode::InvalidName),
            PluginError::FromConfig { .. } => (StatusCode::CONFLICT, ApiCode::PluginFromConfig),
            PluginError::InUse { .. } => (StatusCode::CONFLICT, ApiCode::PluginInUse),
            PluginError::Unknown(_) => (StatusCode::NOT_FOUND, ApiCode::UnknownPlugin),
            PluginError::Store(_) => {
                tracing::error!(error = %e, "store error");
                (StatusCode::SERVICE_UNAVAILABLE, ApiCode::Storage)
            }
        };
        Self::new(status, code, e.to_string())
    }
}
