//! A secret read from an environment variable named in the config reaches
//! the partner and nothing else; a missing variable stops the daemon from
//! starting with an error that names it. Alone in its binary because it
//! sets the process environment.

use serde_json::json;
use stephost::Config;
use stephost_tests::{Partner, TestDaemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_the_environment_reach_only_the_partner() {
    let dir = tempfile::tempdir().unwrap();
    let var = "STEPHOST_TEST_ERP_KEY";
    // SAFETY: this binary holds this one test, so no other thread reads or
    // writes the environment while it is set.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(var, "Bearer from-the-environment-42");
    }
    // The partner echoes the credential in its error answer, which the
    // step puts into its failure text: the one way back for the secret.
    let partner = Partner::start(|req| async move {
        let echoed = req.header("authorization").unwrap_or_default().to_owned();
        (500, json!({"error": "no", "you sent": echoed}))
    })
    .await;
    let config = Config::from_toml(&format!(
        "[secrets]\nerp = {{ env = \"{var}\" }}\n[plugins.integration-step]\nsecrets = [\"erp\"]\n"
    ))
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;
    let id = daemon
        .start_execution(json!({"plugin": "integration-step", "config": {"url": partner.base, "api_key_secret": "erp"}, "input": {}}))
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    let sent = partner.wait_for_requests(1).await;
    assert_eq!(
        sent[0].header("authorization"),
        Some("Bearer from-the-environment-42")
    );
    let text = exec["error"]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("you sent") && text.contains("****"),
        "the echo reached the failure text, masked: {exec:#}"
    );
    let (_, list) = daemon.get("/v1/executions").await;
    for shown in [exec.to_string(), list.to_string()] {
        assert!(!shown.contains("from-the-environment-42"), "{shown}");
    }
    daemon.stop().await;

    let missing = Config::from_toml(
        "[secrets]\nerp = { env = \"STEPHOST_TEST_SECRET_THAT_IS_NOT_SET\" }\n[plugins.integration-step]\nsecrets = [\"erp\"]\n",
    )
    .unwrap();
    let mut missing = missing;
    missing.data_dir = dir.path().to_owned();
    let err = stephost::Daemon::open(missing).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("STEPHOST_TEST_SECRET_THAT_IS_NOT_SET"),
        "the error names the missing variable: {err:#}"
    );
}
