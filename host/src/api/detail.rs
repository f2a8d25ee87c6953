//! What `GET /v1/executions/{id}` adds to an execution for an operator
//! who has to act on it: the plugin version each step runs on, and the
//! callbacks registered for it, with a callback that arrived early shown
//! as received (credentials masked, body capped), since nothing else
//! shows what a partner sent before the step waited for it.

use serde_json::{Value, json};

use crate::model::{CallbackRecord, CallbackState, Execution, ReceivedCallback};

/// How much of a received callback's body is shown.
pub const BODY_SHOWN: usize = 4096;

/// Each step: its name, plugin and the version (content hash) it runs or
/// ran on; `null` for a step not started yet.
pub fn steps_view(exec: &Execution) -> Value {
    exec.steps
        .iter()
        .map(|s| json!({"name": s.name, "plugin": s.plugin, "plugin_hash": s.plugin_hash}))
        .collect()
}

/// The callbacks registered for the execution, oldest first.
pub fn callbacks_view(mut records: Vec<CallbackRecord>) -> Value {
    records
        .sort_by(|a, b| (a.created_ms, &a.correlation_id).cmp(&(b.created_ms, &b.correlation_id)));
    records
        .iter()
        .map(|r| {
            let (state, received) = match &r.state {
                CallbackState::Registered => ("registered", Value::Null),
                CallbackState::Waiting => ("waiting", Value::Null),
                CallbackState::Received { callback } => ("received", received_view(callback)),
                CallbackState::Consumed => ("delivered", Value::Null),
                CallbackState::Expired => ("expired", Value::Null),
            };
            json!({
                "correlation_id": r.correlation_id,
                "state": state,
                "step_run_id": r.step_run_id,
                "attempt": r.attempt,
                "require_token": r.require_token,
                "created_ms": r.created_ms,
                "received": received,
            })
        })
        .collect()
}

/// Header names whose values are credentials: shown as `***`.
fn is_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || [
        "token",
        "secret",
        "signature",
        "api-key",
        "apikey",
        "password",
    ]
    .iter()
    .any(|word| name.contains(word))
}

fn received_view(callback: &ReceivedCallback) -> Value {
    let headers: Vec<Value> = callback
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = if is_credential(name) {
                "***"
            } else {
                value.as_str()
            };
            json!([name, shown])
        })
        .collect();
    let shown = &callback.body[..callback.body.len().min(BODY_SHOWN)];
    json!({
        "method": callback.method,
        "headers": headers,
        "body": String::from_utf8_lossy(shown),
        "body_bytes": callback.body.len(),
        "body_truncated": callback.body.len() > BODY_SHOWN,
        "received_ms": callback.received_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_and_long_bodies_cut() {
        let callback = ReceivedCallback {
            method: "POST".into(),
            headers: vec![
                ("authorization".into(), "Bearer sht_x".into()),
                ("x-link-status".into(), "Ok".into()),
                ("x-hub-signature-256".into(), "sha256=ab".into()),
                ("x-api-key".into(), "k".into()),
            ],
            body: vec![b'a'; BODY_SHOWN + 10],
            received_ms: 5,
        };
        let view = received_view(&callback);
        assert_eq!(
            view["headers"],
            json!([
                ["authorization", "***"],
                ["x-link-status", "Ok"],
                ["x-hub-signature-256", "***"],
                ["x-api-key", "***"]
            ])
        );
        assert_eq!(view["body"].as_str().unwrap().len(), BODY_SHOWN);
        assert_eq!(view["body_bytes"], BODY_SHOWN + 10);
        assert_eq!(view["body_truncated"], true);
    }
}
