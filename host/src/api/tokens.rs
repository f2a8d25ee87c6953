//! `POST /v1/tokens`: an admin creates an API token. The token is in this
//! answer only; the store keeps its hash (`crate::auth`).

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{ApiError, Shared, json_response, read_body};
use crate::auth::Permission;

/// What `POST /v1/tokens` asks for.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    permissions: Vec<String>,
}

pub(super) async fn create(State(api): State<Shared>, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body, api.max_body).await?;
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
        crate::auth::create_token(api.workflows.store().as_ref(), &new.name, &permissions).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"id": record.id, "name": record.name, "permissions": record.permissions, "token": token}),
    ))
}
