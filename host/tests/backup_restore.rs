//! docs/deployment.md, "Backup and restore", done as written: a copy of a
//! stopped daemon's data dir (`tar -cpf`), the original lost, the copy
//! unpacked elsewhere (`tar -xpf`); the daemon started on it resumes the
//! suspended execution when the partner calls back on the URL it was given
//! before the backup.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Process, create_token, free_port, post, wait_state, write_config};
use serde_json::json;
use stephost_tests::Partner;

fn tar(args: &[&str], cwd: &std::path::Path) {
    let status = Command::new("tar")
        .args(args)
        .current_dir(cwd)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_stopped_data_dir_restores_a_suspended_execution_that_then_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("stephost");
    let token = create_token(&data);
    let config = write_config(dir.path(), "egress_allow = [\"127.0.0.0/8\"]\n");
    let address = free_port();
    let log = dir.path().join("daemon.log");
    let partner = Partner::accepting().await;

    let mut daemon = Process::spawn(&config, &data, address, &log);
    daemon.wait_healthy(Duration::from_secs(60)).await;
    let base = daemon.base.clone();
    let (status, started) = post(
        &base,
        &token,
        "/v1/executions",
        json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {"order": 42}}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    wait_state(&base, &token, &id, "suspended").await;
    let callback_url = partner.wait_for_requests(1).await[0].callback_url();

    // The backup: stop, copy the whole data dir, (start again). Here the
    // original is then lost.
    daemon.term();
    assert_eq!(
        daemon
            .wait_exit(Duration::from_secs(15))
            .await
            .unwrap()
            .code(),
        Some(0)
    );
    let backup = dir.path().join("backup.tar");
    tar(&["-cpf", backup.to_str().unwrap(), "stephost"], dir.path());
    std::fs::remove_dir_all(&data).unwrap();

    // The restore, onto another disk (another directory here).
    let restored_root = dir.path().join("restored");
    std::fs::create_dir(&restored_root).unwrap();
    tar(&["-xpf", backup.to_str().unwrap()], &restored_root);
    let restored = restored_root.join("stephost");
    let mut daemon = Process::spawn(&config, &restored, address, &log);
    daemon.wait_healthy(Duration::from_secs(60)).await;

    let exec = wait_state(&base, &token, &id, "suspended").await;
    assert_eq!(exec["wait"]["for"], "callback", "{exec:#}");
    let resp = common::client()
        .post(&callback_url)
        .body(r#"{"approved": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the callback URL from before the backup"
    );
    let exec = wait_state(&base, &token, &id, "completed").await;
    assert_eq!(exec["output"], json!({"approved": true}));

    daemon.term();
    daemon.wait_exit(Duration::from_secs(15)).await.unwrap();
}
