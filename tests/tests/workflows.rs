//! Reference steps chained into one workflow, and the daemon-side rules
//! they rely on: a `Failed` callback skips the rest of the workflow, and a
//! callback can be required to carry an API token.

use serde_json::{Value, json};
use stephost::Config;
use stephost_tests::{Partner, TestDaemon, client};

/// http-task → link-async-http (async) → integration-step: the second
/// step's partner calls back `Failed`, so the third never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_link_callback_ends_the_workflow_before_the_integration_step() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|req| async move {
        match req.uri.as_str() {
            "/task" => (200, json!({"task": "accepted", "ref": "T-1"})),
            "/link" => (202, json!({})),
            _ => (200, json!({"integrated": true})),
        }
    })
    .await;
    let config = Config::from_toml(&format!(
        r#"
        [secrets]
        erp-key = {{ value = "Bearer erp-secret-value" }}
        [plugins.integration-step]
        secrets = ["erp-key"]
        [workflows.order-to-erp]
        steps = [
            {{ name = "notify", plugin = "http-task", config = {{ url = "{base}/task", method = "POST", body = '{{"execution": "{{{{execution_id}}}}"}}' }} }},
            {{ name = "link", plugin = "link-async-http", config = {{ url = "{base}/link", async = true }} }},
            {{ name = "erp", plugin = "integration-step", config = {{ url = "{base}/erp", api_key_secret = "erp-key" }} }},
        ]
        "#,
        base = partner.base
    ))
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;

    let id = daemon
        .start_execution(json!({"workflow": "order-to-erp", "input": {"order": 9}}))
        .await;
    let exec = daemon.wait_for(&id, "suspended").await;
    assert_eq!(exec["step"], "link");
    let sent = partner.wait_for_requests(2).await;
    assert_eq!(sent[0].uri, "/task");
    assert_eq!(
        sent[0].json(),
        json!({"execution": id}),
        "the body template saw the execution id"
    );
    assert_eq!(sent[1].uri, "/link");
    assert_eq!(
        sent[1].json(),
        json!({"task": "accepted", "ref": "T-1"}),
        "the link step sends the first step's output"
    );
    let callback_url = sent[1].header("x-link-callback-url").unwrap().to_owned();
    let correlation = sent[1].header("x-link-correlation-id").unwrap().to_owned();

    let resp = client()
        .post(&callback_url)
        .bearer_auth(&daemon.token)
        .header("X-Link-Correlation-Id", &correlation)
        .header("X-Link-Status", "Failed")
        .header("X-Link-Document-Status", "Ignored")
        .header("X-Link-Error-Code", "E42")
        .header("X-Link-Error-Text", "the partner refused the order")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "E42");
    assert_eq!(exec["error"]["text"], "the partner refused the order");
    assert_eq!(exec["error"]["document_status"], "Ignored");
    assert_eq!(exec["error"]["step"], "link");
    let log = exec["status_log"].as_array().unwrap();
    assert!(
        log.iter().all(|e| e["step"] != "erp"),
        "the integration step never started: {log:#?}"
    );
    assert_eq!(
        log.last().unwrap()["error_code"],
        "E42",
        "the status log carries the partner's error"
    );
    // Stopped, the daemon runs nothing more: whatever it sent is in.
    daemon.stop().await;
    assert!(
        partner.requests().iter().all(|r| r.uri != "/erp"),
        "the integration partner was never called"
    );
}

/// A link step configured with `require_token` accepts its callback only
/// with an API token carrying `callbacks:send`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_can_be_required_to_carry_a_callbacks_send_token() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": "link-async-http",
            "config": {"url": partner.base, "async": true, "require_token": true},
            "input": {"n": 1},
        }))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let sent = partner.wait_for_requests(1).await;
    let url = sent[0].header("x-link-callback-url").unwrap().to_owned();
    let correlation = sent[0].header("x-link-correlation-id").unwrap().to_owned();
    let reader = daemon.token("executions:read", &["executions:read"]).await;
    let sender = daemon.token("callbacks:send", &["callbacks:send"]).await;
    let call_to = |url: String, token: Option<String>| {
        let correlation = correlation.clone();
        async move {
            let mut req = client()
                .post(&url)
                .header("X-Link-Correlation-Id", correlation)
                .header("X-Link-Status", "Ok")
                .header("content-type", "application/json")
                .body(r#"{"linked": true}"#);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let call = |token: Option<String>| call_to(url.clone(), token);
    let bare = url.split('?').next().unwrap().to_owned();
    let call_bare = |token: Option<String>| call_to(bare.clone(), token);

    let (status, body) = call(None).await;
    assert_eq!(status, 401, "the URL secret alone is not enough: {body}");
    let (status, body) = call_bare(Some(sender.clone())).await;
    assert_eq!(
        status, 401,
        "the token alone, without the URL secret, is not enough: {body}"
    );
    let (status, body) = call(Some(reader)).await;
    assert_eq!(
        status, 403,
        "a token without callbacks:send is refused: {body}"
    );
    daemon.wait_for(&id, "suspended").await;
    let (status, body) = call(Some(sender.clone())).await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"linked": true}));

    // Where no token is required, a token is accepted even without the
    // URL secret: it is the partner's credential.
    let id = daemon
        .start_execution(json!({
            "plugin": "link-async-http",
            "config": {"url": partner.base, "async": true, "require_token": false},
            "input": {"n": 2},
        }))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let sent = partner.wait_for_requests(2).await;
    let bare = sent[1]
        .header("x-link-callback-url")
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let resp = client()
        .post(&bare)
        .bearer_auth(&sender)
        .header(
            "X-Link-Correlation-Id",
            sent[1].header("x-link-correlation-id").unwrap(),
        )
        .header("X-Link-Status", "Ok")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    daemon.wait_for(&id, "completed").await;
    daemon.stop().await;
}
