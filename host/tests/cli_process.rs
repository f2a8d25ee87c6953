//! The real `stephost` binary as an operator runs it (docs/operations.md,
//! docs/configuration.md): a second Ctrl-C exits 130, `--log-format json`
//! logs one JSON object per line, and `STEPHOST_CONFIG` names the config
//! file whose settings the flags override.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Process, client, create_token, free_port, wait_state, write_config};
use serde_json::{Value, json};
use stephost_tests::Partner;

/// Starts `stephost` with `args` and `env`; stderr goes to `log`.
fn spawn(args: &[&str], env: &[(&str, &str)], log: &Path, port: std::net::SocketAddr) -> Process {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(BIN)
        .args(args)
        .env_remove("STEPHOST_CONFIG")
        .env("STEPHOST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn stephost");
    Process {
        child,
        base: format!("http://{port}"),
    }
}

fn signal(process: &Process, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &process.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits until the log file holds `needle`.
async fn wait_for_log(log: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_execution(base: &str, token: &str, body: Value) -> String {
    let resp = client()
        .post(format!("{base}/v1/executions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_second_ctrl_c_exits_at_once_with_130() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data);
    let config = write_config(
        dir.path(),
        "shutdown_grace_ms = 30000\negress_allow = [\"127.0.0.0/8\"]\n",
    );
    let port = free_port();
    let log = dir.path().join("daemon.log");
    // The step's request hangs far beyond the test: the graceful stop
    // would wait out its 30 s grace period.
    let partner = Partner::start(|_| async {
        tokio::time::sleep(Duration::from_secs(120)).await;
        (202, json!({}))
    })
    .await;
    let listen = port.to_string();
    let mut daemon = spawn(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &[],
        &log,
        port,
    );
    daemon.wait_healthy(Duration::from_secs(60)).await;
    start_execution(
        &daemon.base,
        &token,
        json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
    )
    .await;
    partner.wait_for_requests(1).await;

    signal(&daemon, "INT");
    // The daemon took the first Ctrl-C as a graceful stop.
    wait_for_log(&log, "shutting down gracefully").await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the first Ctrl-C waits for the step in flight"
    );
    let second = Instant::now();
    signal(&daemon, "INT");
    let status = daemon
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("a second Ctrl-C exits at once");
    // "At once" against a step that waits for its partner for minutes.
    assert!(second.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data);
    let port = free_port();
    let log = dir.path().join("daemon.log");
    let listen = port.to_string();
    let mut daemon = spawn(
        &[
            "--log-format",
            "json",
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &[],
        &log,
        port,
    );
    daemon.wait_healthy(Duration::from_secs(60)).await;
    let id = start_execution(
        &daemon.base,
        &token,
        json!({"plugin": "echo", "input": {"n": 1}}),
    )
    .await;
    wait_state(&daemon.base, &token, &id, "completed").await;
    signal(&daemon, "TERM");
    let status = daemon.wait_exit(Duration::from_secs(15)).await.unwrap();
    assert_eq!(status.code(), Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    let mut messages = Vec::new();
    for line in &lines {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(value.is_object(), "{line}");
        assert!(value["level"].is_string(), "{line}");
        messages.push(
            value["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert!(
        messages.iter().any(|m| m == "stephost serving"),
        "{messages:?}"
    );
}

#[tokio::test]
async fn stephost_config_names_the_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data);
    let partner = Partner::accepting().await;
    let file_port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "listen = \"{file_port}\"\npublic_url = \"https://from-the-file.example\"\ndata_dir = \"{}\"\negress_allow = [\"127.0.0.0/8\"]\n",
            data.display()
        ),
    );
    let log = dir.path().join("daemon.log");
    let env = [("STEPHOST_CONFIG", config.to_str().unwrap())];
    let wait_body =
        || json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}});

    // The file alone: its listen address, data dir (the token is there),
    // egress range (the partner on loopback) and public URL.
    let mut daemon = spawn(&["serve"], &env, &log, file_port);
    daemon.wait_healthy(Duration::from_secs(60)).await;
    let id = start_execution(&daemon.base, &token, wait_body()).await;
    wait_state(&daemon.base, &token, &id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    assert!(
        url.starts_with("https://from-the-file.example/v1/callbacks/"),
        "{url}"
    );
    signal(&daemon, "TERM");
    assert_eq!(
        daemon
            .wait_exit(Duration::from_secs(15))
            .await
            .unwrap()
            .code(),
        Some(0)
    );

    // Flags beat the file.
    let flag_port = free_port();
    let listen = flag_port.to_string();
    let mut daemon = spawn(
        &[
            "serve",
            "--listen",
            &listen,
            "--public-url",
            "https://from-the-flag.example",
        ],
        &env,
        &log,
        flag_port,
    );
    daemon.wait_healthy(Duration::from_secs(60)).await;
    let refused = client()
        .get(format!("http://{file_port}/healthz"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(refused.is_err(), "nothing listens on the file's address");
    let id = start_execution(&daemon.base, &token, wait_body()).await;
    wait_state(&daemon.base, &token, &id, "suspended").await;
    let url = partner.wait_for_requests(2).await[1].callback_url();
    assert!(
        url.starts_with("https://from-the-flag.example/v1/callbacks/"),
        "{url}"
    );
    signal(&daemon, "TERM");
    assert_eq!(
        daemon
            .wait_exit(Duration::from_secs(15))
            .await
            .unwrap()
            .code(),
        Some(0)
    );
}

#[tokio::test]
async fn listening_on_every_address_without_public_url_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let port = free_port().port();
    let any = format!("0.0.0.0:{port}");
    let data = dir.path().join("data");
    let mut daemon = spawn(
        &[
            "serve",
            "--listen",
            &any,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
        &log,
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    daemon.wait_healthy(Duration::from_secs(60)).await;
    wait_for_log(&log, "listening on every address without public_url").await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("http://0.0.0.0:{port}")), "{text}");
    daemon.term();
    daemon.wait_exit(Duration::from_secs(15)).await.unwrap();
}
