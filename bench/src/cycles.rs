//! Figure 3 (and 5): suspend/resume cycles through the real daemon over
//! HTTP on loopback. A client starts `wait-for-callback` executions; the
//! step registers a callback (flushed), POSTs to a partner, and suspends;
//! the partner answers 200 and calls back at once. The daemon acknowledges
//! the callback only once it is durable (the claim is flushed) and the
//! step has resumed and completed, so the callback's round trip is the
//! callback-to-resumed latency.
//!
//! Closed loop at each `--concurrency` (cycles/s), then an open loop at
//! half the best rate (latency at half load). Everything runs in this
//! process: the daemon on a runtime of its own, client and partner on
//! another, all sharing the machine's cores.
//!
//! On PostgreSQL (`--store`), `--nodes N` runs N daemons on that runtime,
//! each with its own listener, on one fresh database: starts go to the
//! nodes round robin, and each callback to the node after the one that
//! started it (a load balancer that never sends a callback back where the
//! execution began: the case the shared store exists for).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::partner::{CallbackSeen, Waiters, partner};

use crate::stats::{Samples, cpu_times, disk_usage, fmt, io_write_bytes, machine, rss_bytes};
use stephost::store::WriteStats;

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent clients of the closed-loop rows, comma separated.
    #[arg(long, default_value = "1,10,100,1000", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Seconds per closed-loop row.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Seconds of each open-loop run: at half the best closed-loop rate,
    /// then at each of `--open-rates` (0: skip them).
    #[arg(long, default_value_t = 10)]
    half_load_secs: u64,
    /// More open-loop rates (cycles/s), comma separated: 2500 is half the
    /// 5,000/s target.
    #[arg(long, value_delimiter = ',')]
    open_rates: Vec<f64>,
    /// Worker threads of the daemon's runtime.
    #[arg(long, default_value_t = 2)]
    daemon_threads: usize,
    /// Worker threads of the load generator's runtime (client and partner).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Remove completed executions this long after they end
    /// (`[retention] completed_ms`); default: the daemon's (7 days).
    #[arg(long)]
    retention_ms: Option<u64>,
    /// With `--retention-ms`: sample the data dir's size, the executions
    /// stored and the RSS this often during the run, and print them.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// The store: a PostgreSQL server's URL (`postgres://user@host:port/db`;
    /// the run makes a fresh database on that server, and drops it at the
    /// end). Default: sled in a temporary data dir.
    #[arg(long)]
    store: Option<String>,
    /// Daemons in this process, all on the `--store` database (more than
    /// one needs PostgreSQL).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Keep the fresh PostgreSQL database after the run.
    #[arg(long)]
    keep_database: bool,
}

struct Bench {
    /// Each node's base URL; starts go to them round robin.
    bases: Arc<Vec<String>>,
    partner_url: String,
    http: reqwest::Client,
    waiters: Waiters,
    next: AtomicU64,
    /// Each node's state machine.
    workflows: Vec<Arc<stephost::workflow::Workflows>>,
    /// The PostgreSQL server's processes, when it runs on this machine.
    server: Option<crate::pg::Server>,
}

/// One finished cycle.
struct Cycle {
    total: Duration,
    callback: CallbackSeen,
}

