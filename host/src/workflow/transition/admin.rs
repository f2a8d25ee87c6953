//! Operator actions: retry or skip a failed step, cancel an execution that
//! has not ended, remove one that has (which retention does too).

use crate::model::{CallbackState, DeliveryState, ExecState, Execution, Failure};
use crate::store::Removal;

use super::{Ctx, Reads, Refusal, Transition, bump, failed, start_next_step, waiting_timer};

/// Only a failed execution can be retried or skipped.
fn require_failed(exec: &Execution) -> Result<(), Refusal> {
    match exec.state {
        ExecState::Failed => Ok(()),
        other => Err(Refusal::WrongState(other)),
    }
}

/// Runs the failed step again: same step-run-id (so partners can dedupe),
/// next attempt, on the plugin's current version.
pub(super) fn retry(exec: Execution, reads: &Reads, ctx: &Ctx<'_>) -> Result<Transition, Refusal> {
    require_failed(&exec)?;
    let plugin = &exec.step().plugin;
    let hash = reads
        .plugins
        .get(plugin)
        .ok_or_else(|| Refusal::UnknownPlugin(plugin.clone()))?
        .clone();
    let from = exec.state;
    let mut next = bump(exec, ctx);
    next.state = ExecState::Running;
    next.error = None;
    next.attempt += 1;
    let i = next.step_index;
    next.steps[i].plugin_hash = Some(hash);
    next.log_at(ctx.now_ms, from, "retried", None);
    let mut t = Transition::write(from, next);
    t.effects.drive = true;
    Ok(t)
}

/// Skips the failed step: its input goes on to the next step, or becomes
/// the output if it was the last one.
pub(super) fn skip(exec: Execution, reads: &Reads, ctx: &Ctx<'_>) -> Result<Transition, Refusal> {
    require_failed(&exec)?;
    let from = exec.state;
    let mut next = bump(exec, ctx);
    next.error = None;
    if next.step_index + 1 == next.steps.len() {
        next.state = ExecState::Completed;
        next.output = Some(next.document.clone());
        next.log_at(ctx.now_ms, from, "skipped", None);
        return Ok(Transition::write(from, next));
    }
    // Running again before the log line, so that it reads failed → running.
    next.state = ExecState::Running;
    next.log_at(ctx.now_ms, from, "skipped", None);
    start_next_step(&mut next, reads, ctx).map_err(Refusal::UnknownPlugin)?;
    let mut t = Transition::write(from, next);
    t.effects.drive = true;
    Ok(t)
}

/// Cancels a running or suspended execution: it fails with code
/// `cancelled`, its callback expires and its timer is dropped. A step
/// running meanwhile loses its commit and its outcome is dropped.
pub(super) fn cancel(exec: Execution, reads: &Reads, ctx: &Ctx<'_>) -> Result<Transition, Refusal> {
    if exec.state.is_terminal() {
        return Err(Refusal::WrongState(exec.state));
    }
    let timer = waiting_timer(&exec);
    let waited_for = exec.waiting.as_ref().and_then(|w| w.correlation_id.clone());
    let from = exec.state;
    let next = failed(exec, Failure::Cancelled, "cancelled by an operator", ctx);
    let mut t = Transition::write(from, next);
    t.change.remove_timers.extend(timer);
    if let Some(rec) = reads
        .callback
        .as_ref()
        .filter(|r| waited_for.as_ref() == Some(&r.correlation_id))
    {
        let mut rec = rec.clone();
        rec.version += 1;
        rec.state = CallbackState::Expired;
        t.change.callbacks.push(rec);
    }
    Ok(t)
}

/// Removes an ended execution with its callbacks and deliveries. For
/// retention (`due`), only one that ended by then and whose result is no
/// longer being delivered; an operator's removal also stops a delivery
/// still retrying (its timer goes with it).
pub(super) fn remove(
    exec: Execution,
    due: Option<u64>,
    reads: &Reads,
) -> Result<Transition, Refusal> {
    if !exec.state.is_terminal() {
        return Err(Refusal::WrongState(exec.state));
    }
    let delivering = || {
        reads
            .owned
            .deliveries
            .iter()
            .any(|d| d.state == DeliveryState::Pending)
    };
    if due.is_some_and(|due| exec.updated_ms > due || delivering()) {
        return Err(Refusal::NotDue);
    }
    let mut change = crate::store::Change {
        remove: Some(Removal {
            id: exec.id.clone(),
            version: exec.version,
            callbacks: reads.owned.callbacks.clone(),
            deliveries: reads.owned.deliveries.iter().map(|d| d.key()).collect(),
            idempotency_key: exec.idempotency_key.clone(),
        }),
        ..Default::default()
    };
    change.remove_timers = reads
        .owned
        .deliveries
        .iter()
        .filter(|d| d.state == DeliveryState::Pending)
        .filter_map(|d| d.timer())
        .collect();
    Ok(Transition {
        from: Some(exec.state),
        change,
        effects: Default::default(),
    })
}
