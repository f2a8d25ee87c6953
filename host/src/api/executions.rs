//! `/v1/executions`: start, read, list, and the operator's retry, skip and
//! cancel. The request parsing is pure ([`parse_start`], [`list_filter`])
//! so that it can be fuzzed apart from the handlers.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::auth::{Admitted, admitted_body};
use super::error::AdminRefusal;
use super::{ApiCode, ApiError, Param, Shared, json_response, query_pairs};
use crate::model::{Doc, ExecState, Execution, IdempotentStart, StartKey};
use crate::store::ExecutionFilter;
use crate::workflow::{AdminError, StartError, Target};

/// `POST /v1/executions`: durable before the answer; `202` when the result
/// is to be POSTed to a `callback_url`, else `201`. With an
/// `Idempotency-Key`, a request the daemon already took is answered as it
/// was the first time, and starts nothing.
pub(super) async fn start(
    State(api): State<Shared>,
    admitted: Option<Extension<Admitted>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let admitted = admitted.map(|Extension(a)| a);
    let key = idempotency_key(&headers)?;
    let body = admitted_body(&api, admitted.as_ref(), body, api.max_body).await?;
    let StartRequest {
        target,
        input,
        callback_url,
    } = parse_start(&body)?;
    if let Some(url) = &callback_url {
        crate::delivery::check_callback_address(url, &api.policy).map_err(ApiError::bad_request)?;
    }
    let status = match callback_url {
        Some(_) => StatusCode::ACCEPTED,
        None => StatusCode::CREATED,
    };
    let key = key.map(|key| StartKey {
        key: IdempotentStart::scoped(admitted.as_ref().map(Admitted::token_id), &key),
        request_sha256: hex::encode(sha2::Sha256::digest(&body)),
        status: status.as_u16(),
    });
    if let Some(key) = &key {
        let store = api.workflows.store();
        if let Some(first) = store.idempotent_start(&key.key).await? {
            // Stored, but perhaps not yet flushed by the request that
            // wrote it: answered only once durable, as that one is.
            store.flush().await?;
            return replay(&first, key);
        }
    }
    let started = api
        .workflows
        .start_with_delivery(target, Doc::json(&input), callback_url, key.clone())
        .await;
    let exec = match (started, &key) {
        (Ok(exec), _) => exec,
        (Err(StartError::AlreadyStarted(first)), Some(key)) => return replay(&first, key),
        (Err(e), _) => return Err(e.into()),
    };
    Ok(json_response(
        status,
        &json!({"id": exec.id, "state": exec.state.as_str()}),
    ))
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII
/// characters, so that it can be logged and stored as it is.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good one)",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The answer to a request whose key already started an execution: the
/// first answer again, or `422` when this request's body is another one.
fn replay(first: &IdempotentStart, key: &StartKey) -> Result<Response, ApiError> {
    if first.request_sha256 != key.request_sha256 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiCode::IdempotencyKeyReused,
            format!(
                "this Idempotency-Key started execution {} with another request body; use a new key for a new request",
                first.execution_id
            ),
        ));
    }
    let status = StatusCode::from_u16(first.status).unwrap_or(StatusCode::CREATED);
    let mut response = json_response(
        status,
        &json!({"id": first.execution_id, "state": first.state}),
    );
    response.headers_mut().insert(
        "idempotent-replayed",
        axum::http::HeaderValue::from_static("true"),
    );
    Ok(response)
}

