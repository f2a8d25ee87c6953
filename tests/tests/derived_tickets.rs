//! Callback tickets are derived, not stored: registering one writes
//! nothing, and a callback that comes before the step suspends is admitted
//! by deriving its ticket again from the execution its URL names. An
//! edited URL derives another ticket and is refused; the real one is
//! stored (`202`) and resumes the step the moment it suspends.

use serde_json::json;
use stephost_tests::{TestDaemon, call_back, events, gated_partner};

/// `url` with the value of its query parameter `name` replaced.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (path, query) = url.split_once('?').expect("a query");
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == name => format!("{k}={value}"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

fn param(url: &str, name: &str) -> String {
    let query = url.split_once('?').expect("a query").1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_callback_is_admitted_by_its_derived_ticket_and_an_edited_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    // The partner holds the step's request: the step has not suspended
    // while the test calls back.
    let (partner, release) = gated_partner((202, json!({"accepted": true}))).await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {"order": 1},
        }))
        .await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    assert_eq!(param(&url, "execution"), id);
    let ticket = param(&url, "ticket");
    let (version, n) = ticket.split_once('.').unwrap();
    assert_eq!(n, "0", "{url}");

    let other_execution = "0190a4a8-0000-7000-8000-000000000000";
    let refused = [
        (with_param(&url, "ticket", &format!("{version}.1")), 404),
        (
            with_param(
                &url,
                "ticket",
                &format!("{}.0", 1 + version.parse::<u64>().unwrap()),
            ),
            404,
        ),
        (with_param(&url, "execution", other_execution), 404),
        (with_param(&url, "ticket", "garbage"), 404),
        (url.split('&').next().unwrap().to_owned(), 404),
        (with_param(&url, "secret", &"0".repeat(64)), 401),
    ];
    for (edited, status) in &refused {
        let (got, body) = call_back(edited, r#"{"forged": true}"#).await;
        assert_eq!(got, *status, "{edited}: {body}");
    }
    assert_eq!(daemon.execution(&id).await["state"], "running");

    let (status, body) = call_back(&url, r#"{"approved": true}"#).await;
    assert_eq!(status, 202, "stored before the step suspends: {body}");
    let (status, body) = call_back(&url, r#"{"approved": true}"#).await;
    assert_eq!(status, 409, "one early callback per ticket: {body}");

    release.add_permits(1);
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        events(&exec),
        ["started", "suspended", "callback", "completed"],
        "{exec:#}"
    );
    assert_eq!(exec["output"], json!({"approved": true}), "{exec:#}");
    assert!(!exec.to_string().contains("forged"), "{exec:#}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_on_a_callback_costs_four_writes_and_two_flushes_and_a_409_waits_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let (partner, release) = gated_partner((202, json!({"accepted": true}))).await;
    release.add_permits(1);
    let daemon = TestDaemon::start_default(dir.path()).await;
    let before = daemon.metrics().await;
    let id = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {},
        }))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let (status, body) = call_back(&url, "{}").await;
    assert_eq!(status, 200, "{body}");
    daemon.wait_for(&id, "completed").await;
    let after = daemon.metrics().await;
    let delta = |name: &str| after[name] - before.get(name).copied().unwrap_or(0.0);
    // Start, suspend (which creates the callback record), claim, end: the
    // registration wrote nothing. Flushed: the start and the claim.
    assert_eq!(delta("stephost_store_changes_total"), 4.0);
    assert_eq!(delta("stephost_store_flush_requests_total"), 2.0);
    // The claim is written without waiting for the disk (its flush runs
    // while the step resumes): a duplicate's 409, which tells of it, is
    // answered only after a flush, so that it never outlives the claim.
    let (status, body) = call_back(&url, "{}").await;
    assert_eq!(status, 409, "{body}");
    let again = daemon.metrics().await;
    let flushes =
        |m: &std::collections::BTreeMap<String, f64>| m["stephost_store_flush_requests_total"];
    assert_eq!(flushes(&again) - flushes(&after), 1.0);
    assert_eq!(
        again["stephost_store_changes_total"],
        after["stephost_store_changes_total"]
    );
    daemon.stop().await;
}
