//! The daemon's counters, gauges and histograms, and the `GET /metrics`
//! page that shows them.
//!
//! They live in a metrics-rs registry of this daemon's own and are written
//! in the Prometheus text format by its exporter; [`series`] names every
//! series as `docs/operations.md` lists it. Each value is moved where its
//! event happens — a transition, a step call, a callback, a timer firing, a
//! delivery attempt — so a scrape reads no table for them; the execution
//! gauges are seeded from the store's counts once at open and then moved by
//! every transition. What this module cannot see happen (the executor's
//! instance slots, the store's write counters and timer backlog) the caller
//! reads, cheaply, and hands to [`Metrics::render`] as a [`Snapshot`]: this
//! module sits low in the layers and imports neither.

mod series;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder as _};
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};

use self::series::*;
use crate::model::ExecState;

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
    /// Its place in [`PluginSeries::outcomes`].
    fn index(self) -> usize {
        match self {
            Self::Complete => 0,
            Self::Fail => 1,
            Self::Suspend => 2,
            Self::RetryAfter => 3,
            Self::RejectCallback => 4,
            Self::Error => 5,
        }
    }

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

/// How the instance slots are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotUsage {
    /// Slots in all (`max_concurrent_steps`).
    pub capacity: u64,
    /// Slots held by a step call.
    pub in_use: u64,
    /// Step calls waiting for one.
    pub waiting: u64,
}

/// What a scrape shows besides the series kept here, read by the caller
/// from the store and the executor. Each is an in-memory value there or a
/// short read (see the fields), never a scan of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The executor's instance slots: its semaphore is the one place that
    /// knows, and reading it is two atomic loads.
    pub slots: SlotUsage,
    /// Pending timers, and how many of them are due; `None` if the store
    /// could not tell (both then show `NaN`). Kept by the store, which is
    /// the one place that sees every timer a change adds or removes; what
    /// is due changes with the clock, so the store walks the due ones.
    pub timer_backlog: Option<(u64, u64)>,
    /// Executions by state, by [`state_index`]; `None` if the store
    /// could not tell (`NaN`). The store keeps these counts with every
    /// write: read at each scrape, they are the whole cluster's on a
    /// shared database, where a count moved by this node's transitions
    /// alone would drift with every execution another node moves.
    pub executions: Option<[u64; 4]>,
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

/// The exporter ignores where a series was registered from; the recorder
/// API still asks.
const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Step calls between two drains of the duration samples: the exporter
/// keeps each sample until it sorts it into the buckets (at a scrape or an
/// upkeep), so a daemon nobody scrapes would otherwise keep them all.
const UPKEEP_EVERY: u64 = 1024;

/// The series a scrape copies from a [`Snapshot`]: counters kept by the
/// store are set to its value (`absolute`), not counted twice.
struct Scraped {
    slots_total: Gauge,
    slots_in_use: Gauge,
    calls_waiting: Gauge,
    timers_pending: Gauge,
    timers_overdue: Gauge,
    timers_quarantined: Counter,
    store_changes: Counter,
    store_transactions: Counter,
    flush_requests: Counter,
    disk_flushes: Counter,
}

/// The daemon's series. One per daemon (tests run several in a process).
pub struct Metrics {
    recorder: PrometheusRecorder,
    page: PrometheusHandle,
    /// By [`state_index`].
    executions: [Gauge; 4],
    executions_started: Counter,
    executions_completed: Counter,
    executions_failed: Counter,
    executions_recovered: Counter,
    executions_removed: Counter,
    /// By place in [`CHORES`].
    chore_leader: [Gauge; 2],
    deliveries_enqueued: Counter,
    delivery_attempts: Counter,
    delivery_failures: Counter,
    deliveries_delivered: Counter,
    deliveries_given_up: Counter,
    scraped: Scraped,
    step_calls: AtomicU64,
    /// Each plugin's step series, registered on its first call.
    plugins: RwLock<HashMap<String, Arc<PluginSeries>>>,
}

