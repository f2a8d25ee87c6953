//! The crash test: hundreds of executions wait on a partner that calls back
//! after random delays (sometimes twice, sometimes before the step has even
//! suspended), while the test SIGKILLs the real daemon at random moments
//! and restarts it on the same data dir and port. At the end:
//!
//! - every execution is in a terminal state, with exactly one terminal
//!   line in a status log whose from/to lines chain;
//! - every callback the daemon acknowledged (2xx) was applied: the
//!   execution's output carries that callback's body; at most one callback
//!   per step run is acknowledged, the rest are refused (409);
//! - no step ran to completion twice: the workflow's second step (an
//!   `http-task` to the partner) has exactly one step-run-id per execution,
//!   and no step run's request is sent twice by one daemon process
//!   (re-sends across a crash are allowed: that is what step-run-ids are for);
//! - every result is delivered to the client's `callback_url`, signed, and
//!   a repeated delivery is the same message (same `webhook-id`, same body).
//!
//! Ignored by default (about a minute); run it with
//! `cargo test -p stephost --test crash -- --ignored --nocapture`.
//! `CRASH_SEED` replays a run's choices (which executions, when to kill);
//! `CRASH_EXECUTIONS` and `CRASH_KILLS` scale it. A failing run prints its
//! seed; replay it with one command:
//! `CRASH_SEED=<seed> cargo test -p stephost --test crash -- --ignored --nocapture`.
//! (The kills land where the machine's timing puts them, so a replay
//! repeats the plan, not every interleaving.)

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use sha2::Sha256;

use common::{Process, client, create_token, free_port, write_config};
use stephost_tests::{Partner, PartnerRequest};

const SIGNING_KEY: &[u8] = b"crash-test-signing-key-0123456789";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One logical callback the partner sent: every try, and how it ended.
#[derive(Debug, Clone)]
struct CallbackSent {
    step_run: String,
    body: Value,
    /// Status of each try; `None`: no answer (the daemon was down or died).
    tries: Vec<Option<u16>>,
    /// Sent while the partner had not yet answered the step's request.
    early: bool,
}

impl CallbackSent {
    fn last(&self) -> Option<u16> {
        self.tries.last().copied().flatten()
    }
    fn acknowledged(&self) -> bool {
        self.last().is_some_and(|s| (200..300).contains(&s))
    }
    /// No answer on some try, then refused as already delivered: the
    /// unanswered try may have been applied just before a kill.
    fn maybe_applied(&self) -> bool {
        self.tries.iter().any(Option::is_none) && self.last() == Some(409)
    }
}

/// What the partner and the client saw.
#[derive(Default)]
struct World {
    /// Which daemon process is running (incremented before each restart).
    incarnation: AtomicU32,
    /// Step requests: (step-run-id, callback URL, incarnation).
    jobs: Mutex<Vec<(String, String, u32)>>,
    /// Callback URLs a job was started for, by step-run-id.
    job_urls: Mutex<HashMap<String, BTreeSet<String>>>,
    callbacks: Mutex<Vec<CallbackSent>>,
    /// `/done` requests: (execution, X-Http-Task-Guid, result, incarnation).
    done: Mutex<Vec<(String, String, Value, u32)>>,
    /// Deliveries: (webhook-id, authentic, body).
    results: Mutex<Vec<(String, bool, Value)>>,
    rng: Mutex<Option<rand::rngs::StdRng>>,
}

impl World {
    fn random(&self) -> f64 {
        self.rng.lock().unwrap().as_mut().unwrap().r#gen::<f64>()
    }
    fn range(&self, lo: u64, hi: u64) -> u64 {
        self.rng.lock().unwrap().as_mut().unwrap().gen_range(lo..hi)
    }
}

