//! Every event of the state machine as a unit test of [`decide`]: records
//! in the in-memory store, the reads the driver would make, the decision,
//! and its change applied back — no network, no Wasm, a fixed clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::bindings::{self, Outcome};
use crate::model::{CallbackState, ResumeWith, Waiting};
use crate::store::{
    CallbackStore as _, DeliveryStore as _, ExecutionStore as _, MemoryStore, TimerStore as _,
};
use crate::wasm::executor::{Invocation, StepError};

const NOW: u64 = 1_000_000;

/// The store, the clock, the loaded plugins and an id counter.
struct World {
    store: MemoryStore,
    limits: Limits,
    now: u64,
    plugins: BTreeMap<String, String>,
    ids: AtomicU32,
}

impl World {
    fn new() -> Self {
        Self {
            store: MemoryStore::new(),
            limits: Limits {
                max_state_bytes: 64,
                max_output_bytes: 128,
                default_callback_timeout_ms: 60_000,
                max_callback_timeout_ms: 3_600_000,
            },
            now: NOW,
            plugins: [("a", "a-v2"), ("b", "b-v1")]
                .into_iter()
                .map(|(n, h)| (n.to_owned(), h.to_owned()))
                .collect(),
            ids: AtomicU32::new(0),
        }
    }

    fn with_ctx<T>(&self, f: impl FnOnce(&Ctx<'_>) -> T) -> T {
        let new_id = || format!("run-{}", self.ids.fetch_add(1, Ordering::Relaxed) + 1);
        f(&Ctx {
            now_ms: self.now,
            new_id: &new_id,
            limits: &self.limits,
        })
    }

    /// Starts a workflow of steps on plugins `a` then `b`, the first pinned
    /// to `a-v1`.
    async fn start(&self, steps: &[&str]) -> Execution {
        let steps = steps
            .iter()
            .enumerate()
            .map(|(i, plugin)| StepSpec {
                name: format!("s{}", i + 1),
                plugin: (*plugin).to_owned(),
                config: serde_json::Value::Null,
                plugin_hash: (i == 0).then(|| format!("{plugin}-v1")),
            })
            .collect();
        let input = Doc::json(&serde_json::json!({"n": 1}));
        let t = self.with_ctx(|ctx| start("e1".into(), "wf".into(), steps, input, None, ctx));
        assert!(t.effects.drive, "whoever starts an execution drives it");
        self.store.apply(&t.change).await.unwrap();
        self.exec().await
    }

    async fn exec(&self) -> Execution {
        self.store.execution("e1").await.unwrap().unwrap()
    }

    /// What the step's `callbacks.register` writes.
    async fn register(&self, cid: &str) -> CallbackRecord {
        let exec = self.exec().await;
        let rec = CallbackRecord {
            correlation_id: cid.into(),
            version: 1,
            execution_id: exec.id.clone(),
            step_run_id: exec.step_run_id.clone(),
            attempt: Some(exec.attempt),
            secret_sha256: String::new(),
            require_token: false,
            state: CallbackState::Registered,
            created_ms: self.now,
        };
        self.store
            .apply(&Change {
                callbacks: vec![rec.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        rec
    }

    async fn callback(&self, cid: &str) -> CallbackRecord {
        self.store.callback(cid).await.unwrap().unwrap()
    }

    async fn timers(&self) -> Vec<Timer> {
        self.store.due_timers(u64::MAX, 100).await.unwrap()
    }

    /// Reads what the decision needs, as the driver does, and decides.
    async fn decide(&self, event: &Event) -> Result<Transition, Refusal> {
        let exec = self.exec().await;
        let needs = needs(&exec, event);
        let callback = crate::workflow::driver::read_callback(&self.store, &needs)
            .await
            .unwrap();
        let plugins = needs
            .plugins
            .iter()
            .filter_map(|n| Some((n.clone(), self.plugins.get(n)?.clone())))
            .collect();
        let reads = Reads { callback, plugins };
        self.with_ctx(|ctx| decide(exec, event, &reads, ctx))
    }

    /// Decides and writes; the transition must apply.
    async fn step(&self, event: &Event) -> Transition {
        let t = self.decide(event).await.expect("the event applies");
        self.store
            .apply(&t.change)
            .await
            .expect("the change applies");
        t
    }

    /// The current step returned `outcome`.
    async fn returned(&self, outcome: Result<Outcome, StepError>) -> Transition {
        let version = self.exec().await.version;
        self.step(&Event::Returned { version, outcome }).await
    }

    /// The step registered `cid` and suspended on it.
    async fn suspend_on(&self, cid: &str, timeout_ms: Option<u64>) -> Transition {
        self.register(cid).await;
        self.returned(Ok(suspend(cid, timeout_ms))).await
    }
}

fn suspend(cid: &str, timeout_ms: Option<u64>) -> Outcome {
    Outcome::Suspend(bindings::Suspension {
        correlation_id: cid.into(),
        state: b"st".to_vec(),
        timeout_ms,
    })
}

fn doc(body: &str) -> bindings::Document {
    bindings::Document {
        content_type: "text/plain".into(),
        body: body.as_bytes().to_vec(),
    }
}

fn received(body: &str) -> ReceivedCallback {
    ReceivedCallback {
        method: "POST".into(),
        headers: vec![],
        body: body.as_bytes().to_vec(),
        received_ms: NOW,
    }
}

fn on_callback(cid: &str, body: &str) -> Event {
    Event::Callback {
        correlation_id: cid.into(),
        callback: received(body),
    }
}

fn log_events(exec: &Execution) -> Vec<(&str, ExecState, ExecState)> {
    exec.status_log
        .iter()
        .map(|l| (l.event.as_str(), l.from, l.to))
        .collect()
}

fn error_code(exec: &Execution) -> &str {
    &exec.error.as_ref().expect("failed").code
}

// -- start -------------------------------------------------------------

#[tokio::test]
async fn start_writes_a_running_execution_on_its_first_step_with_a_fresh_run_id() {
    let w = World::new();
    let exec = w.start(&["a", "b"]).await;
    assert_eq!(exec.state, ExecState::Running);
    assert_eq!((exec.version, exec.step_index, exec.attempt), (1, 0, 1));
    assert_eq!(exec.step_run_id, "run-1");
    assert_eq!(exec.created_ms, NOW);
    assert_eq!(
        log_events(&exec),
        [("started", ExecState::Running, ExecState::Running)]
    );
    assert!(w.store.deliveries_of("e1").await.unwrap().is_empty());
}

#[tokio::test]
async fn start_with_a_callback_url_arms_its_delivery_in_the_same_change() {
    let w = World::new();
    let t = w.with_ctx(|ctx| {
        start(
            "e1".into(),
            "wf".into(),
            vec![StepSpec {
                name: "s1".into(),
                plugin: "a".into(),
                config: serde_json::Value::Null,
                plugin_hash: Some("a-v1".into()),
            }],
            Doc::json(&serde_json::json!({})),
            Some("http://127.0.0.1:9/result"),
            ctx,
        )
    });
    assert!(t.change.execution.is_some());
    assert_eq!(t.change.deliveries.len(), 1);
    assert_eq!(t.change.deliveries[0].url, "http://127.0.0.1:9/result");
    assert_eq!(t.change.deliveries[0].seq, 0);
}

// -- a step's outcome ----------------------------------------------------

#[tokio::test]
async fn complete_moves_to_the_next_step_pinned_to_its_current_plugin() {
    let w = World::new();
    w.start(&["a", "b"]).await;
    let t = w.returned(Ok(Outcome::Complete(doc("out-1")))).await;
    assert_eq!(t.report(), StepReport::Running);
    assert!(!t.effects.drive, "the step loop goes on by itself");
    let exec = w.exec().await;
    assert_eq!((exec.step_index, exec.attempt, exec.version), (1, 1, 2));
    assert_eq!(exec.step_run_id, "run-2", "a new step gets a new run id");
    assert_eq!(exec.steps[1].plugin_hash.as_deref(), Some("b-v1"));
    assert_eq!(exec.document.body, b"out-1");
    assert!(exec.outputs.contains_key("s1"));
    assert_eq!(
        log_events(&exec)[1..],
        [
            ("step-completed", ExecState::Running, ExecState::Running),
            ("started", ExecState::Running, ExecState::Running)
        ]
    );
}

#[tokio::test]
async fn complete_on_the_last_step_completes_with_the_output() {
    let w = World::new();
    w.start(&["a"]).await;
    let t = w.returned(Ok(Outcome::Complete(doc("done")))).await;
    assert_eq!(t.report(), StepReport::Ended(ExecState::Completed));
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Completed);
    assert_eq!(exec.output.unwrap().body, b"done");
}

#[tokio::test]
async fn complete_fails_when_the_next_steps_plugin_is_not_loaded() {
    let mut w = World::new();
    w.plugins.remove("b");
    w.start(&["a", "b"]).await;
    w.returned(Ok(Outcome::Complete(doc("x")))).await;
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Failed);
    assert_eq!(error_code(&exec), "plugin-unavailable");
    assert_eq!(exec.error.unwrap().step, "s2", "the step that cannot start");
    assert_eq!(exec.version, 2, "one write, one version");
}

#[tokio::test]
async fn an_output_over_the_limit_fails_with_body_too_large() {
    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Ok(Outcome::Complete(doc(&"x".repeat(129)))))
        .await;
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "body-too-large");
    assert!(exec.output.is_none());
}

