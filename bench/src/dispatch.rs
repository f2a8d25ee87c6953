//! Figure 1: one step dispatch — instantiate `echo`, call `run`, map the
//! outcome, drop the store — measured three ways:
//!
//! - `naive`: a default wasmtime engine, a fresh default `Store` and WASI
//!   context per call, instantiated through the `Linker` (no pre-instance);
//! - `head`: the daemon's [`Executor`] on an engine configured as before the
//!   performance work (on-demand allocation, no pooling);
//! - `tuned`: the daemon's [`Executor`] on [`stephost::wasm::engine::new_engine`],
//!   exactly what `stephost serve` runs.
//!
//! With `--concurrency` it runs that many dispatch loops at once on the
//! daemon's multi-threaded runtime (figure 5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use stephost::bindings::{Document, Outcome, StepContext, StepPlugin};
use stephost::capabilities::{CallInfo, Grant, HostServices, Registrar, StepState};
use stephost::wasm::executor::{Executor, Invocation};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

use crate::stats::{Samples, fmt, machine};

#[derive(clap::Args)]
pub struct Args {
    /// Calls per row (split among the concurrent loops).
    #[arg(long, default_value_t = 20_000)]
    iters: usize,
    /// Concurrent dispatch loops, comma separated.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Which ways to measure, comma separated: naive, head, tuned.
    #[arg(long, default_value = "naive,head,tuned", value_delimiter = ',')]
    variants: Vec<String>,
    /// Also time the parts of one dispatch (store, instantiate, call, drop).
    #[arg(long)]
    breakdown: bool,
    /// Longest a row may run before it stops early.
    #[arg(long, default_value_t = 60)]
    max_secs: u64,
}

/// `echo` never registers a callback; anything else is a bug in the bench.
struct NoRegistrar;

impl Registrar for NoRegistrar {
    fn register<'a>(
        &'a self,
        _call: &'a CallInfo,
        _require_token: bool,
        _n: u32,
    ) -> stephost::store::BoxFuture<'a, Result<stephost::capabilities::Registration, String>> {
        Box::pin(async { Err("no registrar in the dispatch bench".to_owned()) })
    }
}

pub fn services() -> anyhow::Result<HostServices> {
    HostServices::new(
        Arc::new(NoRegistrar),
        Arc::new(stephost::egress::Egress::default()),
    )
}

fn call_info() -> CallInfo {
    CallInfo {
        plugin: "echo".into(),
        execution_id: "bench-execution".into(),
        step: "echo".into(),
        step_run_id: "bench-step-run".into(),
        attempt: 1,
        version: 1,
        record_ms: 0,
        deadline: Instant::now() + Duration::from_secs(60),
    }
}

fn invocation() -> Invocation {
    Invocation::Run {
        ctx: StepContext {
            execution_id: "bench-execution".into(),
            workflow: "echo".into(),
            step: "echo".into(),
            attempt: 1,
            step_run_id: "bench-step-run".into(),
            config: String::new(),
            metadata: "{}".into(),
        },
        input: Document {
            content_type: "application/json".into(),
            body: br#"{"hello":"world"}"#.to_vec(),
        },
    }
}

/// One way of dispatching a call.
enum Way {
    Naive {
        engine: Engine,
        linker: Linker<StepState>,
        component: Component,
        grant: Arc<Grant>,
        services: HostServices,
    },
    Executor {
        executor: Executor,
        pre: stephost::bindings::StepPluginPre<StepState>,
        grant: Arc<Grant>,
    },
}

impl Way {
    fn new(name: &str) -> anyhow::Result<(Self, Option<Engine>)> {
        let echo = stephost::builtin::component("echo").context("echo is built in")?;
        let grant = Arc::new(Grant::default());
        match name {
            "naive" => {
                let mut config = wasmtime::Config::new();
                config.wasm_component_model(true);
                let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
                let mut linker = Linker::new(&engine);
                wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
                StepPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                    .map_err(anyhow::Error::from)?;
                let component = Component::new(&engine, echo).map_err(anyhow::Error::from)?;
                Ok((
                    Self::Naive {
                        engine,
                        linker,
                        component,
                        grant,
                        services: services()?,
                    },
                    None,
                ))
            }
            "head" | "tuned" => {
                let engine = if name == "head" {
                    let mut config = wasmtime::Config::new();
                    config.wasm_component_model(true);
                    config.epoch_interruption(true);
                    Engine::new(&config).map_err(anyhow::Error::from)?
                } else {
                    stephost::wasm::engine::new_engine(&stephost::Config::default())?
                };
                let component = Component::new(&engine, echo).map_err(anyhow::Error::from)?;
                let executor = Executor::new(engine.clone(), services()?)?;
                let pre = executor.prepare(&component)?;
                Ok((
                    Self::Executor {
                        executor,
                        pre,
                        grant,
                    },
                    Some(engine),
                ))
            }
            other => anyhow::bail!("unknown variant {other:?}: use naive, head or tuned"),
        }
    }

