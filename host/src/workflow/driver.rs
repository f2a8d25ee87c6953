//! The driver: runs an execution's current step, and is the one place that
//! turns an event into a committed transition — read what the decision
//! needs, decide ([`transition::decide`]), commit once, run the effects —
//! for the step loop, callbacks, timers and operator actions alike.

use super::transition::{self, Ctx, Event, Reads, Refusal, Transition};
use super::*;

/// Whether a commit is made durable before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// Flushed before the caller answers anyone (a start, a callback's
    /// acknowledgement, an operator action).
    Now,
    /// Flushed by the next flush of the store: nobody is told yet (the
    /// step loop flushes each step boundary itself; see docs/operations.md
    /// for an end nobody waits on).
    Lazy,
}

/// Records a caller of [`Workflows::settle`] has already read.
#[derive(Debug, Default)]
pub(super) struct Known {
    /// The execution.
    pub execution: Option<Execution>,
    /// The callback record the event concerns.
    pub callback: Option<CallbackRecord>,
    /// Records of derived tickets (never stored yet): the one the event
    /// concerns stands in whenever the store has no record under its id.
    pub derived: Vec<CallbackRecord>,
}

/// What a settled event came to.
pub(super) struct Settled {
    /// The execution as written (absent when only a callback was).
    pub execution: Option<Execution>,
    /// What its driver does next.
    pub report: StepReport,
}

/// Reads the callback record a decision on `exec` needs, if any.
pub(super) async fn read_callback(
    store: &dyn crate::store::CallbackStore,
    needs: &transition::Needs,
) -> Result<Option<CallbackRecord>, StoreError> {
    match &needs.callback {
        Some(cid) => store.callback(cid).await,
        None => Ok(None),
    }
}

/// Reads the records of execution `id` a decision needs, if it needs them.
pub(super) async fn read_owned(
    store: &dyn crate::store::Store,
    id: &str,
    needs: &transition::Needs,
) -> Result<transition::Owned, StoreError> {
    if !needs.owned {
        return Ok(transition::Owned::default());
    }
    Ok(transition::Owned {
        callbacks: store.callbacks_of(id).await?,
        deliveries: store.deliveries_of(id).await?,
    })
}

impl Workflows {
    /// Drives an execution in the background until it stops running.
    pub fn spawn_drive(self: &Arc<Self>, id: String) {
        self.spawn_drive_reporting(id, None, None);
    }

    /// Drives `id`, starting from `known` when the caller has just written
    /// it (a read and a decode fewer; a copy that is stale by then only
    /// loses its compare-and-swap, as a fresh read could).
    fn spawn_drive_reporting(
        self: &Arc<Self>,
        id: String,
        first: Option<tokio::sync::oneshot::Sender<StepReport>>,
        known: Option<Execution>,
    ) {
        let this = self.clone();
        self.spawn(async move { this.drive(&id, first, known).await });
    }

