//! Runs one step call — `describe`, `run` or `resume` — in a fresh store on
//! a pre-instantiated component, under the plugin's limits, and maps
//! whatever happened to an [`Outcome`] or a [`StepError`] with a stable code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

use crate::bindings::{
    Document, Outcome, PluginInfo, ResumeEvent, StepContext, StepPlugin, StepPluginPre,
};
use crate::capabilities::{CallInfo, Grant, HostServices, RecordedRequest, StepState};

/// Why a call produced no outcome.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    /// The call ran past its time limit.
    #[error("step exceeded its time limit of {limit_ms} ms (stopped after {after_ms} ms)")]
    TimeLimit {
        /// The limit.
        limit_ms: u64,
        /// When it was actually stopped, from the start of the call.
        after_ms: u64,
    },
    /// The plugin tried to grow its memory past the limit.
    #[error("step exceeded its memory limit of {0} MiB")]
    MemoryLimit(u64),
    /// The plugin trapped (panicked, hit `unreachable`, ...).
    #[error("step trapped: {0}")]
    Trap(String),
    /// The component could not be instantiated.
    #[error("step could not be instantiated: {0}")]
    Instantiate(String),
}

impl StepError {
    /// The error code recorded on the execution.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TimeLimit { .. } => "time-limit",
            Self::MemoryLimit(_) => "memory-limit",
            Self::Trap(_) => "trap",
            Self::Instantiate(_) => "instantiate",
        }
    }
}

/// What to call.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// `run(ctx, input)`.
    Run {
        /// Context.
        ctx: StepContext,
        /// Input.
        input: Document,
    },
    /// `resume(ctx, input, state, event)`.
    Resume {
        /// Context.
        ctx: StepContext,
        /// Input.
        input: Document,
        /// The state from `suspend` or `retry-after`.
        state: Vec<u8>,
        /// Why.
        event: ResumeEvent,
    },
}

/// The result of one call, with the requests it made on the way.
#[derive(Debug)]
pub struct CallResult {
    /// The outcome or the error.
    pub outcome: Result<Outcome, StepError>,
    /// Outbound requests, in order, secrets masked.
    pub requests: Vec<RecordedRequest>,
    /// Callback registrations of the call that were not stored (see
    /// [`crate::capabilities::Registration::unstored`]).
    pub unstored: Vec<crate::model::CallbackRecord>,
}

/// The wasm side of the daemon: engine, linker, and shared host services.
pub struct Executor {
    engine: Engine,
    linker: Linker<StepState>,
    services: HostServices,
    /// One permit per instance slot of the engine's pool: a call beyond the
    /// pool waits for a slot instead of failing to instantiate.
    slots: Arc<tokio::sync::Semaphore>,
    /// How many permits `slots` was made with.
    capacity: u32,
    /// Calls waiting for a slot right now.
    waiting: Arc<std::sync::atomic::AtomicU64>,
}

pub use crate::metrics::SlotUsage;

/// Counts a call as waiting for a slot while it lives.
struct Waiting(Arc<std::sync::atomic::AtomicU64>);

