//! The driver: runs an execution's current step, turns its outcome into
//! the next state and commits it, step after step, until the execution
//! waits or ends.

use super::*;

impl Workflows {
    /// Drives an execution in the background until it stops running.
    pub fn spawn_drive(self: &Arc<Self>, id: String) {
        let this = self.clone();
        self.spawn(async move { this.drive(&id, None).await });
    }

    /// Runs step calls until the execution is no longer running. The first
    /// report goes to `first`, for a callback waiting for its verdict.
    pub(super) async fn drive(
        &self,
        id: &str,
        mut first: Option<tokio::sync::oneshot::Sender<StepReport>>,
    ) {
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
    pub(super) async fn step_once(&self, id: &str) -> Result<StepReport, StoreError> {
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
    pub(super) async fn apply_outcome(
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

    pub(super) fn wake_timers_for(&self, due: u64) {
        self.timer_wake.added(due);
    }

    /// Writes a transition; reports what the execution does next.
    pub(super) async fn commit(
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

    pub(super) fn complete(&self, exec: Execution, doc: bindings::Document) -> Execution {
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
    pub(super) async fn suspend(
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
}