#[tokio::test]
async fn fail_records_the_steps_code_text_and_statuses_or_step_failed() {
    let w = World::new();
    w.start(&["a", "b"]).await;
    let t = w
        .returned(Ok(Outcome::Fail(bindings::Failure {
            error_code: Some("partner-said-no".into()),
            error_text: "nope".into(),
            document_status: Some("rejected".into()),
            technical_status: Some("422".into()),
        })))
        .await;
    assert_eq!(t.report(), StepReport::Ended(ExecState::Failed));
    let err = w.exec().await.error.unwrap();
    assert_eq!(
        (err.code.as_str(), err.text.as_str(), err.step.as_str()),
        ("partner-said-no", "nope", "s1")
    );
    assert_eq!(err.document_status.as_deref(), Some("rejected"));
    assert_eq!(err.technical_status.as_deref(), Some("422"));

    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Ok(Outcome::Fail(bindings::Failure {
        error_code: None,
        error_text: "no code".into(),
        document_status: None,
        technical_status: None,
    })))
    .await;
    assert_eq!(error_code(&w.exec().await), "step-failed");
}

#[tokio::test]
async fn a_call_without_an_outcome_fails_with_the_calls_code() {
    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Err(StepError::Trap("boom".into()))).await;
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "trap");
    assert!(exec.error.unwrap().text.contains("boom"));
}