/// The step series of one plugin. Registering a labelled series builds
/// its key (allocations, hashing, a registry lookup); a step call happens
/// thousands of times a second, so it keeps the handles and only counts.
struct PluginSeries {
    started: Counter,
    completed: Counter,
    failed: Counter,
    /// By [`StepResult::index`]; an outcome's series appears when first
    /// counted, as before.
    outcomes: [OnceLock<Counter>; 6],
    duration: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Exhaustive, so that a new state cannot go uncounted.
pub fn state_index(state: ExecState) -> usize {
    match state {
        ExecState::Running => 0,
        ExecState::Suspended => 1,
        ExecState::Completed => 2,
        ExecState::Failed => 3,
    }
}

impl Metrics {
    /// Every series at zero (those with a label that only events bring,
    /// a plugin name or a rare result, appear when first counted).
    pub fn new() -> Self {
        let recorder = series::recorder();
        let r = &recorder;
        let counter = |name| r.register_counter(&Key::from_static_name(name), &METADATA);
        let gauge = |name| r.register_gauge(&Key::from_static_name(name), &METADATA);
        let state = |s: ExecState| s.as_str();
        // Registering a series is what puts it on the page, at zero; the
        // registry keeps it, so the handle is not needed.
        for result in CALLBACK_RESULTS {
            let _ = labelled_counter(r, CALLBACKS, "result", result);
        }
        for kind in TIMER_KINDS {
            let _ = labelled_counter(r, TIMERS_FIRED, "kind", kind);
        }
        let scraped = Scraped {
            slots_total: labelled_gauge(r, STEP_SLOTS, "state", "total"),
            slots_in_use: labelled_gauge(r, STEP_SLOTS, "state", "in-use"),
            calls_waiting: gauge(STEP_CALLS_WAITING),
            timers_pending: gauge(TIMERS_PENDING),
            timers_overdue: gauge(TIMERS_OVERDUE),
            timers_quarantined: counter(TIMERS_QUARANTINED),
            store_changes: counter(STORE_CHANGES),
            store_transactions: counter(STORE_TRANSACTIONS),
            flush_requests: counter(STORE_FLUSH_REQUESTS),
            disk_flushes: counter(STORE_DISK_FLUSHES),
        };
        Self {
            executions: [
                ExecState::Running,
                ExecState::Suspended,
                ExecState::Completed,
                ExecState::Failed,
            ]
            .map(|s| labelled_gauge(r, EXECUTIONS, "state", state(s))),
            executions_started: counter(EXECUTIONS_STARTED),
            executions_completed: labelled_counter(
                r,
                EXECUTIONS_ENDED,
                "state",
                state(ExecState::Completed),
            ),
            executions_failed: labelled_counter(
                r,
                EXECUTIONS_ENDED,
                "state",
                state(ExecState::Failed),
            ),
            executions_recovered: counter(EXECUTIONS_RECOVERED),
            executions_removed: counter(EXECUTIONS_REMOVED),
            chore_leader: CHORES.map(|chore| labelled_gauge(r, CHORE_LEADER, "chore", chore)),
            deliveries_enqueued: counter(DELIVERIES_ENQUEUED),
            delivery_attempts: counter(DELIVERY_ATTEMPTS),
            delivery_failures: counter(DELIVERY_FAILURES),
            deliveries_delivered: counter(DELIVERIES_DELIVERED),
            deliveries_given_up: counter(DELIVERIES_GIVEN_UP),
            scraped,
            step_calls: AtomicU64::new(0),
            plugins: RwLock::default(),
            page: recorder.handle(),
            recorder,
        }
    }

    /// An execution moved from `from` (`None`: it was created) to `to`.
    /// Call it only once the transition is written.
    pub fn transition(&self, from: Option<ExecState>, to: ExecState) {
        if from == Some(to) {
            return;
        }
        if from.is_none() {
            self.executions_started.increment(1);
        }
        match to {
            ExecState::Completed => self.executions_completed.increment(1),
            ExecState::Failed => self.executions_failed.increment(1),
            ExecState::Running | ExecState::Suspended => {}
        }
    }

    /// An ended execution was removed (retention or `DELETE`).
    pub fn removed(&self) {
        self.executions_removed.increment(1);
    }

    /// Whether this node leads `chore` (one of [`CHORES`]) now.
    pub fn leading(&self, chore: &str, leads: bool) {
        if let Some(i) = CHORES.iter().position(|c| *c == chore) {
            self.chore_leader[i].set(f64::from(u8::from(leads)));
        }
    }

    /// Executions re-run at start because a previous process left them running.
    pub fn recovered(&self, n: usize) {
        self.executions_recovered.increment(n as u64);
    }

