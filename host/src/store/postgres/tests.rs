//! The PostgreSQL store against a real server ([`super::testing`]): the
//! whole conformance suite, and what only this store promises: its schema
//! is migrated once however many daemons open it at once, a newer schema
//! is refused, the failures to connect are told apart by type, two nodes
//! racing on one record have one winner, an undecodable timer is moved
//! aside, and a chore's lead goes with its leader's connection.

use std::future::Future;
use std::sync::Arc;

use super::testing::{self, Cluster};
use super::{PgStore, SCHEMA_VERSION, migrations::MIGRATIONS};
use crate::model::{Timer, TimerKind};
use crate::store::conformance::{Backend, callback, execution};
use crate::store::{
    Change, Chore, ExecutionStore as _, SecretStore as _, StatsStore as _, Store, StoreError,
    TimerStore as _,
};

/// Runs `future` to its end from synchronous code inside a test's
/// (multi-threaded) runtime: the conformance suite makes and reopens its
/// backend in plain functions.
fn block_on<F: Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// A store on a fresh database of the shared test server.
struct PgBackend {
    url: String,
    store: Option<Arc<PgStore>>,
}

impl PgBackend {
    fn new() -> Self {
        block_on(async {
            let url = testing::database().await;
            let store = PgStore::open(&url).await.expect("the store opens");
            Self {
                url,
                store: Some(Arc::new(store)),
            }
        })
    }
}

impl Backend for PgBackend {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone().expect("the store is open")
    }

    fn reopen(&mut self) -> bool {
        // Its pool closes with the last handle; a restarted daemon opens a
        // new one on the same database.
        self.store = None;
        let store = block_on(PgStore::open(&self.url)).expect("the store opens again");
        self.store = Some(Arc::new(store));
        true
    }
}

mod conformance {
    crate::store_conformance!(super::PgBackend::new());
}

/// A plain client of the database `url`, to look behind the store.
async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("a connection to the test database");
    tokio::spawn(connection);
    client
}

/// Daemons starting at once against one new database: each opens it, and
/// each migration is applied exactly once (a second run of one would fail
/// on the tables it creates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_applied_once_when_stores_open_at_the_same_time() {
    let url = testing::database().await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::open(&url).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("every store opens");
    }
    let rows = client(&url)
        .await
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap();
    let applied: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    let known: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v as i64).collect();
    assert_eq!(applied, known);
    // And once more, after the fact: nothing to apply.
    PgStore::open(&url)
        .await
        .expect("opens an up-to-date database");
}

/// A database migrated by a newer stephost is refused before it is read,
/// naming both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_schema_is_refused() {
    let url = testing::database().await;
    drop(PgStore::open(&url).await.unwrap());
    let newer = SCHEMA_VERSION as i64 + 1;
    client(&url)
        .await
        .execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&newer],
        )
        .await
        .unwrap();
    let err = PgStore::open(&url).await.unwrap_err();
    match &err {
        StoreError::NewerSchema {
            found, supported, ..
        } => assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION)),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
            && text.contains(&format!("schema version {SCHEMA_VERSION} and older")),
        "{text}"
    );
}

