//! The execution state machine: start an execution, run its steps, park it
//! on a callback or timer, claim it when the callback or timer comes, and
//! resume it on the very plugin version that suspended it.
//!
//! One rule keeps it simple: whoever moves an execution into `running`
//! (start, callback claim, timer, recovery) drives it, and nobody else
//! does. Every move is one [`Change`] applied with compare-and-swap, so
//! racing callbacks and timers cannot both win.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::Digest as _;
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bindings::{self, Outcome};
use crate::capabilities::{CallInfo, Registrar};
use crate::config::Config;
use crate::executor::{Executor, Invocation, StepError};
use crate::model::{
    CallbackRecord, CallbackState, Doc, ExecError, ExecState, Execution, PendingResume,
    ReceivedCallback, ResumeWith, StepSpec, Timer, TimerKind, Waiting, now_ms,
};
use crate::plugins::{PluginError, Registry};
use crate::store::{Change, Store, StoreError};

/// Why an execution could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No workflow by that name.
    #[error("unknown workflow {0:?}")]
    UnknownWorkflow(String),
    /// A step names a plugin that is not loaded.
    #[error("unknown plugin {0:?}")]
    UnknownPlugin(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such execution (404).
    #[error("no such execution")]
    NotFound,
    /// Not in a state the action applies to (409).
    #[error("the execution is {}", .0.as_str())]
    WrongState(ExecState),
    /// Changed concurrently (409).
    #[error("the execution changed meanwhile; try again")]
    Busy,
    /// The step's plugin is no longer loaded (409).
    #[error("plugin {0:?} is not loaded")]
    UnknownPlugin(String),
    /// The store failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs an admin action again while it loses its compare-and-swap. A
/// conflict means the execution moved meanwhile (a callback resumed it, a
/// step committed its outcome, another operator acted): the action decides
/// again on what the execution is now, which either applies (a cancel
/// applies to running executions too) or says why not (`wrong-state`).
/// The bound is only against an execution that changes without end.
async fn settled<F, Fut>(mut action: F) -> Result<Execution, AdminError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Execution, AdminError>>,
{
    for _ in 0..16 {
        match action().await {
            Err(AdminError::Busy) => continue,
            other => return other,
        }
    }
    Err(AdminError::Busy)
}

/// What to start.
#[derive(Debug, Clone)]
pub enum Target {
    /// A named workflow from the configuration.
    Workflow(String),
    /// One plugin with its config: an ad-hoc one-step workflow.
    Plugin {
        /// Plugin name.
        name: String,
        /// Step config.
        config: serde_json::Value,
    },
}

/// How a callback request was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackReply {
    /// Stored before the step suspended; delivered when it does (202).
    Stored,
    /// Delivered; the step accepted it and the execution moved on (200).
    Applied {
        /// The execution's state after the step's answer.
        state: ExecState,
    },
    /// The step rejected it; the execution keeps waiting (400).
    Rejected(String),
}

/// Why a callback was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// No callback registered under that id (404).
    #[error("no callback is registered under this id")]
    NotFound,
    /// The URL secret is missing or wrong (401).
    #[error("the callback secret is missing or wrong")]
    BadSecret,
    /// A token is required and was not given (401).
    #[error("this callback requires an API token with permission callbacks:send")]
    TokenRequired,
    /// Already consumed or received (409).
    #[error("{0}")]
    Duplicate(String),
    /// The wait it was for is over (410).
    #[error("{0}")]
    Gone(String),
    /// The store failed (500/503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one step call led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepReport {
    /// The execution is still running (next step, or an early callback).
    Running,
    /// It waits for a callback or a timer.
    Suspended,
    /// It ended.
    Ended(ExecState),
    /// The step rejected the callback it was resumed with.
    Rejected(String),
    /// Someone else moved the execution; this driver stops.
    Lost,
}

/// The state machine, shared by the API, the timer loop and recovery.
pub struct Workflows {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    executor: Arc<Executor>,
    config: Arc<Config>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    timer_wake: Arc<crate::timers::TimerWake>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for Workflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflows").finish_non_exhaustive()
    }
}

/// A random id (step runs, callbacks of describe calls).
fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An execution id: a UUIDv7, ordered by creation time, so the store keeps
/// the executions in flight next to each other at the end of its tree
/// instead of scattered among every finished one (random ids made each
/// transition touch a cold page once the store outgrew its cache).
fn new_execution_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

