//! What only the sled store promises: group commit and group apply share
//! work, an undecodable timer is moved aside, the indexes are built for an
//! old data dir, a held data dir is refused by type. The behaviour every
//! store shares is in [`crate::store::conformance`].

use super::*;
use crate::model::{ExecState, Timer, TimerKind};
use crate::store::conformance::Backend;
use crate::store::conformance::{callback, execution as exec};
use crate::store::{CallbackStore as _, Store};
use crate::store::{
    Change, ExecutionFilter, ExecutionStore as _, StatsStore as _, TimerStore as _,
};

/// The sled store in a temporary data dir, for the conformance suite.
struct SledBackend {
    dir: tempfile::TempDir,
    store: Option<Arc<SledStore>>,
}

impl SledBackend {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Some(Arc::new(SledStore::open(dir.path()).unwrap()));
        Self { dir, store }
    }
}

impl Backend for SledBackend {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone().expect("the store is open")
    }

    fn reopen(&mut self) -> bool {
        // Closed first: sled refuses a second opener of a data dir.
        self.store = None;
        self.store = Some(Arc::new(SledStore::open(self.dir.path()).unwrap()));
        true
    }
}

mod conformance {
    crate::store_conformance!(super::SledBackend::new());
}

/// A store dropped while another open waits for its lock (as when a
/// daemon restarts in the same process and sled has not yet let go) is
/// opened as soon as the lock goes, not refused.
#[test]
fn an_open_waits_for_a_lock_about_to_be_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let first = SledStore::open(dir.path()).unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(first);
    });
    let started = std::time::Instant::now();
    let second = SledStore::open(dir.path()).expect("opened once the first let go");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    releaser.join().unwrap();
    drop(second);
}

/// A second opener of a data dir hears that another process holds
/// it (once the wait for it to let go is over), as a variant the daemon can match, with the words an operator
/// needs.
#[test]
fn a_data_dir_held_open_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledStore::open(dir.path()).unwrap();
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("is locked by another process") && text.contains("could not acquire lock"),
        "{text}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

/// One undecodable timer record must not stop the timers behind it:
/// it is moved aside, counted, and the others fire.
#[tokio::test]
async fn an_undecodable_timer_is_quarantined_and_the_others_still_come_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let good = Timer {
        due_ms: 200,
        execution_id: "e1".into(),
        kind: TimerKind::CallbackTimeout,
    };
    store.timers.insert(good.key(), encode(&good)).unwrap();
    let mut bad_key = 100u64.to_be_bytes().to_vec();
    bad_key.extend_from_slice(b"broken");
    store
        .timers
        .insert(bad_key.as_slice(), &b"{not json"[..])
        .unwrap();
    // Written behind the store's back, like a data dir from before the
    // timer count: the next open counts them, the bad one included.
    store
        .db
        .open_tree("meta")
        .unwrap()
        .remove(super::TIMER_COUNT_MARK)
        .unwrap();
    drop(store);
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.timer_backlog(1_000).await.unwrap(), (2, 2));

    assert_eq!(
        store.next_timer_due().await.unwrap(),
        Some(100),
        "read from the key"
    );
    assert_eq!(
        store.due_timers(1_000, 10).await.unwrap(),
        vec![good.clone()]
    );
    assert_eq!(store.quarantined_timers(), 1);
    assert_eq!(
        store.timer_backlog(1_000).await.unwrap(),
        (1, 1),
        "moved out"
    );
    assert!(store.timers.get(&bad_key).unwrap().is_none());
    assert_eq!(
        store.quarantine.get(&bad_key).unwrap().unwrap().as_ref(),
        b"{not json"
    );
    // Once moved aside it is not met again.
    assert_eq!(store.due_timers(1_000, 10).await.unwrap(), vec![good]);
    assert_eq!(store.quarantined_timers(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_share_disk_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let n: u64 = 64;
    let mut tasks = Vec::new();
    for i in 0..n {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .apply(&Change {
                    execution: Some(exec(&format!("e{i}"), 1)),
                    ..Default::default()
                })
                .await
                .unwrap();
            store.flush().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let flushes = store.write_stats().disk_flushes;
    assert_eq!(store.write_stats().flush_requests, n);
    assert!(
        (1..n).contains(&flushes),
        "{n} overlapping flushes took {flushes} disk flushes"
    );
    // A flush with nothing new still waits for a disk flush of its own.
    store.flush().await.unwrap();
    assert_eq!(store.write_stats().disk_flushes, flushes + 1);
    drop(store);
    let store = SledStore::open(dir.path()).unwrap();
    for i in 0..n {
        assert!(store.execution(&format!("e{i}")).await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_share_transactions_and_are_each_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    // 64 writers race to create the same 8 executions: per id exactly
    // one wins and the rest are refused, however they are batched.
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("e{}", i % 8);
            let mut e = exec(&id, 1);
            e.workflow = format!("writer {i}");
            (
                id,
                e.workflow.clone(),
                store
                    .apply(&Change {
                        execution: Some(e),
                        callbacks: vec![callback(&format!("c{i}"), 1)],
                        ..Default::default()
                    })
                    .await,
            )
        }));
    }
    let mut winners = std::collections::HashMap::new();
    for t in tasks {
        let (id, writer, result) = t.await.unwrap();
        match result {
            Ok(()) => assert!(winners.insert(id, writer).is_none(), "two winners"),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 8);
    for (id, writer) in &winners {
        let stored = store.execution(id).await.unwrap().unwrap();
        assert_eq!(&stored.workflow, writer, "the winner's record is stored");
    }
    // A refused change wrote nothing: only the winners' callbacks exist.
    let mut callbacks = 0;
    for i in 0..64 {
        if store.callback(&format!("c{i}")).await.unwrap().is_some() {
            callbacks += 1;
        }
    }
    assert_eq!(callbacks, 8);
    assert_eq!(counts(&store).await, [8, 0, 0, 0]);
    let stats = store.write_stats();
    assert_eq!(stats.changes, 64);
    assert!(
        stats.transactions < stats.changes,
        "64 racing writers took {} transactions: none were shared",
        stats.transactions
    );
}

#[tokio::test(flavor = "current_thread")]
async fn ready_writers_are_applied_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    // All 50 tasks are ready together: the first leads, yields, and
    // the other 49 queue behind it before it applies.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .apply(&Change {
                        execution: Some(exec(&format!("e{i}"), 1)),
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = store.write_stats();
    assert_eq!(stats.changes, 50);
    assert_eq!(stats.transactions, 1, "{stats:?}");
    assert_eq!(counts(&store).await, [50, 0, 0, 0]);
}