#[tokio::test]
async fn an_unavailable_plugin_fails_the_execution() {
    let w = World::new();
    let exec = w.start(&["a"]).await;
    w.step(&Event::PluginUnavailable {
        version: exec.version,
        why: "version a-v1 is gone".into(),
    })
    .await;
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "plugin-unavailable");
    assert_eq!(exec.error.unwrap().text, "version a-v1 is gone");
}

#[tokio::test]
async fn an_outcome_of_a_version_that_moved_on_is_lost() {
    let w = World::new();
    let exec = w.start(&["a"]).await;
    w.step(&Event::Cancel).await;
    let late = Event::Returned {
        version: exec.version,
        outcome: Ok(Outcome::Complete(doc("late"))),
    };
    assert_eq!(w.decide(&late).await.unwrap_err(), Refusal::Lost);
    assert_eq!(error_code(&w.exec().await), "cancelled");
}

#[tokio::test]
async fn suspend_parks_on_the_registered_callback_with_its_timeout_timer() {
    let w = World::new();
    w.start(&["a"]).await;
    let t = w.suspend_on("c1", Some(5_000)).await;
    assert_eq!(t.report(), StepReport::Suspended);
    assert_eq!(t.effects.wake_at, Some(NOW + 5_000));
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Suspended);
    let waiting = exec.waiting.unwrap();
    assert_eq!(waiting.correlation_id.as_deref(), Some("c1"));
    assert_eq!(
        (waiting.state.as_slice(), waiting.due_ms),
        (&b"st"[..], NOW + 5_000)
    );
    assert_eq!(w.callback("c1").await.state, CallbackState::Waiting);
    assert_eq!(
        w.timers().await,
        [Timer {
            due_ms: NOW + 5_000,
            execution_id: "e1".into(),
            kind: TimerKind::CallbackTimeout
        }]
    );
}

