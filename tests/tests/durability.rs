//! Durability end to end: timers that come due while the daemon is down,
//! `retry-after` across a restart, signed result delivery with retries
//! that survive a restart, and the `/metrics` counters. The real daemon on
//! port 0, the real reference plugins, real partners and clients on
//! loopback.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use stephost::Config;
use stephost::bindings::stephost::plugin::signing::HmacAlg;
use stephost::capabilities::signing::hmac;
use stephost_tests::{
    Partner, PartnerRequest, TestDaemon, call_back, client, events, metric_samples,
};

/// The raw signing key of the tests' `whsec_` secret.
const KEY: &[u8] = b"durability-test-signing-key-32by";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn signing_secret() -> String {
    format!("whsec_{}", base64(KEY))
}

/// What a client does with a delivery (Standard Webhooks): recompute
/// `v1,base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"))`
/// and find it among the signatures of `webhook-signature`; reject stale
/// timestamps.
fn webhook_is_authentic(req: &PartnerRequest) -> bool {
    let (Some(id), Some(timestamp), Some(signatures)) = (
        req.header("webhook-id"),
        req.header("webhook-timestamp"),
        req.header("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(sent_at) = timestamp.parse::<u64>() else {
        return false;
    };
    if (now_ms() / 1000).abs_diff(sent_at) > 300 {
        return false;
    }
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&req.body);
    let expected = format!("v1,{}", base64(&hmac(HmacAlg::Sha256, KEY, &signed)));
    signatures.split(' ').any(|s| s == expected)
}

fn delivery_config(extra: &str) -> Config {
    Config::from_toml(&format!(
        "[delivery]\nsigning_secret = \"{}\"\n{extra}\n",
        signing_secret()
    ))
    .unwrap()
}

/// A client whose answers are scripted by `fail_first` (that many 500s,
/// then 200s); it records when each delivery arrived.
async fn results_client(fail_first: usize) -> (Partner, Arc<Mutex<Vec<Instant>>>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let times = Arc::new(Mutex::new(Vec::new()));
    let recorded = times.clone();
    let partner = Partner::start(move |_| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        recorded.lock().unwrap().push(Instant::now());
        async move {
            if n < fail_first {
                (500, json!({"error": format!("busy, try later ({n})")}))
            } else {
                (200, json!({"ok": true}))
            }
        }
    })
    .await;
    (partner, times)
}

async fn start_with_callback(daemon: &TestDaemon, body: Value) -> (u16, Value) {
    daemon.post("/v1/executions", body).await
}

