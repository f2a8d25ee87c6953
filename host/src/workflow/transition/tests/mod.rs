//! Every event of the state machine as a unit test of [`decide`]: records
//! in the in-memory store, the reads the driver would make, the decision,
//! and its change applied back — no network, no Wasm, a fixed clock. This
//! file is the fixture; the events are in one file per kind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::bindings::{self, Outcome};
use crate::model::{CallbackState, ResumeWith, Waiting};
use crate::store::{
    CallbackStore as _, DeliveryStore as _, ExecutionStore as _, MemoryStore, TimerStore as _,
};
use crate::wasm::executor::{Invocation, StepError};

pub(super) const NOW: u64 = 1_000_000;

/// The store, the clock, the loaded plugins and an id counter.
pub(super) struct World {
    pub(super) store: MemoryStore,
    limits: Limits,
    now: u64,
    pub(super) plugins: BTreeMap<String, String>,
    ids: AtomicU32,
}

impl World {
    pub(super) fn new() -> Self {
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

    pub(super) fn with_ctx<T>(&self, f: impl FnOnce(&Ctx<'_>) -> T) -> T {
        let new_id = || format!("run-{}", self.ids.fetch_add(1, Ordering::Relaxed) + 1);
        f(&Ctx {
            now_ms: self.now,
            new_id: &new_id,
            limits: &self.limits,
        })
    }

    /// Starts a workflow of steps on plugins `a` then `b`, the first pinned
    /// to `a-v1`.
    pub(super) async fn start(&self, steps: &[&str]) -> Execution {
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
        let t = self.with_ctx(|ctx| start("e1".into(), "wf".into(), steps, input, None, None, ctx));
        assert!(t.effects.drive, "whoever starts an execution drives it");
        self.store.apply(&t.change).await.unwrap();
        self.exec().await
    }

    pub(super) async fn exec(&self) -> Execution {
        self.store.execution("e1").await.unwrap().unwrap()
    }

    /// The record of a derived ticket of the current step run, as
    /// `callbacks.register` hands it over: never stored (version 0).
    pub(super) async fn derived(&self, cid: &str) -> CallbackRecord {
        CallbackRecord {
            version: 0,
            ..self.registration(cid).await
        }
    }

    async fn registration(&self, cid: &str) -> CallbackRecord {
        let exec = self.exec().await;
        CallbackRecord {
            correlation_id: cid.into(),
            version: 1,
            execution_id: exec.id.clone(),
            step_run_id: exec.step_run_id.clone(),
            attempt: Some(exec.attempt),
            secret_sha256: String::new(),
            require_token: false,
            state: CallbackState::Registered,
            created_ms: self.now,
        }
    }

    /// What a stored `callbacks.register` (a describe call's, or past the
    /// 64th of a call) writes.
    pub(super) async fn register(&self, cid: &str) -> CallbackRecord {
        let rec = self.registration(cid).await;
        self.store
            .apply(&Change {
                callbacks: vec![rec.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        rec
    }

    pub(super) async fn callback(&self, cid: &str) -> CallbackRecord {
        self.store.callback(cid).await.unwrap().unwrap()
    }

    pub(super) async fn timers(&self) -> Vec<Timer> {
        self.store.due_timers(u64::MAX, 100).await.unwrap()
    }

    /// Reads what the decision needs, as the driver does, and decides.
    pub(super) async fn decide(&self, event: &Event) -> Result<Transition, Refusal> {
        self.decide_with(event, None).await
    }

    /// [`Self::decide`], with the record of a derived ticket standing in
    /// where the store has none (as the driver does).
    pub(super) async fn decide_with(
        &self,
        event: &Event,
        derived: Option<&CallbackRecord>,
    ) -> Result<Transition, Refusal> {
        let exec = self.exec().await;
        let needs = needs(&exec, event);
        let callback = crate::workflow::driver::read_callback(&self.store, &needs)
            .await
            .unwrap()
            .or_else(|| {
                derived
                    .filter(|r| needs.callback.as_ref() == Some(&r.correlation_id))
                    .cloned()
            });
        let plugins = needs
            .plugins
            .iter()
            .filter_map(|n| Some((n.clone(), self.plugins.get(n)?.clone())))
            .collect();
        let owned = crate::workflow::driver::read_owned(&self.store, &exec.id, &needs)
            .await
            .unwrap();
        let reads = Reads {
            callback,
            plugins,
            owned,
        };
        self.with_ctx(|ctx| decide(exec, event, &reads, ctx))
    }

    /// Decides and writes; the transition must apply.
    pub(super) async fn step(&self, event: &Event) -> Transition {
        let t = self.decide(event).await.expect("the event applies");
        self.store
            .apply(&t.change)
            .await
            .expect("the change applies");
        t
    }

    /// The event of the current step returning `outcome`.
    pub(super) async fn returned_event(&self, outcome: Result<Outcome, StepError>) -> Event {
        let version = self.exec().await.version;
        Event::Returned { version, outcome }
    }

    /// The current step returned `outcome`.
    pub(super) async fn returned(&self, outcome: Result<Outcome, StepError>) -> Transition {
        let event = self.returned_event(outcome).await;
        self.step(&event).await
    }

    /// The step registered `cid` and suspended on it.
    pub(super) async fn suspend_on(&self, cid: &str, timeout_ms: Option<u64>) -> Transition {
        self.register(cid).await;
        self.returned(Ok(suspend(cid, timeout_ms))).await
    }
}

pub(super) fn suspend(cid: &str, timeout_ms: Option<u64>) -> Outcome {
    Outcome::Suspend(bindings::Suspension {
        correlation_id: cid.into(),
        state: b"st".to_vec(),
        timeout_ms,
    })
}

pub(super) fn doc(body: &str) -> bindings::Document {
    bindings::Document {
        content_type: "text/plain".into(),
        body: body.as_bytes().to_vec(),
    }
}

pub(super) fn received(body: &str) -> ReceivedCallback {
    ReceivedCallback {
        method: "POST".into(),
        headers: vec![],
        body: body.as_bytes().to_vec(),
        received_ms: NOW,
    }
}

pub(super) fn on_callback(cid: &str, body: &str) -> Event {
    Event::Callback {
        correlation_id: cid.into(),
        callback: received(body),
    }
}

pub(super) fn log_events(exec: &Execution) -> Vec<(&str, ExecState, ExecState)> {
    exec.status_log
        .iter()
        .map(|l| (l.event.as_str(), l.from, l.to))
        .collect()
}

pub(super) fn error_code(exec: &Execution) -> &str {
    &exec.error.as_ref().expect("failed").code
}

mod admin;
mod callbacks;
mod derived;
mod recovery;
mod removal;
mod step;
mod timers;
