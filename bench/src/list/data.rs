//! The executions `stephost-bench list` stores: a mix an operator's store
//! would hold after a month, derived from each execution's number alone
//! (so that a run can be repeated, topped up, and its filters named):
//!
//! - 20 workflows of 2 steps each, the first on one of six plugins, the
//!   second on `wait-for-callback` or `approval`; 19 share the executions
//!   evenly, and `rare` has 0.1 % of them;
//! - 90.3 % completed, 6 % failed (half on each step), 3.5 % suspended
//!   (four fifths waiting for a callback on the second step, with its
//!   callback record and timeout timer; one fifth on a `retry-after`
//!   timer on the first), 0.2 % running on the first step;
//! - created over 30 days, execution `i` of `n` at `i / n` of the way,
//!   its id a UUIDv7 made at that time and its `created_ms` that time, as
//!   the daemon makes them (so a creation-time window is an id range).

use stephost::model::{
    CallbackRecord, CallbackState, Doc, ExecError, ExecState, Execution, StepSpec, Timer,
    TimerKind, Waiting,
};
use stephost::store::Change;

/// How far back the first execution was created.
pub const DAYS: u64 = 30;
pub const DAY_MS: u64 = 24 * 3600 * 1000;

/// Plugins of the first steps, and of the second (the waiting) steps.
const FIRST: [&str; 6] = ["http-post", "sign", "ocr", "archive", "mail", "edi"];
const SECOND: [&str; 2] = ["wait-for-callback", "approval"];

/// Workflows: `wf-00` … `wf-18`, and [`RARE`].
pub const WORKFLOWS: usize = 20;
/// The workflow with 0.1 % of the executions.
pub const RARE: &str = "rare";

pub fn workflow(w: usize) -> String {
    if w == WORKFLOWS - 1 {
        RARE.into()
    } else {
        format!("wf-{w:02}")
    }
}

/// The plugins of workflow `w`'s two steps.
pub fn plugins(w: usize) -> [&'static str; 2] {
    [FIRST[w % FIRST.len()], SECOND[w % SECOND.len()]]
}

/// SplitMix64: a well-spread hash of the execution's number.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which workflow execution `i` belongs to, its state and its step.
fn shape(i: u64) -> (usize, ExecState, usize) {
    let h = mix(i);
    let w = if h.is_multiple_of(1000) {
        WORKFLOWS - 1
    } else {
        ((h >> 10) % (WORKFLOWS as u64 - 1)) as usize
    };
    let r = (h >> 20) % 1000;
    let (state, step) = match r {
        0..2 => (ExecState::Running, 0),
        2..37 => (ExecState::Suspended, usize::from(!r.is_multiple_of(5))),
        37..97 => (ExecState::Failed, (r % 2) as usize),
        _ => (ExecState::Completed, 1),
    };
    (w, state, step)
}

/// A UUIDv7 made at `ms`, as the daemon makes execution ids.
fn id_at(ms: u64) -> String {
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000);
    uuid::Uuid::new_v7(ts).to_string()
}

/// What execution `i` of `n` writes, the first created at `first_ms`:
/// the execution, and a suspended one's callback record and timer (what
/// the daemon writes when it suspends). Timers are due at `due_ms`.
pub fn change(i: u64, n: u64, first_ms: u64, due_ms: u64) -> Change {
    let (w, state, step) = shape(i);
    let created = first_ms + i * (DAYS * DAY_MS) / n.max(1);
    let steps = plugins(w)
        .iter()
        .map(|p| StepSpec {
            name: (*p).to_owned(),
            plugin: (*p).to_owned(),
            config: serde_json::json!({"url": format!("https://partner-{w}.example/{p}")}),
            plugin_hash: Some(format!("{:064x}", mix(w as u64))),
        })
        .collect();
    let input = serde_json::json!({"order": i, "customer": format!("c-{:05}", i % 20_011),
                                   "amount_cents": mix(i) % 1_000_000});
    let mut e = Execution::new(
        id_at(created),
        workflow(w),
        steps,
        Doc::json(&input),
        uuid::Uuid::new_v4().to_string(),
        created,
    );
    e.log_at(created, ExecState::Running, "started", None);
    let mut change = Change::default();
    let mut at = created;
    if step == 1 {
        at += 150;
        let first = e.steps[0].name.clone();
        e.outputs
            .insert(first, serde_json::json!({"status": 200, "ref": i}));
        e.step_index = 1;
        e.step_run_id = uuid::Uuid::new_v4().to_string();
        e.log_at(at, ExecState::Running, "step completed", None);
    }
    match state {
        ExecState::Running => {}
        ExecState::Suspended => {
            e.state = ExecState::Suspended;
            let correlation_id = (step == 1).then(|| uuid::Uuid::new_v4().to_string());
            e.waiting = Some(Waiting {
                correlation_id: correlation_id.clone(),
                state: Vec::new(),
                due_ms,
            });
            let event = if step == 1 {
                "suspended"
            } else {
                "retry-after"
            };
            e.log_at(at, ExecState::Running, event, None);
            change.add_timers.push(Timer {
                due_ms,
                execution_id: e.id.clone(),
                kind: if step == 1 {
                    TimerKind::CallbackTimeout
                } else {
                    TimerKind::Retry
                },
            });
            if let Some(correlation_id) = correlation_id {
                change.callbacks.push(CallbackRecord {
                    correlation_id,
                    version: 1,
                    execution_id: e.id.clone(),
                    step_run_id: e.step_run_id.clone(),
                    attempt: Some(e.attempt),
                    // The SHA-256 of a secret nobody sends.
                    secret_sha256: "f".repeat(64),
                    require_token: false,
                    state: CallbackState::Waiting,
                    created_ms: at,
                });
            }
        }
        ExecState::Completed => {
            e.state = ExecState::Suspended;
            e.log_at(at, ExecState::Running, "suspended", None);
            at += 40_000 + mix(i) % 600_000;
            e.state = ExecState::Completed;
            let last = e.steps[1].name.clone();
            e.outputs
                .insert(last, serde_json::json!({"decision": "accepted"}));
            e.output = Some(Doc::json(
                &serde_json::json!({"accepted": true, "order": i}),
            ));
            e.log_at(at, ExecState::Suspended, "completed", None);
        }
        ExecState::Failed => {
            at += 2_000;
            e.state = ExecState::Failed;
            let name = e.step().name.clone();
            e.error = Some(ExecError {
                code: "step-failed".into(),
                text: "the partner answered 422: document rejected".into(),
                document_status: Some("rejected".into()),
                technical_status: None,
                step: name,
            });
            let error = Some(("step-failed", "the partner answered 422"));
            e.log_at(at, ExecState::Running, "failed", error);
        }
    }
    e.updated_ms = at;
    change.execution = Some(e);
    change
}
