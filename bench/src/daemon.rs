//! A stored data set and the real daemon on it, for the figures that fill
//! a store in process and then measure `stephost serve` over HTTP on
//! loopback (`scale`, `list`): where the records go (a sled data dir, or a
//! PostgreSQL database, fresh or reused), the daemon binary beside this
//! program, and that binary started as a child process on the same data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use stephost::store::{PgStore, SledStore, Store};

/// The daemon binary: `given`, or `stephost` beside this program.
pub fn binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let stephost = match given {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench lives in a directory")?
            .join("stephost"),
    };
    anyhow::ensure!(
        stephost.exists(),
        "no daemon binary at {} (build it: cargo build --release -p stephost)",
        stephost.display()
    );
    Ok(stephost)
}

/// The PostgreSQL database of a run, for `--store URL`: a fresh one on
/// that server (its name printed, so that `--reuse-database` can name it
/// next time), or with `reuse` the URL's database as it is.
pub async fn database(url: &str, reuse: bool, what: &str) -> anyhow::Result<String> {
    if reuse {
        return Ok(url.to_owned());
    }
    let (name, url) = crate::pg::fresh_database(url, what).await?;
    eprintln!("writing to database {name} (kept: reuse it with --reuse-database)");
    Ok(url)
}

/// The store the records are written to: the PostgreSQL database
/// `pg_url` names (a pool of `pool` connections), else sled in `data`.
pub async fn open_store(
    pg_url: Option<&str>,
    data: &Path,
    pool: usize,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match pg_url {
        Some(url) => Arc::new(PgStore::open_with(url, None, pool).await?),
        None => Arc::new(SledStore::open(data)?),
    })
}

/// `stephost serve`, a child process on loopback; killed if dropped.
pub struct Daemon {
    child: tokio::process::Child,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Daemon {
    /// Starts `stephost serve` on `data` (and the database `pg_url`
    /// names, if any) with the config file `config`, if any; returns once
    /// `/healthz` answers, with the time that took.
    pub async fn start(
        stephost: &Path,
        data: &Path,
        pg_url: Option<&str>,
        config: Option<&Path>,
        http: &reqwest::Client,
    ) -> anyhow::Result<(Self, Duration)> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let base = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        let mut command = tokio::process::Command::new(stephost);
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data);
        if let Some(url) = pg_url {
            command.arg("--store").arg(url);
        }
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("child pid")?;
        let serving = loop {
            if let Ok(r) = http.get(format!("{base}/healthz")).send().await
                && r.status().is_success()
            {
                break t.elapsed();
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(600),
                "daemon never served"
            );
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("daemon exited: {status}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        Ok((Self { child, pid, base }, serving))
    }

    /// Its resident set size, in bytes.
    pub fn rss(&self) -> u64 {
        crate::stats::rss_of(self.pid)
    }

    /// Graceful stop: SIGTERM to this child, by its pid; returns how long
    /// it took to exit (at most a minute is waited for).
    pub async fn stop(mut self) -> Duration {
        let t = Instant::now();
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        t.elapsed()
    }
}

/// A new token with `permission`, made by `stephost token create` on the
/// store `config` names (before the daemon opens it: sled's data dir is
/// one process's at a time).
pub fn token(stephost: &Path, config: &Path, permission: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(stephost)
        .args(["token", "create", "--name", "bench", "--permission"])
        .arg(permission)
        .arg("--config")
        .arg(config)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    made["token"]
        .as_str()
        .map(str::to_owned)
        .context("token create printed no token")
}
