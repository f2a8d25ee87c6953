//! Plugins in other languages, end to end: `python-sign-and-forward`
//! (componentize-py), `js-sign-and-forward` (componentize-js) and
//! `c-sign-and-forward` (clang and wasi-libc, made a component by
//! wasm-tools) are built from source by their own build scripts, loaded
//! into the real daemon from their files, and run against a partner on
//! loopback that checks their HMAC signature. Each must behave exactly like
//! a Rust plugin would: the same wire bytes, the same suspend and resume,
//! the same failure codes.
//!
//! A component of a language runtime is 12-20 MB and takes the daemon
//! seconds to compile, so each language gets one daemon that every scenario
//! shares, and each component is built once per test binary.

mod toolchains;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stephost::Config;
use stephost::bindings::stephost::plugin::signing::HmacAlg;
use stephost_tests::{
    Partner, PartnerRequest, TestDaemon, call_back, closing_server, events, raw_server,
};

/// The signing key, known to the daemon's config and the partner only.
const KEY: &str = "partner-shared-key-7f3a";

/// A document that tells apart any two ways of writing JSON: keys out of
/// order, upper before lower case, a key outside the Basic Multilingual
/// Plane (UTF-16 sorts its surrogates before U+FB01, code points after),
/// escapes, non-ASCII text, a fraction.
fn order() -> Value {
    json!({
        "id": "order-7",
        "total": 2.5,
        "qty": 3,
        "Zeta": null,
        "customer": {"name": "Zoë \"Z\" Ålander", "vip": true, "tags": ["b", "a"]},
        "note": "line 1\nline 2\ttabbed",
        "\u{fb01}le": 1,
        "\u{1f600}": 2,
    })
}

static PYTHON: OnceLock<PathBuf> = OnceLock::new();
static JS: OnceLock<PathBuf> = OnceLock::new();
static C: OnceLock<PathBuf> = OnceLock::new();

/// Builds a plugin of `plugins/NAME` with its `build.sh`, once per process.
fn built(cell: &'static OnceLock<PathBuf>, name: &str) -> &'static Path {
    cell.get_or_init(|| {
        let root = toolchains::repo_root();
        let started = Instant::now();
        let script = root.join("plugins").join(name).join("build.sh");
        let wasm = toolchains::run_build(Command::new("bash").arg(&script), &script);
        eprintln!("built {name} in {:.1?}", started.elapsed());
        wasm
    })
}

/// Canonical JSON as every SDK writes it: keys sorted by UTF-16 code units,
/// no whitespace.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// What a partner checks: the signature header is the HMAC-SHA256 of the
/// exact body bytes under the shared key.
fn signature_is_valid(req: &PartnerRequest) -> bool {
    let mac = stephost::capabilities::signing::hmac(HmacAlg::Sha256, KEY.as_bytes(), &req.body);
    req.header("x-signature") == Some(format!("sha256={}", hex(&mac)).as_str())
}

/// A daemon with `plugin` loaded from `wasm` (or built in, without), granted
/// secret `k` (the key), loopback, and the cloud metadata address, which
/// the daemon's address policy refuses all the same; responses are capped
/// at [`MAX_BODY`]. Secret `other` exists but is not granted to it.
async fn daemon_with(plugin: &str, wasm: Option<&Path>, data_dir: &Path) -> TestDaemon {
    let path = wasm.map_or(String::new(), |wasm| {
        format!("path = \"{}\"", wasm.display())
    });
    let config = Config::from_toml(&format!(
        r#"
        [plugins.{plugin}]
        {path}
        secrets = ["k"]
        allowed_hosts = ["http://127.0.0.1:*", "http://169.254.169.254:*"]
        max_body_bytes = {MAX_BODY}

        [secrets]
        k = {{ value = "{KEY}" }}
        other = {{ value = "not-for-this-plugin" }}
        "#
    ))
    .unwrap();
    TestDaemon::start(config, data_dir).await
}

/// The largest response body the plugins under test may receive.
const MAX_BODY: usize = 4096;

/// What every language's SDK must report alike when `http.send` gets no
/// response (`docs/errors.md`): `egress-denied` for a target the host
/// refuses, by its address policy or by the plugin's grant;
/// `body-too-large` for a response over the plugin's `max_body_bytes`;
/// `http-error` for a partner that closes the connection. `plugin` reads
/// `url` from its config and sends its input there.
async fn unanswered_requests_fail_with_the_codes_of_every_sdk(daemon: &TestDaemon, plugin: &str) {
    let big = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n\"{}\"",
        MAX_BODY * 2 + 2,
        "x".repeat(MAX_BODY * 2)
    );
    let (big, _) = raw_server(Some(big)).await;
    let (closing, _) = closing_server().await;
    for (url, code, text) in [
        // Granted, but link-local: the address policy refuses it.
        (
            "http://169.254.169.254/latest/meta-data/",
            "egress-denied",
            "link-local",
        ),
        // Not granted to the plugin.
        ("http://192.0.2.1/orders", "egress-denied", "allowed_hosts"),
        (big.as_str(), "body-too-large", "4096"),
        (closing.as_str(), "http-error", "connection"),
    ] {
        let config = json!({"url": url, "secret": "k"});
        let id = daemon
            .start_execution(json!({"plugin": plugin, "config": config, "input": order()}))
            .await;
        let exec = daemon.wait_for(&id, "failed").await;
        assert_eq!(exec["error"]["code"], code, "{plugin}, {url}: {exec:#}");
        assert!(
            exec["error"]["text"].as_str().unwrap().contains(text),
            "{plugin}, {url}: the text says why: {exec:#}"
        );
    }
}

