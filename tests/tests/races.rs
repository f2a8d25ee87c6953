//! Races that need real parallelism: the daemon runs on a multi-threaded
//! runtime, as `stephost serve` does, and each pair of contenders is fired
//! at the same moment from separate tasks. Whichever wins, the outcome is
//! one of the documented ones, and the loser is told so: the
//! compare-and-swap on the execution decides, never both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use stephost_tests::{Partner, TestDaemon, call_back, events};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Starts `n` wait-for-callback executions that wait `timeout_ms`, and
/// returns (id, callback URL, deadline) of each once all are suspended.
async fn suspended(
    daemon: &TestDaemon,
    partner: &Partner,
    n: usize,
    timeout_ms: u64,
) -> Vec<(String, String, u64)> {
    let before = partner.requests().len();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = daemon
            .start_execution(json!({
                "plugin": "wait-for-callback",
                "config": {"url": partner.base, "timeout_ms": timeout_ms},
                "input": {"i": i},
            }))
            .await;
        ids.push(id);
    }
    let requests = partner.wait_for_requests(before + n).await;
    let mut out = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let exec = daemon.wait_for(&id, "suspended").await;
        let url = callback_url_of(&requests[before..], i);
        let deadline = exec["waiting_until_ms"].as_u64().unwrap();
        out.push((id, url, deadline));
    }
    out
}

/// The callback URL the partner was given for the execution with input
/// `{"i": i}`, which the step posts as its body.
fn callback_url_of(requests: &[stephost_tests::PartnerRequest], i: usize) -> String {
    requests
        .iter()
        .find(|r| r.json()["i"].as_u64() == Some(i as u64))
        .unwrap_or_else(|| panic!("no partner request for input {i}"))
        .callback_url()
}

