//! Issue 15, item 1: the executions list of an operator's console,
//! `GET /v1/executions` with its filters and cursor paging, and
//! `GET /v1/executions/counts`, with a million executions stored. They
//! are served from the store's listing indexes and per-workflow counters
//! (`store/sled/listing.rs`, PostgreSQL's migration 2): this figure shows
//! that a filtered page costs the page, not the store.
//!
//! Writes N executions of a realistic mix (`list/data.rs`) straight into
//! the store — on sled through `Store::apply`, one `Change` each, as the
//! daemon writes them; on PostgreSQL through `PgStore::import`, the rows
//! `stephost migrate` writes, in batches (the same rows and counts, a
//! transaction per batch rather than per execution) — then measures, for
//! each request:
//!
//! - **after**, in process: `Store::executions` (or the counts) with the
//!   filter the API builds, and over HTTP: the real `stephost serve` (a
//!   child process, on loopback) answering the request;
//! - **before**, in process: what the sled listing did before the indexes
//!   (`a4a4f81^`): read every execution newest first from the cursor on,
//!   decode it, keep it if the filter matches, stop at the page's limit.
//!   It is emulated through the trait ([`old_scan`]: unfiltered calls,
//!   `ExecutionFilter::matches` on each record), which costs a little
//!   more than the old loop (a key read, then a record read) but does the
//!   same work otherwise; for counts by workflow it is a scan of every
//!   execution (`Store::each_execution`), as no counter kept them. (On
//!   PostgreSQL this is not what the old listing did: it had indexes by
//!   state and by workflow.)
//!
//! Also reported: populate time, disk, the daemon's RSS once serving and
//! after the requests. The daemon runs with retention off (`[retention]`
//! 0: the default would remove the completed ones older than 7 days) and
//! fails the few `running` executions when it starts (their plugins are
//! not installed): the HTTP requests start once that has settled.

mod data;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stephost::model::ExecState;
use stephost::store::{ExecutionFilter, Import, PgStore, Store};

use crate::daemon::Daemon;
use crate::stats::{Samples, disk_usage, fmt, machine, mib, repeat};

#[derive(clap::Args)]
pub struct Args {
    /// Executions to store.
    #[arg(long, default_value_t = 1_000_000)]
    executions: u64,
    /// Requests per row, over HTTP and in process (each row also stops
    /// after --row-secs).
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Seconds per row, at most (at least one request is made).
    #[arg(long, default_value_t = 20)]
    row_secs: u64,
    /// Runs of each "before" scan, at most (each also stops after
    /// --row-secs).
    #[arg(long, default_value_t = 20)]
    before_runs: usize,
    /// Stop writing after this many seconds, and measure what was written.
    #[arg(long, default_value_t = 900)]
    populate_secs: u64,
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
    /// With `--store`: use the URL's database as it is (topped up if it
    /// holds fewer executions).
    #[arg(long)]
    reuse_database: bool,
}

/// A page, as the console asks for it.
const PAGE: usize = 50;
/// Records a "before" scan reads per call, at most.
const SCAN_PAGE: usize = 1_000;
/// Concurrent writers: enough for sled's group apply. On PostgreSQL one
/// imports batches of [`BATCH`], as `stephost migrate` does: concurrent
/// batches deadlock on the rows of `workflow_counts` that its trigger
/// picks at random (a shard per row), in no fixed order.
const SLED_WRITERS: u64 = 64;
const PG_WRITERS: u64 = 1;
const BATCH: usize = 500;

/// One measured request.
struct Row {
    label: String,
    what: What,
}

enum What {
    List(ExecutionFilter),
    Counts,
    CountsOf(String),
    CountsByWorkflow,
}

impl Row {
    fn list(label: &str, filter: ExecutionFilter) -> Self {
        let filter = ExecutionFilter {
            limit: Some(PAGE),
            newest_first: true,
            ..filter
        };
        Self {
            label: label.into(),
            what: What::List(filter),
        }
    }

