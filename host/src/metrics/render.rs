//! The Prometheus text exposition (format 0.0.4) of the counters and of a
//! [`Snapshot`]: names, help texts and labels exactly as
//! `docs/operations.md` lists them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

impl Metrics {
    /// The Prometheus text exposition (format 0.0.4) of the counters kept
    /// here and of `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let slots = snapshot.slots;
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        header(
            &mut out,
            "stephost_step_slots",
            "gauge",
            "Wasm instance slots (max_concurrent_steps), and how many step calls hold one.",
        );
        let _ = writeln!(
            out,
            "stephost_step_slots{{state=\"total\"}} {}",
            slots.capacity
        );
        let _ = writeln!(
            out,
            "stephost_step_slots{{state=\"in-use\"}} {}",
            slots.in_use
        );
        header(
            &mut out,
            "stephost_step_calls_waiting",
            "gauge",
            "Step calls waiting for a free instance slot: above zero for long, raise max_concurrent_steps.",
        );
        let _ = writeln!(out, "stephost_step_calls_waiting {}", slots.waiting);

        header(
            &mut out,
            "stephost_executions",
            "gauge",
            "Executions by state.",
        );
        for (i, state) in STATES.iter().enumerate() {
            let n = self.executions[i].load(Ordering::Relaxed).max(0);
            let _ = writeln!(
                out,
                "stephost_executions{{state=\"{}\"}} {n}",
                state.as_str()
            );
        }
        header(
            &mut out,
            "stephost_executions_started_total",
            "counter",
            "Executions started by this process.",
        );
        let _ = writeln!(
            out,
            "stephost_executions_started_total {}",
            load(&self.executions_started)
        );
        header(
            &mut out,
            "stephost_executions_ended_total",
            "counter",
            "Executions that ended in this process, by final state.",
        );
        for state in [ExecState::Completed, ExecState::Failed] {
            let _ = writeln!(
                out,
                "stephost_executions_ended_total{{state=\"{}\"}} {}",
                state.as_str(),
                load(&self.executions_ended[state_index(state)])
            );
        }
        header(
            &mut out,
            "stephost_executions_recovered_total",
            "counter",
            "Executions a previous process left running, re-run at start.",
        );
        let _ = writeln!(
            out,
            "stephost_executions_recovered_total {}",
            load(&self.executions_recovered)
        );