impl Workflows {
    /// Builds the state machine.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        executor: Arc<Executor>,
        config: Arc<Config>,
    ) -> Self {
        Self {
            store,
            registry,
            executor,
            config,
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            timer_wake: Arc::default(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        }
    }

    /// Instance slots in use and step calls waiting for one.
    pub fn slot_usage(&self) -> crate::executor::SlotUsage {
        self.executor.slot_usage()
    }

    /// The daemon's counters.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Wakes the timer loop when a timer earlier than it knows of is added.
    pub fn timer_wake(&self) -> Arc<crate::timers::TimerWake> {
        self.timer_wake.clone()
    }

    /// Spawns a task that is cancelled at shutdown and awaited by it.
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Stops background work: waits up to `grace` for running steps to
    /// finish, then cancels the rest. Cancelled steps are still `running`
    /// in the store and are re-run on the next start.
    pub async fn shutdown(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "grace period over; interrupting running steps (they re-run on restart)"
            );
        }
        self.cancel.cancel();
        self.tasks.wait().await;
    }

    /// The cancellation token of background work.
    pub fn cancelled(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Starts an execution: durable before this returns, then driven in the
    /// background.
    pub async fn start(
        self: &Arc<Self>,
        target: Target,
        input: Doc,
    ) -> Result<Execution, StartError> {
        self.start_with_delivery(target, input, None).await
    }

    /// [`Workflows::start`], and when `callback_url` is given, the result
    /// is POSTed there when the execution ends (see [`crate::delivery`]):
    /// that wish is written with the execution, in the same change.
    pub async fn start_with_delivery(
        self: &Arc<Self>,
        target: Target,
        input: Doc,
        callback_url: Option<String>,
    ) -> Result<Execution, StartError> {
        let (workflow, specs) = match target {
            Target::Workflow(name) => {
                let wf = self
                    .config
                    .workflows
                    .get(&name)
                    .ok_or_else(|| StartError::UnknownWorkflow(name.clone()))?;
                (name, step_specs(&wf.steps))
            }
            Target::Plugin { name, config } => {
                let spec = StepSpec {
                    name: name.clone(),
                    plugin: name.clone(),
                    config,
                    plugin_hash: None,
                };
                (name, vec![spec])
            }
        };
        let mut steps = specs;
        // Held until the execution is written: none of its plugins can be
        // deleted between this check and the write that needs them.
        let pinned = self
            .registry
            .pin(steps.iter().map(|s| s.plugin.as_str()))
            .await;
        for step in &steps {
            if pinned.get(&step.plugin).is_none() {
                return Err(StartError::UnknownPlugin(step.plugin.clone()));
            }
        }
        steps[0].plugin_hash = pinned.get(&steps[0].plugin).map(|p| p.hash.clone());
        let now = now_ms();
        let mut exec = Execution {
            id: new_execution_id(),
            version: 1,
            workflow,
            steps,
            state: ExecState::Running,
            step_index: 0,
            attempt: 1,
            step_run_id: new_id(),
            document: input,
            outputs: Default::default(),
            waiting: None,
            pending: None,
            output: None,
            error: None,
            status_log: Vec::new(),
            created_ms: now,
            updated_ms: now,
        };
        exec.log(ExecState::Running, "started", None);
        self.store
            .apply(&Change {
                execution: Some(exec.clone()),
                deliveries: callback_url
                    .map(|url| crate::delivery::armed(&exec.id, &url))
                    .into_iter()
                    .collect(),
                ..Default::default()
            })
            .await?;
        drop(pinned);
        self.metrics.transition(None, ExecState::Running);
        self.store.flush().await?;
        self.spawn_drive(exec.id.clone());
        Ok(exec)
    }

    /// Drives an execution in the background until it stops running.
    pub fn spawn_drive(self: &Arc<Self>, id: String) {
        let this = self.clone();
        self.spawn(async move { this.drive(&id, None).await });
    }

    /// Runs step calls until the execution is no longer running. The first
    /// report goes to `first`, for a callback waiting for its verdict.
    async fn drive(&self, id: &str, mut first: Option<tokio::sync::oneshot::Sender<StepReport>>) {
        use tracing::Instrument as _;
        loop {
            let span =
                tracing::info_span!("execution", execution_id = id, step = tracing::field::Empty);
            let report = match self.step_once(id).instrument(span).await {
                Ok(report) => report,
                Err(e) => {
                    tracing::error!(execution_id = id, error = %e, "step transition failed; the execution re-runs on restart");
                    StepReport::Lost
                }
            };
            if let Some(tx) = first.take() {
                let _ = tx.send(report.clone());
            }
            if report != StepReport::Running {
                return;
            }
            // The next call sends the step-run-id this write chose (a new
            // step's): it must outlive a crash, or a re-run would send the
            // partner a different one for the same step.
            if let Err(e) = self.store.flush().await {
                tracing::error!(execution_id = id, error = %e, "cannot flush a step boundary; the execution re-runs on restart");
                return;
            }
            if self.tasks.is_closed() {
                // Shutting down: the step call in flight finished; the next
                // step starts from this durable boundary at the next start.
                tracing::info!(
                    execution_id = id,
                    "shutting down: the execution continues from this step boundary at the next start"
                );
                return;
            }
        }
    }

    /// Runs (or resumes) the current step once and applies its outcome.
    async fn step_once(&self, id: &str) -> Result<StepReport, StoreError> {
        let Some(exec) = self.store.execution(id).await? else {
            return Ok(StepReport::Lost);
        };
        if exec.state != ExecState::Running {
            return Ok(StepReport::Lost);
        }
        let step = exec.step().clone();
        tracing::Span::current().record("step", step.name.as_str());
        let plugin = match &step.plugin_hash {
            Some(hash) => self.registry.version(&step.plugin, hash).await,
            None => self
                .registry
                .current(&step.plugin)
                .ok_or_else(|| PluginError::Unknown(step.plugin.clone())),
        };
        let plugin = match plugin {
            Ok(p) => p,
            Err(e) => {
                let next = failed(exec.clone(), "plugin-unavailable", &e.to_string());
                return self.commit(next, Vec::new(), Vec::new(), Vec::new()).await;
            }
        };
        let ctx = step_context(&exec);
        let input = to_wit_doc(&exec.document);
        let invocation = match &exec.pending {
            None => Invocation::Run { ctx, input },
            Some(p) => Invocation::Resume {
                ctx,
                input,
                state: p.state.clone(),
                event: to_wit_event(&p.event),
            },
        };
        let call = CallInfo {
            plugin: plugin.name.clone(),
            execution_id: exec.id.clone(),
            step: step.name.clone(),
            step_run_id: exec.step_run_id.clone(),
            attempt: exec.attempt,
            deadline: Instant::now() + Duration::from_millis(plugin.grant.limits.time_limit_ms),
        };
        let started = Instant::now();
        let result = self
            .executor
            .call(&plugin.pre, plugin.grant.clone(), call, invocation)
            .await;
        self.metrics.step_call(
            &plugin.name,
            match &result.outcome {
                Ok(Outcome::Complete(_)) => crate::metrics::StepResult::Complete,
                Ok(Outcome::Fail(_)) => crate::metrics::StepResult::Fail,
                Ok(Outcome::Suspend(_)) => crate::metrics::StepResult::Suspend,
                Ok(Outcome::RetryAfter(_)) => crate::metrics::StepResult::RetryAfter,
                Ok(Outcome::RejectCallback(_)) => crate::metrics::StepResult::RejectCallback,
                Err(_) => crate::metrics::StepResult::Error,
            },
            started.elapsed(),
        );
        tracing::debug!(
            execution_id = id,
            step = %step.name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            requests = result.requests.len(),
            "step call returned"
        );
        // Whatever a plugin says about its failure lands in the status log
        // and API answers, where a granted secret must never appear.
        let outcome = result.outcome.map(|o| match o {
            Outcome::Fail(mut f) => {
                let grant = &plugin.grant;
                f.error_code = f.error_code.map(|c| grant.mask(&c));
                f.error_text = grant.mask(&f.error_text);
                f.document_status = f.document_status.map(|d| grant.mask(&d));
                f.technical_status = f.technical_status.map(|t| grant.mask(&t));
                Outcome::Fail(f)
            }
            Outcome::RejectCallback(reason) => Outcome::RejectCallback(plugin.grant.mask(&reason)),
            other => other,
        });
        // A commit can lose to a write that touched only a record the
        // outcome reads — an early callback landing on the callback record
        // between `suspend` reading it and the commit. If the execution
        // itself did not move, apply the same outcome again: this time it
        // sees the callback and resumes at once.
        let mut exec = exec;
        for _ in 0..16 {
            let report = self.apply_outcome(exec.clone(), outcome.clone()).await?;
            if report != StepReport::Lost {
                return Ok(report);
            }
            match self.store.execution(id).await? {
                Some(now) if now.version == exec.version && now.state == ExecState::Running => {
                    exec = now;
                }
                _ => return Ok(StepReport::Lost),
            }
        }
        Ok(StepReport::Lost)
    }

    /// Turns a step's outcome into the next state of its execution.
    async fn apply_outcome(
        &self,
        exec: Execution,
        outcome: Result<Outcome, StepError>,
    ) -> Result<StepReport, StoreError> {
        let event = exec.pending.as_ref().map(|p| p.event.clone());
        let on_timeout = matches!(event, Some(ResumeWith::Timeout));
        let mut callbacks = Vec::new();
        let mut add_timers = Vec::new();
        let mut report = None;

        let next = match outcome {
            Err(e) if on_timeout => failed(
                exec,
                "callback-timeout",
                &format!("the callback did not arrive in time, and the step did not decide: {e}"),
            ),
            Err(e) => failed(exec, e.code(), &e.to_string()),
            Ok(Outcome::Complete(doc)) => self.complete(exec, doc),
            Ok(Outcome::Fail(f)) => {
                let mut next = failed(
                    exec,
                    f.error_code.as_deref().unwrap_or("step-failed"),
                    &f.error_text,
                );
                if let Some(err) = &mut next.error {
                    err.document_status = f.document_status;
                    err.technical_status = f.technical_status;
                }
                next
            }
            Ok(Outcome::Suspend(s)) => {
                match self
                    .suspend(exec, s, &mut callbacks, &mut add_timers)
                    .await?
                {
                    Ok(next) => next,
                    Err(next) => next,
                }
            }
            Ok(Outcome::RetryAfter(r)) => {
                if r.state.len() > self.config.limits.max_state_bytes {
                    failed(
                        exec,
                        "state-too-large",
                        &format!(
                            "retry-after state of {} bytes exceeds the limit of {}",
                            r.state.len(),
                            self.config.limits.max_state_bytes
                        ),
                    )
                } else {
                    let from = exec.state;
                    let mut next = bump(exec);
                    let due = now_ms()
                        .saturating_add(r.delay_ms.min(self.config.max_callback_timeout_ms));
                    next.state = ExecState::Suspended;
                    next.waiting = Some(Waiting {
                        correlation_id: None,
                        state: r.state,
                        due_ms: due,
                    });
                    next.log(from, "retry-after", None);
                    add_timers.push(Timer {
                        due_ms: due,
                        execution_id: next.id.clone(),
                        kind: TimerKind::Retry,
                    });
                    next
                }
            }
            Ok(Outcome::RejectCallback(reason)) => match (&event, &exec.pending) {
                (Some(ResumeWith::Callback { correlation_id, .. }), Some(pending)) => {
                    // Put the wait back exactly as it was: same state, same
                    // deadline, callback open again.
                    let waiting = pending.waiting.clone();
                    let cid = correlation_id.clone();
                    let from = exec.state;
                    let mut next = bump(exec);
                    next.state = ExecState::Suspended;
                    next.waiting = Some(waiting.clone());
                    next.log(
                        from,
                        "callback-rejected",
                        Some(("callback-rejected", &reason)),
                    );
                    if let Some(mut rec) = self.store.callback(&cid).await? {
                        rec.version += 1;
                        rec.state = CallbackState::Waiting;
                        callbacks.push(rec);
                    }
                    add_timers.push(Timer {
                        due_ms: waiting.due_ms,
                        execution_id: next.id.clone(),
                        kind: TimerKind::CallbackTimeout,
                    });
                    report = Some(StepReport::Rejected(reason));
                    next
                }
                (Some(ResumeWith::Timeout), _) => failed(
                    exec,
                    "callback-timeout",
                    &format!("the callback did not arrive in time ({reason})"),
                ),
                _ => failed(
                    exec,
                    "invalid-outcome",
                    "reject-callback is only valid when resuming with a callback",
                ),
            },
        };
        let wake = add_timers.iter().map(|t| t.due_ms).min();
        let result = self.commit(next, callbacks, add_timers, Vec::new()).await?;
        if let Some(due) = wake
            && result != StepReport::Lost
        {
            self.wake_timers_for(due);
        }
        Ok(report
            .filter(|_| result != StepReport::Lost)
            .unwrap_or(result))
    }

    fn wake_timers_for(&self, due: u64) {
        self.timer_wake.added(due);
    }

    /// Writes a transition; reports what the execution does next.
    async fn commit(
        &self,
        next: Execution,
        callbacks: Vec<CallbackRecord>,
        add_timers: Vec<Timer>,
        remove_timers: Vec<Timer>,
    ) -> Result<StepReport, StoreError> {
        let state = next.state;
        let id = next.id.clone();
        let step = next.step().name.clone();
        let mut change = Change {
            execution: Some(next),
            callbacks,
            add_timers,
            remove_timers,
            ..Default::default()
        };
        // The result delivery goes into the very write that ends the
        // execution: no end without its delivery.
        let delivering = crate::delivery::enqueue_on_end(self.store.as_ref(), &mut change).await?;
        match self.store.apply(&change).await {
            Ok(()) => {}
            Err(StoreError::Conflict(why)) => {
                tracing::warn!(execution_id = %id, %step, %why, "execution changed under a running step; dropping its outcome");
                return Ok(StepReport::Lost);
            }
            Err(e) => return Err(e),
        }
        self.metrics.transition(Some(ExecState::Running), state);
        if delivering {
            self.metrics.delivery_enqueued();
            self.timer_wake.now();
        }
        Ok(match state {
            ExecState::Running => StepReport::Running,
            ExecState::Suspended => StepReport::Suspended,
            s => {
                tracing::info!(execution_id = %id, %step, state = s.as_str(), "execution ended");
                StepReport::Ended(s)
            }
        })
    }

    fn complete(&self, exec: Execution, doc: bindings::Document) -> Execution {
        if doc.body.len() > self.config.limits.max_output_bytes {
            return failed(
                exec,
                "body-too-large",
                &format!(
                    "output of {} bytes exceeds the limit of {}",
                    doc.body.len(),
                    self.config.limits.max_output_bytes
                ),
            );
        }
        let doc = Doc {
            content_type: doc.content_type,
            body: doc.body,
        };
        let from = exec.state;
        let mut next = bump(exec);
        let name = next.step().name.clone();
        next.outputs.insert(name, doc.to_json_value());
        if next.step_index + 1 == next.steps.len() {
            next.state = ExecState::Completed;
            next.output = Some(doc);
            next.log(from, "completed", None);
            return next;
        }
        next.log(from, "step-completed", None);
        next.step_index += 1;
        next.attempt = 1;
        next.step_run_id = new_id();
        next.document = doc;
        let plugin = next.step().plugin.clone();
        match self.registry.current(&plugin) {
            Some(p) => {
                let i = next.step_index;
                next.steps[i].plugin_hash = Some(p.hash.clone());
                next.log(ExecState::Running, "started", None);
                next
            }
            None => failed(
                next,
                "plugin-unavailable",
                &format!("plugin {plugin:?} is not loaded"),
            ),
        }
    }

    /// `suspend`: validate the correlation id, then either park the
    /// execution or, if its callback already arrived, resume at once.
    /// `Err` carries a failed execution.
    async fn suspend(
        &self,
        exec: Execution,
        s: bindings::Suspension,
        callbacks: &mut Vec<CallbackRecord>,
        add_timers: &mut Vec<Timer>,
    ) -> Result<Result<Execution, Execution>, StoreError> {
        if s.state.len() > self.config.limits.max_state_bytes {
            return Ok(Err(failed(
                exec,
                "state-too-large",
                &format!(
                    "suspension state of {} bytes exceeds the limit of {}",
                    s.state.len(),
                    self.config.limits.max_state_bytes
                ),
            )));
        }
        let rec = match self.store.callback(&s.correlation_id).await? {
            Some(rec) if rec.execution_id == exec.id && rec.step_run_id == exec.step_run_id => rec,
            _ => {
                return Ok(Err(failed(
                    exec,
                    "invalid-suspension",
                    &format!(
                        "correlation id {:?} was not registered by this step (call callbacks.register first)",
                        s.correlation_id
                    ),
                )));
            }
        };
        let timeout = s
            .timeout_ms
            .unwrap_or(self.config.default_callback_timeout_ms)
            .clamp(1, self.config.max_callback_timeout_ms);
        let waiting = Waiting {
            correlation_id: Some(s.correlation_id.clone()),
            state: s.state,
            due_ms: now_ms().saturating_add(timeout),
        };
        let from = exec.state;
        let mut next = bump(exec);
        let mut rec = rec;
        rec.version += 1;
        match std::mem::replace(&mut rec.state, CallbackState::Consumed) {
            CallbackState::Received { callback } => {
                // Suspended and at once resumed: two lines whose from/to
                // chain (running → suspended → running).
                next.state = ExecState::Suspended;
                next.log(from, "suspended", None);
                next.state = ExecState::Running;
                next.log(ExecState::Suspended, "callback", None);
                next.pending = Some(PendingResume {
                    event: ResumeWith::Callback {
                        correlation_id: s.correlation_id,
                        callback,
                    },
                    state: waiting.state.clone(),
                    waiting,
                });
            }
            CallbackState::Registered => {
                rec.state = CallbackState::Waiting;
                next.state = ExecState::Suspended;
                add_timers.push(Timer {
                    due_ms: waiting.due_ms,
                    execution_id: next.id.clone(),
                    kind: TimerKind::CallbackTimeout,
                });
                next.waiting = Some(waiting);
                next.log(from, "suspended", None);
            }
            other => {
                return Ok(Err(failed(
                    next,
                    "invalid-suspension",
                    &format!(
                        "callback {:?} was already used ({other:?})",
                        s.correlation_id
                    ),
                )));
            }
        }
        callbacks.push(rec);
        Ok(Ok(next))
    }

    /// Handles `POST /v1/callbacks/{id}`. The callback is durable before
    /// this returns anything but an error. `token_ok`: the request carried
    /// a valid token with `callbacks:send`; `token_required`: the operator
    /// requires one on every callback.
    pub async fn callback(
        self: &Arc<Self>,
        correlation_id: &str,
        secret: Option<&str>,
        token_ok: bool,
        token_required: bool,
        callback: ReceivedCallback,
    ) -> Result<CallbackReply, CallbackError> {
        // A conflict means a racing writer moved a record; re-read and
        // decide again. It settles within a few rounds.
        for _ in 0..16 {
            let rec = self
                .store
                .callback(correlation_id)
                .await?
                .ok_or(CallbackError::NotFound)?;
            let given = sha256_hex(secret.unwrap_or_default().as_bytes());
            let secret_ok = secret.is_some()
                && bool::from(given.as_bytes().ct_eq(rec.secret_sha256.as_bytes()));
            // The URL secret or an API token admits a callback. Where a
            // token is required (by the step's `require-token` or by the
            // operator) it is needed in addition to the secret, so a leaked
            // URL alone is not enough, and neither is a token alone.
            let token_required = token_required || rec.require_token;
            if token_required && !token_ok {
                return Err(CallbackError::TokenRequired);
            }
            if !secret_ok && (token_required || !token_ok) {
                return Err(CallbackError::BadSecret);
            }
            match &rec.state {
                CallbackState::Consumed => {
                    return Err(CallbackError::Duplicate(
                        "this callback was already delivered".into(),
                    ));
                }
                CallbackState::Received { .. } => {
                    return Err(CallbackError::Duplicate(
                        "a callback for this id was already received and is waiting for delivery"
                            .into(),
                    ));
                }
                CallbackState::Expired => {
                    return Err(CallbackError::Gone(
                        "the wait for this callback is over (timed out)".into(),
                    ));
                }
                CallbackState::Registered | CallbackState::Waiting => {}
            }
            let exec = self
                .store
                .execution(&rec.execution_id)
                .await?
                .ok_or(CallbackError::NotFound)?;
            if exec.state.is_terminal() {
                return Err(CallbackError::Gone(format!(
                    "the execution this callback belongs to has already {}",
                    exec.state.as_str()
                )));
            }
            // A ticket handed out by a step run or attempt that is over (the
            // execution moved on to another step, or an admin retry or a
            // retry-after started a new attempt, which registers its own):
            // nothing will ever wait for it, so storing the callback would
            // acknowledge what is then lost.
            let stale_attempt = rec.attempt.is_some_and(|a| a != exec.attempt);
            if rec.state == CallbackState::Registered
                && (rec.step_run_id != exec.step_run_id || stale_attempt)
            {
                return Err(CallbackError::Gone(
                    "the step attempt this callback belongs to is over; a later attempt has its own callback URL"
                        .into(),
                ));
            }
            if rec.state == CallbackState::Registered {
                {
                    let mut rec = rec.clone();
                    rec.version += 1;
                    rec.state = CallbackState::Received {
                        callback: callback.clone(),
                    };
                    match self
                        .store
                        .apply(&Change {
                            callbacks: vec![rec],
                            ..Default::default()
                        })
                        .await
                    {
                        Ok(()) => {}
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                    self.store.flush().await?;
                    tracing::info!(execution_id = %exec.id, step = %exec.step().name, correlation_id, "early callback stored");
                    return Ok(CallbackReply::Stored);
                }
            }
            let Some(waiting) = exec.waiting.clone().filter(|w| {
                exec.state == ExecState::Suspended
                    && w.correlation_id.as_deref() == Some(correlation_id)
            }) else {
                // The step is being resumed right now (by a timer, say);
                // let the record settle.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let from = exec.state;
            let mut next = bump(exec);
            next.state = ExecState::Running;
            next.waiting = None;
            next.pending = Some(PendingResume {
                event: ResumeWith::Callback {
                    correlation_id: correlation_id.to_owned(),
                    callback: callback.clone(),
                },
                state: waiting.state.clone(),
                waiting: waiting.clone(),
            });
            next.log(from, "callback", None);
            let mut rec = rec.clone();
            rec.version += 1;
            rec.state = CallbackState::Consumed;
            let timer = Timer {
                due_ms: waiting.due_ms,
                execution_id: next.id.clone(),
                kind: TimerKind::CallbackTimeout,
            };
            let id = next.id.clone();
            match self
                .store
                .apply(&Change {
                    execution: Some(next),
                    callbacks: vec![rec],
                    remove_timers: vec![timer],
                    ..Default::default()
                })
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            self.metrics
                .transition(Some(ExecState::Suspended), ExecState::Running);
            self.store.flush().await?;
            // The claim is durable; resume in a task of its own so a partner
            // hanging up cannot abandon the execution half-way.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let this = self.clone();
            self.spawn(async move { this.drive(&id, Some(tx)).await });
            return Ok(match rx.await {
                Ok(StepReport::Rejected(reason)) => CallbackReply::Rejected(reason),
                Ok(StepReport::Ended(state)) => CallbackReply::Applied { state },
                Ok(StepReport::Suspended) => CallbackReply::Applied {
                    state: ExecState::Suspended,
                },
                // Shutting down or lost: the claim is durable, so the
                // callback is applied on restart.
                _ => CallbackReply::Applied {
                    state: ExecState::Running,
                },
            });
        }
        Err(CallbackError::Store(StoreError::Conflict(
            "callback record kept changing; try again".into(),
        )))
    }

    /// Fires one due timer: claims the execution if it still waits for it.
    pub async fn fire_timer(self: &Arc<Self>, timer: Timer) -> Result<(), StoreError> {
        let exec = self.store.execution(&timer.execution_id).await?;
        let live = exec.as_ref().and_then(|e| {
            let w = e.waiting.as_ref()?;
            let kind_ok = match timer.kind {
                TimerKind::CallbackTimeout => w.correlation_id.is_some(),
                TimerKind::Retry => w.correlation_id.is_none(),
                // Result deliveries are fired by `crate::delivery`.
                TimerKind::Delivery { .. } => false,
            };
            (e.state == ExecState::Suspended && w.due_ms == timer.due_ms && kind_ok)
                .then_some(w.clone())
        });
        if matches!(timer.kind, TimerKind::Delivery { .. }) {
            return Ok(());
        }
        let (Some(exec), Some(waiting)) = (exec, live) else {
            // Stale: the wait it guarded already ended.
            return crate::timers::drop_stale(self.store.as_ref(), timer).await;
        };
        let from = exec.state;
        let mut next = bump(exec);
        next.state = ExecState::Running;
        next.waiting = None;
        let mut callbacks = Vec::new();
        let event = match timer.kind {
            TimerKind::CallbackTimeout => {
                if let Some(cid) = &waiting.correlation_id
                    && let Some(mut rec) = self.store.callback(cid).await?
                {
                    rec.version += 1;
                    rec.state = CallbackState::Expired;
                    callbacks.push(rec);
                }
                next.log(from, "timeout", None);
                ResumeWith::Timeout
            }
            TimerKind::Retry => {
                next.attempt += 1;
                next.log(from, "timer", None);
                ResumeWith::Timer
            }
            TimerKind::Delivery { .. } => return Ok(()),
        };
        let kind = match timer.kind {
            TimerKind::CallbackTimeout => "callback-timeout",
            _ => "retry",
        };
        next.pending = Some(PendingResume {
            event,
            state: waiting.state.clone(),
            waiting,
        });
        let id = next.id.clone();
        match self
            .store
            .apply(&Change {
                execution: Some(next),
                callbacks,
                remove_timers: vec![timer],
                ..Default::default()
            })
            .await
        {
            Ok(()) => {
                self.metrics.timer_fired(kind);
                self.metrics.transition(Some(from), ExecState::Running);
                self.spawn_drive(id);
                Ok(())
            }
            // A callback won the race; the timer is stale now.
            Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Re-runs the failed step of a failed execution: same step-run-id (so
    /// partners can dedupe), next attempt, on the plugin's current version.
    pub async fn retry(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
        settled(|| self.try_retry(id)).await
    }

    async fn try_retry(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
        let exec = self.failed_execution(id).await?;
        let pinned = self.pin_ahead(&exec).await;
        let from = exec.state;
        let mut next = bump(exec);
        next.state = ExecState::Running;
        next.error = None;
        next.attempt += 1;
        pin_current_plugin(&mut next, &pinned)?;
        next.log(from, "retried", None);
        self.admin_commit(next).await
    }

    /// Skips the failed step: its input goes on to the next step, or
    /// becomes the output if it was the last one.
    pub async fn skip(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
        settled(|| self.try_skip(id)).await
    }

    async fn try_skip(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
        let exec = self.failed_execution(id).await?;
        let pinned = self.pin_ahead(&exec).await;
        let from = exec.state;
        let mut next = bump(exec);
        next.error = None;
        if next.step_index + 1 == next.steps.len() {
            next.state = ExecState::Completed;
            next.output = Some(next.document.clone());
            next.log(from, "skipped", None);
        } else {
            next.log(from, "skipped", None);
            next.state = ExecState::Running;
            next.step_index += 1;
            next.attempt = 1;
            next.step_run_id = new_id();
            pin_current_plugin(&mut next, &pinned)?;
            next.log(ExecState::Running, "started", None);
        }
        self.admin_commit(next).await
    }

    /// Cancels a running or suspended execution: it fails with code
    /// `cancelled`, its callback expires and its timer is dropped.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
        settled(|| self.try_cancel(id)).await
    }

    async fn try_cancel(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
        let exec = self
            .store
            .execution(id)
            .await?
            .ok_or(AdminError::NotFound)?;
        if exec.state.is_terminal() {
            return Err(AdminError::WrongState(exec.state));
        }
        let mut change = Change::default();
        if let Some(w) = &exec.waiting {
            change.remove_timers.push(Timer {
                due_ms: w.due_ms,
                execution_id: exec.id.clone(),
                kind: if w.correlation_id.is_some() {
                    TimerKind::CallbackTimeout
                } else {
                    TimerKind::Retry
                },
            });
            if let Some(cid) = &w.correlation_id
                && let Some(mut rec) = self.store.callback(cid).await?
            {
                rec.version += 1;
                rec.state = CallbackState::Expired;
                change.callbacks.push(rec);
            }
        }
        let from = exec.state;
        let next = failed(exec, "cancelled", "cancelled by an operator");
        change.execution = Some(next.clone());
        let delivering = crate::delivery::enqueue_on_end(self.store.as_ref(), &mut change).await?;
        match self.store.apply(&change).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AdminError::Busy),
            Err(e) => return Err(e.into()),
        }
        self.metrics.transition(Some(from), ExecState::Failed);
        if delivering {
            self.metrics.delivery_enqueued();
            self.timer_wake.now();
        }
        self.store.flush().await?;
        Ok(next)
    }

    async fn failed_execution(&self, id: &str) -> Result<Execution, AdminError> {
        let exec = self
            .store
            .execution(id)
            .await?
            .ok_or(AdminError::NotFound)?;
        if exec.state != ExecState::Failed {
            return Err(AdminError::WrongState(exec.state));
        }
        Ok(exec)
    }

    /// The current versions of the plugins of `exec`'s remaining steps,
    /// held (see [`Registry::pin`]) until a retry or skip is written.
    async fn pin_ahead(&self, exec: &Execution) -> crate::plugins::Pinned {
        let ahead = exec.steps.get(exec.step_index..).unwrap_or_default();
        self.registry
            .pin(ahead.iter().map(|s| s.plugin.as_str()))
            .await
    }

    async fn admin_commit(self: &Arc<Self>, next: Execution) -> Result<Execution, AdminError> {
        let mut change = Change {
            execution: Some(next.clone()),
            ..Default::default()
        };
        // A skip can complete the execution: its result goes out then.
        let delivering = crate::delivery::enqueue_on_end(self.store.as_ref(), &mut change).await?;
        match self.store.apply(&change).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AdminError::Busy),
            Err(e) => return Err(e.into()),
        }
        // Retry and skip apply only to failed executions.
        self.metrics.transition(Some(ExecState::Failed), next.state);
        if delivering {
            self.metrics.delivery_enqueued();
            self.timer_wake.now();
        }
        self.store.flush().await?;
        if next.state == ExecState::Running {
            self.spawn_drive(next.id.clone());
        }
        Ok(next)
    }

    /// The executions that were `running` when the daemon stopped. Read
    /// once at open, before anything can start a new execution, so that
    /// recovery never drives an execution a live caller is driving.
    pub async fn interrupted(&self) -> Result<Vec<String>, StoreError> {
        let running = self
            .store
            .executions(&crate::store::ExecutionFilter {
                state: Some(ExecState::Running),
                ..Default::default()
            })
            .await?;
        Ok(running.into_iter().map(|e| e.id).collect())
    }

    /// Re-runs interrupted executions from their last persisted step
    /// boundary, with the same step-run-id.
    pub fn recover(self: &Arc<Self>, ids: Vec<String>) -> usize {
        let n = ids.len();
        self.metrics.recovered(n);
        for id in ids {
            tracing::info!(execution_id = %id, "recovering execution");
            self.spawn_drive(id);
        }
        n
    }
}

