//! Figure 4: many suspended executions. Writes N suspended executions
//! (execution, waiting callback, timeout timer: what a real suspension
//! writes) straight through the `Store` trait, then starts the real
//! `stephost serve` on that data dir as a child process and measures:
//! restart to serving (spawn until `/healthz` answers), its RSS, callback
//! lookups over HTTP (an unknown secret: the lookup runs, the claim does
//! not), and disk per pending execution. The open-time scans (recovery's
//! search for `running` executions, the metrics' count by state) are timed
//! on their own first.
//!
//! With `--store postgres://…` the same records go into a fresh PostgreSQL
//! database, by the same `apply` the daemon's suspensions use (one
//! transaction each, many writers at once so that the server's group
//! commit batches their WAL flushes), and the daemon is started on it:
//! nothing is written that the daemon would not write itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use stephost::model::{CallbackRecord, CallbackState, ExecState, Timer, TimerKind, Waiting};
use stephost::store::{Change, ExecutionFilter, Store};

use crate::daemon::Daemon;
use crate::stats::{Samples, disk_usage, fmt, machine, mib};

#[derive(clap::Args)]
pub struct Args {
    /// Suspended executions to write.
    #[arg(long, default_value_t = 100_000)]
    executions: u64,
    /// Callback lookups to time.
    #[arg(long, default_value_t = 5_000)]
    lookups: usize,
    /// The daemon binary [default: `stephost` beside this program].
    #[arg(long)]
    stephost: Option<PathBuf>,
    /// Keep the data here (reused if it already holds the executions).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write them to PostgreSQL: a fresh database on the server this URL
    /// names (`postgres://user@host:port/db`), kept after the run.
    #[arg(long)]
    store: Option<String>,
    /// With `--store`: use the URL's database as it is (a database an
    /// earlier run kept; topped up if it holds fewer executions).
    #[arg(long)]
    reuse_database: bool,
}

/// The correlation id of the `i`-th suspension: derivable, so lookups can
/// pick random ones without keeping a million ids in memory.
fn correlation_id(i: u64) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

/// Writers of [`populate`]: enough that group apply (sled) and group
/// commit (PostgreSQL) batch them.
const WRITERS: u64 = 64;

