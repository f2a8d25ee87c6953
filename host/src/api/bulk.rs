//! Operator actions on every execution a filter selects:
//! `POST /v1/executions/cancel` and `/retry`. Each execution goes through
//! the same compare-and-swap transition as the one-execution endpoints, so
//! a bulk action races nothing a single one would not; the answer counts
//! what changed and what was skipped, and why. A dry run says the same
//! without changing anything.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::auth::{Admitted, admitted_body};
use super::{ApiError, Shared, json_response};
use crate::model::ExecState;
use crate::store::ExecutionFilter;
use crate::workflow::AdminError;

/// Executions read per page while a bulk action walks its filter.
const PAGE: usize = 500;
/// Skipped executions named in the answer (all are counted).
const SKIPPED_SHOWN: usize = 100;

/// What a bulk action asks for.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkRequest {
    state: Option<ExecState>,
    workflow: Option<String>,
    plugin: Option<String>,
    /// Milliseconds since the epoch, or an RFC 3339 time in UTC.
    created_after: Option<Value>,
    created_before: Option<Value>,
    #[serde(default)]
    dry_run: bool,
}

impl BulkRequest {
    fn filter(&self) -> Result<ExecutionFilter, ApiError> {
        let time = |name: &str, value: &Option<Value>| match value {
            None => Ok(None),
            Some(Value::Number(n)) => super::executions::parse_time(name, &n.to_string()).map(Some),
            Some(Value::String(s)) => super::executions::parse_time(name, s).map(Some),
            Some(_) => Err(ApiError::bad_request(format!(
                "{name} must be milliseconds since the Unix epoch or an RFC 3339 time"
            ))),
        };
        let filter = ExecutionFilter {
            state: self.state,
            workflow: self.workflow.clone(),
            plugin: self.plugin.clone(),
            created_after_ms: time("created_after", &self.created_after)?,
            created_before_ms: time("created_before", &self.created_before)?,
            limit: Some(PAGE),
            ..Default::default()
        };
        if filter.state.is_none()
            && filter.workflow.is_none()
            && filter.plugin.is_none()
            && filter.created_after_ms.is_none()
            && filter.created_before_ms.is_none()
        {
            return Err(ApiError::bad_request(
                "give a filter (state, workflow, plugin, created_after, created_before): an empty one would act on every execution",
            ));
        }
        Ok(filter)
    }
}

#[derive(Clone, Copy)]
enum Action {
    Cancel,
    Retry,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Retry => "retry",
        }
    }

    /// Whether the action applies to an execution in `state` (what the
    /// transition itself would decide; a dry run reports it).
    fn applies_to(self, state: ExecState) -> bool {
        match self {
            Self::Cancel => !state.is_terminal(),
            Self::Retry => state == ExecState::Failed,
        }
    }
}

/// `POST /v1/executions/cancel`.
pub(super) async fn cancel(
    State(api): State<Shared>,
    admitted: Option<Extension<Admitted>>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    bulk(api, admitted.map(|Extension(a)| a), body, Action::Cancel).await
}

/// `POST /v1/executions/retry`.
pub(super) async fn retry(
    State(api): State<Shared>,
    admitted: Option<Extension<Admitted>>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    bulk(api, admitted.map(|Extension(a)| a), body, Action::Retry).await
}

async fn bulk(
    api: Shared,
    admitted: Option<Admitted>,
    body: axum::body::Body,
    action: Action,
) -> Result<Response, ApiError> {
    let body = admitted_body(&api, admitted.as_ref(), body, api.max_body).await?;
    let request: BulkRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"state\", \"workflow\", \"plugin\", \"created_after\", \"created_before\", \"dry_run\"}}: {e}"
        ))
    })?;
    let mut filter = request.filter()?;
    let (mut matched, mut changed) = (0u64, 0u64);
    let mut skipped_by: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut skipped = Vec::new();
    let store = api.workflows.store();
    loop {
        let page = store.executions(&filter).await?;
        for exec in &page {
            matched += 1;
            let outcome = if request.dry_run {
                if action.applies_to(exec.state) {
                    Ok(())
                } else {
                    Err(AdminError::WrongState(exec.state))
                }
            } else {
                let done = match action {
                    Action::Cancel => api.workflows.cancel(&exec.id).await,
                    Action::Retry => api.workflows.retry(&exec.id).await,
                };
                done.map(drop)
            };
            match outcome {
                Ok(()) => changed += 1,
                Err(AdminError::Store(e)) => return Err(e.into()),
                Err(e) => {
                    let code = match &e {
                        AdminError::NotFound => "not-found",
                        AdminError::WrongState(_) => "wrong-state",
                        AdminError::Busy => "busy",
                        AdminError::UnknownPlugin(_) => "unknown-plugin",
                        AdminError::Store(_) => unreachable!("returned above"),
                    };
                    *skipped_by.entry(code).or_default() += 1;
                    if skipped.len() < SKIPPED_SHOWN {
                        skipped
                            .push(json!({"id": exec.id, "code": code, "message": e.to_string()}));
                    }
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE => filter.past = Some(last.id.clone()),
            _ => break,
        }
    }
    if !request.dry_run {
        tracing::info!(action = action.name(), matched, changed, "bulk action");
    }
    let skipped_count: u64 = skipped_by.values().sum();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "action": action.name(),
            "dry_run": request.dry_run,
            "matched": matched,
            "changed": changed,
            "skipped": skipped_count,
            "skipped_by_code": skipped_by,
            "skipped_executions": Value::from(skipped),
        }),
    ))
}