/// Polls an execution until `check` accepts it.
async fn wait_until(
    daemon: &TestDaemon,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let exec = daemon.execution(id).await;
        if check(&exec) {
            return exec;
        }
        assert!(Instant::now() < deadline, "waited for {what}: {exec:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_that_expires_while_the_daemon_is_down_fails_the_execution_at_once_after_restart()
{
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let first = TestDaemon::start_default(dir.path()).await;
    let id = first
        .start_execution(json!({
            "plugin": "wait-for-callback",
            // Long enough to see it suspended on a busy machine.
            "config": {"url": partner.base, "timeout_ms": 3000},
            "input": {},
        }))
        .await;
    let suspended = first.wait_for(&id, "suspended").await;
    let due = suspended["waiting_until_ms"].as_u64().unwrap();
    first.stop().await;

    // The deadline passes while no daemon runs.
    while now_ms() < due + 300 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restarted_ms = now_ms();
    let started = Instant::now();
    let second = TestDaemon::start_default(dir.path()).await;
    let exec = second.wait_for(&id, "failed").await;
    let took = started.elapsed();
    assert_eq!(exec["error"]["code"], "callback-timeout", "{exec:#}");
    assert_eq!(events(&exec), ["started", "suspended", "timeout", "failed"]);
    let timeout_at = exec["status_log"][2]["time_ms"].as_u64().unwrap();
    assert!(
        timeout_at >= restarted_ms,
        "the late timer fired after the restart, not before the stop"
    );
    assert!(
        took < Duration::from_secs(5),
        "a late timer fires at once after the start (daemon start included): {took:?}"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_timer_survives_a_restart_and_the_retry_completes_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let partner = Partner::start(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n == 1 {
                (503, json!({"n": n}))
            } else {
                (200, json!({"accepted": n}))
            }
        }
    })
    .await;
    let first = TestDaemon::start_default(dir.path()).await;
    let id = first
        .start_execution(json!({
            "plugin": "http-task",
            "config": {
                "url": partner.base,
                // Long enough to stop the daemon before it is due, on a
                // busy machine too.
                "retry_on_failure": {"attempts": 3, "backoff_ms": 5000},
            },
            "input": {},
        }))
        .await;
    let waiting = first.wait_for(&id, "suspended").await;
    let due = waiting["waiting_until_ms"].as_u64().unwrap();
    assert_eq!(events(&waiting), ["started", "retry-after"]);
    // Stopped during the backoff.
    first.stop().await;
    assert!(
        now_ms() < due,
        "the daemon stopped before the retry was due"
    );
    assert_eq!(partner.requests().len(), 1);

    let second = TestDaemon::start_default(dir.path()).await;
    let exec = second.wait_for(&id, "completed").await;
    assert_eq!(exec["attempt"], 2);
    assert_eq!(exec["output"], json!({"accepted": 2}));
    assert_eq!(
        events(&exec),
        ["started", "retry-after", "timer", "completed"]
    );
    let fired_at = exec["status_log"][2]["time_ms"].as_u64().unwrap();
    assert!(fired_at >= due, "the retry waited for its delay");
    let sent = partner.requests();
    assert_eq!(sent.len(), 2, "one retry, not a re-run of the whole series");
    assert_eq!(
        sent[0].header("x-http-task-guid"),
        sent[1].header("x-http-task-guid"),
        "the retry after the restart carries the same GUID"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_url_gets_the_signed_result_retried_until_the_client_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (results, times) = results_client(2).await;
    let config = delivery_config("callback_retry_interval_ms = 200\ncallback_maximum_retries = 5");
    let daemon = TestDaemon::start(config, dir.path()).await;

    let (status, started) = start_with_callback(
        &daemon,
        json!({"plugin": "echo", "input": {"order": 42}, "callback_url": format!("{}/results?tenant=a", results.base)}),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(started["state"], "running");

    let sent = results.wait_for_requests(3).await;
    for req in &sent {
        assert_eq!(req.method, "POST");
        assert_eq!(req.uri, "/results?tenant=a");
        assert!(
            webhook_is_authentic(req),
            "signature verifies: {:?}",
            req.headers
        );
        assert_eq!(
            req.json(),
            json!({"id": id, "state": "completed", "output": {"order": 42}})
        );
        assert_eq!(req.header("content-type"), Some("application/json"));
    }
    assert!(
        sent.iter()
            .all(|r| r.header("webhook-id") == sent[0].header("webhook-id")),
        "one webhook-id for every attempt of one delivery"
    );
    let times = times.lock().unwrap().clone();
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(180),
            "attempts are spaced by the retry interval: {times:?}"
        );
    }

    let exec = wait_until(&daemon, &id, "delivered", |e| {
        e["delivery"]["state"] == "delivered"
    })
    .await;
    let attempts = exec["delivery"]["attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 3, "{exec:#}");
    for failed in &attempts[..2] {
        assert_eq!(failed["status"], 500);
        assert!(
            failed["error"]
                .as_str()
                .unwrap()
                .contains("busy, try later"),
            "each failed attempt records why: {failed}"
        );
    }
    assert_eq!(attempts[2]["status"], 200);
    assert!(attempts[2].get("error").is_none());
    assert_eq!(
        exec["delivery"]["webhook_id"],
        sent[0].header("webhook-id").unwrap()
    );
    // Nothing is scheduled any more: no delivery timer is left that could
    // send a fourth request.
    assert_eq!(exec["delivery"]["next_attempt_ms"], Value::Null, "{exec:#}");
    assert_eq!(daemon.metrics().await["stephost_timers_pending"], 0.0);
    assert_eq!(results.requests().len(), 3, "nothing after the acceptance");

    // A failed execution's error is delivered the same way.
    let (failing, _) = results_client(0).await;
    let (status, started) = start_with_callback(
        &daemon,
        json!({"plugin": "http-task", "config": {"url": format!("{}/nowhere", closed_port().await)},
               "input": {}, "callback_url": failing.base}),
    )
    .await;
    assert_eq!(status, 202);
    let sent = failing.wait_for_requests(1).await;
    let body = sent[0].json();
    assert_eq!(body["id"], started["id"]);
    assert_eq!(body["state"], "failed");
    assert_eq!(body["error"]["code"], "http-error", "{body}");
    assert!(body.get("output").is_none());
    assert!(webhook_is_authentic(&sent[0]));

    // Without a callback_url nothing changes: 201, no delivery.
    let (status, plain) = daemon
        .post("/v1/executions", json!({"plugin": "echo", "input": 1}))
        .await;
    assert_eq!(status, 201);
    let exec = daemon
        .wait_for(plain["id"].as_str().unwrap(), "completed")
        .await;
    assert_eq!(exec["delivery"], Value::Null);
    for bad in ["ftp://client.example/x", "not a url", "http://user:pw@h/"] {
        let (status, body) = daemon
            .post(
                "/v1/executions",
                json!({"plugin": "echo", "input": 1, "callback_url": bad}),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    daemon.stop().await;
}

/// A loopback URL that never answers: each connection is closed at once.
async fn closed_port() -> String {
    stephost_tests::closing_server().await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_delivery_survives_a_restart_and_keeps_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let client_up = up.clone();
    let results = Partner::start(move |_| {
        let up = client_up.load(Ordering::SeqCst);
        async move {
            if up {
                (204, Value::Null)
            } else {
                (503, json!({"error": "maintenance"}))
            }
        }
    })
    .await;
    let config = delivery_config("callback_retry_interval_ms = 300\ncallback_maximum_retries = 50");
    let first = TestDaemon::start(config.clone(), dir.path()).await;
    let (status, started) = start_with_callback(
        &first,
        json!({"plugin": "echo", "input": {"n": 1}, "callback_url": results.base}),
    )
    .await;
    assert_eq!(status, 202);
    let id = started["id"].as_str().unwrap().to_owned();
    let pending = wait_until(&first, &id, "a failed attempt", |e| {
        e["delivery"]["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(pending["state"], "completed");
    assert_eq!(pending["delivery"]["state"], "pending");
    assert!(pending["delivery"]["next_attempt_ms"].as_u64().is_some());
    first.stop().await;
    let before = results.requests().len();
    assert!(before >= 1);

    // The client recovers while the daemon is down; the next daemon
    // delivers from its store.
    up.store(true, Ordering::SeqCst);
    let second = TestDaemon::start(config, dir.path()).await;
    let exec = wait_until(&second, &id, "delivered", |e| {
        e["delivery"]["state"] == "delivered"
    })
    .await;
    let sent = results.requests();
    assert!(sent.len() > before);
    assert!(sent.iter().all(webhook_is_authentic));
    assert!(
        sent.iter()
            .all(|r| r.header("webhook-id") == sent[0].header("webhook-id")),
        "the same delivery, recognisable as a repeat"
    );
    let attempts = exec["delivery"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), sent.len(), "every attempt is on the record");
    assert_eq!(attempts.last().unwrap()["status"], 204);
    assert!(
        attempts[..attempts.len() - 1]
            .iter()
            .all(|a| a["status"] == 503 && a["error"].as_str().is_some()),
        "{attempts:#?}"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_gives_up_after_the_maximum_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (results, _) = results_client(usize::MAX).await;
    let config = delivery_config("callback_retry_interval_ms = 50\ncallback_maximum_retries = 2");
    let daemon = TestDaemon::start(config, dir.path()).await;
    let (_, started) = start_with_callback(
        &daemon,
        json!({"plugin": "echo", "input": {}, "callback_url": results.base}),
    )
    .await;
    let id = started["id"].as_str().unwrap();
    let exec = wait_until(&daemon, id, "gave up", |e| {
        e["delivery"]["state"] == "failed"
    })
    .await;
    assert_eq!(exec["delivery"]["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(exec["delivery"]["next_attempt_ms"], Value::Null);
    // No delivery timer is left that could send a fourth request.
    assert_eq!(daemon.metrics().await["stephost_timers_pending"], 0.0);
    assert_eq!(results.requests().len(), 3, "one attempt and two retries");
    daemon.stop().await;
}

/// `name{labels} value` lines of a Prometheus text page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_executions_steps_callbacks_timers_and_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let (results, _) = results_client(1).await;
    let config = delivery_config("callback_retry_interval_ms = 50");
    let daemon = TestDaemon::start(config, dir.path()).await;

    for n in 0..3 {
        let id = daemon
            .start_execution(json!({"plugin": "echo", "input": n}))
            .await;
        daemon.wait_for(&id, "completed").await;
    }
    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    assert_eq!(call_back(&url, r#"{"ok": 1}"#).await.0, 200);
    assert_eq!(call_back(&url, r#"{"ok": 2}"#).await.0, 409);
    assert_eq!(call_back(&url, "not json").await.0, 409);
    daemon.wait_for(&id, "completed").await;
    let (_, started) = start_with_callback(
        &daemon,
        json!({"plugin": "echo", "input": {}, "callback_url": results.base}),
    )
    .await;
    let delivered = started["id"].as_str().unwrap();
    wait_until(&daemon, delivered, "delivered", |e| {
        e["delivery"]["state"] == "delivered"
    })
    .await;
    // A suspension whose timer is pending.
    let waiting = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    daemon.wait_for(&waiting, "suspended").await;

    // Open, like /healthz: no token.
    let resp = client()
        .get(format!("{}/metrics", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let page = resp.text().await.unwrap();
    let m = metric_samples(&page);
    let get = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no sample {k} in\n{page}"))
    };
    assert_eq!(get(r#"stephost_executions{state="completed"}"#), 5.0);
    assert_eq!(get(r#"stephost_executions{state="suspended"}"#), 1.0);
    assert_eq!(get(r#"stephost_executions{state="running"}"#), 0.0);
    assert_eq!(get(r#"stephost_executions{state="failed"}"#), 0.0);
    assert_eq!(get("stephost_executions_started_total"), 6.0);
    assert_eq!(
        get(r#"stephost_executions_ended_total{state="completed"}"#),
        5.0
    );
    assert_eq!(get(r#"stephost_steps_started_total{plugin="echo"}"#), 4.0);
    assert_eq!(get(r#"stephost_steps_completed_total{plugin="echo"}"#), 4.0);
    assert_eq!(get(r#"stephost_steps_failed_total{plugin="echo"}"#), 0.0);
    assert_eq!(
        get(r#"stephost_steps_started_total{plugin="wait-for-callback"}"#),
        3.0,
        "two runs and one resume"
    );
    assert_eq!(
        get(r#"stephost_step_outcomes_total{plugin="wait-for-callback",outcome="suspend"}"#),
        2.0
    );
    assert_eq!(
        get(r#"stephost_step_duration_seconds_count{plugin="echo"}"#),
        4.0
    );
    assert_eq!(
        get(r#"stephost_step_duration_seconds_bucket{plugin="echo",le="+Inf"}"#),
        4.0
    );
    assert_eq!(get(r#"stephost_callbacks_total{result="applied"}"#), 1.0);
    assert_eq!(get(r#"stephost_callbacks_total{result="duplicate"}"#), 2.0);
    assert_eq!(get(r#"stephost_callbacks_total{result="rejected"}"#), 0.0);
    assert_eq!(
        get("stephost_timers_pending"),
        1.0,
        "the open suspension's timeout"
    );
    assert_eq!(get("stephost_timers_overdue"), 0.0);
    assert_eq!(get(r#"stephost_timers_fired_total{kind="delivery"}"#), 2.0);
    assert_eq!(get("stephost_deliveries_enqueued_total"), 1.0);
    assert_eq!(get("stephost_delivery_attempts_total"), 2.0);
    assert_eq!(get("stephost_delivery_failures_total"), 1.0);
    assert_eq!(get("stephost_deliveries_delivered_total"), 1.0);
    // Every start is durable before its 201, so each waited for a flush;
    // group commit may serve several of them with one disk flush.
    let requests = get("stephost_store_flush_requests_total");
    let disk = get("stephost_store_disk_flushes_total");
    assert!(requests >= 6.0, "six starts waited for a flush: {requests}");
    assert!(
        (1.0..=requests).contains(&disk),
        "{disk} disk flushes for {requests} requests"
    );
    // Each start, step end and suspension is a change; group apply may
    // write several in one transaction, never one in several.
    let changes = get("stephost_store_changes_total");
    let transactions = get("stephost_store_transactions_total");
    assert!(
        changes >= 12.0,
        "six starts and six ends at least: {changes}"
    );
    assert!(
        (1.0..=changes).contains(&transactions),
        "{transactions} transactions for {changes} changes"
    );

    // The gauges are seeded from the store after a restart.
    daemon.stop().await;
    let again = TestDaemon::start(delivery_config(""), dir.path()).await;
    let m = again.metrics().await;
    assert_eq!(m[r#"stephost_executions{state="completed"}"#], 5.0);
    assert_eq!(m[r#"stephost_executions{state="suspended"}"#], 1.0);
    assert_eq!(m["stephost_executions_started_total"], 0.0);
    again.stop().await;
}