/// The durable [`Registrar`]: a callback is in the store, flushed, before
/// its URL reaches the plugin.
///
/// A step run that a crash interrupted before its `suspend` was durable is
/// re-run with the same step-run-id; its registrations then get the very
/// tickets the interrupted run got (same correlation id, same URL), so the
/// partner sees the same callback URL again, and a callback it already
/// sent (and got `202` for) is delivered rather than stranded on a URL
/// nobody waits on. Tickets are derived from a secret of the data dir, the
/// step-run-id, the attempt and the registration's position in the call.
pub struct DurableRegistrar {
    store: Arc<dyn Store>,
    public_url: std::sync::RwLock<String>,
    /// Records created before this time come from an earlier process.
    boot_ms: u64,
    key: std::sync::OnceLock<Vec<u8>>,
}

/// Registrations per step attempt that get reproducible tickets; any
/// further ones get random tickets.
const REPRODUCIBLE_REGISTRATIONS: u32 = 64;

impl DurableRegistrar {
    /// A registrar handing out URLs under `public_url`.
    pub fn new(store: Arc<dyn Store>, public_url: String) -> Self {
        Self {
            store,
            public_url: std::sync::RwLock::new(public_url),
            boot_ms: now_ms(),
            key: std::sync::OnceLock::new(),
        }
    }