/// `GET /v1/executions/{id}`: the execution, its current wait, its result
/// delivery, the plugin version of each step and its callbacks.
pub(super) async fn show(
    State(api): State<Shared>,
    Param(id): Param,
) -> Result<Response, ApiError> {
    let id = execution_id(id)?;
    let store = api.workflows.store();
    let exec = store
        .execution(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no execution {id}")))?;
    let mut view = execution_view(&exec);
    view["wait"] = wait_view(&exec, &api.public_url);
    view["delivery"] = crate::delivery::view(&store.deliveries_of(&id).await?);
    view["steps"] = super::detail::steps_view(&exec);
    let mut callbacks = Vec::new();
    for cid in store.callbacks_of(&id).await? {
        callbacks.extend(store.callback(&cid).await?);
    }
    view["callbacks"] = super::detail::callbacks_view(callbacks);
    Ok(json_response(StatusCode::OK, &view))
}

/// `GET /v1/executions/counts[?workflow=NAME][&by=workflow]`: how many
/// executions are in each state (of one workflow, if named), and with
/// `by=workflow` the same for every workflow, from counters the store
/// keeps with every write (never a scan).
pub(super) async fn counts(
    State(api): State<Shared>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (mut workflow, mut by_workflow) = (None, false);
    for (key, value) in query_pairs(query.as_deref()) {
        match key.as_str() {
            "workflow" => workflow = Some(value),
            "by" if value == "workflow" => by_workflow = true,
            "by" => {
                return Err(ApiError::bad_request(format!(
                    "unknown by={value:?}: counts can be broken down by=workflow"
                )));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: counts take workflow and by=workflow"
                )));
            }
        }
    }
    let store = api.workflows.store();
    let states = |counts: &mut dyn Iterator<Item = (ExecState, u64)>| {
        let mut by_state: serde_json::Map<String, Value> = ExecState::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), json!(0)))
            .collect();
        let mut total = 0;
        for (state, n) in counts {
            by_state[state.as_str()] = json!(n);
            total += n;
        }
        (by_state, total)
    };
    let per_workflow = if by_workflow || workflow.is_some() {
        store
            .count_executions_by_workflow(workflow.as_deref())
            .await?
    } else {
        Vec::new()
    };
    let (by_state, total) = match &workflow {
        Some(_) => states(&mut per_workflow.iter().map(|(_, s, n)| (*s, *n))),
        None => states(&mut store.count_executions_by_state().await?.into_iter()),
    };
    let mut answer = json!({"by_state": by_state, "total": total});
    if let Some(w) = &workflow {
        answer["workflow"] = json!(w);
    }
    if by_workflow {
        let mut workflows: BTreeMap<&str, Vec<(ExecState, u64)>> = BTreeMap::new();
        for (w, s, n) in &per_workflow {
            workflows.entry(w).or_default().push((*s, *n));
        }
        let view: serde_json::Map<String, Value> = workflows
            .into_iter()
            .map(|(w, counts)| {
                let (by_state, total) = states(&mut counts.into_iter());
                (w.to_owned(), json!({"by_state": by_state, "total": total}))
            })
            .collect();
        answer["by_workflow"] = Value::Object(view);
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// `GET /v1/executions?state=&workflow=&plugin=&created_after=&created_before=&limit=&cursor=`.
/// Each item names its
/// current step's plugin, so that a client can tell which executions wait
/// on which plugin without reading each one.
pub(super) async fn list(
    State(api): State<Shared>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let filter = list_filter(query.as_deref())?;
    let execs = api.workflows.store().executions(&filter).await?;
    // A full page may have more behind it; the cursor is where it ended.
    let next_cursor = match execs.last() {
        Some(last) if Some(execs.len()) == filter.limit => Some(last.id.clone()),
        _ => None,
    };
    let items: Vec<Value> = execs
        .iter()
        .map(|e| {
            json!({"id": e.id, "workflow": e.workflow, "state": e.state.as_str(),
                   "step": e.step().name, "plugin": e.step().plugin,
                   "updated_ms": e.updated_ms})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "executions": items, "next_cursor": next_cursor }),
    ))
}

/// `POST /v1/executions/{id}/retry`: the failed step's next attempt.
pub(super) async fn retry(
    State(api): State<Shared>,
    Param(id): Param,
) -> Result<Response, ApiError> {
    let id = execution_id(id)?;
    acted(api.workflows.retry(&id).await, "retry", id)
}

/// `POST /v1/executions/{id}/skip`: the failed step's input goes on.
pub(super) async fn skip(
    State(api): State<Shared>,
    Param(id): Param,
) -> Result<Response, ApiError> {
    let id = execution_id(id)?;
    acted(api.workflows.skip(&id).await, "skip", id)
}

/// `POST /v1/executions/{id}/cancel`: fails a running or suspended one.
pub(super) async fn cancel(
    State(api): State<Shared>,
    Param(id): Param,
) -> Result<Response, ApiError> {
    let id = execution_id(id)?;
    acted(api.workflows.cancel(&id).await, "cancel", id)
}