#[tokio::test]
async fn a_suspend_timeout_defaults_and_is_capped() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", None).await;
    assert_eq!(w.exec().await.waiting.unwrap().due_ms, NOW + 60_000);

    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(u64::MAX)).await;
    assert_eq!(w.exec().await.waiting.unwrap().due_ms, NOW + 3_600_000);
}

#[tokio::test]
async fn suspend_on_an_id_this_step_did_not_register_fails_invalid_suspension() {
    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Ok(suspend("never-registered", None))).await;
    assert_eq!(error_code(&w.exec().await), "invalid-suspension");
    assert!(w.timers().await.is_empty());
}

#[tokio::test]
async fn suspend_on_a_callback_already_used_fails_invalid_suspension_in_one_write() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", None).await;
    w.step(&on_callback("c1", "first")).await;
    // The resumed step suspends again on the id it already consumed.
    let t = w.returned(Ok(suspend("c1", None))).await;
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "invalid-suspension");
    assert_eq!(t.report(), StepReport::Ended(ExecState::Failed));
    assert_eq!(exec.version, 4, "start, suspend, callback, this failure");
}

#[tokio::test]
async fn suspend_state_over_the_limit_fails_state_too_large() {
    let w = World::new();
    w.start(&["a"]).await;
    w.register("c1").await;
    w.returned(Ok(Outcome::Suspend(bindings::Suspension {
        correlation_id: "c1".into(),
        state: vec![0; 65],
        timeout_ms: None,
    })))
    .await;
    assert_eq!(error_code(&w.exec().await), "state-too-large");
    assert_eq!(w.callback("c1").await.state, CallbackState::Registered);
}

#[tokio::test]
async fn retry_after_waits_on_a_retry_timer_capped_at_the_ceiling() {
    let w = World::new();
    w.start(&["a"]).await;
    let t = w
        .returned(Ok(Outcome::RetryAfter(bindings::Retry {
            delay_ms: u64::MAX,
            state: b"again".to_vec(),
        })))
        .await;
    assert_eq!(t.report(), StepReport::Suspended);
    let exec = w.exec().await;
    let waiting = exec.waiting.unwrap();
    assert_eq!(waiting.correlation_id, None);
    assert_eq!(waiting.due_ms, NOW + 3_600_000);
    assert_eq!(w.timers().await[0].kind, TimerKind::Retry);
}

#[tokio::test]
async fn retry_after_state_over_the_limit_fails_state_too_large() {
    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Ok(Outcome::RetryAfter(bindings::Retry {
        delay_ms: 10,
        state: vec![0; 65],
    })))
    .await;
    assert_eq!(error_code(&w.exec().await), "state-too-large");
    assert!(w.timers().await.is_empty());
}

#[tokio::test]
async fn reject_callback_puts_the_wait_back_exactly_and_reopens_the_callback() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let before = w.exec().await.waiting.unwrap();
    w.step(&on_callback("c1", "bad")).await;
    let t = w
        .returned(Ok(Outcome::RejectCallback("bad signature".into())))
        .await;
    assert_eq!(t.report(), StepReport::Rejected("bad signature".into()));
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Suspended);
    assert_eq!(exec.waiting.as_ref(), Some(&before));
    assert!(exec.pending.is_none());
    assert_eq!(w.callback("c1").await.state, CallbackState::Waiting);
    assert_eq!(w.timers().await[0].due_ms, before.due_ms);
    let last = exec.status_log.last().unwrap();
    assert_eq!(
        (last.event.as_str(), last.error_text.as_deref()),
        ("callback-rejected", Some("bad signature"))
    );
}

#[tokio::test]
async fn reject_callback_on_a_timeout_fails_callback_timeout_and_on_run_invalid_outcome() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    w.returned(Ok(Outcome::RejectCallback("no".into()))).await;
    assert_eq!(error_code(&w.exec().await), "callback-timeout");

    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Ok(Outcome::RejectCallback("no".into()))).await;
    assert_eq!(error_code(&w.exec().await), "invalid-outcome");
}

