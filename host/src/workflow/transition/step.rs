//! A step call returned: complete, fail, suspend, retry-after or
//! reject-callback (or no outcome at all) becomes the execution's next
//! state.

use crate::bindings::{self, Outcome};
use crate::model::{
    CallbackState, Doc, ExecState, Execution, Failure, PendingResume, ResumeWith, Timer, TimerKind,
    Waiting,
};
use crate::wasm::executor::StepError;

use super::{Ctx, Reads, Refusal, Transition, bump, fail, set_failed, start_next_step};

/// The outcome of the current step's call, on the running `exec`.
pub(super) fn returned(
    exec: Execution,
    outcome: &Result<Outcome, StepError>,
    reads: &Reads,
    ctx: &Ctx<'_>,
) -> Result<Transition, Refusal> {
    let on_timeout = matches!(
        exec.pending.as_ref().map(|p| &p.event),
        Some(ResumeWith::Timeout)
    );
    Ok(match outcome {
        Err(e) if on_timeout => fail(
            exec,
            Failure::CallbackTimeout,
            &format!("the callback did not arrive in time, and the step did not decide: {e}"),
            ctx,
        ),
        Err(e) => fail(exec, Failure::Call(e.code()), &e.to_string(), ctx),
        Ok(Outcome::Complete(doc)) => complete(exec, doc, reads, ctx),
        Ok(Outcome::Fail(f)) => {
            let failure = match &f.error_code {
                Some(code) => Failure::Step(code.clone()),
                None => Failure::StepFailed,
            };
            let mut t = fail(exec, failure, &f.error_text, ctx);
            if let Some(err) = t.change.execution.as_mut().and_then(|e| e.error.as_mut()) {
                err.document_status = f.document_status.clone();
                err.technical_status = f.technical_status.clone();
            }
            t
        }
        Ok(Outcome::Suspend(s)) => suspend(exec, s, reads, ctx),
        Ok(Outcome::RetryAfter(r)) => retry_after(exec, r, ctx),
        Ok(Outcome::RejectCallback(reason)) => reject_callback(exec, reason, reads, ctx),
    })
}

/// `complete`: the next step starts on the output, or the execution
/// completes with it.
fn complete(exec: Execution, doc: &bindings::Document, reads: &Reads, ctx: &Ctx<'_>) -> Transition {
    let max = ctx.limits.max_output_bytes;
    if doc.body.len() > max {
        return fail(
            exec,
            Failure::BodyTooLarge,
            &format!(
                "output of {} bytes exceeds the limit of {max}",
                doc.body.len()
            ),
            ctx,
        );
    }
    let doc = Doc {
        content_type: doc.content_type.clone(),
        body: doc.body.clone(),
    };
    let from = exec.state;
    let mut next = bump(exec, ctx);
    let name = next.step().name.clone();
    next.outputs.insert(name, doc.to_json_value());
    if next.step_index + 1 == next.steps.len() {
        next.state = ExecState::Completed;
        next.output = Some(doc);
        next.log_at(ctx.now_ms, from, "completed", None);
        return Transition::write(from, next);
    }
    next.log_at(ctx.now_ms, from, "step-completed", None);
    next.document = doc;
    if let Err(plugin) = start_next_step(&mut next, reads, ctx) {
        let text = format!("plugin {plugin:?} is not loaded");
        set_failed(&mut next, Failure::PluginUnavailable, &text, ctx);
    }
    Transition::write(from, next)
}