/// Every scenario of the sign-and-forward step on one daemon.
async fn sign_and_forward_end_to_end(plugin: &str, wasm: &Path) {
    let dir = tempfile::tempdir().unwrap();
    // Accepts only correctly signed requests, as a real partner would.
    let partner = Partner::start(|req| async move {
        if signature_is_valid(&req) {
            (202, json!({"accepted": true}))
        } else {
            (401, json!({"error": "bad signature"}))
        }
    })
    .await;
    let daemon = daemon_with(plugin, Some(wasm), dir.path()).await;
    let config = json!({"url": format!("{}/orders", partner.base), "secret": "k"});

    // `describe` answered when the daemon loaded the file.
    let (status, list) = daemon.get("/v1/plugins").await;
    assert_eq!(status, 200, "{list}");
    let info = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == plugin)
        .unwrap_or_else(|| panic!("{plugin} is listed: {list:#}"));
    assert_eq!(info["version"], "0.1.0");
    assert_eq!(info["builtin"], false);
    assert!(
        info["description"]
            .as_str()
            .unwrap()
            .contains("HMAC-SHA256"),
        "{info}"
    );

    // Sign, forward, suspend.
    let id = daemon
        .start_execution(json!({"plugin": plugin, "config": config, "input": order()}))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let sent = partner.wait_for_requests(1).await;
    let req = &sent[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.uri, "/orders");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        String::from_utf8_lossy(&req.body),
        canonical(&order()),
        "the body is the canonical JSON of the document"
    );
    assert!(
        signature_is_valid(req),
        "X-Signature is the HMAC-SHA256 of the body under the granted secret: {:?}",
        req.header("x-signature")
    );
    assert!(!req.header("x-step-run-id").unwrap_or_default().is_empty());
    let callback = req.callback_url();
    assert!(
        callback.starts_with(&format!("{}/v1/callbacks/", daemon.base)),
        "{callback}"
    );

    // A callback that is not a JSON object is refused; the step waits on.
    for bad in ["not json", "[1, 2]"] {
        let (status, body) = call_back(&callback, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(daemon.execution(&id).await["state"], "suspended");
    }

    // The partner's answer is merged under `partner`.
    let (status, body) = call_back(&callback, r#"{"approved": true, "ref": "P-1"}"#).await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    let mut expected = order();
    expected["partner"] = json!({"approved": true, "ref": "P-1"});
    assert_eq!(exec["output"], expected);
    let log = events(&exec);
    assert_eq!(log.first().map(String::as_str), Some("started"));
    assert!(log.contains(&"suspended".to_owned()), "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("completed"));

    // A document without a string `id` fails before anything is sent.
    for input in [
        json!({"no": "id"}),
        json!({"id": 5}),
        json!([1, 2]),
        json!("id"),
    ] {
        let id = daemon
            .start_execution(json!({"plugin": plugin, "config": config, "input": input}))
            .await;
        let exec = daemon.wait_for(&id, "failed").await;
        assert_eq!(
            exec["error"]["code"], "invalid-document",
            "{input}: {exec:#}"
        );
    }
    assert_eq!(
        partner.requests().len(),
        1,
        "nothing invalid reached the partner"
    );

    // A config without the secret's name, or with a timeout that is not
    // a number of milliseconds, is refused before anything is sent.
    for bad in [
        json!({"url": partner.base}),
        json!({"url": partner.base, "secret": "k", "timeout_ms": "soon"}),
        json!({"url": partner.base, "secret": "k", "timeout_ms": -1}),
    ] {
        let id = daemon
            .start_execution(json!({"plugin": plugin, "config": bad, "input": order()}))
            .await;
        let exec = daemon.wait_for(&id, "failed").await;
        assert_eq!(exec["error"]["code"], "invalid-config", "{bad}: {exec:#}");
    }

    // A secret the plugin is not granted cannot sign.
    let ungranted = json!({"url": partner.base, "secret": "other"});
    let id = daemon
        .start_execution(json!({"plugin": plugin, "config": ungranted, "input": order()}))
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "signing-error", "{exec:#}");
    assert!(
        !exec.to_string().contains("not-for-this-plugin"),
        "no secret value leaks: {exec}"
    );
    assert_eq!(partner.requests().len(), 1);

    // No callback before the timeout: callback-timeout.
    let short = json!({"url": partner.base, "secret": "k", "timeout_ms": 300});
    let id = daemon
        .start_execution(json!({"plugin": plugin, "config": short, "input": order()}))
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "callback-timeout", "{exec:#}");
    assert!(events(&exec).contains(&"timeout".to_owned()));
    assert_eq!(partner.requests().len(), 2);

    unanswered_requests_fail_with_the_codes_of_every_sdk(&daemon, plugin).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_signs_forwards_suspends_and_merges_the_callback() {
    let wasm = built(&PYTHON, "python-sign-and-forward");
    sign_and_forward_end_to_end("python-sign-and-forward", wasm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_plugin_signs_forwards_suspends_and_merges_the_callback() {
    let wasm = built(&JS, "js-sign-and-forward");
    sign_and_forward_end_to_end("js-sign-and-forward", wasm).await;
}

/// Built from C without a language runtime: needs the Debian packages
/// clang-15, lld-15 and wasi-libc (the build script fails naming the
/// missing ones; `.ci/run` installs them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_plugin_signs_forwards_suspends_and_merges_the_callback() {
    let wasm = built(&C, "c-sign-and-forward");
    sign_and_forward_end_to_end("c-sign-and-forward", wasm).await;
}

/// The Rust counterpart of the sign-and-forward examples: the built-in
/// `wait-for-callback` sends its input with the Rust SDK and lets the SDK's
/// error become its failure, as the examples do in their languages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_plugin_fails_unanswered_requests_with_the_same_codes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_with("wait-for-callback", None, dir.path()).await;
    unanswered_requests_fail_with_the_codes_of_every_sdk(&daemon, "wait-for-callback").await;
    daemon.stop().await;
}

/// The figures in `docs/writing-plugins.md`: component size; how much
/// longer a daemon takes to start with the plugin configured, on a fresh
/// data dir (the component is compiled) and on one it started on before
/// (the compiled-component cache in the data dir has it); and the time of
/// one execution whose step runs once (instantiate, `run`, durable writes).
/// Each plugin runs without config, so it fails at once with
/// `invalid-config` and no partner is involved; the Rust row is the
/// built-in `wait-for-callback` loaded from a file like the others. Run with
/// `cargo test -p stephost-tests --test other_languages -- --ignored --nocapture --test-threads 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it by hand"]
async fn measure_size_load_and_call_time() {
    const CALLS: u32 = 20;
    let dir = tempfile::tempdir().unwrap();
    let rust = dir.path().join("wait-for-callback.wasm");
    let mut bytes = stephost::builtin::component("wait-for-callback")
        .unwrap()
        .to_vec();
    // A custom section `bench` (id 0, 6 bytes, name length 5): the same
    // code under another content hash, so the cache does not already hold
    // it from loading the built-in.
    bytes.extend_from_slice(b"\x00\x06\x05bench");
    std::fs::write(&rust, bytes).unwrap();
    let plugins = [
        ("rust-wait-for-callback", rust),
        (
            "python-sign-and-forward",
            built(&PYTHON, "python-sign-and-forward").to_owned(),
        ),
        (
            "js-sign-and-forward",
            built(&JS, "js-sign-and-forward").to_owned(),
        ),
        (
            "c-sign-and-forward",
            built(&C, "c-sign-and-forward").to_owned(),
        ),
    ];
    let cold = start_time(None, false).await;
    let warm = start_time(None, true).await;
    eprintln!("daemon start with the built-in plugins only: {cold:.2?} fresh, {warm:.2?} cached");
    eprintln!(
        "| plugin | component bytes | extra start time, compiled | extra start time, cached | one execution (mean of {CALLS}) |"
    );
    eprintln!("|---|---|---|---|---|");
    for (name, wasm) in &plugins {
        let bytes = std::fs::metadata(wasm).unwrap().len();
        let compiled = start_time(Some((name, wasm)), false)
            .await
            .saturating_sub(cold);
        let cached = start_time(Some((name, wasm)), true)
            .await
            .saturating_sub(warm);
        let call = call_time(name, wasm, CALLS).await;
        eprintln!("| {name} | {bytes} | {compiled:.2?} | {cached:.2?} | {call:.2?} |");
    }
}

/// How long starting a daemon takes (`Daemon::open` and a token), with one
/// extra plugin if given, on a fresh data dir or (`reopen`) on one a daemon
/// with the same config started on before. The best of three, since other
/// work on the machine only ever adds time; each daemon is stopped again,
/// which also releases its engine.
async fn start_time(plugin: Option<(&str, &Path)>, reopen: bool) -> Duration {
    // The cache in the data dir, not the test run's shared one: this
    // measures what compiling costs.
    let config = |dir: &Path| {
        let mut config = match plugin {
            Some((name, wasm)) => config_with(name, wasm),
            None => Config::default(),
        };
        config.compiled_cache_dir = Some(dir.join("cache"));
        config
    };
    let reused = tempfile::tempdir().unwrap();
    if reopen {
        TestDaemon::start(config(reused.path()), reused.path())
            .await
            .stop()
            .await;
    }
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let fresh = tempfile::tempdir().unwrap();
        let dir = if reopen { reused.path() } else { fresh.path() };
        let started = Instant::now();
        let daemon = TestDaemon::start(config(dir), dir).await;
        best = best.min(started.elapsed());
        daemon.stop().await;
    }
    best
}

/// Mean wall time from starting an execution of `plugin` (no config, no
/// input) until it has failed, over `calls` sequential executions.
async fn call_time(plugin: &str, wasm: &Path, calls: u32) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(config_with(plugin, wasm), dir.path()).await;
    let mut total = Duration::ZERO;
    for _ in 0..calls {
        let started = Instant::now();
        let id = daemon.start_execution(json!({"plugin": plugin})).await;
        while daemon.execution(&id).await["state"] != "failed" {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        total += started.elapsed();
    }
    daemon.stop().await;
    total / calls
}

fn config_with(plugin: &str, wasm: &Path) -> Config {
    Config::from_toml(&format!(
        "[plugins.{plugin}]\npath = \"{}\"\n",
        wasm.display()
    ))
    .unwrap()
}
