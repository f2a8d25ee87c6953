//! Listings by workflow, plugin, state and creation time, paged by
//! cursor, the counts by workflow, and idempotent starts: every backend
//! answers them from records it keeps with each write, so the answers
//! must follow every transition and removal.

use super::{Backend, with_execution};
use crate::model::{Doc, ExecState, Execution, IdempotentStart, StepSpec};
use crate::store::{Change, ExecutionFilter, Removal, Store};

/// A UUIDv7 made at `ms`, as execution ids are.
fn id_at(ms: u64) -> String {
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000);
    uuid::Uuid::new_v7(ts).to_string()
}

fn step(name: &str, plugin: &str) -> StepSpec {
    StepSpec {
        name: name.into(),
        plugin: plugin.into(),
        config: serde_json::json!({}),
        plugin_hash: None,
    }
}

/// An execution of `workflow` created at `ms`, whose steps run on
/// `plugins` in turn, at step `at`, in `state`.
fn made(ms: u64, workflow: &str, plugins: &[&str], at: usize, state: ExecState) -> Execution {
    let steps = plugins
        .iter()
        .enumerate()
        .map(|(i, p)| step(&format!("s{i}"), p))
        .collect();
    let mut e = Execution::new(
        id_at(ms),
        workflow.into(),
        steps,
        Doc::json(&serde_json::json!({})),
        "r".into(),
        ms,
    );
    e.step_index = at;
    e.state = state;
    e
}

/// The removal of ended execution `id` at `version`, with its key.
fn removal(id: &str, version: u64, idempotency_key: Option<String>) -> Change {
    Change {
        remove: Some(Removal {
            id: id.to_owned(),
            version,
            callbacks: vec![],
            deliveries: vec![],
            idempotency_key,
        }),
        ..Default::default()
    }
}

async fn ids(store: &dyn Store, filter: &ExecutionFilter) -> Vec<u64> {
    store
        .executions(filter)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.created_ms)
        .collect()
}

/// Every page of `filter`, `size` at a time, as the API pages them.
async fn paged(store: &dyn Store, filter: &ExecutionFilter, size: usize) -> Vec<u64> {
    let mut filter = ExecutionFilter {
        limit: Some(size),
        ..filter.clone()
    };
    let mut all = Vec::new();
    loop {
        let page = store.executions(&filter).await.unwrap();
        all.extend(page.iter().map(|e| e.created_ms));
        match page.last() {
            Some(last) if page.len() == size => filter.past = Some(last.id.clone()),
            _ => return all,
        }
    }
}

