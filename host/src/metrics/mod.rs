//! `GET /metrics`: the daemon's counters in the Prometheus text format.
//!
//! Everything here is kept in memory and updated where it happens (a
//! transition, a step call, a callback, a delivery attempt), so a scrape
//! costs no store scan for them. The execution gauges are seeded from the
//! store once at open and then moved by every transition. What only the
//! store and the executor know (the timer backlog, write counts, instance
//! slots) the caller reads and hands to [`Metrics::render`] as a
//! [`Snapshot`]: this module sits low in the layers and reads neither.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::model::ExecState;

mod render;

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

/// How the instance slots are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotUsage {
    /// Slots in all (`max_concurrent_steps`).
    pub capacity: u64,
    /// Slots held by a step call.
    pub in_use: u64,
    /// Step calls waiting for one.
    pub waiting: u64,
}

/// What a scrape shows besides the counters kept here, read by the caller
/// from the store and the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The executor's instance slots.
    pub slots: SlotUsage,
    /// Pending timers, and how many of them are due; `None` if the store
    /// could not count them (the two series are then left out).
    pub timer_backlog: Option<(u64, u64)>,
    /// Timer records moved aside as undecodable.
    pub timers_quarantined: u64,
    /// Transitions written or refused, and the transactions they took.
    pub store_changes: u64,
    /// Database transactions of those changes.
    pub store_transactions: u64,
    /// Writes that waited to be durable.
    pub flush_requests: u64,
    /// Disk flushes that served them.
    pub disk_flushes: u64,
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
}

#[cfg(test)]
mod tests {
    use super::render::escape;
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
