//! The records the daemon keeps durably: executions with their status log,
//! callback registrations and timers. They are plain data, serialised as
//! JSON by the store, so that every transition is one write of whole records.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod delivery;
mod failure;
mod idempotency;
mod token;

pub use delivery::{Delivery, DeliveryAttempt, DeliveryState, delivery_key};
pub use failure::Failure;
pub use idempotency::{IdempotentStart, StartKey};
pub use token::{Permission, TokenRecord};

/// Milliseconds since the Unix epoch: the one clock durable records use.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Bytes stored as base64 in JSON, so documents and plugin state of any
/// content survive the round trip.
mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// A document at rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    #[serde(with = "b64")]
    pub body: Vec<u8>,
}

impl Doc {
    /// A JSON document.
    pub fn json(value: &serde_json::Value) -> Self {
        Self {
            content_type: "application/json".into(),
            body: serde_json::to_vec(value).expect("a JSON value always serialises"),
        }
    }

    /// The document as a JSON value for API responses and templating: parsed
    /// JSON when it is JSON, a string when it is text, base64 otherwise.
    pub fn to_json_value(&self) -> serde_json::Value {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.body)
            && (self.content_type.contains("json") || self.body.is_empty())
        {
            return v;
        }
        match std::str::from_utf8(&self.body) {
            Ok(text) => serde_json::Value::String(text.to_owned()),
            Err(_) => {
                use base64::Engine as _;
                serde_json::json!({
                    "content_type": self.content_type,
                    "body_base64": base64::engine::general_purpose::STANDARD.encode(&self.body),
                })
            }
        }
    }
}

/// Where an execution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecState {
    /// A step is being run or resumed (or will be, after a restart).
    Running,
    /// Waiting for a callback or a timer.
    Suspended,
    /// Every step completed.
    Completed,
    /// A step failed; the remaining steps were skipped.
    Failed,
}

impl ExecState {
    /// Every state, in the order counts report them.
    pub const ALL: [ExecState; 4] = [
        Self::Running,
        Self::Suspended,
        Self::Completed,
        Self::Failed,
    ];

    /// Whether the execution has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    /// The name used in the API and the status log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Suspended => "suspended",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// One step of an execution's workflow, frozen when the execution starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Unique within the workflow.
    pub name: String,
    /// Plugin name.
    pub plugin: String,
    /// The step's configuration.
    pub config: serde_json::Value,
    /// Content hash of the plugin version the step runs on, fixed when the
    /// step starts so a resume never lands on a different version.
    pub plugin_hash: Option<String>,
}

/// The error of a failed execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecError {
    /// Machine-readable code, e.g. `callback-timeout`, `trap`.
    pub code: String,
    /// Human-readable text.
    pub text: String,
    /// The document status the step reported, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub document_status: Option<String>,
    /// The technical status the step reported, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub technical_status: Option<String>,
    /// The step that failed.
    pub step: String,
}

/// A received callback, as stored and as handed to `resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedCallback {
    /// Upper-case method.
    pub method: String,
    /// Lower-case header names with their values.
    pub headers: Vec<(String, String)>,
    /// The body.
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    /// When the daemon received it.
    pub received_ms: u64,
}

/// Why a suspended step is being resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ResumeWith {
    /// Its callback arrived.
    Callback {
        /// The correlation id.
        correlation_id: String,
        /// The request.
        callback: ReceivedCallback,
    },
    /// Its callback did not arrive in time.
    Timeout,
    /// Its retry timer fired.
    Timer,
}

/// What a suspended execution waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The callback's correlation id; `None` for a `retry-after` timer.
    pub correlation_id: Option<String>,
    /// The step's state bytes, handed back on resume.
    #[serde(with = "b64")]
    pub state: Vec<u8>,
    /// When the timeout or timer fires.
    pub due_ms: u64,
}

/// A resume that has been claimed but not yet finished: persisted with the
/// claim so a crash in between re-delivers it rather than losing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingResume {
    /// The event.
    pub event: ResumeWith,
    /// The step's state bytes.
    #[serde(with = "b64")]
    pub state: Vec<u8>,
    /// What the execution was waiting for, so a rejected callback can put
    /// it back exactly.
    pub waiting: Waiting,
}

/// One line of an execution's status log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEntry {
    /// When it happened.
    pub time_ms: u64,
    /// The step it concerns.
    pub step: String,
    /// The attempt of that step.
    pub attempt: u32,
    /// State before.
    pub from: ExecState,
    /// State after.
    pub to: ExecState,
    /// What happened, e.g. `started`, `suspended`, `callback`, `completed`.
    pub event: String,
    /// Error code, if the event is a failure or a rejection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_code: Option<String>,
    /// Error or rejection text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_text: Option<String>,
}

