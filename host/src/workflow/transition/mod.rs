//! The state machine's decisions, as one pure function.
//!
//! [`decide`] takes an execution as it was read, an [`Event`], the few
//! other records the event needs ([`Reads`], named by [`needs`]), the
//! limits and the time, and returns a [`Transition`]: the one [`Change`] to
//! write, and the effects to run once it is written. It reads no store,
//! asks no clock and draws no random id of its own (the [`Ctx`] brings
//! them), so every transition is a unit test (`tests.rs`), and the driver
//! stays the one place that commits (`super::driver`).
//!
//! A decision that loses its compare-and-swap is not patched up: the
//! caller reads again and decides again, on what the records are now.

use std::collections::BTreeMap;

use crate::bindings::Outcome;
use crate::model::{
    CallbackRecord, Delivery, Doc, ExecError, ExecState, Execution, Failure, IdempotentStart,
    ReceivedCallback, StartKey, StepSpec, Timer, TimerKind,
};
use crate::store::Change;
use crate::wasm::executor::StepError;

use super::StepReport;

mod admin;
mod resume;
mod step;
#[cfg(test)]
mod tests;

/// The configured limits a decision checks.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `suspend` / `retry-after` state.
    pub max_state_bytes: usize,
    /// Largest step output.
    pub max_output_bytes: usize,
    /// Callback timeout when the step names none.
    pub default_callback_timeout_ms: u64,
    /// Ceiling of callback timeouts and retry delays.
    pub max_callback_timeout_ms: u64,
}

impl Limits {
    /// The limits of a configuration.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            max_state_bytes: config.limits.max_state_bytes,
            max_output_bytes: config.limits.max_output_bytes,
            default_callback_timeout_ms: config.default_callback_timeout_ms,
            max_callback_timeout_ms: config.max_callback_timeout_ms,
        }
    }
}

/// What a decision takes from the world besides records: the time, fresh
/// ids, the limits.
pub struct Ctx<'a> {
    /// Now, in milliseconds since the epoch.
    pub now_ms: u64,
    /// A new step-run-id, asked for only when a new step starts.
    pub new_id: &'a (dyn Fn() -> String + Sync),
    /// The limits.
    pub limits: &'a Limits,
}

/// What happened to an execution.
#[derive(Debug, Clone)]
pub enum Event {
    /// The current step's call returned, on the execution at `version`.
    Returned {
        /// The execution's version the call ran on: an outcome applies to
        /// that version only.
        version: u64,
        /// The outcome, with granted secrets already masked.
        outcome: Result<Outcome, StepError>,
    },
    /// The current step's plugin cannot be loaded.
    PluginUnavailable {
        /// The execution's version when that was found.
        version: u64,
        /// Why.
        why: String,
    },
    /// A partner's callback, already admitted by its secret or token.
    Callback {
        /// Its correlation id.
        correlation_id: String,
        /// The request.
        callback: ReceivedCallback,
    },
    /// A callback-timeout or retry timer came due.
    TimerFired(Timer),
    /// An operator retries the failed step.
    Retry,
    /// An operator skips the failed step.
    Skip,
    /// An operator cancels the execution.
    Cancel,
    /// The ended execution is removed with everything that is only its:
    /// by an operator (`due: None`) whatever its result delivery is
    /// doing, or by retention (`due: Some(ms)`) only if it ended at or
    /// before `ms` and its result delivery is over.
    Remove {
        /// Retention's cut-off, in milliseconds since the epoch.
        due: Option<u64>,
    },
    /// The node running the execution at `version` stopped heartbeating:
    /// this node takes it over and runs its current step again.
    TakeOver {
        /// The version the orphan was found at.
        version: u64,
    },
}

/// The records a decision reads besides the execution.
#[derive(Debug, Default, Clone)]
pub struct Reads {
    /// The callback record [`Needs::callback`] names, if stored.
    pub callback: Option<CallbackRecord>,
    /// Current versions (content hashes) of the plugins [`Needs::plugins`]
    /// names, the ones loaded.
    pub plugins: BTreeMap<String, String>,
    /// The execution's own records, when [`Needs::owned`].
    pub owned: Owned,
}

/// The records that belong to one execution alone.
#[derive(Debug, Default, Clone)]
pub struct Owned {
    /// Correlation ids of its callback records.
    pub callbacks: Vec<String>,
    /// Its result deliveries.
    pub deliveries: Vec<Delivery>,
}

/// What to read before deciding `event` on an execution.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// A callback record, by correlation id.
    pub callback: Option<String>,
    /// Plugins whose current version a step about to start is pinned to.
    pub plugins: Vec<String>,
    /// The execution's callback and delivery records.
    pub owned: bool,
}