impl Bench {
    /// Start -> suspend -> callback -> completed.
    async fn cycle(&self) -> anyhow::Result<Cycle> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.lock().unwrap().insert(k, tx);
        let t = Instant::now();
        let resp = self
            .http
            .post(format!(
                "{}/v1/executions",
                self.bases[k as usize % self.bases.len()]
            ))
            .json(&json!({
                "plugin": "wait-for-callback",
                "config": {"url": self.partner_url},
                "input": {"cycle": k},
            }))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status == 201, "start answered {status}: {body}");
        let id = body["id"]
            .as_str()
            .context("start returns an id")?
            .to_owned();
        let callback = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .context("no callback within 60 s")?
            .context("partner dropped the cycle")?;
        match callback.status {
            // Resumed and completed before the acknowledgement.
            200 => {}
            // Arrived before the step suspended: stored durably, and
            // applied when the step suspends (counted by the sweep after
            // each row, not waited for here).
            202 => {}
            other => anyhow::bail!("callback for {id} answered {other}"),
        }
        Ok(Cycle {
            total: t.elapsed(),
            callback,
        })
    }

    /// Executions by state, straight from the (first) daemon's store: on
    /// PostgreSQL, the counts of every node.
    async fn states(&self) -> HashMap<String, u64> {
        self.workflows[0]
            .store()
            .count_executions_by_state()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(s, n)| (s.as_str().to_owned(), n))
            .collect()
    }
}
struct Row {
    cycles: Vec<Cycle>,
    elapsed: Duration,
    errors: usize,
    first_error: Option<String>,
    usage: Usage,
}

/// What a row cost: CPU of the whole process (daemon, client and partner)
/// and the store's flushes.
#[derive(Default)]
struct Usage {
    user: Duration,
    system: Duration,
    writes: WriteStats,
    /// Bytes written to storage (`/proc/self/io`).
    written: u64,
    /// The PostgreSQL server's processes (none on sled, or when the server
    /// is not on this machine).
    server: Option<crate::pg::ServerUsage>,
}

impl Usage {
    fn now(bench: &Bench) -> Self {
        let (user, system) = cpu_times();
        let mut writes = WriteStats::default();
        for w in &bench.workflows {
            let s = w.store().write_stats();
            writes.changes += s.changes;
            writes.transactions += s.transactions;
            writes.flush_requests += s.flush_requests;
            writes.disk_flushes += s.disk_flushes;
        }
        Self {
            user,
            system,
            writes,
            written: io_write_bytes(),
            server: bench.server.as_ref().map(crate::pg::Server::usage),
        }
    }

    fn since(self, before: &Self) -> Self {
        Self {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
            writes: WriteStats {
                changes: self.writes.changes - before.writes.changes,
                transactions: self.writes.transactions - before.writes.transactions,
                flush_requests: self.writes.flush_requests - before.writes.flush_requests,
                disk_flushes: self.writes.disk_flushes - before.writes.disk_flushes,
            },
            written: self.written.saturating_sub(before.written),
            server: match (self.server, before.server) {
                (Some(a), Some(b)) => Some(crate::pg::ServerUsage {
                    cpu: a.cpu.saturating_sub(b.cpu),
                    written: a.written.saturating_sub(b.written),
                }),
                _ => None,
            },
        }
    }
}

impl Row {
    /// The row of a load that started at `started`, `before` being the
    /// usage then.
    fn finish(
        bench: &Bench,
        before: &Usage,
        started: Instant,
        cycles: Vec<Cycle>,
        errors: Vec<String>,
    ) -> Self {
        Self {
            cycles,
            elapsed: started.elapsed(),
            errors: errors.len(),
            first_error: errors.into_iter().next(),
            usage: Usage::now(bench).since(before),
        }
    }

    fn rate(&self) -> f64 {
        self.cycles.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, label: &str) {
        let total = Samples::new(self.cycles.iter().map(|c| c.total).collect());
        let cb = Samples::new(self.cycles.iter().map(|c| c.callback.latency).collect());
        let early = self
            .cycles
            .iter()
            .filter(|c| c.callback.status == 202)
            .count();
        let n = self.cycles.len().max(1) as f64;
        let u = &self.usage;
        let (server_cpu, server_written) = u.server.map_or(("—".into(), "—".into()), |s| {
            (
                format!("{:.0} µs", s.cpu.as_secs_f64() * 1e6 / n),
                format!("{:.1} KB", s.written as f64 / n / 1024.0),
            )
        });
        println!(
            "| {label} | {} | {:.0} | {} | {} | {} | {} | {early} | {} | {:.0} µs | {:.0}% | {server_cpu} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} KB | {server_written} |",
            self.cycles.len(),
            self.rate(),
            fmt(total.median()),
            fmt(total.pct(99.0)),
            fmt(cb.median()),
            fmt(cb.pct(99.0)),
            self.errors,
            (u.user + u.system).as_secs_f64() * 1e6 / n,
            100.0 * u.system.as_secs_f64() / (u.user + u.system).as_secs_f64().max(1e-9),
            u.writes.changes as f64 / n,
            u.writes.transactions as f64 / n,
            u.writes.flush_requests as f64 / n,
            u.writes.disk_flushes as f64 / n,
            u.written as f64 / n / 1024.0,
        );
        if let Some(e) = &self.first_error {
            println!("|   first error: {e} ||||||||||||||||");
        }
    }
}

