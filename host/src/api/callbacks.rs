//! `POST /v1/callbacks/{id}`: a partner calling back. The URL's secret
//! (or a `callbacks:send` token, or both where a token is required) admits
//! it; the callback is durable before it is acknowledged, and its answer
//! says whether the step took it, stored it for later, or rejected it.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{ApiCode, ApiError, Param, Shared, json_response, query_value, read_body};
use crate::auth::{AuthError, Permission};
use crate::model::{ReceivedCallback, now_ms};
use crate::store::StoreError;
use crate::workflow::{CallbackError, CallbackReply, Locator};

/// `POST /v1/callbacks/{id}?secret=…` (with `&execution=…&ticket=…` on
/// a derived ticket, see `workflow/registrar.rs`). Checked in the order the
/// documentation's table reads: the id, the token, then the body.
pub(super) async fn receive(
    State(api): State<Shared>,
    Param(id): Param,
    req: Request,
) -> Result<Response, ApiError> {
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::not_found(format!(
            "no callback is registered under {id:?}"
        )));
    }
    let secret = query_value(req.uri(), "secret");
    let locator = Locator::parse(
        query_value(req.uri(), "execution").as_deref(),
        query_value(req.uri(), "ticket").as_deref(),
    );
    // A token is optional here (the URL secret admits the callback),
    // but one that is sent must be valid and carry callbacks:send.
    let token_ok = match super::auth::caller(&api, req.headers()).await? {
        Some(record) if record.allows(Permission::CallbacksSend) => true,
        Some(_) => return Err(AuthError::Forbidden(Permission::CallbacksSend).into()),
        None => false,
    };
    let require_token = api.auth.callbacks_require_token;
    if require_token && !token_ok {
        return Err(AuthError::Missing.into());
    }
    let (parts, body) = req.into_parts();
    // HTTP allows bytes beyond ASCII in a value (obs-text); the plugin
    // gets them decoded as UTF-8, lossily, as on the outbound path.
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let body = read_body(body, api.max_body).await?;
    let callback = ReceivedCallback {
        method: parts.method.as_str().to_owned(),
        headers,
        body: body.to_vec(),
        received_ms: now_ms(),
    };
    let metrics = api.workflows.metrics();
    let reply = api
        .workflows
        .callback(
            &id,
            secret.as_deref(),
            locator.as_ref(),
            token_ok,
            require_token,
            callback,
        )
        .await
        .inspect(|reply| {
            metrics.callback(match reply {
                CallbackReply::Applied { .. } => "applied",
                CallbackReply::Stored => "stored",
                CallbackReply::Rejected(_) => "rejected",
            })
        })
        .inspect_err(|e| {
            metrics.callback(match e {
                CallbackError::NotFound => "not-found",
                CallbackError::BadSecret | CallbackError::TokenRequired => "unauthorized",
                CallbackError::Duplicate(_) => "duplicate",
                CallbackError::Gone(_) => "gone",
                CallbackError::Store(StoreError::Conflict(_)) => "busy",
                CallbackError::Store(_) => "error",
            })
        })?;
    Ok(match reply {
        CallbackReply::Stored => json_response(
            StatusCode::ACCEPTED,
            &json!({"accepted": true, "delivered": false,
                        "message": "stored; delivered to the step as soon as it waits for it"}),
        ),
        CallbackReply::Applied { state } => json_response(
            StatusCode::OK,
            &json!({"accepted": true, "delivered": true, "execution_state": state.as_str()}),
        ),
        CallbackReply::Rejected(reason) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"accepted": false,
                        "error": {"code": ApiCode::CallbackRejected.as_str(), "message": reason}}),
        ),
    })
}
