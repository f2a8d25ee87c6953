//! Result-delivery records: the wish a client expressed when it started an
//! execution (`armed`), and the delivery of its end with the body the
//! client receives.

use serde::{Deserialize, Serialize};

use super::{Doc, ExecState, Execution, Timer, TimerKind};

/// Where a result delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// The client asked for the result; the execution has not ended yet.
    Armed,
    /// The result waits for its next attempt (or one is in flight).
    Pending,
    /// The client accepted it with a 2xx.
    Delivered,
    /// Every attempt failed; the daemon gave up.
    Failed,
}

/// One attempt to deliver a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// When it was sent.
    pub time_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// The client's HTTP status, if it answered.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    /// Why it failed; absent for a success.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// The result of an execution on its way to the client that started it
/// with a `callback_url`. Kept in the store, so pending deliveries survive
/// restarts; keyed by [`Delivery::key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The execution.
    pub execution_id: String,
    /// 0 for the record written when the execution starts (state `armed`);
    /// otherwise the execution's version when it ended, so an execution
    /// that ends again after an admin retry gets a delivery of its own.
    pub seq: u64,
    /// Compare-and-swap token.
    pub version: u64,
    /// Where the result goes.
    pub url: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// The `webhook-id` header: the same on every attempt, so the client
    /// can recognise a repeat.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub webhook_id: Option<String>,
    /// The JSON body sent.
    #[serde(default)]
    pub body: String,
    /// Every attempt so far, oldest first.
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
    /// When the pending delivery's timer is due.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub due_ms: Option<u64>,
    /// Creation time.
    pub created_ms: u64,
    /// Last write.
    pub updated_ms: u64,
}

impl Delivery {
    /// The record written with a new execution whose client wants its
    /// result at `url`: the wish, armed; the execution's end turns it into
    /// a delivery to send.
    pub fn armed(execution_id: &str, url: &str, now_ms: u64) -> Self {
        Self {
            execution_id: execution_id.to_owned(),
            seq: 0,
            version: 1,
            url: url.to_owned(),
            state: DeliveryState::Armed,
            webhook_id: None,
            body: String::new(),
            attempts: Vec::new(),
            due_ms: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// The delivery of an execution's end, queued in the very change that
    /// ends it (`seq` is the ending write's version, so a retried and
    /// again ended execution gets a delivery of its own), due now, to the
    /// `url` its armed record names.
    pub fn of_end(exec: &Execution, url: &str, webhook_id: String, now_ms: u64) -> Self {
        Self {
            execution_id: exec.id.clone(),
            seq: exec.version,
            version: 1,
            url: url.to_owned(),
            state: DeliveryState::Pending,
            webhook_id: Some(webhook_id),
            body: result_body(exec),
            attempts: Vec::new(),
            due_ms: Some(now_ms),
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// The timer of its next attempt.
    pub fn timer(&self) -> Option<Timer> {
        Some(Timer {
            due_ms: self.due_ms?,
            execution_id: self.execution_id.clone(),
            kind: TimerKind::Delivery { seq: self.seq },
        })
    }

    /// Its store key.
    pub fn key(&self) -> String {
        delivery_key(&self.execution_id, self.seq)
    }
}

/// The store key of an execution's delivery `seq`: sorts by execution,
/// then by sequence.
pub fn delivery_key(execution_id: &str, seq: u64) -> String {
    format!("{execution_id}/{seq:020}")
}

/// The body POSTed to the client: `{"id", "state", "output"}` or
/// `{"id", "state", "error"}`.
pub fn result_body(exec: &Execution) -> String {
    let mut body = serde_json::json!({
        "id": exec.id,
        "state": exec.state.as_str(),
    });
    match exec.state {
        ExecState::Completed => {
            body["output"] = exec
                .output
                .as_ref()
                .map(Doc::to_json_value)
                .unwrap_or(serde_json::Value::Null);
        }
        _ => {
            body["error"] = serde_json::to_value(&exec.error).unwrap_or(serde_json::Value::Null);
        }
    }
    body.to_string()
}
