//! What docs/configuration.md promises of the config file: callback URLs
//! from `public_url`, callback timeouts and their ceiling, the outbound
//! body cap, no redirects for plugins, workflows checked at start, default
//! step names, `[auth] enabled = false`, and two metrics. The real daemon,
//! real plugins, real partners on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use stephost::Config;
use stephost_tests::{Partner, TestDaemon, call_back, client, events, raw_server};

fn toml(text: &str) -> Config {
    Config::from_toml(text).unwrap()
}

/// The `time_ms` of the first status-log line with `event`.
fn time_of(exec: &Value, event: &str) -> u64 {
    exec["status_log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["event"] == event)
        .unwrap_or_else(|| panic!("no {event} line: {exec:#}"))["time_ms"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_urls_are_built_from_public_url_not_the_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let public = "https://steps.example:9443";
    let daemon = TestDaemon::start(toml(&format!("public_url = \"{public}\"\n")), dir.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {},
        }))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let rest = url
        .strip_prefix(&format!("{public}/v1/callbacks/"))
        .unwrap_or_else(|| panic!("{url} is not under {public}"));
    assert!(!url.contains(&daemon.base), "{url}");
    // The path and secret are the daemon's own: sent to the real address
    // (as a proxy at the public URL would), the callback is applied.
    let (status, body) = call_back(
        &format!("{}/v1/callbacks/{rest}", daemon.base),
        r#"{"ok": 1}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    daemon.wait_for(&id, "completed").await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_waits_the_default_timeout_and_never_longer_than_the_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start(
        toml("default_callback_timeout_ms = 3000\nmax_callback_timeout_ms = 6000\n"),
        dir.path(),
    )
    .await;
    let default = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {},
        }))
        .await;
    let greedy = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base, "timeout_ms": 3_600_000},
            "input": {},
        }))
        .await;
    // Seconds, not milliseconds: the test must see each execution while
    // it is suspended, and a busy machine polls late.
    for (id, timeout) in [(&default, 3000), (&greedy, 6000)] {
        let waiting = daemon.wait_for(id, "suspended").await;
        let deadline = waiting["waiting_until_ms"].as_u64().unwrap();
        let started = time_of(&waiting, "started");
        let waits = deadline - started;
        // The deadline is set while the step runs, a moment after its
        // start (a generous moment on a busy machine: far from the 24 h
        // default and the hour the greedy step asked for either way).
        assert!(
            (timeout..timeout + 5000).contains(&waits),
            "{id}: waits {waits} ms for a {timeout} ms timeout"
        );
    }
    for (id, timeout) in [(&default, 3000), (&greedy, 6000)] {
        let exec = daemon.wait_for(id, "failed").await;
        assert_eq!(exec["error"]["code"], "callback-timeout", "{exec:#}");
        let waited = time_of(&exec, "timeout") - time_of(&exec, "started");
        // Not before the deadline; and the timer loop fires a due timer at
        // once (it looks at least once a second): well under the hour the
        // step asked for.
        assert!(
            waited >= timeout && waited < timeout + 5000,
            "{id}: timed out {waited} ms after the start, timeout {timeout} ms"
        );
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_above_max_body_bytes_fails_the_step_with_body_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|req| async move {
        let size: usize = req.uri.trim_start_matches("/?size=").parse().unwrap();
        (200, json!({"pad": "x".repeat(size)}))
    })
    .await;
    let daemon = TestDaemon::start(
        toml("[plugins.http-task]\nmax_body_bytes = 2048\n"),
        dir.path(),
    )
    .await;
    let small = daemon
        .start_execution(json!({
            "plugin": "http-task",
            "config": {"url": format!("{}/?size=1000", partner.base)},
            "input": {},
        }))
        .await;
    let exec = daemon.wait_for(&small, "completed").await;
    assert_eq!(exec["output"]["pad"].as_str().unwrap().len(), 1000);

    let large = daemon
        .start_execution(json!({
            "plugin": "http-task",
            "config": {"url": format!("{}/?size=5000", partner.base)},
            "input": {},
        }))
        .await;
    let exec = daemon.wait_for(&large, "failed").await;
    assert_eq!(exec["error"]["code"], "body-too-large", "{exec:#}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_http_does_not_follow_redirects_the_plugin_sees_the_3xx() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = Partner::start(|_| async { (200, json!({"stolen": true})) }).await;
    let (redirecting, connections) = raw_server(Some(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {}/stolen\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        elsewhere.base
    )))
    .await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": "http-task",
            "config": {"url": redirecting, "method": "GET"},
            "input": {},
        }))
        .await;
    // http-task takes only a 2xx as success: with the 307 in hand, it fails
    // and says which status it got.
    let exec = daemon.wait_for(&id, "failed").await;
    let text = exec["error"]["text"].as_str().unwrap();
    assert!(text.contains("307"), "{exec:#}");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // The step is over: a followed redirect would have arrived by now.
    assert!(elsewhere.requests().is_empty(), "the target got nothing");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_naming_a_plugin_that_is_not_loaded_stops_the_daemon_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = toml(
        "[workflows.broken]\nsteps = [{ plugin = \"echo\" }, { plugin = \"no-such-plugin\" }]\n",
    );
    config.data_dir = dir.path().to_owned();
    let err = stephost::Daemon::open(config).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("no-such-plugin") && text.contains("broken"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_without_a_name_is_named_after_its_plugin_made_unique_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(
        toml(
            "[workflows.names]\nsteps = [\n  { plugin = \"echo\" },\n  { plugin = \"echo\" },\n  { name = \"last\", plugin = \"echo\" },\n]\n",
        ),
        dir.path(),
    )
    .await;
    let id = daemon
        .start_execution(json!({"workflow": "names", "input": {}}))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    let mut steps: Vec<String> = Vec::new();
    for line in exec["status_log"].as_array().unwrap() {
        let step = line["step"].as_str().unwrap().to_owned();
        if steps.last() != Some(&step) {
            steps.push(step);
        }
    }
    assert_eq!(steps, ["echo", "echo-2", "last"], "{exec:#}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_disabled_the_api_needs_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(toml("[auth]\nenabled = false\n"), dir.path()).await;
    let resp = client()
        .post(format!("{}/v1/executions", daemon.base))
        .json(&json!({"plugin": "echo", "input": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    daemon.wait_for(&id, "completed").await;
    let resp = client()
        .get(format!("{}/v1/executions", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .post(format!("{}/v1/tokens", daemon.base))
        .json(&json!({"name": "x", "permissions": ["executions:read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "admin routes too");
    daemon.stop().await;

    // The same requests to a daemon with auth on (the default) need one.
    let other = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(other.path()).await;
    let resp = client()
        .get(format!("{}/v1/executions", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_left_running_is_re_run_at_the_next_start_and_counted_as_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    // The first request hangs until the daemon gives up on it; the next
    // one (after the restart) is answered.
    let partner = Partner::start(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
            (200, json!({"n": n}))
        }
    })
    .await;
    let config = || toml("shutdown_grace_ms = 100\n");
    let first = TestDaemon::start(config(), dir.path()).await;
    let id = first
        .start_execution(
            json!({"plugin": "http-task", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    partner.wait_for_requests(1).await;
    assert_eq!(first.execution(&id).await["state"], "running");
    assert_eq!(
        first.metrics().await["stephost_executions_recovered_total"],
        0.0
    );
    // The grace period ends with the step still waiting for its partner:
    // it is interrupted and the execution stays `running` on disk.
    first.stop().await;

    let second = TestDaemon::start(config(), dir.path()).await;
    let exec = second.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"n": 1}));
    assert_eq!(
        second.metrics().await["stephost_executions_recovered_total"],
        1.0
    );
    let sent = partner.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].header("x-http-task-guid"),
        sent[1].header("x-http-task-guid"),
        "the re-run is the same step run"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_stored_before_the_suspension_and_after_the_end_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    // Calls back before answering the step's request: the step has not
    // suspended yet, so the callback is stored (202).
    let early = Partner::start(|req| async move {
        let url = req.callback_url();
        let (status, body) = call_back(&url, r#"{"early": true}"#).await;
        assert_eq!(status, 202, "{body}");
        (202, json!({}))
    })
    .await;
    let accepting = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let stored = r#"stephost_callbacks_total{result="stored"}"#;
    let gone = r#"stephost_callbacks_total{result="gone"}"#;
    let count = |m: &std::collections::BTreeMap<String, f64>, k: &str| m.get(k).copied();
    let before = daemon.metrics().await;
    assert!(matches!(count(&before, stored), None | Some(0.0)));

    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": early.base}, "input": {}}),
        )
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"early": true}));
    assert_eq!(count(&daemon.metrics().await, stored), Some(1.0));

    // A callback after the execution ended: 410.
    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": accepting.base}, "input": {}}),
        )
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = accepting.wait_for_requests(1).await[0].callback_url();
    let (status, _) = daemon
        .post(&format!("/v1/executions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(matches!(
        count(&daemon.metrics().await, gone),
        None | Some(0.0)
    ));
    let (status, _) = call_back(&url, "{}").await;
    assert_eq!(status, 410);
    let metrics = daemon.metrics().await;
    assert_eq!(count(&metrics, gone), Some(1.0));
    assert_eq!(count(&metrics, stored), Some(1.0));
    assert!(events(&daemon.execution(&id).await).contains(&"failed".to_owned()));
    daemon.stop().await;
}
