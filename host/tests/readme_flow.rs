//! The README's "Try it" section, done by the real binary as a new user
//! would: `serve` with its embedded defaults (data in `./stephost-data` of
//! the working directory, reference plugins built in), the admin token its
//! first start wrote, `echo`, then the `wait-for-callback` round trip and
//! its documented answers. And a restart that is a crash: what
//! was acknowledged before a SIGKILL is there after it, and the step that
//! was in flight runs again with the same callback URL.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Process, client, create_token, free_port, post, wait_state, write_config};
use serde_json::{Value, json};
use stephost_tests::Partner;

async fn get(base: &str, token: &str, path: &str) -> (u16, Value) {
    let resp = client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn callback(url: &str, body: &str) -> (u16, Value) {
    let resp = client()
        .post(url)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_flow_works_with_the_embedded_defaults() {
    let cwd = tempfile::tempdir().unwrap();

    // The README's `serve --egress-allow 127.0.0.0/8`; only the listen
    // address differs, so the test cannot collide with a daemon on 8080.
    let address = free_port();
    let log = std::fs::File::create(cwd.path().join("daemon.log")).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--egress-allow", "127.0.0.0/8", "--listen"])
        .arg(address.to_string())
        .current_dir(cwd.path())
        .env_remove("STEPHOST_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Process {
        child,
        base: format!("http://{address}"),
    };
    daemon.wait_healthy(Duration::from_secs(60)).await;
    let base = daemon.base.clone();
    assert!(
        cwd.path().join("stephost-data").is_dir(),
        "the default data dir is ./stephost-data"
    );
    // The README's `export TOKEN=$(cat stephost-data/first-admin-token)`.
    let token = std::fs::read_to_string(cwd.path().join("stephost-data/first-admin-token"))
        .expect("the first start wrote an admin token")
        .trim()
        .to_owned();
    assert!(token.starts_with("sht_"), "{token}");

    let (status, started) = post(
        &base,
        &token,
        "/v1/executions",
        json!({"plugin": "echo", "input": {"order": 42}}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap();
    let exec = wait_state(&base, &token, id, "completed").await;
    assert_eq!(exec["output"], json!({"order": 42}));
    assert!(exec["status_log"].is_array());

    let partner = Partner::accepting().await;
    let (status, started) = post(
        &base,
        &token,
        "/v1/executions",
        json!({"plugin": "wait-for-callback", "config": {"url": format!("{}/orders", partner.base)}, "input": {"order": 42}}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap();
    wait_state(&base, &token, id, "suspended").await;
    let sent = partner.wait_for_requests(1).await;
    assert_eq!(sent[0].json(), json!({"order": 42}));
    let url = sent[0].callback_url();
    assert!(
        url.starts_with(&format!("{base}/v1/callbacks/")) && url.contains("?secret="),
        "{url}"
    );
    let (status, answer) = callback(&url, r#"{"approved": true}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"accepted": true, "delivered": true, "execution_state": "completed"})
    );
    let exec = wait_state(&base, &token, id, "completed").await;
    assert_eq!(exec["output"], json!({"approved": true}));

    // The documented answers around it.
    let (status, _) = callback(&url, r#"{"approved": false}"#).await;
    assert_eq!(status, 409, "a second callback");
    let unknown = url.replacen(
        url.split("/v1/callbacks/")
            .nth(1)
            .unwrap()
            .split('?')
            .next()
            .unwrap(),
        "0190d6c6-0000-7000-8000-000000000000",
        1,
    );
    let (status, _) = callback(&unknown, "{}").await;
    assert_eq!(status, 404, "an unknown id");
    let (status, _) = get(&base, "sht_wrong", &format!("/v1/executions/{id}")).await;
    assert_eq!(status, 401, "a wrong token");

    daemon.term();
    let status = daemon.wait_exit(Duration::from_secs(15)).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigkill_what_was_acknowledged_is_there_and_the_step_in_flight_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data);
    let config = write_config(dir.path(), "egress_allow = [\"127.0.0.0/8\"]\n");
    let address = free_port();
    let log = dir.path().join("daemon.log");
    let waiting_partner = Partner::accepting().await;
    let (held_partner, release) = stephost_tests::gated_partner((202, json!({}))).await;

    let mut daemon = Process::spawn(&config, &data, address, &log);
    daemon.wait_healthy(Duration::from_secs(60)).await;
    let base = daemon.base.clone();
    let start = |url: String, n: u32| {
        let (base, token) = (base.clone(), token.clone());
        async move {
            let (status, body) = post(
                &base,
                &token,
                "/v1/executions",
                json!({"plugin": "wait-for-callback", "config": {"url": url}, "input": {"n": n}}),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    };
    // One waits on disk; one is in flight, its partner holding the request.
    let waiting = start(waiting_partner.base.clone(), 1).await;
    wait_state(&base, &token, &waiting, "suspended").await;
    let in_flight = start(held_partner.base.clone(), 2).await;
    let first_try = held_partner.wait_for_requests(1).await[0].clone();
    // Acknowledged (201) just before the kill; its step may or may not have
    // started.
    let echoed = {
        let (status, body) = post(
            &base,
            &token,
            "/v1/executions",
            json!({"plugin": "echo", "input": {"kept": true}}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    };

    daemon.kill();
    let mut daemon = Process::spawn(&config, &data, address, &log);
    daemon.wait_healthy(Duration::from_secs(60)).await;

    let exec = wait_state(&base, &token, &echoed, "completed").await;
    assert_eq!(exec["output"], json!({"kept": true}));

    // The interrupted step runs again: same step-run id, same callback URL.
    let second_try = held_partner.wait_for_requests(2).await[1].clone();
    assert_eq!(
        second_try.header("x-step-run-id"),
        first_try.header("x-step-run-id")
    );
    assert_eq!(second_try.callback_url(), first_try.callback_url());
    release.add_permits(2);
    wait_state(&base, &token, &in_flight, "suspended").await;
    let (status, body) = callback(&second_try.callback_url(), r#"{"n": 2}"#).await;
    assert_eq!(status, 200, "{body}");
    wait_state(&base, &token, &in_flight, "completed").await;

    // The one that waited on disk resumes on the URL handed out before.
    let url = waiting_partner.wait_for_requests(1).await[0].callback_url();
    let (status, body) = callback(&url, r#"{"n": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    let exec = wait_state(&base, &token, &waiting, "completed").await;
    assert_eq!(exec["output"], json!({"n": 1}));
    assert_eq!(waiting_partner.requests().len(), 1, "not run twice");

    daemon.term();
    assert_eq!(
        daemon
            .wait_exit(Duration::from_secs(15))
            .await
            .unwrap()
            .code(),
        Some(0)
    );
}
