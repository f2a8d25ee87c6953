//! Three `stephost serve` processes on one PostgreSQL database, under
//! load, and one of them SIGKILLed at a time (a different one each time,
//! then restarted): the running executions of a killed node are taken over
//! by another within the lease and re-run with the same step-run-id; every
//! acknowledged start ends completed; no execution is resumed by two
//! callbacks; what a step's partner is told to call back reaches whichever
//! node is up.
//!
//! The partner holds each step request for a while before it answers
//! (so that a kill finds steps mid-call), then calls back on a node it
//! picks at random, trying the others while one is down.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::{Value, json};

use common::{Process, client, free_port, write_config};
use stephost::store::pg_testing;
use stephost_tests::Partner;

/// The lease the nodes run with: short, so that the test is.
const LEASE_MS: u64 = 2_000;
const EXECUTIONS: usize = 45;
const KILLS: usize = 3;

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Node bases the partner may call back on.
type Bases = Arc<Vec<String>>;

/// Sends a callback to a random node, the next one when a node is down;
/// returns the status of the answer that came (None: no node answered
/// within the time).
async fn call_back_somewhere(bases: &Bases, path: &str, body: &Value) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = rand::thread_rng().gen_range(0..bases.len());
    while Instant::now() < deadline {
        let url = format!("{}{path}", bases[i % bases.len()]);
        match client()
            .post(&url)
            .json(body)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(resp) if resp.status().is_server_error() => {}
            Ok(resp) => return Some(resp.status().as_u16()),
            Err(_) => {}
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_executions_are_taken_over_and_nothing_acknowledged_is_lost() {
    let url = pg_testing::database().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "store = \"{url}\"\negress_allow = [\"127.0.0.0/8\"]\nshutdown_grace_ms = 500\n\
             [cluster]\nlease_ms = {LEASE_MS}\n"
        ),
    );
    let token = {
        let out = std::process::Command::new(common::BIN)
            .args(["token", "create", "--name", "t", "--permission", "admin"])
            .arg("--config")
            .arg(&config)
            .env("STEPHOST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "token create on the database: {out:?}"
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_owned()
    };
    let addresses = [(); 3].map(|()| free_port());
    let bases: Bases = Arc::new(addresses.iter().map(|a| format!("http://{a}")).collect());
    let log = dir.path().join("daemons.log");
    let data = |i: usize| dir.path().join(format!("node-{i}"));
    let mut nodes: Vec<Process> = (0..3)
        .map(|i| Process::spawn(&config, &data(i), addresses[i], &log))
        .collect();
    for node in &mut nodes {
        node.wait_healthy(Duration::from_secs(60)).await;
    }

    // step-run-id -> how many requests carried it; the execution's number
    // (its input) -> the callback bodies a node acknowledged.
    let runs = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let acked = Arc::new(Mutex::new(BTreeMap::<u64, Vec<Value>>::new()));
    // The callback bodies sent at all: a node killed after applying one
    // but before answering leaves it applied and unanswered, and the
    // retry on another node hears "already delivered".
    let sent = Arc::new(Mutex::new(BTreeMap::<u64, Vec<Value>>::new()));
    let partner = {
        let (runs, acked, sent, bases) = (runs.clone(), acked.clone(), sent.clone(), bases.clone());
        Partner::start(move |req| {
            let (runs, acked, sent, bases) =
                (runs.clone(), acked.clone(), sent.clone(), bases.clone());
            async move {
                let run = req.header("x-step-run-id").unwrap_or("").to_owned();
                let nth = {
                    let mut runs = runs.lock().unwrap();
                    let n = runs.entry(run.clone()).or_default();
                    *n += 1;
                    *n
                };
                let callback = req.callback_url();
                let path = callback[callback.find("/v1/callbacks/").unwrap()..].to_owned();
                let execution = req.json()["n"].as_u64().unwrap();
                let (hold, later) = {
                    let mut rng = rand::thread_rng();
                    (rng.gen_range(200..900), rng.gen_range(50..300))
                };
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(hold + later)).await;
                    let body = json!({"run": run, "nth": nth});
                    sent.lock()
                        .unwrap()
                        .entry(execution)
                        .or_default()
                        .push(body.clone());
                    if let Some(status) = call_back_somewhere(&bases, &path, &body).await
                        && (200..300).contains(&status)
                    {
                        acked
                            .lock()
                            .unwrap()
                            .entry(execution)
                            .or_default()
                            .push(body);
                    }
                });
                tokio::time::sleep(Duration::from_millis(hold)).await;
                (202, json!({}))
            }
        })
        .await
    };

    // Starts go to the nodes in turn (to the next one while one is down);
    // a node is killed after every EXECUTIONS / (KILLS + 1) starts.
    let mut started = Vec::new();
    let mut killed_at = Vec::new();
    for n in 0..EXECUTIONS {
        if n > 0 && n % (EXECUTIONS / (KILLS + 1)) == 0 && killed_at.len() < KILLS {
            let victim = killed_at.len() % 3;
            nodes[victim].kill();
            killed_at.push(epoch_ms());
            tokio::time::sleep(Duration::from_millis(300)).await;
            nodes[victim] = Process::spawn(&config, &data(victim), addresses[victim], &log);
            nodes[victim].wait_healthy(Duration::from_secs(60)).await;
        }
        let body = json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {"n": n},
        });
        for k in 0..3 {
            let base = &bases[(n + k) % 3];
            let resp = client()
                .post(format!("{base}/v1/executions"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await;
            if let Ok(resp) = resp
                && resp.status() == 201
            {
                let v: Value = resp.json().await.unwrap();
                started.push((v["id"].as_str().unwrap().to_owned(), n as u64));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(
        started.len(),
        EXECUTIONS,
        "every start is acknowledged by some node"
    );

    // Everything acknowledged ends, within a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finished = BTreeMap::new();
    while finished.len() < started.len() {
        for (id, _) in &started {
            if finished.contains_key(id) {
                continue;
            }
            let base = &bases[rand::thread_rng().gen_range(0..3)];
            let Ok(resp) = client()
                .get(format!("{base}/v1/executions/{id}"))
                .bearer_auth(&token)
                .send()
                .await
            else {
                continue;
            };
            let exec: Value = resp.json().await.unwrap_or(Value::Null);
            if exec["state"] == "completed" || exec["state"] == "failed" {
                finished.insert(id.clone(), exec);
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every acknowledged execution ended: {} of {} did; see {}",
            finished.len(),
            started.len(),
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    let runs = runs.lock().unwrap().clone();
    let mut taken_over = 0;
    let mut slowest_takeover = 0;
    for (id, n) in &started {
        let exec = &finished[id];
        assert_eq!(exec["state"], "completed", "{exec:#}");
        let events: Vec<&str> = exec["status_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            events.iter().filter(|e| **e == "callback").count(),
            1,
            "resumed by exactly one callback: {exec:#}"
        );
        // The output is a callback the partner sent, and the one a node
        // acknowledged when one did (a node killed between applying a
        // callback and answering leaves none acknowledged).
        let output = &exec["output"];
        let acknowledged = acked.get(n).cloned().unwrap_or_default();
        let tried = sent.get(n).cloned().unwrap_or_default();
        assert!(
            tried.contains(output),
            "output {output} is a callback sent for {id}: {tried:?}"
        );
        assert!(
            acknowledged.is_empty() || acknowledged.contains(output),
            "output {output} is the acknowledged callback of {id}: {acknowledged:?}"
        );
        if let Some(entry) = exec["status_log"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"] == "taken-over")
        {
            taken_over += 1;
            // Taken over within the lease of the kill that orphaned it (and
            // the second between looks for orphans), on a loaded machine.
            let at = entry["time_ms"].as_u64().unwrap();
            let kill = killed_at.iter().rev().find(|k| **k <= at).unwrap();
            let after = at - kill;
            slowest_takeover = slowest_takeover.max(after);
            assert!(
                after <= LEASE_MS + 3_000,
                "{id} taken over {after} ms after the kill, with a {LEASE_MS} ms lease"
            );
        }
    }
    assert!(
        taken_over > 0,
        "some step was mid-call when its node was killed, and another node took it over"
    );
    // A re-run sends the partner the same step-run-id: more requests
    // than step runs, and never more step runs than executions.
    let requests: usize = runs.values().sum();
    assert!(runs.len() <= EXECUTIONS, "{runs:?}");
    assert!(
        requests > runs.len(),
        "a taken-over step re-sent its step-run-id"
    );
    eprintln!(
        "{} executions, {} kills, {taken_over} taken over (the slowest {slowest_takeover} ms after its kill, lease {LEASE_MS} ms), {} step runs, {requests} step requests",
        finished.len(),
        killed_at.len(),
        runs.len()
    );
    for node in &mut nodes {
        node.term();
    }
    for node in &mut nodes {
        node.wait_exit(Duration::from_secs(10)).await;
    }
}