impl Waiting {
    fn new(counter: &Arc<std::sync::atomic::AtomicU64>) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl Executor {
    /// Links WASI (empty context) and the stephost imports.
    pub fn new(engine: Engine, services: HostServices) -> anyhow::Result<Self> {
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("link WASI")?;
        StepPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("link the stephost imports")?;
        Ok(Self {
            engine,
            linker,
            services,
            slots: Arc::new(tokio::sync::Semaphore::new(
                crate::wasm::engine::DEFAULT_MAX_INSTANCES as usize,
            )),
            capacity: crate::wasm::engine::DEFAULT_MAX_INSTANCES,
            waiting: Arc::default(),
        })
    }

    /// Sets how many calls may hold an instance at once; must not exceed
    /// the engine's [`crate::wasm::engine::EngineOptions::max_instances`].
    pub fn with_max_instances(mut self, n: u32) -> Self {
        self.capacity = n.max(1);
        self.slots = Arc::new(tokio::sync::Semaphore::new(self.capacity as usize));
        self
    }

    /// Slots in use and calls waiting for one.
    pub fn slot_usage(&self) -> SlotUsage {
        let capacity = u64::from(self.capacity);
        SlotUsage {
            capacity,
            in_use: capacity.saturating_sub(self.slots.available_permits() as u64),
            waiting: self.waiting.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The engine components must be compiled with.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Type-checks a compiled component against the `step-plugin` world and
    /// pre-instantiates it, so each call only has to instantiate.
    pub fn prepare(&self, component: &Component) -> anyhow::Result<StepPluginPre<StepState>> {
        let pre = self.linker.instantiate_pre(component)?;
        Ok(StepPluginPre::new(pre)?)
    }

    /// Calls `describe`.
    pub async fn describe(
        &self,
        pre: &StepPluginPre<StepState>,
        grant: Arc<Grant>,
        plugin: &str,
    ) -> Result<PluginInfo, StepError> {
        let call = CallInfo {
            plugin: plugin.to_owned(),
            execution_id: String::new(),
            step: String::new(),
            step_run_id: String::new(),
            attempt: 1,
            version: 0,
            record_ms: 0,
            deadline: Instant::now() + Duration::from_millis(grant.limits.time_limit_ms),
        };
        let (result, _, _) = self
            .with_instance(pre, grant, call, |instance, store| {
                Box::pin(async move { instance.stephost_plugin_step().call_describe(store).await })
            })
            .await;
        result
    }

    /// Calls `run` or `resume`.
    pub async fn call(
        &self,
        pre: &StepPluginPre<StepState>,
        grant: Arc<Grant>,
        call: CallInfo,
        invocation: Invocation,
    ) -> CallResult {
        let (outcome, requests, unstored) = self
            .with_instance(pre, grant, call, move |instance, store| {
                Box::pin(async move {
                    let step = instance.stephost_plugin_step();
                    match invocation {
                        Invocation::Run { ctx, input } => step.call_run(store, &ctx, &input).await,
                        Invocation::Resume {
                            ctx,
                            input,
                            state,
                            event,
                        } => step.call_resume(store, &ctx, &input, &state, &event).await,
                    }
                })
            })
            .await;
        CallResult {
            outcome,
            requests,
            unstored,
        }
    }

    /// Instantiates the component in a fresh store with the call's limits,
    /// runs `f`, and classifies a failure.
    async fn with_instance<R, F>(
        &self,
        pre: &StepPluginPre<StepState>,
        grant: Arc<Grant>,
        call: CallInfo,
        f: F,
    ) -> (
        Result<R, StepError>,
        Vec<RecordedRequest>,
        Vec<crate::model::CallbackRecord>,
    )
    where
        F: for<'a> FnOnce(
            StepPlugin,
            &'a mut Store<StepState>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>,
        >,
    {
        let limit_ms = grant.limits.time_limit_ms;
        let memory_mb = grant.limits.memory_mb;
        let deadline = call.deadline;
        let started = deadline
            .checked_sub(Duration::from_millis(limit_ms))
            .unwrap_or_else(Instant::now);
        let time_limit = move || StepError::TimeLimit {
            limit_ms,
            after_ms: started.elapsed().as_millis() as u64,
        };
        // Declared before the store, so it is released after the store
        // (and its pool slot) is dropped.
        let _slot = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::debug!(plugin = %call.plugin, "all instance slots busy; waiting for one");
                let _waiting = Waiting::new(&self.waiting);
                let wait = self.slots.clone().acquire_owned();
                match tokio::time::timeout_at(deadline.into(), wait).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => {
                        return (
                            Err(StepError::Instantiate("the executor is shut down".into())),
                            Vec::new(),
                            Vec::new(),
                        );
                    }
                    Err(_) => return (Err(time_limit()), Vec::new(), Vec::new()),
                }
            }
        };
        let mut store = Store::new(
            &self.engine,
            StepState::new(grant, call, self.services.clone()),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            if Instant::now() >= deadline {
                ctx.data_mut().timed_out = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            // Yield at every tick so a busy plugin cannot hog a runtime
            // thread that other steps and the API need.
            Ok(UpdateDeadline::Yield(1))
        });

        // Host calls (HTTP, registration) are clipped to the deadline
        // themselves; this bound catches anything that is not, plus margin.
        let budget = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        let run = async {
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| StepError::Instantiate(format!("{e:#}")))?;
            f(instance, &mut store).await.map_err(|e| {
                let data = store.data();
                if data.timed_out {
                    time_limit()
                } else if data.limiter.memory_exceeded {
                    StepError::MemoryLimit(memory_mb)
                } else {
                    let mut text = trap_text(&e);
                    if let Some(words) = data.stderr.last_words() {
                        text = format!("{text}; stderr: {words}");
                    }
                    StepError::Trap(data.grant.mask(&text))
                }
            })
        };
        let result = match tokio::time::timeout(budget, run).await {
            Ok(result) => result,
            Err(_) => Err(time_limit()),
        };
        let requests = std::mem::take(&mut store.data_mut().requests);
        let unstored = std::mem::take(&mut store.data_mut().unstored);
        (result, requests, unstored)
    }
}

