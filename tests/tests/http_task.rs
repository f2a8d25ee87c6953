//! `http-task` end to end: the real daemon, the real plugin, a partner on
//! loopback that checks what the HTTP task of an orchestration product
//! promises: the templated body, `X-Http-Task-Guid`, the HMAC signature
//! (recomputed here, as a partner would), and retries on non-2xx answers.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use stephost::Config;
use stephost::bindings::stephost::plugin::signing::HmacAlg;
use stephost::capabilities::signing::hmac;
use stephost_tests::{Partner, PartnerRequest, TestDaemon, events};

const PLUGIN: &str = "http-task";
const SECRET: &str = "whsec-7d1e0c5a-partner-shared";

/// A partner that fails the first `failures` requests with 503 (body
/// `{"n": <request number>}`) and accepts the rest with 200.
async fn flaky_partner(failures: usize) -> Partner {
    let seen = Arc::new(AtomicUsize::new(0));
    Partner::start(move |_| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n <= failures {
                (503, json!({"n": n}))
            } else {
                (200, json!({"accepted": n}))
            }
        }
    })
    .await
}

/// A partner answering every request with `body` typed `content_type`,
/// for answers the JSON-only harness partner cannot give.
async fn typed_partner(content_type: &'static str, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(move |_req| async move {
                let resp = hyper::Response::builder()
                    .header("content-type", content_type)
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap();
                Ok::<_, Infallible>(resp)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    base
}

/// Starts the plugin ad hoc with `config`; returns the execution id.
async fn start(daemon: &TestDaemon, config: Value, input: Value) -> String {
    daemon
        .start_execution(json!({"plugin": PLUGIN, "config": config, "input": input}))
        .await
}

fn guid(req: &PartnerRequest) -> &str {
    req.header("x-http-task-guid")
        .expect("every request carries X-Http-Task-Guid")
}

fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// What the partner does with a signed request: recompute the signature
/// over `<timestamp>.<body>` with the shared secret and compare.
fn signature_is_valid(req: &PartnerRequest, secret: &str) -> bool {
    let (Some(timestamp), Some(signature)) = (
        req.header("x-http-task-timestamp"),
        req.header("x-http-task-signature"),
    ) else {
        return false;
    };
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(&req.body);
    let expected = hmac(HmacAlg::Sha256, secret.as_bytes(), &signed);
    signature == format!("sha256={}", hex(&expected))
}