    async fn key(&self) -> Result<&[u8], StoreError> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let key = self.store.node_secret("callback-tickets").await?;
        Ok(self.key.get_or_init(|| key))
    }

    /// The `n`-th ticket (correlation id, URL secret) of a step attempt.
    fn derived_ticket(
        &self,
        key: &[u8],
        call: &CallInfo,
        attempt: u32,
        n: u32,
    ) -> (String, String) {
        let mac = |data: &str| {
            crate::capabilities::signing::hmac(
                bindings::stephost::plugin::signing::HmacAlg::Sha256,
                key,
                data.as_bytes(),
            )
        };
        let digest = mac(&format!(
            "correlation-id\n{}\n{}\n{attempt}\n{n}",
            call.execution_id, call.step_run_id
        ));
        // Under a time-ordered execution id, the ticket is time-ordered
        // too (its timestamp, the rest from the digest), for the same
        // locality; under an older random one it is random as before, so
        // a re-run after an upgrade derives the ticket it handed out.
        let created = uuid::Uuid::parse_str(&call.execution_id)
            .ok()
            .filter(|u| u.get_version_num() == 7)
            .and_then(|u| u.get_timestamp())
            .map(|t| t.to_unix());
        let id = match created {
            Some((secs, nanos)) => {
                let mut rest = [0u8; 10];
                rest.copy_from_slice(&digest[..10]);
                let ms = secs * 1000 + u64::from(nanos / 1_000_000);
                uuid::Builder::from_unix_timestamp_millis(ms, &rest).into_uuid()
            }
            None => {
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest[..16]);
                uuid::Builder::from_random_bytes(bytes).into_uuid()
            }
        }
        .to_string();
        let secret = hex::encode(mac(&format!("callback-secret\n{id}")));
        (id, secret)
    }

    /// Changes the base URL (once the listener's port is known).
    pub fn set_public_url(&self, url: String) {
        *self.public_url.write().expect("lock poisoned") = url;
    }
}