#[tokio::test]
async fn no_outcome_on_a_timeout_resume_fails_callback_timeout() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    w.returned(Err(StepError::TimeLimit {
        limit_ms: 10,
        after_ms: 11,
    }))
    .await;
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "callback-timeout");
    assert!(exec.error.unwrap().text.contains("did not decide"));
}

// -- callbacks -----------------------------------------------------------

#[tokio::test]
async fn a_callback_before_suspend_is_stored_and_the_suspend_resumes_at_once() {
    let w = World::new();
    w.start(&["a"]).await;
    w.register("c1").await;
    let t = w.step(&on_callback("c1", "early")).await;
    assert!(t.change.execution.is_none(), "only the callback is written");
    assert!(matches!(
        w.callback("c1").await.state,
        CallbackState::Received { .. }
    ));
    assert_eq!(w.exec().await.state, ExecState::Running);

    let t = w.returned(Ok(suspend("c1", None))).await;
    assert_eq!(t.report(), StepReport::Running, "resumed without waiting");
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Running);
    assert!(w.timers().await.is_empty(), "no timeout timer to wait on");
    assert_eq!(w.callback("c1").await.state, CallbackState::Consumed);
    match &exec.pending.as_ref().unwrap().event {
        ResumeWith::Callback { callback, .. } => assert_eq!(callback.body, b"early"),
        other => panic!("resumed with {other:?}"),
    }
    assert_eq!(
        log_events(&exec)[1..],
        [
            ("suspended", ExecState::Running, ExecState::Suspended),
            ("callback", ExecState::Suspended, ExecState::Running)
        ]
    );
}

#[tokio::test]
async fn a_callback_on_time_claims_the_suspension_and_drops_its_timer() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let t = w.step(&on_callback("c1", "ok")).await;
    assert!(t.effects.drive, "the claim starts a driver");
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Running);
    assert!(exec.waiting.is_none());
    let pending = exec.pending.unwrap();
    assert_eq!(pending.state, b"st");
    assert!(matches!(pending.event, ResumeWith::Callback { .. }));
    assert_eq!(w.callback("c1").await.state, CallbackState::Consumed);
    assert!(w.timers().await.is_empty());
}

#[tokio::test]
async fn a_duplicate_callback_is_refused_delivered_or_waiting() {
    let w = World::new();
    w.start(&["a"]).await;
    w.register("c1").await;
    w.step(&on_callback("c1", "early")).await;
    assert!(matches!(
        w.decide(&on_callback("c1", "again")).await,
        Err(Refusal::Duplicate(m)) if m.contains("waiting for delivery")
    ));
    w.returned(Ok(suspend("c1", None))).await;
    assert!(matches!(
        w.decide(&on_callback("c1", "again")).await,
        Err(Refusal::Duplicate(m)) if m.contains("already delivered")
    ));
}

#[tokio::test]
async fn a_callback_after_the_end_or_its_timeout_is_gone() {
    let w = World::new();
    w.start(&["a"]).await;
    w.register("c1").await;
    w.returned(Ok(Outcome::Complete(doc("done")))).await;
    assert!(matches!(
        w.decide(&on_callback("c1", "late")).await,
        Err(Refusal::Gone(m)) if m.contains("already completed")
    ));

    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    assert!(matches!(
        w.decide(&on_callback("c1", "late")).await,
        Err(Refusal::Gone(m)) if m.contains("timed out")
    ));
}

#[tokio::test]
async fn a_callback_of_an_attempt_that_is_over_is_gone() {
    let w = World::new();
    w.start(&["a"]).await;
    w.register("c1").await;
    w.returned(Ok(Outcome::RetryAfter(bindings::Retry {
        delay_ms: 10,
        state: vec![],
    })))
    .await;
    w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    assert_eq!(w.exec().await.attempt, 2);
    assert!(matches!(
        w.decide(&on_callback("c1", "stale")).await,
        Err(Refusal::Gone(m)) if m.contains("attempt")
    ));
}

#[tokio::test]
async fn a_callback_while_its_execution_is_being_resumed_settles_first() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    // A timeout decided on the same read as the callback is mid-write:
    // the execution is running, the record still waiting.
    let timer = w.timers().await.remove(0);
    let mut t = w.decide(&Event::TimerFired(timer)).await.unwrap();
    t.change.callbacks.clear();
    w.store.apply(&t.change).await.unwrap();
    assert_eq!(
        w.decide(&on_callback("c1", "x")).await.unwrap_err(),
        Refusal::Settling
    );
}

