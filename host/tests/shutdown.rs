//! Graceful shutdown of the real `stephost` binary: SIGTERM stops
//! accepting, lets the step call in flight finish, flushes and exits 0; a
//! second SIGTERM exits at once, and the next start loses nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Process, client, create_token, free_port, post, wait_state, write_config};
use serde_json::json;
use stephost_tests::Partner;

/// A partner that answers each request after `delay(n)`.
async fn slow_partner(delay: impl Fn(usize) -> Duration + Send + Sync + 'static) -> Partner {
    let count = Arc::new(AtomicUsize::new(0));
    let delay = Arc::new(delay);
    Partner::start(move |_| {
        let wait = delay(count.fetch_add(1, Ordering::SeqCst));
        async move {
            tokio::time::sleep(wait).await;
            (202, json!({}))
        }
    })
    .await
}

/// A counter of the daemon's `/metrics` page.
async fn metric(base: &str, token: &str, name: &str) -> f64 {
    let page = client()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stephost_tests::metric_samples(&page)
        .get(name)
        .copied()
        .unwrap_or_else(|| panic!("no {name} in {page}"))
}

fn config(dir: &std::path::Path, grace_ms: u64) -> std::path::PathBuf {
    write_config(
        dir,
        &format!("shutdown_grace_ms = {grace_ms}\negress_allow = [\"127.0.0.0/8\"]\n"),
    )
}

#[tokio::test]
async fn sigterm_stops_accepting_lets_the_step_in_flight_finish_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data);
    let config = config(dir.path(), 10_000);
    let port = free_port();
    let log = dir.path().join("daemon.log");
    // The step's request is answered only when the test says so.
    let (partner, release) = stephost_tests::gated_partner((202, json!({}))).await;

    let mut daemon = Process::spawn(&config, &data, port, &log);
    daemon.wait_healthy(Duration::from_secs(60)).await;
    let (status, started) = post(
        &daemon.base,
        &token,
        "/v1/executions",
        json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {"n": 1}}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    partner.wait_for_requests(1).await;

    daemon.term();
    // Not accepting any more, at once (5 s: room for a busy machine, far
    // below the 10 s grace period the step could hold it open).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let refused = client()
            .get(format!("{}/healthz", daemon.base))
            .timeout(Duration::from_millis(300))
            .send()
            .await
            .is_err();
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Shutting down (the listener is closed), yet alive while the step
    // call is in flight: only the release below lets the call end.
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "it waits for the step call in flight"
    );
    release.add_permits(1);
    let status = daemon
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits within the grace period");
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");

    // The step's outcome was written and flushed: the execution waits on
    // disk, and the step is not run again.
    let mut daemon = Process::spawn(&config, &data, port, &log);
    daemon.wait_healthy(Duration::from_secs(60)).await;
    let exec = wait_state(&daemon.base, &token, &id, "suspended").await;
    let events: Vec<&str> = exec["status_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["started", "suspended"]);
    // Recovery re-runs only what was running, before the daemon serves;
    // it counts each one, so 0 here means nothing is re-run later either.
    assert_eq!(
        metric(&daemon.base, &token, "stephost_executions_recovered_total").await,
        0.0,
        "the finished step is not re-run"
    );
    assert_eq!(partner.requests().len(), 1);
    let url = partner.requests()[0].callback_url();
    let resp = client()
        .post(&url)
        .body(r#"{"done": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_state(&daemon.base, &token, &id, "completed").await;
    daemon.term();
    let status = daemon.wait_exit(Duration::from_secs(15)).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once_and_the_next_start_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data);
    let config = config(dir.path(), 30_000);
    let port = free_port();
    let log = dir.path().join("daemon.log");
    // The first request hangs far beyond the test; later ones are quick.
    let partner = slow_partner(|n| {
        if n == 0 {
            Duration::from_secs(120)
        } else {
            Duration::ZERO
        }
    })
    .await;

    let mut daemon = Process::spawn(&config, &data, port, &log);
    daemon.wait_healthy(Duration::from_secs(60)).await;
    let (status, started) = post(
        &daemon.base,
        &token,
        "/v1/executions",
        json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {"n": 2}}),
    )
    .await;
    assert_eq!(status, 201);
    let hanging = started["id"].as_str().unwrap().to_owned();
    let first_send = partner.wait_for_requests(1).await[0].clone();
    let (_, started) = post(
        &daemon.base,
        &token,
        "/v1/executions",
        json!({"plugin": "echo", "input": {"kept": true}}),
    )
    .await;
    let echoed = started["id"].as_str().unwrap().to_owned();
    wait_state(&daemon.base, &token, &echoed, "completed").await;

    daemon.term();
    // Once the listener is closed the first SIGTERM has been handled; the
    // step in flight (its partner answers only after 120 s) keeps the
    // daemon alive.
    let until = Instant::now() + Duration::from_secs(5);
    while client()
        .get(format!("{}/healthz", daemon.base))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .is_ok()
    {
        assert!(Instant::now() < until, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the first SIGTERM waits for the step in flight"
    );
    let second = Instant::now();
    daemon.term();
    // "At once" against a 30 s grace period and a step that would take
    // 120 s: 5 s leaves a busy machine room and still tells them apart.
    let status = daemon
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("a second SIGTERM exits at once");
    assert!(second.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(128 + 15));

    // Everything acknowledged is there; the interrupted step re-runs with
    // the same step-run-id and the same callback URL.
    let mut daemon = Process::spawn(&config, &data, port, &log);
    daemon.wait_healthy(Duration::from_secs(60)).await;
    // Its start was acknowledged; its end was only shown (docs/operations.md:
    // an end nobody waits on reaches the disk with the next flush), so a
    // crash right after may have taken it back and re-run the step.
    let done = wait_state(&daemon.base, &token, &echoed, "completed").await;
    assert_eq!(done["output"], json!({"kept": true}));
    wait_state(&daemon.base, &token, &hanging, "suspended").await;
    let sent = partner.wait_for_requests(2).await;
    assert_eq!(
        sent[1].header("x-step-run-id"),
        first_send.header("x-step-run-id"),
        "the re-run carries the same step-run-id"
    );
    assert_eq!(
        sent[1].header("x-callback-url"),
        first_send.header("x-callback-url"),
        "and the same callback URL, so a partner's callback on it is not lost"
    );
    let url = sent[1].header("x-callback-url").unwrap().to_owned();
    let resp = client()
        .post(&url)
        .body(r#"{"late": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let exec = wait_state(&daemon.base, &token, &hanging, "completed").await;
    assert_eq!(exec["output"], json!({"late": 1}));
    daemon.term();
    assert_eq!(
        daemon
            .wait_exit(Duration::from_secs(15))
            .await
            .unwrap()
            .code(),
        Some(0)
    );
}
