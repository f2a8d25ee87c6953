//! The sandbox and the daemon's defences, end to end: hostile plugins are
//! stopped and reported while good executions complete, internal addresses
//! are refused, malformed components are refused with a reason, secrets
//! stay secret, and bad input gets a JSON 4xx.

use std::time::Duration;

use serde_json::{Value, json};
use stephost::Config;
use stephost_tests::{Partner, TestDaemon, client};

fn test_plugin(name: &str) -> String {
    format!(
        "{}/{}.wasm",
        env!("TEST_PLUGIN_DIR"),
        name.replace('-', "_")
    )
}

/// The hostile plugin twice: as `hostile`, whose generous time limit lets
/// every attack fail by its own code however busy the machine is, and as
/// `looper`, whose limit the infinite loop runs into.
fn hostile_config() -> Config {
    Config::from_toml(&format!(
        r#"
        [plugins.hostile]
        path = "{wasm}"
        time_limit_ms = 30000
        memory_mb = 48
        allowed_hosts = ["http://169.254.169.254", "https://partner.example"]
        [plugins.looper]
        path = "{wasm}"
        time_limit_ms = {LOOP_LIMIT_MS}
        "#,
        wasm = test_plugin("hostile")
    ))
    .unwrap()
}

/// The looping plugin's time limit: long enough that ten good executions
/// complete while it still loops, on a busy machine too.
const LOOP_LIMIT_MS: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_stopped_with_their_code_while_good_executions_complete() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(hostile_config(), dir.path()).await;

    // The loop first; the good executions must complete while it runs.
    let looping = daemon
        .start_execution(json!({"plugin": "looper", "config": {"mode": "loop"}, "input": {}}))
        .await;
    let loop_started = std::time::Instant::now();
    let attacks = [
        (json!({"mode": "memory"}), "memory-limit"),
        (json!({"mode": "trap"}), "trap"),
        (json!({"mode": "huge-output"}), "body-too-large"),
        (json!({"mode": "huge-state"}), "state-too-large"),
        (
            json!({"mode": "fetch", "url": "https://forbidden.example/steal"}),
            "egress-denied",
        ),
        (
            json!({"mode": "fetch", "url": "http://169.254.169.254/latest/meta-data/"}),
            "egress-denied",
        ),
        (
            json!({"mode": "fetch", "url": "http://127.0.0.1:9/"}),
            "egress-denied",
        ),
    ];
    let mut bad = Vec::new();
    for (config, code) in &attacks {
        let id = daemon
            .start_execution(json!({"plugin": "hostile", "config": config, "input": {}}))
            .await;
        bad.push((id, config.clone(), *code));
    }
    let mut good = Vec::new();
    for n in 0..10 {
        good.push(
            daemon
                .start_execution(json!({"plugin": "echo", "input": {"n": n}}))
                .await,
        );
    }

    for (n, id) in good.iter().enumerate() {
        let exec = daemon.wait_for(id, "completed").await;
        assert_eq!(exec["output"], json!({"n": n}));
    }
    let good_done = loop_started.elapsed();
    let still = daemon.execution(&looping).await;
    assert!(
        still["state"] == "running" && good_done.as_millis() < u128::from(LOOP_LIMIT_MS),
        "the good executions completed in {good_done:?}, while the loop was still running: {still:#}"
    );
    for (id, config, code) in &bad {
        let exec = daemon.wait_for(id, "failed").await;
        assert_eq!(exec["error"]["code"], *code, "{config} -> {exec:#}");
    }
    let mut texts = Vec::new();
    for (id, _, _) in &bad {
        let exec = daemon.execution(id).await;
        texts.push(exec["error"]["text"].as_str().unwrap().to_owned());
    }
    let looped = daemon.wait_for(&looping, "failed").await;
    assert_eq!(looped["error"]["code"], "time-limit", "{looped:#}");
    let looped = looped["error"]["text"].as_str().unwrap().to_owned();
    let stopped_after: u64 = looped
        .split("stopped after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("the error says when the loop was stopped: {looped}"));
    // The epoch ticker that enforces the limit is a thread a busy machine
    // may run late; a second of slack still tells "stopped at its limit"
    // from "ran on".
    assert!(
        stopped_after <= LOOP_LIMIT_MS + 1000,
        "an infinite loop is stopped within its limit plus a second: {looped}"
    );
    assert!(
        texts[4].contains("allowed_hosts"),
        "the refusal names the rule"
    );
    assert!(
        texts[5].contains("metadata"),
        "the refusal names the address kind"
    );
    assert!(texts[6].contains("allowed_hosts"));

    let (status, _) = daemon.get("/healthz").await;
    assert_eq!(status, 200, "the daemon keeps serving");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_refused_after_resolution_unless_the_operator_allows_them() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let port = partner.base.rsplit(':').next().unwrap().to_owned();
    // No egress_allow: the reference plugins may name any host, but not
    // reach an internal address, whether by name or by literal IP.
    let strict = TestDaemon::start_with_policy(Config::default(), dir.path()).await;
    for url in [
        format!("http://localhost:{port}/"),
        format!("http://127.0.0.1:{port}/"),
    ] {
        let id = strict
            .start_execution(json!({"plugin": "http-task", "config": {"url": url}, "input": {}}))
            .await;
        let exec = strict.wait_for(&id, "failed").await;
        assert_eq!(exec["error"]["code"], "egress-denied", "{url}: {exec:#}");
        assert!(
            exec["error"]["text"].as_str().unwrap().contains("loopback"),
            "{exec:#}"
        );
    }
    assert!(
        partner.requests().is_empty(),
        "nothing reached the internal partner"
    );
    strict.stop().await;

    let allowed = Config::from_toml("egress_allow = [\"127.0.0.0/8\", \"::1/128\"]").unwrap();
    let open = TestDaemon::start_with_policy(allowed, dir.path()).await;
    let id = open
        .start_execution(json!({"plugin": "http-task", "config": {"url": format!("http://localhost:{port}/")}, "input": {}}))
        .await;
    open.wait_for(&id, "completed").await;
    assert_eq!(partner.requests().len(), 1);
    open.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_components_are_refused_with_the_reason_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (_, before) = daemon.get("/v1/plugins").await;

    let cases: [(&str, Vec<u8>, &str, &str); 4] = [
        (
            "garbage",
            b"#!/bin/sh\necho hi\n".to_vec(),
            "not-a-component",
            "no WebAssembly header",
        ),
        (
            "core",
            b"\0asm\x01\0\0\0".to_vec(),
            "not-a-component",
            "core WebAssembly module",
        ),
        (
            "other-world",
            std::fs::read(test_plugin("wrong-world")).unwrap(),
            "wrong-world",
            "stephost:plugin/step",
        ),
        (
            "needy",
            std::fs::read(test_plugin("bad-import")).unwrap(),
            "wrong-world",
            "acme:needs/launcher",
        ),
    ];
    for (name, bytes, code, names) in cases {
        let (status, body) = daemon.upload(name, bytes).await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(names),
            "{name}: the error names the problem: {message}"
        );
    }
    let (status, body) = daemon
        .upload("Bad Name", std::fs::read(test_plugin("hostile")).unwrap())
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = daemon
        .upload("echo", std::fs::read(test_plugin("hostile")).unwrap())
        .await;
    assert_eq!(status, 409, "a built-in name cannot be taken over");
    let (_, after) = daemon.get("/v1/plugins").await;
    assert_eq!(before, after, "refused uploads change nothing");

    // A good upload is kept across restarts, and an uploaded plugin has
    // no network unless the operator grants hosts.
    let (status, body) = daemon
        .upload("uploaded", std::fs::read(test_plugin("hostile")).unwrap())
        .await;
    assert_eq!(status, 201, "{body}");
    daemon.stop().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (status, inspected) = daemon.get("/v1/plugins/uploaded").await;
    assert_eq!(status, 200, "{inspected}");
    assert_eq!(inspected["hash"], body["hash"]);
    let id = daemon
        .start_execution(json!({"plugin": "uploaded", "config": {"mode": "fetch", "url": "https://example.com/"}, "input": {}}))
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "egress-denied");
    assert!(
        exec["error"]["text"]
            .as_str()
            .unwrap()
            .contains("no network grant"),
        "{exec:#}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start(
        Config::from_toml("max_request_body_bytes = 1024").unwrap(),
        dir.path(),
    )
    .await;
    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();

    // A header value with bytes beyond ASCII (obs-text) is accepted: see
    // tests/tests/hardening.rs. A body the plugin rejects is a 400.
    let resp = client().post(&url).body("not json").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "callback-rejected", "{body}");

    let resp = client()
        .post(&url)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body-too-large");
    daemon.wait_for(&id, "suspended").await;

    let (status, body) = daemon.get("/v1/executions/not-an-id").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = daemon.get("/v1/executions?state=sleeping").await;
    assert_eq!(status, 400, "{body}");
    tokio::time::sleep(Duration::from_millis(1)).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_naming_a_bad_component_stops_the_daemon_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("not-a-plugin.wasm");
    std::fs::write(&garbage, b"MZ\x90\x00 definitely not wasm").unwrap();
    let mut config = Config::from_toml(&format!(
        "[plugins.broken]\npath = \"{}\"\n",
        garbage.display()
    ))
    .unwrap();
    config.data_dir = dir.path().join("data");
    let err = stephost::Daemon::open(config).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("broken") && text.contains("not a WebAssembly component"),
        "the error names the plugin and the problem: {text}"
    );
}