/// One document going through one workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// Unique id (uuid).
    pub id: String,
    /// Incremented by every write: the compare-and-swap token.
    pub version: u64,
    /// Workflow name (the plugin name for an ad-hoc execution).
    pub workflow: String,
    /// The steps.
    pub steps: Vec<StepSpec>,
    /// Where it stands.
    pub state: ExecState,
    /// Index of the current step.
    pub step_index: usize,
    /// Attempt of the current step, from 1.
    pub attempt: u32,
    /// Idempotency key of the current step's run.
    pub step_run_id: String,
    /// The input of the current step.
    pub document: Doc,
    /// Outputs of the steps completed so far, by step name.
    pub outputs: BTreeMap<String, serde_json::Value>,
    /// Set while suspended.
    pub waiting: Option<Waiting>,
    /// Set while running a resume.
    pub pending: Option<PendingResume>,
    /// Set when completed.
    pub output: Option<Doc>,
    /// Set when failed.
    pub error: Option<ExecError>,
    /// Every transition, oldest first.
    pub status_log: Vec<StatusEntry>,
    /// Creation time.
    pub created_ms: u64,
    /// Last write.
    pub updated_ms: u64,
    /// The daemon driving it while it is `running` (its node id); none
    /// otherwise. On a store several daemons share, another daemon takes
    /// a running execution over when its owner stops heartbeating.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner: Option<String>,
    /// The scoped `Idempotency-Key` it was started with, if any: its
    /// record goes when the execution does.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub idempotency_key: Option<String>,
}

impl Execution {
    /// A new execution's first record: version 1, running its first step
    /// (attempt 1) on `document`, nothing done yet.
    pub fn new(
        id: String,
        workflow: String,
        steps: Vec<StepSpec>,
        document: Doc,
        step_run_id: String,
        now_ms: u64,
    ) -> Self {
        Self {
            id,
            version: 1,
            workflow,
            steps,
            state: ExecState::Running,
            step_index: 0,
            attempt: 1,
            step_run_id,
            document,
            outputs: BTreeMap::new(),
            waiting: None,
            pending: None,
            output: None,
            error: None,
            status_log: Vec::new(),
            created_ms: now_ms,
            updated_ms: now_ms,
            owner: None,
            idempotency_key: None,
        }
    }

    /// The current step.
    pub fn step(&self) -> &StepSpec {
        &self.steps[self.step_index]
    }

    /// Appends a status-log line for a transition of the current step.
    pub fn log(&mut self, from: ExecState, event: &str, error: Option<(&str, &str)>) {
        self.log_at(now_ms(), from, event, error);
    }

    /// [`Execution::log`] at a given time (the state machine's decisions
    /// take the time as an input, so that a test can fix it).
    pub fn log_at(
        &mut self,
        time_ms: u64,
        from: ExecState,
        event: &str,
        error: Option<(&str, &str)>,
    ) {
        self.status_log.push(StatusEntry {
            time_ms,
            step: self.step().name.clone(),
            attempt: self.attempt,
            from,
            to: self.state,
            event: event.to_owned(),
            error_code: error.map(|(c, _)| c.to_owned()),
            error_text: error.map(|(_, t)| t.to_owned()),
        });
    }
}

/// Where a registered callback stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum CallbackState {
    /// Registered by a step that has not suspended on it (yet).
    Registered,
    /// The step suspended on it; the first valid callback resumes it.
    Waiting,
    /// Arrived before the step suspended; delivered when it does.
    Received {
        /// The stored request.
        callback: ReceivedCallback,
    },
    /// A callback was delivered to the step.
    Consumed,
    /// The suspension ended without it (timeout, cancel, failure).
    Expired,
}

/// A callback registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackRecord {
    /// The correlation id (uuid), also the key.
    pub correlation_id: String,
    /// Compare-and-swap token.
    pub version: u64,
    /// The execution it belongs to.
    pub execution_id: String,
    /// The step run that registered it.
    pub step_run_id: String,
    /// The attempt of that step run that registered it; a callback to a
    /// ticket of an attempt that is over is refused (`410`). Absent in
    /// records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// SHA-256 of the URL secret; the secret itself is never stored.
    pub secret_sha256: String,
    /// Whether an API token is required besides the URL secret.
    pub require_token: bool,
    /// Where it stands.
    pub state: CallbackState,
    /// Registration time.
    pub created_ms: u64,
}

/// What a timer does when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TimerKind {
    /// A suspension's callback timeout.
    CallbackTimeout,
    /// A `retry-after`.
    Retry,
    /// A result delivery's next attempt (or the lease of one in flight).
    Delivery {
        /// The delivery's sequence number (see [`Delivery::seq`]).
        seq: u64,
    },
}

/// A durable timer. Its key orders timers by due time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// When it fires.
    pub due_ms: u64,
    /// The execution it wakes.
    pub execution_id: String,
    /// What it does.
    pub kind: TimerKind,
}

impl Timer {
    /// Sortable key: big-endian due time, then the execution id (and, for
    /// a delivery, `/seq`, so it never collides with the execution's own).
    pub fn key(&self) -> Vec<u8> {
        let mut key = self.due_ms.to_be_bytes().to_vec();
        key.extend_from_slice(self.execution_id.as_bytes());
        if let TimerKind::Delivery { seq } = self.kind {
            key.extend_from_slice(format!("/{seq}").as_bytes());
        }
        key
    }
}

/// SHA-256 hex of component bytes: a plugin version's identity.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