/// `suspend`: checks the correlation id, then parks the execution on its
/// callback, or, when the callback already came, resumes at once.
fn suspend(exec: Execution, s: &bindings::Suspension, reads: &Reads, ctx: &Ctx<'_>) -> Transition {
    let limits = ctx.limits;
    if s.state.len() > limits.max_state_bytes {
        return fail(
            exec,
            Failure::StateTooLarge,
            &format!(
                "suspension state of {} bytes exceeds the limit of {}",
                s.state.len(),
                limits.max_state_bytes
            ),
            ctx,
        );
    }
    let registered_here = |r: &&crate::model::CallbackRecord| {
        r.correlation_id == s.correlation_id
            && r.execution_id == exec.id
            && r.step_run_id == exec.step_run_id
    };
    let Some(rec) = reads.callback.as_ref().filter(registered_here) else {
        return fail(
            exec,
            Failure::InvalidSuspension,
            &format!(
                "correlation id {:?} was not registered by this step (call callbacks.register first)",
                s.correlation_id
            ),
            ctx,
        );
    };
    let timeout = s
        .timeout_ms
        .unwrap_or(limits.default_callback_timeout_ms)
        .clamp(1, limits.max_callback_timeout_ms);
    let waiting = Waiting {
        correlation_id: Some(s.correlation_id.clone()),
        state: s.state.clone(),
        due_ms: ctx.now_ms.saturating_add(timeout),
    };
    let mut rec = rec.clone();
    rec.version += 1;
    let from = exec.state;
    match std::mem::replace(&mut rec.state, CallbackState::Consumed) {
        CallbackState::Received { callback } => {
            let mut next = bump(exec, ctx);
            // Suspended and at once resumed: two lines whose from/to chain
            // (running → suspended → running).
            next.state = ExecState::Suspended;
            next.log_at(ctx.now_ms, from, "suspended", None);
            next.state = ExecState::Running;
            next.log_at(ctx.now_ms, ExecState::Suspended, "callback", None);
            next.pending = Some(PendingResume {
                event: ResumeWith::Callback {
                    correlation_id: s.correlation_id.clone(),
                    callback,
                },
                state: waiting.state.clone(),
                waiting,
            });
            let mut t = Transition::write(from, next);
            t.change.callbacks.push(rec);
            t
        }
        CallbackState::Registered => {
            rec.state = CallbackState::Waiting;
            let mut next = bump(exec, ctx);
            next.state = ExecState::Suspended;
            let timer = Timer {
                due_ms: waiting.due_ms,
                execution_id: next.id.clone(),
                kind: TimerKind::CallbackTimeout,
            };
            next.waiting = Some(waiting);
            next.log_at(ctx.now_ms, from, "suspended", None);
            let mut t = Transition::write(from, next);
            t.change.callbacks.push(rec);
            t.add_timer(timer);
            t
        }
        used => fail(
            exec,
            Failure::InvalidSuspension,
            &format!(
                "callback {:?} was already used ({used:?})",
                s.correlation_id
            ),
            ctx,
        ),
    }
}

/// `retry-after`: the execution waits for a timer, then the step is
/// resumed with its state.
fn retry_after(exec: Execution, r: &bindings::Retry, ctx: &Ctx<'_>) -> Transition {
    let limits = ctx.limits;
    if r.state.len() > limits.max_state_bytes {
        return fail(
            exec,
            Failure::StateTooLarge,
            &format!(
                "retry-after state of {} bytes exceeds the limit of {}",
                r.state.len(),
                limits.max_state_bytes
            ),
            ctx,
        );
    }
    let from = exec.state;
    let mut next = bump(exec, ctx);
    let due = ctx
        .now_ms
        .saturating_add(r.delay_ms.min(limits.max_callback_timeout_ms));
    next.state = ExecState::Suspended;
    next.waiting = Some(Waiting {
        correlation_id: None,
        state: r.state.clone(),
        due_ms: due,
    });
    next.log_at(ctx.now_ms, from, "retry-after", None);
    let timer = Timer {
        due_ms: due,
        execution_id: next.id.clone(),
        kind: TimerKind::Retry,
    };
    let mut t = Transition::write(from, next);
    t.add_timer(timer);
    t
}

/// `reject-callback`: valid only when resuming with a callback; the wait
/// is put back exactly as it was (same state, same deadline, callback open
/// again).
fn reject_callback(exec: Execution, reason: &str, reads: &Reads, ctx: &Ctx<'_>) -> Transition {
    let pending = exec.pending.clone();
    match pending {
        Some(PendingResume {
            event: ResumeWith::Callback { correlation_id, .. },
            waiting,
            ..
        }) => {
            let from = exec.state;
            let mut next = bump(exec, ctx);
            next.state = ExecState::Suspended;
            next.waiting = Some(waiting.clone());
            next.log_at(
                ctx.now_ms,
                from,
                "callback-rejected",
                Some(("callback-rejected", reason)),
            );
            let timer = Timer {
                due_ms: waiting.due_ms,
                execution_id: next.id.clone(),
                kind: TimerKind::CallbackTimeout,
            };
            let mut t = Transition::write(from, next);
            if let Some(rec) = reads
                .callback
                .as_ref()
                .filter(|r| r.correlation_id == correlation_id)
            {
                let mut rec = rec.clone();
                rec.version += 1;
                rec.state = CallbackState::Waiting;
                t.change.callbacks.push(rec);
            }
            t.add_timer(timer);
            t.effects.rejected = Some(reason.to_owned());
            t
        }
        Some(PendingResume {
            event: ResumeWith::Timeout,
            ..
        }) => fail(
            exec,
            Failure::CallbackTimeout,
            &format!("the callback did not arrive in time ({reason})"),
            ctx,
        ),
        _ => fail(
            exec,
            Failure::InvalidOutcome,
            "reject-callback is only valid when resuming with a callback",
            ctx,
        ),
    }
}
