//! Retention and `DELETE /v1/executions/{id}` against the real daemon:
//! ended executions go with everything that is theirs, waiting ones never
//! do, and no callback is lost to a sweep running beside it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stephost::Config;
use stephost::config::RetentionConfig;
use stephost_tests::{Partner, TestDaemon, WAIT, call_back};

/// `DELETE {path}` with `token` (none: no header); status and JSON body.
async fn delete(daemon: &TestDaemon, path: &str, token: Option<&str>) -> (u16, Value) {
    daemon.call(reqwest::Method::DELETE, path, token).await
}

/// Polls until `GET /v1/executions/{id}` answers 404.
async fn wait_until_gone(daemon: &TestDaemon, id: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, exec) = daemon.get(&format!("/v1/executions/{id}")).await;
        if status == 404 {
            return;
        }
        assert!(Instant::now() < deadline, "never removed: {exec:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a `wait-for-callback` execution that waits `timeout_ms`; its id
/// and the callback URL the partner was given, once it is suspended.
async fn waiting(daemon: &TestDaemon, partner: &Partner, timeout_ms: u64) -> (String, String) {
    let before = partner.requests().len();
    let id = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base, "timeout_ms": timeout_ms},
            "input": {"id": before},
        }))
        .await;
    let requests = partner.wait_for_requests(before + 1).await;
    let url = requests
        .iter()
        .find(|r| r.json()["id"] == json!(before))
        .expect("the partner was called")
        .callback_url();
    daemon.wait_for(&id, "suspended").await;
    (id, url)
}

async fn echo(daemon: &TestDaemon) -> String {
    let id = daemon
        .start_execution(json!({"plugin": "echo", "input": {"n": 1}}))
        .await;
    daemon.wait_for(&id, "completed").await;
    id
}

/// Completed executions go once `completed_ms` has passed; failed ones
/// are kept (`failed_ms = 0`), and a suspended one is never touched however
/// old it is, until it completes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_ended_executions_and_never_a_waiting_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        retention: RetentionConfig {
            completed_ms: 300,
            failed_ms: 0,
        },
        ..Config::default()
    };
    let daemon = TestDaemon::start(config, dir.path()).await;
    let partner = Partner::accepting().await;

    let (waiting_id, url) = waiting(&daemon, &partner, 3_600_000).await;
    let (timed_out, _) = waiting(&daemon, &partner, 200).await;
    daemon.wait_for(&timed_out, "failed").await;
    let done = echo(&daemon).await;

    wait_until_gone(&daemon, &done).await;
    // Several sweeps later, the others are all still there.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(daemon.execution(&waiting_id).await["state"], "suspended");
    assert_eq!(daemon.execution(&timed_out).await["state"], "failed");

    let (status, body) = call_back(&url, r#"{"approved": true}"#).await;
    assert_eq!(status, 200, "{body}");
    wait_until_gone(&daemon, &waiting_id).await;
    // Its callback went with it.
    let (status, _) = call_back(&url, r#"{"approved": true}"#).await;
    assert_eq!(status, 404);

    let metrics = daemon.metrics().await;
    assert_eq!(metrics["stephost_executions_removed_total"], 2.0);
    assert_eq!(metrics[r#"stephost_executions{state="completed"}"#], 0.0);
    assert_eq!(metrics[r#"stephost_executions{state="failed"}"#], 1.0);
    daemon.stop().await;
}

/// `DELETE` takes an ended execution at once; one still waiting is
/// refused, an unknown one is 404, and it takes the `admin` permission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_an_ended_execution_and_refuses_a_waiting_one() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let partner = Partner::accepting().await;
    let token = daemon.token.clone();
    let admin = Some(token.as_str());

    let (waiting_id, url) = waiting(&daemon, &partner, 3_600_000).await;
    let (status, body) = delete(&daemon, &format!("/v1/executions/{waiting_id}"), admin).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "wrong-state");
    assert_eq!(
        body["error"]["message"],
        "cannot delete an execution that is suspended"
    );
    assert_eq!(daemon.execution(&waiting_id).await["state"], "suspended");

    let done = echo(&daemon).await;
    let path = format!("/v1/executions/{done}");
    let (status, _) = delete(&daemon, &path, None).await;
    assert_eq!(status, 401);
    let (status, body) = delete(&daemon, &path, admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": done, "deleted": true}));
    assert_eq!(daemon.get(&path).await.0, 404);
    let (status, body) = delete(&daemon, &path, admin).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        delete(&daemon, "/v1/executions/not-an-id", admin).await.0,
        404
    );

    // The waiting one is unharmed: its callback still resumes it.
    let (status, body) = call_back(&url, r#"{"approved": true}"#).await;
    assert_eq!(status, 200, "{body}");
    daemon.wait_for(&waiting_id, "completed").await;
    daemon.stop().await;
}

/// Callbacks arriving all at once while retention removes whatever
/// completes: every callback is answered as delivered, every execution
/// completes exactly once, and each is then removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_beside_concurrent_callbacks_loses_none() {
    const N: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        retention: RetentionConfig {
            completed_ms: 1,
            failed_ms: 1,
        },
        ..Config::default()
    };
    let daemon = TestDaemon::start(config, dir.path()).await;
    let partner = Partner::accepting().await;
    let mut waits = Vec::new();
    for _ in 0..N {
        waits.push(waiting(&daemon, &partner, 3_600_000).await);
    }
    // One that completes first, so a sweep is removing while the
    // callbacks come in.
    echo(&daemon).await;
    let calls: Vec<_> = waits
        .iter()
        .map(|(_, url)| {
            let url = url.clone();
            tokio::spawn(async move { call_back(&url, r#"{"approved": true}"#).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["execution_state"], "completed", "{body}");
    }
    for (id, _) in &waits {
        wait_until_gone(&daemon, id).await;
    }
    let metrics = daemon.metrics().await;
    assert_eq!(
        metrics[r#"stephost_executions_ended_total{state="completed"}"#],
        (N + 1) as f64
    );
    assert_eq!(metrics["stephost_executions_removed_total"], (N + 1) as f64);
    assert_eq!(metrics[r#"stephost_executions{state="suspended"}"#], 0.0);
    daemon.stop().await;
}
