//! `GET /metrics`: the daemon's counters in the Prometheus text format.
//!
//! Everything here is kept in memory and updated where it happens (a
//! transition, a step call, a callback, a delivery attempt), so a scrape
//! costs no store scan for them. The execution gauges are seeded from the
//! store once at open and then moved by every transition. Only the timer
//! backlog is read from the store on a scrape: a scan of the timer keys,
//! without decoding them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::model::{ExecState, now_ms};
use crate::store::Store;

/// Upper bounds (seconds) of the step-duration histogram buckets.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const STATES: [ExecState; 4] = [
    ExecState::Running,
    ExecState::Suspended,
    ExecState::Completed,
    ExecState::Failed,
];

fn state_index(state: ExecState) -> usize {
    STATES.iter().position(|s| *s == state).unwrap_or(0)
}

/// How one step call ended, for the per-plugin counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepResult {
    /// `complete`.
    Complete,
    /// `fail`.
    Fail,
    /// `suspend`.
    Suspend,
    /// `retry-after`.
    RetryAfter,
    /// `reject-callback`.
    RejectCallback,
    /// No outcome: a trap, a time or memory limit, an instantiation error.
    Error,
}

impl StepResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Fail => "fail",
            Self::Suspend => "suspend",
            Self::RetryAfter => "retry-after",
            Self::RejectCallback => "reject-callback",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct StepStats {
    started: u64,
    outcomes: BTreeMap<&'static str, u64>,
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

/// The daemon's counters. One per daemon (tests run several in a process).
#[derive(Debug, Default)]
pub struct Metrics {
    executions: [AtomicI64; 4],
    executions_started: AtomicU64,
    executions_ended: [AtomicU64; 4],
    executions_recovered: AtomicU64,
    steps: Mutex<BTreeMap<String, StepStats>>,
    callbacks: Mutex<BTreeMap<&'static str, u64>>,
    timers_fired: Mutex<BTreeMap<&'static str, u64>>,
    deliveries_enqueued: AtomicU64,
    delivery_attempts: AtomicU64,
    delivery_failures: AtomicU64,
    deliveries_delivered: AtomicU64,
    deliveries_given_up: AtomicU64,
}

fn bump(map: &Mutex<BTreeMap<&'static str, u64>>, key: &'static str) {
    *map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
}

impl Metrics {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Seeds the per-state gauges from the store's counts.
    pub fn seed_executions(&self, counts: &[(ExecState, u64)]) {
        for (state, n) in counts {
            self.executions[state_index(*state)]
                .store(i64::try_from(*n).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
    }

    /// An execution moved from `from` (`None`: it was created) to `to`.
    /// Call it only once the transition is written.
    pub fn transition(&self, from: Option<ExecState>, to: ExecState) {
        if from == Some(to) {
            return;
        }
        match from {
            Some(from) => {
                self.executions[state_index(from)].fetch_sub(1, Ordering::Relaxed);
            }
            None => {
                self.executions_started.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.executions[state_index(to)].fetch_add(1, Ordering::Relaxed);
        if to.is_terminal() {
            self.executions_ended[state_index(to)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Executions re-run at start because a previous process left them running.
    pub fn recovered(&self, n: usize) {
        self.executions_recovered
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A step call (`run` or `resume`) of `plugin` returned after `elapsed`.
    pub fn step_call(&self, plugin: &str, result: StepResult, elapsed: Duration) {
        let mut steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        let stats = steps.entry(plugin.to_owned()).or_default();
        stats.started += 1;
        *stats.outcomes.entry(result.as_str()).or_default() += 1;
        let secs = elapsed.as_secs_f64();
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            if secs <= *le {
                stats.buckets[i] += 1;
            }
        }
        stats.count += 1;
        stats.sum_seconds += secs;
    }

    /// A callback request was answered; `result` is one of `applied`,
    /// `stored`, `rejected`, `duplicate`, `gone`, `not-found`,
    /// `unauthorized`, `busy`, `error`.
    pub fn callback(&self, result: &'static str) {
        bump(&self.callbacks, result);
    }

    /// A durable timer fired (`callback-timeout`, `retry`, `delivery`).
    pub fn timer_fired(&self, kind: &'static str) {
        bump(&self.timers_fired, kind);
    }

    /// A result delivery was queued together with the end of its execution.
    pub fn delivery_enqueued(&self) {
        self.deliveries_enqueued.fetch_add(1, Ordering::Relaxed);
    }

    /// A delivery attempt ended: `ok`, or failed; `gave_up` after the last.
    pub fn delivery_attempt(&self, ok: bool, gave_up: bool) {
        self.delivery_attempts.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.deliveries_delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.delivery_failures.fetch_add(1, Ordering::Relaxed);
        }
        if gave_up {
            self.deliveries_given_up.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition (format 0.0.4). The timer backlog is
    /// read from `store`; if it cannot be, those two series are left out.
    pub async fn render(&self, store: &dyn Store, slots: crate::executor::SlotUsage) -> String {
        // Read before rendering: a count of the timers walks the store.
        let backlog = store.timer_backlog(now_ms()).await;
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
        match backlog {
            Ok((pending, due)) => {
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
            Err(e) => tracing::warn!(error = %e, "cannot count timers for /metrics"),
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
            store.quarantined_timers()
        );

        let flushes = store.write_stats();
        header(
            &mut out,
            "stephost_store_changes_total",
            "counter",
            "State transitions written (or refused as conflicts).",
        );
        let _ = writeln!(out, "stephost_store_changes_total {}", flushes.changes);
        header(
            &mut out,
            "stephost_store_transactions_total",
            "counter",
            "Database transactions they took: group apply writes concurrent transitions in one.",
        );
        let _ = writeln!(
            out,
            "stephost_store_transactions_total {}",
            flushes.transactions
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
            flushes.flush_requests
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
            flushes.disk_flushes
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
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_move_the_gauges_and_count_endings() {
        let m = Metrics::new();
        m.seed_executions(&[(ExecState::Suspended, 2)]);
        m.transition(None, ExecState::Running);
        m.transition(Some(ExecState::Running), ExecState::Suspended);
        m.transition(Some(ExecState::Suspended), ExecState::Running);
        m.transition(Some(ExecState::Running), ExecState::Completed);
        m.transition(Some(ExecState::Suspended), ExecState::Failed);
        let gauge = |s: ExecState| m.executions[state_index(s)].load(Ordering::Relaxed);
        assert_eq!(gauge(ExecState::Running), 0);
        assert_eq!(gauge(ExecState::Suspended), 1);
        assert_eq!(gauge(ExecState::Completed), 1);
        assert_eq!(gauge(ExecState::Failed), 1);
        assert_eq!(m.executions_started.load(Ordering::Relaxed), 1);
        let ended = |s: ExecState| m.executions_ended[state_index(s)].load(Ordering::Relaxed);
        assert_eq!(ended(ExecState::Completed), 1);
        assert_eq!(ended(ExecState::Failed), 1);
        assert_eq!(ended(ExecState::Running), 0, "running is no ending");
        assert_eq!(ended(ExecState::Suspended), 0, "suspended is no ending");
        // A repeated state is no transition: nothing moves, nothing ends.
        m.transition(Some(ExecState::Completed), ExecState::Completed);
        assert_eq!(ended(ExecState::Completed), 1);
        assert_eq!(gauge(ExecState::Completed), 1);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_labels_escaped() {
        let m = Metrics::new();
        m.step_call("a\"b", StepResult::Complete, Duration::from_millis(30));
        m.step_call("a\"b", StepResult::Error, Duration::from_secs(100));
        let steps = m.steps.lock().unwrap();
        let s = &steps["a\"b"];
        assert_eq!(s.buckets[DURATION_BUCKETS.len() - 1], 1);
        assert_eq!(s.buckets[3], 1, "30 ms is within 0.05 s");
        assert_eq!(s.count, 2);
        assert_eq!(escape("a\"b"), "a\\\"b");
    }
}
