//! The sandbox of docs/security.md, from inside a plugin: WASI is linked
//! with an empty context, so a plugin cannot read a file, see an
//! environment variable or open a socket, even one granted every host and
//! run by a daemon that may reach loopback. The `hostile` test plugin tries
//! each through WASI (Rust's `std::fs`, `std::env`, `std::net`) and reports
//! what it got. Alone in its binary because it sets the process
//! environment.

use serde_json::{Value, json};
use stephost::Config;
use stephost_tests::TestDaemon;

const VAR: &str = "STEPHOST_SANDBOX_PROBE";
const VALUE: &str = "visible-to-the-host-only-7f3a";

async fn attempt(daemon: &TestDaemon, config: Value) -> Value {
    let id = daemon
        .start_execution(json!({"plugin": "hostile", "config": config, "input": {}}))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    exec["output"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_read_files_see_the_environment_or_open_sockets() {
    // SAFETY: this binary holds this one test, so no other thread reads or
    // writes the environment while it is set.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(VAR, VALUE);
    }
    // What the plugin tries is there to be had, for the host process.
    assert_eq!(std::env::var(VAR).unwrap(), VALUE);
    let passwd = std::fs::read_to_string("/etc/passwd").expect("the host can read /etc/passwd");
    assert!(passwd.contains("root:"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        "[plugins.hostile]\npath = \"{}/hostile.wasm\"\nallowed_hosts = [\"*\"]\n",
        env!("TEST_PLUGIN_DIR")
    ))
    .unwrap();
    // Loopback allowed: the plugin's `http.send` could reach the listener.
    let daemon = TestDaemon::start(config, dir.path()).await;

    let file = attempt(&daemon, json!({"mode": "read-file", "path": "/etc/passwd"})).await;
    assert_eq!(file["allowed"], false, "{file:#}");
    assert!(!file["answer"].as_str().unwrap().is_empty(), "{file:#}");
    assert_eq!(file["root_entries"], json!([]), "no directory is visible");
    assert!(!file.to_string().contains("root:"), "{file:#}");

    let env = attempt(&daemon, json!({"mode": "read-env", "name": VAR})).await;
    assert_eq!(env["allowed"], false, "{env:#}");
    assert_eq!(env["env"], json!([]), "the plugin sees no variable at all");
    assert!(!env.to_string().contains(VALUE), "{env:#}");

    let socket = attempt(&daemon, json!({"mode": "open-socket", "address": address})).await;
    assert_eq!(socket["allowed"], false, "{socket:#}");
    assert!(!socket["answer"].as_str().unwrap().is_empty(), "{socket:#}");
    // Had the connect succeeded, the handshake would have put the
    // connection in the listener's queue before connect returned, that is
    // before the step completed: nothing is queued.
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the listener got no connection"
    );
    daemon.stop().await;
}
