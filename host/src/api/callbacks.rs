//! `POST /v1/callbacks/{id}`: a partner calling back. The URL's secret
//! (or a `callbacks:send` token, or both where a token is required) admits
//! it; the callback is durable before it is acknowledged, and its answer
//! says whether the step took it, stored it for later, or rejected it.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;

use super::{Api, ApiError, Resp, auth_error, json_response, query_pairs};
use crate::auth::{AuthError, Permission};
use crate::model::{ReceivedCallback, now_ms};
use crate::store::StoreError;
use crate::workflow::{CallbackError, CallbackReply};

impl Api {
    pub(super) async fn callback(
        &self,
        id: &str,
        req: Request<Incoming>,
    ) -> Result<Resp, ApiError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(ApiError::not_found(format!(
                "no callback is registered under {id:?}"
            )));
        }
        let secret = query_pairs(req.uri().query())
            .into_iter()
            .find(|(k, _)| k == "secret")
            .map(|(_, v)| v);
        // A token is optional here (the URL secret admits the callback),
        // but one that is sent must be valid and carry callbacks:send.
        // Owned, so the lookup's future does not borrow the request.
        let header = req.headers().get(hyper::header::AUTHORIZATION).cloned();
        let header = header.as_ref().map(|v| v.as_bytes());
        let token_ok = match crate::auth::authenticate(self.workflows.store().as_ref(), header)
            .await
            .map_err(auth_error)?
        {
            Some(record) if record.allows(Permission::CallbacksSend) => true,
            Some(_) => return Err(auth_error(AuthError::Forbidden(Permission::CallbacksSend))),
            None => false,
        };
        if self.auth.callbacks_require_token && !token_ok {
            return Err(auth_error(AuthError::Missing));
        }
        let method = req.method().as_str().to_owned();
        let mut headers = Vec::new();
        // HTTP allows bytes beyond ASCII in a value (obs-text); the plugin
        // gets them decoded as UTF-8, lossily, as on the outbound path.
        for (name, value) in req.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers.push((name.as_str().to_owned(), value));
        }
        let body = self.body(req).await?;
        let callback = ReceivedCallback {
            method,
            headers,
            body: body.to_vec(),
            received_ms: now_ms(),
        };
        let reply = self
            .workflows
            .callback(
                id,
                secret.as_deref(),
                token_ok,
                self.auth.callbacks_require_token,
                callback,
            )
            .await
            .inspect(|reply| {
                self.workflows.metrics().callback(match reply {
                    CallbackReply::Applied { .. } => "applied",
                    CallbackReply::Stored => "stored",
                    CallbackReply::Rejected(_) => "rejected",
                })
            })
            .inspect_err(|e| {
                self.workflows.metrics().callback(match e {
                    CallbackError::NotFound => "not-found",
                    CallbackError::BadSecret | CallbackError::TokenRequired => "unauthorized",
                    CallbackError::Duplicate(_) => "duplicate",
                    CallbackError::Gone(_) => "gone",
                    CallbackError::Store(StoreError::Conflict(_)) => "busy",
                    CallbackError::Store(_) => "error",
                })
            })
            .map_err(|e| {
                let (status, code) = match &e {
                    CallbackError::NotFound => (StatusCode::NOT_FOUND, "unknown-callback"),
                    CallbackError::BadSecret | CallbackError::TokenRequired => {
                        (StatusCode::UNAUTHORIZED, "unauthorized")
                    }
                    CallbackError::Duplicate(_) => (StatusCode::CONFLICT, "duplicate-callback"),
                    CallbackError::Gone(_) => (StatusCode::GONE, "callback-expired"),
                    CallbackError::Store(StoreError::Conflict(_)) => (StatusCode::CONFLICT, "busy"),
                    CallbackError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage"),
                };
                ApiError::new(status, code, e.to_string())
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
                        "error": {"code": "callback-rejected", "message": reason}}),
            ),
        })
    }
}
