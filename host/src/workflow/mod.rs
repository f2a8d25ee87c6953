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
use crate::model::{
    CallbackRecord, Doc, ExecState, Execution, IdempotentStart, ReceivedCallback, ResumeWith,
    StartKey, StepSpec, Timer, TimerKind, now_ms,
};
use crate::store::{Change, Store, StoreError};
use crate::wasm::executor::{Executor, Invocation};
use crate::wasm::plugins::{PluginError, Registry};

mod admin;
mod driver;
mod ingress;
mod lead;
mod registrar;
mod retention;
mod takeover;
mod timer;
pub mod transition;
mod wake;
mod wit;

pub use admin::AdminError;
pub use ingress::{CallbackError, CallbackReply};
pub use registrar::{DurableRegistrar, Locator, TICKET_KEY};
pub use wake::TimerWake;
use wit::{step_context, to_wit_doc, to_wit_event};

/// Why an execution could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No workflow by that name.
    #[error("unknown workflow {0:?}")]
    UnknownWorkflow(String),
    /// A step names a plugin that is not loaded.
    #[error("unknown plugin {0:?}")]
    UnknownPlugin(String),
    /// Another request with the same idempotency key started an execution
    /// first (while this one was on its way): its record.
    #[error("idempotency key {:?} already started execution {}", .0.key, .0.execution_id)]
    AlreadyStarted(Box<IdempotentStart>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    timer_wake: Arc<TimerWake>,
    metrics: Arc<crate::metrics::Metrics>,
    limits: transition::Limits,
    /// The key callback tickets are derived under, read once.
    ticket_key: registrar::TicketKey,
    /// This daemon's node id: the owner it writes on the executions it
    /// drives, and the name of its heartbeat.
    node: String,
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

/// A node id: the host's name, so that an operator knows which machine
/// it was, and a random part, so that a restarted daemon is a new node
/// (its previous life's executions are taken over, never silently
/// adopted while that life might still be writing).
fn new_node_id() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let random = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}-{random}")
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
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            timer_wake: Arc::default(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            limits: transition::Limits::of(&config),
            ticket_key: registrar::TicketKey::default(),
            node: new_node_id(),
            config,
        }
    }

    /// This daemon's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Instance slots in use and step calls waiting for one.
    pub fn slot_usage(&self) -> crate::wasm::executor::SlotUsage {
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
    pub fn timer_wake(&self) -> Arc<TimerWake> {
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
        self.start_with_delivery(target, input, None, None).await
    }

    /// [`Workflows::start`], and when `callback_url` is given, the result
    /// is POSTed there when the execution ends (see [`crate::delivery`]):
    /// that wish is written with the execution, in the same change. With a
    /// `key`, its record is written in that change too, and a key another
    /// start stored first refuses this one with
    /// [`StartError::AlreadyStarted`].
    pub async fn start_with_delivery(
        self: &Arc<Self>,
        target: Target,
        input: Doc,
        callback_url: Option<String>,
        key: Option<StartKey>,
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
        let t = transition::start(
            new_execution_id(),
            workflow,
            steps,
            input,
            callback_url.as_deref(),
            key.as_ref(),
            &self.ctx(),
        );
        let exec = match self.commit(t, driver::Durability::Now, &mut None).await {
            Ok(exec) => exec.expect("a start writes its execution"),
            // A new execution id conflicts with nothing: the key does.
            Err(StoreError::Conflict(why)) if key.is_some() => {
                let key = key.map(|k| k.key).unwrap_or_default();
                return match self.store.idempotent_start(&key).await? {
                    Some(first) => {
                        // Answered only once durable, as a start is.
                        self.store.flush().await?;
                        Err(StartError::AlreadyStarted(Box::new(first)))
                    }
                    None => Err(StoreError::Conflict(why).into()),
                };
            }
            Err(e) => return Err(e.into()),
        };
        drop(pinned);
        Ok(exec)
    }

    /// The executions that were `running` when the daemon stopped. Read
    /// once at open, before anything can start a new execution, so that
    /// recovery never drives an execution a live caller is driving.
    /// On a store several daemons share, nothing is read here: the others'
    /// running executions are theirs, and those of a node that stopped are
    /// taken over by the heartbeat loop ([`Workflows::run_membership`]).
    pub async fn interrupted(&self) -> Result<Vec<String>, StoreError> {
        if self.store.is_shared() {
            return Ok(Vec::new());
        }
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