    /// The request's path and query, as the console sends it.
    fn path(&self) -> String {
        let f = match &self.what {
            What::List(f) => f,
            What::Counts => return "/v1/executions/counts".into(),
            What::CountsOf(w) => return format!("/v1/executions/counts?workflow={w}"),
            What::CountsByWorkflow => return "/v1/executions/counts?by=workflow".into(),
        };
        let mut q = vec![format!("limit={PAGE}")];
        q.extend(f.state.map(|s| format!("state={}", s.as_str())));
        q.extend(f.workflow.as_ref().map(|w| format!("workflow={w}")));
        q.extend(f.plugin.as_ref().map(|p| format!("plugin={p}")));
        q.extend(f.created_after_ms.map(|t| format!("created_after={t}")));
        q.extend(f.created_before_ms.map(|t| format!("created_before={t}")));
        q.extend(f.past.as_ref().map(|c| format!("cursor={c}")));
        format!("/v1/executions?{}", q.join("&"))
    }
}

/// What was measured of one row.
#[derive(Default)]
struct Measured {
    rows: String,
    http: Option<Samples>,
    after: Option<Samples>,
    before: Option<(Samples, u64)>,
}

/// The listing before the indexes: every execution newest first from the
/// cursor on, decoded and matched, until a page is full. Returns the
/// page's length and the records read. The old loop read one record at a
/// time; through the trait the records come in calls, each sized by the
/// matches still needed at the density seen so far (at most
/// [`SCAN_PAGE`]), so that little is read past the page's last match.
async fn old_scan(store: &dyn Store, filter: &ExecutionFilter) -> anyhow::Result<(usize, u64)> {
    let mut scan = ExecutionFilter {
        newest_first: true,
        past: filter.past.clone(),
        ..Default::default()
    };
    let (mut found, mut read) = (0usize, 0u64);
    loop {
        let needed = PAGE - found;
        let size = (needed as u64 * (read + 1) / (found as u64 + 1))
            .clamp(needed as u64, SCAN_PAGE as u64);
        scan.limit = Some(size as usize);
        let page = store.executions(&scan).await?;
        read += page.len() as u64;
        found += page
            .iter()
            .filter(|e| filter.matches(e))
            .count()
            .min(needed);
        match page.last() {
            Some(last) if found < PAGE && page.len() == size as usize => {
                scan.past = Some(last.id.clone());
            }
            _ => return Ok((found, read)),
        }
    }
}

/// Executions by workflow and state, by reading every one of them.
async fn scan_counts(store: &dyn Store) -> anyhow::Result<BTreeMap<(String, ExecState), u64>> {
    let mut counts = BTreeMap::new();
    let mut visit = |e: stephost::model::Execution| {
        *counts.entry((e.workflow, e.state)).or_insert(0) += 1;
    };
    store.each_execution(&mut visit).await?;
    Ok(counts)
}