/// Writes suspensions `from..n`.
async fn populate(store: &Arc<dyn Store>, from: u64, n: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let threads = WRITERS;
    let due = stephost::model::now_ms() + 24 * 3600 * 1000;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut i = from + t;
                while i < n {
                    let id = uuid::Uuid::now_v7().to_string();
                    let cid = correlation_id(i);
                    let mut exec = crate::store::execution(id.clone(), 1, ExecState::Suspended);
                    exec.waiting = Some(Waiting {
                        correlation_id: Some(cid.clone()),
                        state: Vec::new(),
                        due_ms: due,
                    });
                    exec.log(ExecState::Running, "started", None);
                    exec.log(ExecState::Running, "suspended", None);
                    let rec = CallbackRecord {
                        correlation_id: cid,
                        version: 1,
                        execution_id: id.clone(),
                        step_run_id: exec.step_run_id.clone(),
                        attempt: Some(exec.attempt),
                        // The SHA-256 of a secret nobody sends.
                        secret_sha256: "f".repeat(64),
                        require_token: false,
                        state: CallbackState::Waiting,
                        created_ms: exec.created_ms,
                    };
                    store
                        .apply(&Change {
                            execution: Some(exec),
                            callbacks: vec![rec],
                            add_timers: vec![Timer {
                                due_ms: due,
                                execution_id: id,
                                kind: TimerKind::CallbackTimeout,
                            }],
                            ..Default::default()
                        })
                        .await?;
                    i += threads;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for h in handles {
        h.await.expect("populate task")?;
    }
    Ok(started.elapsed())
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let temp = tempfile::tempdir()?;
    let data = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    let stephost = crate::daemon::binary(args.stephost.as_deref())?;

    // The PostgreSQL database: fresh, or the one given.
    let pg_url = match &args.store {
        Some(url) => {
            Some(rt.block_on(crate::daemon::database(url, args.reuse_database, "scale"))?)
        }
        None => None,
    };

    if pg_url.is_some() {
        // The daemon's compiled-component cache only.
        std::fs::create_dir_all(&data)?;
    }
    println!("# Figure 4: {} suspended executions", args.executions);
    println!("machine: {}", machine());
    match &pg_url {
        Some(url) => println!("store: PostgreSQL, {}", crate::pg::redact(url)),
        None => println!("store: sled, {}", data.display()),
    }
    println!();
    println!("| measure | value |");
    println!("|---|---:|");

    // Write them (or reuse them).
    let store = rt.block_on(crate::daemon::open_store(
        pg_url.as_deref(),
        &data,
        WRITERS as usize,
    ))?;
    let existing = rt
        .block_on(store.count_executions_by_state())?
        .into_iter()
        .find(|(s, _)| *s == ExecState::Suspended)
        .map_or(0, |(_, n)| n);
    if existing < args.executions {
        let took = rt.block_on(populate(&store, existing, args.executions))?;
        rt.block_on(store.flush())?;
        let written = args.executions - existing;
        println!(
            "| write {written} suspensions through the Store trait ({WRITERS} concurrent writers) | {} ({:.0}/s) |",
            fmt(took),
            written as f64 / took.as_secs_f64()
        );
    }

    // The scans the daemon does at open.
    let t = Instant::now();
    let running = rt.block_on(store.executions(&ExecutionFilter {
        state: Some(ExecState::Running),
        ..Default::default()
    }))?;
    println!(
        "| open-time scan for `running` executions (Workflows::interrupted; found {}) | {} |",
        running.len(),
        fmt(t.elapsed())
    );
    let t = Instant::now();
    rt.block_on(store.count_executions_by_state())?;
    println!(
        "| open-time count by state (metrics seed) | {} |",
        fmt(t.elapsed())
    );
    let mut ids: Vec<u64> = (0..args.lookups as u64)
        .map(|_| rand_below(args.executions))
        .collect();
    ids.sort_unstable();
    let direct = rt.block_on(async {
        let mut direct = Vec::with_capacity(ids.len());
        for &i in &ids {
            let t = Instant::now();
            store
                .callback(&correlation_id(i))
                .await?
                .context("populated callback is there")?;
            direct.push(t.elapsed());
        }
        anyhow::Ok(direct)
    })?;
    let direct = Samples::new(direct);
    println!(
        "| callback lookup in the store (in process, cold) median / p99 | {} / {} |",
        fmt(direct.median()),
        fmt(direct.pct(99.0))
    );
    drop(store);

    match &pg_url {
        Some(url) => {
            let size = rt.block_on(crate::pg::database_size(url))?;
            println!("| disk: database (pg_database_size) | {} |", mib(size));
            println!(
                "| disk per pending execution (database) | {:.0} bytes |",
                size as f64 / args.executions as f64
            );
        }
        None => {
            let (apparent, allocated) = disk_usage(&data);
            println!(
                "| disk: data dir (apparent / allocated) | {} / {} |",
                mib(apparent),
                mib(allocated)
            );
            println!(
                "| disk per pending execution (allocated) | {:.0} bytes |",
                allocated as f64 / args.executions as f64
            );
        }
    }

    rt.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        for (label, start) in [("cold compiled-component cache", 0), ("warm cache", 1)] {
            if start == 0 {
                // Cold: as after an upgrade, nothing compiled yet.
                let _ = std::fs::remove_dir_all(data.join("cache"));
            }
            let (daemon, serving) =
                Daemon::start(&stephost, &data, pg_url.as_deref(), None, &http).await?;
            let base = daemon.base.clone();
            println!("| restart to serving ({label}) | {} |", fmt(serving));
            println!("| daemon RSS once serving ({label}) | {} |", mib(daemon.rss()));
            if start == 1 {
                let mut lat = Vec::with_capacity(ids.len());
                let mut statuses = std::collections::BTreeMap::new();
                for &i in &ids {
                    let url = format!("{base}/v1/callbacks/{}?secret=wrong", correlation_id(i));
                    let t = Instant::now();
                    let resp = http.post(&url).body("{}").send().await?;
                    let status = resp.status().as_u16();
                    let _ = resp.bytes().await;
                    lat.push(t.elapsed());
                    *statuses.entry(status).or_insert(0u32) += 1;
                }
                let s = Samples::new(lat);
                println!(
                    "| callback lookup over HTTP ({} POSTs, wrong secret: {statuses:?}) median / p99 | {} / {} |",
                    s.len(),
                    fmt(s.median()),
                    fmt(s.pct(99.0))
                );
                println!("| daemon RSS after the lookups | {} |", mib(daemon.rss()));
            }
            let stopped = daemon.stop().await;
            println!("| graceful stop ({label}) | {} |", fmt(stopped));
        }
        anyhow::Ok(())
    })?;
    if pg_url.is_none() {
        let (apparent, allocated) = disk_usage(&data);
        println!(
            "| disk after the daemon ran (apparent / allocated) | {} / {} |",
            mib(apparent),
            mib(allocated)
        );
    }
    Ok(())
}

fn rand_below(n: u64) -> u64 {
    // A small xorshift: no dependency, good enough to spread lookups.
    use std::cell::Cell;
    thread_local!(static S: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) });
    S.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x % n.max(1)
    })
}
