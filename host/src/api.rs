//! The HTTP API (JSON, versioned under `/v1`): executions, callbacks,
//! plugins, health. Handlers turn requests into calls on [`Workflows`] and
//! errors into a JSON body with a stable `code`; nothing here holds state.
//! The plugin routes live in [`plugins`].

mod callbacks;
mod executions;
mod plugins;

use executions::list_filter;
pub use executions::{StartRequest, parse_start};

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::auth::{AuthError, Permission};
use crate::config::AuthConfig;
use crate::model::{Doc, ExecState, Execution};
use crate::store::{ExecutionFilter, StoreError};
use crate::workflow::{AdminError, StartError, Target, Workflows};

/// Shared by all connections.
pub struct Api {
    workflows: Arc<Workflows>,
    max_body: usize,
    max_plugin_bytes: usize,
    auth: AuthConfig,
    /// Which addresses a client's `callback_url` may name.
    policy: crate::egress::AddressPolicy,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

type Resp = Response<Full<Bytes>>;

/// An API error: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "storage", e.to_string())
    }
}

fn json_response(status: StatusCode, body: &Value) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: ApiError) -> Resp {
    json_response(
        e.status,
        &json!({ "error": { "code": e.code, "message": e.message } }),
    )
}

/// The API view of an execution.
pub fn execution_view(exec: &Execution) -> Value {
    json!({
        "id": exec.id,
        "workflow": exec.workflow,
        "state": exec.state.as_str(),
        "step": exec.step().name,
        "step_index": exec.step_index,
        "attempt": exec.attempt,
        "output": exec.output.as_ref().map(Doc::to_json_value),
        "output_content_type": exec.output.as_ref().map(|d| d.content_type.clone()),
        "error": exec.error,
        "waiting_until_ms": exec.waiting.as_ref().map(|w| w.due_ms),
        "created_ms": exec.created_ms,
        "updated_ms": exec.updated_ms,
        "status_log": exec.status_log,
    })
}

impl Api {
    /// An API over the state machine.
    pub fn new(
        workflows: Arc<Workflows>,
        config: &crate::config::Config,
    ) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            workflows,
            max_body: config.max_request_body_bytes,
            max_plugin_bytes: config.max_plugin_bytes,
            auth: config.auth.clone(),
            policy: config.egress()?.policy().clone(),
        })
    }

    /// Checks the request's token for `needed` (when auth is on).
    async fn authorize(&self, req: &Request<Incoming>, needed: Permission) -> Result<(), ApiError> {
        if !self.auth.enabled {
            return Ok(());
        }
        // Owned, so the lookup's future does not borrow the request.
        let header = req.headers().get(hyper::header::AUTHORIZATION).cloned();
        crate::auth::require(
            self.workflows.store().as_ref(),
            header.as_ref().map(|v| v.as_bytes()),
            needed,
        )
        .await
        .map(|_| ())
        .map_err(auth_error)
    }

    /// Serves one request; never fails (errors become responses). A
    /// handler that panics (sled panics on some I/O errors, such as a full
    /// disk failing an fsync) answers `500` instead of dropping the
    /// connection: every request gets an answer.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Resp, Infallible> {
        use futures_util::FutureExt as _;
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let has_body = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .is_some_and(|n| n.as_bytes() != b"0")
            || req.headers().contains_key(hyper::header::TRANSFER_ENCODING);
        let result = std::panic::AssertUnwindSafe(self.route(req))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!(%method, %path, "a request handler panicked; answered 500");
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the daemon failed while handling this request (see its log); nothing the request asked for was acknowledged",
                ))
            });
        let mut resp = result.unwrap_or_else(error_response);
        // An error may be answered before the body was read; hyper then
        // closes the connection, and a client that pooled it would send its
        // next request into a closed socket. Say so up front.
        if has_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
            resp.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
        tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
        Ok(resp)
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let route = (req.method().clone(), segments.as_slice());
        let needed = match &route {
            (_, ["healthz"]) | (_, ["metrics"]) | (_, ["v1", "callbacks", _]) => None,
            (Method::POST, ["v1", "executions"]) => Some(Permission::ExecutionsWrite),
            (Method::GET, ["v1", "executions", ..]) | (Method::GET, ["v1", "plugins", ..]) => {
                Some(Permission::ExecutionsRead)
            }
            _ => Some(Permission::Admin),
        };
        if let Some(needed) = needed
            && let Err(refused) = self.authorize(&req, needed).await
        {
            // Read what the client is sending (up to the request limit, for
            // a few seconds at most) before refusing it, so that it hears
            // the refusal rather than a connection reset mid-body.
            let drain = Limited::new(req.into_body(), self.max_body).collect();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
            return Err(refused);
        }
        match route {
            (Method::GET, ["healthz"]) => {
                Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
            }
            (Method::GET, ["metrics"]) => Ok(self.metrics().await),
            (Method::POST, ["v1", "executions"]) => self.start(req).await,
            (Method::GET, ["v1", "executions"]) => {
                let filter = list_filter(req.uri().query())?;
                self.list(&filter).await
            }
            (Method::GET, ["v1", "executions", id]) => self.get(id).await,
            (
                Method::POST,
                [
                    "v1",
                    "executions",
                    id,
                    action @ ("retry" | "skip" | "cancel"),
                ],
            ) => self.admin_action(id, action).await,
            (Method::POST, ["v1", "callbacks", id]) => {
                let id = (*id).to_owned();
                self.callback(&id, req).await
            }
            (Method::GET, ["v1", "plugins"]) => Ok(self.plugins()),
            (Method::GET, ["v1", "plugins", name]) => self.plugin(name),
            (Method::POST, ["v1", "plugins"]) => self.upload(req).await,
            (Method::DELETE, ["v1", "plugins", name]) => self.delete_plugin(name).await,
            (Method::POST, ["v1", "tokens"]) => self.create_token(req).await,
            (_, ["healthz"])
            | (_, ["metrics"])
            | (_, ["v1", "executions"])
            | (_, ["v1", "executions", _])
            | (_, ["v1", "executions", _, "retry" | "skip" | "cancel"])
            | (_, ["v1", "callbacks", _])
            | (_, ["v1", "tokens"])
            | (_, ["v1", "plugins"])
            | (_, ["v1", "plugins", _]) => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{} is not allowed on {path}", req.method()),
            )),
            _ => Err(ApiError::not_found(format!("no route for {path}"))),
        }
    }

    async fn create_token(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let body = self.body(req).await?;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NewToken {
            name: String,
            permissions: Vec<String>,
        }
        let new: NewToken = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "expected {{\"name\": string, \"permissions\": [string]}}: {e}"
            ))
        })?;
        if new.name.trim().is_empty() || new.permissions.is_empty() {
            return Err(ApiError::bad_request(
                "a token needs a name and at least one permission",
            ));
        }
        let permissions = new
            .permissions
            .iter()
            .map(|p| p.parse::<Permission>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::bad_request)?;
        let (token, record) =
            crate::auth::create_token(self.workflows.store().as_ref(), &new.name, &permissions)
                .await?;
        Ok(json_response(
            StatusCode::CREATED,
            &json!({"id": record.id, "name": record.name, "permissions": record.permissions, "token": token}),
        ))
    }

    async fn body(&self, req: Request<Incoming>) -> Result<Bytes, ApiError> {
        self.body_up_to(req, self.max_body).await
    }

    async fn body_up_to(&self, req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
        let limited = Limited::new(req.into_body(), limit);
        match limited.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    format!("request body exceeds {limit} bytes"),
                ))
            }
            Err(e) => Err(ApiError::bad_request(format!(
                "could not read the request body: {e}"
            ))),
        }
    }

    /// `GET /metrics`: Prometheus text format; open like `/healthz` (counts
    /// and plugin names only, no execution data).
    async fn metrics(&self) -> Resp {
        let store = self.workflows.store();
        let timer_backlog = match store.timer_backlog(crate::model::now_ms()).await {
            Ok(backlog) => Some(backlog),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count timers for /metrics");
                None
            }
        };
        let writes = store.write_stats();
        let text = self.workflows.metrics().render(&crate::metrics::Snapshot {
            slots: self.workflows.slot_usage(),
            timer_backlog,
            timers_quarantined: store.quarantined_timers(),
            store_changes: writes.changes,
            store_transactions: writes.transactions,
            flush_requests: writes.flush_requests,
            disk_flushes: writes.disk_flushes,
        });
        let mut resp = Response::new(Full::new(Bytes::from(text)));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }
}

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::Missing | AuthError::Invalid => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
        }
        AuthError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
    }
}