    /// Runs step calls until the execution is no longer running. The first
    /// report goes to `first`, for a callback waiting for its verdict.
    pub(super) async fn drive(
        self: &Arc<Self>,
        id: &str,
        mut first: Option<tokio::sync::oneshot::Sender<StepReport>>,
        mut known: Option<Execution>,
    ) {
        use tracing::Instrument as _;
        loop {
            let span =
                tracing::info_span!("execution", execution_id = id, step = tracing::field::Empty);
            let report = match self.step_once(id, known.take()).instrument(span).await {
                Ok((report, written)) => {
                    known = written;
                    report
                }
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

    /// Runs (or resumes) the current step once and commits its outcome;
    /// returns what it led to, and the execution as written. `known`: the
    /// execution as its last writer wrote it, if at hand.
    pub(super) async fn step_once(
        self: &Arc<Self>,
        id: &str,
        known: Option<Execution>,
    ) -> Result<(StepReport, Option<Execution>), StoreError> {
        let exec = match known {
            Some(exec) => exec,
            None => match self.store.execution(id).await? {
                Some(exec) => exec,
                None => return Ok((StepReport::Lost, None)),
            },
        };
        if exec.state != ExecState::Running {
            return Ok((StepReport::Lost, None));
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
        let version = exec.version;
        let plugin = match plugin {
            Ok(p) => p,
            Err(e) => {
                let event = Event::PluginUnavailable {
                    version,
                    why: e.to_string(),
                };
                return self.settle_step(exec, &event).await;
            }
        };
        let call = CallInfo {
            plugin: plugin.name.clone(),
            execution_id: exec.id.clone(),
            step: step.name.clone(),
            step_run_id: exec.step_run_id.clone(),
            attempt: exec.attempt,
            version: exec.version,
            record_ms: exec.updated_ms,
            deadline: Instant::now() + Duration::from_millis(plugin.grant.limits.time_limit_ms),
        };
        let started = Instant::now();
        let result = self
            .executor
            .call(&plugin.pre, plugin.grant.clone(), call, invocation(&exec))
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
        let event = Event::Returned { version, outcome };
        self.settle_step_with(exec, &event, result.unstored).await
    }

    /// Commits a step's outcome on the execution it ran on. An early
    /// callback landing between the read and the commit makes the commit
    /// lose on the callback record alone: then the same outcome is decided
    /// again on what is stored now, which sees the callback and resumes at
    /// once. If the execution itself moved, the outcome is dropped.
    async fn settle_step(
        self: &Arc<Self>,
        exec: Execution,
        event: &Event,
    ) -> Result<(StepReport, Option<Execution>), StoreError> {
        self.settle_step_with(exec, event, Vec::new()).await
    }

    /// [`Self::settle_step`], with the records of the tickets the call
    /// derived (a `suspend` on one of them creates its record).
    async fn settle_step_with(
        self: &Arc<Self>,
        exec: Execution,
        event: &Event,
        derived: Vec<CallbackRecord>,
    ) -> Result<(StepReport, Option<Execution>), StoreError> {
        let id = exec.id.clone();
        let step = exec.step().name.clone();
        let known = Known {
            execution: Some(exec),
            callback: None,
            derived,
        };
        let report = self
            .settle(&id, event, Durability::Lazy, None, known)
            .await?;
        Ok(match report {
            Ok(settled) => (settled.report, settled.execution),
            Err(Refusal::Lost) => {
                tracing::warn!(execution_id = %id, %step, "execution changed under a running step; dropping its outcome");
                (StepReport::Lost, None)
            }
            Err(_) => (StepReport::Lost, None),
        })
    }

    /// Reads, decides and commits `event` on execution `id`, and decides
    /// again on fresh reads while the commit loses a race (bounded, against
    /// records that change without end). `known` is what the caller has
    /// already read, used for the first decision only (a stale copy just
    /// loses the compare-and-swap). `first` gets the first report of a
    /// driver this transition starts.
    pub(super) async fn settle(
        self: &Arc<Self>,
        id: &str,
        event: &Event,
        durability: Durability,
        mut first: Option<tokio::sync::oneshot::Sender<StepReport>>,
        mut known: Known,
    ) -> Result<Result<Settled, Refusal>, StoreError> {
        for _ in 0..16 {
            let exec = match known.execution.take() {
                Some(exec) => exec,
                None => match self.store.execution(id).await? {
                    Some(exec) => exec,
                    None => return Ok(Err(Refusal::NotFound)),
                },
            };
            let needs = transition::needs(&exec, event);
            let callback = match known
                .callback
                .take()
                .filter(|r| needs.callback.as_ref() == Some(&r.correlation_id))
            {
                Some(rec) => Some(rec),
                None => match read_callback(self.store.as_ref(), &needs).await? {
                    Some(rec) => Some(rec),
                    None => known
                        .derived
                        .iter()
                        .find(|r| needs.callback.as_ref() == Some(&r.correlation_id))
                        .cloned(),
                },
            };
            // Held until the write is done: none of the plugins a new step
            // is pinned to can be deleted in between.
            let pinned = match event {
                Event::Retry | Event::Skip => Some(self.pin_ahead(&exec).await),
                _ => None,
            };
            let plugins = needs
                .plugins
                .iter()
                .filter_map(|name| {
                    let hash = match &pinned {
                        Some(p) => p.get(name).map(|p| p.hash.clone()),
                        None => self.registry.current(name).map(|p| p.hash.clone()),
                    };
                    Some((name.clone(), hash?))
                })
                .collect();
            let owned = read_owned(self.store.as_ref(), id, &needs).await?;
            let reads = Reads {
                callback,
                plugins,
                owned,
            };
            let t = match transition::decide(exec, event, &reads, &self.ctx()) {
                Ok(t) => t,
                Err(Refusal::Settling) => {
                    // Let the write that is resuming it land first.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                Err(refusal) => return Ok(Err(refusal)),
            };
            let report = t.report();
            match self.commit(t, durability, &mut first).await {
                Ok(execution) => return Ok(Ok(Settled { execution, report })),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(
            "the records kept changing; try again".into(),
        ))
    }

    /// What a decision takes from the world.
    pub(super) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            now_ms: now_ms(),
            new_id: &new_id,
            limits: &self.limits,
        }
    }

    /// The one commit path: writes a transition (with the result delivery
    /// of an execution it ends), then runs its effects — metrics, timer
    /// wake-ups, the flush `durability` asks for, and a driver for an
    /// execution it moved into `running`. Returns the execution written.
    pub(super) async fn commit(
        self: &Arc<Self>,
        t: Transition,
        durability: Durability,
        first: &mut Option<tokio::sync::oneshot::Sender<StepReport>>,
    ) -> Result<Option<Execution>, StoreError> {
        let Transition {
            from,
            mut change,
            effects,
        } = t;
        let delivering = self.enqueue_on_end(&mut change).await?;
        // Whoever writes `running` drives it: the owner is this node, and
        // nobody once it stops running.
        if let Some(exec) = change.execution.as_mut() {
            exec.owner = (exec.state == ExecState::Running).then(|| self.node.clone());
        }
        self.store.apply(&change).await?;
        if let (Some(removed), Some(_)) = (&change.remove, from) {
            self.metrics.removed();
            tracing::debug!(execution_id = %removed.id, "execution removed");
        }
        let execution = change.execution.take();
        if let Some(exec) = &execution {
            self.metrics.transition(from, exec.state);
            if exec.state.is_terminal() {
                tracing::info!(execution_id = %exec.id, step = %exec.step().name, state = exec.state.as_str(), "execution ended");
            }
        }
        if let Some(kind) = effects.timer_fired {
            self.metrics.timer_fired(kind);
        }
        if delivering {
            self.metrics.delivery_enqueued();
            self.timer_wake.now();
        }
        if let Some(due) = effects.wake_at {
            self.timer_wake.added(due);
        }
        if durability == Durability::Now {
            self.store.flush().await?;
        }
        if effects.drive
            && let Some(exec) = &execution
        {
            self.spawn_drive_reporting(exec.id.clone(), first.take(), Some(exec.clone()));
        }
        Ok(execution)
    }
}

impl Workflows {
    /// If `change` ends an execution whose client asked for the result,
    /// adds the delivery and its timer (due now) to that very change: no
    /// end without its delivery. Returns whether it did.
    async fn enqueue_on_end(&self, change: &mut Change) -> Result<bool, StoreError> {
        let Some(exec) = change.execution.as_ref().filter(|e| e.state.is_terminal()) else {
            return Ok(false);
        };
        let armed = self
            .store
            .delivery(&crate::model::delivery_key(&exec.id, 0))
            .await?;
        let Some(armed) = armed else {
            return Ok(false);
        };
        let webhook_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let delivery = crate::model::Delivery::of_end(exec, &armed.url, webhook_id, now_ms());
        change.add_timers.extend(delivery.timer());
        change.deliveries.push(delivery);
        Ok(true)
    }
}

/// What to call for the current step of a running `exec`: `run`, or
/// `resume` with the claimed event — the same after a restart as before
/// it, since both come from the stored record.
pub(super) fn invocation(exec: &Execution) -> Invocation {
    let ctx = step_context(exec);
    let input = to_wit_doc(&exec.document);
    match &exec.pending {
        None => Invocation::Run { ctx, input },
        Some(p) => Invocation::Resume {
            ctx,
            input,
            state: p.state.clone(),
            event: to_wit_event(&p.event),
        },
    }
}
