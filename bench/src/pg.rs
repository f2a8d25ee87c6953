//! PostgreSQL for the benchmarks: a fresh database per run (so that runs
//! never see each other's rows), and what the server itself costs. The
//! daemon's CPU is counted in this process, but on PostgreSQL half of a
//! transition's work is the server's: its processes are read from `/proc`
//! when the server runs on this machine, so a cycle's cost on PostgreSQL
//! is not understated against sled's.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;

/// `url` with its database replaced by `name`
/// (`postgres://user@host:port/db?options`).
pub fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base
        .split_once("://")
        .context("a PostgreSQL URL: postgres://user@host:port/database")?;
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// Runs `sql` on the server of `url`, connected to its `postgres`
/// database (CREATE and DROP DATABASE cannot run in the one they name).
async fn admin(url: &str, sql: &str) -> anyhow::Result<()> {
    let admin = with_database(url, "postgres")?;
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {}", redact(&admin)))?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .with_context(|| format!("running {sql}"))?;
    drop(client);
    let _ = connection.await;
    Ok(())
}

/// Creates a new, empty database on the server of `url`; returns its
/// name and its URL.
pub async fn fresh_database(url: &str, what: &str) -> anyhow::Result<(String, String)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!(
        "stephost_bench_{what}_{secs}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    admin(url, &format!("CREATE DATABASE {name}")).await?;
    Ok((name.clone(), with_database(url, &name)?))
}

/// Drops a database [`fresh_database`] made.
pub async fn drop_database(url: &str, name: &str) -> anyhow::Result<()> {
    admin(url, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
}

/// The size of the database `url` names, in bytes.
pub async fn database_size(url: &str) -> anyhow::Result<u64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?;
    let size: i64 = row.get(0);
    drop(client);
    let _ = connection.await;
    Ok(u64::try_from(size).unwrap_or(0))
}

/// `url` without its password, for printing.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        _ => url.to_owned(),
    }
}

/// The PostgreSQL server's processes on this machine, found by the
/// postmaster's PID in its data directory.
pub struct Server {
    postmaster: u32,
}

/// CPU time and bytes written to storage of the server's processes.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServerUsage {
    pub cpu: Duration,
    pub written: u64,
}

impl Server {
    /// The server `url` names, if it runs here and lets this process read
    /// its data directory (a superuser connection, and `/proc` readable).
    pub async fn find(url: &str) -> Option<Self> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .ok()?;
        let connection = tokio::spawn(connection);
        let dir: Option<String> = client
            .query_one("SELECT current_setting('data_directory')", &[])
            .await
            .ok()
            .map(|row| row.get(0));
        drop(client);
        let _ = connection.await;
        let pid_file = PathBuf::from(dir?).join("postmaster.pid");
        let postmaster = std::fs::read_to_string(pid_file)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()?;
        std::fs::metadata(format!("/proc/{postmaster}/stat")).ok()?;
        Some(Self { postmaster })
    }

    /// The postmaster and its children so far: CPU (user + system,
    /// children that ended included) and `write_bytes`.
    pub fn usage(&self) -> ServerUsage {
        let ticks = Duration::from_secs(1) / 100;
        let mut usage = ServerUsage::default();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return usage;
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some(fields) = stat_fields(pid) else {
                continue;
            };
            // After `comm`: field 4 (ppid) is index 1; utime, stime,
            // cutime, cstime are fields 14-17 (indexes 11-14).
            let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            let ours = pid == self.postmaster || num(1) == Some(u64::from(self.postmaster));
            if !ours {
                continue;
            }
            let mut t = num(11).unwrap_or(0) + num(12).unwrap_or(0);
            if pid == self.postmaster {
                t += num(13).unwrap_or(0) + num(14).unwrap_or(0);
            }
            usage.cpu += ticks * u32::try_from(t).unwrap_or(u32::MAX);
            usage.written += crate::stats::proc_write_bytes(&pid.to_string());
        }
        usage
    }
}

/// The fields of `/proc/PID/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}
