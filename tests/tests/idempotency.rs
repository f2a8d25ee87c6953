//! `Idempotency-Key` on `POST /v1/executions`: a client that retries a
//! start (after a timeout, a dropped connection, a crash of its own) gets
//! the execution its first request made, never a second one — when the
//! retries come one after another, all at once, after a restart, or to
//! another daemon on the same database.

use serde_json::{Value, json};
use stephost::Config;
use stephost::store::pg_testing;
use stephost_tests::{TestDaemon, client};

/// `POST /v1/executions` with `body` as the bearer of `token`, with `key`
/// as its Idempotency-Key if given: (status, replayed header, JSON body).
async fn start(
    base: &str,
    token: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let mut request = client()
        .post(format!("{base}/v1/executions"))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        replayed,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// How many executions of `workflow` the daemon holds.
async fn count(daemon: &TestDaemon, workflow: &str) -> u64 {
    let (status, counts) = daemon
        .get(&format!("/v1/executions/counts?workflow={workflow}"))
        .await;
    assert_eq!(status, 200, "{counts}");
    counts["total"].as_u64().unwrap()
}

fn echo(n: u64) -> Value {
    json!({"plugin": "echo", "input": {"n": n}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_start_returns_the_first_execution_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (base, token) = (daemon.base.clone(), daemon.token.clone());

    let (status, replayed, first) = start(&base, &token, Some("order-7"), &echo(1)).await;
    assert_eq!((status, replayed), (201, None), "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    daemon.wait_for(&id, "completed").await;
    let (status, replayed, again) = start(&base, &token, Some("order-7"), &echo(1)).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again, first, "the first answer, not the state since");
    assert_eq!(count(&daemon, "echo").await, 1);

    // Another body under the key is refused, naming what the key started.
    let (status, _, refused) = start(&base, &token, Some("order-7"), &echo(2)).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "idempotency-key-reused");
    assert!(
        refused["error"]["message"].as_str().unwrap().contains(&id),
        "{refused}"
    );
    // Without a key, or with another, a new execution each time.
    let (_, _, other) = start(&base, &token, None, &echo(1)).await;
    let (_, _, keyed) = start(&base, &token, Some("order-8"), &echo(1)).await;
    assert_ne!(other["id"], first["id"]);
    assert_ne!(keyed["id"], first["id"]);
    assert_eq!(count(&daemon, "echo").await, 3);

    // The key is the token's: another client's same key is its own.
    let second = daemon
        .token("second-client", &["executions:write", "executions:read"])
        .await;
    let (status, replayed, theirs) = start(&base, &second, Some("order-7"), &echo(1)).await;
    assert_eq!((status, replayed), (201, None), "{theirs}");
    assert_ne!(theirs["id"], first["id"]);

    // A start with a result callback replays its 202.
    let with_result =
        json!({"plugin": "echo", "input": {}, "callback_url": "http://127.0.0.1:9/r"});
    let (status, _, delivered) = start(&base, &token, Some("order-9"), &with_result).await;
    assert_eq!(status, 202, "{delivered}");
    let (status, replayed, again) = start(&base, &token, Some("order-9"), &with_result).await;
    assert_eq!((status, replayed.as_deref()), (202, Some("true")));
    assert_eq!(again["id"], delivered["id"]);

    // Keys that cannot be stored as they are: refused, nothing started.
    let before = count(&daemon, "echo").await;
    for bad in ["", &"k".repeat(256), "two words"] {
        let (status, _, answer) = start(&base, &token, Some(bad), &echo(1)).await;
        assert_eq!(status, 400, "{bad:?}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{answer}"
        );
    }
    assert_eq!(count(&daemon, "echo").await, before);

    // Kept across a restart, and freed with its execution.
    daemon.stop().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (status, replayed, again) = start(&daemon.base, &token, Some("order-7"), &echo(1)).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (201, Some("true")),
        "{again}"
    );
    assert_eq!(again["id"], first["id"]);
    let (status, _) = daemon
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/executions/{id}"),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    let (status, replayed, fresh) = start(&daemon.base, &token, Some("order-7"), &echo(2)).await;
    assert_eq!((status, replayed), (201, None), "{fresh}");
    assert_ne!(fresh["id"], first["id"]);
    daemon.stop().await;
}

/// Retries sent all at once: every one gets the same execution, all but
/// one as a replay, and one execution exists. (Those that race past the
/// stored key's lookup lose at the write, which the store refuses.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_start_one_execution() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    const RETRIES: usize = 24;
    for round in 0..3 {
        let key = format!("burst-{round}");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(RETRIES));
        let tasks: Vec<_> = (0..RETRIES)
            .map(|_| {
                let (base, token, key) = (daemon.base.clone(), daemon.token.clone(), key.clone());
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    start(&base, &token, Some(&key), &echo(round)).await
                })
            })
            .collect();
        let mut ids = std::collections::BTreeSet::new();
        let mut replays = 0;
        for task in tasks {
            let (status, replayed, answer) = task.await.unwrap();
            assert_eq!(status, 201, "{answer}");
            ids.insert(answer["id"].as_str().unwrap().to_owned());
            replays += usize::from(replayed.is_some());
        }
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
        assert_eq!(replays, RETRIES - 1, "round {round}");
    }
    assert_eq!(count(&daemon, "echo").await, 3);
    daemon.stop().await;
}

/// Two daemons on one PostgreSQL database: a client's retries that land
/// on either node, at once, start one execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_to_two_daemons_on_one_database_start_one_execution() {
    let config = Config {
        store: Some(pg_testing::database().await),
        ..Config::default()
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestDaemon::start(config.clone(), dir_a.path()).await;
    let b = TestDaemon::start(config, dir_b.path()).await;
    const RETRIES: usize = 16;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(RETRIES));
    let tasks: Vec<_> = (0..RETRIES)
        .map(|i| {
            // One client, one token, two daemons behind a load balancer.
            let base = if i % 2 == 0 { &a.base } else { &b.base }.clone();
            let token = a.token.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                start(&base, &token, Some("across-nodes"), &echo(1)).await
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, _, answer) = task.await.unwrap();
        assert_eq!(status, 201, "{answer}");
        ids.insert(answer["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(count(&a, "echo").await, 1);
    assert_eq!(count(&b, "echo").await, 1);
    a.stop().await;
    b.stop().await;
}
