//! The daemons a benchmark runs in this process: one on sled (as a
//! single `stephost serve`), or several on one PostgreSQL database, as
//! operators run identical daemons behind a load balancer. Each has its own
//! listener on loopback and its own data dir (the compiled-component
//! cache); on PostgreSQL they share every record, so a callback may land
//! on any of them.

use std::sync::Arc;
use std::time::Duration;

use stephost::workflow::Workflows;

/// Daemons serving on one runtime, until [`Nodes::stop`].
pub struct Nodes {
    /// `http://127.0.0.1:PORT` of each.
    pub bases: Vec<String>,
    /// Each daemon's state machine (and through it its store handle).
    pub workflows: Vec<Arc<Workflows>>,
    /// Each daemon's data dir.
    pub data_dirs: Vec<std::path::PathBuf>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    served: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Where the data dirs are (removed when this is dropped).
    dir: tempfile::TempDir,
}

impl Nodes {
    /// Opens and serves `n` daemons, each configured by `configure` from
    /// the defaults (data dir, egress to loopback, no auth are set here),
    /// all on the store `store` names (`None`: sled in the data dir).
    /// Opened one after another: the first one creates the schema.
    pub async fn start(
        n: usize,
        store: Option<&str>,
        configure: impl Fn(&mut stephost::Config),
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(n >= 1, "--nodes must be at least 1");
        anyhow::ensure!(
            n == 1 || store.is_some(),
            "several daemons share a PostgreSQL store: give --store postgres://…"
        );
        let dir = tempfile::tempdir()?;
        let mut nodes = Self {
            bases: Vec::new(),
            workflows: Vec::new(),
            data_dirs: Vec::new(),
            stops: Vec::new(),
            served: Vec::new(),
            dir,
        };
        for i in 0..n {
            let mut config = stephost::Config {
                data_dir: nodes.dir.path().join(format!("node-{i}")),
                egress_allow: vec!["127.0.0.0/8".into()],
                store: store.map(str::to_owned),
                ..Default::default()
            };
            config.auth.enabled = false;
            configure(&mut config);
            std::fs::create_dir_all(&config.data_dir)?;
            nodes.data_dirs.push(config.data_dir.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("http://{}", listener.local_addr()?);
            let daemon = stephost::Daemon::open(config).await?;
            let workflows = daemon.workflows().clone();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let served = tokio::spawn(daemon.serve(listener, async move {
                let _ = rx.await;
            }));
            nodes.bases.push(base);
            nodes.workflows.push(workflows);
            nodes.stops.push(tx);
            nodes.served.push(served);
        }
        Ok(nodes)
    }

    /// Stops every daemon and waits (30 s at most each) for it to finish.
    pub async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for served in self.served {
            let _ = tokio::time::timeout(Duration::from_secs(30), served).await;
        }
    }
}
