//! The catalogue of the `/metrics` page: every series' name, type, help
//! text and histogram buckets, in one table, because `docs/operations.md`
//! promises them to the operators' dashboards and alerts and a rename
//! anywhere here breaks those silently.

use ::metrics::{KeyName, Recorder as _, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

pub(super) const STEP_SLOTS: &str = "stephost_step_slots";
pub(super) const STEP_CALLS_WAITING: &str = "stephost_step_calls_waiting";
pub(super) const EXECUTIONS: &str = "stephost_executions";
pub(super) const EXECUTIONS_STARTED: &str = "stephost_executions_started_total";
pub(super) const EXECUTIONS_ENDED: &str = "stephost_executions_ended_total";
pub(super) const EXECUTIONS_RECOVERED: &str = "stephost_executions_recovered_total";
pub(super) const EXECUTIONS_REMOVED: &str = "stephost_executions_removed_total";
pub(super) const STEPS_STARTED: &str = "stephost_steps_started_total";
pub(super) const STEPS_COMPLETED: &str = "stephost_steps_completed_total";
pub(super) const STEPS_FAILED: &str = "stephost_steps_failed_total";
pub(super) const STEP_OUTCOMES: &str = "stephost_step_outcomes_total";
pub(super) const STEP_DURATION: &str = "stephost_step_duration_seconds";
pub(super) const CALLBACKS: &str = "stephost_callbacks_total";
pub(super) const TIMERS_FIRED: &str = "stephost_timers_fired_total";
pub(super) const TIMERS_PENDING: &str = "stephost_timers_pending";
pub(super) const TIMERS_OVERDUE: &str = "stephost_timers_overdue";
pub(super) const TIMERS_QUARANTINED: &str = "stephost_timers_quarantined_total";
pub(super) const STORE_CHANGES: &str = "stephost_store_changes_total";
pub(super) const STORE_TRANSACTIONS: &str = "stephost_store_transactions_total";
pub(super) const STORE_FLUSH_REQUESTS: &str = "stephost_store_flush_requests_total";
pub(super) const STORE_DISK_FLUSHES: &str = "stephost_store_disk_flushes_total";
pub(super) const DELIVERIES_ENQUEUED: &str = "stephost_deliveries_enqueued_total";
pub(super) const DELIVERY_ATTEMPTS: &str = "stephost_delivery_attempts_total";
pub(super) const DELIVERY_FAILURES: &str = "stephost_delivery_failures_total";
pub(super) const DELIVERIES_DELIVERED: &str = "stephost_deliveries_delivered_total";
pub(super) const DELIVERIES_GIVEN_UP: &str = "stephost_deliveries_given_up_total";
pub(super) const CHORE_LEADER: &str = "stephost_chore_leader";

/// Upper bounds (seconds) of the step-duration histogram buckets; changing
/// them breaks every quantile a dashboard computed over the old ones.
pub(super) const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Callback results shown (at zero) before the first callback: the answers
/// a partner gets, which dashboards plot side by side. The others appear
/// when first counted.
pub(super) const CALLBACK_RESULTS: [&str; 5] =
    ["applied", "stored", "rejected", "duplicate", "gone"];

/// The single-runner chores, as `store::Chore::as_str` names them: each
/// node shows 1 for those it leads.
pub(super) const CHORES: [&str; 2] = ["retention", "take-over"];

/// Every kind of durable timer, shown at zero before the first fires.
pub(super) const TIMER_KINDS: [&str; 3] = ["callback-timeout", "retry", "delivery"];

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Name, type and help text of every series.
pub(super) const CATALOGUE: [(&str, Kind, &str); 27] = [
    (
        STEP_SLOTS,
        Kind::Gauge,
        "Wasm instance slots (max_concurrent_steps), and how many step calls hold one.",
    ),
    (
        STEP_CALLS_WAITING,
        Kind::Gauge,
        "Step calls waiting for a free instance slot: above zero for long, raise max_concurrent_steps.",
    ),
    (EXECUTIONS, Kind::Gauge, "Executions by state."),
    (
        EXECUTIONS_STARTED,
        Kind::Counter,
        "Executions started by this process.",
    ),
    (
        EXECUTIONS_ENDED,
        Kind::Counter,
        "Executions that ended in this process, by final state.",
    ),
    (
        EXECUTIONS_RECOVERED,
        Kind::Counter,
        "Executions a previous process left running, re-run at start.",
    ),
    (
        EXECUTIONS_REMOVED,
        Kind::Counter,
        "Ended executions removed, by retention or DELETE.",
    ),
    (
        CHORE_LEADER,
        Kind::Gauge,
        "1 for each chore (retention, take-over) this node runs for every node sharing the store; exactly one node shows 1 per chore.",
    ),
    (
        STEPS_STARTED,
        Kind::Counter,
        "Step calls (run or resume) started, by plugin.",
    ),
    (
        STEPS_COMPLETED,
        Kind::Counter,
        "Step calls that completed the step, by plugin.",
    ),
    (
        STEPS_FAILED,
        Kind::Counter,
        "Step calls that failed the step (a fail outcome or a host error), by plugin.",
    ),
    (
        STEP_OUTCOMES,
        Kind::Counter,
        "Step calls by plugin and outcome.",
    ),
    (
        STEP_DURATION,
        Kind::Histogram,
        "Wall-clock time of one step call, outbound HTTP included, by plugin.",
    ),
    (
        CALLBACKS,
        Kind::Counter,
        "Callback requests by result: applied (200), stored (202), rejected (400), duplicate (409), gone (410), not-found, unauthorized, busy, error.",
    ),
    (
        TIMERS_FIRED,
        Kind::Counter,
        "Durable timers fired, by kind.",
    ),
    (
        TIMERS_PENDING,
        Kind::Gauge,
        "Durable timers waiting in the store (callback timeouts, retry-after, delivery retries).",
    ),
    (
        TIMERS_OVERDUE,
        Kind::Gauge,
        "Pending timers already due: the timer loop's backlog.",
    ),
    (
        TIMERS_QUARANTINED,
        Kind::Counter,
        "Timer records that could not be decoded and were moved aside (see the log for their keys).",
    ),
    (
        STORE_CHANGES,
        Kind::Counter,
        "State transitions written (or refused as conflicts).",
    ),
    (
        STORE_TRANSACTIONS,
        Kind::Counter,
        "Database transactions they took: group apply writes concurrent transitions in one.",
    ),
    (
        STORE_FLUSH_REQUESTS,
        Kind::Counter,
        "Writes that waited to be durable (every acknowledged start, registration and callback).",
    ),
    (
        STORE_DISK_FLUSHES,
        Kind::Counter,
        "Disk flushes that served them: group commit lets concurrent requests share one.",
    ),
    (
        DELIVERIES_ENQUEUED,
        Kind::Counter,
        "Result deliveries queued with the end of their execution.",
    ),
    (
        DELIVERY_ATTEMPTS,
        Kind::Counter,
        "Result delivery attempts (POSTs to a callback_url).",
    ),
    (
        DELIVERY_FAILURES,
        Kind::Counter,
        "Failed result delivery attempts (non-2xx or no answer).",
    ),
    (
        DELIVERIES_DELIVERED,
        Kind::Counter,
        "Results the client accepted.",
    ),
    (
        DELIVERIES_GIVEN_UP,
        Kind::Counter,
        "Results not delivered after every retry.",
    ),
];

/// A recorder of its own (not the process-wide one: tests run several
/// daemons in one process), with the buckets and help texts above.
pub(super) fn recorder() -> PrometheusRecorder {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(STEP_DURATION.into()), &DURATION_BUCKETS)
        .expect("the bucket list is not empty")
        .build_recorder();
    for (name, kind, help) in CATALOGUE {
        let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
        match kind {
            Kind::Counter => recorder.describe_counter(name, None, help),
            Kind::Gauge => recorder.describe_gauge(name, None, help),
            Kind::Histogram => recorder.describe_histogram(name, None, help),
        }
    }
    recorder
}
