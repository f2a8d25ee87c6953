//! Ended executions: found by end time (what retention reads), and
//! removed with every record that is only theirs, at once.

use super::changes::counts;
use super::*;
use crate::model::ExecState;
use crate::store::Removal;

/// `id` at `version`, in `state`, last written at `updated_ms`.
fn at(id: &str, version: u64, state: ExecState, updated_ms: u64) -> Change {
    let mut e = execution(id, version);
    e.state = state;
    e.updated_ms = updated_ms;
    with_execution(e)
}

/// A callback record of execution `execution_id`.
fn callback_of(id: &str, execution_id: &str) -> CallbackRecord {
    CallbackRecord {
        execution_id: execution_id.into(),
        ..callback(id, 1)
    }
}

/// Ended executions come back by state, earliest end first, up to a time
/// and a count; an execution that is retried leaves the index, and its
/// next end is where it is found.
pub async fn ended_executions_are_found_by_end_time(backend: impl Backend) {
    let store = backend.store();
    for (id, state, ms) in [
        ("c300", ExecState::Completed, 300),
        ("c100", ExecState::Completed, 100),
        ("f200", ExecState::Failed, 200),
        ("s50", ExecState::Suspended, 50),
        ("r10", ExecState::Running, 10),
    ] {
        store.apply(&at(id, 1, state, ms)).await.unwrap();
    }
    let ended = |state, ms, limit| {
        let store = store.clone();
        async move { store.ended(state, ms, limit).await.unwrap() }
    };
    assert_eq!(ended(ExecState::Completed, 99, 10).await, [] as [&str; 0]);
    assert_eq!(ended(ExecState::Completed, 100, 10).await, ["c100"]);
    assert_eq!(
        ended(ExecState::Completed, 1_000, 10).await,
        ["c100", "c300"]
    );
    assert_eq!(ended(ExecState::Completed, 1_000, 1).await, ["c100"]);
    assert_eq!(ended(ExecState::Failed, 1_000, 10).await, ["f200"]);
    assert!(ended(ExecState::Suspended, 1_000, 10).await.is_empty());
    assert!(ended(ExecState::Running, 1_000, 10).await.is_empty());

    // Retried: no longer ended. Failed again later: found at that time.
    store
        .apply(&at("f200", 2, ExecState::Running, 250))
        .await
        .unwrap();
    assert!(ended(ExecState::Failed, 1_000, 10).await.is_empty());
    store
        .apply(&at("f200", 3, ExecState::Failed, 400))
        .await
        .unwrap();
    assert!(ended(ExecState::Failed, 399, 10).await.is_empty());
    assert_eq!(ended(ExecState::Failed, 400, 10).await, ["f200"]);
    // A refused write moves nothing.
    assert!(is_conflict(
        store.apply(&at("c100", 5, ExecState::Failed, 500)).await
    ));
    assert_eq!(
        ended(ExecState::Completed, 1_000, 10).await,
        ["c100", "c300"]
    );
}

