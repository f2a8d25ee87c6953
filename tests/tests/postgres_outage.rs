//! The database goes away under a running daemon and comes back: requests
//! that need it are answered `503` naming the database meanwhile (a
//! partner retries its callback, as it must on any 5xx), and once the
//! server is back the daemon reconnects by itself and nothing it
//! acknowledged is lost. A test binary of its own, so that stopping its
//! server stops nobody else's tests.

use std::time::{Duration, Instant};

use serde_json::json;
use stephost::Config;
use stephost::store::pg_testing::Cluster;
use stephost_tests::{Partner, TestDaemon, call_back, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_is_a_503_meanwhile_and_loses_nothing() {
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .unwrap()
        .expect("a private PostgreSQL server");
    let url = cluster.fresh_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let config = Config {
        store: Some(url),
        ..Config::default()
    };
    let daemon = TestDaemon::start(config, dir.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {"n": 1},
        }))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let callback = partner.wait_for_requests(1).await[0].callback_url();

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop_server().expect("stop the server");
        cluster
    })
    .await
    .unwrap();

    // Reads, starts and callbacks are refused with the reason, not hung.
    let (status, body) = daemon.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("PostgreSQL"), "{message}");
    let (status, body) = daemon
        .post("/v1/executions", json!({"plugin": "echo", "input": 1}))
        .await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = call_back(&callback, r#"{"during": "outage"}"#).await;
    assert_eq!(status, 503, "the partner is told to try again: {body}");

    tokio::task::spawn_blocking(move || {
        cluster.start_server().expect("start the server again");
        // Kept running until the test ends.
        std::mem::forget(cluster);
    })
    .await
    .unwrap();

    // The daemon reconnects by itself; the partner's retry resumes the
    // step it acknowledged nothing for yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call_back(&callback, r#"{"after": "outage"}"#).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "the daemon did not reconnect: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"after": "outage"}));
    let echo = daemon
        .start_execution(json!({"plugin": "echo", "input": 2}))
        .await;
    daemon.wait_for(&echo, "completed").await;
    let _ = client();
    daemon.stop().await;
}
