//! The `integration-step` reference step end to end: the real daemon, the
//! real plugin, and a partner service on loopback that answers within
//! 5 seconds or later through `X-Response-URL`, as
//! `seeds/integration-step.txt` describes; plus the admin's retry and skip
//! of a step that failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stephost::Config;
use stephost_tests::{Partner, PartnerRequest, TestDaemon, call_back, client, events};

/// The secret's value is the Authorization header exactly as configured.
const API_KEY: &str = "Bearer ik-5d2f7a9c41";

/// A daemon config granting the plugin secret `apikey`, plus `extra`.
fn config(extra: &str) -> Config {
    Config::from_toml(&format!(
        r#"
        [secrets]
        apikey = {{ value = "{API_KEY}" }}
        [plugins.integration-step]
        secrets = ["apikey"]
        {extra}
        "#
    ))
    .unwrap()
}

async fn daemon_with_key(dir: &std::path::Path) -> TestDaemon {
    TestDaemon::start(config(""), dir).await
}

fn response_url(request: &PartnerRequest) -> String {
    request
        .header("x-response-url")
        .expect("the step sends X-Response-URL")
        .to_owned()
}

/// POSTs to a response URL, with `X-Status-Code` when given.
async fn respond(url: &str, status_code: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(code) = status_code {
        request = request.header("X-Status-Code", code);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Starts an ad-hoc execution of the plugin and waits until it is parked
/// on the response URL; returns its id and that URL.
async fn suspended_on_202(
    daemon: &TestDaemon,
    partner: &Partner,
    input: Value,
) -> (String, String) {
    let before = partner.requests().len();
    let id = daemon
        .start_execution(json!({
            "plugin": "integration-step",
            "config": {"url": partner.base, "api_key_secret": "apikey"},
            "input": input,
        }))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = response_url(&partner.wait_for_requests(before + 1).await[before]);
    (id, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_within_5_seconds_completes_with_the_response_body() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|req| async move {
        match req.uri.as_str() {
            "/forms" => (200, json!({"received": true, "ticket": "T-7"})),
            // A 204 has no body, whatever the handler returns.
            "/quiet" => (204, json!(null)),
            _ => (201, json!({"created": "C-1"})),
        }
    })
    .await;
    let daemon = daemon_with_key(dir.path()).await;

    let id = daemon
        .start_execution(json!({
            "plugin": "integration-step",
            "config": {
                "url": format!("{}/forms", partner.base),
                "api_key_secret": "apikey",
                "headers": {"X-Tenant": "acme"},
            },
            "input": {"form": {"name": "Ada"}},
        }))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"received": true, "ticket": "T-7"}));
    assert_eq!(events(&exec), ["started", "completed"]);

    let sent = &partner.wait_for_requests(1).await[0];
    assert_eq!(sent.method, "POST", "POST is the default");
    assert_eq!(sent.header("authorization"), Some(API_KEY));
    assert_eq!(sent.header("x-tenant"), Some("acme"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.json(), json!({"form": {"name": "Ada"}}));
    let url = response_url(sent);
    assert!(
        url.starts_with(&format!("{}/v1/callbacks/", daemon.base)),
        "{url}"
    );

    let id = daemon
        .start_execution(json!({
            "plugin": "integration-step",
            "config": {"url": format!("{}/records", partner.base), "method": "PUT"},
            "input": {"n": 2},
        }))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"created": "C-1"}),
        "any 2xx completes"
    );
    let sent = &partner.wait_for_requests(2).await[1];
    assert_eq!(sent.method, "PUT");
    assert_eq!(sent.json(), json!({"n": 2}));
    assert_eq!(
        sent.header("authorization"),
        None,
        "no Authorization without api_key_secret"
    );
    assert!(sent.header("x-response-url").is_some());

    let id = daemon
        .start_execution(json!({
            "plugin": "integration-step",
            "config": {"url": format!("{}/quiet", partner.base)},
            "input": {"n": 3},
        }))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"n": 3}),
        "an empty 2xx answer hands the document on unchanged"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_waits_for_a_post_to_the_response_url_which_completes_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = daemon_with_key(dir.path()).await;
    let (id, url) = suspended_on_202(&daemon, &partner, json!({"order": 9})).await;

    let (status, body) = call_back(&url, r#"{"shipped": true}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["execution_state"], "completed");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"shipped": true}),
        "no X-Status-Code means 200: the body is the output"
    );
    assert_eq!(
        events(&exec),
        ["started", "suspended", "callback", "completed"]
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_x_status_code_completes_and_an_empty_body_keeps_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = daemon_with_key(dir.path()).await;

    let (id, url) = suspended_on_202(&daemon, &partner, json!({"a": 1})).await;
    let (status, _) = respond(&url, Some("201"), r#"{"id": "R-1"}"#).await;
    assert_eq!(status, 200);
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"id": "R-1"}));

    let (id, url) = suspended_on_202(&daemon, &partner, json!({"b": 2})).await;
    let (status, _) = respond(&url, Some("204"), "").await;
    assert_eq!(status, 200);
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"b": 2}),
        "nothing posted back: the document goes on unchanged"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_other_x_status_code_fails_the_step_with_that_status() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = daemon_with_key(dir.path()).await;
    let (id, url) = suspended_on_202(&daemon, &partner, json!({})).await;

    let (status, body) = respond(&url, Some("422"), r#"{"error": "zip code missing"}"#).await;
    assert_eq!(status, 200, "the callback itself was accepted: {body}");
    assert_eq!(body["execution_state"], "failed");
    let exec = daemon.wait_for(&id, "failed").await;
    let error = &exec["error"];
    assert_eq!(error["code"], "partner-error");
    assert_eq!(error["technical_status"], "422");
    let text = error["text"].as_str().unwrap();
    assert!(
        text.contains("422") && text.contains("zip code missing"),
        "{text}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_x_status_code_is_refused_and_the_wait_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = daemon_with_key(dir.path()).await;
    let (id, url) = suspended_on_202(&daemon, &partner, json!({})).await;

    for wrong in ["ok", "700", "20"] {
        let (status, body) = respond(&url, Some(wrong), "{}").await;
        assert_eq!(status, 400, "{wrong}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("X-Status-Code"),
            "{body}"
        );
    }
    let waiting = daemon.wait_for(&id, "suspended").await;
    assert!(events(&waiting).contains(&"callback-rejected".to_owned()));
    let (status, _) = respond(&url, Some("200"), r#"{"fixed": true}"#).await;
    assert_eq!(status, 200);
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"fixed": true}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_to_the_response_url_that_beats_the_202_still_completes_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let statuses = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = statuses.clone();
    let partner = Partner::start(move |req| {
        let seen = seen.clone();
        async move {
            let (status, _) = call_back(&response_url(&req), r#"{"quick": true}"#).await;
            seen.lock().unwrap().push(status);
            (202, json!({}))
        }
    })
    .await;
    let daemon = daemon_with_key(dir.path()).await;
    let id = daemon
        .start_execution(
            json!({"plugin": "integration-step", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"quick": true}));
    assert_eq!(*statuses.lock().unwrap(), [202], "the early POST is stored");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_status_fails_with_partner_error_and_never_shows_the_api_key() {
    let dir = tempfile::tempdir().unwrap();
    // A careless partner that echoes the request headers in its error body.
    let partner = Partner::start(|req| async move {
        let status = if req.uri == "/auth" { 401 } else { 503 };
        let auth = req.header("authorization").unwrap_or_default().to_owned();
        (status, json!({"error": "refused", "you_sent": auth}))
    })
    .await;
    let daemon = daemon_with_key(dir.path()).await;
    for (path, status) in [("/auth", "401"), ("/busy", "503")] {
        let id = daemon
            .start_execution(json!({
                "plugin": "integration-step",
                "config": {"url": format!("{}{path}", partner.base), "api_key_secret": "apikey"},
                "input": {},
            }))
            .await;
        let exec = daemon.wait_for(&id, "failed").await;
        let error = &exec["error"];
        assert_eq!(error["code"], "partner-error", "{exec:#}");
        assert_eq!(error["technical_status"], status);
        let text = error["text"].as_str().unwrap();
        assert!(text.contains(status) && text.contains("refused"), "{text}");
        assert!(
            !exec.to_string().contains(API_KEY),
            "the API key leaked into the execution: {exec:#}"
        );
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_5_seconds_fails_with_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|_| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        (200, json!({"too": "late"}))
    })
    .await;
    let daemon = daemon_with_key(dir.path()).await;
    let started = Instant::now();
    let id = daemon
        .start_execution(
            json!({"plugin": "integration-step", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    let took = started.elapsed();
    assert_eq!(exec["error"]["code"], "timeout", "{exec:#}");
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(30)).contains(&took),
        "the partner gets 5 s, not less and not the 60 s it takes: {took:?}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_post_to_the_response_url_before_timeout_ms_fails_with_callback_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = daemon_with_key(dir.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": "integration-step",
            "config": {"url": partner.base, "timeout_ms": 300},
            "input": {},
        }))
        .await;
    // Not polled for `suspended`: a 300 ms window is easy to miss on a
    // busy machine; the status log shows it afterwards.
    let url = response_url(&partner.wait_for_requests(1).await[0]);
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "callback-timeout");
    assert_eq!(events(&exec), ["started", "suspended", "timeout", "failed"]);
    let (status, body) = call_back(&url, "{}").await;
    assert_eq!(status, 410, "too late: {body}");
    assert_eq!(body["error"]["code"], "callback-expired");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_or_a_missing_secret_fails_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    // No secret is granted to the plugin here.
    let daemon = TestDaemon::start_default(dir.path()).await;
    let url = partner.base.clone();
    for (config, code, says) in [
        (
            json!({"url": url, "api_key_secret": "apikey"}),
            "secret-unavailable",
            "apikey",
        ),
        (
            json!({"url": url, "method": "GET"}),
            "invalid-config",
            "GET",
        ),
        (
            json!({"url": url, "headers": {"authorization": "Bearer x"}}),
            "invalid-config",
            "Authorization",
        ),
        (
            json!({"url": url, "headers": {"X-Response-Url": "http://elsewhere"}}),
            "invalid-config",
            "X-Response-URL",
        ),
        (
            json!({"url": url, "api_key": "inline"}),
            "invalid-config",
            "api_key",
        ),
    ] {
        let id = daemon
            .start_execution(json!({"plugin": "integration-step", "config": config, "input": {}}))
            .await;
        let exec = daemon.wait_for(&id, "failed").await;
        assert_eq!(exec["error"]["code"], code, "{config}: {exec:#}");
        let text = exec["error"]["text"].as_str().unwrap();
        assert!(text.contains(says), "{config}: {text}");
    }
    assert!(partner.requests().is_empty(), "nothing was sent");
    daemon.stop().await;
}

