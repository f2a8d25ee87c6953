//! Resuming a suspended execution: its callback comes (or comes early, and
//! is kept for the `suspend` it answers), or its timer fires.

use crate::model::{
    CallbackState, ExecState, Execution, PendingResume, ReceivedCallback, ResumeWith, Timer,
    TimerKind,
};

use super::{Ctx, Reads, Refusal, Transition, bump};

/// A partner's callback for `correlation_id`, already admitted by its
/// secret or token; `reads.callback` is its record.
pub(super) fn callback(
    exec: Execution,
    correlation_id: &str,
    callback: &ReceivedCallback,
    reads: &Reads,
    ctx: &Ctx<'_>,
) -> Result<Transition, Refusal> {
    let rec = reads
        .callback
        .as_ref()
        .filter(|r| r.correlation_id == correlation_id && r.execution_id == exec.id)
        .ok_or(Refusal::NotFound)?;
    match &rec.state {
        CallbackState::Consumed => {
            return Err(Refusal::Duplicate("this callback was already delivered"));
        }
        CallbackState::Received { .. } => {
            return Err(Refusal::Duplicate(
                "a callback for this id was already received and is waiting for delivery",
            ));
        }
        CallbackState::Expired => {
            return Err(Refusal::Gone(
                "the wait for this callback is over (timed out)".into(),
            ));
        }
        CallbackState::Registered | CallbackState::Waiting => {}
    }
    if exec.state.is_terminal() {
        return Err(Refusal::Gone(format!(
            "the execution this callback belongs to has already {}",
            exec.state.as_str()
        )));
    }
    if rec.state == CallbackState::Registered {
        // A ticket handed out by a step run or attempt that is over (the
        // execution moved on to another step, or an admin retry or a
        // retry-after started a new attempt, which registers its own):
        // nothing will ever wait for it, so storing the callback would
        // acknowledge what is then lost.
        let stale_attempt = rec.attempt.is_some_and(|a| a != exec.attempt);
        if rec.step_run_id != exec.step_run_id || stale_attempt {
            return Err(Refusal::Gone(
                "the step attempt this callback belongs to is over; a later attempt has its own callback URL"
                    .into(),
            ));
        }
        // Early: the step has not suspended yet. Keep the callback; the
        // `suspend` it answers takes it and resumes at once.
        let mut rec = rec.clone();
        rec.version += 1;
        rec.state = CallbackState::Received {
            callback: callback.clone(),
        };
        let mut t = Transition {
            from: None,
            change: Default::default(),
            effects: Default::default(),
        };
        t.change.callbacks.push(rec);
        return Ok(t);
    }
    let Some(waiting) = exec.waiting.clone().filter(|w| {
        exec.state == ExecState::Suspended && w.correlation_id.as_deref() == Some(correlation_id)
    }) else {
        // The record says waiting, the execution does not (yet): a timer
        // or another callback is mid-way through resuming it.
        return Err(Refusal::Settling);
    };
    let from = exec.state;
    let mut next = bump(exec, ctx);
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
    next.log_at(ctx.now_ms, from, "callback", None);
    let timer = Timer {
        due_ms: waiting.due_ms,
        execution_id: next.id.clone(),
        kind: TimerKind::CallbackTimeout,
    };
    let mut rec = rec.clone();
    rec.version += 1;
    rec.state = CallbackState::Consumed;
    let mut t = Transition::write(from, next);
    t.change.callbacks.push(rec);
    t.change.remove_timers.push(timer);
    t.effects.drive = true;
    Ok(t)
}

/// A callback-timeout or retry timer came due: it claims the execution if
/// the execution still waits for exactly that timer.
pub(super) fn timer(
    exec: Execution,
    timer: &Timer,
    reads: &Reads,
    ctx: &Ctx<'_>,
) -> Result<Transition, Refusal> {
    let live = exec.waiting.clone().filter(|w| {
        let kind_ok = match timer.kind {
            TimerKind::CallbackTimeout => w.correlation_id.is_some(),
            TimerKind::Retry => w.correlation_id.is_none(),
            // Result deliveries are fired by `crate::delivery`.
            TimerKind::Delivery { .. } => false,
        };
        exec.id == timer.execution_id
            && exec.state == ExecState::Suspended
            && w.due_ms == timer.due_ms
            && kind_ok
    });
    let Some(waiting) = live else {
        return Err(Refusal::Stale);
    };
    let from = exec.state;
    let mut next = bump(exec, ctx);
    next.state = ExecState::Running;
    next.waiting = None;
    let mut t_callbacks = Vec::new();
    let (event, kind) = if timer.kind == TimerKind::Retry {
        next.attempt += 1;
        next.log_at(ctx.now_ms, from, "timer", None);
        (ResumeWith::Timer, "retry")
    } else {
        if let Some(rec) = reads
            .callback
            .as_ref()
            .filter(|r| waiting.correlation_id.as_ref() == Some(&r.correlation_id))
        {
            let mut rec = rec.clone();
            rec.version += 1;
            rec.state = CallbackState::Expired;
            t_callbacks.push(rec);
        }
        next.log_at(ctx.now_ms, from, "timeout", None);
        (ResumeWith::Timeout, "callback-timeout")
    };
    next.pending = Some(PendingResume {
        event,
        state: waiting.state.clone(),
        waiting,
    });
    let mut t = Transition::write(from, next);
    t.change.callbacks = t_callbacks;
    t.change.remove_timers.push(timer.clone());
    t.effects.drive = true;
    t.effects.timer_fired = Some(kind);
    Ok(t)
}