/// Every callback record of an execution is found by it, early ones too.
pub async fn callbacks_are_found_by_execution(backend: impl Backend) {
    let store = backend.store();
    store
        .apply(&Change {
            callbacks: vec![callback_of("early", "e"), callback_of("other", "f")],
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .apply(&Change {
            execution: Some(execution("e", 1)),
            callbacks: vec![callback_of("registered", "e")],
            ..Default::default()
        })
        .await
        .unwrap();
    // A later version of a record is still the one record.
    let mut claimed = callback_of("early", "e");
    claimed.version = 2;
    claimed.state = CallbackState::Consumed;
    store
        .apply(&Change {
            callbacks: vec![claimed],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut of_e = store.callbacks_of("e").await.unwrap();
    of_e.sort();
    assert_eq!(of_e, ["early", "registered"]);
    assert_eq!(store.callbacks_of("f").await.unwrap(), ["other"]);
    assert!(store.callbacks_of("nobody").await.unwrap().is_empty());
}

/// A removal takes the execution, its callbacks and deliveries, and its
/// place in the counts and the ended index, at once; one decided on an
/// older version is refused and removes nothing; and what was removed
/// stays removed across a restart.
pub async fn a_removal_takes_every_record_of_the_execution(mut backend: impl Backend) {
    let store = backend.store();
    store
        .apply(&Change {
            execution: Some(execution("e", 1)),
            callbacks: vec![callback_of("c1", "e"), callback_of("cf", "f")],
            deliveries: vec![delivery("e", 0, 1)],
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .apply(&with_execution(execution("f", 1)))
        .await
        .unwrap();
    let mut end = at("e", 2, ExecState::Completed, 100);
    end.callbacks.push(callback_of("c2", "e"));
    end.deliveries.push(delivery("e", 1, 1));
    store.apply(&end).await.unwrap();
    assert_eq!(counts(&*store).await, [1, 0, 1, 0]);

    let removal = |version| Change {
        remove: Some(Removal {
            id: "e".into(),
            version,
            callbacks: vec!["c1".into(), "c2".into()],
            deliveries: vec![delivery_key("e", 0), delivery_key("e", 1)],
            idempotency_key: None,
        }),
        ..Default::default()
    };
    assert!(is_conflict(store.apply(&removal(1)).await));
    assert!(store.execution("e").await.unwrap().is_some());
    assert!(store.callback("c1").await.unwrap().is_some());
    assert_eq!(store.deliveries_of("e").await.unwrap().len(), 2);

    store.apply(&removal(2)).await.unwrap();
    store.flush().await.unwrap();
    let gone = |store: Arc<dyn Store>| async move {
        assert_eq!(store.execution("e").await.unwrap(), None);
        assert_eq!(store.callback("c1").await.unwrap(), None);
        assert_eq!(store.callback("c2").await.unwrap(), None);
        assert!(store.callbacks_of("e").await.unwrap().is_empty());
        assert!(store.deliveries_of("e").await.unwrap().is_empty());
        assert!(
            store
                .ended(ExecState::Completed, u64::MAX - 1, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(counts(&*store).await, [1, 0, 0, 0]);
        // What belongs to another execution stays.
        assert!(store.callback("cf").await.unwrap().is_some());
        assert!(store.execution("f").await.unwrap().is_some());
        // Removed is removed: doing it again, or writing the old version
        // on, conflicts.
        assert!(is_conflict(store.apply(&removal(2)).await));
        assert!(is_conflict(
            store.apply(&at("e", 3, ExecState::Completed, 200)).await
        ));
    };
    gone(store.clone()).await;
    drop(store);
    if backend.reopen() {
        gone(backend.store()).await;
    }
}

/// Removals and writes of one ended execution racing (retention against
/// an operator's retry, say): exactly one wins. If a removal won, nothing
/// of the execution is left; if a write won, the execution is whole and no
/// removal took any of its records.
pub async fn a_removal_racing_writes_is_all_or_nothing(backend: impl Backend) {
    let store = backend.store();
    let mut start = at("e", 1, ExecState::Failed, 100);
    start.callbacks.push(callback_of("c", "e"));
    store.apply(&start).await.unwrap();
    let winners = race(&store, 32, |i| {
        if i % 2 == 0 {
            Change {
                remove: Some(Removal {
                    id: "e".into(),
                    version: 1,
                    callbacks: vec!["c".into()],
                    deliveries: vec![],
                    idempotency_key: None,
                }),
                ..Default::default()
            }
        } else {
            at("e", 2, ExecState::Running, 200 + i)
        }
    })
    .await;
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = store.execution("e").await.unwrap();
    let callback = store.callback("c").await.unwrap();
    if winners[0] % 2 == 0 {
        assert_eq!((stored, callback), (None, None));
        assert_eq!(counts(&*store).await, [0, 0, 0, 0]);
    } else {
        let stored = stored.expect("the write won");
        assert_eq!(stored.updated_ms, 200 + winners[0]);
        assert!(callback.is_some());
        assert_eq!(counts(&*store).await, [1, 0, 0, 0]);
        assert!(
            store
                .ended(ExecState::Failed, u64::MAX - 1, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
