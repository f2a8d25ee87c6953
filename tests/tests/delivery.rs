//! Result delivery to a client's `callback_url` (docs/operations.md,
//! "Result delivery"): the address policy, the per-attempt time limit,
//! deliveries on cancel, skip and retry, redirects, and the give-up
//! counter. The real daemon, real plugins, real clients on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stephost::Config;
use stephost_tests::{Partner, TestDaemon, WAIT, raw_server};

fn config(delivery: &str) -> Config {
    Config::from_toml(&format!("[delivery]\n{delivery}\n")).unwrap()
}

/// Polls an execution until its delivery is in `state`.
async fn delivery_in(daemon: &TestDaemon, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let exec = daemon.execution(id).await;
        if exec["delivery"]["state"] == state {
            return exec;
        }
        assert!(
            Instant::now() < deadline,
            "waited for delivery {state}: {exec:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(daemon: &TestDaemon, body: Value) -> String {
    let (status, answer) = daemon.post("/v1/executions", body).await;
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_callback_url_is_refused_without_egress_allow_and_the_attempt_names_the_policy()
{
    let dir = tempfile::tempdir().unwrap();
    let results = Partner::accepting().await;
    let daemon = TestDaemon::start_with_policy(
        config("callback_maximum_retries = 0\ncallback_retry_interval_ms = 50"),
        dir.path(),
    )
    .await;

    // A literal loopback address is refused at the start.
    let (status, refused) = daemon
        .post(
            "/v1/executions",
            json!({"plugin": "echo", "input": 1, "callback_url": results.base}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("egress_allow"),
        "{refused}"
    );

    // A name that resolves to loopback is refused when the result is sent:
    // the attempt fails and says why.
    let port = results.base.rsplit(':').next().unwrap();
    let id = start(
        &daemon,
        json!({"plugin": "echo", "input": 1, "callback_url": format!("http://localhost:{port}/r")}),
    )
    .await;
    let exec = delivery_in(&daemon, &id, "failed").await;
    let attempts = exec["delivery"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{exec:#}");
    let error = attempts[0]["error"].as_str().unwrap();
    assert!(
        error.contains("egress_allow") && error.contains("loopback"),
        "{error}"
    );
    assert_eq!(attempts[0]["status"], Value::Null);
    // The delivery gave up, so no attempt is still to come.
    assert!(results.requests().is_empty(), "the client got nothing");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_to_a_client_that_never_answers_fails_after_request_timeout_ms() {
    let dir = tempfile::tempdir().unwrap();
    let (silent, connections) = raw_server(None).await;
    let daemon = TestDaemon::start(
        config("request_timeout_ms = 400\ncallback_maximum_retries = 0"),
        dir.path(),
    )
    .await;
    let id = start(
        &daemon,
        json!({"plugin": "echo", "input": 1, "callback_url": silent}),
    )
    .await;
    let exec = delivery_in(&daemon, &id, "failed").await;
    let attempt = &exec["delivery"]["attempts"][0];
    assert_eq!(
        attempt["error"], "no answer within the request time limit",
        "{exec:#}"
    );
    let took = attempt["duration_ms"].as_u64().unwrap();
    // The default is 10 s: a cut at about 400 ms is the setting's (the
    // upper bound leaves a busy machine room and still tells them apart).
    assert!((390..8000).contains(&took), "the attempt took {took} ms");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "it did connect");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_skip_end_an_execution_with_a_delivery_each() {
    let dir = tempfile::tempdir().unwrap();
    let results = Partner::start(|_| async { (200, json!({"ok": true})) }).await;
    let accepting = Partner::accepting().await;
    let down = Partner::start(|_| async { (500, json!({"error": "down"})) }).await;
    let daemon = TestDaemon::start(config(""), dir.path()).await;

    // Cancel: a suspended execution ends failed with `cancelled`.
    let cancelled = start(
        &daemon,
        json!({"plugin": "wait-for-callback", "config": {"url": accepting.base},
               "input": {}, "callback_url": format!("{}/cancelled", results.base)}),
    )
    .await;
    daemon.wait_for(&cancelled, "suspended").await;
    assert!(results.requests().is_empty(), "no delivery while it waits");
    let (status, _) = daemon
        .post(&format!("/v1/executions/{cancelled}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let sent = results.wait_for_requests(1).await;
    assert_eq!(sent[0].uri, "/cancelled");
    let body = sent[0].json();
    assert_eq!(body["id"], cancelled);
    assert_eq!(body["state"], "failed");
    assert_eq!(body["error"]["code"], "cancelled", "{body}");

    // Skip: a failed execution ends again, completed with the step's input.
    let skipped = start(
        &daemon,
        json!({"plugin": "wait-for-callback", "config": {"url": down.base},
               "input": {"order": 5}, "callback_url": format!("{}/skipped", results.base)}),
    )
    .await;
    daemon.wait_for(&skipped, "failed").await;
    let sent = results.wait_for_requests(2).await;
    assert_eq!(sent[1].json()["state"], "failed");
    let (status, _) = daemon
        .post(&format!("/v1/executions/{skipped}/skip"), json!({}))
        .await;
    assert_eq!(status, 200);
    let sent = results.wait_for_requests(3).await;
    assert_eq!(sent[2].uri, "/skipped");
    let body = sent[2].json();
    assert_eq!(body["id"], skipped);
    assert_eq!(body["state"], "completed", "{body}");
    assert_eq!(body["output"], json!({"order": 5}));
    assert_ne!(
        sent[1].header("webhook-id"),
        sent[2].header("webhook-id"),
        "the second end is a delivery of its own"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_retry_that_ends_the_execution_again_gets_a_new_webhook_id() {
    let dir = tempfile::tempdir().unwrap();
    let results = Partner::start(|_| async { (200, json!({"ok": true})) }).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    // Fails the first request, accepts the next.
    let partner = Partner::start(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                (500, json!({"error": "first"}))
            } else {
                (200, json!({"n": n}))
            }
        }
    })
    .await;
    let daemon = TestDaemon::start(config(""), dir.path()).await;
    let id = start(
        &daemon,
        json!({"plugin": "http-task", "config": {"url": partner.base},
               "input": {}, "callback_url": results.base}),
    )
    .await;
    daemon.wait_for(&id, "failed").await;
    let first = results.wait_for_requests(1).await;
    assert_eq!(first[0].json()["state"], "failed");
    let (status, answer) = daemon
        .post(&format!("/v1/executions/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    daemon.wait_for(&id, "completed").await;
    let sent = results.wait_for_requests(2).await;
    assert_eq!(sent[1].json()["state"], "completed");
    let (old, new) = (
        sent[0].header("webhook-id").unwrap(),
        sent[1].header("webhook-id").unwrap(),
    );
    assert_ne!(old, new, "a new end, a new webhook-id");
    let exec = delivery_in(&daemon, &id, "delivered").await;
    assert_eq!(
        exec["delivery"]["webhook_id"], new,
        "the view shows the latest"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_does_not_follow_a_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = Partner::start(|_| async { (200, json!({"ok": true})) }).await;
    let (redirecting, connections) = raw_server(Some(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {}/stolen\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        elsewhere.base
    )))
    .await;
    let daemon = TestDaemon::start(
        config("callback_maximum_retries = 0\ncallback_retry_interval_ms = 50"),
        dir.path(),
    )
    .await;
    let id = start(
        &daemon,
        json!({"plugin": "echo", "input": {"secret": "result"}, "callback_url": redirecting}),
    )
    .await;
    let exec = delivery_in(&daemon, &id, "failed").await;
    let attempts = exec["delivery"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{exec:#}");
    assert_eq!(attempts[0]["status"], 307, "{exec:#}");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // The delivery is over (given up): a followed redirect would have
    // reached the other server by now.
    assert!(
        elsewhere.requests().is_empty(),
        "the redirect target got nothing"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_runs_out_of_retries_counts_as_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let refusing = Partner::start(|_| async { (503, json!({"error": "maintenance"})) }).await;
    let accepting = Partner::start(|_| async { (200, json!({"ok": true})) }).await;
    let daemon = TestDaemon::start(
        config("callback_maximum_retries = 1\ncallback_retry_interval_ms = 50"),
        dir.path(),
    )
    .await;
    let delivered = start(
        &daemon,
        json!({"plugin": "echo", "input": 1, "callback_url": accepting.base}),
    )
    .await;
    delivery_in(&daemon, &delivered, "delivered").await;
    assert_eq!(
        daemon.metrics().await["stephost_deliveries_given_up_total"],
        0.0,
        "a delivered result is not given up"
    );

    let id = start(
        &daemon,
        json!({"plugin": "echo", "input": 1, "callback_url": refusing.base}),
    )
    .await;
    let exec = delivery_in(&daemon, &id, "failed").await;
    assert_eq!(exec["delivery"]["attempts"].as_array().unwrap().len(), 2);
    assert!(
        exec["delivery"]["attempts"][1]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 503")
    );
    let metrics = daemon.metrics().await;
    assert_eq!(metrics["stephost_deliveries_given_up_total"], 1.0);
    assert_eq!(metrics["stephost_deliveries_delivered_total"], 1.0);
    assert_eq!(metrics["stephost_delivery_failures_total"], 2.0);
    assert_eq!(
        refusing.requests().len(),
        2,
        "the first attempt and one retry"
    );
    daemon.stop().await;
}
