//! The compare-and-swap contract: what a `Change` may write and when it is
//! refused, under races too, and the counts that follow it.

use super::{Backend, callback, delivery, execution, is_conflict, race, timer, with_execution};
use crate::model::{CallbackState, ExecState, ReceivedCallback, TimerKind};
use crate::store::{Change, Store};

/// A change whose execution (or any one record) is stale is refused,
/// and none of its callbacks, timers or deliveries is written.
pub async fn a_stale_change_is_refused_and_writes_nothing(backend: impl Backend) {
    let store = backend.store();
    let old_timer = timer(100, "e", TimerKind::Retry);
    store
        .apply(&Change {
            execution: Some(execution("e", 1)),
            callbacks: vec![callback("c1", 1)],
            add_timers: vec![old_timer.clone()],
            deliveries: vec![delivery("e", 0, 1)],
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .apply(&with_execution(execution("e", 2)))
        .await
        .unwrap();

    let mut lost = execution("e", 2);
    lost.workflow = "the writer that read version 1".into();
    let stale = Change {
        execution: Some(lost),
        callbacks: vec![callback("c2", 1)],
        add_timers: vec![timer(50, "e", TimerKind::CallbackTimeout)],
        remove_timers: vec![old_timer.clone()],
        deliveries: vec![delivery("e", 7, 1)],
        remove: None,
        idempotent_start: None,
    };
    assert!(is_conflict(store.apply(&stale).await));
    // The same with a fresh execution but a stale callback, or delivery.
    let mut stale_callback = stale.clone();
    stale_callback.execution = Some(execution("e", 3));
    stale_callback.callbacks.push(callback("c1", 1));
    assert!(is_conflict(store.apply(&stale_callback).await));
    let mut stale_delivery = stale.clone();
    stale_delivery.execution = Some(execution("e", 3));
    stale_delivery.deliveries.push(delivery("e", 0, 1));
    assert!(is_conflict(store.apply(&stale_delivery).await));

    let stored = store.execution("e").await.unwrap().unwrap();
    assert_eq!((stored.version, stored.workflow.as_str()), (2, "w"));
    assert!(store.callback("c2").await.unwrap().is_none());
    assert_eq!(store.callback("c1").await.unwrap().unwrap().version, 1);
    assert_eq!(store.due_timers(u64::MAX, 10).await.unwrap(), [old_timer]);
    assert_eq!(
        store.deliveries_of("e").await.unwrap(),
        [delivery("e", 0, 1)]
    );
    assert_eq!(count(&*store, ExecState::Running).await, 1);
}

/// Version 1 means "new": a second creation of the same record is refused,
/// for executions, callbacks and deliveries alike.
pub async fn creating_a_record_twice_conflicts(backend: impl Backend) {
    let store = backend.store();
    let changes = [
        with_execution(execution("e", 1)),
        Change {
            callbacks: vec![callback("c", 1)],
            ..Default::default()
        },
        Change {
            deliveries: vec![delivery("e", 0, 1)],
            ..Default::default()
        },
    ];
    for change in &changes {
        store.apply(change).await.unwrap();
        assert!(is_conflict(store.apply(change).await), "{change:?}");
    }
    // And a version that skips one is refused as well.
    assert!(is_conflict(
        store.apply(&with_execution(execution("e", 3))).await
    ));
}

/// Writers that read the same version race to move it on: exactly one
/// wins, the others hear `Conflict`, and the winner's record is stored.
pub async fn one_of_many_racing_writers_wins(backend: impl Backend) {
    let store = backend.store();
    store
        .apply(&with_execution(execution("e", 1)))
        .await
        .unwrap();
    let winners = race(&store, 32, |i| {
        let mut next = execution("e", 2);
        next.workflow = format!("writer {i}");
        Change {
            execution: Some(next),
            callbacks: vec![callback(&format!("c{i}"), 1)],
            ..Default::default()
        }
    })
    .await;
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = store.execution("e").await.unwrap().unwrap();
    assert_eq!(stored.workflow, format!("writer {}", winners[0]));
    for i in 0..32 {
        let written = store.callback(&format!("c{i}")).await.unwrap().is_some();
        assert_eq!(written, i == winners[0], "callback of writer {i}");
    }
}

/// A callback that arrives before its step suspends is kept, request and
/// all, then claimed once by the transition that resumes the step.
pub async fn an_early_callback_is_stored_then_claimed_once(backend: impl Backend) {
    let store = backend.store();
    store
        .apply(&Change {
            execution: Some(execution("e", 1)),
            callbacks: vec![callback("c", 1)],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut early = callback("c", 2);
    early.state = CallbackState::Received {
        callback: ReceivedCallback {
            method: "POST".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{\"ok\":true}\xff".to_vec(),
            received_ms: 42,
        },
    };
    store
        .apply(&Change {
            callbacks: vec![early.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(store.callback("c").await.unwrap(), Some(early));

    let claim = |execution_version| {
        let mut consumed = callback("c", 3);
        consumed.state = CallbackState::Consumed;
        let mut e = execution("e", execution_version);
        e.state = ExecState::Suspended;
        Change {
            execution: Some(e),
            callbacks: vec![consumed],
            ..Default::default()
        }
    };
    store.apply(&claim(2)).await.unwrap();
    // A second claim (from a duplicate callback) read the same record.
    assert!(is_conflict(store.apply(&claim(3)).await));
    let stored = store.callback("c").await.unwrap().unwrap();
    assert_eq!((stored.version, stored.state), (3, CallbackState::Consumed));
    assert_eq!(store.execution("e").await.unwrap().unwrap().version, 2);
}

async fn count(store: &dyn Store, state: ExecState) -> u64 {
    let counts = store.count_executions_by_state().await.unwrap();
    counts
        .into_iter()
        .find_map(|(s, n)| (s == state).then_some(n))
        .unwrap_or(0)
}

pub(super) async fn counts(store: &dyn Store) -> [u64; 4] {
    let mut out = [0; 4];
    let states = [
        ExecState::Running,
        ExecState::Suspended,
        ExecState::Completed,
        ExecState::Failed,
    ];
    for (slot, state) in out.iter_mut().zip(states) {
        *slot = count(store, state).await;
    }
    out
}

/// Counts by state follow every transition, refused ones excepted.
pub async fn counts_by_state_follow_transitions(backend: impl Backend) {
    let store = backend.store();
    assert_eq!(counts(&*store).await, [0, 0, 0, 0]);
    for id in ["a", "b", "c"] {
        store
            .apply(&with_execution(execution(id, 1)))
            .await
            .unwrap();
    }
    let moved = |id: &str, version, state| {
        let mut e = execution(id, version);
        e.state = state;
        with_execution(e)
    };
    store
        .apply(&moved("b", 2, ExecState::Suspended))
        .await
        .unwrap();
    assert_eq!(counts(&*store).await, [2, 1, 0, 0]);
    assert!(is_conflict(
        store.apply(&moved("a", 5, ExecState::Completed)).await
    ));
    assert_eq!(counts(&*store).await, [2, 1, 0, 0]);
    store
        .apply(&moved("c", 2, ExecState::Failed))
        .await
        .unwrap();
    store
        .apply(&moved("b", 3, ExecState::Completed))
        .await
        .unwrap();
    // A write that keeps the state counts once.
    store
        .apply(&moved("a", 2, ExecState::Running))
        .await
        .unwrap();
    assert_eq!(counts(&*store).await, [1, 0, 1, 1]);
}