/// Writes executions `from..n` (stopping at `deadline`); returns how many.
async fn populate(
    store: &Arc<dyn Store>,
    pg: Option<&Arc<PgStore>>,
    from: u64,
    n: u64,
    deadline: Instant,
) -> anyhow::Result<u64> {
    let first_ms = stephost::model::now_ms() - data::DAYS * data::DAY_MS;
    // Far enough that no timer fires while the data is kept.
    let due_ms = stephost::model::now_ms() + 2 * data::DAYS * data::DAY_MS;
    let writers = if pg.is_some() {
        PG_WRITERS
    } else {
        SLED_WRITERS
    };
    let tasks: Vec<_> = (0..writers)
        .map(|t| {
            let (store, pg) = (store.clone(), pg.cloned());
            tokio::spawn(async move {
                let (mut i, mut written) = (from + t, 0u64);
                let mut batch = Import::default();
                while i < n && Instant::now() < deadline {
                    let c = data::change(i, n, first_ms, due_ms);
                    i += writers;
                    let Some(pg) = &pg else {
                        store.apply(&c).await?;
                        written += 1;
                        continue;
                    };
                    batch.executions.extend(c.execution);
                    batch.callbacks.extend(c.callbacks);
                    batch.timers.extend(c.add_timers);
                    if batch.executions.len() == BATCH || i >= n {
                        written += pg.import(&std::mem::take(&mut batch)).await?;
                    }
                }
                if !batch.executions.is_empty() {
                    written += pg
                        .as_ref()
                        .expect("batches are PostgreSQL's")
                        .import(&batch)
                        .await?;
                }
                anyhow::Ok(written)
            })
        })
        .collect();
    let mut written = 0;
    for t in tasks {
        written += t.await.expect("populate task")?;
    }
    Ok(written)
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
    std::fs::create_dir_all(&data)?;
    let stephost = crate::daemon::binary(args.stephost.as_deref())?;
    let pg_url = match &args.store {
        Some(url) => {
            Some(rt.block_on(crate::daemon::database(url, args.reuse_database, "list"))?)
        }
        None => None,
    };
    let row_bound = Duration::from_secs(args.row_secs);
    println!(
        "# Issue 15: the executions list and counts, {} executions",
        args.executions
    );
    println!("machine: {}", machine());
    match &pg_url {
        Some(url) => println!("store: PostgreSQL, {}", crate::pg::redact(url)),
        None => println!("store: sled, {}", data.display()),
    }

    // The store, filled (or topped up) in process.
    let pg = match &pg_url {
        Some(url) => Some(Arc::new(rt.block_on(PgStore::open_with(url, None, 16))?)),
        None => None,
    };
    let store: Arc<dyn Store> = match &pg {
        Some(pg) => pg.clone(),
        None => rt.block_on(crate::daemon::open_store(None, &data, 0))?,
    };
    let stored = |store: &Arc<dyn Store>| -> anyhow::Result<u64> {
        let counts = rt.block_on(store.count_executions_by_state())?;
        Ok(counts.iter().map(|(_, n)| n).sum())
    };
    let existing = stored(&store)?;
    if existing < args.executions {
        let t = Instant::now();
        let deadline = t + Duration::from_secs(args.populate_secs);
        let written = rt.block_on(populate(
            &store,
            pg.as_ref(),
            existing,
            args.executions,
            deadline,
        ))?;
        rt.block_on(store.flush())?;
        let took = t.elapsed();
        println!(
            "populate: {written} executions in {} ({:.0}/s; {})",
            fmt(took),
            written as f64 / took.as_secs_f64(),
            match pg {
                Some(_) => format!("PgStore::import, {PG_WRITERS} writers, batches of {BATCH}"),
                None => format!("Store::apply, {SLED_WRITERS} concurrent writers"),
            }
        );
    }
    let total = stored(&store)?;
    let by_state = rt.block_on(store.count_executions_by_state())?;
    println!("stored: {total} executions, by state {by_state:?}");

    // What the filters name: a common workflow, its first step's plugin,
    // a waiting plugin, a day in the middle of the month.
    let w = data::workflow(0);
    let [first_plugin, _] = data::plugins(0);
    let oldest = rt.block_on(store.executions(&ExecutionFilter {
        limit: Some(1),
        ..Default::default()
    }))?;
    let day_start = oldest.first().map_or(0, |e| e.created_ms) + data::DAYS / 2 * data::DAY_MS;
    let of =
        |state: Option<ExecState>, workflow: Option<&str>, plugin: Option<&str>| ExecutionFilter {
            state,
            workflow: workflow.map(str::to_owned),
            plugin: plugin.map(str::to_owned),
            ..Default::default()
        };
    use ExecState::{Completed, Failed, Suspended};
    let mut rows = vec![
        Row::list("first page, no filter", of(None, None, None)),
        Row::list("state=suspended", of(Some(Suspended), None, None)),
        Row::list("state=failed&workflow=W", of(Some(Failed), Some(&w), None)),
        Row::list(
            "workflow=W (any state: 4 ranges merged)",
            of(None, Some(&w), None),
        ),
        Row::list(
            "workflow=rare (0.1 %, any state)",
            of(None, Some(data::RARE), None),
        ),
        Row::list(
            "plugin=wait-for-callback&state=suspended",
            of(Some(Suspended), None, Some("wait-for-callback")),
        ),
        Row::list(
            "created_after/created_before: one day",
            ExecutionFilter {
                created_after_ms: Some(day_start),
                created_before_ms: Some(day_start + data::DAY_MS),
                ..Default::default()
            },
        ),
    ];
    // The 100th page of `state=completed`, its cursor found by paging.
    let mut deep = Row::list(
        "state=completed, page 100 by cursor",
        of(Some(Completed), None, None),
    );
    if let What::List(f) = &mut deep.what {
        let t = Instant::now();
        for _ in 0..99 {
            let page = rt.block_on(store.executions(f))?;
            f.past = page.last().map(|e| e.id.clone());
        }
        println!(
            "99 pages of state=completed, in process, to reach page 100: {}",
            fmt(t.elapsed())
        );
    }
    rows.push(deep);
    rows.push(Row::list(
        &format!("workflow=W&plugin={first_plugin} (its own index)"),
        of(None, Some(&w), Some(first_plugin)),
    ));
    rows.push(Row {
        label: "counts by state".into(),
        what: What::Counts,
    });
    rows.push(Row {
        label: "counts of workflow=W".into(),
        what: What::CountsOf(w.clone()),
    });
    rows.push(Row {
        label: "counts by=workflow".into(),
        what: What::CountsByWorkflow,
    });
    let mut measured: Vec<Measured> = rows.iter().map(|_| Measured::default()).collect();

    // In process: after and before.
    let scan = rt.block_on(async {
        let s: &dyn Store = store.as_ref();
        for (row, m) in rows.iter().zip(&mut measured) {
            let (after, n) = match &row.what {
                What::List(f) => {
                    let (after, page) = repeat(args.requests, row_bound, || async move {
                        Ok(s.executions(f).await?.len())
                    })
                    .await?;
                    let (before, (found, read)) =
                        repeat(args.before_runs, row_bound, || old_scan(s, f)).await?;
                    anyhow::ensure!(
                        found == page,
                        "{}: the old scan found {found}, the index {page}",
                        row.label
                    );
                    m.before = Some((before, read));
                    (after, page)
                }
                What::Counts => {
                    repeat(args.requests, row_bound, || async move {
                        Ok(s.count_executions_by_state().await?.len())
                    })
                    .await?
                }
                What::CountsOf(w) => {
                    repeat(args.requests, row_bound, || async move {
                        Ok(s.count_executions_by_workflow(Some(w)).await?.len())
                    })
                    .await?
                }
                What::CountsByWorkflow => {
                    repeat(args.requests, row_bound, || async move {
                        Ok(s.count_executions_by_workflow(None).await?.len())
                    })
                    .await?
                }
            };
            m.rows = n.to_string();
            m.after = Some(after);
        }
        // Counts by workflow before the counters: a scan of everything.
        let (took, counts) = repeat(args.before_runs, row_bound, || scan_counts(s)).await?;
        let kept = store.count_executions_by_workflow(None).await?;
        let agree = kept.len() == counts.len()
            && kept
                .iter()
                .all(|(w, s, n)| counts.get(&(w.clone(), *s)) == Some(n));
        println!(
            "full scan (each_execution, every record decoded): median {} over {} runs; \
             its counts by workflow and state agree with the counters: {agree}",
            fmt(took.median()),
            took.len()
        );
        anyhow::Ok(took)
    })?;
    for (row, m) in rows.iter().zip(&mut measured) {
        if matches!(row.what, What::CountsOf(_) | What::CountsByWorkflow) {
            m.before = Some((scan.clone(), total));
        }
    }
    drop(store);
    drop(pg);

    let disk = match &pg_url {
        Some(url) => rt.block_on(crate::pg::database_size(url))?,
        None => disk_usage(&data).1,
    };

    // Over HTTP: the daemon on the same data, retention off, with a
    // read-only token as a console would have.
    let config = temp.path().join("stephost.toml");
    let mut toml = format!("data_dir = {:?}\n", data.display().to_string());
    if let Some(url) = &pg_url {
        toml.push_str(&format!("store = {url:?}\n"));
    }
    toml.push_str("[retention]\ncompleted_ms = 0\nfailed_ms = 0\n");
    std::fs::write(&config, toml)?;
    let token = crate::daemon::token(&stephost, &config, "executions:read")?;
    let (serving, rss_serving, rss_after, settled) = rt.block_on(async {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse()?,
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .default_headers(headers)
            .build()?;
        let (daemon, serving) =
            Daemon::start(&stephost, &data, pg_url.as_deref(), Some(&config), &http).await?;
        let counts = format!("{}/v1/executions/counts", daemon.base);
        let t = Instant::now();
        let running = loop {
            let resp = http.get(&counts).send().await?;
            anyhow::ensure!(resp.status().is_success(), "{counts}: {}", resp.status());
            let answer: serde_json::Value = resp.json().await?;
            let running = answer["by_state"]["running"].as_u64().unwrap_or(0);
            if running == 0 || t.elapsed() > Duration::from_secs(120) {
                break running;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let settled = format!("{} (running left: {running})", fmt(t.elapsed()));
        let rss_serving = daemon.rss();
        for (row, m) in rows.iter().zip(&mut measured) {
            let url = format!("{}{}", daemon.base, row.path());
            let (lat, n) = repeat(args.requests, row_bound, || {
                let (http, url) = (&http, &url);
                async move {
                    let resp = http.get(url).send().await?;
                    anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
                    let body: serde_json::Value = resp.json().await?;
                    Ok(body["executions"].as_array().map_or(0, Vec::len))
                }
            })
            .await?;
            if matches!(row.what, What::List(_)) && n.to_string() != m.rows {
                m.rows = format!("{} (HTTP: {n})", m.rows);
            }
            m.http = Some(lat);
        }
        let rss_after = daemon.rss();
        daemon.stop().await;
        anyhow::Ok((serving, rss_serving, rss_after, settled))
    })?;

    println!();
    println!(
        "| request | rows | HTTP median | HTTP p99 | in process median | in process p99 | before: median | before: p99 (runs) | before read | before / after (in process, medians) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let opt = |s: &Option<Samples>, p: f64| s.as_ref().map_or("—".into(), |s| fmt(s.pct(p)));
    for (row, m) in rows.iter().zip(&measured) {
        let (b_med, b_p99, read, ratio) = match (&m.before, &m.after) {
            (Some((b, read)), Some(a)) => (
                fmt(b.median()),
                format!("{} ({})", fmt(b.pct(99.0)), b.len()),
                read.to_string(),
                ratio(b.median().as_secs_f64() / a.median().as_secs_f64()),
            ),
            _ => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        println!(
            "| `{}` {} | {} | {} | {} | {} | {} | {b_med} | {b_p99} | {read} | {ratio} |",
            row.path(),
            row.label,
            m.rows,
            opt(&m.http, 50.0),
            opt(&m.http, 99.0),
            opt(&m.after, 50.0),
            opt(&m.after, 99.0),
        );
    }
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| restart to serving | {} |", fmt(serving));
    println!("| running executions failed at start, settled in | {settled} |");
    println!(
        "| daemon RSS once serving / after the requests | {} / {} |",
        mib(rss_serving),
        mib(rss_after)
    );
    let what = if pg_url.is_some() {
        "database (pg_database_size)"
    } else {
        "data dir (allocated)"
    };
    println!(
        "| disk: {what} | {} ({:.0} bytes per execution) |",
        mib(disk),
        disk as f64 / total.max(1) as f64
    );
    Ok(())
}

/// `0.4×`, `12×`.
fn ratio(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.0}×")
    }
}
