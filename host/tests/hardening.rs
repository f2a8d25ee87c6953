//! Regression tests of the hardening review that need the real binary in a
//! process of its own: its environment (proxy variables, `RUST_BACKTRACE`),
//! its exit, and a data dir on a file system that fills up.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, Process, client, create_token, free_port, post, wait_until, write_config};
use serde_json::{Value, json};
use stephost_tests::Partner;

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

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a `size` tmpfs (e.g. `24m`) at `path`. Needs root (CI and
    /// the project's machines run as root); elsewhere it says so.
    fn mount(path: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill the data dir's disk, which needs root \
             (or CAP_SYS_ADMIN): run it as root"
        );
        Self {
            path: path.to_owned(),
        }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// With the data dir's disk full, every request still gets an answer:
/// `201` while there is room, then `503` (`storage`), never a dropped
/// connection; and every acknowledged execution survives a crash and a
/// restart once there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_full_disk_every_request_gets_an_answer_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("fs"), "24m");
    let data = disk.path.join("data");
    let token = create_token(&data);
    let config = write_config(dir.path(), "");
    let port = free_port();
    let log = dir.path().join("log");
    let mut daemon = Process::spawn(&config, &data, port, &log);
    daemon.wait_healthy(Duration::from_secs(30)).await;

    // Eight clients, each until it has seen 50 refusals (the disk is full)
    // or sent 1,500 requests.
    let pad = "x".repeat(2_000);
    let clients = (0..8).map(|_| {
        let base = daemon.base.clone();
        let token = token.clone();
        let pad = pad.clone();
        tokio::spawn(async move {
            let (mut acknowledged, mut refused, mut unanswered) = (Vec::new(), 0, Vec::new());
            for _ in 0..1_500 {
                let sent = client()
                    .post(format!("{base}/v1/executions"))
                    .bearer_auth(&token)
                    .json(&json!({"plugin": "echo", "input": {"pad": pad}}))
                    .send()
                    .await;
                match sent {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let body: Value = resp.json().await.unwrap_or(Value::Null);
                        match status {
                            201 => acknowledged.push(body["id"].as_str().unwrap().to_owned()),
                            503 => {
                                assert_eq!(body["error"]["code"], "storage", "{body}");
                                refused += 1;
                            }
                            other => panic!("unexpected answer {other}: {body}"),
                        }
                    }
                    Err(e) => unanswered.push(e.to_string()),
                }
                if refused >= 50 {
                    break;
                }
            }
            (acknowledged, refused, unanswered)
        })
    });
    let (mut acknowledged, mut refused, mut unanswered) = (Vec::new(), 0, Vec::new());
    for c in clients {
        let (a, r, u) = c.await.unwrap();
        acknowledged.extend(a);
        refused += r;
        unanswered.extend(u);
    }
    assert!(
        unanswered.is_empty(),
        "{} requests got no answer, e.g. {:?}",
        unanswered.len(),
        unanswered.first()
    );
    assert!(refused > 0, "the disk never filled up");
    assert!(!acknowledged.is_empty());
    let health = client()
        .get(format!("{}/healthz", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the daemon still serves");

    // A crash, room again, a restart: everything acknowledged is there.
    daemon.kill();
    disk.resize("64m");
    let mut daemon = Process::spawn(&config, &data, port, &log);
    daemon.wait_healthy(Duration::from_secs(60)).await;
    for id in &acknowledged {
        let exec = wait_until(&daemon.base, &token, id, |e| e["state"] == "completed").await;
        assert_eq!(exec["output"]["pad"], pad.as_str());
    }
    eprintln!(
        "full disk: {} acknowledged, {refused} refused with 503, none unanswered",
        acknowledged.len()
    );
}