/// Filters by workflow, plugin (of the current step), state and creation
/// time, alone and together, newest or oldest first, paged by cursor; a
/// transition that moves an execution to another state or step moves it
/// between the listings, and a removal takes it out of them.
pub async fn listings_follow_filters_transitions_and_removals(backend: impl Backend) {
    use ExecState::{Completed, Failed, Running, Suspended};
    let store = backend.store();
    let store = store.as_ref();
    // created ms: workflow, plugins, step, state
    let rows = [
        (1_000, "orders", ["http", "sign"], 0, Running),
        (2_000, "orders", ["http", "sign"], 1, Suspended),
        (3_000, "billing", ["sign", "http"], 0, Suspended),
        (4_000, "orders", ["http", "sign"], 0, Completed),
        (5_000, "orders", ["http", "sign"], 1, Failed),
        (6_000, "billing", ["sign", "http"], 1, Suspended),
        (7_000, "orders", ["http", "sign"], 0, Suspended),
    ];
    let mut execs = Vec::new();
    for (ms, workflow, plugins, at, state) in rows {
        let e = made(ms, workflow, &plugins, at, state);
        store.apply(&with_execution(e.clone())).await.unwrap();
        execs.push(e);
    }
    let newest = |f: ExecutionFilter| ExecutionFilter {
        newest_first: true,
        ..f
    };
    let of = |workflow: &str| ExecutionFilter {
        workflow: Some(workflow.into()),
        ..Default::default()
    };
    let on = |plugin: &str| ExecutionFilter {
        plugin: Some(plugin.into()),
        ..Default::default()
    };
    // A workflow in any state: its executions of every state, in order.
    assert_eq!(
        ids(store, &of("orders")).await,
        [1000, 2000, 4000, 5000, 7000]
    );
    assert_eq!(
        ids(store, &newest(of("orders"))).await,
        [7000, 5000, 4000, 2000, 1000]
    );
    for size in [1, 2, 3] {
        assert_eq!(
            paged(store, &newest(of("orders")), size).await,
            [7000, 5000, 4000, 2000, 1000],
            "pages of {size}"
        );
        assert_eq!(
            paged(store, &of("orders"), size).await,
            [1000, 2000, 4000, 5000, 7000]
        );
    }
    let suspended = |f: ExecutionFilter| ExecutionFilter {
        state: Some(Suspended),
        ..f
    };
    assert_eq!(ids(store, &suspended(of("orders"))).await, [2000, 7000]);
    assert_eq!(
        ids(store, &suspended(ExecutionFilter::default())).await,
        [2000, 3000, 6000, 7000]
    );
    // The current step's plugin.
    assert_eq!(ids(store, &on("http")).await, [1000, 4000, 6000, 7000]);
    assert_eq!(ids(store, &on("sign")).await, [2000, 3000, 5000]);
    assert_eq!(ids(store, &suspended(on("sign"))).await, [2000, 3000]);
    let both = ExecutionFilter {
        workflow: Some("billing".into()),
        ..on("http")
    };
    assert_eq!(ids(store, &both).await, [6000]);
    assert_eq!(
        paged(store, &newest(on("http")), 1).await,
        [7000, 6000, 4000, 1000]
    );
    // Creation time: at or after, and before.
    let window = |after, before| ExecutionFilter {
        created_after_ms: after,
        created_before_ms: before,
        ..Default::default()
    };
    assert_eq!(
        ids(store, &window(Some(2000), Some(5000))).await,
        [2000, 3000, 4000]
    );
    assert_eq!(
        ids(store, &window(Some(2001), None)).await,
        [3000, 4000, 5000, 6000, 7000]
    );
    assert_eq!(ids(store, &window(None, Some(1001))).await, [1000]);
    assert!(ids(store, &window(Some(8000), None)).await.is_empty());
    let recent_orders = ExecutionFilter {
        created_after_ms: Some(2000),
        ..newest(of("orders"))
    };
    assert_eq!(
        paged(store, &recent_orders, 2).await,
        [7000, 5000, 4000, 2000]
    );
    let recent_suspended = ExecutionFilter {
        created_before_ms: Some(6000),
        ..newest(suspended(ExecutionFilter::default()))
    };
    assert_eq!(paged(store, &recent_suspended, 1).await, [3000, 2000]);

    // The one at 7000 resumes into its second step, on another plugin;
    // the one at 1000 completes.
    let mut moved = execs[6].clone();
    moved.version = 2;
    moved.step_index = 1;
    moved.state = Running;
    store.apply(&with_execution(moved)).await.unwrap();
    let mut done = execs[0].clone();
    done.version = 2;
    done.state = Completed;
    store.apply(&with_execution(done)).await.unwrap();
    assert_eq!(ids(store, &suspended(of("orders"))).await, [2000]);
    assert_eq!(ids(store, &on("http")).await, [1000, 4000, 6000]);
    assert_eq!(ids(store, &on("sign")).await, [2000, 3000, 5000, 7000]);
    let running = ExecutionFilter {
        state: Some(Running),
        ..Default::default()
    };
    assert_eq!(ids(store, &running).await, [7000]);
    let completed = ExecutionFilter {
        state: Some(Completed),
        ..of("orders")
    };
    assert_eq!(ids(store, &completed).await, [1000, 4000]);

    // A removal takes it out of every listing.
    store.apply(&removal(&execs[3].id, 1, None)).await.unwrap();
    assert_eq!(ids(store, &completed).await, [1000]);
    assert_eq!(ids(store, &on("http")).await, [1000, 6000]);
    assert_eq!(ids(store, &of("orders")).await, [1000, 2000, 5000, 7000]);
}

