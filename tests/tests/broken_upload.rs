//! An uploaded plugin that no longer loads at start (here: its component's
//! bytes lost from the store) is reported and left out; the daemon starts
//! and serves every other plugin, and an upload under the same name
//! replaces it.

use serde_json::json;
use stephost::store::ComponentStore as _;
use stephost_tests::TestDaemon;

/// A test component no other plugin is made of.
fn lone_bytes() -> Vec<u8> {
    std::fs::read(format!("{}/hostile.wasm", env!("TEST_PLUGIN_DIR"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_no_longer_loads_is_left_out_and_the_daemon_serves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (status, body) = daemon.upload("shout", lone_bytes()).await;
    assert_eq!(status, 201, "{body}");
    let data_dir = daemon.data_dir.clone();
    daemon.stop().await;

    // Its bytes are lost (a damaged disk, a hand-edited store).
    {
        let store = stephost::store::SledStore::open(&data_dir).unwrap();
        let hash = stephost::wasm::plugins::content_hash(&lone_bytes());
        store.remove_component(&hash).await.unwrap();
        assert_eq!(store.component(&hash).await.unwrap(), None);
    }

    let daemon = TestDaemon::start_default(dir.path()).await;
    let (status, body) = daemon.get("/v1/plugins/shout").await;
    assert_eq!(status, 404, "left out: {body}");
    let (status, body) = daemon
        .post("/v1/executions", json!({"plugin": "shout", "input": {}}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown-plugin");
    let id = daemon
        .start_execution(json!({"plugin": "echo", "input": {"n": 1}}))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"n": 1}), "every other plugin serves");

    // An upload under its name replaces it.
    let echo = stephost::builtin::component("echo").unwrap().to_vec();
    let (status, body) = daemon.upload("shout", echo).await;
    assert_eq!(status, 201, "{body}");
    let id = daemon
        .start_execution(json!({"plugin": "shout", "input": {"n": 2}}))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"n": 2}));
    daemon.stop().await;
}
