//! `stephost partner`, the partner to try steps with, in-process against
//! the real daemon: it finds the callback URL a reference step sends and
//! calls back with the headers it was told to send or to echo.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser as _;
use serde_json::{Value, json};
use stephost::cli::partner::{self, PartnerArgs};
use stephost_tests::TestDaemon;

/// Parses `stephost partner ARGS` on a free loopback port.
fn args(extra: &[&str]) -> PartnerArgs {
    let argv = [
        &["stephost", "partner", "--listen", "127.0.0.1:0"][..],
        extra,
    ]
    .concat();
    match stephost::cli::Cli::try_parse_from(argv).unwrap().command {
        stephost::cli::Command::Partner(args) => args,
        other => panic!("{other:?}"),
    }
}

/// Starts the partner; returns its base URL, what it printed, and the
/// sender that stops it.
async fn start(
    args: PartnerArgs,
) -> (
    String,
    Arc<Mutex<Vec<Value>>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let printed = Arc::new(Mutex::new(Vec::new()));
    let sink = printed.clone();
    let emit: partner::Emit = Arc::new(move |event| sink.lock().unwrap().push(event));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(partner::serve(listener, args, emit, async move {
        let _ = stopped.await;
    }));
    (base, printed, stop)
}

async fn wait_state(daemon: &TestDaemon, id: &str, state: &str) -> Value {
    for _ in 0..500 {
        let (_, exec) = daemon
            .call(
                reqwest::Method::GET,
                &format!("/v1/executions/{id}"),
                Some(&daemon.token),
            )
            .await;
        if exec["state"] == state {
            return exec;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} never reached {state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partner_calls_back_a_link_step_with_the_headers_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let token = daemon.token("partner", &["callbacks:send"]).await;
    let bearer = format!("Authorization: Bearer {token}");
    let (base, printed, stop) = start(args(&[
        "--callback-header",
        "X-Link-Status: Ok",
        "--callback-header",
        &bearer,
        "--echo-header",
        "X-Link-Correlation-Id",
        "--callback-body",
        r#"{"validated": true}"#,
    ]))
    .await;

    let (status, started) = daemon
        .post(
            "/v1/executions",
            json!({"plugin": "link-async-http", "config": {"url": format!("{base}/validate"), "async": true}, "input": {"order": 7}}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let exec = wait_state(&daemon, started["id"].as_str().unwrap(), "completed").await;
    assert_eq!(exec["output"], json!({"validated": true}), "{exec:#}");

    let printed = printed.lock().unwrap().clone();
    let received = printed.iter().find_map(|e| e.get("received")).unwrap();
    assert_eq!(received["path"], "/validate");
    assert!(
        received["callback_url"]
            .as_str()
            .unwrap()
            .contains("/v1/callbacks/"),
        "{received}"
    );
    let called = printed.iter().find_map(|e| e.get("called_back")).unwrap();
    // At once: the callback may beat the step's suspension (stored, 202)
    // or find it waiting (200); either way the execution completed above.
    assert!(
        [200, 202].contains(&called["status"].as_u64().unwrap())
            && called["answer"]["accepted"] == true,
        "{called}"
    );
    let _ = stop.send(());
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_partner_prints_the_callback_for_the_operator_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (base, printed, stop) = start(args(&["--manual"])).await;
    let (status, started) = daemon
        .post(
            "/v1/executions",
            json!({"plugin": "wait-for-callback", "config": {"url": format!("{base}/orders")}, "input": {"order": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap();
    let exec = wait_state(&daemon, id, "suspended").await;
    let hint = printed
        .lock()
        .unwrap()
        .iter()
        .find_map(|e| e.get("call_back_by_hand").cloned())
        .unwrap();
    let hint = hint.as_str().unwrap();
    assert!(
        hint.starts_with("curl -s -XPOST 'http://") && hint.contains("/v1/callbacks/"),
        "{hint}"
    );
    // The wait the execution shows names the same callback.
    let waited_on = exec["wait"]["correlation_id"].as_str().unwrap();
    assert!(hint.contains(waited_on), "{hint} / {exec:#}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        wait_state(&daemon, id, "suspended").await["state"],
        "suspended"
    );
    let _ = stop.send(());
    daemon.stop().await;
}