/// A wrong password, a port nobody listens on, a URL that does not parse
/// and a database that does not exist are four variants, each saying
/// where it failed, never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_to_connect_are_told_apart() {
    let url = testing::database().await;
    let cluster: &Cluster = tokio::task::spawn_blocking(testing::shared).await.unwrap();
    let name = url.rsplit('/').next().unwrap();

    let wrong = cluster.url_with_password(name, "not-the-password");
    let err = PgStore::open(&wrong).await.unwrap_err();
    assert!(matches!(err, StoreError::LoginRefused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("refused the login") && text.contains("postgres@127.0.0.1"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(std::error::Error::source(&err).is_some());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("postgres://postgres:secret@127.0.0.1:{port}/{name}");
    let err = PgStore::open(&closed).await.unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "cannot reach PostgreSQL at postgres@127.0.0.1:{port}"
        )),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");

    let err = PgStore::open("postgres://postgres:secret@127.0.0.1:notaport/x")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");

    let err = PgStore::open(&cluster.url("no_such_database"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoDatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("/no_such_database"), "{err}");
}

/// Two daemons on one database (two stores, two pools) racing to move
/// the same execution on: exactly one wins, and both read the winner's
/// record; both derive callback tickets from the same secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_on_one_record_have_one_winner() {
    let url = testing::database().await;
    let nodes = [
        Arc::new(PgStore::open(&url).await.unwrap()),
        Arc::new(PgStore::open(&url).await.unwrap()),
    ];
    let start = Change {
        execution: Some(execution("e", 1)),
        ..Default::default()
    };
    nodes[0].apply(&start).await.unwrap();
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move {
                let mut next = execution("e", 2);
                next.workflow = format!("writer {i}");
                let change = Change {
                    execution: Some(next),
                    callbacks: vec![callback(&format!("c{i}"), 1)],
                    ..Default::default()
                };
                (i, node.apply(&change).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            (i, Ok(())) => winners.push(i),
            (_, Err(StoreError::Conflict(_))) => {}
            (_, Err(e)) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    for node in &nodes {
        let stored = node.execution("e").await.unwrap().unwrap();
        assert_eq!(stored.workflow, format!("writer {}", winners[0]));
    }
    let (a, b) = tokio::join!(
        nodes[0].node_secret("tickets"),
        nodes[1].node_secret("tickets")
    );
    assert_eq!(a.unwrap(), b.unwrap());
}

/// Two daemons, each with its store: the leader's lock connection dying
/// (as a killed node's does) passes the lead to the other at once, and the
/// old leader, back, finds it taken; the lock never sits on a pooled
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chore_leader_whose_connection_dies_loses_the_lead_at_once() {
    let url = testing::database().await;
    let (a, b) = (
        PgStore::open(&url).await.unwrap(),
        PgStore::open(&url).await.unwrap(),
    );
    let hold = 60_000;
    assert!(a.lead(Chore::Retention, "a", hold).await.unwrap());
    assert!(!b.lead(Chore::Retention, "b", hold).await.unwrap());
    // Of this test's database (the server is shared with other tests),
    // the one connection that holds an advisory lock is `a`'s lock
    // connection: the pool's hold none.
    let admin = client(&url).await;
    let holders = admin
        .query(
            "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
             WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(holders.len(), 1, "one connection holds the one lock");
    let pid: i32 = holders[0].get(0);
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !b.lead(Chore::Retention, "b", hold).await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lead never passed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !a.lead(Chore::Retention, "a", hold).await.unwrap(),
        "the old leader reconnects and finds the lead taken"
    );
    assert!(a.lead(Chore::TakeOver, "a", hold).await.unwrap());
}

/// A timer record this build cannot decode is moved aside, counted out,
/// and the timers due after it still come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_timer_is_quarantined_and_the_others_still_come_due() {
    let url = testing::database().await;
    let store = PgStore::open(&url).await.unwrap();
    let good = Timer {
        due_ms: 200,
        execution_id: "e1".into(),
        kind: TimerKind::CallbackTimeout,
    };
    store
        .apply(&Change {
            add_timers: vec![good.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut bad_key = 100u64.to_be_bytes().to_vec();
    bad_key.extend_from_slice(b"broken");
    let raw = client(&url).await;
    raw.execute(
        "INSERT INTO timers (key, due_ms, record) VALUES ($1, 100, '{\"kind\": \"from the future\"}')",
        &[&bad_key],
    )
    .await
    .unwrap();
    raw.execute(
        "UPDATE counts SET n = n + 1 WHERE name = 'timers' AND shard = 0",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(store.timer_backlog(1_000).await.unwrap(), (2, 2));

    assert_eq!(
        store.due_timers(1_000, 10).await.unwrap(),
        std::slice::from_ref(&good)
    );
    assert_eq!(store.quarantined_timers(), 1);
    assert_eq!(store.timer_backlog(1_000).await.unwrap(), (1, 1));
    assert_eq!(store.next_timer_due().await.unwrap(), Some(200));
    let kept: i64 = raw
        .query_one(
            "SELECT count(*) FROM timers_quarantine WHERE key = $1",
            &[&bad_key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "kept for an operator to inspect");
}

/// Without PostgreSQL's programs the harness fails, saying what to
/// install, rather than letting the tests pass untested.
#[test]
fn a_missing_postgresql_fails_with_what_to_install() {
    let err = testing::bin_dir(std::path::Path::new("/nonexistent"), &[]).unwrap_err();
    assert!(
        err.to_string().contains("apt-get install postgresql"),
        "{err}"
    );
}

/// Whether process `pid` runs (a zombie, dead but not yet reaped by
/// whoever adopted it, does not).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

/// A dropped cluster stops its server and removes its files.
#[test]
fn a_dropped_cluster_stops_its_server() {
    let cluster = Cluster::start().expect("a private test server starts");
    let (pid, dir) = (cluster.pid(), cluster.dir().to_path_buf());
    assert!(runs(pid) && dir.exists(), "the server runs");
    drop(cluster);
    // The guard waited for `pg_ctl stop -w`, which waits for the server.
    assert!(!runs(pid), "the server stopped");
    assert!(!dir.exists(), "its files are removed");
}

/// A node's upload or leave reaches the other nodes as a hint: their
/// wait for one ends (it is what makes a node look at once instead of at
/// its next poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_on_one_node_hints_the_others() {
    use crate::store::{ComponentStore as _, NodeStore as _};
    let url = testing::database().await;
    let b = PgStore::open(&url).await.unwrap();
    for (i, hint) in ["upload", "leave"].into_iter().enumerate() {
        // A node of its own for each: a hint left over from the first
        // would end the second wait at once.
        let a = PgStore::open(&url).await.unwrap();
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.hinted().await }
        });
        // The listener connects on the first wait: hints sent before it
        // listens are lost (polls cover those), so B hints until A hears.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !waiting.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "no {hint} hint arrived"
            );
            match hint {
                "upload" => b.put_plugin_ref("p", &format!("h{i}")).await.unwrap(),
                _ => b.leave("node-b").await.unwrap(),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        waiting.await.unwrap();
    }
}