/// What [`decide`] needs read for `event` on `exec`.
pub fn needs(exec: &Execution, event: &Event) -> Needs {
    let waiting_callback = || exec.waiting.as_ref()?.correlation_id.clone();
    let next_plugin = || {
        exec.steps
            .get(exec.step_index + 1)
            .map(|s| s.plugin.clone())
            .into_iter()
            .collect()
    };
    match event {
        Event::Returned { outcome, .. } => match outcome {
            Ok(Outcome::Suspend(s)) => Needs {
                callback: Some(s.correlation_id.clone()),
                ..Default::default()
            },
            Ok(Outcome::RejectCallback(_)) => Needs {
                callback: exec.pending.as_ref().and_then(|p| match &p.event {
                    crate::model::ResumeWith::Callback { correlation_id, .. } => {
                        Some(correlation_id.clone())
                    }
                    _ => None,
                }),
                ..Default::default()
            },
            Ok(Outcome::Complete(_)) => Needs {
                plugins: next_plugin(),
                ..Default::default()
            },
            _ => Needs::default(),
        },
        Event::Callback { correlation_id, .. } => Needs {
            callback: Some(correlation_id.clone()),
            ..Default::default()
        },
        Event::TimerFired(_) | Event::Cancel => Needs {
            callback: waiting_callback(),
            ..Default::default()
        },
        Event::Retry => Needs {
            plugins: vec![exec.step().plugin.clone()],
            ..Default::default()
        },
        Event::Skip => Needs {
            plugins: next_plugin(),
            ..Default::default()
        },
        Event::PluginUnavailable { .. } | Event::TakeOver { .. } => Needs::default(),
        Event::Remove { .. } => Needs {
            owned: true,
            ..Default::default()
        },
    }
}

/// Why an event changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The execution moved on since the step call began: its outcome is
    /// dropped (whoever moved it drives it now).
    Lost,
    /// The timer guards a wait that is over.
    Stale,
    /// Not in a state the operator action applies to.
    WrongState(ExecState),
    /// The step an operator action would start has no loaded plugin.
    UnknownPlugin(String),
    /// No callback is registered under the id.
    NotFound,
    /// The callback was already delivered or received.
    Duplicate(&'static str),
    /// The wait the callback was for is over.
    Gone(String),
    /// The execution is being resumed right now (a timer claimed it, its
    /// step is running): decide again once that write has settled.
    Settling,
    /// Not for retention yet: it ended after the cut-off, or its result
    /// is still being delivered.
    NotDue,
}

/// What an event changes, and what to do once that is written.
#[derive(Debug)]
pub struct Transition {
    /// The execution's state before, when the change writes an execution.
    pub from: Option<ExecState>,
    /// The one write.
    pub change: Change,
    /// What to run after it.
    pub effects: Effects,
}

/// The effects of a transition, run by the driver after the commit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// The execution was moved into `running` by this event, not by its
    /// own driver's loop: someone must drive it now.
    pub drive: bool,
    /// A timer was added, due then: the timer loop may need to wake early.
    pub wake_at: Option<u64>,
    /// A timer fired: its kind, for the metrics.
    pub timer_fired: Option<&'static str>,
    /// The step rejected the callback it was resumed with.
    pub rejected: Option<String>,
}

impl Transition {
    /// A transition that writes `next`, coming from state `from`.
    fn write(from: ExecState, next: Execution) -> Self {
        Self {
            from: Some(from),
            change: Change {
                execution: Some(next),
                ..Default::default()
            },
            effects: Effects::default(),
        }
    }

    /// Adds a timer, and the wake-up it may need.
    fn add_timer(&mut self, timer: Timer) {
        let due = timer.due_ms;
        self.effects.wake_at = Some(self.effects.wake_at.map_or(due, |w| w.min(due)));
        self.change.add_timers.push(timer);
    }

    /// What the execution's driver does next once this is written.
    pub fn report(&self) -> StepReport {
        if let Some(reason) = &self.effects.rejected {
            return StepReport::Rejected(reason.clone());
        }
        match self.change.execution.as_ref().map(|e| e.state) {
            Some(ExecState::Running) | None => StepReport::Running,
            Some(ExecState::Suspended) => StepReport::Suspended,
            Some(s) => StepReport::Ended(s),
        }
    }
}

/// Decides `event` on `exec`: the one function every transition goes
/// through.
pub fn decide(
    exec: Execution,
    event: &Event,
    reads: &Reads,
    ctx: &Ctx<'_>,
) -> Result<Transition, Refusal> {
    match event {
        Event::Returned { version, outcome } => {
            step::returned(on_version(exec, *version)?, outcome, reads, ctx)
        }
        Event::PluginUnavailable { version, why } => {
            let exec = on_version(exec, *version)?;
            Ok(fail(exec, Failure::PluginUnavailable, why, ctx))
        }
        Event::Callback {
            correlation_id,
            callback,
        } => resume::callback(exec, correlation_id, callback, reads, ctx),
        Event::TimerFired(timer) => resume::timer(exec, timer, reads, ctx),
        Event::Retry => admin::retry(exec, reads, ctx),
        Event::Skip => admin::skip(exec, reads, ctx),
        Event::Cancel => admin::cancel(exec, reads, ctx),
        Event::Remove { due } => admin::remove(exec, *due, reads),
        Event::TakeOver { version } => Ok(take_over(on_version(exec, *version)?, ctx)),
    }
}

