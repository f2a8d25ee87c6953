//! What each table keeps and how it is read back: timers by due time,
//! deliveries by key and execution, listings, tokens, components, plugin
//! names, the node secret, and all of it across a restart.

use super::changes::counts;
use super::{Backend, callback, delivery, execution, is_conflict, timer, with_execution};
use crate::model::{ExecState, Execution, TimerKind};
use crate::model::{Permission, TokenRecord};
use crate::store::{Change, ExecutionFilter};

/// Timers come back earliest first, only once due, at most `limit`;
/// removed ones are gone; a delivery timer does not collide with the
/// execution's own timer of the same due time.
pub async fn timers_come_due_in_order(backend: impl Backend) {
    let store = backend.store();
    assert_eq!(store.next_timer_due().await.unwrap(), None);
    assert_eq!(store.timer_backlog(1_000).await.unwrap(), (0, 0));
    let c = timer(300, "c", TimerKind::Retry);
    let a = timer(100, "a", TimerKind::CallbackTimeout);
    let b = timer(200, "b", TimerKind::Retry);
    let b_delivery = timer(200, "b", TimerKind::Delivery { seq: 4 });
    store
        .apply(&Change {
            add_timers: vec![c.clone(), a.clone(), b.clone(), b_delivery.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(store.next_timer_due().await.unwrap(), Some(100));
    assert!(store.due_timers(99, 10).await.unwrap().is_empty());
    let due = store.due_timers(200, 10).await.unwrap();
    assert_eq!(due.len(), 3, "{due:?}");
    assert_eq!(due[0], a);
    assert!(due.contains(&b) && due.contains(&b_delivery), "{due:?}");
    assert_eq!(
        store.due_timers(1_000, 1).await.unwrap(),
        std::slice::from_ref(&a)
    );
    assert_eq!(store.timer_backlog(200).await.unwrap(), (4, 3));

    store
        .apply(&Change {
            remove_timers: vec![
                a.clone(),
                b.clone(),
                timer(1, "never added", TimerKind::Retry),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(store.next_timer_due().await.unwrap(), Some(200));
    assert_eq!(
        store.due_timers(1_000, 10).await.unwrap(),
        [b_delivery, c.clone()]
    );
    assert_eq!(store.timer_backlog(250).await.unwrap(), (2, 1));

    // A timer written again is still one timer (the count is kept by the
    // writes, so this is where a backend could count it twice).
    store
        .apply(&Change {
            add_timers: vec![c.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(store.timer_backlog(250).await.unwrap(), (2, 1));
}

/// Deliveries by key, and an execution's in sequence order (the armed
/// record, seq 0, first), never another execution's.
pub async fn deliveries_are_found_by_key_and_by_execution(backend: impl Backend) {
    let store = backend.store();
    let records = [
        delivery("e", 12, 1),
        delivery("e", 0, 1),
        delivery("e", 3, 1),
        delivery("e1", 0, 1),
    ];
    store
        .apply(&Change {
            deliveries: records.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .apply(&Change {
            deliveries: vec![delivery("e", 3, 2)],
            ..Default::default()
        })
        .await
        .unwrap();
    let key = crate::model::delivery_key("e", 3);
    assert_eq!(
        store.delivery(&key).await.unwrap(),
        Some(delivery("e", 3, 2))
    );
    assert_eq!(store.delivery("e/nothing").await.unwrap(), None);
    let seqs: Vec<_> = store
        .deliveries_of("e")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.seq)
        .collect();
    assert_eq!(seqs, [0, 3, 12]);
    assert_eq!(store.deliveries_of("e1").await.unwrap().len(), 1);
    assert!(store.deliveries_of("nobody").await.unwrap().is_empty());
}

/// Executions by id; lists filtered by state and workflow, in id order
/// or newest first, cut at the limit and paged on past an id; a visit of
/// every one.
pub async fn executions_are_listed_filtered_and_visited(backend: impl Backend) {
    let store = backend.store();
    for (id, state, workflow) in [
        ("d", ExecState::Running, "w"),
        ("a", ExecState::Running, "other"),
        ("c", ExecState::Suspended, "w"),
        ("b", ExecState::Running, "w"),
    ] {
        let mut e = execution(id, 1);
        e.state = state;
        e.workflow = workflow.into();
        store.apply(&with_execution(e)).await.unwrap();
    }
    let ids = |list: Vec<Execution>| list.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let list = |filter| {
        let store = store.clone();
        async move { ids(store.executions(&filter).await.unwrap()) }
    };
    assert_eq!(list(ExecutionFilter::default()).await, ["a", "b", "c", "d"]);
    let running = ExecutionFilter {
        state: Some(ExecState::Running),
        ..Default::default()
    };
    assert_eq!(list(running.clone()).await, ["a", "b", "d"]);
    let running_w = ExecutionFilter {
        workflow: Some("w".into()),
        ..running.clone()
    };
    assert_eq!(list(running_w.clone()).await, ["b", "d"]);
    let first = ExecutionFilter {
        limit: Some(1),
        ..running_w
    };
    assert_eq!(list(first).await, ["b"]);

    // Newest (highest id) first, paged on from where a page ended.
    let newest = ExecutionFilter {
        newest_first: true,
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(list(newest.clone()).await, ["d", "c"]);
    let next = ExecutionFilter {
        past: Some("c".into()),
        ..newest.clone()
    };
    assert_eq!(list(next).await, ["b", "a"]);
    let last = ExecutionFilter {
        past: Some("a".into()),
        ..newest
    };
    assert!(list(last).await.is_empty());
    let running_newest = ExecutionFilter {
        newest_first: true,
        past: Some("d".into()),
        ..running.clone()
    };
    assert_eq!(list(running_newest).await, ["b", "a"]);
    let oldest_past = ExecutionFilter {
        past: Some("b".into()),
        ..Default::default()
    };
    assert_eq!(list(oldest_past).await, ["c", "d"]);
    assert_eq!(
        store.execution("c").await.unwrap().unwrap().state,
        ExecState::Suspended
    );
    assert!(store.execution("z").await.unwrap().is_none());

    let mut visited = Vec::new();
    store
        .each_execution(&mut |e| visited.push(e.id))
        .await
        .unwrap();
    assert_eq!(visited, ["a", "b", "c", "d"]);
}

/// Tokens are kept by the hash of the token; writing one again replaces
/// it; all are listed; a removed one is gone, and a use recorded after
/// its removal does not bring it back.
pub async fn tokens_are_stored_by_hash(backend: impl Backend) {
    let store = backend.store();
    assert_eq!(store.token_count().await.unwrap(), 0);
    let token = |sha256: &str, name: &str| TokenRecord {
        id: format!("id-{sha256}"),
        name: name.into(),
        sha256: sha256.into(),
        permissions: vec![Permission::ExecutionsRead],
        created_ms: 7,
        expires_ms: Some(1_000),
        last_used_ms: None,
    };
    store.put_token(&token("h1", "first")).await.unwrap();
    store.put_token(&token("h2", "second")).await.unwrap();
    store.put_token(&token("h1", "renamed")).await.unwrap();
    assert_eq!(store.token_count().await.unwrap(), 2);
    assert_eq!(
        store.token("h1").await.unwrap(),
        Some(token("h1", "renamed"))
    );
    assert_eq!(store.token("h3").await.unwrap(), None);
    let mut all = store.tokens().await.unwrap();
    all.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    assert_eq!(all, [token("h1", "renamed"), token("h2", "second")]);
    store.remove_token("h1").await.unwrap();
    store.remove_token("h3").await.unwrap();
    assert_eq!(store.token("h1").await.unwrap(), None);
    assert_eq!(store.tokens().await.unwrap(), [token("h2", "second")]);
    assert_eq!(store.token_count().await.unwrap(), 1);

    store.touch_token("h2", 500).await.unwrap();
    store.touch_token("h2", 400).await.unwrap();
    let used = store.token("h2").await.unwrap().unwrap();
    assert_eq!(used.last_used_ms, Some(500), "the latest use is kept");
    assert_eq!(used.expires_ms, Some(1_000));
    store.touch_token("h1", 600).await.unwrap();
    assert_eq!(store.token("h1").await.unwrap(), None, "not revived");
    assert_eq!(store.token_count().await.unwrap(), 1);
}

/// Component bytes by content hash: the first bytes stored under a hash
/// stay (the same hash means the same bytes), and removal forgets them.
pub async fn components_are_kept_by_hash(backend: impl Backend) {
    let store = backend.store();
    store.put_component("h1", b"one").await.unwrap();
    store.put_component("h1", b"again").await.unwrap();
    store.put_component("h2", &[0, 255, 1]).await.unwrap();
    assert_eq!(
        store.component("h1").await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(store.component("h2").await.unwrap(), Some(vec![0, 255, 1]));
    store.remove_component("h1").await.unwrap();
    store.remove_component("never stored").await.unwrap();
    assert_eq!(store.component("h1").await.unwrap(), None);
    assert!(store.component("h2").await.unwrap().is_some());
}

/// Every version uploaded under a name is listed until the name is
/// removed, and not those of a name it prefixes.
pub async fn plugin_refs_list_every_version_until_removed(backend: impl Backend) {
    let store = backend.store();
    store.put_plugin_ref("a", "h1").await.unwrap();
    store.put_plugin_ref("a", "h2").await.unwrap();
    store.put_plugin_ref("ab", "h3").await.unwrap();
    let mut versions = store.plugin_versions("a").await.unwrap();
    versions.sort();
    assert_eq!(versions, ["h1", "h2"], "not those of a name it prefixes");
    assert_eq!(
        store.plugin_refs().await.unwrap(),
        [("a".into(), "h2".into()), ("ab".into(), "h3".into())]
    );

    store.remove_plugin_ref("a").await.unwrap();
    assert!(store.plugin_versions("a").await.unwrap().is_empty());
    assert_eq!(
        store.plugin_refs().await.unwrap(),
        [("ab".into(), "h3".into())]
    );
    assert_eq!(store.plugin_versions("ab").await.unwrap(), ["h3"]);
}

/// The node secret is made once and is the same ever after (across a
/// restart, for a durable store); another name has its own.
pub async fn the_node_secret_never_changes(mut backend: impl Backend) {
    let store = backend.store();
    let first = store.node_secret("tickets").await.unwrap();
    assert_eq!(first.len(), 32);
    assert_eq!(store.node_secret("tickets").await.unwrap(), first);
    assert_ne!(store.node_secret("other").await.unwrap(), first);
    drop(store);
    if backend.reopen() {
        let store = backend.store();
        assert_eq!(store.node_secret("tickets").await.unwrap(), first);
    }
}

/// What was applied and flushed is there after a restart (for a durable
/// store), with the counts.
pub async fn records_survive_reopening(mut backend: impl Backend) {
    let store = backend.store();
    let t = timer(100, "e", TimerKind::Retry);
    let mut e = execution("e", 1);
    e.state = ExecState::Suspended;
    store
        .apply(&Change {
            execution: Some(e.clone()),
            callbacks: vec![callback("c", 1)],
            add_timers: vec![t.clone()],
            deliveries: vec![delivery("e", 0, 1)],
            ..Default::default()
        })
        .await
        .unwrap();
    store.put_component("h", b"bytes").await.unwrap();
    store.put_plugin_ref("p", "h").await.unwrap();
    store.flush().await.unwrap();
    drop(store);
    if !backend.reopen() {
        return;
    }
    let store = backend.store();
    assert_eq!(store.execution("e").await.unwrap(), Some(e));
    assert_eq!(store.callback("c").await.unwrap(), Some(callback("c", 1)));
    assert_eq!(store.due_timers(1_000, 10).await.unwrap(), [t]);
    assert_eq!(store.timer_backlog(1_000).await.unwrap(), (1, 1));
    assert_eq!(
        store.deliveries_of("e").await.unwrap(),
        [delivery("e", 0, 1)]
    );
    assert_eq!(store.component("h").await.unwrap(), Some(b"bytes".to_vec()));
    assert_eq!(
        store.plugin_refs().await.unwrap(),
        [("p".into(), "h".into())]
    );
    assert_eq!(counts(&*store).await, [0, 1, 0, 0]);
    // And the versions go on from where they were.
    assert!(is_conflict(
        store.apply(&with_execution(execution("e", 1))).await
    ));
}

/// The token rules hold under races: of first tokens made at once, one is
/// stored; of revocations of the last admin tokens at once, one admin
/// stays; a token without `admin` goes whatever the others are.
pub async fn token_rules_hold_when_writes_race(backend: impl Backend) {
    let store = backend.store();
    fn token(sha256: &str, permissions: Vec<Permission>) -> TokenRecord {
        TokenRecord {
            id: format!("id-{sha256}"),
            name: sha256.into(),
            sha256: sha256.into(),
            permissions,
            created_ms: 7,
            expires_ms: None,
            last_used_ms: None,
        }
    }
    fn admin(sha256: &str) -> TokenRecord {
        token(sha256, vec![Permission::Admin])
    }
    let firsts: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put_first_token(&admin(&format!("first-{i}"))).await })
        })
        .collect();
    let mut stored = 0;
    for first in firsts {
        stored += usize::from(first.await.unwrap().unwrap());
    }
    assert_eq!(stored, 1);
    assert_eq!(store.token_count().await.unwrap(), 1);
    assert!(!store.put_first_token(&admin("late")).await.unwrap());

    let reader = token("reader", vec![Permission::ExecutionsRead]);
    store.put_token(&reader).await.unwrap();
    for i in 0..3 {
        store.put_token(&admin(&format!("more-{i}"))).await.unwrap();
    }
    let admins: Vec<String> = store
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.permissions.contains(&Permission::Admin))
        .map(|t| t.sha256)
        .collect();
    assert_eq!(admins.len(), 4);
    let revocations: Vec<_> = admins
        .into_iter()
        .map(|sha256| {
            let store = store.clone();
            tokio::spawn(async move { store.remove_token_keeping_an_admin(&sha256).await })
        })
        .collect();
    let mut removed = 0;
    for revocation in revocations {
        removed += usize::from(revocation.await.unwrap().unwrap());
    }
    assert_eq!(removed, 3, "all but one admin");
    let left = store.tokens().await.unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter()
            .any(|t| t.permissions.contains(&Permission::Admin))
    );
    assert!(store.remove_token_keeping_an_admin("reader").await.unwrap());
    assert!(
        store
            .remove_token_keeping_an_admin("never-there")
            .await
            .unwrap()
    );
    assert_eq!(store.token_count().await.unwrap(), 1);
}
