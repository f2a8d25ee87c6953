//! The same condition gives the same failure code in every SDK, end to
//! end: one probe plugin per language (`tests/plugins/code-probe/`: the
//! crate for Rust, `probe.py`, `probe.js` and `probe.c` for the others)
//! meets one condition per case and leaves it to its SDK to report, and
//! each language must give the codes of one table, `docs/errors.md`'s.
//!
//! The Python, JavaScript and C probes are built as an author would build
//! them: a project scaffolded by `stephost plugin new` (helper layer, WIT,
//! `build.sh`), with the probe as its step.

mod toolchains;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use stephost::Config;
use stephost::scaffold::{Lang, new_plugin};
use stephost_tests::{TestDaemon, closing_server, raw_server};

/// The largest response body the probe may receive.
const MAX_BODY: usize = 4096;

/// Where a case's request goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// No request.
    None,
    /// Granted, but link-local (the cloud metadata address): the daemon's
    /// address policy refuses it.
    Internal,
    /// Not in the probe's `allowed_hosts`.
    NotGranted,
    /// Answers with a body over `max_body_bytes`.
    Oversized,
    /// Closes every connection before answering.
    Closing,
    /// Answers `200` with a body that is not JSON.
    NotJson,
}

/// Every case: what the probe is told to do, where, and the code every
/// SDK must fail it with. `None` is the one code that differs by language
/// ([`uncaught`]).
const CASES: &[(&str, Target, Option<&str>)] = &[
    ("send", Target::Internal, Some("egress-denied")),
    ("send", Target::NotGranted, Some("egress-denied")),
    ("send", Target::Oversized, Some("body-too-large")),
    ("send", Target::Closing, Some("http-error")),
    ("parse-response", Target::NotJson, Some("invalid-json")),
    (
        "sign-with-ungranted-secret",
        Target::None,
        Some("signing-error"),
    ),
    ("unwritable-output", Target::None, Some("invalid-output")),
    (
        "resume-without-resume",
        Target::None,
        Some("unexpected-resume"),
    ),
    ("uncaught", Target::None, None),
];

/// The code of an uncaught error: a Rust panic or a C abort traps (a host
/// code), a Python or JavaScript exception is caught by the SDK.
fn uncaught(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust | Lang::C => "trap",
        Lang::Python | Lang::Js => "plugin-exception",
    }
}

/// The probe's sources.
fn probe_dir() -> PathBuf {
    toolchains::repo_root().join("tests/plugins/code-probe")
}

/// Scaffolds a project in `dir`, makes the probe its step, and builds it.
fn build_probe(lang: Lang, dir: &Path) -> PathBuf {
    let project = dir.join("code-probe");
    new_plugin(&project, "code-probe", lang).unwrap();
    let (probe, step) = match lang {
        Lang::Python => ("probe.py", "app.py"),
        Lang::Js => ("probe.js", "index.js"),
        Lang::C => ("probe.c", "step.c"),
        Lang::Rust => unreachable!("the Rust probe is built with the test plugins"),
    };
    std::fs::copy(probe_dir().join(probe), project.join(step)).unwrap();
    let script = project.join("build.sh");
    toolchains::run_build(Command::new(&script).current_dir(&project), &script)
}

/// A case as the assertions name it.
fn label(case: &str, target: Target) -> String {
    format!("{case} ({target:?})")
}

/// Runs every case on the probe in `wasm` and returns the code each
/// failed with, in the order of [`CASES`].
async fn codes(wasm: &Path) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        r#"
        [plugins.code-probe]
        path = "{}"
        allowed_hosts = ["http://127.0.0.1:*", "http://169.254.169.254:*"]
        max_body_bytes = {MAX_BODY}
        "#,
        wasm.display()
    ))
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;
    let body = format!("\"{}\"", "x".repeat(MAX_BODY * 2));
    let (oversized, _) = raw_server(Some(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )))
    .await;
    let (not_json, _) = raw_server(Some(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\nnot json"
            .to_owned(),
    ))
    .await;
    let (closing, _) = closing_server().await;
    let mut codes = Vec::new();
    for (case, target, _) in CASES {
        let url = match target {
            Target::None => String::new(),
            Target::Internal => "http://169.254.169.254/latest/meta-data/".to_owned(),
            Target::NotGranted => "http://192.0.2.1/".to_owned(),
            Target::Oversized => oversized.clone(),
            Target::Closing => closing.clone(),
            Target::NotJson => not_json.clone(),
        };
        let id = daemon
            .start_execution(json!({
                "plugin": "code-probe",
                "config": {"case": case, "url": url},
                "input": {},
            }))
            .await;
        let exec = daemon.wait_for(&id, "failed").await;
        let code = exec["error"]["code"].as_str().unwrap_or("(none)");
        codes.push((label(case, *target), code.to_owned()));
    }
    daemon.stop().await;
    codes
}

/// The codes `lang` must give, as [`codes`] lists them.
fn expected(lang: Lang) -> Vec<(String, String)> {
    CASES
        .iter()
        .map(|(case, target, code)| {
            let code = code.unwrap_or(uncaught(lang));
            (label(case, *target), code.to_owned())
        })
        .collect()
}

async fn check(lang: Lang, wasm: &Path) {
    assert_eq!(
        codes(wasm).await,
        expected(lang),
        "{lang}: the probe's codes (left) and every SDK's (right)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_reports_the_shared_codes() {
    let wasm = Path::new(env!("TEST_PLUGIN_DIR")).join("code_probe.wasm");
    check(Lang::Rust, &wasm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_reports_the_shared_codes() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = build_probe(Lang::Python, dir.path());
    check(Lang::Python, &wasm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_sdk_reports_the_shared_codes() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = build_probe(Lang::Js, dir.path());
    check(Lang::Js, &wasm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_sdk_reports_the_shared_codes() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = build_probe(Lang::C, dir.path());
    check(Lang::C, &wasm).await;
}