/// Counts by workflow and state follow starts, transitions and removals,
/// and leave out the states no execution of a workflow is in.
pub async fn counts_by_workflow_follow_transitions(backend: impl Backend) {
    use ExecState::{Completed, Running, Suspended};
    let store = backend.store();
    let count = |workflow: Option<&'static str>| {
        let store = store.clone();
        async move {
            store
                .count_executions_by_workflow(workflow)
                .await
                .unwrap()
                .into_iter()
                .map(|(w, s, n)| (w, s.as_str(), n))
                .collect::<Vec<_>>()
        }
    };
    assert!(count(None).await.is_empty());
    let a = made(1_000, "orders", &["http"], 0, Running);
    let b = made(2_000, "orders", &["http"], 0, Running);
    let c = made(3_000, "billing", &["http"], 0, Suspended);
    for e in [&a, &b, &c] {
        store.apply(&with_execution(e.clone())).await.unwrap();
    }
    let w = |name: &str, state: &'static str, n: u64| (name.to_owned(), state, n);
    assert_eq!(
        count(None).await,
        [w("billing", "suspended", 1), w("orders", "running", 2)]
    );
    assert_eq!(count(Some("orders")).await, [w("orders", "running", 2)]);
    assert!(count(Some("nothing")).await.is_empty());

    let mut a2 = a.clone();
    a2.version = 2;
    a2.state = Suspended;
    store.apply(&with_execution(a2.clone())).await.unwrap();
    let mut a3 = a2;
    a3.version = 3;
    a3.state = Completed;
    store.apply(&with_execution(a3)).await.unwrap();
    // A write that keeps the state moves nothing.
    let mut b2 = b.clone();
    b2.version = 2;
    store.apply(&with_execution(b2)).await.unwrap();
    assert_eq!(
        count(Some("orders")).await,
        [w("orders", "running", 1), w("orders", "completed", 1)]
    );
    store.apply(&removal(&a.id, 3, None)).await.unwrap();
    assert_eq!(
        count(None).await,
        [w("billing", "suspended", 1), w("orders", "running", 1)]
    );
}

/// An idempotent start's record is written with its execution or not at
/// all: of racing starts under one key, one is stored; the others write
/// nothing, not even their executions. It goes with its execution, and the
/// key is free again.
pub async fn an_idempotent_start_is_stored_once_and_removed_with_its_execution(
    backend: impl Backend,
) {
    let store = backend.store();
    let start = |i: u64| {
        let mut e = made(1_000 + i, "orders", &["http"], 0, ExecState::Running);
        e.idempotency_key = Some("token-1/retry-me".into());
        let record = IdempotentStart {
            key: "token-1/retry-me".into(),
            execution_id: e.id.clone(),
            request_sha256: format!("sha-{i}"),
            status: 201,
            state: "running".into(),
            created_ms: 1_000 + i,
        };
        Change {
            execution: Some(e),
            idempotent_start: Some(record),
            ..Default::default()
        }
    };
    let starts: Vec<Change> = (0..8).map(start).collect();
    let winners = super::race(&store, 8, |i| starts[i as usize].clone()).await;
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = starts[winners[0] as usize].clone();
    let stored = store.idempotent_start("token-1/retry-me").await.unwrap();
    assert_eq!(stored.as_ref(), winner.idempotent_start.as_ref());
    let all = store.executions(&ExecutionFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1, "a refused start wrote its execution");
    assert!(
        store
            .idempotent_start("token-2/retry-me")
            .await
            .unwrap()
            .is_none()
    );

    // Once the execution is removed, so is the key.
    let mut done = winner.execution.unwrap();
    done.version = 2;
    done.state = ExecState::Completed;
    store.apply(&with_execution(done.clone())).await.unwrap();
    store
        .apply(&removal(&done.id, 2, done.idempotency_key.clone()))
        .await
        .unwrap();
    assert!(
        store
            .idempotent_start("token-1/retry-me")
            .await
            .unwrap()
            .is_none()
    );
    store.apply(&start(99)).await.unwrap();
    let again = store.idempotent_start("token-1/retry-me").await.unwrap();
    assert_eq!(again.unwrap().request_sha256, "sha-99");
}
