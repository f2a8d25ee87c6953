//! Operator actions on one execution: retry, skip and cancel. Each reads,
//! decides and commits once, and decides again if it lost a race.

use super::*;

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

impl Workflows {
    /// Re-runs the failed step of a failed execution: same step-run-id (so
    /// partners can dedupe), next attempt, on the plugin's current version.
    pub async fn retry(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
        settled(|| self.try_retry(id)).await
    }

    pub(super) async fn try_retry(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
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

    pub(super) async fn try_skip(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
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

    pub(super) async fn try_cancel(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
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

    pub(super) async fn failed_execution(&self, id: &str) -> Result<Execution, AdminError> {
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
    pub(super) async fn pin_ahead(&self, exec: &Execution) -> crate::plugins::Pinned {
        let ahead = exec.steps.get(exec.step_index..).unwrap_or_default();
        self.registry
            .pin(ahead.iter().map(|s| s.plugin.as_str()))
            .await
    }

    pub(super) async fn admin_commit(
        self: &Arc<Self>,
        next: Execution,
    ) -> Result<Execution, AdminError> {
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
}