async fn closed_loop(bench: Arc<Bench>, clients: usize, secs: u64) -> Row {
    let before = Usage::now(&bench);
    let stop = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let bench = bench.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut errors = Vec::new();
            while Instant::now() < stop {
                match bench.cycle().await {
                    Ok(c) => done.push(c),
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
            (done, errors)
        }));
    }
    let mut cycles = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (d, e) = t.await.expect("client task");
        cycles.extend(d);
        errors.extend(e);
    }
    Row::finish(&bench, &before, started, cycles, errors)
}

async fn open_loop(bench: Arc<Bench>, rate: f64, secs: u64) -> Row {
    let before = Usage::now(&bench);
    let total = (rate * secs as f64) as u64;
    let gap = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..total {
        // Arrivals on a fixed schedule, whatever the daemon does.
        let at = started + gap.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        let bench = bench.clone();
        tasks.push(tokio::spawn(async move { bench.cycle().await }));
    }
    let mut cycles = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.expect("cycle task") {
            Ok(c) => cycles.push(c),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    Row::finish(&bench, &before, started, cycles, errors)
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let daemon_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.daemon_threads)
        .thread_name("daemon")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("client")
        .enable_all()
        .build()?;
    // A fresh database on the server `--store` names.
    let database = match &args.store {
        Some(url) => Some(daemon_rt.block_on(crate::pg::fresh_database(url, "cycles"))?),
        None => None,
    };
    let store_url = database.as_ref().map(|(_, url)| url.clone());
    let server = match &store_url {
        Some(url) => daemon_rt.block_on(crate::pg::Server::find(url)),
        None => None,
    };
    let retention_ms = args.retention_ms;
    let nodes = daemon_rt.block_on(crate::nodes::Nodes::start(
        args.nodes,
        store_url.as_deref(),
        |config| {
            if let Some(ms) = retention_ms {
                config.retention.completed_ms = ms;
            }
        },
    ))?;
    let data_dir = nodes.data_dirs[0].clone();
    let bases = Arc::new(nodes.bases.clone());
    let workflows = nodes.workflows.clone();
    let store_label = match (&args.store, &database) {
        (Some(url), Some((name, _))) => format!(
            "PostgreSQL ({}, fresh database {name}), {} daemon(s)",
            crate::pg::redact(url),
            args.nodes
        ),
        _ => "sled (temporary data dir), 1 daemon".to_owned(),
    };

    let result = client_rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .build()?;
        let waiters: Waiters = Arc::default();
        let partner_url = partner(waiters.clone(), http.clone(), bases.clone()).await?;
        let bench = Arc::new(Bench {
            bases,
            partner_url,
            http,
            waiters,
            next: AtomicU64::new(0),
            workflows,
            server,
        });
        // Warm up connections and code paths.
        for _ in 0..50 {
            bench.cycle().await?;
        }
        println!("# Figure 3: start -> suspend -> callback -> completed, wait-for-callback over HTTP on loopback");
        println!("machine: {}", machine());
        println!("store: {store_label}");
        println!();
        println!(
            "| load | cycles | cycles/s | cycle median | cycle p99 | callback->resumed median | callback->resumed p99 | early callbacks (202) | errors | CPU per cycle | of it system | DB server CPU per cycle | changes per cycle | transactions per cycle | flush requests per cycle | disk flushes per cycle | bytes written per cycle | DB server bytes written per cycle |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let samples: Arc<Mutex<Vec<String>>> = Arc::default();
        let sampler = args.retention_ms.map(|_| {
            tokio::spawn(sample(
                bench.clone(),
                data_dir.clone(),
                Duration::from_secs(args.sample_secs.max(1)),
                samples.clone(),
            ))
        });
        let mut best: f64 = 0.0;
        let mut sweeps = Vec::new();
        let mut before = bench.states().await;
        for &c in &args.concurrency {
            let row = closed_loop(bench.clone(), c, args.secs).await;
            row.print(&format!("{c} concurrent"));
            best = best.max(row.rate());
            // Let the daemon settle, then see where every execution ended.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            sweep(&bench, format!("{c} concurrent"), &mut before, &mut sweeps).await;
        }
        if args.half_load_secs > 0 && best > 0.0 {
            let rates = std::iter::once((best / 2.0, " (half the best)"))
                .chain(args.open_rates.iter().map(|&r| (r, "")));
            for (rate, why) in rates {
                let row = open_loop(bench.clone(), rate, args.half_load_secs).await;
                row.print(&format!("open loop at {rate:.0}/s{why}"));
                tokio::time::sleep(Duration::from_millis(1000)).await;
                sweep(
                    &bench,
                    format!("open loop at {rate:.0}/s"),
                    &mut before,
                    &mut sweeps,
                )
                .await;
            }
        }
        println!();
        println!("Where the executions of each row ended, 1 s after it (from the store):");
        println!();
        println!("| load | completed | still running | suspended | failed |");
        println!("|---|---:|---:|---:|---:|");
        for line in sweeps {
            println!("{line}");
        }
        if let Some(sampler) = sampler {
            sampler.abort();
            println!();
            println!("Retention: the store and the data dir during the run");
            println!();
            println!("| after | cycles started | executions stored | data dir (allocated) | RSS |");
            println!("|---:|---:|---:|---:|---:|");
            for line in samples.lock().unwrap().iter() {
                println!("{line}");
            }
        }
        anyhow::Ok(())
    });
    daemon_rt.block_on(nodes.stop());
    if let (Some(url), Some((name, _))) = (&args.store, &database) {
        if args.keep_database {
            println!("\nkept database {name}");
        } else {
            daemon_rt.block_on(crate::pg::drop_database(url, name))?;
        }
    }
    result
}

