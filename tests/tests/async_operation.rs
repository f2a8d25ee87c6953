//! The `async-operation` reference step end to end: the real daemon, the
//! real plugin, and an asynchronous operation on loopback that accepts with
//! `202` and delivers its outputs to the callback URL it was given, as
//! `seeds/async-operation-callbacks.txt` describes.

use serde_json::json;
use stephost_tests::{Partner, PartnerRequest, TestDaemon, call_back, events};

/// The value of query parameter `name` of the request, decoded.
fn query_parameter(request: &PartnerRequest, name: &str) -> Option<String> {
    let url = reqwest::Url::parse(&format!("http://operation{}", request.uri)).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn path(request: &PartnerRequest) -> &str {
    request.uri.split('?').next().unwrap()
}

fn assert_is_callback_url(daemon: &TestDaemon, url: &str) {
    assert!(
        url.starts_with(&format!("{}/v1/callbacks/", daemon.base)) && url.contains("?secret="),
        "not a callback URL of this daemon: {url}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_suspends_and_the_outputs_posted_to_the_callback_url_complete_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let operation = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = daemon
        .start_execution(json!({
            "plugin": "async-operation",
            "config": {"url": format!("{}/operations/approve?tenant=t1", operation.base)},
            "input": {"order": 42},
        }))
        .await;
    daemon.wait_for(&id, "suspended").await;

    let sent = operation.wait_for_requests(1).await;
    assert_eq!(sent[0].method, "POST", "POST is the default method");
    assert_eq!(path(&sent[0]), "/operations/approve");
    assert_eq!(
        query_parameter(&sent[0], "tenant").as_deref(),
        Some("t1"),
        "the operation URL's own query is kept"
    );
    let url = query_parameter(&sent[0], "callbackUrl")
        .expect("by default the callback URL is query parameter callbackUrl");
    assert_is_callback_url(&daemon, &url);
    assert_eq!(
        sent[0].json(),
        json!({"order": 42}),
        "the body is the input"
    );
    assert_eq!(sent[0].header("content-type"), Some("application/json"));

    let (status, body) = call_back(&url, r#"{"approved": true, "approver": "ops"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["execution_state"], "completed");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"approved": true, "approver": "ops"}),
        "the step completes with the outputs"
    );
    assert_eq!(
        events(&exec),
        ["started", "suspended", "callback", "completed"]
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_url_goes_in_the_header_or_body_field_the_definition_names() {
    let dir = tempfile::tempdir().unwrap();
    let operation = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let in_header = daemon
        .start_execution(json!({
            "plugin": "async-operation",
            "config": {
                "url": format!("{}/by-header", operation.base),
                "method": "put",
                "headers": {"X-Tenant": "acme"},
                "callback": {"in": "header", "name": "X-Result-Location"},
            },
            "input": {"order": 1},
        }))
        .await;
    daemon.wait_for(&in_header, "suspended").await;
    let sent = operation.wait_for_requests(1).await;
    assert_eq!(sent[0].method, "PUT", "the configured method is used");
    assert_eq!(sent[0].uri, "/by-header", "nothing is added to the query");
    assert_eq!(sent[0].header("x-tenant"), Some("acme"));
    assert_eq!(sent[0].json(), json!({"order": 1}));
    let header_url = sent[0].header("x-result-location").unwrap().to_owned();
    assert_is_callback_url(&daemon, &header_url);

    let in_body = daemon
        .start_execution(json!({
            "plugin": "async-operation",
            "config": {
                "url": format!("{}/by-body", operation.base),
                "callback": {"in": "body", "name": "replyTo"},
            },
            "input": {"order": 2, "replyTo": "stale"},
        }))
        .await;
    daemon.wait_for(&in_body, "suspended").await;
    let sent = operation.wait_for_requests(2).await;
    assert_eq!(sent[1].uri, "/by-body");
    let body = sent[1].json();
    let body_url = body["replyTo"].as_str().unwrap().to_owned();
    assert_is_callback_url(&daemon, &body_url);
    assert_eq!(
        body,
        json!({"order": 2, "replyTo": body_url}),
        "the input, with the callback URL set in the named field"
    );

    for (id, url, outputs) in [
        (&in_header, header_url, json!({"via": "header"})),
        (&in_body, body_url, json!({"via": "body"})),
    ] {
        let (status, _) = call_back(&url, outputs.to_string()).await;
        assert_eq!(status, 200);
        let exec = daemon.wait_for(id, "completed").await;
        assert_eq!(exec["output"], outputs);
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_answer_other_than_202_fails_with_operation_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let operation = Partner::start(|req| async move {
        match req.uri.split('?').next().unwrap() {
            "/sync" => (200, json!({"result": "done at once"})),
            _ => (500, json!({"error": "queue is full"})),
        }
    })
    .await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    for (path, status, body_text) in [
        ("/sync", "200", "done at once"),
        ("/down", "500", "queue is full"),
    ] {
        let id = daemon
            .start_execution(json!({
                "plugin": "async-operation",
                "config": {"url": format!("{}{path}", operation.base)},
                "input": {},
            }))
            .await;
        let exec = daemon.wait_for(&id, "failed").await;
        let error = &exec["error"];
        assert_eq!(error["code"], "operation-rejected", "{exec:#}");
        assert_eq!(error["technical_status"], status);
        let text = error["text"].as_str().unwrap();
        assert!(text.contains(status) && text.contains("202"), "{text}");
        assert!(
            text.contains(body_text),
            "the operation's body is kept: {text}"
        );
        assert!(!events(&exec).contains(&"suspended".to_owned()));
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_is_not_an_outputs_object_is_refused_and_the_wait_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let operation = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(
            json!({"plugin": "async-operation", "config": {"url": operation.base}, "input": {}}),
        )
        .await;
    let before = daemon.wait_for(&id, "suspended").await;
    let url = query_parameter(&operation.wait_for_requests(1).await[0], "callbackUrl").unwrap();

    for wrong in ["[1, 2]", "\"done\"", "not json"] {
        let (status, body) = call_back(&url, wrong).await;
        assert_eq!(status, 400, "{wrong}: {body}");
        assert_eq!(body["error"]["code"], "callback-rejected");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("JSON object"),
            "{body}"
        );
    }
    let waiting = daemon.wait_for(&id, "suspended").await;
    assert_eq!(waiting["waiting_until_ms"], before["waiting_until_ms"]);
    assert!(events(&waiting).contains(&"callback-rejected".to_owned()));

    let (status, _) = call_back(&url, r#"{"total": 3}"#).await;
    assert_eq!(status, 200);
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"total": 3}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_callback_completes_an_operation_without_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let operation = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(json!({"plugin": "async-operation", "config": {"url": operation.base}, "input": {"x": 1}}))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = query_parameter(&operation.wait_for_requests(1).await[0], "callbackUrl").unwrap();

    let (status, body) = call_back(&url, "").await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_posted_before_the_202_still_complete_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = statuses.clone();
    // The operation finishes so fast that it posts its outputs before its
    // own 202 reaches the step.
    let operation = Partner::start(move |req| {
        let seen = seen.clone();
        async move {
            let url = query_parameter(&req, "callbackUrl").unwrap();
            let (status, _) = call_back(&url, r#"{"fast": true}"#).await;
            seen.lock().unwrap().push(status);
            (202, json!({}))
        }
    })
    .await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(
            json!({"plugin": "async-operation", "config": {"url": operation.base}, "input": {}}),
        )
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"fast": true}));
    assert_eq!(
        *statuses.lock().unwrap(),
        [202],
        "the early outputs are stored"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_outputs_before_timeout_ms_fails_with_callback_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let operation = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": "async-operation",
            "config": {"url": operation.base, "timeout_ms": 300},
            "input": {},
        }))
        .await;
    // The suspension is read from the status log afterwards: polling for
    // it could miss a 300 ms window on a busy machine.
    let url = query_parameter(&operation.wait_for_requests(1).await[0], "callbackUrl").unwrap();
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "callback-timeout");
    assert_eq!(events(&exec), ["started", "suspended", "timeout", "failed"]);
    let log = exec["status_log"].as_array().unwrap();
    let time = |event: &str| {
        log.iter().find(|e| e["event"] == event).unwrap()["time_ms"]
            .as_u64()
            .unwrap()
    };
    let waited = time("timeout") - time("suspended");
    assert!(
        (300..5_000).contains(&waited),
        "timeout_ms bounds the wait, took {waited} ms"
    );
    let (status, body) = call_back(&url, r#"{"late": true}"#).await;
    assert_eq!(status, 410, "late outputs are refused: {body}");
    assert_eq!(body["error"]["code"], "callback-expired");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_operation_fails_with_http_error() {
    let dir = tempfile::tempdir().unwrap();
    // Every connection is closed before an answer.
    let (closed, _) = stephost_tests::closing_server().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": "async-operation",
            "config": {"url": format!("{closed}/op")},
            "input": {},
        }))
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "http-error", "{exec:#}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_or_input_fails_before_the_operation_is_called() {
    let dir = tempfile::tempdir().unwrap();
    let operation = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let url = operation.base.clone();
    for (config, input, code, says) in [
        (
            json!({"url": url, "callback": {"in": "cookie"}}),
            json!({}),
            "invalid-config",
            "cookie",
        ),
        (
            json!({"url": url, "timeout": 5}),
            json!({}),
            "invalid-config",
            "timeout",
        ),
        (json!({}), json!({}), "invalid-config", "url"),
        (
            json!({"url": url, "headers": {"Reply-To": "x"}, "callback": {"in": "header", "name": "reply-to"}}),
            json!({}),
            "invalid-config",
            "reply-to",
        ),
        (
            json!({"url": url, "callback": {"in": "body", "name": "cb"}}),
            json!([1, 2]),
            "invalid-input",
            "an array",
        ),
    ] {
        let id = daemon
            .start_execution(json!({"plugin": "async-operation", "config": config, "input": input}))
            .await;
        let exec = daemon.wait_for(&id, "failed").await;
        assert_eq!(exec["error"]["code"], code, "{config}: {exec:#}");
        let text = exec["error"]["text"].as_str().unwrap();
        assert!(text.contains(says), "{config}: {text}");
    }
    assert!(
        operation.requests().is_empty(),
        "no request goes out with a bad config or input"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_is_answered_before_later_steps_run() {
    let dir = tempfile::tempdir().unwrap();
    let operation = Partner::start(|_| async { (202, json!({})) }).await;
    // The next step's partner holds its request until the test lets go,
    // which it does only after the operation's callback was answered.
    let (next, release) = stephost_tests::gated_partner((200, json!({"next": "done"}))).await;
    let config = stephost::Config::from_toml(&format!(
        r#"
        [workflows.op-then-notify]
        steps = [
            {{ name = "op", plugin = "async-operation", config = {{ url = "{}/op" }} }},
            {{ name = "notify", plugin = "http-task", config = {{ url = "{}/notify" }} }},
        ]
        "#,
        operation.base, next.base
    ))
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;
    let id = daemon
        .start_execution(json!({"workflow": "op-then-notify", "input": {}}))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = query_parameter(&operation.wait_for_requests(1).await[0], "callbackUrl").unwrap();

    let (status, body) =
        tokio::time::timeout(stephost_tests::WAIT, call_back(&url, r#"{"total": 12}"#))
            .await
            .expect("the callback is answered while the next step still runs");
    assert_eq!(status, 200, "{body}");
    // The next step is under way (its partner has the request) and cannot
    // finish before the release below.
    next.wait_for_requests(1).await;
    assert_eq!(daemon.execution(&id).await["state"], "running");
    release.add_permits(1);
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"next": "done"}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_that_never_answers_fails_with_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (operation, _) = stephost_tests::raw_server(None).await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": "async-operation",
            "config": {"url": format!("{operation}/op")},
            "input": {},
        }))
        .await;
    let started = std::time::Instant::now();
    let exec = loop {
        let exec = daemon.execution(&id).await;
        if exec["state"] == "failed" {
            break exec;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "{exec:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(exec["error"]["code"], "timeout", "{exec:#}");
    daemon.stop().await;
}
