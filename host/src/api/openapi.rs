//! The API's OpenAPI 3.1 description, served at `GET /v1/openapi.json`.
//! The paths and schemas are written by hand in `openapi.json` beside this
//! file (a test holds them to the router and to real answers); what the
//! code already knows, the error codes and the version, is filled in here
//! so that it cannot drift.

use std::sync::LazyLock;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::codes::ApiCode;
use super::json_response;

/// The description, built once.
static DOCUMENT: LazyLock<Value> = LazyLock::new(build);

fn build() -> Value {
    let mut doc: Value =
        serde_json::from_str(include_str!("openapi.json")).expect("openapi.json is JSON");
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    let codes: Vec<&str> = ApiCode::ALL.iter().map(|c| c.as_str()).collect();
    doc["components"]["schemas"]["ErrorCode"]["enum"] = json!(codes);
    doc
}

/// The OpenAPI document, as served.
pub fn document() -> &'static Value {
    &DOCUMENT
}

/// `GET /v1/openapi.json`.
pub(super) async fn serve() -> Response {
    json_response(StatusCode::OK, document())
}
