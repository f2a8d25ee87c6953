//! The HTTP API (JSON, versioned under `/v1`; `docs/api.md` is its
//! contract). This file is the route table and the middleware around it:
//! routing, `404`/`405` and path parameters are axum's, the handlers of
//! each resource live in their own file, tokens are checked in [`auth`]
//! and every error becomes its answer in [`error`]. Nothing here holds
//! state beyond what the daemon hands in.

mod auth;
mod bulk;
mod callbacks;
mod codes;
mod console;
mod detail;
mod error;
mod executions;
mod health;
mod openapi;
mod plugins;
mod tokens;

pub use codes::ApiCode;
pub use error::ApiError;
pub use executions::{StartRequest, execution_view, parse_start, wait_view};
pub use openapi::document as openapi_document;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use axum::routing::{delete, get, post};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use serde_json::Value;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::normalize_path::NormalizePath;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::Permission;
use crate::config::{AuthConfig, Config, ConfigError};
use crate::workflow::Workflows;

/// What every handler shares; one per daemon, behind an `Arc`.
pub(crate) struct ApiState {
    workflows: Arc<Workflows>,
    max_body: usize,
    max_plugin_bytes: usize,
    auth: AuthConfig,
    /// Which addresses a client's `callback_url` may name.
    policy: crate::egress::AddressPolicy,
    /// The base of callback URLs, as the registrar hands them out.
    public_url: String,
}

type Shared = Arc<ApiState>;

/// The API as one tower service; the daemon serves it on each connection.
/// Paths are normalised before routing (`/v1/executions/` is
/// `/v1/executions`), as the API has always accepted them.
pub type ApiService = NormalizePath<Router>;

/// The API over the state machine, with the limits and auth of `config`;
/// callback URLs are shown under `public_url`.
pub fn service(
    workflows: Arc<Workflows>,
    config: &Config,
    public_url: String,
) -> Result<ApiService, ConfigError> {
    let state = Arc::new(ApiState {
        workflows,
        max_body: config.max_request_body_bytes,
        max_plugin_bytes: config.max_plugin_bytes,
        auth: config.auth.clone(),
        policy: config.egress()?.policy().clone(),
        public_url,
    });
    let body_timeout = Duration::from_millis(config.request_body_timeout_ms);
    Ok(NormalizePath::trim_trailing_slash(router(
        state,
        body_timeout,
    )))
}

/// The routes, grouped by the permission they need as the table in
/// `docs/api.md` is, so that a route cannot be added without saying who
/// may call it.
fn router(state: Shared, body_timeout: Duration) -> Router {
    use Permission::{Admin, ExecutionsRead, ExecutionsWrite};
    // Open: a callback is admitted by its URL's secret (and an optional
    // token), which its handler checks itself. A wrong method here is
    // answered to anyone, as the endpoint itself would be.
    let open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/v1/callbacks/{id}", post(callbacks::receive))
        // Any valid token may ask what it is; the handler checks it.
        .route("/v1/whoami", get(tokens::whoami))
        .merge(console::routes())
        .method_not_allowed_fallback(method_not_allowed);
    let read = Router::new()
        .route("/v1/executions", get(executions::list))
        .route("/v1/executions/counts", get(executions::counts))
        .route("/v1/executions/{id}", get(executions::show))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/{name}", get(plugins::show));
    let write = Router::new().route("/v1/executions", post(executions::start));
    let admin = Router::new()
        .route("/v1/executions/cancel", post(bulk::cancel))
        .route("/v1/executions/retry", post(bulk::retry))
        .route("/v1/executions/{id}/retry", post(executions::retry))
        .route("/v1/executions/{id}/skip", post(executions::skip))
        .route("/v1/executions/{id}/cancel", post(executions::cancel))
        .route("/v1/executions/{id}", delete(executions::remove))
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{id}", delete(tokens::revoke))
        .route("/v1/plugins", post(plugins::upload))
        .route("/v1/plugins/{name}", delete(plugins::remove));
    open.merge(auth::guard(read, &state, ExecutionsRead))
        .merge(auth::guard(write, &state, ExecutionsWrite))
        .merge(auth::guard(admin, &state, Admin))
        .fallback(not_found)
        .method_not_allowed_fallback(refused_method)
        // Inside out: a body that stalls fails its read (see `read_body`),
        // a panic becomes a 500, an error answer to a request with a body
        // announces the close, and the request is traced.
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(CatchPanicLayer::custom(error::panicked))
        .layer(from_fn(announce_close))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // Errors are logged where they arise, with their cause.
                .on_request(())
                .on_failure(()),
        )
        .with_state(state)
}