/// The execution once it has ended (completed or failed).
async fn ended(daemon: &TestDaemon, id: &str) -> Value {
    let until = std::time::Instant::now() + stephost_tests::WAIT;
    loop {
        let exec = daemon.execution(id).await;
        if exec["state"] == "completed" || exec["state"] == "failed" {
            return exec;
        }
        assert!(std::time::Instant::now() < until, "never ended: {exec:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn endings(exec: &Value) -> usize {
    events(exec)
        .iter()
        .filter(|e| matches!(e.as_str(), "completed" | "failed"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callback_at_its_deadline_either_resumes_the_step_or_is_told_it_expired() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    // Long enough that all 16 are suspended before the first deadline.
    let waits = suspended(&daemon, &partner, 16, 3_000).await;

    // Each callback is sent within ±30 ms of its deadline, where the timer
    // and the callback contend for the same execution.
    let calls = waits.iter().enumerate().map(|(i, (id, url, deadline))| {
        let (id, url) = (id.clone(), url.clone());
        let at = deadline + (i as u64 % 7) * 10 - 30;
        tokio::spawn(async move {
            let wait = at.saturating_sub(now_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let (status, body) = call_back(&url, format!(r#"{{"for": "{id}"}}"#)).await;
            (id, status, body)
        })
    });
    let mut seen = (0, 0);
    for call in calls {
        let (id, status, body) = call.await.unwrap();
        let exec = ended(&daemon, &id).await;
        assert_eq!(endings(&exec), 1, "one ending: {exec:#}");
        match status {
            200 => {
                seen.0 += 1;
                let exec = daemon.wait_for(&id, "completed").await;
                assert_eq!(exec["output"], json!({"for": id}), "{exec:#}");
            }
            410 => {
                seen.1 += 1;
                assert_eq!(body["error"]["code"], "callback-expired", "{body}");
                assert_eq!(exec["state"], "failed", "{exec:#}");
                assert_eq!(exec["error"]["code"], "callback-timeout", "{exec:#}");
            }
            other => panic!("callback answered {other}: {body}; {exec:#}"),
        }
    }
    println!("resumed {}, expired {}", seen.0, seen.1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callback_and_an_admin_cancel_at_once_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let waits = suspended(&daemon, &partner, 16, 600_000).await;

    let base = daemon.base.clone();
    let token = daemon.token.clone();
    let races = waits.iter().map(|(id, url, _)| {
        let (id, url, base, token) = (id.clone(), url.clone(), base.clone(), token.clone());
        tokio::spawn(async move {
            let go = std::sync::Arc::new(tokio::sync::Barrier::new(2));
            let go2 = go.clone();
            let body = format!(r#"{{"for": "{id}"}}"#);
            let callback = tokio::spawn(async move {
                go2.wait().await;
                call_back(&url, body).await
            });
            let cancel_url = format!("{base}/v1/executions/{id}/cancel");
            let cancel = tokio::spawn(async move {
                go.wait().await;
                let resp = stephost_tests::client()
                    .post(cancel_url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap_or(Value::Null))
            });
            (id, callback.await.unwrap(), cancel.await.unwrap())
        })
    });
    let mut seen = (0, 0, 0);
    for race in races {
        let (id, (cb_status, cb_body), (cancel_status, cancel_body)) = race.await.unwrap();
        let exec = ended(&daemon, &id).await;
        assert_eq!(endings(&exec), 1, "one ending: {exec:#}");
        match (cb_status, cancel_status) {
            (200, 409) => {
                seen.0 += 1;
                assert_eq!(cancel_body["error"]["code"], "wrong-state", "{cancel_body}");
                let exec = daemon.wait_for(&id, "completed").await;
                assert_eq!(exec["output"], json!({"for": id}), "{exec:#}");
            }
            // `/cancel` applies to a running execution too: the callback
            // resumed the step, and the cancel ended it before the step's
            // outcome could be committed.
            (200, 200) => {
                seen.2 += 1;
                assert!(events(&exec).contains(&"callback".to_owned()), "{exec:#}");
                assert_eq!(exec["state"], "failed", "{exec:#}");
                assert_eq!(exec["error"]["code"], "cancelled", "{exec:#}");
            }
            (410, 200) => {
                seen.1 += 1;
                assert!(!events(&exec).contains(&"callback".to_owned()), "{exec:#}");
                assert_eq!(cb_body["error"]["code"], "callback-expired", "{cb_body}");
                assert_eq!(exec["state"], "failed", "{exec:#}");
                assert_eq!(exec["error"]["code"], "cancelled", "{exec:#}");
            }
            other => {
                panic!("callback/cancel answered {other:?}: {cb_body} {cancel_body}; {exec:#}")
            }
        }
    }
    println!(
        "resumed {}, cancelled while suspended {}, cancelled after resuming {}",
        seen.0, seen.1, seen.2
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_callback_racing_an_admin_retry_never_resumes_the_retried_step() {
    let dir = tempfile::tempdir().unwrap();
    // The partner refuses every request until the test says otherwise: the
    // first attempts fail (partner-error) with a callback URL handed out,
    // and each retry, accepted, waits on a URL of its own.
    let refusing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let refuse = refusing.clone();
    let partner = Partner::start(move |_| {
        let refuse = refuse.load(std::sync::atomic::Ordering::SeqCst);
        async move {
            if refuse {
                (503, json!({"busy": true}))
            } else {
                (202, json!({}))
            }
        }
    })
    .await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let id = daemon
            .start_execution(json!({
                "plugin": "wait-for-callback",
                "config": {"url": partner.base},
                "input": {"i": i},
            }))
            .await;
        let exec = daemon.wait_for(&id, "failed").await;
        assert_eq!(exec["error"]["code"], "partner-error", "{exec:#}");
        ids.push(id);
    }
    let first = partner.wait_for_requests(12).await;
    let waits: Vec<(String, String, u64)> = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, callback_url_of(&first, i), 0))
        .collect();
    refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    let before = partner.requests().len();
    let races = waits.iter().map(|(id, url, _)| {
        let (id, url) = (id.clone(), url.clone());
        let base = daemon.base.clone();
        let token = daemon.token.clone();
        tokio::spawn(async move {
            let go = std::sync::Arc::new(tokio::sync::Barrier::new(2));
            let go2 = go.clone();
            let late = tokio::spawn(async move {
                go2.wait().await;
                call_back(&url, r#"{"late": true}"#).await
            });
            let retry_url = format!("{base}/v1/executions/{id}/retry");
            let retry = tokio::spawn(async move {
                go.wait().await;
                stephost_tests::client()
                    .post(retry_url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            });
            (id, late.await.unwrap(), retry.await.unwrap())
        })
    });
    let mut ids = Vec::new();
    for race in races {
        let (id, (late_status, late_body), retry_status) = race.await.unwrap();
        assert_eq!(retry_status, 200, "the retry of {id}");
        assert_eq!(
            (late_status, &late_body["error"]["code"]),
            (410, &json!("callback-expired")),
            "the old callback of {id}: {late_body}"
        );
        ids.push(id);
    }
    // Every retry suspends again on a new callback URL; answering that one
    // resumes it.
    let requests = partner.wait_for_requests(before + ids.len()).await;
    for (i, id) in ids.iter().enumerate() {
        daemon.wait_for(id, "suspended").await;
        let fresh = callback_url_of(&requests[before..], i);
        let old = waits.iter().find(|(w, _, _)| w == id).unwrap().1.clone();
        assert_ne!(fresh, old, "a retry registers a new callback URL");
        let (status, body) = call_back(&fresh, r#"{"fresh": true}"#).await;
        assert_eq!(status, 200, "{body}");
        let exec = daemon.wait_for(id, "completed").await;
        assert_eq!(exec["output"], json!({"fresh": true}), "{exec:#}");
    }
    daemon.stop().await;
}
