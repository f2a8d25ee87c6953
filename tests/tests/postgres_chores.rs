//! Single-runner chores on one PostgreSQL database: of three daemons, one
//! sweeps retention and one looks for orphans, each chore's lead passing to
//! another node when its leader stops.

use std::time::{Duration, Instant};

use serde_json::json;
use stephost::Config;
use stephost::store::pg_testing;
use stephost_tests::{TestDaemon, WAIT};

const CHORES: [&str; 2] = ["retention", "take-over"];

/// The gauge of `chore` on `node`: 1 when it leads the chore.
async fn leads(node: &TestDaemon, chore: &str) -> bool {
    let m = node.metrics().await;
    let value = m[&format!(r#"stephost_chore_leader{{chore="{chore}"}}"#)];
    assert!(value == 0.0 || value == 1.0, "{chore}: {value}");
    value == 1.0
}

/// Waits until exactly one of `nodes` leads each chore; the index of the
/// leader of each.
async fn leaders(nodes: &[&TestDaemon]) -> [usize; 2] {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut found = [Vec::new(), Vec::new()];
        for (c, chore) in CHORES.iter().enumerate() {
            for (i, node) in nodes.iter().enumerate() {
                if leads(node, chore).await {
                    found[c].push(i);
                }
            }
        }
        if found.iter().all(|f| f.len() == 1) {
            return [found[0][0], found[1][0]];
        }
        assert!(
            Instant::now() < deadline,
            "not one leader per chore: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn removed(node: &TestDaemon) -> f64 {
    node.metrics().await["stephost_executions_removed_total"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_runs_each_chore_and_another_takes_it_when_it_stops() {
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let mut config = Config::from_toml(
        "[cluster]\nlease_ms = 2000\n[retention]\ncompleted_ms = 300\nfailed_ms = 0\n",
    )
    .unwrap();
    config.store = Some(pg_testing::database().await);
    let mut nodes = Vec::new();
    for dir in &dirs {
        nodes.push(TestDaemon::start(config.clone(), dir.path()).await);
    }
    let all: Vec<&TestDaemon> = nodes.iter().collect();
    let [sweeper, _] = leaders(&all).await;

    // Executions completed on every node are all removed by the one that
    // sweeps; the others remove none.
    let mut ids = Vec::new();
    for n in 0..9 {
        let node = &nodes[n % 3];
        let id = node
            .start_execution(json!({"plugin": "echo", "input": {"n": n}}))
            .await;
        node.wait_for(&id, "completed").await;
        ids.push(id);
    }
    let deadline = Instant::now() + WAIT;
    for id in &ids {
        while nodes[0].get(&format!("/v1/executions/{id}")).await.0 != 404 {
            assert!(Instant::now() < deadline, "{id} was never removed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut by_node = Vec::new();
    for node in &nodes {
        by_node.push(removed(node).await);
    }
    let expected: Vec<f64> = (0..3)
        .map(|i| if i == sweeper { ids.len() as f64 } else { 0.0 })
        .collect();
    assert_eq!(by_node, expected, "removals by node; node {sweeper} sweeps");
    // Still one leader each, the same sweeper.
    assert_eq!(leaders(&all).await[0], sweeper);

    // The sweeper stops: one of the other two takes each chore it led.
    let stopped = nodes.remove(sweeper);
    stopped.stop().await;
    let rest: Vec<&TestDaemon> = nodes.iter().collect();
    leaders(&rest).await;

    // And sweeps: an execution completed now is removed.
    let id = nodes[0]
        .start_execution(json!({"plugin": "echo", "input": {"n": 9}}))
        .await;
    nodes[0].wait_for(&id, "completed").await;
    while nodes[1].get(&format!("/v1/executions/{id}")).await.0 != 404 {
        assert!(
            Instant::now() < deadline + WAIT,
            "never removed after the hand-over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in nodes {
        node.stop().await;
    }
}