    /// A step call (`run` or `resume`) of `plugin` returned after `elapsed`.
    pub fn step_call(&self, plugin: &str, result: StepResult, elapsed: Duration) {
        let series = self.plugin_series(plugin);
        series.started.increment(1);
        match result {
            StepResult::Complete => series.completed.increment(1),
            StepResult::Fail | StepResult::Error => series.failed.increment(1),
            StepResult::Suspend | StepResult::RetryAfter | StepResult::RejectCallback => {}
        }
        series.outcomes[result.index()]
            .get_or_init(|| {
                let labels = vec![
                    Label::new("plugin", plugin.to_owned()),
                    Label::from_static_parts("outcome", result.as_str()),
                ];
                self.recorder
                    .register_counter(&Key::from_parts(STEP_OUTCOMES, labels), &METADATA)
            })
            .increment(1);
        series.duration.record(elapsed.as_secs_f64());
        if self.step_calls.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
            self.page.run_upkeep();
        }
    }

    /// `plugin`'s step series, registered on its first call. Completed
    /// and failed are registered together, so a plugin that never failed
    /// still shows its zero next to its completions.
    fn plugin_series(&self, plugin: &str) -> Arc<PluginSeries> {
        let known = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        if let Some(series) = known.get(plugin) {
            return series.clone();
        }
        drop(known);
        let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        let series = plugins.entry(plugin.to_owned()).or_insert_with(|| {
            let key = |name: &'static str| {
                Key::from_parts(name, vec![Label::new("plugin", plugin.to_owned())])
            };
            let counter = |name| self.recorder.register_counter(&key(name), &METADATA);
            Arc::new(PluginSeries {
                started: counter(STEPS_STARTED),
                completed: counter(STEPS_COMPLETED),
                failed: counter(STEPS_FAILED),
                outcomes: Default::default(),
                duration: self
                    .recorder
                    .register_histogram(&key(STEP_DURATION), &METADATA),
            })
        });
        series.clone()
    }

    /// A callback request was answered; `result` is one of `applied`,
    /// `stored`, `rejected`, `duplicate`, `gone`, `not-found`,
    /// `unauthorized`, `busy`, `error`.
    pub fn callback(&self, result: &'static str) {
        labelled_counter(&self.recorder, CALLBACKS, "result", result).increment(1);
    }

    /// A durable timer fired (`callback-timeout`, `retry`, `delivery`).
    pub fn timer_fired(&self, kind: &'static str) {
        labelled_counter(&self.recorder, TIMERS_FIRED, "kind", kind).increment(1);
    }

    /// A result delivery was queued together with the end of its execution.
    pub fn delivery_enqueued(&self) {
        self.deliveries_enqueued.increment(1);
    }

    /// A delivery attempt ended: `ok`, or failed; `gave_up` after the last.
    pub fn delivery_attempt(&self, ok: bool, gave_up: bool) {
        self.delivery_attempts.increment(1);
        if ok {
            self.deliveries_delivered.increment(1);
        } else {
            self.delivery_failures.increment(1);
        }
        if gave_up {
            self.deliveries_given_up.increment(1);
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every series, with
    /// the values of `snapshot` for those this module cannot count itself.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let s = &self.scraped;
        s.slots_total.set(snapshot.slots.capacity as f64);
        s.slots_in_use.set(snapshot.slots.in_use as f64);
        s.calls_waiting.set(snapshot.slots.waiting as f64);
        // Unknown is not zero: an alert on a backlog must not read "none".
        let (pending, due) = snapshot
            .timer_backlog
            .map_or((f64::NAN, f64::NAN), |(p, d)| (p as f64, d as f64));
        s.timers_pending.set(pending);
        s.timers_overdue.set(due);
        for (i, gauge) in self.executions.iter().enumerate() {
            gauge.set(snapshot.executions.map_or(f64::NAN, |n| n[i] as f64));
        }
        s.timers_quarantined.absolute(snapshot.timers_quarantined);
        s.store_changes.absolute(snapshot.store_changes);
        s.store_transactions.absolute(snapshot.store_transactions);
        s.flush_requests.absolute(snapshot.flush_requests);
        s.disk_flushes.absolute(snapshot.disk_flushes);
        self.page.render()
    }
}

/// The series `name{key="value"}`, for label values known in advance.
fn labelled_counter(
    recorder: &PrometheusRecorder,
    name: &'static str,
    key: &'static str,
    value: &'static str,
) -> Counter {
    let key = Key::from_parts(name, vec![Label::from_static_parts(key, value)]);
    recorder.register_counter(&key, &METADATA)
}

/// The gauge `name{key="value"}`.
fn labelled_gauge(
    recorder: &PrometheusRecorder,
    name: &'static str,
    key: &'static str,
    value: &'static str,
) -> Gauge {
    let key = Key::from_parts(name, vec![Label::from_static_parts(key, value)]);
    recorder.register_gauge(&key, &METADATA)
}
