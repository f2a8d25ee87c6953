//! Three daemons on one PostgreSQL database: executions started on one
//! node, callbacks sent to the others, timeouts and result deliveries
//! made once cluster-wide, operator actions from any node. (A node killed
//! under load is host/tests/cluster_kill.rs: that needs real processes.)

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use stephost::Config;
use stephost::store::pg_testing;
use stephost_tests::{Partner, TestDaemon, call_back, events};

/// Three daemons on one new database, each with its own data dir.
async fn cluster(dirs: &[tempfile::TempDir; 3]) -> [TestDaemon; 3] {
    let mut config = Config::from_toml("[cluster]\nlease_ms = 2000\n").unwrap();
    config.store = Some(pg_testing::database().await);
    let a = TestDaemon::start(config.clone(), dirs[0].path()).await;
    let b = TestDaemon::start(config.clone(), dirs[1].path()).await;
    let c = TestDaemon::start(config, dirs[2].path()).await;
    [a, b, c]
}

/// `url` (a callback URL naming one node) sent to `node` instead.
fn on(node: &TestDaemon, url: &str) -> String {
    format!(
        "{}{}",
        node.base,
        &url[url.find("/v1/callbacks/").unwrap()..]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_executions_callbacks_timers_and_deliveries() {
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let nodes = cluster(&dirs).await;
    let [a, b, c] = &nodes;
    let partner = Partner::accepting().await;
    let results = Partner::accepting().await;

    // Started on A, each with a result delivery.
    const N: usize = 6;
    let mut ids = Vec::new();
    for n in 0..N {
        let (status, started) = a
            .post(
                "/v1/executions",
                json!({
                    "plugin": "wait-for-callback",
                    "config": {"url": partner.base},
                    "input": {"n": n},
                    "callback_url": results.base,
                }),
            )
            .await;
        assert_eq!(status, 202, "{started}");
        ids.push(started["id"].as_str().unwrap().to_owned());
    }
    let sent = partner.wait_for_requests(N).await;
    let mut urls = BTreeMap::new();
    for req in &sent {
        urls.insert(
            req.json()["n"].as_u64().unwrap() as usize,
            req.callback_url(),
        );
    }
    for id in &ids {
        a.wait_for(id, "suspended").await;
    }

    // Callbacks to B and C; the same callback again, to the other node,
    // resumes nothing.
    for (n, id) in ids.iter().enumerate() {
        let (first, second) = if n % 2 == 0 { (b, c) } else { (c, b) };
        let url = &urls[&n];
        let (status, body) = call_back(&on(first, url), format!(r#"{{"n": {n}}}"#)).await;
        assert_eq!(status, 200, "callback {n} to one node: {body}");
        let (status, body) = call_back(&on(second, url), r#"{"again": true}"#).await;
        assert_ne!(status, 200, "the same callback on another node: {body}");
        let exec = a.wait_for(id, "completed").await;
        assert_eq!(exec["output"], json!({"n": n}));
        assert_eq!(
            events(&exec).iter().filter(|e| *e == "callback").count(),
            1,
            "{exec:#}"
        );
    }

    // Timeouts fire once cluster-wide, whichever node's timer loop claims
    // them.
    let operation = Partner::accepting().await;
    let mut timed = Vec::new();
    for node in [a, b, c] {
        timed.push(
            node.start_execution(json!({
                "plugin": "async-operation",
                "config": {"url": operation.base, "timeout_ms": 300},
                "input": {},
            }))
            .await,
        );
    }
    for id in &timed {
        let exec = c.wait_for(id, "failed").await;
        assert_eq!(exec["error"]["code"], "callback-timeout");
        assert_eq!(events(&exec), ["started", "suspended", "timeout", "failed"]);
    }

    // Every result delivered exactly once (no retries were needed: the
    // client answers 200), each with its own webhook-id.
    let delivered = results.wait_for_requests(N).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let delivered_late = results.requests();
    assert_eq!(delivered_late.len(), N, "one delivery per execution");
    let mut per_execution = BTreeMap::new();
    for req in &delivered {
        *per_execution
            .entry(req.json()["id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(per_execution.len(), N);
    assert!(per_execution.values().all(|n| *n == 1), "{per_execution:?}");

    // Operator actions from any node, on an execution another started.
    let waiting = a
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {"n": 99},
        }))
        .await;
    b.wait_for(&waiting, "suspended").await;
    let (status, answer) = c
        .post(&format!("/v1/executions/{waiting}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = b
        .post(&format!("/v1/executions/{waiting}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let exec = a.wait_for(&waiting, "suspended").await;
    assert_eq!(
        events(&exec),
        ["started", "suspended", "failed", "retried", "suspended"]
    );

    // Each node counts the same executions: the counts are the database's.
    let (_, counts) = b.get("/v1/executions/counts").await;
    assert_eq!(counts["by_state"]["completed"], N as u64, "{counts}");
    assert_eq!(counts["by_state"]["failed"], 3, "{counts}");
    assert_eq!(counts["by_state"]["suspended"], 1, "{counts}");
    // So does each node's /metrics, though A alone made most of the
    // transitions: the gauges are the database's counts too.
    for node in [a, b, c] {
        let m = node.metrics().await;
        assert_eq!(m[r#"stephost_executions{state="completed"}"#], N as f64);
        assert_eq!(m[r#"stephost_executions{state="failed"}"#], 3.0);
        assert_eq!(m[r#"stephost_executions{state="suspended"}"#], 1.0);
        assert_eq!(m[r#"stephost_executions{state="running"}"#], 0.0);
    }

    for node in nodes {
        node.stop().await;
    }
}

/// A node that stops cleanly leaves: an execution it was running when its
/// grace period ran out is taken over by another node at once, not a
/// lease later, and runs its step again with the same step-run-id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_mid_step_leaves_its_execution_to_another() {
    let dirs = [(); 2].map(|()| tempfile::tempdir().unwrap());
    let mut config =
        Config::from_toml("shutdown_grace_ms = 200\n[cluster]\nlease_ms = 60000\n").unwrap();
    config.store = Some(pg_testing::database().await);
    // The partner holds the first request until the test lets it go, so
    // the step is mid-call when its node stops.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let released = gate.clone();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let partner = Partner::start(move |_req| {
        let (released, counted) = (released.clone(), counted.clone());
        async move {
            if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                released.notified().await;
            }
            (202, json!({}))
        }
    })
    .await;
    let a = TestDaemon::start(config.clone(), dirs[0].path()).await;
    let b = TestDaemon::start(config, dirs[1].path()).await;
    let id = a
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {"n": 1},
        }))
        .await;
    let first = partner.wait_for_requests(1).await[0].clone();
    a.stop().await;
    gate.notify_waiters();

    // B takes it over well before the one-minute lease.
    let exec = b.wait_for(&id, "suspended").await;
    let requests = partner.wait_for_requests(2).await;
    assert_eq!(
        requests[1].header("x-step-run-id"),
        first.header("x-step-run-id"),
        "the step runs again with the same step-run-id"
    );
    assert!(events(&exec).contains(&"taken-over".to_owned()), "{exec:#}");
    let _: &Value = &exec;
    b.stop().await;
}

/// A plugin uploaded through one node is offered by the others within a
/// few seconds (the store has it; they look), and one removed through a
/// node is no longer offered by the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_uploaded_through_one_node_is_offered_by_the_others() {
    let dirs = [(); 2].map(|()| tempfile::tempdir().unwrap());
    let mut config = Config::from_toml("[cluster]\nlease_ms = 2000\n").unwrap();
    config.store = Some(pg_testing::database().await);
    let a = TestDaemon::start(config.clone(), dirs[0].path()).await;
    let b = TestDaemon::start(config, dirs[1].path()).await;
    let echo = stephost::builtin::component("echo").unwrap().to_vec();
    let (status, body) = a.upload("shared-echo", echo).await;
    assert_eq!(status, 201, "{body}");

    // B takes it up at its next look (every few seconds).
    let start = json!({"plugin": "shared-echo", "input": {"on": "b"}});
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (status, body) = b.post("/v1/executions", start.clone()).await;
        if status == 201 {
            break body["id"].as_str().unwrap().to_owned();
        }
        assert_eq!(body["error"]["code"], "unknown-plugin", "{body}");
        assert!(std::time::Instant::now() < deadline, "B never offered it");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let exec = b.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"on": "b"}));

    // Removed through A: B stops offering it.
    let (status, body) = a
        .call(
            reqwest::Method::DELETE,
            "/v1/plugins/shared-echo",
            Some(&a.token),
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = b.post("/v1/executions", start.clone()).await;
        if status != 201 {
            assert_eq!(body["error"]["code"], "unknown-plugin", "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B still offers it");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.stop().await;
    b.stop().await;
}

/// A deletion through one node while another, not yet told, starts an
/// execution of the plugin: the version that execution pinned keeps its
/// bytes, and the execution runs. The other node's start is written to the
/// database directly, right after the deleting node read the executions
/// and removed the name (the moment a node that missed the hint would
/// write it), since no request could time it so on a node that heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_deleted_while_another_node_starts_it_keeps_that_version() {
    use stephost::model::{Doc, Execution, StepSpec};
    use stephost::store::{Change, ComponentStore as _, ExecutionStore as _, PgStore};

    let dirs = [(); 2].map(|()| tempfile::tempdir().unwrap());
    let mut config = Config::from_toml(
        "[cluster]\nlease_ms = 2000\n\
         [plugins.held-wait]\nallowed_hosts = [\"http://127.0.0.1:*\"]\n",
    )
    .unwrap();
    let url = pg_testing::database().await;
    config.store = Some(url.clone());
    let a = TestDaemon::start(config.clone(), dirs[0].path()).await;
    let b = TestDaemon::start(config, dirs[1].path()).await;
    let store = PgStore::open(&url).await.unwrap();
    let partner = Partner::accepting().await;
    // wait-for-callback under a hash of its own (a custom section `held`),
    // so that no built-in shares its bytes.
    let mut bytes = stephost::builtin::component("wait-for-callback")
        .unwrap()
        .to_vec();
    bytes.extend_from_slice(b"\x00\x05\x04held");
    let hash = stephost::model::content_hash(&bytes);
    let (status, body) = a.upload("held-wait", bytes).await;
    assert_eq!(status, 201, "{body}");

    let started = std::time::Instant::now();
    let deleting = {
        let a_base = a.base.clone();
        let token = a.token.clone();
        tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .delete(format!("{a_base}/v1/plugins/held-wait"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        })
    };
    // The name goes once A has read every execution and found none.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store
        .plugin_refs()
        .await
        .unwrap()
        .iter()
        .any(|(name, _)| name == "held-wait")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "A never removed the name"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let id = uuid::Uuid::now_v7().to_string();
    let exec = Execution::new(
        id.clone(),
        "held-wait".into(),
        vec![StepSpec {
            name: "held-wait".into(),
            plugin: "held-wait".into(),
            config: json!({"url": partner.base}),
            plugin_hash: Some(hash.clone()),
        }],
        Doc::json(&json!({"late": true})),
        uuid::Uuid::now_v7().to_string(),
        stephost::model::now_ms(),
    );
    store
        .apply(&Change {
            execution: Some(exec),
            ..Change::default()
        })
        .await
        .unwrap();

    let (status, body) = deleting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shared_versions"], json!([hash]), "{body}");
    assert_eq!(body["removed_versions"], json!([]), "{body}");
    // Two looks of the other nodes (2 s with this lease) and a second.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(store.component(&hash).await.unwrap().is_some());
    // Nobody owns the execution: a node takes it over and runs the pinned
    // version from its bytes; the step reaches the partner and waits.
    b.wait_for(&id, "suspended").await;
    assert_eq!(
        partner.wait_for_requests(1).await[0].json(),
        json!({"late": true})
    );
    // New executions of the deleted name are refused on every node.
    for node in [&a, &b] {
        let (status, body) = node
            .post(
                "/v1/executions",
                json!({"plugin": "held-wait", "input": {}}),
            )
            .await;
        assert_eq!(body["error"]["code"], "unknown-plugin", "{status} {body}");
    }
    a.stop().await;
    b.stop().await;
}

/// The token rules across daemons: daemons making their first start on
/// an empty database at once make one admin token between them (and one
/// file); revocations of the last two admin tokens sent to two daemons at
/// once leave one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_tokens_and_last_admins_hold_across_daemons() {
    let url = pg_testing::database().await;
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let mut daemons = Vec::new();
    for dir in &dirs {
        let config = Config {
            store: Some(url.clone()),
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        daemons.push(stephost::Daemon::open(config).await.unwrap());
    }
    let made = tokio::join!(
        daemons[0].first_admin_token(),
        daemons[1].first_admin_token(),
        daemons[2].first_admin_token()
    );
    let files: Vec<_> = [made.0, made.1, made.2]
        .into_iter()
        .filter_map(|m| m.unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let left: Vec<_> = dirs
        .iter()
        .filter(|d| d.path().join("first-admin-token").exists())
        .collect();
    assert_eq!(left.len(), 1, "only the daemon that made it has the file");
    let tokens = stephost::auth::list_tokens(daemons[0].workflows().store().as_ref())
        .await
        .unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    drop(daemons);

    // Two more admins, through two daemons; each revokes one of the
    // other two at the same moment as the other daemon.
    let config = Config {
        store: Some(url),
        ..Config::default()
    };
    let a = TestDaemon::start(config.clone(), dirs[0].path()).await;
    let b = TestDaemon::start(config, dirs[1].path()).await;
    let (status, first) = a.get("/v1/tokens").await;
    assert_eq!(status, 200, "{first}");
    let ids: Vec<String> = first["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "first-admin and each daemon's test-admin");
    let revoke = |node: &TestDaemon, id: &str| {
        let (base, token, id) = (node.base.clone(), node.token.clone(), id.to_owned());
        async move {
            stephost_tests::client()
                .delete(format!("{base}/v1/tokens/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // First-admin goes; then A and B revoke each other's token at once.
    let first_admin = ids
        .iter()
        .find(|id| {
            first["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] == id.as_str() && t["name"] == "first-admin")
        })
        .unwrap();
    assert_eq!(revoke(&a, first_admin).await, 200);
    let id_of = |node: &TestDaemon| {
        let (base, token) = (node.base.clone(), node.token.clone());
        async move {
            let me = stephost_tests::client()
                .get(format!("{base}/v1/whoami"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            me.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (id_a, id_b) = (id_of(&a).await, id_of(&b).await);
    let (by_a, by_b) = tokio::join!(revoke(&a, &id_b), revoke(&b, &id_a));
    // One goes through; the other is refused as the last admin (409), or
    // arrives with a token already revoked (401).
    let mut statuses = [by_a, by_b];
    statuses.sort();
    assert!(
        statuses == [200, 401] || statuses == [200, 409],
        "{statuses:?}"
    );
    let survivor = if by_a == 200 { &a } else { &b };
    let (status, left) = survivor.get("/v1/tokens").await;
    assert_eq!(status, 200, "{left}");
    assert_eq!(left["tokens"].as_array().unwrap().len(), 1, "{left}");
    a.stop().await;
    b.stop().await;
}