/// `DELETE /v1/executions/{id}`: an ended execution, with its callbacks
/// and deliveries, at once.
pub(super) async fn remove(
    State(api): State<Shared>,
    Param(id): Param,
) -> Result<Response, ApiError> {
    let id = execution_id(id)?;
    match api.workflows.remove(&id).await {
        Ok(()) => Ok(json_response(
            StatusCode::OK,
            &json!({"id": id, "deleted": true}),
        )),
        Err(error) => Err(AdminRefusal {
            action: "delete",
            id,
            error,
        }
        .into()),
    }
}

/// The answer to an operator's action.
fn acted(
    result: Result<Execution, AdminError>,
    action: &'static str,
    id: String,
) -> Result<Response, ApiError> {
    let exec = result.map_err(|error| AdminRefusal { action, id, error })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": exec.id, "state": exec.state.as_str(), "step": exec.step().name}),
    ))
}

/// Execution ids are UUIDs: anything else names no execution.
fn execution_id(id: String) -> Result<String, ApiError> {
    match uuid::Uuid::parse_str(&id) {
        Ok(_) => Ok(id),
        Err(_) => Err(ApiError::not_found(format!(
            "{id:?} is not an execution id"
        ))),
    }
}

/// What a suspended execution waits for, for an operator who has to find
/// out what the partner is expected to call: the callback's correlation
/// id and URL (without its secret, which only the partner has), or the
/// retry timer; when the wait ends; the step attempt it belongs to.
/// `null` when it waits for nothing.
pub fn wait_view(exec: &Execution, public_url: &str) -> Value {
    let Some(waiting) = exec
        .waiting
        .as_ref()
        .filter(|_| exec.state == ExecState::Suspended)
    else {
        return Value::Null;
    };
    let (kind, correlation_id, callback_url) = match &waiting.correlation_id {
        Some(cid) => (
            "callback",
            Some(cid.clone()),
            Some(format!("{public_url}/v1/callbacks/{cid}")),
        ),
        None => ("retry", None, None),
    };
    json!({
        "for": kind,
        "correlation_id": correlation_id,
        "callback_url": callback_url,
        "until_ms": waiting.due_ms,
        "step": exec.step().name,
        "step_run_id": exec.step_run_id,
        "attempt": exec.attempt,
    })
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
        "node": exec.owner,
    })
}

/// The filter a `GET /v1/executions` query string asks for.
fn list_filter(query: Option<&str>) -> Result<ExecutionFilter, ApiError> {
    let mut filter = ExecutionFilter {
        limit: Some(100),
        newest_first: true,
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
            "plugin" => filter.plugin = Some(value),
            "created_after" => filter.created_after_ms = Some(parse_time(&key, &value)?),
            "created_before" => filter.created_before_ms = Some(parse_time(&key, &value)?),
            "limit" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| ApiError::bad_request("limit must be a number"))?;
                filter.limit = Some(n.clamp(1, 10_000));
            }
            "order" => {
                filter.newest_first = match value.as_str() {
                    "newest" => true,
                    "oldest" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unknown order {other:?}; use newest or oldest"
                        )));
                    }
                }
            }
            "cursor" => {
                if uuid::Uuid::parse_str(&value).is_err() {
                    return Err(ApiError::bad_request(
                        "cursor must be a next_cursor a previous page gave",
                    ));
                }
                filter.past = Some(value);
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

/// A time a filter names: milliseconds since the Unix epoch, or an
/// RFC 3339 time in UTC (`2026-11-29T20:00:00Z`, a fraction allowed).
pub(super) fn parse_time(name: &str, value: &str) -> Result<u64, ApiError> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{name} is out of range")));
    }
    let time = humantime::parse_rfc3339_weak(value).map_err(|e| {
        ApiError::bad_request(format!(
            "{name} must be milliseconds since the Unix epoch or a UTC time such as 2026-11-29T20:00:00Z: {e}"
        ))
    })?;
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::bad_request(format!("{name} is before 1970")))?;
    Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
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
                prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
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
                Err(e) => prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST),
            }
        }
    }

    #[test]
    fn a_well_formed_request_parses() {
        let r = parse_start(br#"{"plugin": "echo", "config": {"a": 1}, "input": [1]}"#).unwrap();
        assert!(matches!(r.target, Target::Plugin { ref name, .. } if name == "echo"));
        assert_eq!(r.input, serde_json::json!([1]));
    }
}