impl Registrar for DurableRegistrar {
    fn register<'a>(
        &'a self,
        call: &'a CallInfo,
        require_token: bool,
    ) -> crate::store::BoxFuture<'a, Result<bindings::stephost::plugin::callbacks::Ticket, String>>
    {
        Box::pin(async move {
            let fail = |e: StoreError| format!("could not register the callback: {e}");
            let key = self.key().await.map_err(fail)?;
            // The step's own run (not a describe call) gets tickets that
            // a re-run after a crash can derive again.
            let attempt = (!call.step_run_id.is_empty()).then_some(call.attempt);
            let mut chosen = None;
            for n in 0..REPRODUCIBLE_REGISTRATIONS {
                let Some(attempt) = attempt else { break };
                let (correlation_id, secret) = self.derived_ticket(key, call, attempt, n);
                let Some(rec) = self.store.callback(&correlation_id).await.map_err(fail)? else {
                    chosen = Some((correlation_id, secret, true));
                    break;
                };
                // Handed out by an earlier process to this very step attempt
                // and not waited on yet: the interrupted run's ticket.
                let reusable = rec.execution_id == call.execution_id
                    && rec.step_run_id == call.step_run_id
                    && rec.require_token == require_token
                    && rec.created_ms < self.boot_ms
                    && rec.secret_sha256 == sha256_hex(secret.as_bytes())
                    && matches!(
                        rec.state,
                        CallbackState::Registered | CallbackState::Received { .. }
                    );
                if reusable {
                    chosen = Some((correlation_id, secret, false));
                    break;
                }
            }
            let (correlation_id, secret, fresh) =
                chosen.unwrap_or_else(|| (new_id(), hex::encode(rand::random::<[u8; 32]>()), true));
            if fresh {
                let rec = CallbackRecord {
                    correlation_id: correlation_id.clone(),
                    version: 1,
                    execution_id: call.execution_id.clone(),
                    step_run_id: call.step_run_id.clone(),
                    attempt,
                    secret_sha256: sha256_hex(secret.as_bytes()),
                    require_token,
                    state: CallbackState::Registered,
                    created_ms: now_ms(),
                };
                self.store
                    .apply(&Change {
                        callbacks: vec![rec],
                        ..Default::default()
                    })
                    .await
                    .map_err(fail)?;
            } else {
                tracing::info!(execution_id = %call.execution_id, step = %call.step, %correlation_id, "re-run step gets the callback ticket of its interrupted run");
            }
            self.store.flush().await.map_err(fail)?;
            let base = self.public_url.read().expect("lock poisoned").clone();
            Ok(bindings::stephost::plugin::callbacks::Ticket {
                url: format!("{base}/v1/callbacks/{correlation_id}?secret={secret}"),
                correlation_id,
            })
        })
    }
}

