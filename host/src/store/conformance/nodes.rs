//! Daemons sharing a store: orphaned running executions (no owner, or an
//! owner without a recent heartbeat), and timer claims, which a shared
//! store hands to one node at a time.

use std::time::Duration;

use super::{Backend, execution, timer};
use crate::model::{ExecState, TimerKind};
use crate::store::{Change, Chore};

/// The ids of the orphans `node` is offered.
async fn orphan_ids(store: &dyn crate::store::Store, node: &str, lease_ms: u64) -> Vec<String> {
    let orphans = store.orphaned(node, lease_ms, 100).await.unwrap();
    orphans.into_iter().map(|e| e.id).collect()
}

/// A running execution is an orphan when nobody owns it or its owner's
/// heartbeat is older than the lease; never the caller's own, never one
/// that is not running; a node that leaves frees its executions at once.
pub async fn orphans_are_the_running_executions_of_dead_nodes(backend: impl Backend) {
    let store = backend.store();
    let owned = |id: &str, owner: Option<&str>, state: ExecState| {
        let mut e = execution(id, 1);
        e.owner = owner.map(str::to_owned);
        e.state = state;
        e
    };
    for e in [
        owned("e1", Some("alive"), ExecState::Running),
        owned("e2", Some("silent"), ExecState::Running),
        owned("e3", None, ExecState::Running),
        owned("e4", None, ExecState::Suspended),
        owned("e5", Some("me"), ExecState::Running),
    ] {
        store
            .apply(&Change {
                execution: Some(e),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    store.heartbeat("alive").await.unwrap();
    store.heartbeat("me").await.unwrap();
    assert_eq!(orphan_ids(store.as_ref(), "me", 60_000).await, ["e2", "e3"]);
    assert_eq!(
        orphan_ids(store.as_ref(), "silent", 60_000).await,
        ["e3"],
        "never the caller's own, heartbeat or not"
    );
    let one = store.orphaned("me", 60_000, 1).await.unwrap();
    assert_eq!(one.len(), 1, "at most limit");
    assert_eq!(one[0].owner.as_deref(), Some("silent"), "whole records");

    store.leave("alive").await.unwrap();
    assert_eq!(
        orphan_ids(store.as_ref(), "me", 60_000).await,
        ["e1", "e2", "e3"],
        "a node that left owns nothing"
    );

    // A heartbeat older than the lease is a dead node's.
    store.heartbeat("alive").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        orphan_ids(store.as_ref(), "me", 100).await,
        ["e1", "e2", "e3"]
    );
    store.heartbeat("alive").await.unwrap();
    assert_eq!(orphan_ids(store.as_ref(), "me", 60_000).await, ["e2", "e3"]);
}

/// The timer loop's claims: every store hands out what is due; a shared
/// one hands a claimed timer to nobody else until the claim lapses.
pub async fn claimed_timers_go_to_one_caller_until_the_claim_lapses(backend: impl Backend) {
    let store = backend.store();
    let a = timer(100, "a", TimerKind::CallbackTimeout);
    let b = timer(200, "b", TimerKind::Retry);
    store
        .apply(&Change {
            add_timers: vec![b.clone(), a.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let claimed = store.claim_due_timers(1_000, 10, 60_000).await.unwrap();
    assert_eq!(claimed, [a.clone(), b.clone()], "earliest first");
    if !store.is_shared() {
        return;
    }
    assert!(
        store
            .claim_due_timers(1_000, 10, 60_000)
            .await
            .unwrap()
            .is_empty(),
        "claimed timers go to nobody else"
    );
    assert_eq!(
        store.due_timers(1_000, 10).await.unwrap().len(),
        2,
        "still stored"
    );
    assert_eq!(
        store.next_timer_due().await.unwrap(),
        None,
        "nothing for this node's loop to wake up for"
    );
    // Written again (a new wait under the same key), a timer is free.
    store
        .apply(&Change {
            add_timers: vec![a.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.claim_due_timers(1_000, 10, 100).await.unwrap(),
        std::slice::from_ref(&a)
    );
    // A claim that lapses (its claimer died) hands the timer out again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.claim_due_timers(1_000, 10, 60_000).await.unwrap(),
        [a],
        "b is still claimed"
    );
}

/// One node at a time leads each chore: it keeps the lead while it asks
/// within its hold, and loses it when it leaves or stops asking.
pub async fn one_node_at_a_time_leads_a_chore(backend: impl Backend) {
    let store = backend.store();
    let long = 60_000;
    assert!(store.lead(Chore::Retention, "a", long).await.unwrap());
    assert!(
        store.lead(Chore::Retention, "a", long).await.unwrap(),
        "the leader keeps the lead by asking again"
    );
    assert!(
        !store.lead(Chore::Retention, "b", long).await.unwrap(),
        "one leader at a time"
    );
    assert!(
        store.lead(Chore::TakeOver, "b", long).await.unwrap(),
        "each chore has a leader of its own"
    );
    assert!(!store.lead(Chore::TakeOver, "a", long).await.unwrap());

    store.leave("a").await.unwrap();
    assert!(
        store.lead(Chore::Retention, "b", long).await.unwrap(),
        "a node that left leads nothing, at once"
    );

    // A leader that stops asking (a hung process) loses the lead once its
    // hold has passed, to the next node that asks.
    let hold = Duration::from_millis(300);
    assert!(
        store
            .lead(Chore::TakeOver, "b", hold.as_millis() as u64)
            .await
            .unwrap()
    );
    let silent_since = std::time::Instant::now();
    assert!(!store.lead(Chore::TakeOver, "c", long).await.unwrap());
    let taken = loop {
        if store.lead(Chore::TakeOver, "c", long).await.unwrap() {
            break silent_since.elapsed();
        }
        assert!(
            silent_since.elapsed() < Duration::from_secs(10),
            "the lead never passed from a silent leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        taken >= hold,
        "passed after {taken:?}, before the hold ran out"
    );
    assert!(
        !store.lead(Chore::TakeOver, "b", long).await.unwrap(),
        "the silent leader, back, finds the lead taken"
    );
    assert!(store.lead(Chore::Retention, "b", long).await.unwrap());
}
