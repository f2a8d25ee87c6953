//! `/v1/plugins`: list, inspect, upload and delete plugins. Only uploaded
//! plugins can be replaced or deleted; a name whose code the config file
//! or the binary provides is refused with `409 plugin-from-config`, since a
//! restart would undo the change.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::auth::{Admitted, admitted_body};
use super::{ApiError, Param, Shared, json_response, query_value};
use crate::egress::HostRules;
use crate::wasm::plugins::LoadedPlugin;

/// The list view of a plugin.
fn plugin_view(p: &LoadedPlugin) -> Value {
    json!({
        "name": p.name,
        "hash": p.hash,
        "version": p.info.version,
        "description": p.info.description,
        "source": p.source.as_str(),
        "builtin": p.source == crate::wasm::plugins::Source::Builtin,
        "size": p.size,
    })
}

/// `GET /v1/plugins`: the current version of every plugin.
pub(super) async fn list(State(api): State<Shared>) -> Response {
    let items: Vec<Value> = api
        .workflows
        .registry()
        .list()
        .iter()
        .map(|p| plugin_view(p))
        .collect();
    json_response(StatusCode::OK, &json!({ "plugins": items }))
}

/// `GET /v1/plugins/{name}`: the list view, its config schema, and the
/// grant that applies to it (from `[plugins.NAME]`, whatever its source).
pub(super) async fn show(
    State(api): State<Shared>,
    Param(name): Param,
) -> Result<Response, ApiError> {
    let registry = api.workflows.registry();
    let plugin = registry
        .current(&name)
        .ok_or_else(|| ApiError::not_found(format!("no plugin {name:?}")))?;
    let mut view = plugin_view(&plugin);
    view["config_schema"] = plugin
        .info
        .config_schema
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let section = registry.config().plugins.get(&name);
    let allowed_hosts: Vec<String> = match &plugin.grant.hosts {
        HostRules::Any => vec!["*".to_owned()],
        HostRules::None => Vec::new(),
        HostRules::Only(_) => section
            .and_then(|s| s.allowed_hosts.clone())
            .unwrap_or_default(),
    };
    view["grant"] = json!({
        "section": section.map(|_| format!("[plugins.{name}]")),
        "allowed_hosts": allowed_hosts,
        "secrets": plugin.grant.secrets.keys().collect::<Vec<_>>(),
        "limits": {
            "memory_mb": plugin.grant.limits.memory_mb,
            "time_limit_ms": plugin.grant.limits.time_limit_ms,
            "max_body_bytes": plugin.grant.limits.max_body_bytes,
        },
    });
    Ok(json_response(StatusCode::OK, &view))
}

/// `POST /v1/plugins?name=NAME` with the component's bytes (up to
/// `max_plugin_bytes`, not the request limit): compiled, checked against
/// the world and described before anything changes.
pub(super) async fn upload(State(api): State<Shared>, req: Request) -> Result<Response, ApiError> {
    let name = query_value(req.uri(), "name").ok_or_else(|| {
        ApiError::bad_request("give the plugin's name: POST /v1/plugins?name=NAME")
    })?;
    let registry = api.workflows.registry();
    // The body is read before the name is refused: answering while the
    // client still sends it would close the connection under the
    // client's feet, which then sees no answer at all.
    let admitted = req.extensions().get::<Admitted>().cloned();
    let body = admitted_body(
        &api,
        admitted.as_ref(),
        req.into_body(),
        api.max_plugin_bytes,
    )
    .await?;
    if let Some(refusal) = crate::wasm::plugins::refuse_fixed(registry.config(), &name, "replaced")
    {
        return Err(refusal.into());
    }
    let plugin = registry.upload(&name, &body).await?;
    Ok(json_response(StatusCode::CREATED, &plugin_view(&plugin)))
}

/// `DELETE /v1/plugins/{name}`: an uploaded plugin nothing needs any
/// more leaves the registry and the store.
pub(super) async fn remove(
    State(api): State<Shared>,
    Param(name): Param,
) -> Result<Response, ApiError> {
    let removed = api.workflows.registry().remove(&name).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "name": removed.name,
            "deleted": true,
            "removed_versions": removed.removed,
            "shared_versions": removed.shared,
        }),
    ))
}
