//! `stephost migrate`: a sled daemon's state moved into PostgreSQL, and a
//! daemon on the database carrying on where the sled one stopped — its
//! suspended executions resumed by the callback URLs partners already
//! hold, its pending timeouts still pending, its ended executions and
//! tokens still there.

use serde_json::{Value, json};
use stephost::Config;
use stephost::store::pg_testing;
use stephost_tests::{Partner, TestDaemon, call_back};

/// Runs `stephost migrate` in this process; its exit code and printed
/// JSON, or the error it stopped with.
async fn migrate(args: &[&str]) -> Result<(i32, Value), String> {
    use clap::Parser as _;
    let argv = ["stephost", "migrate"].iter().chain(args).copied();
    let cli = stephost::cli::Cli::try_parse_from(argv).expect("arguments parse");
    let mut out = Vec::new();
    match stephost::cli::execute(cli.command, &mut out).await {
        Ok(code) => Ok((code, serde_json::from_slice(&out).unwrap())),
        Err(e) => Err(format!("{e:#}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_daemon_s_executions_carry_on_on_postgres() {
    let sled_dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let operation = Partner::accepting().await;
    let sled = TestDaemon::start_default(sled_dir.path()).await;
    let waiting = sled
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {"order": 1},
        }))
        .await;
    sled.wait_for(&waiting, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let timed = sled
        .start_execution(json!({
            "plugin": "async-operation",
            "config": {"url": operation.base, "timeout_ms": 3_600_000},
            "input": {},
        }))
        .await;
    sled.wait_for(&timed, "suspended").await;
    // Started with an Idempotency-Key: a retry after the move must still
    // find it.
    let keyed = |base: &str, token: &str| {
        stephost_tests::client()
            .post(format!("{base}/v1/executions"))
            .bearer_auth(token)
            .header("Idempotency-Key", "moved-key")
            .json(&json!({"plugin": "echo", "input": {"kept": true}}))
            .send()
    };
    let first = keyed(&sled.base, &sled.token).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let done = first["id"].as_str().unwrap().to_owned();
    sled.wait_for(&done, "completed").await;
    let old_token = sled.token.clone();

    // The password goes in a file, never on the command line.
    let url_db = pg_testing::database().await;
    let password = pg_testing::shared().password().to_owned();
    let bare = url_db.replacen(&format!(":{password}@"), "@", 1);
    let password_file = sled_dir.path().join("pg-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let pw = password_file.to_str().unwrap();
    let from = sled_dir.path().to_str().unwrap();
    let e = migrate(&["--from", from, "--to", &url_db])
        .await
        .unwrap_err();
    assert!(e.contains("--to carries a password"), "{e}");

    // A running daemon's data dir is refused, with the reason.
    let e = migrate(&["--from", from, "--to", &bare, "--to-password-file", pw])
        .await
        .unwrap_err();
    assert!(e.contains("in use by another stephost process"), "{e}");
    sled.stop().await;

    let (code, report) = migrate(&["--from", from, "--to", &bare, "--to-password-file", pw])
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(report["executions"], 3, "{report}");
    assert_eq!(report["new_executions"], 3, "{report}");
    assert!(
        report["timers"].as_u64().unwrap() >= 2,
        "two waits time out: {report}"
    );
    assert!(
        !report.to_string().contains(&password),
        "the report never shows the password"
    );
    // Run again (a migration cut short): nothing is written twice.
    let (_, again) = migrate(&["--from", from, "--to", &bare, "--to-password-file", pw])
        .await
        .unwrap();
    assert_eq!(again["new_executions"], 0, "{again}");

    let pg_dir = tempfile::tempdir().unwrap();
    let config = Config {
        store: Some(url_db.clone()),
        ..Config::default()
    };
    let pg = TestDaemon::start(config, pg_dir.path()).await;
    // The old token, the ended execution, the pending wait with its timer.
    let (status, exec) = pg
        .call(
            reqwest::Method::GET,
            &format!("/v1/executions/{done}"),
            Some(&old_token),
        )
        .await;
    assert_eq!(status, 200, "the sled daemon's token works: {exec}");
    assert_eq!(exec["output"], json!({"kept": true}));
    let exec = pg.execution(&timed).await;
    assert_eq!(exec["state"], "suspended");
    assert!(exec["waiting_until_ms"].as_u64().is_some());
    let (_, counts) = pg.get("/v1/executions/counts").await;
    assert_eq!(counts["by_state"]["suspended"], 2, "{counts}");
    assert_eq!(counts["by_state"]["completed"], 1, "{counts}");
    let (_, echo) = pg.get("/v1/executions/counts?workflow=echo").await;
    assert_eq!(echo["by_state"]["completed"], 1, "{echo}");
    let again = keyed(&pg.base, &old_token).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(
        again["id"],
        done.as_str(),
        "the retry finds the moved execution"
    );

    // The callback URL the partner holds (the sled daemon's address; the
    // same path on the new daemon) resumes the step.
    let path = &url[url.find("/v1/callbacks/").unwrap()..];
    let (status, body) = call_back(&format!("{}{path}", pg.base), r#"{"approved": true}"#).await;
    assert_eq!(status, 200, "{body}");
    let exec = pg.wait_for(&waiting, "completed").await;
    assert_eq!(exec["output"], json!({"approved": true}));
    pg.stop().await;

    // A database a daemon made its own ticket key in is refused: the URLs
    // partners hold would stop working.
    let other = pg_testing::database().await;
    let fresh_dir = tempfile::tempdir().unwrap();
    let used = TestDaemon::start(
        Config {
            store: Some(other.clone()),
            ..Config::default()
        },
        fresh_dir.path(),
    )
    .await;
    // Its first callback URL makes the database's own ticket key.
    let id = used
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {"order": 2},
        }))
        .await;
    used.wait_for(&id, "suspended").await;
    used.stop().await;
    let other = other.replacen(&format!(":{password}@"), "@", 1);
    let e = migrate(&["--from", from, "--to", &other, "--to-password-file", pw])
        .await
        .unwrap_err();
    assert!(e.contains("already has its own secret"), "{e}");
}