/// The first line of a trap's message and its trap code: enough to tell a
/// panic from an `unreachable` without dumping a whole backtrace.
fn trap_text(e: &wasmtime::Error) -> String {
    // A trap's own message says what happened; the error's first line is
    // only "error while executing at wasm backtrace:".
    let mut text = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{e:#}")
            .lines()
            .next()
            .unwrap_or("unknown trap")
            .to_owned(),
    };
    if text.len() > 2000 {
        let mut cut = 2000;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// `Failure::HOST_CODES` lists every code the host records: tested here,
/// above both the failures and the step calls whose codes it lists.
#[cfg(test)]
mod host_codes {
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::Failure;

    /// One failure of every kind the host records. The matches are
    /// exhaustive so that a new variant of `Failure` or `StepError` does
    /// not compile here until it is listed, and then checked.
    fn every_host_failure() -> Vec<Failure> {
        let calls = [
            StepError::TimeLimit {
                limit_ms: 1,
                after_ms: 2,
            },
            StepError::MemoryLimit(1),
            StepError::Trap(String::new()),
            StepError::Instantiate(String::new()),
        ];
        for call in &calls {
            match call {
                StepError::TimeLimit { .. }
                | StepError::MemoryLimit(_)
                | StepError::Trap(_)
                | StepError::Instantiate(_) => {}
            }
        }
        let mut all = vec![
            Failure::PluginUnavailable,
            Failure::CallbackTimeout,
            Failure::StepFailed,
            Failure::StateTooLarge,
            Failure::BodyTooLarge,
            Failure::InvalidSuspension,
            Failure::InvalidOutcome,
            Failure::Cancelled,
        ];
        for failure in &all {
            match failure {
                Failure::PluginUnavailable
                | Failure::CallbackTimeout
                | Failure::StepFailed
                | Failure::StateTooLarge
                | Failure::BodyTooLarge
                | Failure::InvalidSuspension
                | Failure::InvalidOutcome
                | Failure::Cancelled => {}
                // A step's own code, and the call codes listed above.
                Failure::Step(_) | Failure::Call(_) => {}
            }
        }
        all.extend(calls.iter().map(|call| Failure::Call(call.code())));
        all
    }

    #[test]
    fn host_codes_are_exactly_the_codes_the_host_records() {
        let produced: BTreeSet<String> = every_host_failure()
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect();
        let listed: BTreeSet<String> = Failure::HOST_CODES
            .iter()
            .map(|(code, _)| (*code).to_owned())
            .collect();
        assert_eq!(
            listed.len(),
            Failure::HOST_CODES.len(),
            "a code is listed twice"
        );
        assert_eq!(produced, listed);
    }
}