    async fn once(&self) -> anyhow::Result<()> {
        let outcome = match self {
            Self::Naive {
                engine,
                linker,
                component,
                grant,
                services,
            } => {
                let mut store = Store::new(
                    engine,
                    StepState::new(grant.clone(), call_info(), services.clone()),
                );
                let plugin = StepPlugin::instantiate_async(&mut store, component, linker)
                    .await
                    .map_err(anyhow::Error::from)?;
                let Invocation::Run { ctx, input } = invocation() else {
                    unreachable!()
                };
                plugin
                    .stephost_plugin_step()
                    .call_run(&mut store, &ctx, &input)
                    .await
                    .map_err(anyhow::Error::from)?
            }
            Self::Executor {
                executor,
                pre,
                grant,
            } => {
                executor
                    .call(pre, grant.clone(), call_info(), invocation())
                    .await
                    .outcome?
            }
        };
        match outcome {
            Outcome::Complete(doc) if doc.body == br#"{"hello":"world"}"# => Ok(()),
            other => anyhow::bail!("echo answered {other:?}"),
        }
    }
}

/// Where the time of one tuned dispatch goes: the executor's steps done by
/// hand on the daemon's engine, each timed on its own.
async fn breakdown(iters: usize) -> anyhow::Result<()> {
    let echo = stephost::builtin::component("echo").context("echo is built in")?;
    let engine = stephost::wasm::engine::new_engine(&stephost::Config::default())?;
    let component = Component::new(&engine, echo).map_err(anyhow::Error::from)?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
    StepPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(anyhow::Error::from)?;
    let pre = stephost::bindings::StepPluginPre::new(
        linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)?,
    )
    .map_err(anyhow::Error::from)?;
    let services = services()?;
    let grant = Arc::new(Grant::default());
    let names = ["new store + state", "instantiate", "call run", "drop store"];
    let mut parts: Vec<Vec<Duration>> = vec![Vec::with_capacity(iters); names.len()];
    for i in 0..iters + 200 {
        let t0 = Instant::now();
        let mut store = Store::new(
            &engine,
            StepState::new(grant.clone(), call_info(), services.clone()),
        );
        store.set_epoch_deadline(1);
        let t1 = Instant::now();
        let plugin = pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)?;
        let t2 = Instant::now();
        let Invocation::Run { ctx, input } = invocation() else {
            unreachable!()
        };
        let outcome = plugin
            .stephost_plugin_step()
            .call_run(&mut store, &ctx, &input)
            .await
            .map_err(anyhow::Error::from)?;
        let t3 = Instant::now();
        drop(store);
        let t4 = Instant::now();
        anyhow::ensure!(matches!(outcome, Outcome::Complete(_)), "echo failed");
        if i >= 200 {
            for (k, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3].into_iter().enumerate() {
                parts[k].push(d);
            }
        }
    }
    println!();
    println!("Breakdown of one tuned dispatch ({iters} calls):");
    println!();
    println!("| part | median | p99 |");
    println!("|---|---:|---:|");
    for (name, v) in names.iter().zip(parts) {
        let s = Samples::new(v);
        println!("| {name} | {} | {} |", fmt(s.median()), fmt(s.pct(99.0)));
    }
    Ok(())
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!("# Figure 1: step dispatch (echo: instantiate, run, map outcome, drop store)");
    println!("machine: {}", machine());
    println!();
    println!("| way | concurrent | calls | median | p99 | calls/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for name in &args.variants {
        let (way, engine) = Way::new(name)?;
        let way = Arc::new(way);
        let ticker = engine.map(stephost::wasm::engine::spawn_epoch_ticker);
        // Warm up: the first calls fault in code and fill the pool.
        for _ in 0..200 {
            way.once().await?;
        }
        for &c in &args.concurrency {
            let per_task = args.iters.div_ceil(c.max(1));
            let stop_at = Instant::now() + Duration::from_secs(args.max_secs);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..c.max(1) {
                let way = way.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(per_task);
                    for _ in 0..per_task {
                        let t = Instant::now();
                        way.once().await?;
                        lat.push(t.elapsed());
                        if Instant::now() > stop_at {
                            break;
                        }
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
            println!(
                "| {name} | {c} | {} | {} | {} | {:.0} |",
                s.len(),
                fmt(s.median()),
                fmt(s.pct(99.0)),
                s.len() as f64 / elapsed.as_secs_f64()
            );
        }
        if let Some(t) = ticker {
            t.abort();
        }
    }
    if args.breakdown {
        breakdown(args.iters).await?;
    }
    Ok(())
}
