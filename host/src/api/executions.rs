//! `/v1/executions`: start, read, list, and the operator's retry, skip and
//! cancel.

use super::*;

impl Api {
    pub(super) async fn admin_action(&self, id: &str, action: &str) -> Result<Resp, ApiError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(ApiError::not_found(format!(
                "{id:?} is not an execution id"
            )));
        }
        let result = match action {
            "retry" => self.workflows.retry(id).await,
            "skip" => self.workflows.skip(id).await,
            _ => self.workflows.cancel(id).await,
        };
        let exec = result.map_err(|e| match e {
            AdminError::NotFound => ApiError::not_found(format!("no execution {id}")),
            AdminError::WrongState(state) => ApiError::new(
                StatusCode::CONFLICT,
                "wrong-state",
                format!("cannot {action} an execution that is {}", state.as_str()),
            ),
            AdminError::Busy => ApiError::new(StatusCode::CONFLICT, "busy", e.to_string()),
            AdminError::UnknownPlugin(_) => {
                ApiError::new(StatusCode::CONFLICT, "unknown-plugin", e.to_string())
            }
            AdminError::Store(e) => e.into(),
        })?;
        Ok(json_response(
            StatusCode::OK,
            &json!({"id": exec.id, "state": exec.state.as_str(), "step": exec.step().name}),
        ))
    }

    pub(super) async fn start(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let body = self.body(req).await?;
        let StartRequest {
            target,
            input,
            callback_url,
        } = parse_start(&body)?;
        if let Some(url) = &callback_url {
            crate::delivery::check_callback_address(url, &self.policy)
                .map_err(ApiError::bad_request)?;
        }
        // With a callback_url the result is POSTed there when it ends: 202.
        let status = match callback_url {
            Some(_) => StatusCode::ACCEPTED,
            None => StatusCode::CREATED,
        };
        let exec = self
            .workflows
            .start_with_delivery(target, Doc::json(&input), callback_url)
            .await
            .map_err(|e| match e {
                StartError::UnknownWorkflow(_) => {
                    ApiError::new(StatusCode::NOT_FOUND, "unknown-workflow", e.to_string())
                }
                StartError::UnknownPlugin(_) => {
                    ApiError::new(StatusCode::NOT_FOUND, "unknown-plugin", e.to_string())
                }
                StartError::Store(e) => e.into(),
            })?;
        Ok(json_response(
            status,
            &json!({"id": exec.id, "state": exec.state.as_str()}),
        ))
    }

    pub(super) async fn get(&self, id: &str) -> Result<Resp, ApiError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(ApiError::not_found(format!(
                "{id:?} is not an execution id"
            )));
        }
        let exec = self
            .workflows
            .store()
            .execution(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no execution {id}")))?;
        let mut view = execution_view(&exec);
        let deliveries = self.workflows.store().deliveries_of(id).await?;
        view["delivery"] = crate::delivery::view(&deliveries);
        Ok(json_response(StatusCode::OK, &view))
    }

    pub(super) async fn list(&self, filter: &ExecutionFilter) -> Result<Resp, ApiError> {
        let execs = self.workflows.store().executions(filter).await?;
        let items: Vec<Value> = execs
            .iter()
            .map(|e| {
                json!({"id": e.id, "workflow": e.workflow, "state": e.state.as_str(),
                       "step": e.step().name, "updated_ms": e.updated_ms})
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "executions": items }),
        ))
    }
}

/// The filter a `GET /v1/executions` query string asks for.
pub(super) fn list_filter(query: Option<&str>) -> Result<ExecutionFilter, ApiError> {
    let mut filter = ExecutionFilter {
        limit: Some(100),
        ..Default::default()
    };
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            "state" => {
                filter.state = Some(match value.as_str() {
                    "running" => ExecState::Running,
                    "suspended" => ExecState::Suspended,
                    "completed" => ExecState::Completed,
                    "failed" => ExecState::Failed,
                    other => {
                        return Err(ApiError::bad_request(format!("unknown state {other:?}")));
                    }
                })
            }
            "workflow" => filter.workflow = Some(value),
            "limit" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| ApiError::bad_request("limit must be a number"))?;
                filter.limit = Some(n.clamp(1, 10_000));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    Ok(filter)
}

/// What `POST /v1/executions` asks for.
#[derive(Debug)]
pub struct StartRequest {
    /// The workflow or plugin.
    pub target: Target,
    /// The input document (JSON).
    pub input: Value,
    /// Where to POST the result when the execution ends.
    pub callback_url: Option<String>,
}

/// Parses and checks the body of `POST /v1/executions`. Pure, so it can be
/// fuzzed: any bytes give a request or a 400, never a panic.
pub fn parse_start(body: &[u8]) -> Result<StartRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("body must be a JSON object"))?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "plugin" | "workflow" | "config" | "input" | "callback_url"
        ) {
            return Err(ApiError::bad_request(format!("unknown field {key:?}")));
        }
    }
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!("{key:?} must be a string"))),
        }
    };
    let config = obj.get("config").cloned().unwrap_or(Value::Null);
    if !(config.is_null() || config.is_object()) {
        return Err(ApiError::bad_request("\"config\" must be an object"));
    }
    let target = match (text("plugin")?, text("workflow")?) {
        (Some(name), None) => Target::Plugin { name, config },
        (None, Some(name)) => {
            if !config.is_null() {
                return Err(ApiError::bad_request(
                    "\"config\" goes with \"plugin\"; a workflow's steps carry their own",
                ));
            }
            Target::Workflow(name)
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of \"plugin\" or \"workflow\"",
            ));
        }
    };
    let input = obj.get("input").cloned().unwrap_or(Value::Null);
    let callback_url = text("callback_url")?;
    if let Some(url) = &callback_url {
        crate::delivery::validate_callback_url(url).map_err(ApiError::bad_request)?;
    }
    Ok(StartRequest {
        target,
        input,
        callback_url,
    })
}