/// The path only: a callback URL's query carries its secret.
fn request_span(req: &Request) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
}

/// An unknown path. Like anything the table does not list, it takes the
/// `admin` permission to be told so (when auth is on).
async fn not_found(State(api): State<Shared>, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().to_owned();
    auth::admit(&api, req, Permission::Admin).await?;
    Err(ApiError::not_found(format!("no route for {path}")))
}

/// A method a guarded path does not take: like anything the table does
/// not list, it takes `admin` to be told so (when auth is on).
async fn refused_method(State(api): State<Shared>, req: Request) -> Result<Response, ApiError> {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    auth::admit(&api, req, Permission::Admin).await?;
    Err(method_not_allowed(method, uri).await)
}

/// A known path with a method it does not take; axum adds the `Allow`
/// header.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ApiCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// An error may be answered before the body was read; hyper then closes
/// the connection, and a client that pooled it would send its next request
/// into a closed socket. Say so up front.
async fn announce_close(req: Request, next: Next) -> Response {
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|n| n.as_bytes() != b"0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let mut resp = next.run(req).await;
    if has_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A JSON answer, serialised compactly.
fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Reads a request body of at most `limit` bytes. Handlers call it where
/// their checks allow, not as an extractor: what is refused before its
/// body is read is refused without waiting for it.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ApiCode::BodyTooLarge,
                format!("request body exceeds {limit} bytes"),
            ))
        }
        // The stalled body's error arrives wrapped in axum's.
        Err(e)
            if std::iter::successors(Some(&*e as &dyn std::error::Error), |e| e.source())
                .any(|e| e.is::<tower_http::timeout::TimeoutError>()) =>
        {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ApiCode::RequestTimeout,
                "the request body stopped arriving before it was complete",
            ))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// One path parameter, percent-decoded; one that cannot be decoded is
/// refused in the API's error shape rather than axum's plain text.
struct Param(String);

impl<S: Send + Sync> FromRequestParts<S> for Param {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// The decoded pairs of a query string (`+` is a space, `%XX` a byte).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The first value of `key` in `uri`'s query string.
fn query_value(uri: &Uri, key: &str) -> Option<String> {
    query_pairs(uri.query())
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tower::ServiceExt as _;

    proptest! {
        #[test]
        fn any_query_string_parses_without_panic(query in ".{0,64}") {
            let _ = query_pairs(Some(&query));
        }
    }

    async fn boom() -> &'static str {
        panic!("a handler failed")
    }

    /// The middleware of [`router`] around one route that panics.
    fn panicking() -> Router {
        Router::new()
            .route("/boom", post(boom))
            .layer(CatchPanicLayer::custom(error::panicked))
            .layer(from_fn(announce_close))
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_internal_and_announces_the_close() {
        let req = Request::post("/boom")
            .header(header::CONTENT_LENGTH, "2")
            .body(Body::from("{}"))
            .unwrap();
        let resp = panicking().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal", "{body}");
    }

    #[tokio::test]
    async fn an_error_without_a_body_keeps_the_connection() {
        let router = panicking();
        let resp = router
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(!resp.headers().contains_key(header::CONNECTION));
    }
}
