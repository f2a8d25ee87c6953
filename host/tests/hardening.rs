//! Regression tests of the hardening review that need the real binary in a
//! process of its own: its environment (proxy variables, `RUST_BACKTRACE`),
//! its exit, and a data dir on a file system that fills up.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Process, client, create_token, free_port, write_config};
use serde_json::{Value, json};
use stephost_tests::Partner;

async fn post(base: &str, token: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls an execution until `done` says so (or the wait runs out).
async fn wait_until(base: &str, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let exec: Value = client()
            .get(format!("{base}/v1/executions/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&exec) {
            return exec;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {exec:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` in the daemon's environment
/// are never used: through a proxy the address policy would only see the
/// proxy's address. A plugin request and a result delivery to a refused
/// name are both denied, and the "proxy" hears nothing.
#[tokio::test]
async fn proxy_variables_in_the_environment_are_never_used() {
    let proxy = Partner::start_on([127, 0, 0, 2].into(), |_| async {
        (200, json!({"via": "proxy"}))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data);
    // The proxy's address is allowed, as an operator who set the variable
    // would have it; localhost (127.0.0.1, ::1) is not.
    let config = write_config(dir.path(), "egress_allow = [\"127.0.0.2/32\"]\n");
    let env = [
        ("HTTP_PROXY", proxy.base.as_str()),
        ("http_proxy", proxy.base.as_str()),
        ("HTTPS_PROXY", proxy.base.as_str()),
        ("ALL_PROXY", proxy.base.as_str()),
    ];
    let port = free_port();
    let mut daemon = Process::spawn_with_env(&config, &data, port, &dir.path().join("log"), &env);
    daemon.wait_healthy(Duration::from_secs(30)).await;

    let (status, body) = post(
        &daemon.base,
        &token,
        "/v1/executions",
        json!({
            "plugin": "http-task",
            "config": {"url": "http://localhost:9/secret", "method": "GET"},
            "callback_url": "http://localhost:9/results",
        }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let exec = wait_until(&daemon.base, &token, &id, |e| {
        e["state"] == "failed"
            && e["delivery"]["attempts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(exec["error"]["code"], "egress-denied", "{exec:#}");
    let attempt = &exec["delivery"]["attempts"][0];
    assert!(
        attempt["error"].as_str().unwrap().contains("egress denied"),
        "{attempt}"
    );
    assert!(
        proxy.requests().is_empty(),
        "the proxy from the environment was used: {:?}",
        proxy.requests()
    );
}

/// A startup error is one line and its causes, even with `RUST_BACKTRACE`
/// set; the backtrace comes only with `--debug`.
#[test]
fn startup_errors_are_one_clear_line_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "listne = \"127.0.0.1:1\"\n");
    let run = |debug: bool| {
        let mut cmd = Command::new(BIN);
        if debug {
            cmd.arg("--debug");
        }
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_BACKTRACE", "1")
            .env("STEPHOST_LOG", "warn")
            .output()
            .expect("run stephost serve")
    };

    let out = run(false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: invalid config file") && stderr.contains("listne"),
        "{stderr}"
    );
    assert!(
        !stderr.to_lowercase().contains("backtrace"),
        "no backtrace without --debug: {stderr}"
    );
    assert!(
        !stderr.lines().any(|l| l.trim_start().starts_with("0: ")),
        "no stack frames: {stderr}"
    );

    let out = run(true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listne") && stderr.contains("Stack backtrace"),
        "--debug shows the backtrace: {stderr}"
    );
}