fn config_with_secret(granted: bool) -> Config {
    let grant = if granted { r#"["partner-key"]"# } else { "[]" };
    Config::from_toml(&format!(
        "[secrets]\npartner-key = {{ value = \"{SECRET}\" }}\n[plugins.http-task]\nsecrets = {grant}\n"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_the_rendered_body_with_the_guid_and_completes_with_the_json_response() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|_| async { (200, json!({"ok": true, "ticket": 12})) }).await;
    // Literal TOML strings, so the template's braces need no escaping.
    let config = Config::from_toml(
        &r#"
        [workflows.notify-flow]
        steps = [
            { name = "tag", plugin = "echo", config = { source = "erp" } },
            { name = "notify", plugin = "http-task", config = { name = "Notify ERP", url = 'PARTNER/hooks', headers = { Content-Type = "application/json", Authorization = "Bearer t0k" }, body = '{"workflow": "{{workflow}}", "execution": "{{ execution_id }}", "step": "{{step}}", "attempt": {{attempt}}, "run": "{{step_run_id}}", "source": "{{steps.tag.config.source}}", "order": {{input.input.order}}, "note": {{input.input.note | json}}, "tag": {{steps.tag}}}' } },
        ]
        "#
        .replace("PARTNER", &partner.base),
    )
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;

    let input = json!({"order": 7, "note": "say \"hi\""});
    let id = daemon
        .start_execution(json!({"workflow": "notify-flow", "input": input}))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"ok": true, "ticket": 12}));
    assert_eq!(exec["output_content_type"], "application/json");

    let sent = partner.requests();
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    assert_eq!(req.method, "POST", "POST is the default method");
    assert_eq!(req.uri, "/hooks");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("authorization"), Some("Bearer t0k"));
    let run = guid(req);
    assert!(!run.is_empty());
    assert_eq!(
        req.json(),
        json!({
            "workflow": "notify-flow",
            "execution": id,
            "step": "notify",
            "attempt": 1,
            "run": run,
            "source": "erp",
            "order": 7,
            "note": "say \"hi\"",
            "tag": {"input": input, "config": {"source": "erp"}},
        }),
        "body as sent: {}",
        String::from_utf8_lossy(&req.body)
    );
    assert_eq!(
        req.header("x-http-task-signature"),
        None,
        "no secret_key, no signature"
    );
    assert_eq!(req.header("x-http-task-timestamp"), None);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_body_none_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|_| async { (200, json!({})) }).await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    for method in ["POST", "DELETE", "GET"] {
        let id = start(
            &daemon,
            json!({"url": format!("{}/items/9", partner.base), "method": method}),
            json!({"ignored": "the input is not the body"}),
        )
        .await;
        daemon.wait_for(&id, "completed").await;
    }
    let sent = partner.requests();
    let methods: Vec<&str> = sent.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["POST", "DELETE", "GET"]);
    for req in &sent {
        assert!(req.body.is_empty(), "{}: {:?}", req.method, req.body);
        assert!(req.header("x-http-task-guid").is_some());
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_key_every_request_is_signed_over_timestamp_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let partner = flaky_partner(1).await;
    let daemon = TestDaemon::start(config_with_secret(true), dir.path()).await;

    let id = start(
        &daemon,
        json!({
            "url": partner.base,
            "body": r#"{"execution": "{{execution_id}}", "attempt": {{attempt}}}"#,
            "secret_key": "partner-key",
            "retry_on_failure": {"attempts": 2, "backoff_ms": 20},
        }),
        json!({}),
    )
    .await;
    let exec = daemon.wait_for(&id, "completed").await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let sent = partner.requests();
    assert_eq!(sent.len(), 2);
    for (i, req) in sent.iter().enumerate() {
        assert!(
            signature_is_valid(req, SECRET),
            "request {i} verifies with the shared secret: {:?}",
            req.headers
        );
        assert!(!signature_is_valid(req, "another-secret"));
        assert_eq!(req.json()["attempt"], i + 1, "the retry is signed afresh");
        let timestamp: u64 = req
            .header("x-http-task-timestamp")
            .unwrap()
            .parse()
            .unwrap();
        assert!(now.abs_diff(timestamp) <= 60, "{timestamp} is Unix seconds");
    }
    let mut tampered = sent[0].clone();
    tampered.body = br#"{"execution": "forged", "attempt": 1}"#.to_vec();
    assert!(!signature_is_valid(&tampered, SECRET), "the body is signed");

    let view = daemon.execution(&id).await.to_string();
    assert!(!view.contains(SECRET), "the secret never leaks: {view}");
    assert_eq!(exec["state"], "completed");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_key_not_granted_to_the_plugin_fails_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start(config_with_secret(false), dir.path()).await;

    let id = start(
        &daemon,
        json!({"url": partner.base, "body": "{}", "secret_key": "partner-key"}),
        json!({}),
    )
    .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "signing-error");
    let text = exec["error"]["text"].as_str().unwrap();
    assert!(
        text.contains("partner-key") && text.contains("not granted"),
        "{text}"
    );
    assert!(!exec.to_string().contains(SECRET));
    assert!(partner.requests().is_empty());
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_2xx_answer_fails_at_once_without_retry_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|_| async { (500, json!({"error": "db locked"})) }).await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = start(
        &daemon,
        json!({"name": "Notify billing", "url": partner.base}),
        json!({}),
    )
    .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "partner-error");
    let text = exec["error"]["text"].as_str().unwrap();
    assert!(text.contains("Notify billing"), "{text}");
    assert!(
        text.contains("HTTP 500") && text.contains("db locked"),
        "{text}"
    );
    assert_eq!(events(&exec), ["started", "failed"]);
    assert_eq!(partner.requests().len(), 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retry_on_failure_the_request_is_retried_with_the_same_guid_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let partner = flaky_partner(2).await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = start(
        &daemon,
        json!({
            "url": partner.base,
            "body": r#"{"attempt": {{attempt}}}"#,
            "retry_on_failure": {"attempts": 3, "backoff_ms": 30},
        }),
        json!({}),
    )
    .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"accepted": 3}));
    assert_eq!(exec["attempt"], 3);
    assert_eq!(
        events(&exec),
        [
            "started",
            "retry-after",
            "timer",
            "retry-after",
            "timer",
            "completed"
        ]
    );

    let sent = partner.requests();
    assert_eq!(sent.len(), 3);
    let attempts: Vec<Value> = sent.iter().map(|r| r.json()["attempt"].clone()).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert!(
        sent.iter().all(|r| guid(r) == guid(&sent[0])),
        "one GUID for all retries: {:?}",
        sent.iter().map(guid).collect::<Vec<_>>()
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_after_the_attempts_with_growing_delays_and_fail_with_the_last_answer() {
    let dir = tempfile::tempdir().unwrap();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let partner = Partner::start(move |_| {
        let seen = seen.clone();
        async move {
            let mut seen = seen.lock().unwrap();
            seen.push(Instant::now());
            (500, json!({"n": seen.len()}))
        }
    })
    .await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = start(
        &daemon,
        json!({
            "url": partner.base,
            "retry_on_failure": {"attempts": 3, "backoff_ms": 100, "multiplier": 3},
        }),
        json!({}),
    )
    .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "partner-error");
    let text = exec["error"]["text"].as_str().unwrap();
    assert!(text.contains("attempt 3 of 3"), "{text}");
    assert!(text.contains(r#"{"n":3}"#), "the last answer: {text}");

    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 3);
    let first_gap = arrivals[1] - arrivals[0];
    let second_gap = arrivals[2] - arrivals[1];
    assert!(first_gap >= Duration::from_millis(100), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(300), "{second_gap:?}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_failure_true_retries_with_the_default_policy() {
    let dir = tempfile::tempdir().unwrap();
    let partner = flaky_partner(1).await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = start(
        &daemon,
        json!({"url": partner.base, "retry_on_failure": true}),
        json!({}),
    )
    .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"accepted": 2}));
    let log = exec["status_log"].as_array().unwrap();
    let at = |event: &str| {
        log.iter()
            .find(|e| e["event"] == event)
            .and_then(|e| e["time_ms"].as_u64())
            .unwrap()
    };
    assert!(
        at("timer") - at("retry-after") >= 1000,
        "the default first delay is 1 s"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_retried_too() {
    let dir = tempfile::tempdir().unwrap();
    // Every connection is closed before an answer.
    let (closed, _) = stephost_tests::closing_server().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = start(
        &daemon,
        json!({"url": closed, "retry_on_failure": {"attempts": 2, "backoff_ms": 10}}),
        json!({}),
    )
    .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "http-error");
    assert!(
        exec["error"]["text"]
            .as_str()
            .unwrap()
            .contains("attempt 2 of 2")
    );
    assert_eq!(events(&exec), ["started", "retry-after", "timer", "failed"]);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_retry_after_the_attempts_ran_out_starts_a_fresh_series_with_the_same_guid() {
    let dir = tempfile::tempdir().unwrap();
    let partner = flaky_partner(2).await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = start(
        &daemon,
        json!({"url": partner.base, "retry_on_failure": {"attempts": 2, "backoff_ms": 10}}),
        json!({}),
    )
    .await;
    daemon.wait_for(&id, "failed").await;
    assert_eq!(partner.requests().len(), 2);

    let (status, body) = daemon
        .post(&format!("/v1/executions/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"accepted": 3}));
    let sent = partner.requests();
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|r| guid(r) == guid(&sent[0])));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_reference_to_nothing_fails_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = start(
        &daemon,
        json!({"url": partner.base, "body": r#"{"x": {{steps.nope.field}}}"#}),
        json!({}),
    )
    .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "template-error");
    let text = exec["error"]["text"].as_str().unwrap();
    assert!(text.contains("{{steps.nope.field}}"), "{text}");
    assert!(partner.requests().is_empty());
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_is_the_output_json_when_it_parses_and_as_typed_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;

    for (content_type, body, output, output_type) in [
        (
            "text/plain",
            r#"{"queued": 3}"#,
            json!({"queued": 3}),
            "application/json",
        ),
        (
            "text/plain; charset=utf-8",
            "accepted",
            json!("accepted"),
            "text/plain; charset=utf-8",
        ),
    ] {
        let url = typed_partner(content_type, body).await;
        let id = start(&daemon, json!({"url": url, "method": "GET"}), json!({})).await;
        let exec = daemon.wait_for(&id, "completed").await;
        assert_eq!(exec["output"], output, "{content_type} {body}");
        assert_eq!(exec["output_content_type"], output_type);
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_fails_the_step_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let url = partner.base.clone();

    for (config, needle) in [
        (
            json!({"url": url, "method": "GET", "body": "{}"}),
            "not with GET",
        ),
        (json!({"url": url, "method": "FETCH"}), "FETCH"),
        (
            json!({"url": url, "headers": {"X-Http-Task-Guid": "mine"}}),
            "X-Http-Task-Guid",
        ),
        (
            json!({"url": url, "retry_on_failure": {"attempts": 0}}),
            "attempts",
        ),
        (
            json!({"url": url, "retry_on_failure": {"tries": 2}}),
            "tries",
        ),
        (json!({"url": url, "secret": "inline"}), "secret"),
    ] {
        let id = start(&daemon, config.clone(), json!({})).await;
        let exec = daemon.wait_for(&id, "failed").await;
        assert_eq!(exec["error"]["code"], "invalid-config", "{config}");
        let text = exec["error"]["text"].as_str().unwrap();
        assert!(text.contains(needle), "{config}: {text}");
    }
    assert!(partner.requests().is_empty());
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_validated_by_default_and_validate_tls_false_accepts_a_self_signed_partner() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start_tls(|_| async { (200, json!({"ok": true})) }).await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let id = daemon
        .start_execution(
            json!({"plugin": "http-task", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    let text = exec["error"]["text"].as_str().unwrap().to_lowercase();
    assert!(
        text.contains("certificate"),
        "the refusal names the certificate: {exec:#}"
    );
    assert!(
        partner.requests().is_empty(),
        "no request got past the handshake"
    );

    let id = daemon
        .start_execution(json!({
            "plugin": "http-task",
            "config": {"url": partner.base, "validate_tls": false},
            "input": {},
        }))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"ok": true}));
    assert_eq!(partner.requests().len(), 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_daemon_refuses_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    // http-task may reach only this host; the request goes elsewhere.
    let config = Config::from_toml(
        r#"
        [plugins.http-task]
        allowed_hosts = ["https://erp.example"]
        "#,
    )
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;
    let id = start(
        &daemon,
        json!({"url": partner.base, "retry_on_failure": {"attempts": 3, "backoff_ms": 10}}),
        json!({}),
    )
    .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "egress-denied", "{exec:#}");
    assert_eq!(events(&exec), ["started", "failed"], "no retry: {exec:#}");
    assert!(partner.requests().is_empty());
    daemon.stop().await;
}

/// `docs/steps.md`: each request may take at most 30 seconds, then it
/// counts as no answer (`http-error`), whatever the plugin's time limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_given_up_after_30_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (partner, _) = stephost_tests::raw_server(None).await;
    let config = Config::from_toml(
        r#"
        [plugins.http-task]
        time_limit_ms = 120000
        "#,
    )
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;
    let started = Instant::now();
    let id = start(&daemon, json!({"url": partner}), json!({})).await;
    // Longer than the harness's usual wait, which is itself 30 s.
    let exec = loop {
        let exec = daemon.execution(&id).await;
        if exec["state"] == "failed" {
            break exec;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "still waiting: {exec:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = started.elapsed();
    assert_eq!(exec["error"]["code"], "http-error", "{exec:#}");
    // Timers fire late on a busy machine, never early.
    assert!(took >= Duration::from_secs(30), "gave up after {took:?}");
    daemon.stop().await;
}
