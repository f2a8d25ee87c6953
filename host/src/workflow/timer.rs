//! A durable timer firing: a callback timeout or a retry-after claims the
//! execution it guards and resumes its step.

use super::*;

impl Workflows {
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
}