/// A partner that holds every request until told to answer, and records
/// the most requests it held at once.
struct HoldingPartner {
    partner: Partner,
    release: std::sync::Arc<tokio::sync::Semaphore>,
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn holding_partner() -> HoldingPartner {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (held, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let partner = {
        let (release, held, peak) = (release.clone(), held.clone(), peak.clone());
        Partner::start(move |_| {
            let (release, held, peak) = (release.clone(), held.clone(), peak.clone());
            async move {
                let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                release.acquire().await.unwrap().forget();
                held.fetch_sub(1, Ordering::SeqCst);
                (200, json!({"ok": true}))
            }
        })
        .await
    };
    HoldingPartner {
        partner,
        release,
        peak,
    }
}

/// Starts three `http-task` executions against `partner`, lets the partner
/// answer them one by one, and returns the most it held at once and, while
/// it held the first, the slot gauges (total, in use, calls waiting).
async fn peak_of_three_steps(max_concurrent_steps: Option<u32>) -> (usize, [f64; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    if let Some(n) = max_concurrent_steps {
        config.max_concurrent_steps = n;
    }
    let daemon = TestDaemon::start(config, dir.path()).await;
    let holding = holding_partner().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            daemon
                .start_execution(json!({
                    "plugin": "http-task",
                    "config": {"url": format!("{}/hold", holding.partner.base)},
                    "input": {"n": i},
                }))
                .await,
        );
    }
    // Settled once all three calls are accounted for (in a slot or
    // waiting for one) and every call in a slot has reached the partner,
    // which holds them all: nothing can change until the releases below.
    let until = std::time::Instant::now() + stephost_tests::WAIT;
    let slots = loop {
        let m = daemon.metrics().await;
        let slots = [
            m[r#"stephost_step_slots{state="total"}"#],
            m[r#"stephost_step_slots{state="in-use"}"#],
            m["stephost_step_calls_waiting"],
        ];
        let held = holding.partner.requests().len() as f64;
        if slots[1] + slots[2] == 3.0 && held == slots[1] {
            break slots;
        }
        assert!(
            std::time::Instant::now() < until,
            "never settled: {slots:?}, partner holds {held}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for _ in 0..3 {
        holding.release.add_permits(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &ids {
        daemon.wait_for(id, "completed").await;
    }
    assert_eq!(
        daemon.metrics().await["stephost_step_calls_waiting"],
        0.0,
        "nobody waits once all are done"
    );
    (
        holding.peak.load(std::sync::atomic::Ordering::SeqCst),
        slots,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_steps_bounds_the_step_calls_running_at_once() {
    // One slot: the second and third calls wait for the first to finish
    // (and /metrics says so), and then complete.
    assert_eq!(peak_of_three_steps(Some(1)).await, (1, [1.0, 1.0, 2.0]));
    // The default lets all three wait on the partner together.
    assert_eq!(peak_of_three_steps(None).await, (3, [1000.0, 3.0, 0.0]));
}