#[tokio::test]
async fn a_callback_and_a_timeout_decided_together_have_exactly_one_winner() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let by_callback = w.decide(&on_callback("c1", "x")).await.unwrap();
    let by_timer = w
        .decide(&Event::TimerFired(w.timers().await.remove(0)))
        .await
        .unwrap();
    w.store.apply(&by_callback.change).await.unwrap();
    assert!(matches!(
        w.store.apply(&by_timer.change).await,
        Err(crate::store::StoreError::Conflict(_))
    ));
    // Decided again on what is stored now, the timer is stale.
    let timer = by_timer.change.remove_timers[0].clone();
    assert_eq!(
        w.decide(&Event::TimerFired(timer)).await.unwrap_err(),
        Refusal::Stale
    );
}

// -- timers --------------------------------------------------------------

#[tokio::test]
async fn a_callback_timeout_claims_the_execution_and_expires_the_callback() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let t = w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    assert_eq!(
        (t.effects.drive, t.effects.timer_fired),
        (true, Some("callback-timeout"))
    );
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Running);
    assert_eq!(exec.pending.unwrap().event, ResumeWith::Timeout);
    assert_eq!(w.callback("c1").await.state, CallbackState::Expired);
    assert!(w.timers().await.is_empty());
}

#[tokio::test]
async fn a_retry_timer_resumes_the_next_attempt_with_the_same_run_id() {
    let w = World::new();
    let started = w.start(&["a"]).await;
    w.returned(Ok(Outcome::RetryAfter(bindings::Retry {
        delay_ms: 10,
        state: b"s".to_vec(),
    })))
    .await;
    let t = w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    assert_eq!(t.effects.timer_fired, Some("retry"));
    let exec = w.exec().await;
    assert_eq!((exec.attempt, exec.state), (2, ExecState::Running));
    assert_eq!(exec.step_run_id, started.step_run_id);
    assert_eq!(exec.pending.unwrap().event, ResumeWith::Timer);
}

#[tokio::test]
async fn a_timer_whose_wait_is_over_is_stale() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let timer = w.timers().await.remove(0);
    let moved = Timer {
        due_ms: timer.due_ms + 1,
        ..timer.clone()
    };
    assert_eq!(
        w.decide(&Event::TimerFired(moved)).await.unwrap_err(),
        Refusal::Stale
    );
    let other_kind = Timer {
        kind: TimerKind::Retry,
        ..timer.clone()
    };
    assert_eq!(
        w.decide(&Event::TimerFired(other_kind)).await.unwrap_err(),
        Refusal::Stale
    );
    w.step(&on_callback("c1", "won")).await;
    assert_eq!(
        w.decide(&Event::TimerFired(timer)).await.unwrap_err(),
        Refusal::Stale
    );
}

// -- operator actions ----------------------------------------------------

async fn failed_on_first_step(w: &World) {
    w.start(&["a", "b"]).await;
    w.returned(Err(StepError::Trap("x".into()))).await;
}

#[tokio::test]
async fn retry_runs_the_failed_step_again_on_the_current_version() {
    let w = World::new();
    failed_on_first_step(&w).await;
    let run_id = w.exec().await.step_run_id;
    let t = w.step(&Event::Retry).await;
    assert!(t.effects.drive);
    assert_eq!(t.from, Some(ExecState::Failed));
    let exec = w.exec().await;
    assert_eq!((exec.state, exec.attempt), (ExecState::Running, 2));
    assert_eq!(exec.step_run_id, run_id, "partners can dedupe");
    assert_eq!(exec.steps[0].plugin_hash.as_deref(), Some("a-v2"));
    assert!(exec.error.is_none());
}

#[tokio::test]
async fn skip_hands_the_input_to_the_next_step_or_completes_with_it() {
    let w = World::new();
    failed_on_first_step(&w).await;
    let input = w.exec().await.document;
    w.step(&Event::Skip).await;
    let exec = w.exec().await;
    assert_eq!((exec.state, exec.step_index), (ExecState::Running, 1));
    assert_eq!(exec.document, input);
    assert_eq!(exec.steps[1].plugin_hash.as_deref(), Some("b-v1"));

    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Err(StepError::Trap("x".into()))).await;
    let t = w.step(&Event::Skip).await;
    assert!(!t.effects.drive);
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Completed);
    assert_eq!(exec.output.unwrap(), input);
}

