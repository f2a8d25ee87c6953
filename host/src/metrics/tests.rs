//! What the page promises besides the values the end-to-end tests read:
//! the series `docs/operations.md` lists, typed as it says, in the text
//! format 0.0.4 the API announces, with the documented buckets.

use std::time::Duration;

use stephost_tests::metric_samples;

use super::series::{CATALOGUE, Kind};
use super::*;

/// A scrape's snapshot; the store's counts and timers known or not.
fn snapshot(timer_backlog: Option<(u64, u64)>) -> Snapshot {
    Snapshot {
        executions: timer_backlog.map(|_| [7, 6, 5, 4]),
        slots: SlotUsage {
            capacity: 8,
            in_use: 3,
            waiting: 1,
        },
        timer_backlog,
        timers_quarantined: 2,
        store_changes: 40,
        store_transactions: 10,
        flush_requests: 12,
        disk_flushes: 4,
    }
}

fn samples(m: &Metrics) -> std::collections::BTreeMap<String, f64> {
    metric_samples(&m.render(&snapshot(Some((5, 1)))))
}

#[test]
fn transitions_count_starts_and_endings_and_the_store_gives_the_gauges() {
    let m = Metrics::new();
    m.transition(None, ExecState::Running);
    m.transition(Some(ExecState::Running), ExecState::Suspended);
    m.transition(Some(ExecState::Suspended), ExecState::Running);
    m.transition(Some(ExecState::Running), ExecState::Completed);
    m.transition(Some(ExecState::Suspended), ExecState::Failed);
    // A repeated state is no transition: nothing moves, nothing ends.
    m.transition(Some(ExecState::Completed), ExecState::Completed);
    let s = samples(&m);
    // The gauges are the store's counts (the snapshot's), whatever this
    // process moved: on a shared database others move them too.
    assert_eq!(s[r#"stephost_executions{state="running"}"#], 7.0);
    assert_eq!(s[r#"stephost_executions{state="suspended"}"#], 6.0);
    assert_eq!(s[r#"stephost_executions{state="completed"}"#], 5.0);
    assert_eq!(s[r#"stephost_executions{state="failed"}"#], 4.0);
    assert_eq!(s["stephost_executions_started_total"], 1.0);
    assert_eq!(
        s[r#"stephost_executions_ended_total{state="completed"}"#],
        1.0
    );
    assert_eq!(s[r#"stephost_executions_ended_total{state="failed"}"#], 1.0);
    assert!(
        !s.contains_key(r#"stephost_executions_ended_total{state="running"}"#),
        "running is no ending"
    );
}

#[test]
fn step_calls_are_counted_by_plugin_and_timed_in_the_documented_buckets() {
    let m = Metrics::new();
    m.step_call("a\"b", StepResult::Complete, Duration::from_millis(30));
    m.step_call("a\"b", StepResult::Error, Duration::from_secs(100));
    m.step_call("a\"b", StepResult::Suspend, Duration::from_millis(1));
    let s = samples(&m);
    let p = r#"plugin="a\"b""#;
    assert_eq!(s[&format!("stephost_steps_started_total{{{p}}}")], 3.0);
    assert_eq!(s[&format!("stephost_steps_completed_total{{{p}}}")], 1.0);
    assert_eq!(s[&format!("stephost_steps_failed_total{{{p}}}")], 1.0);
    for (outcome, n) in [("complete", 1.0), ("error", 1.0), ("suspend", 1.0)] {
        let key = format!(r#"stephost_step_outcomes_total{{{p},outcome="{outcome}"}}"#);
        assert_eq!(s[&key], n, "{key}");
    }
    let bucket =
        |le: &str| s[&format!(r#"stephost_step_duration_seconds_bucket{{{p},le="{le}"}}"#)];
    assert_eq!(bucket("0.005"), 1.0, "1 ms");
    assert_eq!(bucket("0.025"), 1.0, "buckets are cumulative");
    assert_eq!(bucket("0.05"), 2.0, "30 ms is within 0.05 s");
    assert_eq!(bucket("1"), 2.0);
    assert_eq!(bucket("30"), 2.0, "the last bound");
    assert_eq!(bucket("+Inf"), 3.0, "100 s is only under +Inf");
    assert_eq!(
        s[&format!("stephost_step_duration_seconds_count{{{p}}}")],
        3.0
    );
    let sum = s[&format!("stephost_step_duration_seconds_sum{{{p}}}")];
    assert!((sum - 100.031).abs() < 1e-9, "{sum}");
    let bounds = s
        .keys()
        .filter(|k| k.starts_with("stephost_step_duration_seconds_bucket"))
        .count();
    assert_eq!(bounds, super::series::DURATION_BUCKETS.len() + 1);
}

#[test]
fn the_snapshot_is_shown_and_an_unknown_backlog_is_not_zero() {
    let m = Metrics::new();
    let s = samples(&m);
    assert_eq!(s[r#"stephost_step_slots{state="total"}"#], 8.0);
    assert_eq!(s[r#"stephost_step_slots{state="in-use"}"#], 3.0);
    assert_eq!(s["stephost_step_calls_waiting"], 1.0);
    assert_eq!(s["stephost_timers_pending"], 5.0);
    assert_eq!(s["stephost_timers_overdue"], 1.0);
    assert_eq!(s["stephost_timers_quarantined_total"], 2.0);
    assert_eq!(s["stephost_store_changes_total"], 40.0);
    assert_eq!(s["stephost_store_transactions_total"], 10.0);
    assert_eq!(s["stephost_store_flush_requests_total"], 12.0);
    assert_eq!(s["stephost_store_disk_flushes_total"], 4.0);
    let s = metric_samples(&m.render(&snapshot(None)));
    assert!(s["stephost_timers_pending"].is_nan());
    assert!(s["stephost_timers_overdue"].is_nan());
    assert!(s[r#"stephost_executions{state="suspended"}"#].is_nan());
}

#[test]
fn events_count_callbacks_timers_and_deliveries() {
    let m = Metrics::new();
    m.recovered(2);
    m.callback("applied");
    m.callback("busy");
    m.timer_fired("retry");
    m.delivery_enqueued();
    m.delivery_attempt(false, false);
    m.delivery_attempt(false, true);
    m.delivery_attempt(true, false);
    let s = samples(&m);
    assert_eq!(s["stephost_executions_recovered_total"], 2.0);
    assert_eq!(s[r#"stephost_callbacks_total{result="applied"}"#], 1.0);
    assert_eq!(s[r#"stephost_callbacks_total{result="busy"}"#], 1.0);
    assert_eq!(
        s[r#"stephost_callbacks_total{result="gone"}"#], 0.0,
        "shown at zero"
    );
    assert_eq!(s[r#"stephost_timers_fired_total{kind="retry"}"#], 1.0);
    assert_eq!(s[r#"stephost_timers_fired_total{kind="delivery"}"#], 0.0);
    assert_eq!(s["stephost_deliveries_enqueued_total"], 1.0);
    assert_eq!(s["stephost_delivery_attempts_total"], 3.0);
    assert_eq!(s["stephost_delivery_failures_total"], 2.0);
    assert_eq!(s["stephost_deliveries_delivered_total"], 1.0);
    assert_eq!(s["stephost_deliveries_given_up_total"], 1.0);
}

/// Prometheus reads `text/plain; version=0.0.4` by these rules: a counter's
/// TYPE line names the series with its `_total` (OpenMetrics would name it
/// without, and a 0.0.4 parser would then take the samples as untyped),
/// and there is no `# EOF`.
#[test]
fn every_documented_series_is_on_the_page_typed_as_documented() {
    let m = Metrics::new();
    m.step_call("p", StepResult::Complete, Duration::from_millis(1));
    let page = m.render(&snapshot(Some((0, 0))));
    assert!(!page.contains("# EOF"), "{page}");
    for (name, kind, help) in CATALOGUE {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert!(
            page.contains(&format!("\n# TYPE {name} {kind}\n"))
                || page.starts_with(&format!("# TYPE {name} {kind}\n")),
            "no TYPE line for {name}:\n{page}"
        );
        assert!(
            page.contains(&format!("# HELP {name} {help}\n")),
            "no HELP line for {name}:\n{page}"
        );
    }
    let documented = include_str!("../../../docs/operations.md");
    let listed: Vec<&str> = CATALOGUE.iter().map(|(name, ..)| *name).collect();
    for word in documented.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("stephost_") {
            assert!(listed.contains(&word), "{word} is documented but not kept");
        }
    }
    for name in listed {
        assert!(
            documented.contains(name),
            "{name} is kept but not documented"
        );
    }
}

/// The exporter holds every duration sample until it sorts them into
/// buckets; the periodic drain between scrapes must lose none.
#[test]
fn step_calls_between_scrapes_are_all_counted() {
    let m = Metrics::new();
    let n = 3 * UPKEEP_EVERY + 7;
    for _ in 0..n {
        m.step_call("p", StepResult::Complete, Duration::from_millis(2));
    }
    let s = samples(&m);
    assert_eq!(
        s[r#"stephost_step_duration_seconds_count{plugin="p"}"#],
        n as f64
    );
    assert_eq!(
        s[r#"stephost_step_duration_seconds_bucket{plugin="p",le="0.005"}"#],
        n as f64
    );
}
