//! `link-async-http` end to end: the real daemon, the real plugin, a
//! partner on loopback that answers the request and calls back with the
//! `X-Link-*` headers of the async HTTP itinerary step it reproduces.

use serde_json::{Value, json};
use stephost::Config;
use stephost_tests::{Partner, PartnerRequest, TestDaemon, client, events};

const PLUGIN: &str = "link-async-http";

/// POSTs a callback with the given headers, as a partner holding an API
/// token with `callbacks:send` (`token`; the step requires one by default);
/// returns status and JSON body.
async fn link_callback(
    token: Option<&str>,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut request = headers.iter().fold(
        client()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned()),
        |req, (name, value)| req.header(*name, *value),
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The correlation id and callback URL the step handed the partner.
fn ticket(req: &PartnerRequest) -> (String, String) {
    let id = req
        .header("x-link-correlation-id")
        .expect("the async flow sends X-Link-Correlation-Id");
    let url = req
        .header("x-link-callback-url")
        .expect("the async flow sends X-Link-Callback-Url");
    (id.to_owned(), url.to_owned())
}

/// Starts the step in the async flow against `partner` with `extra`
/// config on top; waits until it is suspended and returns the execution
/// id, correlation id and callback URL.
async fn start_async(
    daemon: &TestDaemon,
    partner: &Partner,
    extra: Value,
    input: Value,
) -> (String, String, String) {
    let mut config = json!({"url": format!("{}/documents", partner.base), "async": true});
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let id = daemon
        .start_execution(json!({"plugin": PLUGIN, "config": config, "input": input}))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let sent = partner.wait_for_requests(1).await;
    let (correlation_id, url) = ticket(&sent[0]);
    (id, correlation_id, url)
}

/// A daemon with a two-step workflow `flow`: this plugin as step `send`
/// (async, against `partner`), then `echo` as step `after`, which shows
/// whether the flow went on.
async fn daemon_with_flow(dir: &std::path::Path, partner: &Partner) -> TestDaemon {
    let config = Config::from_toml(&format!(
        r#"
        [workflows.flow]
        steps = [
            {{ name = "send", plugin = "{PLUGIN}", config = {{ url = "{}/documents", async = true }} }},
            {{ name = "after", plugin = "echo", config = {{ ran = true }} }},
        ]
        "#,
        partner.base
    ))
    .unwrap();
    TestDaemon::start(config, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_flow_sends_the_document_and_completes_with_the_response_body() {
    let dir = tempfile::tempdir().unwrap();
    let partner =
        Partner::start(|_| async { (200, json!({"received": true, "ref": "R-1"})) }).await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = daemon
        .start_execution(json!({
            "plugin": PLUGIN,
            "config": {
                "url": format!("{}/documents", partner.base),
                "headers": {"Authorization": "Bearer partner-token", "X-Sender": "erp"},
            },
            "input": {"order": 42},
        }))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"received": true, "ref": "R-1"}));
    assert_eq!(events(&exec), ["started", "completed"]);

    let sent = partner.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST", "POST is the default method");
    assert_eq!(sent[0].uri, "/documents");
    assert_eq!(sent[0].json(), json!({"order": 42}));
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    assert_eq!(
        sent[0].header("authorization"),
        Some("Bearer partner-token")
    );
    assert_eq!(sent[0].header("x-sender"), Some("erp"));
    assert_eq!(sent[0].header("x-link-correlation-id"), None);
    assert_eq!(sent[0].header("x-link-callback-url"), None);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_flow_uses_the_configured_method() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|_| async { (201, json!({"stored": 1})) }).await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = daemon
        .start_execution(json!({
            "plugin": PLUGIN,
            "config": {"url": partner.base, "method": "put"},
            "input": {"order": 1},
        }))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"stored": 1}));
    assert_eq!(partner.requests()[0].method, "PUT");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_flow_fails_on_a_non_2xx_answer_naming_status_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|_| async { (502, json!({"error": "upstream down"})) }).await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = daemon
        .start_execution(json!({"plugin": PLUGIN, "config": {"url": partner.base}, "input": {}}))
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "partner-error");
    let text = exec["error"]["text"].as_str().unwrap();
    assert!(text.contains("HTTP 502"), "{text}");
    assert!(text.contains("upstream down"), "{text}");
    assert_eq!(exec["output"], Value::Null);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_flow_sends_correlation_id_and_callback_url_and_an_ok_callback_completes_with_its_body()
 {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let (id, correlation_id, url) =
        start_async(&daemon, &partner, json!({}), json!({"order": 42})).await;
    let sent = partner.requests();
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].json(), json!({"order": 42}));
    assert!(
        url.starts_with(&format!("{}/v1/callbacks/{correlation_id}?", daemon.base)),
        "the callback URL is the ticket for the correlation id: {url}"
    );
    let exec = daemon.execution(&id).await;
    assert_eq!(
        exec["output"],
        Value::Null,
        "nothing is done before the callback"
    );

    let (status, body) = link_callback(
        Some(&daemon.token),
        &url,
        &[
            ("X-Link-Correlation-Id", correlation_id.as_str()),
            ("X-Link-Status", "Ok"),
        ],
        r#"{"invoice": "INV-9"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["execution_state"], "completed");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"invoice": "INV-9"}),
        "use_async_response_body is on by default"
    );
    assert_eq!(exec["output_content_type"], "application/json");
    assert_eq!(
        events(&exec),
        ["started", "suspended", "callback", "completed"]
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ok_callback_continues_the_flow_with_its_body() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = daemon_with_flow(dir.path(), &partner).await;

    let id = daemon
        .start_execution(json!({"workflow": "flow", "input": {"order": 5}}))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let (correlation_id, url) = ticket(&partner.wait_for_requests(1).await[0]);
    let (status, body) = link_callback(
        Some(&daemon.token),
        &url,
        &[
            ("X-Link-Correlation-Id", &correlation_id),
            ("X-Link-Status", "Ok"),
        ],
        r#"{"validated": true}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"input": {"validated": true}, "config": {"ran": true}}),
        "the next step ran, on the callback's body"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_use_async_response_body_off_an_ok_callback_passes_the_original_document_on() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let (id, correlation_id, url) = start_async(
        &daemon,
        &partner,
        json!({"use_async_response_body": false}),
        json!({"order": 77}),
    )
    .await;
    let (status, body) = link_callback(
        Some(&daemon.token),
        &url,
        &[
            ("X-Link-Correlation-Id", &correlation_id),
            ("X-Link-Status", "Ok"),
        ],
        r#"{"validation": "passed"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"order": 77}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_callback_skips_the_rest_of_the_flow_with_the_partners_status_and_error() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = daemon_with_flow(dir.path(), &partner).await;

    let id = daemon
        .start_execution(json!({"workflow": "flow", "input": {"order": 6}}))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let (correlation_id, url) = ticket(&partner.wait_for_requests(1).await[0]);
    let (status, body) = link_callback(
        Some(&daemon.token),
        &url,
        &[
            ("X-Link-Correlation-Id", &correlation_id),
            ("X-Link-Status", "Failed"),
            ("X-Link-Document-Status", "Ignored"),
            ("X-Link-Error-Code", "E-SKU-404"),
            ("X-Link-Error-Text", "Order rejected: unknown SKU A-1"),
        ],
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["execution_state"], "failed");

    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(
        exec["error"],
        json!({
            "code": "E-SKU-404",
            "text": "Order rejected: unknown SKU A-1",
            "document_status": "Ignored",
            "step": "send",
        })
    );
    assert_eq!(exec["step"], "send", "the flow stopped at this step");
    assert!(
        !events(&exec).contains(&"step-completed".to_owned()),
        "the next step never ran: {:?}",
        events(&exec)
    );
    assert_eq!(exec["output"], Value::Null);
    let last = exec["status_log"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["event"], "failed");
    assert_eq!(last["error_code"], "E-SKU-404");
    assert_eq!(last["error_text"], "Order rejected: unknown SKU A-1");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecognised_document_status_becomes_the_technical_status_and_the_document_fails() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let (id, correlation_id, url) = start_async(&daemon, &partner, json!({}), json!({})).await;
    let (status, body) = link_callback(
        Some(&daemon.token),
        &url,
        &[
            ("X-Link-Correlation-Id", &correlation_id),
            ("X-Link-Status", "Failed"),
            ("X-Link-Document-Status", "AwaitingBankApproval"),
            ("X-Link-Error-Code", "E-BANK"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["document_status"], "Failed");
    assert_eq!(exec["error"]["technical_status"], "AwaitingBankApproval");
    assert_eq!(exec["error"]["code"], "E-BANK");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_callback_without_the_optional_headers_fails_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let (id, correlation_id, url) = start_async(&daemon, &partner, json!({}), json!({})).await;
    let (status, body) = link_callback(
        Some(&daemon.token),
        &url,
        &[
            ("X-Link-Correlation-Id", &correlation_id),
            ("X-Link-Status", "Failed"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "partner-failed");
    assert_eq!(
        exec["error"]["text"],
        "the partner reported the document as Failed"
    );
    assert_eq!(exec["error"]["document_status"], "Failed");
    assert_eq!(exec["error"]["technical_status"], Value::Null);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_document_statuses_replace_the_built_in_list() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let custom = json!({"document_statuses": ["OnHold"]});

    for (document_status, expected_document, expected_technical) in [
        ("OnHold", json!("OnHold"), Value::Null),
        // Built in, but no longer in the list.
        ("Ignored", json!("Failed"), json!("Ignored")),
    ] {
        let before = partner.requests().len();
        let id = daemon
            .start_execution(json!({
                "plugin": PLUGIN,
                "config": {"url": partner.base, "async": true, "document_statuses": custom["document_statuses"]},
                "input": {},
            }))
            .await;
        daemon.wait_for(&id, "suspended").await;
        let (correlation_id, url) = ticket(&partner.wait_for_requests(before + 1).await[before]);
        let (status, _) = link_callback(
            Some(&daemon.token),
            &url,
            &[
                ("X-Link-Correlation-Id", &correlation_id),
                ("X-Link-Status", "Failed"),
                ("X-Link-Document-Status", document_status),
            ],
            "",
        )
        .await;
        assert_eq!(status, 200);
        let exec = daemon.wait_for(&id, "failed").await;
        assert_eq!(exec["error"]["document_status"], expected_document);
        assert_eq!(exec["error"]["technical_status"], expected_technical);
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_the_matching_correlation_id_is_rejected_and_the_step_keeps_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (id, correlation_id, url) = start_async(&daemon, &partner, json!({}), json!({})).await;

    let (status, body) =
        link_callback(Some(&daemon.token), &url, &[("X-Link-Status", "Ok")], "{}").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "callback-rejected");
    let reason = body["error"]["message"].as_str().unwrap();
    assert!(
        reason.contains("missing header X-Link-Correlation-Id"),
        "{reason}"
    );

    let (status, body) = link_callback(
        Some(&daemon.token),
        &url,
        &[
            ("X-Link-Correlation-Id", "someone-elses-id"),
            ("X-Link-Status", "Ok"),
        ],
        "{}",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let reason = body["error"]["message"].as_str().unwrap();
    assert!(reason.contains("someone-elses-id"), "{reason}");

    let waiting = daemon.wait_for(&id, "suspended").await;
    let rejected = events(&waiting)
        .iter()
        .filter(|e| *e == "callback-rejected")
        .count();
    assert_eq!(rejected, 2);

    let (status, body) = link_callback(
        Some(&daemon.token),
        &url,
        &[
            ("x-link-correlation-id", &correlation_id),
            ("x-link-status", "Ok"),
        ],
        r#"{"finally": true}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"finally": true}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_a_valid_link_status_is_rejected_and_the_step_keeps_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (id, correlation_id, url) = start_async(&daemon, &partner, json!({}), json!({})).await;

    let (status, body) = link_callback(
        Some(&daemon.token),
        &url,
        &[("X-Link-Correlation-Id", &correlation_id)],
        "{}",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let reason = body["error"]["message"].as_str().unwrap();
    assert!(reason.contains("missing header X-Link-Status"), "{reason}");

    // The protocol's values are `Ok` and `Failed`, exactly.
    for wrong in ["OK", "failed", "Pending"] {
        let (status, body) = link_callback(
            Some(&daemon.token),
            &url,
            &[
                ("X-Link-Correlation-Id", &correlation_id),
                ("X-Link-Status", wrong),
            ],
            "{}",
        )
        .await;
        assert_eq!(status, 400, "{wrong}: {body}");
        let reason = body["error"]["message"].as_str().unwrap();
        assert!(
            reason.contains(wrong) && reason.contains("\"Ok\"") && reason.contains("\"Failed\""),
            "{reason}"
        );
    }
    daemon.wait_for(&id, "suspended").await;

    let (status, _) = link_callback(
        Some(&daemon.token),
        &url,
        &[
            ("X-Link-Correlation-Id", &correlation_id),
            ("X-Link-Status", "Ok"),
        ],
        r#"{"n": 1}"#,
    )
    .await;
    assert_eq!(status, 200);
    daemon.wait_for(&id, "completed").await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_2xx_answer_to_the_async_request_fails_without_suspending() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|_| async { (503, json!({"error": "maintenance"})) }).await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = daemon
        .start_execution(
            json!({"plugin": PLUGIN, "config": {"url": partner.base, "async": true}, "input": {}}),
        )
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "partner-error");
    let text = exec["error"]["text"].as_str().unwrap();
    assert!(
        text.contains("HTTP 503") && text.contains("maintenance"),
        "{text}"
    );
    assert!(!events(&exec).contains(&"suspended".to_owned()));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_callback_within_timeout_ms_fails_with_callback_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    // Not through start_async, which polls for `suspended`: a 300 ms
    // window is easy to miss on a busy machine; the log shows it after.
    let config =
        json!({"url": format!("{}/documents", partner.base), "async": true, "timeout_ms": 300});
    let id = daemon
        .start_execution(json!({"plugin": PLUGIN, "config": config, "input": {}}))
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "callback-timeout");
    assert_eq!(events(&exec), ["started", "suspended", "timeout", "failed"]);
    daemon.stop().await;
}

/// Link requires the "API AsyncFlow Send Callback" permission on every
/// callback: by default the step's callback needs a `callbacks:send` token
/// in addition to the URL's secret, and neither alone is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_callback_needs_a_token_and_the_url_secret() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (id, correlation_id, url) = start_async(&daemon, &partner, json!({}), json!({})).await;
    let headers = [
        ("X-Link-Correlation-Id", correlation_id.as_str()),
        ("X-Link-Status", "Ok"),
    ];

    let (status, body) = link_callback(None, &url, &headers, "{}").await;
    assert_eq!(status, 401, "the URL secret alone is not enough: {body}");
    let bare = url.split('?').next().unwrap();
    let (status, body) = link_callback(Some(&daemon.token), bare, &headers, "{}").await;
    assert_eq!(status, 401, "the token alone is not enough: {body}");
    daemon.wait_for(&id, "suspended").await;
    let (status, body) = link_callback(Some(&daemon.token), &url, &headers, r#"{"ok": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    daemon.wait_for(&id, "completed").await;
    daemon.stop().await;
}

/// `require_token = false` hands the partner a capability URL: the URL
/// alone admits the callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_token_off_the_url_alone_admits_the_callback() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (id, correlation_id, url) = start_async(
        &daemon,
        &partner,
        json!({"require_token": false}),
        json!({}),
    )
    .await;
    let headers = [
        ("X-Link-Correlation-Id", correlation_id.as_str()),
        ("X-Link-Status", "Ok"),
    ];
    let (status, body) = link_callback(None, &url, &headers, r#"{"ok": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    daemon.wait_for(&id, "completed").await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_fails_the_step_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    for (config, needle) in [
        (json!({"url": partner.base, "asynch": true}), "asynch"),
        (json!({"url": partner.base, "method": "FETCH"}), "FETCH"),
        (
            json!({"url": partner.base, "headers": {"x-link-correlation-id": "mine"}}),
            "x-link-correlation-id",
        ),
        (json!({"async": true}), "url"),
    ] {
        let id = daemon
            .start_execution(json!({"plugin": PLUGIN, "config": config, "input": {}}))
            .await;
        let exec = daemon.wait_for(&id, "failed").await;
        assert_eq!(exec["error"]["code"], "invalid-config", "{config}");
        let text = exec["error"]["text"].as_str().unwrap();
        assert!(text.contains(needle), "{config}: {text}");
    }
    assert!(partner.requests().is_empty());
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_method_is_sent_as_configured_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|_| async { (200, json!({"ok": true})) }).await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    for (i, method) in ["get", "Post", "PUT", "patch", "delete"]
        .into_iter()
        .enumerate()
    {
        let id = daemon
            .start_execution(json!({
                "plugin": PLUGIN,
                "config": {"url": partner.base, "method": method},
                "input": {"n": i},
            }))
            .await;
        let exec = daemon.wait_for(&id, "completed").await;
        assert_eq!(exec["output"], json!({"ok": true}), "{method}");
        let sent = partner.wait_for_requests(i + 1).await;
        assert_eq!(sent[i].method, method.to_ascii_uppercase());
    }
    daemon.stop().await;
}