#[tokio::test]
async fn retry_and_skip_apply_to_failed_executions_with_loaded_plugins_only() {
    let w = World::new();
    w.start(&["a"]).await;
    for event in [Event::Retry, Event::Skip] {
        assert_eq!(
            w.decide(&event).await.unwrap_err(),
            Refusal::WrongState(ExecState::Running)
        );
    }
    let mut w = World::new();
    failed_on_first_step(&w).await;
    w.plugins.clear();
    assert_eq!(
        w.decide(&Event::Retry).await.unwrap_err(),
        Refusal::UnknownPlugin("a".into())
    );
    assert_eq!(
        w.decide(&Event::Skip).await.unwrap_err(),
        Refusal::UnknownPlugin("b".into())
    );
}

#[tokio::test]
async fn cancel_fails_a_suspended_execution_expires_its_callback_and_drops_its_timer() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let t = w.step(&Event::Cancel).await;
    assert_eq!(t.from, Some(ExecState::Suspended));
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "cancelled");
    assert!(exec.waiting.is_none());
    assert_eq!(w.callback("c1").await.state, CallbackState::Expired);
    assert!(w.timers().await.is_empty());
}

#[tokio::test]
async fn cancel_applies_to_running_executions_and_not_to_ended_ones() {
    let w = World::new();
    w.start(&["a"]).await;
    w.step(&Event::Cancel).await;
    assert_eq!(error_code(&w.exec().await), "cancelled");
    assert_eq!(
        w.decide(&Event::Cancel).await.unwrap_err(),
        Refusal::WrongState(ExecState::Failed)
    );
}

// -- recovery --------------------------------------------------------------

#[tokio::test]
async fn recovery_resumes_a_claimed_callback_with_the_same_run_id_and_event() {
    let w = World::new();
    let started = w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    w.step(&on_callback("c1", "payload")).await;
    // What a restarted daemon reads back and calls.
    let exec = w.exec().await;
    match crate::workflow::driver::invocation(&exec) {
        Invocation::Resume {
            ctx, state, event, ..
        } => {
            assert_eq!(ctx.step_run_id, started.step_run_id);
            assert_eq!(state, b"st");
            assert!(matches!(
                event,
                bindings::ResumeEvent::Callback(c) if c.body == b"payload"
            ));
        }
        other => panic!("expected a resume, got {other:?}"),
    }
    // A running execution with nothing claimed re-runs its step.
    let w = World::new();
    w.start(&["a"]).await;
    assert!(matches!(
        crate::workflow::driver::invocation(&w.exec().await),
        Invocation::Run { .. }
    ));
}

#[test]
fn needs_names_the_records_each_event_reads() {
    let mut exec = crate::store::conformance::execution("e1", 1);
    exec.steps = vec![
        StepSpec {
            name: "s1".into(),
            plugin: "a".into(),
            config: serde_json::Value::Null,
            plugin_hash: None,
        },
        StepSpec {
            name: "s2".into(),
            plugin: "b".into(),
            config: serde_json::Value::Null,
            plugin_hash: None,
        },
    ];
    let returned = |o| Event::Returned {
        version: 1,
        outcome: Ok(o),
    };
    assert_eq!(
        needs(&exec, &returned(suspend("c9", None)))
            .callback
            .as_deref(),
        Some("c9")
    );
    assert_eq!(
        needs(&exec, &returned(Outcome::Complete(doc("x")))).plugins,
        ["b"]
    );
    assert_eq!(needs(&exec, &Event::Retry).plugins, ["a"]);
    assert_eq!(needs(&exec, &Event::Skip).plugins, ["b"]);
    assert_eq!(needs(&exec, &Event::Cancel), Needs::default());
    exec.waiting = Some(Waiting {
        correlation_id: Some("c2".into()),
        state: vec![],
        due_ms: 1,
    });
    assert_eq!(needs(&exec, &Event::Cancel).callback.as_deref(), Some("c2"));
}