        let steps = self.steps.lock().unwrap_or_else(|p| p.into_inner()).clone();
        header(
            &mut out,
            "stephost_steps_started_total",
            "counter",
            "Step calls (run or resume) started, by plugin.",
        );
        for (plugin, s) in &steps {
            let _ = writeln!(
                out,
                "stephost_steps_started_total{{plugin=\"{}\"}} {}",
                escape(plugin),
                s.started
            );
        }
        header(
            &mut out,
            "stephost_steps_completed_total",
            "counter",
            "Step calls that completed the step, by plugin.",
        );
        for (plugin, s) in &steps {
            let n = s.outcomes.get("complete").copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "stephost_steps_completed_total{{plugin=\"{}\"}} {n}",
                escape(plugin)
            );
        }
        header(
            &mut out,
            "stephost_steps_failed_total",
            "counter",
            "Step calls that failed the step (a fail outcome or a host error), by plugin.",
        );
        for (plugin, s) in &steps {
            let n = s.outcomes.get("fail").copied().unwrap_or(0)
                + s.outcomes.get("error").copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "stephost_steps_failed_total{{plugin=\"{}\"}} {n}",
                escape(plugin)
            );
        }
        header(
            &mut out,
            "stephost_step_outcomes_total",
            "counter",
            "Step calls by plugin and outcome.",
        );
        for (plugin, s) in &steps {
            for (outcome, n) in &s.outcomes {
                let _ = writeln!(
                    out,
                    "stephost_step_outcomes_total{{plugin=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(plugin)
                );
            }
        }
        header(
            &mut out,
            "stephost_step_duration_seconds",
            "histogram",
            "Wall-clock time of one step call, outbound HTTP included, by plugin.",
        );
        for (plugin, s) in &steps {
            let plugin = escape(plugin);
            for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "stephost_step_duration_seconds_bucket{{plugin=\"{plugin}\",le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "stephost_step_duration_seconds_bucket{{plugin=\"{plugin}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "stephost_step_duration_seconds_sum{{plugin=\"{plugin}\"}} {}",
                s.sum_seconds
            );
            let _ = writeln!(
                out,
                "stephost_step_duration_seconds_count{{plugin=\"{plugin}\"}} {}",
                s.count
            );
        }

        header(
            &mut out,
            "stephost_callbacks_total",
            "counter",
            "Callback requests by result: applied (200), stored (202), rejected (400), duplicate (409), gone (410), not-found, unauthorized, busy, error.",
        );
        let callbacks = self
            .callbacks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for result in ["applied", "stored", "rejected", "duplicate", "gone"] {
            let n = callbacks.get(result).copied().unwrap_or(0);
            let _ = writeln!(out, "stephost_callbacks_total{{result=\"{result}\"}} {n}");
        }
        for (result, n) in &callbacks {
            if !["applied", "stored", "rejected", "duplicate", "gone"].contains(result) {
                let _ = writeln!(out, "stephost_callbacks_total{{result=\"{result}\"}} {n}");
            }
        }

        header(
            &mut out,
            "stephost_timers_fired_total",
            "counter",
            "Durable timers fired, by kind.",
        );
        let fired = self
            .timers_fired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for kind in ["callback-timeout", "retry", "delivery"] {
            let n = fired.get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "stephost_timers_fired_total{{kind=\"{kind}\"}} {n}");
        }
        if let Some((pending, due)) = snapshot.timer_backlog {
            header(
                &mut out,
                "stephost_timers_pending",
                "gauge",
                "Durable timers waiting in the store (callback timeouts, retry-after, delivery retries).",
            );
            let _ = writeln!(out, "stephost_timers_pending {pending}");
            header(
                &mut out,
                "stephost_timers_overdue",
                "gauge",
                "Pending timers already due: the timer loop's backlog.",
            );
            let _ = writeln!(out, "stephost_timers_overdue {due}");
        }
        header(
            &mut out,
            "stephost_timers_quarantined_total",
            "counter",
            "Timer records that could not be decoded and were moved aside (see the log for their keys).",
        );
        let _ = writeln!(
            out,
            "stephost_timers_quarantined_total {}",
            snapshot.timers_quarantined
        );

        header(
            &mut out,
            "stephost_store_changes_total",
            "counter",
            "State transitions written (or refused as conflicts).",
        );
        let _ = writeln!(
            out,
            "stephost_store_changes_total {}",
            snapshot.store_changes
        );
        header(
            &mut out,
            "stephost_store_transactions_total",
            "counter",
            "Database transactions they took: group apply writes concurrent transitions in one.",
        );
        let _ = writeln!(
            out,
            "stephost_store_transactions_total {}",
            snapshot.store_transactions
        );
        header(
            &mut out,
            "stephost_store_flush_requests_total",
            "counter",
            "Writes that waited to be durable (every acknowledged start, registration and callback).",
        );
        let _ = writeln!(
            out,
            "stephost_store_flush_requests_total {}",
            snapshot.flush_requests
        );
        header(
            &mut out,
            "stephost_store_disk_flushes_total",
            "counter",
            "Disk flushes that served them: group commit lets concurrent requests share one.",
        );
        let _ = writeln!(
            out,
            "stephost_store_disk_flushes_total {}",
            snapshot.disk_flushes
        );

        header(
            &mut out,
            "stephost_deliveries_enqueued_total",
            "counter",
            "Result deliveries queued with the end of their execution.",
        );
        let _ = writeln!(
            out,
            "stephost_deliveries_enqueued_total {}",
            load(&self.deliveries_enqueued)
        );
        header(
            &mut out,
            "stephost_delivery_attempts_total",
            "counter",
            "Result delivery attempts (POSTs to a callback_url).",
        );
        let _ = writeln!(
            out,
            "stephost_delivery_attempts_total {}",
            load(&self.delivery_attempts)
        );
        header(
            &mut out,
            "stephost_delivery_failures_total",
            "counter",
            "Failed result delivery attempts (non-2xx or no answer).",
        );
        let _ = writeln!(
            out,
            "stephost_delivery_failures_total {}",
            load(&self.delivery_failures)
        );
        header(
            &mut out,
            "stephost_deliveries_delivered_total",
            "counter",
            "Results the client accepted.",
        );
        let _ = writeln!(
            out,
            "stephost_deliveries_delivered_total {}",
            load(&self.deliveries_delivered)
        );
        header(
            &mut out,
            "stephost_deliveries_given_up_total",
            "counter",
            "Results not delivered after every retry.",
        );
        let _ = writeln!(
            out,
            "stephost_deliveries_given_up_total {}",
            load(&self.deliveries_given_up)
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it.
pub(super) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
