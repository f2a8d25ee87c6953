//! Conversions between the records and the WIT types a plugin sees.

use super::*;

pub(super) fn step_context(exec: &Execution) -> bindings::StepContext {
    let step = exec.step();
    let metadata = serde_json::json!({
        "workflow": exec.workflow,
        "execution_id": exec.id,
        "step": step.name,
        "attempt": exec.attempt,
        "step_run_id": exec.step_run_id,
        "steps": exec.outputs,
    });
    bindings::StepContext {
        execution_id: exec.id.clone(),
        workflow: exec.workflow.clone(),
        step: step.name.clone(),
        attempt: exec.attempt,
        step_run_id: exec.step_run_id.clone(),
        config: if step.config.is_null() {
            String::new()
        } else {
            step.config.to_string()
        },
        metadata: metadata.to_string(),
    }
}

pub(super) fn to_wit_doc(doc: &Doc) -> bindings::Document {
    bindings::Document {
        content_type: doc.content_type.clone(),
        body: doc.body.clone(),
    }
}

pub(super) fn to_wit_event(event: &ResumeWith) -> bindings::ResumeEvent {
    match event {
        ResumeWith::Callback {
            correlation_id,
            callback,
        } => bindings::ResumeEvent::Callback(bindings::Callback {
            correlation_id: correlation_id.clone(),
            method: callback.method.clone(),
            headers: callback.headers.clone(),
            body: callback.body.clone(),
        }),
        ResumeWith::Timeout => bindings::ResumeEvent::Timeout,
        ResumeWith::Timer => bindings::ResumeEvent::Timer,
    }
}
