//! The daemon on PostgreSQL (`store = "postgres://…"`), end to end: a real
//! PostgreSQL server of the test's own, the real daemon on port 0, the
//! reference plugins, partners on loopback. What the sled daemon's suites
//! check about executions, callbacks, timers, deliveries and operator
//! actions, checked once more with every record in the database — and that
//! a daemon with a fresh data dir carries on where another left off, which
//! only holds when nothing lives in the data dir.

use serde_json::{Value, json};
use stephost::Config;
use stephost::store::pg_testing;
use stephost_tests::{Partner, TestDaemon, call_back, events};

/// A config whose store is a new database of the test server.
async fn on_postgres() -> Config {
    Config {
        store: Some(pg_testing::database().await),
        ..Config::default()
    }
}

/// Starts a `wait-for-callback` execution and waits until it is suspended;
/// returns its id and the callback URL the partner got.
async fn suspended(daemon: &TestDaemon, partner: &Partner, extra: Value) -> (String, String) {
    let before = partner.requests().len();
    let mut body = json!({
        "plugin": "wait-for-callback",
        "config": {"url": partner.base},
        "input": {"n": before},
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    // 202 with a result delivery to make, 201 without.
    let (status, started) = daemon.post("/v1/executions", body).await;
    assert!(status == 201 || status == 202, "{status} {started}");
    let id = started["id"].as_str().unwrap().to_owned();
    daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(before + 1).await[before].callback_url();
    (id, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_timeouts_deliveries_and_operator_actions_work_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let results = Partner::accepting().await;
    let config = on_postgres().await;
    let daemon = TestDaemon::start(config, dir.path()).await;

    // A callback resumes the step; the result is delivered once, signed.
    let (id, url) = suspended(&daemon, &partner, json!({"callback_url": results.base})).await;
    let (status, body) = call_back(&url, r#"{"approved": true}"#).await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"approved": true}));
    assert_eq!(
        events(&exec),
        ["started", "suspended", "callback", "completed"]
    );
    let delivered = results.wait_for_requests(1).await;
    assert_eq!(delivered[0].json()["id"], id);
    assert!(delivered[0].header("webhook-id").is_some());
    // The same callback again changes nothing.
    let (status, body) = call_back(&url, r#"{"approved": false}"#).await;
    assert_ne!(status, 200, "a second callback must not resume: {body}");
    assert_eq!(
        daemon.execution(&id).await["output"],
        json!({"approved": true})
    );

    // A wait that nobody ends times out (a timer row, fired once).
    let operation = Partner::accepting().await;
    let timed = daemon
        .start_execution(json!({
            "plugin": "async-operation",
            "config": {"url": operation.base, "timeout_ms": 300},
            "input": {},
        }))
        .await;
    let exec = daemon.wait_for(&timed, "failed").await;
    assert_eq!(exec["error"]["code"], "callback-timeout");
    assert_eq!(events(&exec), ["started", "suspended", "timeout", "failed"]);

    // Cancel, then retry: the operator's actions are transitions too.
    let (waiting, old_url) = suspended(&daemon, &partner, json!({})).await;
    let (status, answer) = daemon
        .post(&format!("/v1/executions/{waiting}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        daemon.execution(&waiting).await["error"]["code"],
        "cancelled"
    );
    let (status, _) = call_back(&old_url, "{}").await;
    assert_eq!(status, 410, "a cancelled wait takes no callback");
    let before = partner.requests().len();
    let (status, answer) = daemon
        .post(&format!("/v1/executions/{waiting}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    daemon.wait_for(&waiting, "suspended").await;
    let new_url = partner.wait_for_requests(before + 1).await[before].callback_url();
    let (status, body) = call_back(&new_url, r#"{"second": true}"#).await;
    assert_eq!(status, 200, "{body}");
    daemon.wait_for(&waiting, "completed").await;

    // Listing and counting read the database's indexes.
    let (status, page) = daemon.get("/v1/executions?state=completed&limit=10").await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, [waiting.as_str(), id.as_str()], "newest first");
    let (_, counts) = daemon.get("/v1/executions/counts").await;
    assert_eq!(counts["by_state"]["completed"], 2, "{counts}");
    assert_eq!(counts["by_state"]["failed"], 1, "{counts}");
    daemon.stop().await;
}

/// Everything lives in the database: a daemon started with a new, empty
/// data dir takes a callback for an execution another daemon suspended
/// (same callback URL, same ticket key), and resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_a_fresh_data_dir_resumes_what_another_suspended() {
    let partner = Partner::accepting().await;
    let config = on_postgres().await;
    let first_dir = tempfile::tempdir().unwrap();
    let first = TestDaemon::start(config.clone(), first_dir.path()).await;
    let (id, url) = suspended(&first, &partner, json!({})).await;
    first.stop().await;
    drop(first_dir);

    let second_dir = tempfile::tempdir().unwrap();
    let second = TestDaemon::start(config, second_dir.path()).await;
    // The URL names the first daemon's address: send it to the second.
    let path = &url[url.find("/v1/callbacks/").unwrap()..];
    let (status, body) = call_back(&format!("{}{path}", second.base), r#"{"later": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    let exec = second.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"later": 1}));
    second.stop().await;
}

/// A store that cannot be opened stops the start with an error that names
/// the problem and the database, never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_cannot_open_its_database_says_why() {
    let url = pg_testing::database().await;
    let cluster = tokio::task::spawn_blocking(pg_testing::shared)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let open = |store: String, password_file: Option<std::path::PathBuf>| {
        let config = Config {
            store: Some(store),
            store_password_file: password_file,
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        async move {
            match stephost::Daemon::open(config).await {
                Ok(_) => panic!("the daemon opened"),
                Err(e) => format!("{e:#}"),
            }
        }
    };

    // The right database with the wrong password, from a password file.
    let name = url.rsplit('/').next().unwrap().to_owned();
    let without_password = url.replacen(&format!(":{}@", cluster.password()), "@", 1);
    assert_ne!(without_password, url, "the test URL carries its password");
    let file = dir.path().join("pw");
    std::fs::write(&file, "not-the-password\n").unwrap();
    let e = open(without_password.clone(), Some(file.clone())).await;
    assert!(e.contains("password") || e.contains("login"), "{e}");
    assert!(e.contains(&name) && !e.contains("not-the-password"), "{e}");

    // The right password from the file opens it.
    std::fs::write(&file, format!("{}\n", cluster.password())).unwrap();
    let config = Config {
        store: Some(without_password),
        store_password_file: Some(file),
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    stephost::Daemon::open(config)
        .await
        .expect("the password file's password logs in");

    // Nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = open(format!("postgres://app@127.0.0.1:{port}/x"), None).await;
    assert!(
        e.contains("cannot reach") || e.contains("unreachable"),
        "{e}"
    );
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");

    // A database that does not exist.
    let missing = url.replacen(&name, "no_such_database", 1);
    let e = open(missing, None).await;
    assert!(
        e.contains("no_such_database") && e.contains("does not exist"),
        "{e}"
    );
}