/// A running execution whose node died, written again at the next version
/// (so that a late write of the old node is refused) and driven by the
/// node that commits this: its current step runs again from the last step
/// boundary, with the same step-run-id and the same pending resume, as
/// after a restart.
fn take_over(exec: Execution, ctx: &Ctx<'_>) -> Transition {
    let mut next = exec;
    next.owner = None;
    next.version += 1;
    next.updated_ms = ctx.now_ms;
    next.log_at(ctx.now_ms, ExecState::Running, "taken-over", None);
    let mut t = Transition::write(ExecState::Running, next);
    t.effects.drive = true;
    t
}

/// The first write of an execution: `exec_id` running its first step on
/// `input`, with `steps[0]` already pinned to its plugin's version; with a
/// `callback_url`, the wish to have the result POSTed there is written in
/// the same change.
pub fn start(
    exec_id: String,
    workflow: String,
    steps: Vec<StepSpec>,
    input: Doc,
    callback_url: Option<&str>,
    key: Option<&StartKey>,
    ctx: &Ctx<'_>,
) -> Transition {
    let now = ctx.now_ms;
    let mut exec = Execution::new(exec_id, workflow, steps, input, (ctx.new_id)(), now);
    exec.log_at(now, ExecState::Running, "started", None);
    exec.idempotency_key = key.map(|k| k.key.clone());
    let idempotent_start = key.map(|k| IdempotentStart {
        key: k.key.clone(),
        execution_id: exec.id.clone(),
        request_sha256: k.request_sha256.clone(),
        status: k.status,
        state: exec.state.as_str().to_owned(),
        created_ms: now,
    });
    Transition {
        from: None,
        change: Change {
            idempotent_start,
            deliveries: callback_url
                .map(|url| Delivery::armed(&exec.id, url, now))
                .into_iter()
                .collect(),
            execution: Some(exec),
            ..Default::default()
        },
        effects: Effects {
            drive: true,
            ..Default::default()
        },
    }
}

/// `exec` if it is still the running execution at `version`.
fn on_version(exec: Execution, version: u64) -> Result<Execution, Refusal> {
    if exec.version == version && exec.state == ExecState::Running {
        Ok(exec)
    } else {
        Err(Refusal::Lost)
    }
}

/// The record after a write: version and time moved on, no pending resume.
fn bump(mut exec: Execution, ctx: &Ctx<'_>) -> Execution {
    exec.version += 1;
    exec.updated_ms = ctx.now_ms;
    exec.pending = None;
    exec
}

/// `exec` failed with `failure`.
fn failed(exec: Execution, failure: Failure, text: &str, ctx: &Ctx<'_>) -> Execution {
    let mut next = bump(exec, ctx);
    set_failed(&mut next, failure, text, ctx);
    next
}

/// Marks an execution already bumped for this write as failed (a second
/// bump would make the write miss its compare-and-swap).
fn set_failed(next: &mut Execution, failure: Failure, text: &str, ctx: &Ctx<'_>) {
    let from = next.state;
    next.state = ExecState::Failed;
    next.waiting = None;
    let code = failure.as_str();
    next.error = Some(ExecError {
        code: code.to_owned(),
        text: text.to_owned(),
        document_status: None,
        technical_status: None,
        step: next.step().name.clone(),
    });
    next.log_at(ctx.now_ms, from, "failed", Some((code, text)));
}

/// The transition that fails `exec`.
fn fail(exec: Execution, failure: Failure, text: &str, ctx: &Ctx<'_>) -> Transition {
    let from = exec.state;
    Transition::write(from, failed(exec, failure, text, ctx))
}

/// Moves `next` (already bumped) on to the step after its current one,
/// running, pinned to its plugin's current version from `reads`. `Err`
/// names the plugin when it is not loaded; `next` then stands on the new
/// step, not yet pinned.
fn start_next_step(next: &mut Execution, reads: &Reads, ctx: &Ctx<'_>) -> Result<(), String> {
    next.step_index += 1;
    next.attempt = 1;
    next.step_run_id = (ctx.new_id)();
    next.state = ExecState::Running;
    let plugin = &next.step().plugin;
    let hash = reads.plugins.get(plugin).ok_or_else(|| plugin.clone())?;
    let i = next.step_index;
    next.steps[i].plugin_hash = Some(hash.clone());
    next.log_at(ctx.now_ms, ExecState::Running, "started", None);
    Ok(())
}

/// The timer that guards what `exec` waits for, if it waits.
fn waiting_timer(exec: &Execution) -> Option<Timer> {
    let w = exec.waiting.as_ref()?;
    Some(Timer {
        due_ms: w.due_ms,
        execution_id: exec.id.clone(),
        kind: if w.correlation_id.is_some() {
            TimerKind::CallbackTimeout
        } else {
            TimerKind::Retry
        },
    })
}