/// Decodes `a=b&c=d` with percent-decoding.
/// The decoded pairs of a query string (`+` is a space, `%XX` a byte).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("plugin".to_owned()),
            Just("workflow".to_owned()),
            Just("config".to_owned()),
            Just("input".to_owned()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,16}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_bytes_give_a_request_or_a_400(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Err(e) = parse_start(&bytes) {
                prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
            }
        }

        #[test]
        fn any_json_gives_a_request_or_a_400(value in json_value()) {
            // Compare with the value as it reads back: serde_json's default
            // float parsing does not round-trip every last bit.
            let text = value.to_string();
            let value: Value = serde_json::from_str(&text).unwrap();
            match parse_start(text.as_bytes()) {
                Ok(request) => {
                    let has_one = value.get("plugin").is_some_and(Value::is_string)
                        != value.get("workflow").is_some_and(Value::is_string);
                    prop_assert!(has_one, "accepted without exactly one target: {}", value);
                    prop_assert_eq!(&request.input, value.get("input").unwrap_or(&Value::Null));
                }
                Err(e) => prop_assert_eq!(e.status, StatusCode::BAD_REQUEST),
            }
        }

        #[test]
        fn any_query_string_parses_without_panic(query in ".{0,64}") {
            let _ = query_pairs(Some(&query));
        }

        #[test]
        fn any_authorization_header_is_a_clean_refusal(header in proptest::collection::vec(any::<u8>(), 0..96)) {
            let dir = tempfile::tempdir().unwrap();
            let store = crate::store::SledStore::open(dir.path()).unwrap();
            let refused = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(crate::auth::authenticate(&store, Some(&header)));
            prop_assert!(refused.is_err());
        }
    }

    #[test]
    fn a_well_formed_request_parses() {
        let r = parse_start(br#"{"plugin": "echo", "config": {"a": 1}, "input": [1]}"#).unwrap();
        assert!(matches!(r.target, Target::Plugin { ref name, .. } if name == "echo"));
        assert_eq!(r.input, serde_json::json!([1]));
    }
}