/// Adds a row of where the executions ended since `before` to `sweeps`.
async fn sweep(
    bench: &Bench,
    label: String,
    before: &mut HashMap<String, u64>,
    sweeps: &mut Vec<String>,
) {
    let after = bench.states().await;
    let delta = |k: &str| {
        let n = |m: &HashMap<String, u64>| m.get(k).copied().unwrap_or(0);
        n(&after).saturating_sub(n(before))
    };
    sweeps.push(format!(
        "| {label} | {} | {} | {} | {} |",
        delta("completed"),
        delta("running"),
        delta("suspended"),
        delta("failed")
    ));
    *before = after;
}

/// Every `every`, a line of how many cycles were started, how many
/// executions the store holds, the data dir's size and the RSS: with a
/// short retention the store and the data dir must level off.
async fn sample(
    bench: Arc<Bench>,
    data_dir: std::path::PathBuf,
    every: Duration,
    out: Arc<Mutex<Vec<String>>>,
) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let stored: u64 = bench.states().await.values().sum();
        let (_, allocated) = disk_usage(&data_dir);
        let line = format!(
            "| {:.0} s | {} | {stored} | {:.1} MiB | {:.1} MiB |",
            started.elapsed().as_secs_f64(),
            bench.next.load(Ordering::Relaxed),
            allocated as f64 / (1024.0 * 1024.0),
            rss_bytes() as f64 / (1024.0 * 1024.0),
        );
        out.lock().unwrap().push(line);
    }
}
