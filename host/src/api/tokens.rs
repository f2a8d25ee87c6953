//! API tokens, for admins: `POST /v1/tokens` creates one (the token is in
//! that answer only; the store keeps its hash, `crate::auth`), `GET` lists
//! them (never a token), `DELETE /v1/tokens/{id}` revokes one.
//! `GET /v1/whoami` tells any token's holder what it is, so that a client
//! (the console) shows only the actions the token may take.

use axum::Extension;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::auth::{Admitted, admitted_body};
use super::{ApiError, Param, Shared, json_response, query_pairs};
use crate::auth::Permission;

/// `GET /v1/tokens`: every token's id, name, permissions and creation
/// time, oldest first.
pub(super) async fn list(State(api): State<Shared>) -> Result<Response, ApiError> {
    let tokens = crate::auth::list_tokens(api.workflows.store().as_ref()).await?;
    let tokens: Vec<_> = tokens.iter().map(|t| t.public_view()).collect();
    Ok(json_response(StatusCode::OK, &json!({ "tokens": tokens })))
}

/// `GET /v1/whoami`: the calling token's public view, whatever its
/// permissions (any valid token may ask about itself). Without auth, no
/// token is needed and every permission applies, so the answer says so.
pub(super) async fn whoami(
    State(api): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let view = match super::auth::caller(&api, &headers).await? {
        Some(record) => {
            let mut view = record.public_view();
            view["auth"] = json!(api.auth.enabled);
            view
        }
        None if api.auth.enabled => return Err(crate::auth::AuthError::Missing.into()),
        None => json!({
            "id": null, "name": null, "permissions": [Permission::Admin],
            "created_ms": null, "expires_ms": null, "last_used_ms": null, "auth": false,
        }),
    };
    Ok(json_response(StatusCode::OK, &view))
}

/// `DELETE /v1/tokens/{id}[?force=true]`: the token is refused from the
/// answer on. The last admin token stays unless `force=true`.
pub(super) async fn revoke(
    State(api): State<Shared>,
    Param(id): Param,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let force = query_pairs(query.as_deref())
        .iter()
        .any(|(k, v)| k == "force" && v == "true");
    let revoked = crate::auth::revoke_token(api.workflows.store().as_ref(), &id, force).await?;
    tracing::info!(token_id = %revoked.id, name = %revoked.name, "API token revoked");
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": revoked.id, "name": revoked.name, "revoked": true}),
    ))
}

/// What `POST /v1/tokens` asks for.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    permissions: Vec<String>,
    /// Seconds from now until it is refused; never without.
    #[serde(default)]
    expires_in_secs: Option<u64>,
}

/// `POST /v1/tokens`: the token is in this answer only.
pub(super) async fn create(
    State(api): State<Shared>,
    admitted: Option<Extension<Admitted>>,
    body: Body,
) -> Result<Response, ApiError> {
    let admitted = admitted.map(|Extension(a)| a);
    let body = admitted_body(&api, admitted.as_ref(), body, api.max_body).await?;
    let new: NewToken = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"name\": string, \"permissions\": [string], \"expires_in_secs\": number (optional)}}: {e}"
        ))
    })?;
    let expires_ms = match new.expires_in_secs {
        None => None,
        Some(0) => return Err(ApiError::bad_request("expires_in_secs must be at least 1")),
        Some(secs) => Some(
            secs.checked_mul(1000)
                .and_then(|ms| crate::model::now_ms().checked_add(ms))
                .ok_or_else(|| ApiError::bad_request("expires_in_secs is too large"))?,
        ),
    };
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
    let (token, record) = crate::auth::create_token(
        api.workflows.store().as_ref(),
        &new.name,
        &permissions,
        expires_ms,
    )
    .await?;
    let mut view = record.public_view();
    view["token"] = json!(token);
    Ok(json_response(StatusCode::CREATED, &view))
}
