//! The README's "Try it" section run as written: its shell blocks, taken
//! from README.md itself, in a fresh directory, by bash. The blocks marked
//! `# terminal 1` and `# terminal 2` run in the background (the daemon and
//! the partner); the others run in order, like a reader pasting them into
//! a third terminal. Only what cannot be the same here changes: `cargo run
//! -p stephost --` is the binary cargo built for this test, and the two
//! addresses are free ones, so the test cannot collide with a daemon on
//! 8080.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Process, free_port};

/// The shell blocks of the README's "Try it" section.
fn try_it_blocks() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Try it\n")
        .nth(1)
        .expect("README.md has a \"Try it\" section");
    let section = section.split("\n## ").next().unwrap();
    section
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_try_it_commands_run_as_written() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("this test runs the README's curl commands: install curl (apt-get install curl)");
    }
    let cwd = tempfile::tempdir().unwrap();
    let (daemon_at, partner_at) = (free_port(), free_port());
    let adapt = |block: &str| {
        block
            .replace("cargo run -p stephost --", BIN)
            .replace("localhost:8080", &daemon_at.to_string())
            .replace("127.0.0.1:9000", &partner_at.to_string())
    };
    let blocks = try_it_blocks();
    let background = |marker: &str| {
        let block = blocks
            .iter()
            .find(|b| b.starts_with(marker))
            .unwrap_or_else(|| panic!("a block starting with {marker:?}"));
        adapt(block)
    };
    let spawn = |script: String, log: &str| {
        let log = std::fs::File::create(cwd.path().join(log)).unwrap();
        Command::new("bash")
            .args(["-c", &format!("exec {}", script.trim())])
            .current_dir(cwd.path())
            .env_remove("STEPHOST_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    };

    let serve = background("# terminal 1");
    let serve = serve
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .to_owned();
    let child = spawn(format!("{serve} --listen {daemon_at}"), "daemon.log");
    let mut daemon = Process {
        child,
        base: format!("http://{daemon_at}"),
    };
    let partner_line = background("# terminal 2");
    let partner_line = partner_line
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .to_owned();
    let mut partner = spawn(
        format!("{partner_line} --listen {partner_at}"),
        "partner.log",
    );
    daemon.wait_healthy(Duration::from_secs(60)).await;

    // The third terminal: every other block, in order, in one shell.
    let script: Vec<String> = blocks
        .iter()
        .filter(|b| !b.starts_with("# terminal"))
        .map(|b| adapt(b))
        .collect();
    assert!(script.len() >= 2, "{script:?}");
    let script = format!("set -euo pipefail\n{}", script.join("\n"));
    let run = tokio::task::spawn_blocking({
        let cwd = cwd.path().to_owned();
        move || {
            Command::new("bash")
                .args(["-c", &script])
                .current_dir(cwd)
                .env_remove("TOKEN")
                .output()
                .unwrap()
        }
    });
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the commands finish")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let logs = || {
        let read = |f: &str| std::fs::read_to_string(cwd.path().join(f)).unwrap_or_default();
        format!(
            "stdout:\n{stdout}\nstderr:\n{}\npartner:\n{}\ndaemon:\n{}",
            String::from_utf8_lossy(&out.stderr),
            read("partner.log"),
            read("daemon.log")
        )
    };
    assert!(out.status.success(), "{}", logs());

    // Each `curl … /v1/executions/$ID` printed one execution, completed.
    // (curl prints each answer as is: no newline between them.)
    let shown: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {}", logs()));
    assert_eq!(shown.len(), 2, "{}", logs());
    assert_eq!(shown[0]["state"], "completed", "{}", logs());
    assert_eq!(shown[0]["output"], serde_json::json!({"order": 42}));
    assert_eq!(shown[1]["state"], "completed", "{}", logs());
    assert_eq!(shown[1]["output"], serde_json::json!({"approved": true}));

    // The partner printed what it received and its callback's answer.
    let printed = std::fs::read_to_string(cwd.path().join("partner.log")).unwrap();
    let events: Vec<serde_json::Value> = printed
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let received = events.iter().find_map(|e| e.get("received")).unwrap();
    assert_eq!(received["path"], "/orders", "{printed}");
    let called = events.iter().find_map(|e| e.get("called_back")).unwrap();
    // Sent at once, the callback may beat the step's suspension: then it
    // is stored (202) and delivered when the step waits, else applied (200).
    let status = called["status"].as_u64().unwrap();
    assert!([200, 202].contains(&status), "{printed}");
    assert_eq!(called["answer"]["accepted"], true, "{printed}");

    let _ = partner.kill();
    let _ = partner.wait();
    daemon.term();
    let status = daemon.wait_exit(Duration::from_secs(15)).await.unwrap();
    assert_eq!(status.code(), Some(0));

    // Whatever the daemon wrote while it served is its owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mut dirs = vec![cwd.path().join("stephost-data")];
        let mut files = 0;
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o077, 0, "{} is {:o}", path.display(), mode & 0o777);
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files += 1;
                }
            }
        }
        assert!(files > 3, "{files} files");
    }
}