/// Pins the current step of `exec` to its plugin's current version.
fn pin_current_plugin(
    exec: &mut Execution,
    pinned: &crate::plugins::Pinned,
) -> Result<(), AdminError> {
    let i = exec.step_index;
    let plugin = &exec.steps[i].plugin;
    let current = pinned
        .get(plugin)
        .ok_or_else(|| AdminError::UnknownPlugin(plugin.clone()))?;
    exec.steps[i].plugin_hash = Some(current.hash.clone());
    Ok(())
}

/// The record after a write: version and time moved on, no pending resume.
fn bump(mut exec: Execution) -> Execution {
    exec.version += 1;
    exec.updated_ms = now_ms();
    exec.pending = None;
    exec
}

fn failed(exec: Execution, code: &str, text: &str) -> Execution {
    let from = exec.state;
    let mut next = bump(exec);
    next.state = ExecState::Failed;
    next.waiting = None;
    next.error = Some(ExecError {
        code: code.to_owned(),
        text: text.to_owned(),
        document_status: None,
        technical_status: None,
        step: next.step().name.clone(),
    });
    next.log(from, "failed", Some((code, text)));
    next
}

/// Names steps (plugin name by default, made unique by position).
pub fn step_specs(steps: &[crate::config::StepConfig]) -> Vec<StepSpec> {
    let mut out: Vec<StepSpec> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let mut name = s.name.clone().unwrap_or_else(|| s.plugin.clone());
        if out.iter().any(|o| o.name == name) {
            name = format!("{name}-{}", i + 1);
        }
        out.push(StepSpec {
            name,
            plugin: s.plugin.clone(),
            config: s.config.clone(),
            plugin_hash: None,
        });
    }
    out
}