async fn counts(store: &SledStore) -> Vec<u64> {
    store
        .count_executions_by_state()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .collect()
}

#[tokio::test]
async fn the_listing_indexes_follow_every_transition_and_are_built_for_old_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        for id in ["a", "b", "c"] {
            store
                .apply(&Change {
                    execution: Some(exec(id, 1)),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let mut b = exec("b", 2);
        b.state = ExecState::Suspended;
        store
            .apply(&Change {
                execution: Some(b),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(running(&store).await, ["a", "c"]);
        // running, suspended, completed, failed
        assert_eq!(counts(&store).await, [2, 1, 0, 0]);
        // A refused change leaves the index alone too.
        let mut stale = exec("a", 5);
        stale.state = ExecState::Completed;
        assert!(
            store
                .apply(&Change {
                    execution: Some(stale),
                    ..Default::default()
                })
                .await
                .is_err()
        );
        assert_eq!(running(&store).await, ["a", "c"]);
        assert_eq!(counts(&store).await, [2, 1, 0, 0]);
        let mut c = exec("c", 2);
        c.state = ExecState::Failed;
        store
            .apply(&Change {
                execution: Some(c),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(counts(&store).await, [1, 1, 0, 1]);
        assert_eq!(
            by_workflow(&store).await,
            [
                ("w".to_owned(), ExecState::Running, 1),
                ("w".to_owned(), ExecState::Suspended, 1),
                ("w".to_owned(), ExecState::Failed, 1)
            ]
        );
        // As format 1 left it: a tree of running ids, no listing indexes,
        // no counts.
        store
            .db
            .open_tree(OLD_RUNNING_TREE)
            .unwrap()
            .insert("a", &[])
            .unwrap();
        for tag in listing::TAGS {
            clear_prefix(&store.indexes, &[tag]).unwrap();
        }
        store.db.drop_tree("execution-counts").unwrap();
        let meta = store.db.open_tree("meta").unwrap();
        meta.remove(LISTING_INDEX_MARK).unwrap();
        meta.remove(COUNTS_MARK).unwrap();
        meta.remove(FORMAT_KEY).unwrap();
        store.db.flush().unwrap();
        assert!(running(&store).await.is_empty());
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(running(&store).await, ["a"]);
    assert_eq!(counts(&store).await, [1, 1, 0, 1]);
    assert_eq!(
        by_workflow(&store).await,
        [
            ("w".to_owned(), ExecState::Running, 1),
            ("w".to_owned(), ExecState::Suspended, 1),
            ("w".to_owned(), ExecState::Failed, 1)
        ]
    );
    let names = store.db.tree_names();
    assert!(!names.iter().any(|n| n == OLD_RUNNING_TREE.as_bytes()));
    let meta = store.db.open_tree("meta").unwrap();
    assert_eq!(
        meta.get(FORMAT_KEY).unwrap().as_deref(),
        Some(&FORMAT.to_be_bytes()[..])
    );
}

async fn by_workflow(store: &SledStore) -> Vec<(String, ExecState, u64)> {
    store.count_executions_by_workflow(None).await.unwrap()
}

async fn running(store: &SledStore) -> Vec<String> {
    store
        .executions(&ExecutionFilter {
            state: Some(ExecState::Running),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// A data dir written before retention existed (no `indexes` tree, no
/// format mark) gets both indexes built
/// when it is opened, so its old ended executions are found and removed
/// whole like new ones.
#[tokio::test]
async fn the_retention_indexes_are_built_for_old_data() {
    use crate::store::ExecutionStore as _;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        let mut done = exec("done", 1);
        done.state = ExecState::Completed;
        done.updated_ms = 100;
        let mut early = callback("early", 1);
        early.execution_id = "done".into();
        store
            .apply(&Change {
                execution: Some(done),
                callbacks: vec![early],
                ..Default::default()
            })
            .await
            .unwrap();
        store
            .apply(&Change {
                execution: Some(exec("live", 1)),
                ..Default::default()
            })
            .await
            .unwrap();
        // As the previous release left it.
        store.db.drop_tree("indexes").unwrap();
        let meta = store.db.open_tree("meta").unwrap();
        for mark in [
            ENDED_INDEX_MARK,
            CALLBACK_INDEX_MARK,
            LISTING_INDEX_MARK,
            FORMAT_KEY,
        ] {
            meta.remove(mark).unwrap();
        }
        store.db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        store.ended(ExecState::Completed, 1_000, 10).await.unwrap(),
        ["done"]
    );
    assert_eq!(store.callbacks_of("done").await.unwrap(), ["early"]);
    assert_eq!(running(&store).await, ["live"]);
    let meta = store.db.open_tree("meta").unwrap();
    assert_eq!(
        meta.get(FORMAT_KEY).unwrap().as_deref(),
        Some(&FORMAT.to_be_bytes()[..])
    );
}

/// A data dir of a newer format is refused with a message that names
/// both formats, and is left as it was.
#[test]
fn a_data_dir_of_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        let meta = store.db.open_tree("meta").unwrap();
        meta.insert(FORMAT_KEY, &(FORMAT + 1).to_be_bytes())
            .unwrap();
        store.db.flush().unwrap();
    }
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerFormat { found, supported, .. } if found == FORMAT + 1 && supported == FORMAT),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("written by a newer stephost"), "{text}");
    let db = sled::open(dir.path().join("db")).unwrap();
    assert_eq!(
        db.open_tree("meta")
            .unwrap()
            .get(FORMAT_KEY)
            .unwrap()
            .as_deref(),
        Some(&(FORMAT + 1).to_be_bytes()[..])
    );
}

/// A new data dir is its owner's alone: the dir `0700`, every file sled
/// wrote in it `0600`. One the operator opened to others is reported and
/// left as it is.
#[cfg(unix)]
#[test]
fn a_new_data_dir_is_private_and_an_exposed_one_is_reported() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let store = SledStore::open(&dir).unwrap();
    store.db.flush().unwrap();
    drop(store);
    // Opened again: files sled made since are tightened too.
    drop(SledStore::open(&dir).unwrap());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(private::exposure(&dir), None);
    let mut files = 0;
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode(&path) & 0o077, 0, "{}", path.display());
                files += 1;
            }
        }
    }
    assert!(files > 0, "sled wrote files");

    let shared = parent.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    drop(SledStore::open(&shared).unwrap());
    assert_eq!(private::exposure(&shared), Some(0o755));
    assert_eq!(mode(&shared), 0o755, "the operator's choice stands");
}
