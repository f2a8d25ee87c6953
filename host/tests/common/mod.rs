//! What the process-level tests share: the real `stephost` binary started
//! on a data dir and a port of the test's choosing. (The `tests` crate's
//! harness runs the daemon in-process; these tests need a process they can
//! signal and kill. Its loopback partner serves both.)

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_stephost");

/// An address to give the daemon: a port that was free a moment ago, on a
/// loopback address of its own (127.x.y.z, picked per call). The daemon
/// must get the same address on every restart, so the callback URLs
/// partners hold stay valid; other tests bind `127.0.0.1:0`, so a port
/// they are handed meanwhile cannot take this address.
pub fn free_port() -> std::net::SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(40_503))
        .wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        );
    let [_, b, c, d] = seed.to_be_bytes();
    let ip = std::net::Ipv4Addr::new(127, 100 + b % 150, c, d.max(1));
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Creates an admin token in `data_dir` with `stephost token create`.
pub fn create_token(data_dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(["token", "create", "--name", "t", "--permission", "admin"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("STEPHOST_LOG", "warn")
        .output()
        .expect("run stephost token create");
    assert!(out.status.success(), "token create: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// A `stephost serve` process.
pub struct Process {
    /// The child.
    pub child: Child,
    /// `http://ADDRESS`.
    pub base: String,
}

impl Process {
    /// Starts `stephost serve` on `address` with `config` and `data_dir`;
    /// its log goes to `log` (appended).
    pub fn spawn(
        config: &Path,
        data_dir: &Path,
        address: std::net::SocketAddr,
        log: &Path,
    ) -> Self {
        Self::spawn_with_env(config, data_dir, address, log, &[])
    }

    /// [`Process::spawn`] with `env` added to the daemon's environment.
    pub fn spawn_with_env(
        config: &Path,
        data_dir: &Path,
        address: std::net::SocketAddr,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let base = format!("http://{address}");
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &address.to_string()])
            .args(["--public-url", &base])
            .env(
                "STEPHOST_LOG",
                std::env::var("STEPHOST_LOG").unwrap_or("info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn stephost serve");
        Self { child, base }
    }

    /// Waits until `/healthz` answers; returns how long that took.
    pub async fn wait_healthy(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if let Ok(resp) = client()
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                && resp.status() == 200
            {
                return started.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited while starting: {status}");
            }
            assert!(started.elapsed() < within, "the daemon did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM (the way a service manager stops it).
    pub fn term(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `within` for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if started.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes a config file into `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("stephost.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A shared HTTP client.
pub fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap()
        })
        .clone()
}

/// `POST {base}{path}` with a JSON body and a bearer token; returns status
/// and JSON body (`null` if the body is not JSON).
pub async fn post(
    base: &str,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = client()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Polls an execution until `done` says so; panics with it when 30 s
/// pass first.
pub async fn wait_until(
    base: &str,
    token: &str,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let exec: serde_json::Value = client()
            .get(format!("{base}/v1/executions/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&exec) {
            return exec;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {exec:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an execution until it is in `state`.
pub async fn wait_state(base: &str, token: &str, id: &str, state: &str) -> serde_json::Value {
    wait_until(base, token, id, |e| e["state"] == state).await
}