fn step_context(exec: &Execution) -> bindings::StepContext {
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

fn to_wit_doc(doc: &Doc) -> bindings::Document {
    bindings::Document {
        content_type: doc.content_type.clone(),
        body: doc.body.clone(),
    }
}

fn to_wit_event(event: &ResumeWith) -> bindings::ResumeEvent {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn call(execution_id: &str) -> CallInfo {
        CallInfo {
            plugin: "p".into(),
            execution_id: execution_id.into(),
            step: "s".into(),
            step_run_id: "run".into(),
            attempt: 1,
            deadline: Instant::now(),
        }
    }

    fn registrar() -> DurableRegistrar {
        let store = Arc::new(crate::store::MemoryStore::new());
        DurableRegistrar::new(store, "http://x".into())
    }

    #[test]
    fn execution_ids_are_time_ordered_uuids() {
        let ids: Vec<String> = (0..100).map(|_| new_execution_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "later ids sort after earlier ones");
        for id in &ids {
            assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
        }
    }

    #[tokio::test]
    async fn tickets_are_derived_again_and_share_their_executions_time_order() {
        let registrar = registrar();
        let key = registrar.key().await.unwrap().to_vec();
        let exec_id = new_execution_id();
        let (cid, secret) = registrar.derived_ticket(&key, &call(&exec_id), 1, 0);
        // A re-run derives the same ticket; another attempt or index not.
        assert_eq!(
            registrar.derived_ticket(&key, &call(&exec_id), 1, 0),
            (cid.clone(), secret.clone())
        );
        assert_ne!(registrar.derived_ticket(&key, &call(&exec_id), 2, 0).0, cid);
        assert_ne!(registrar.derived_ticket(&key, &call(&exec_id), 1, 1).0, cid);
        let ticket = uuid::Uuid::parse_str(&cid).unwrap();
        let exec = uuid::Uuid::parse_str(&exec_id).unwrap();
        assert_eq!(ticket.get_version_num(), 7);
        assert_eq!(ticket.get_timestamp(), exec.get_timestamp());
        assert_eq!(secret.len(), 64);
    }

    #[tokio::test]
    async fn tickets_of_executions_with_random_ids_are_derived_as_before() {
        // Executions written before ids were time-ordered keep the ticket
        // derivation they were registered with, so a re-run after an
        // upgrade hands out the same ticket.
        let registrar = registrar();
        let key = registrar.key().await.unwrap().to_vec();
        let exec_id = uuid::Uuid::new_v4().to_string();
        let (cid, _) = registrar.derived_ticket(&key, &call(&exec_id), 1, 0);
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("correlation-id\n{exec_id}\nrun\n1\n0").as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        assert_eq!(
            cid,
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string()
        );
    }
}
