//! `/v1/plugins`: list, inspect, upload and delete plugins. Only uploaded
//! plugins can be replaced or deleted; a name whose code the config file
//! or the binary provides is refused with `409 plugin-from-config`, since a
//! restart would undo the change.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

use super::{Api, ApiError, Resp, json_response, query_pairs};
use crate::egress::HostRules;
use crate::plugins::{LoadedPlugin, PluginError};

/// The API error of a refused plugin change.
fn plugin_error(e: PluginError) -> ApiError {
    let (status, code) = match &e {
        PluginError::NotAComponent { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "not-a-component"),
        PluginError::WrongWorld { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "wrong-world"),
        PluginError::Describe { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "describe-failed"),
        PluginError::InvalidName(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-name"),
        PluginError::FromConfig { .. } => (StatusCode::CONFLICT, "plugin-from-config"),
        PluginError::InUse { .. } => (StatusCode::CONFLICT, "plugin-in-use"),
        PluginError::Unknown(_) => (StatusCode::NOT_FOUND, "unknown-plugin"),
        PluginError::Store(_) => {
            tracing::error!(error = %e, "store error");
            (StatusCode::SERVICE_UNAVAILABLE, "storage")
        }
    };
    ApiError::new(status, code, e.to_string())
}

/// The list view of a plugin.
fn plugin_view(p: &LoadedPlugin) -> Value {
    json!({
        "name": p.name,
        "hash": p.hash,
        "version": p.info.version,
        "description": p.info.description,
        "source": p.source.as_str(),
        "builtin": p.source == crate::plugins::Source::Builtin,
        "size": p.size,
    })
}

impl Api {
    /// `GET /v1/plugins`: the current version of every plugin.
    pub(super) fn plugins(&self) -> Resp {
        let items: Vec<Value> = self
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
    pub(super) fn plugin(&self, name: &str) -> Result<Resp, ApiError> {
        let registry = self.workflows.registry();
        let plugin = registry
            .current(name)
            .ok_or_else(|| ApiError::not_found(format!("no plugin {name:?}")))?;
        let mut view = plugin_view(&plugin);
        view["config_schema"] = plugin
            .info
            .config_schema
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let section = registry.config().plugins.get(name);
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

    /// `POST /v1/plugins?name=NAME` with the component's bytes: compiled,
    /// checked against the world and described before anything changes.
    pub(super) async fn upload(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let name = query_pairs(req.uri().query())
            .into_iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v)
            .ok_or_else(|| {
                ApiError::bad_request("give the plugin's name: POST /v1/plugins?name=NAME")
            })?;
        let registry = self.workflows.registry();
        // The body is read before the name is refused: answering while the
        // client still sends it would close the connection under the
        // client's feet, which then sees no answer at all.
        let body = self.body_up_to(req, self.max_plugin_bytes).await?;
        if let Some(refusal) = crate::plugins::refuse_fixed(registry.config(), &name, "replaced") {
            return Err(plugin_error(refusal));
        }
        let plugin = registry.upload(&name, &body).await.map_err(plugin_error)?;
        Ok(json_response(StatusCode::CREATED, &plugin_view(&plugin)))
    }

    /// `DELETE /v1/plugins/{name}`: an uploaded plugin nothing needs any
    /// more leaves the registry and the store.
    pub(super) async fn delete_plugin(&self, name: &str) -> Result<Resp, ApiError> {
        let removed = self
            .workflows
            .registry()
            .remove(name)
            .await
            .map_err(plugin_error)?;
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
}