/// A workflow of integration-step then echo (configured, so its output
/// shows exactly what it received).
/// A partner that answers the first request with `first` and every later
/// one with `then`.
async fn first_then(first: (u16, Value), then: (u16, Value)) -> Partner {
    let calls = Arc::new(AtomicUsize::new(0));
    Partner::start(move |_| {
        let reply = if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            first.clone()
        } else {
            then.clone()
        };
        async move { reply }
    })
    .await
}

async fn two_step_daemon(dir: &std::path::Path, partner: &Partner) -> TestDaemon {
    let workflow = format!(
        r#"
        [workflows.submit]
        steps = [
            {{ name = "send", plugin = "integration-step", config = {{ url = "{}/submit", api_key_secret = "apikey" }} }},
            {{ name = "after", plugin = "echo", config = {{ seen_by = "after" }} }},
        ]
        "#,
        partner.base
    );
    TestDaemon::start(config(&workflow), dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_retry_runs_the_failed_step_again_and_the_workflow_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let partner = first_then(
        (500, json!({"error": "database down"})),
        (200, json!({"booked": true})),
    )
    .await;
    let daemon = two_step_daemon(dir.path(), &partner).await;
    let id = daemon
        .start_execution(json!({"workflow": "submit", "input": {"seat": "12A"}}))
        .await;
    let failed = daemon.wait_for(&id, "failed").await;
    assert_eq!(failed["error"]["code"], "partner-error");
    assert_eq!(failed["error"]["step"], "send");
    assert_eq!(failed["error"]["technical_status"], "500");

    let (status, body) = daemon
        .post(&format!("/v1/executions/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"input": {"booked": true}, "config": {"seen_by": "after"}}),
        "the retried step succeeded and the next step got its output"
    );
    assert_eq!(exec["error"], Value::Null);
    let sent = partner.requests();
    assert_eq!(sent.len(), 2, "the failed step ran exactly once more");
    assert_eq!(
        sent[1].json(),
        json!({"seat": "12A"}),
        "with the same input"
    );
    assert_eq!(sent[1].header("authorization"), Some(API_KEY));
    assert!(
        exec["status_log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|line| line["step"] == "send" && line["attempt"] == 2),
        "the retry is attempt 2 of the step: {exec:#}"
    );

    let (status, body) = daemon
        .post(&format!("/v1/executions/{id}/retry"), json!({}))
        .await;
    assert_eq!(
        status, 409,
        "only a failed execution can be retried: {body}"
    );
    assert!(body["error"].is_object(), "{body}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_skip_hands_the_failed_steps_input_to_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = two_step_daemon(dir.path(), &partner).await;
    let id = daemon
        .start_execution(json!({"workflow": "submit", "input": {"seat": "14C"}}))
        .await;
    daemon.wait_for(&id, "suspended").await;
    // This time the failure arrives later, through the response URL.
    let url = response_url(&partner.wait_for_requests(1).await[0]);
    let (status, _) = respond(&url, Some("500"), r#"{"error": "overbooked"}"#).await;
    assert_eq!(status, 200);
    let failed = daemon.wait_for(&id, "failed").await;
    assert_eq!(failed["error"]["step"], "send");
    assert_eq!(failed["error"]["technical_status"], "500");

    let (status, body) = daemon
        .post(&format!("/v1/executions/{id}/skip"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"input": {"seat": "14C"}, "config": {"seen_by": "after"}}),
        "the next step received the skipped step's input"
    );
    assert_eq!(partner.requests().len(), 1, "a skipped step is not re-run");

    // Skipping the last step completes the execution with that step's input.
    let id = daemon
        .start_execution(json!({
            "plugin": "integration-step",
            "config": {"url": format!("{}/submit", partner.base)},
            "input": {"seat": "1A"},
        }))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = response_url(&partner.wait_for_requests(2).await[1]);
    respond(&url, Some("409"), "{}").await;
    daemon.wait_for(&id, "failed").await;
    let (status, body) = daemon
        .post(&format!("/v1/executions/{id}/skip"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"seat": "1A"}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_at_all_fails_with_http_error() {
    let dir = tempfile::tempdir().unwrap();
    let (partner, connections) = stephost_tests::closing_server().await;
    let daemon = daemon_with_key(dir.path()).await;
    let id = daemon
        .start_execution(
            json!({"plugin": "integration-step", "config": {"url": partner}, "input": {}}),
        )
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "http-error", "{exec:#}");
    assert!(
        connections.load(Ordering::SeqCst) >= 1,
        "the request was tried"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3xx_answer_fails_with_partner_error_and_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|_| async { (302, json!({"moved": "elsewhere"})) }).await;
    let daemon = daemon_with_key(dir.path()).await;
    let id = daemon
        .start_execution(
            json!({"plugin": "integration-step", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "partner-error", "{exec:#}");
    assert_eq!(exec["error"]["technical_status"], "302", "{exec:#}");
    let text = exec["error"]["text"].as_str().unwrap();
    assert!(text.contains("302") && text.contains("elsewhere"), "{text}");
    assert_eq!(partner.requests().len(), 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_that_is_not_json_fails_with_invalid_input_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    // The first step hands on a text document: http-task passes on a
    // non-JSON answer with its content type.
    let (text_partner, _) = stephost_tests::raw_server(Some(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\nnot json"
            .to_owned(),
    ))
    .await;
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start(
        config(&format!(
            r#"
            [workflows.text-first]
            steps = [
                {{ name = "fetch", plugin = "http-task", config = {{ url = "{text_partner}" }} }},
                {{ name = "send", plugin = "integration-step", config = {{ url = "{}" }} }},
            ]
            "#,
            partner.base
        )),
        dir.path(),
    )
    .await;
    let id = daemon
        .start_execution(json!({"workflow": "text-first", "input": {}}))
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "invalid-input", "{exec:#}");
    assert_eq!(exec["error"]["step"], "send", "{exec:#}");
    assert!(partner.requests().is_empty(), "nothing was sent");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_retry_registers_a_new_response_url_and_the_old_one_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let partner = first_then(
        (503, json!({"error": "try later"})),
        (202, json!({"queued": true})),
    )
    .await;
    let daemon = daemon_with_key(dir.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": "integration-step",
            "config": {"url": partner.base},
            "input": {"seat": "3C"},
        }))
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "partner-error", "{exec:#}");
    let old = response_url(&partner.wait_for_requests(1).await[0]);

    let (status, body) = daemon
        .post(&format!("/v1/executions/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let sent = partner.wait_for_requests(2).await;
    let new = response_url(&sent[1]);
    assert_ne!(new, old, "the retry registered a new response URL");
    assert_eq!(
        sent[1].json(),
        json!({"seat": "3C"}),
        "the document is sent again"
    );
    daemon.wait_for(&id, "suspended").await;

    let (status, body) = respond(&old, None, r#"{"late": true}"#).await;
    assert_eq!(status, 410, "the old URL is closed: {body}");
    let (status, body) = respond(&new, None, r#"{"booked": true}"#).await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"booked": true}));
    daemon.stop().await;
}
