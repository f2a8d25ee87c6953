//! The vertical slice, end to end: the real daemon on port 0, the real
//! reference plugins compiled from `plugins/`, a real partner on loopback.

use std::time::Duration;

use serde_json::{Value, json};
use stephost::Config;
use stephost_tests::{Partner, TestDaemon, call_back, client, events, transitions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_completes_with_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = daemon
        .start_execution(json!({"plugin": "echo", "input": {"order": 7, "items": ["a", "b"]}}))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"order": 7, "items": ["a", "b"]}));
    assert_eq!(exec["error"], Value::Null);

    let id = daemon
        .start_execution(json!({"plugin": "echo", "config": {"tag": "x"}, "input": [1, 2]}))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"input": [1, 2], "config": {"tag": "x"}})
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_callback_suspends_and_the_callback_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": format!("{}/orders", partner.base)},
            "input": {"order": 42},
        }))
        .await;
    let exec = daemon.wait_for(&id, "suspended").await;
    assert!(exec["waiting_until_ms"].as_u64().is_some());

    let sent = partner.wait_for_requests(1).await;
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].uri, "/orders");
    assert_eq!(
        sent[0].json(),
        json!({"order": 42}),
        "the partner gets the input document"
    );
    let url = sent[0].callback_url();
    assert!(
        url.starts_with(&format!("{}/v1/callbacks/", daemon.base)),
        "{url}"
    );

    let (status, body) = call_back(&url, r#"{"approved": true, "ref": "P-1"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["execution_state"], "completed");

    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"approved": true, "ref": "P-1"}));
    assert_eq!(
        transitions(&exec),
        [
            ("running", "running"),
            ("running", "suspended"),
            ("suspended", "running"),
            ("running", "completed"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(
        events(&exec),
        ["started", "suspended", "callback", "completed"]
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_arrives_before_the_step_suspends_still_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = statuses.clone();
    // The partner calls back *before* answering the step's request, so the
    // callback lands while the step has not returned `suspend` yet.
    let partner = Partner::start(move |req| {
        let seen = seen.clone();
        async move {
            let url = req.callback_url();
            let (status, _) = call_back(&url, r#"{"early": true}"#).await;
            seen.lock().unwrap().push(status);
            (202, json!({}))
        }
    })
    .await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {"n": 1},
        }))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"early": true}));
    assert_eq!(
        *statuses.lock().unwrap(),
        [202],
        "an early callback is stored: 202 Accepted"
    );
    assert!(events(&exec).contains(&"callback".to_owned()));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_callback_gets_409_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();

    let (first, _) = call_back(&url, r#"{"n": 1}"#).await;
    assert_eq!(first, 200);
    let before = daemon.wait_for(&id, "completed").await;

    let (second, body) = call_back(&url, r#"{"n": 2}"#).await;
    assert_eq!(second, 409, "{body}");
    assert_eq!(body["error"]["code"], "duplicate-callback");
    let after = daemon.execution(&id).await;
    assert_eq!(
        after, before,
        "a refused duplicate must not touch the execution"
    );
    assert_eq!(after["output"], json!({"n": 1}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_get_404_and_wrong_secrets_401() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let unknown = format!(
        "{}/v1/callbacks/{}?secret=abc",
        daemon.base, "6f1c8a52-3e0b-4a55-9d57-3f0f3e1f2a10"
    );
    let (status, body) = call_back(&unknown, "{}").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown-callback");
    let (status, _) = call_back(&format!("{}/v1/callbacks/not-a-uuid", daemon.base), "{}").await;
    assert_eq!(status, 404);

    let (status, _) = daemon
        .get("/v1/executions/6f1c8a52-3e0b-4a55-9d57-3f0f3e1f2a10")
        .await;
    assert_eq!(status, 404);

    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let without_secret = url.split('?').next().unwrap().to_owned();
    let (status, _) = call_back(&without_secret, "{}").await;
    assert_eq!(status, 401);
    let (status, _) = call_back(&format!("{without_secret}?secret=0000"), "{}").await;
    assert_eq!(status, 401);
    daemon.wait_for(&id, "suspended").await;
    let (status, _) = call_back(&url, "{}").await;
    assert_eq!(status, 200, "the right secret still works after wrong ones");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_callback_gets_400_and_the_execution_keeps_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    let before = daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();

    let (status, body) = call_back(&url, "this is not json").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "callback-rejected");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("JSON"),
        "{body}"
    );
    let waiting = daemon.wait_for(&id, "suspended").await;
    assert_eq!(
        waiting["waiting_until_ms"], before["waiting_until_ms"],
        "the wait goes on with its original deadline"
    );
    assert!(events(&waiting).contains(&"callback-rejected".to_owned()));

    let (status, _) = call_back(&url, r#"{"ok": 1}"#).await;
    assert_eq!(status, 200);
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"ok": 1}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_execution_survives_a_restart_and_resumes_on_the_new_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;

    let first = TestDaemon::start_default(dir.path()).await;
    let id = first
        .start_execution(json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {"doc": "d1"}}))
        .await;
    first.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let old_base = first.base.clone();
    first.stop().await;

    // A new daemon process on the same data dir (on a new port: the test
    // rewrites the URL's origin, as a stable public URL would in production).
    let second = TestDaemon::start_default(dir.path()).await;
    let exec = second.wait_for(&id, "suspended").await;
    assert_eq!(events(&exec), ["started", "suspended"]);
    let url = url.replacen(&old_base, &second.base, 1);
    let (status, body) = call_back(&url, r#"{"after": "restart"}"#).await;
    assert_eq!(status, 200, "{body}");
    let exec = second.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"after": "restart"}));
    assert_eq!(
        partner.requests().len(),
        1,
        "the step is resumed, not re-run"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_workflow_hands_each_steps_output_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let config = Config::from_toml(&format!(
        r#"
        [workflows.order-flow]
        steps = [
            {{ name = "tag", plugin = "echo", config = {{ source = "erp" }} }},
            {{ name = "approve", plugin = "wait-for-callback", config = {{ url = "{}/approve" }} }},
        ]
        "#,
        partner.base
    ))
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;
    let id = daemon
        .start_execution(json!({"workflow": "order-flow", "input": {"order": 1}}))
        .await;
    let exec = daemon.wait_for(&id, "suspended").await;
    assert_eq!(exec["step"], "approve");
    let sent = partner.wait_for_requests(1).await;
    assert_eq!(
        sent[0].json(),
        json!({"input": {"order": 1}, "config": {"source": "erp"}}),
        "the second step receives the first step's output"
    );
    let (status, _) = call_back(&sent[0].callback_url(), r#"{"approved": true}"#).await;
    assert_eq!(status, 200);
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"approved": true}));
    assert_eq!(
        events(&exec),
        [
            "started",
            "step-completed",
            "started",
            "suspended",
            "callback",
            "completed"
        ]
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_never_comes_fails_the_execution_with_callback_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base, "timeout_ms": 300},
            "input": {},
        }))
        .await;
    // Not polled for `suspended`: a 300 ms window is easy to miss on a
    // busy machine; the status log shows it afterwards.
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "callback-timeout");
    assert_eq!(events(&exec), ["started", "suspended", "timeout", "failed"]);
    let (status, body) = call_back(&url, "{}").await;
    assert_eq!(
        status, 410,
        "a callback after the timeout is refused: {body}"
    );
    assert_eq!(body["error"]["code"], "callback-expired");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_error_fails_the_step_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let partner =
        Partner::start(|_| async { (503, json!({"error": "down for maintenance"})) }).await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "partner-error");
    assert!(
        exec["error"]["text"].as_str().unwrap().contains("503"),
        "{exec}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_json_error_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let post = |body: &'static str| {
        let url = format!("{}/v1/executions", daemon.base);
        let token = daemon.token.clone();
        async move {
            let resp = client()
                .post(url)
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    for (body, status) in [
        ("{not json", 400),
        ("[1,2]", 400),
        (r#"{"plugin": 5}"#, 400),
        (r#"{"plugin": "echo", "workflow": "w"}"#, 400),
        (r#"{"plugin": "echo", "surprise": 1}"#, 400),
        (r#"{"plugin": "no-such-plugin"}"#, 404),
        (r#"{"workflow": "no-such-workflow"}"#, 404),
    ] {
        let (got, value) = post(body).await;
        assert_eq!(got, status, "{body} -> {value}");
        assert!(value["error"]["message"].as_str().is_some(), "{value}");
    }
    let (_, list) = daemon.get("/v1/executions").await;
    assert_eq!(
        list["executions"],
        json!([]),
        "no bad request started anything"
    );
    let health = client()
        .get(format!("{}/healthz", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    tokio::time::sleep(Duration::from_millis(1)).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_a_token_with_the_right_permission() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let url = format!("{}/v1/executions", daemon.base);
    let body = json!({"plugin": "echo", "input": {}});

    let resp = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 401, "no token");
    let resp = client()
        .post(&url)
        .bearer_auth("sht_guess")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "unknown token");

    // An admin mints a read-only token through the API; it may read but
    // not start, and the token is shown once, in this answer.
    let (status, minted) = daemon
        .post(
            "/v1/tokens",
            json!({"name": "dashboard", "permissions": ["executions:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let reader = minted["token"].as_str().unwrap();
    let resp = client()
        .post(&url)
        .bearer_auth(reader)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("executions:write"),
        "{err}"
    );
    let resp = client().get(&url).bearer_auth(reader).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .post(format!("{}/v1/tokens", daemon.base))
        .bearer_auth(reader)
        .json(&json!({"name": "x", "permissions": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "only an admin mints tokens");

    let health = client()
        .get(format!("{}/healthz", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "health is open");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_execution_can_be_retried_or_skipped_by_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let left = failures.clone();
    // Fails the first request, accepts the rest.
    let partner = Partner::start(move |_| {
        let left = left.clone();
        async move {
            if left
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                (500, json!({"error": "try later"}))
            } else {
                (202, json!({}))
            }
        }
    })
    .await;
    let config = Config::from_toml(&format!(
        r#"
        [workflows.flow]
        steps = [
            {{ name = "ask", plugin = "wait-for-callback", config = {{ url = "{}" }} }},
            {{ name = "last", plugin = "echo" }},
        ]
        "#,
        partner.base
    ))
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;

    let id = daemon
        .start_execution(json!({"workflow": "flow", "input": {"n": 1}}))
        .await;
    let failed = daemon.wait_for(&id, "failed").await;
    assert_eq!(failed["error"]["code"], "partner-error");
    let (status, _) = daemon
        .post(&format!("/v1/executions/{id}/skip"), json!({}))
        .await;
    assert_eq!(status, 200);
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"n": 1}),
        "skip hands the failed step's input on"
    );
    assert!(events(&exec).contains(&"skipped".to_owned()));
    let (status, body) = daemon
        .post(&format!("/v1/executions/{id}/retry"), json!({}))
        .await;
    assert_eq!(
        status, 409,
        "only a failed execution can be retried: {body}"
    );

    failures.store(1, std::sync::atomic::Ordering::SeqCst);
    let id = daemon
        .start_execution(json!({"workflow": "flow", "input": {"n": 2}}))
        .await;
    let failed = daemon.wait_for(&id, "failed").await;
    let run_id = partner
        .requests()
        .last()
        .unwrap()
        .header("x-step-run-id")
        .unwrap()
        .to_owned();
    let (status, body) = daemon
        .post(&format!("/v1/executions/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "suspended").await;
    assert_eq!(exec["attempt"], 2);
    assert_eq!(exec["step"], failed["step"]);
    let last = partner.requests().last().unwrap().clone();
    assert_eq!(
        last.header("x-step-run-id").unwrap(),
        run_id,
        "a retry keeps the step-run-id so the partner can dedupe"
    );
    let (status, _) = call_back(&last.callback_url(), r#"{"ok": true}"#).await;
    assert_eq!(status, 200);
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"ok": true}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_interrupted_by_shutdown_reruns_on_restart_with_the_same_step_run_id() {
    let dir = tempfile::tempdir().unwrap();
    let hang = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hanging = hang.clone();
    // The first request never gets an answer before the daemon stops.
    let partner = Partner::start(move |_| {
        let hanging = hanging.clone();
        async move {
            if hanging.swap(false, std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            (202, json!({}))
        }
    })
    .await;
    let config = Config::from_toml("shutdown_grace_ms = 100").unwrap();
    let first = TestDaemon::start(config.clone(), dir.path()).await;
    let id = first
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    let sent = partner.wait_for_requests(1).await;
    assert_eq!(first.execution(&id).await["state"], "running");
    first.stop().await;

    let second = TestDaemon::start(config, dir.path()).await;
    let exec = second.wait_for(&id, "suspended").await;
    let resent = partner.wait_for_requests(2).await;
    assert_eq!(
        resent[1].header("x-step-run-id"),
        sent[0].header("x-step-run-id"),
        "the re-run carries the same step-run-id so the partner can dedupe"
    );
    assert_eq!(exec["attempt"], 1);
    let (status, _) = call_back(&resent[1].callback_url(), "{}").await;
    assert_eq!(status, 200);
    second.wait_for(&id, "completed").await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_fifty_concurrent_identical_callbacks_exactly_one_resumes_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();

    let calls = (0..50).map(|i| {
        let url = url.clone();
        tokio::spawn(async move { call_back(&url, format!(r#"{{"n": {i}}}"#)).await })
    });
    let mut winners = Vec::new();
    let mut refused = 0;
    for (i, call) in calls.enumerate() {
        match call.await.unwrap() {
            (200, _) => winners.push(i),
            (409, _) => refused += 1,
            (status, body) => panic!("unexpected {status}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one callback wins");
    assert_eq!(refused, 49);
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"n": winners[0]}),
        "the winner's body is the output"
    );
    let callbacks = events(&exec).iter().filter(|e| *e == "callback").count();
    assert_eq!(callbacks, 1, "the status log shows one resume");
    daemon.stop().await;
}