/// Sends one callback until the daemon answers it with anything but a 5xx.
async fn send_callback(
    world: &World,
    url: &str,
    body: Value,
    step_run: &str,
    early: bool,
) -> CallbackSent {
    let mut sent = CallbackSent {
        step_run: step_run.to_owned(),
        body: body.clone(),
        tries: Vec::new(),
        early,
    };
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let answer = client()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        let status = answer.ok().map(|r| r.status().as_u16());
        sent.tries.push(status);
        match status {
            Some(s) if s < 500 => break,
            _ if Instant::now() > deadline => break,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    world.callbacks.lock().unwrap().push(sent.clone());
    sent
}

/// The partner's job: call back after a random delay, sometimes twice.
async fn job(world: Arc<World>, url: String, step_run: String, n: u64, early: bool) {
    let body = |nonce: &str| json!({"n": n, "step_run": step_run, "nonce": nonce});
    if !early {
        tokio::time::sleep(Duration::from_millis(world.range(0, 1500))).await;
    }
    let first = send_callback(&world, &url, body("first"), &step_run, early).await;
    if first.acknowledged() && world.random() < 0.25 {
        tokio::time::sleep(Duration::from_millis(world.range(0, 300))).await;
        send_callback(&world, &url, body("second"), &step_run, false).await;
    }
}

fn authentic(req: &PartnerRequest) -> bool {
    let (Some(id), Some(ts), Some(sig)) = (
        req.header("webhook-id"),
        req.header("webhook-timestamp"),
        req.header("webhook-signature"),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_KEY).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&req.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    sig.split(' ').any(|s| s == expected)
}

async fn partner(world: Arc<World>) -> Partner {
    Partner::start(move |req: PartnerRequest| {
        let world = world.clone();
        async move {
            let incarnation = world.incarnation.load(Ordering::SeqCst);
            match req.uri.as_str() {
                "/jobs" => {
                    let step_run = req.header("x-step-run-id").unwrap_or_default().to_owned();
                    let url = req.header("x-callback-url").unwrap_or_default().to_owned();
                    let n = req.json()["n"].as_u64().unwrap_or(u64::MAX);
                    world
                        .jobs
                        .lock()
                        .unwrap()
                        .push((step_run.clone(), url.clone(), incarnation));
                    // A partner dedupes by step-run-id: a re-sent request
                    // for a job it has starts nothing new (unless it names a
                    // new callback URL, which a correct daemon never does).
                    let new = world
                        .job_urls
                        .lock()
                        .unwrap()
                        .entry(step_run.clone())
                        .or_default()
                        .insert(url.clone());
                    if new {
                        if world.random() < 0.1 {
                            // Calls back before it answers: the step has not
                            // suspended yet. (In a task of its own, so the
                            // partner remembers it even if the daemon dies and
                            // hangs up on this request meanwhile.)
                            let early = tokio::spawn(job(world.clone(), url, step_run, n, true));
                            let _ = early.await;
                        } else {
                            tokio::spawn(job(world.clone(), url, step_run, n, false));
                        }
                    }
                    (202, json!({}))
                }
                "/done" => {
                    let body = req.json();
                    world.done.lock().unwrap().push((
                        body["execution"].as_str().unwrap_or_default().to_owned(),
                        req.header("x-http-task-guid")
                            .unwrap_or_default()
                            .to_owned(),
                        body["result"].clone(),
                        incarnation,
                    ));
                    (200, body)
                }
                "/results" => {
                    world.results.lock().unwrap().push((
                        req.header("webhook-id").unwrap_or_default().to_owned(),
                        authentic(&req),
                        req.json(),
                    ));
                    (200, json!({}))
                }
                _ => (404, json!({})),
            }
        }
    })
    .await
}

async fn list(base: &str, token: &str, state: &str) -> Vec<Value> {
    let url = match state {
        "" => format!("{base}/v1/executions?limit=10000"),
        s => format!("{base}/v1/executions?state={s}&limit=10000"),
    };
    let resp = client().get(url).bearer_auth(token).send().await;
    match resp {
        Ok(r) if r.status() == 200 => r.json::<Value>().await.unwrap()["executions"]
            .as_array()
            .unwrap()
            .clone(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about a minute of load with SIGKILLs; run with --ignored"]
async fn nothing_is_lost_and_nothing_done_twice_across_sigkills() {
    let started_at = Instant::now();
    let executions = env_or("CRASH_EXECUTIONS", 500) as usize;
    let kills = env_or("CRASH_KILLS", 6) as usize;
    let seed = env_or("CRASH_SEED", rand::random::<u32>().into());
    println!(
        "crash test: {executions} executions, {kills} kills, seed {seed} (CRASH_SEED={seed} replays the choices)"
    );
    let world = Arc::new(World {
        rng: Mutex::new(Some(rand::rngs::StdRng::seed_from_u64(seed))),
        ..Default::default()
    });
    let partner = partner(world.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("daemon.log");
    let token = create_token(&data);
    let secret = base64::engine::general_purpose::STANDARD.encode(SIGNING_KEY);
    let config = write_config(
        dir.path(),
        &format!(
            r#"
shutdown_grace_ms = 2000
egress_allow = ["127.0.0.0/8"]

[delivery]
signing_secret = "whsec_{secret}"
callback_retry_interval_ms = 300
callback_maximum_retries = 1000
request_timeout_ms = 2000

[workflows.crash]
steps = [
  {{ name = "wait", plugin = "wait-for-callback", config = {{ url = "{p}/jobs", timeout_ms = 600000 }} }},
  {{ name = "done", plugin = "http-task", config = {{ url = "{p}/done", headers = {{ Content-Type = "application/json" }}, body = '{{"execution": "{{{{execution_id}}}}", "result": {{{{steps.wait}}}}}}' }} }},
]
"#,
            p = partner.base
        ),
    );
    let port = free_port();
    let mut daemon = Process::spawn(&config, &data, port, &log);
    let base = daemon.base.clone();
    let mut recovery = vec![daemon.wait_healthy(Duration::from_secs(60)).await];

    // The client: starts executions at a steady pace, retrying while the
    // daemon is down (a start whose answer was lost may leave an execution
    // the client does not know of; the checks below cover those too).
    let known: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let submitted = Arc::new(AtomicUsize::new(0));
    let submitter = {
        let (known, submitted, base, token, results) = (
            known.clone(),
            submitted.clone(),
            base.clone(),
            token.clone(),
            format!("{}/results", partner.base),
        );
        tokio::spawn(async move {
            let limit = Arc::new(tokio::sync::Semaphore::new(12));
            let mut tasks = Vec::new();
            for n in 0..executions as u64 {
                let permit = limit.clone().acquire_owned().await.unwrap();
                let (known, submitted, base, token, results) = (
                    known.clone(),
                    submitted.clone(),
                    base.clone(),
                    token.clone(),
                    results.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let body =
                        json!({"workflow": "crash", "input": {"n": n}, "callback_url": results});
                    loop {
                        let resp = client()
                            .post(format!("{base}/v1/executions"))
                            .bearer_auth(&token)
                            .json(&body)
                            .timeout(Duration::from_secs(10))
                            .send()
                            .await;
                        if let Ok(r) = resp
                            && r.status() == 202
                        {
                            let v: Value = r.json().await.unwrap();
                            known
                                .lock()
                                .unwrap()
                                .insert(v["id"].as_str().unwrap().to_owned(), n);
                            submitted.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    drop(permit);
                }));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };

    // The killer.
    let mut kill_log = Vec::new();
    for k in 0..kills {
        let uptime = Duration::from_millis(world.range(1500, 4000));
        tokio::time::sleep(uptime).await;
        daemon.kill();
        let at = started_at.elapsed();
        // Let requests already on their way from the dead process land
        // before the next one starts.
        tokio::time::sleep(Duration::from_millis(150)).await;
        world.incarnation.fetch_add(1, Ordering::SeqCst);
        daemon = Process::spawn(&config, &data, port, &log);
        let took = daemon.wait_healthy(Duration::from_secs(60)).await;
        recovery.push(took);
        kill_log.push((
            k + 1,
            at,
            submitted.load(Ordering::SeqCst),
            world.callbacks.lock().unwrap().len(),
        ));
    }
    let kill_phase = started_at.elapsed();
    tokio::time::timeout(Duration::from_secs(120), submitter)
        .await
        .expect("the client got its executions started")
        .unwrap();

    // Everything settles on the last daemon: no execution left running or
    // suspended, and a delivery for every execution.
    let deadline = Instant::now() + Duration::from_secs(120);
    let all = loop {
        let all = list(&base, &token, "").await;
        let open = all
            .iter()
            .filter(|e| e["state"] == "running" || e["state"] == "suspended")
            .count();
        let delivered: BTreeSet<String> = world
            .results
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, _, b)| b["id"].as_str().map(str::to_owned))
            .collect();
        if !all.is_empty()
            && open == 0
            && all
                .iter()
                .all(|e| delivered.contains(e["id"].as_str().unwrap()))
        {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {open} of {} executions open, {} delivered",
            all.len(),
            delivered.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let settled = started_at.elapsed();

    // The checks.
    let known = known.lock().unwrap().clone();
    assert_eq!(
        known.len(),
        executions,
        "every start was answered once in the end"
    );
    let ids: BTreeSet<String> = all
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        known.keys().all(|id| ids.contains(id)),
        "no acknowledged start was lost"
    );
    let orphans = ids.len() - known.len();
    let callbacks = world.callbacks.lock().unwrap().clone();
    let mut by_run: HashMap<String, Vec<CallbackSent>> = HashMap::new();
    for c in &callbacks {
        by_run
            .entry(c.step_run.clone())
            .or_default()
            .push(c.clone());
    }
    let done = world.done.lock().unwrap().clone();
    let results = world.results.lock().unwrap().clone();
    let jobs = world.jobs.lock().unwrap().clone();

    let mut problems = Vec::new();
    let mut maybe_applied = 0;
    let mut wait_runs = BTreeSet::new();
    for id in &ids {
        let exec: Value = client()
            .get(format!("{base}/v1/executions/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let state = exec["state"].as_str().unwrap();
        if state != "completed" {
            problems.push(format!("{id} ended {state}: {}", exec["error"]));
            continue;
        }
        // The status log: a chain from `running`, one terminal line, last.
        let log = exec["status_log"].as_array().unwrap();
        let mut previous = "running";
        for line in log {
            if line["from"] != previous {
                problems.push(format!("{id}: status log breaks its chain at {line}"));
            }
            previous = line["to"].as_str().unwrap();
        }
        let terminal = log
            .iter()
            .filter(|l| l["to"] == "completed" || l["to"] == "failed")
            .count();
        if terminal != 1 || previous != state {
            problems.push(format!(
                "{id}: {terminal} terminal lines, last goes to {previous}"
            ));
        }
        // The applied callback is the acknowledged one.
        let applied = &exec["output"]["result"];
        let run = applied["step_run"].as_str().unwrap_or_default().to_owned();
        wait_runs.insert(run.clone());
        let sent = by_run.get(&run).cloned().unwrap_or_default();
        let acked: Vec<&CallbackSent> = sent.iter().filter(|c| c.acknowledged()).collect();
        match acked.as_slice() {
            [one] => {
                if one.body != *applied {
                    problems.push(format!(
                        "{id}: acknowledged {} but applied {applied}",
                        one.body
                    ));
                }
            }
            [] => {
                // Its answer was lost in a kill, and a retry was refused as
                // already delivered: the applied body must be that one.
                if sent.iter().any(|c| c.maybe_applied() && c.body == *applied) {
                    maybe_applied += 1;
                } else {
                    problems.push(format!(
                        "{id}: applied {applied}, which nobody sent unanswered"
                    ));
                }
            }
            more => problems.push(format!(
                "{id}: {} callbacks acknowledged for one step run",
                more.len()
            )),
        }
        if exec["output"]["execution"] != json!(id) {
            problems.push(format!("{id}: output {}", exec["output"]));
        }
        // The second step ran to completion once: one step-run-id.
        let guids: BTreeSet<&str> = done
            .iter()
            .filter(|(e, ..)| e == id)
            .map(|(_, g, ..)| g.as_str())
            .collect();
        if guids.len() != 1 {
            problems.push(format!(
                "{id}: the done step ran under {} step-run-ids",
                guids.len()
            ));
        }
        if done.iter().any(|(e, _, r, _)| e == id && r != applied) {
            problems.push(format!("{id}: the done step saw another result"));
        }
        // Its result was delivered, signed, as one message.
        let mine: Vec<&(String, bool, Value)> = results
            .iter()
            .filter(|(_, _, b)| b["id"] == json!(id))
            .collect();
        let expected = json!({"id": id, "state": "completed", "output": exec["output"]});
        if mine.is_empty() || mine.iter().any(|(_, ok, b)| !ok || *b != expected) {
            problems.push(format!("{id}: deliveries {mine:?}, expected {expected}"));
        }
        let webhook_ids: BTreeSet<&str> = mine.iter().map(|(w, ..)| w.as_str()).collect();
        if webhook_ids.len() != 1 {
            problems.push(format!("{id}: {} different webhook-ids", webhook_ids.len()));
        }
    }
    // No process sent one step run's request twice.
    let mut sends: HashMap<(String, u32), usize> = HashMap::new();
    for (run, _, incarnation) in &jobs {
        *sends.entry((run.clone(), *incarnation)).or_default() += 1;
    }
    for (g_exec, guid, _, incarnation) in &done {
        *sends
            .entry((format!("{g_exec}/{guid}"), *incarnation))
            .or_default() += 1;
    }
    for ((run, incarnation), n) in &sends {
        if *n > 1 {
            problems.push(format!(
                "step run {run} sent {n} times by process {incarnation}"
            ));
        }
    }
    let url_changes = world
        .job_urls
        .lock()
        .unwrap()
        .values()
        .filter(|urls| urls.len() > 1)
        .count();
    if url_changes > 0 {
        problems.push(format!(
            "{url_changes} re-run step runs came with a new callback URL"
        ));
    }

    let resent_jobs = jobs.len() - jobs.iter().map(|(r, ..)| r).collect::<BTreeSet<_>>().len();
    let resent_done = done.len()
        - done
            .iter()
            .map(|(_, g, ..)| g)
            .collect::<BTreeSet<_>>()
            .len();
    let tries: Vec<Option<u16>> = callbacks.iter().flat_map(|c| c.tries.clone()).collect();
    let count = |s: u16| tries.iter().filter(|t| **t == Some(s)).count();
    let redeliveries = results.len()
        - results
            .iter()
            .map(|(w, ..)| w)
            .collect::<BTreeSet<_>>()
            .len();
    println!(
        "executions:               {} ({} started by the client, {} orphans of lost answers)",
        ids.len(),
        known.len(),
        orphans
    );
    println!("kills (SIGKILL):          {}", kill_log.len());
    for (k, at, submitted, callbacks) in &kill_log {
        println!(
            "  kill {k} at {:>5.1} s: {submitted} executions started, {callbacks} callbacks settled so far",
            at.as_secs_f64()
        );
    }
    let recovery_ms: Vec<u128> = recovery.iter().map(Duration::as_millis).collect();
    println!(
        "time to recover (start to /healthz), first start then each restart, ms: {recovery_ms:?}"
    );
    println!(
        "callbacks:                {} sent ({} early), {} tries; 200: {}, 202 (stored): {}, 409 (duplicates refused): {}, 410: {}, no answer: {}",
        callbacks.len(),
        callbacks.iter().filter(|c| c.early).count(),
        tries.len(),
        count(200),
        count(202),
        count(409),
        count(410),
        tries.iter().filter(|t| t.is_none()).count()
    );
    println!(
        "applied though unanswered: {maybe_applied} (answer lost in a kill, retry refused as delivered)"
    );
    println!("step requests re-sent after a crash: {resent_jobs} (wait), {resent_done} (done)");
    println!(
        "deliveries:               {} ({} repeats of a message after a crash)",
        results.len(),
        redeliveries
    );
    println!(
        "runtime:                  {:.1} s (kill phase {:.1} s, settled at {:.1} s)",
        started_at.elapsed().as_secs_f64(),
        kill_phase.as_secs_f64(),
        settled.as_secs_f64()
    );
    // Every kill cut into live traffic: between one kill and the next the
    // daemon took new starts or callbacks (else a kill tested nothing).
    let mut before = (0, 0);
    for (k, _, submitted, callbacks) in &kill_log {
        assert!(
            (*submitted, *callbacks) != before,
            "kill {k} came after no traffic since the last one ({submitted} started, {callbacks} callbacks)"
        );
        before = (*submitted, *callbacks);
    }
    assert!(
        wait_runs.len() == ids.len(),
        "one wait step run per execution"
    );
    if !problems.is_empty() {
        // Keep the data dir and the daemon's log for the post-mortem.
        let kept = dir.keep();
        println!("data dir and daemon log kept in {}", kept.display());
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\n(daemon log: {})",
        problems.len(),
        problems.join("\n"),
        log.display()
    );
    daemon.term();
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}
