//! Figure 3b: the store alone. Concurrent writers each apply a small
//! transition (one execution record, as a callback claim does) and wait
//! until it is durable, with group commit (`Store::flush`) and without it
//! (one sled flush per writer, as before). Shows what the disk allows
//! before HTTP and wasm are added.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stephost::model::{Doc, ExecState, Execution};
use stephost::store::{Change, ExecutionStore as _, SledStore, StatsStore as _};

use crate::stats::{Samples, fmt, machine};

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent writers, comma separated.
    #[arg(long, default_value = "1,10,100,1000", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Seconds per row.
    #[arg(long, default_value_t = 5)]
    secs: u64,
}

pub fn execution(id: String, version: u64, state: ExecState) -> Execution {
    let mut exec = Execution::new(
        id,
        "wait-for-callback".into(),
        vec![stephost::model::StepSpec {
            name: "wait-for-callback".into(),
            plugin: "wait-for-callback".into(),
            config: serde_json::json!({"url": "http://127.0.0.1:9/partner"}),
            plugin_hash: Some("0".repeat(64)),
        }],
        Doc::json(&serde_json::json!({"cycle": 1})),
        uuid::Uuid::new_v4().to_string(),
        stephost::model::now_ms(),
    );
    exec.version = version;
    exec.state = state;
    exec
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        println!("# Figure 3b: durable transitions through the store (apply + flush)");
        println!("machine: {}", machine());
        println!();
        println!("| flush | writers | transitions/s | median | p99 | disk flushes | transitions per disk flush |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for grouped in [false, true] {
            for &c in &args.concurrency {
                let dir = tempfile::tempdir()?;
                let store = Arc::new(SledStore::open(dir.path())?);
                let stop = Instant::now() + Duration::from_secs(args.secs);
                let started = Instant::now();
                let mut tasks = Vec::new();
                for w in 0..c {
                    let store = store.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut lat = Vec::new();
                        let mut version = 0;
                        let id = format!("writer-{w}");
                        while Instant::now() < stop {
                            version += 1;
                            let t = Instant::now();
                            store.apply(&Change {
                                execution: Some(execution(id.clone(), version, ExecState::Running)),
                                ..Default::default()
                            }).await?;
                            if grouped {
                                store.flush().await?;
                            } else {
                                store.flush_ungrouped().await?;
                            }
                            lat.push(t.elapsed());
                        }
                        anyhow::Ok(lat)
                    }));
                }
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await??);
                }
                let elapsed = started.elapsed();
                let s = Samples::new(all);
                let n = s.len() as f64;
                let flushes = store.write_stats().disk_flushes;
                println!(
                    "| {} | {c} | {:.0} | {} | {} | {} | {} |",
                    if grouped { "group commit" } else { "per request (before)" },
                    n / elapsed.as_secs_f64(),
                    fmt(s.median()),
                    fmt(s.pct(99.0)),
                    if grouped { flushes.to_string() } else { "-".into() },
                    if grouped && flushes > 0 { format!("{:.1}", n / flushes as f64) } else { "-".into() },
                );
            }
        }
        anyhow::Ok(())
    })
}
