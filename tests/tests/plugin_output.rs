//! What a plugin says — log lines, failure texts, panic messages — passes
//! through the host on its way to operators, and the host cuts and masks it
//! there, whatever the plugin itself does. Alone in its binary because it
//! captures the process's tracing output.

use std::io::Write;
use std::sync::{Mutex, Once};

use serde_json::{Value, json};
use stephost::Config;
use stephost_tests::TestDaemon;

/// The value of the granted secret; it must appear nowhere but in the plugin.
const SECRET: &str = "s3cr3t-value-7731";

/// Everything the daemon logged in this process.
static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(|| Capture)
            .init();
    });
}

/// The captured log lines that name this execution.
fn log_lines_of(id: &str) -> Vec<String> {
    String::from_utf8_lossy(&CAPTURED.lock().unwrap())
        .lines()
        .filter(|l| l.contains(id))
        .map(str::to_owned)
        .collect()
}

/// The hostile test plugin, which misbehaves as its config says.
const HOSTILE: &str = concat!(env!("TEST_PLUGIN_DIR"), "/hostile.wasm");

fn config() -> Config {
    Config::from_toml(&format!(
        r#"
        [secrets]
        leak = {{ value = "{SECRET}" }}
        [plugins.hostile]
        path = "{wasm}"
        time_limit_ms = 30000
        secrets = ["leak"]
        "#,
        wasm = HOSTILE
    ))
    .unwrap()
}

async fn run(daemon: &TestDaemon, config: Value, end: &str) -> (String, Value) {
    let id = daemon
        .start_execution(json!({"plugin": "hostile", "config": config, "input": {}}))
        .await;
    let exec = daemon.wait_for(&id, end).await;
    (id, exec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_masks_granted_secrets_in_log_lines_failure_texts_and_trap_messages() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(config(), dir.path()).await;

    let (logged, _) = run(
        &daemon,
        json!({"mode": "leak-secret", "secret": "leak", "how": "log"}),
        "completed",
    )
    .await;
    let lines = log_lines_of(&logged);
    assert!(
        lines.iter().any(|l| l.contains("the secret is ****, see")),
        "the plugin's line is logged, masked: {lines:#?}"
    );

    let (_, failed) = run(
        &daemon,
        json!({"mode": "leak-secret", "secret": "leak", "how": "fail"}),
        "failed",
    )
    .await;
    let error = &failed["error"];
    assert_eq!(error["code"], "code-****", "{failed:#}");
    assert_eq!(error["text"], "text **** here", "{failed:#}");
    assert_eq!(error["document_status"], "doc ****", "{failed:#}");
    assert_eq!(error["technical_status"], "tech ****", "{failed:#}");

    let (_, trapped) = run(
        &daemon,
        json!({"mode": "leak-secret", "secret": "leak", "how": "trap"}),
        "failed",
    )
    .await;
    let text = trapped["error"]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("the secret is ****, panicking"),
        "the panic message is kept, masked: {trapped:#}"
    );

    let (_, listed) = daemon.get("/v1/executions").await;
    daemon.stop().await;
    assert!(!listed.to_string().contains(SECRET), "{listed:#}");
    let everything = String::from_utf8_lossy(&CAPTURED.lock().unwrap()).into_owned();
    assert!(
        !everything.contains(SECRET),
        "the secret reached the daemon's log: {}",
        everything
            .lines()
            .filter(|l| l.contains(SECRET))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !stephost_tests::files_hold(dir.path(), SECRET.as_bytes()),
        "the secret reached the data dir"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_log_line_is_cut_at_8_kib() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(config(), dir.path()).await;

    let (long, _) = run(
        &daemon,
        json!({"mode": "long-log", "how": "20000"}),
        "completed",
    )
    .await;
    let (short, _) = run(
        &daemon,
        json!({"mode": "long-log", "how": "100"}),
        "completed",
    )
    .await;
    daemon.stop().await;

    let line = |id: &str| {
        log_lines_of(id)
            .into_iter()
            .find(|l| l.contains("long:"))
            .unwrap_or_else(|| panic!("no plugin line for {id}"))
    };
    let ys = |line: &str| {
        let after = &line[line.find("long:").unwrap() + "long:".len()..];
        let n = after.chars().take_while(|c| *c == 'y').count();
        (n, after[n..].to_owned())
    };
    // 8 KiB of message: "long:" and then the y's, then the marker.
    let (n, rest) = ys(&line(&long));
    assert_eq!(n, 8 * 1024 - "long:".len());
    assert!(rest.starts_with(" [truncated]"), "{rest}");
    let (n, rest) = ys(&line(&short));
    assert_eq!(n, 100);
    assert!(!rest.contains("[truncated]"), "{rest}");
}
