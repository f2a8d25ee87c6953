//! Wires the parts into a daemon: open the store, load the plugins, start
//! the timer loop and recovery, and serve the API until told to stop.
//! [`Daemon::serve`] takes its listener and shutdown signal from the
//! caller, so tests run the real daemon on port 0 in-process.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::capabilities::HostServices;
use crate::config::Config;
use crate::config::StoreLocation;
use crate::store::{PgStore, SledStore, Store, StoreError};
use crate::wasm::executor::Executor;
use crate::wasm::plugins::{Registry, Source};
use crate::workflow::{DurableRegistrar, Workflows};

/// A daemon, opened and ready to serve.
pub struct Daemon {
    config: Arc<Config>,
    workflows: Arc<Workflows>,
    registrar: Arc<DurableRegistrar>,
    ticker: crate::wasm::engine::EpochTicker,
    interrupted: Vec<String>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").finish_non_exhaustive()
    }
}

impl Daemon {
    /// Opens the data dir and loads the built-in and configured plugins.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        Self::open_with(config, Arc::new(crate::capabilities::http::SendAll)).await
    }

    /// [`Daemon::open`] with `hooks` deciding about plugins' outbound
    /// requests (`stephost run` watches them, and may send none).
    pub async fn open_with(
        config: Config,
        hooks: Arc<dyn crate::capabilities::HttpHooks>,
    ) -> anyhow::Result<Self> {
        check(&config)?;
        let store = open_store(&config.store_location()?).await?;
        Self::start(config, store, hooks, None).await
    }

    /// [`Daemon::open_with`] on a store the caller opened, loading only the
    /// built-in and configured plugins named in `plugins`: `stephost run`
    /// keeps a throw-away run's state in memory, where a data dir would be
    /// written, flushed and deleted for nothing, and loads what its one
    /// execution runs, not every plugin the binary carries.
    pub async fn open_on(
        config: Config,
        store: Arc<dyn Store>,
        hooks: Arc<dyn crate::capabilities::HttpHooks>,
        plugins: &[String],
    ) -> anyhow::Result<Self> {
        check(&config)?;
        Self::start(config, store, hooks, Some(plugins)).await
    }

    /// Loads the plugins (of the built-in and configured ones, those in
    /// `only` if given) and recovers what the store holds, on a checked
    /// config.
    async fn start(
        config: Config,
        store: Arc<dyn Store>,
        hooks: Arc<dyn crate::capabilities::HttpHooks>,
        only: Option<&[String]>,
    ) -> anyhow::Result<Self> {
        let wanted = |name: &str| only.is_none_or(|names| names.iter().any(|n| n == name));
        let config = Arc::new(config);
        let engine = crate::wasm::engine::new_engine(&config)?;
        let ticker = crate::wasm::engine::spawn_epoch_ticker(engine.clone());
        let registrar = Arc::new(DurableRegistrar::new(store.clone(), config.public_url()));
        let mut services = HostServices::new(registrar.clone(), Arc::new(config.egress()?))?;
        services.hooks = hooks;
        let executor = Arc::new(
            Executor::new(engine, services)?.with_max_instances(config.max_concurrent_steps),
        );
        let registry = Arc::new(Registry::new(
            executor.clone(),
            store.clone(),
            config.clone(),
        ));

        for (name, bytes) in crate::builtin::BUILTIN_PLUGINS {
            if config.plugins.get(*name).is_some_and(|p| p.path.is_some()) || !wanted(name) {
                continue;
            }
            registry
                .load(name, bytes, Source::Builtin)
                .await
                .with_context(|| format!("load built-in plugin {name}"))?;
        }
        for (name, pc) in &config.plugins {
            if let Some(path) = pc.path.as_ref().filter(|_| wanted(name)) {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("read plugin {name} from {}", path.display()))?;
                registry.load(name, &bytes, Source::Config).await?;
            }
        }
        // Plugins uploaded through the API, at the version last uploaded.
        // The API refuses uploads under a name the config file or the
        // binary provides; one stored before that (or before the config
        // named it) stays in the store, unused, while that lasts.
        for (name, hash) in store.plugin_refs().await? {
            if let Some(fixed) = Source::fixed(&config, &name) {
                tracing::warn!(plugin = %name, source = fixed.as_str(), "an uploaded plugin is not used: the config file or the binary provides this name");
                continue;
            }
            // One uploaded plugin that no longer loads (its bytes lost, or
            // refused by this build) must not keep the daemon, and every
            // other plugin, from serving: it is reported and left out, and
            // an upload under its name replaces it.
            let loaded = match store.component(&hash).await? {
                Some(bytes) => registry
                    .load(&name, &bytes, Source::Upload)
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from),
                None => Err(anyhow::anyhow!(
                    "its component {hash} is missing from the store"
                )),
            };
            if let Err(e) = loaded {
                tracing::error!(
                    plugin = %name,
                    error = format!("{e:#}"),
                    "an uploaded plugin could not be loaded and is left out: its executions fail with plugin-unavailable when they reach it; upload a working version under the same name with POST /v1/plugins?name={name}"
                );
            }
        }
        // A section without `path` grants by name, whatever provides the
        // code: it may name a plugin that has yet to be uploaded.
        for name in config.plugins.keys().filter(|name| wanted(name)) {
            if registry.current(name).is_none() {
                tracing::warn!(plugin = %name, "[plugins.{name}] grants a plugin that is not loaded: it has no `path`, is not built in and was not uploaded; upload it with POST /v1/plugins?name={name}");
            }
        }
        // Of a run's plugins, only those it loads can be checked (the
        // workflows it runs use nothing else).
        for (wf, def) in &config.workflows {
            for step in def.steps.iter().filter(|s| wanted(&s.plugin)) {
                if registry.current(&step.plugin).is_none() {
                    anyhow::bail!("workflow {wf:?} uses unknown plugin {:?}", step.plugin);
                }
            }
        }
        let workflows = Arc::new(Workflows::new(store, registry, executor, config.clone()));
        let interrupted = workflows.interrupted().await?;
        Ok(Self {
            interrupted,
            config,
            workflows,
            registrar,
            ticker,
        })
    }

    /// Creates an API token in this daemon's store; returns it (shown once).
    pub async fn create_token(
        &self,
        name: &str,
        permissions: &[crate::auth::Permission],
    ) -> anyhow::Result<String> {
        let (token, _) =
            crate::auth::create_token(self.workflows.store().as_ref(), name, permissions, None)
                .await?;
        Ok(token)
    }

    /// On the first start of a data dir without tokens (auth on), creates
    /// an admin token and writes it to `<data_dir>/first-admin-token`,
    /// readable by this user only, so that a new operator gets in without
    /// stopping the daemon to run `token create`. Returns the file's path
    /// when it made one. Never writes a token into the log.
    pub async fn first_admin_token(&self) -> anyhow::Result<Option<PathBuf>> {
        let store = self.workflows.store();
        if !self.config.auth.enabled || store.token_count().await? > 0 {
            return Ok(None);
        }
        let path = self.config.data_dir.join(FIRST_ADMIN_TOKEN_FILE);
        let context = || format!("write the first admin token to {}", path.display());
        // Opened before the token exists: a token nobody could read would
        // end these first starts (there would be a token) and lock the
        // operator out. A file left by an earlier first start holds a
        // token that no longer exists; it is overwritten.
        let mut file = {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options.open(&path).with_context(context)?
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(context)?;
        }
        let Some((token, _)) = crate::auth::create_first_admin_token(store.as_ref()).await? else {
            // Another daemon sharing the store made the first token: the
            // operator finds it in that daemon's data dir.
            drop(file);
            std::fs::remove_file(&path).with_context(context)?;
            return Ok(None);
        };
        use std::io::Write as _;
        writeln!(file, "{token}")
            .and_then(|()| file.sync_all())
            .with_context(context)?;
        Ok(Some(path))
    }

    /// The state machine (for tests and the CLI).
    pub fn workflows(&self) -> &Arc<Workflows> {
        &self.workflows
    }

    /// Serves the API on `listener` until `shutdown` resolves, then stops
    /// accepting, lets in-flight requests and steps finish within the grace
    /// period, flushes the store and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let local = listener.local_addr().context("listener address")?;
        let public_url = match &self.config.public_url {
            Some(_) => self.config.public_url(),
            None => format!("http://{local}"),
        };
        self.registrar.set_public_url(public_url.clone());
        let recovered = self.workflows.recover(self.interrupted.clone());
        // On a shared store: this node's first heartbeat is written before
        // it takes any work, and then every third of the lease, with the
        // take-over of what stopped nodes left running.
        let membership = if self.workflows.store().is_shared() {
            let lease_ms = self.config.cluster.lease_ms;
            self.workflows
                .store()
                .heartbeat(self.workflows.node())
                .await
                .context("write this node's first heartbeat")?;
            tracing::info!(node = %self.workflows.node(), lease_ms, "joined the daemons sharing the store");
            Some(tokio::spawn(
                self.workflows.clone().run_membership(lease_ms),
            ))
        } else {
            None
        };
        // Not a tracked step task: shutdown stops it at once rather than
        // waiting out the grace period for a loop that never ends.
        let timers = self.workflows.clone();
        let deliverer = Arc::new(crate::delivery::Deliverer::new(
            &self.config,
            self.workflows.clone(),
        )?);
        let claim_ms = self.config.cluster.lease_ms;
        let timer_loop =
            tokio::spawn(async move { crate::timers::run(timers, deliverer, claim_ms).await });
        // Like the timer loop, stopped at once on shutdown: a removal cut
        // short is simply made again.
        let retention = tokio::spawn(
            self.workflows
                .clone()
                .run_retention(self.config.retention.clone(), self.config.cluster.lease_ms),
        );
        tracing::info!(%local, recovered, "stephost serving");
        if self.config.public_url.is_none() && local.ip().is_unspecified() {
            tracing::warn!(
                public_url = %self.config.public_url(),
                "listening on every address without public_url: callback URLs name an address partners cannot call; set public_url (or --public-url) to the URL partners reach this daemon on"
            );
        }
        if self.config.auth.enabled && self.workflows.store().token_count().await? == 0 {
            tracing::warn!(
                "no API tokens exist yet; create one with `stephost token create --data-dir {} --name admin --permission admin` (while the daemon is stopped)",
                self.config.data_dir.display()
            );
        }

        let api = crate::api::service(self.workflows.clone(), &self.config, public_url)?;
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        // HTTP/1.1 only (the API speaks nothing else), so nothing sniffs
        // each connection for an HTTP/2 preface; with a timer, a client
        // that never finishes its headers is cut off (hyper: 30 s).
        let mut builder = hyper::server::conn::http1::Builder::new();
        // Every connection task holds the API, and through it the store:
        // `serve` returns only once they are all gone, so whoever opens the
        // data dir next (a restart in the same process) finds it free.
        let connections = tokio_util::task::TaskTracker::new();
        let cut_connections = tokio_util::sync::CancellationToken::new();
        builder.timer(hyper_util::rt::TokioTimer::new());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of file descriptors and the like: keep
                            // serving the connections we have.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Answers go out whole at once; do not hold the last
                    // segment back waiting for an ACK (Nagle).
                    let _ = stream.set_nodelay(true);
                    let service = hyper_util::service::TowerToHyperService::new(api.clone());
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    let cut = cut_connections.clone();
                    connections.spawn(async move {
                        tokio::select! {
                            ended = conn => if let Err(e) = ended {
                                tracing::debug!(error = %e, "connection ended with an error");
                            },
                            () = cut.cancelled() => {}
                        }
                    });
                }
                _ = &mut shutdown => break,
            }
        }
        drop(listener);
        let grace = Duration::from_millis(self.config.shutdown_grace_ms);
        // One grace period for requests and steps together.
        let deadline = tokio::time::Instant::now() + grace;
        tracing::info!(
            grace_ms = self.config.shutdown_grace_ms,
            "shutting down: no longer accepting connections; in-flight requests and step calls may finish"
        );
        if tokio::time::timeout_at(deadline, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("grace period over with connections still open");
        }
        connections.close();
        cut_connections.cancel();
        connections.wait().await;
        timer_loop.abort();
        retention.abort();
        let _ = timer_loop.await;
        let _ = retention.await;
        self.workflows
            .shutdown(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        if let Some(membership) = membership {
            membership.abort();
            let _ = membership.await;
        }
        // Its heartbeat and the chores it led go at once: on a shared store
        // the others take over now, not a lease later; on a store of its
        // own, a daemon opened next on it in this process leads at once.
        self.workflows.leave().await;
        self.ticker.abort();
        self.workflows.store().flush().await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// What must hold before a daemon opens anything.
fn check(config: &Config) -> anyhow::Result<()> {
    config.validate()?;
    // The delivery signing key may come from the environment: read it
    // here, so a variable that is not set stops the daemon before it
    // opens anything (as a missing secret does), not in `serve` after
    // recovery has begun re-running steps.
    config.delivery.signing_key().map_err(anyhow::Error::msg)?;
    Ok(())
}

/// Opens the store a configuration names: sled in the data dir, or a
/// PostgreSQL database (its schema brought up to date).
pub async fn open_store(location: &StoreLocation) -> anyhow::Result<Arc<dyn Store>> {
    match location {
        StoreLocation::Sled(dir) => Ok(Arc::new(open_sled(dir)?)),
        StoreLocation::Postgres(pg) => {
            let store = PgStore::open_with(&pg.url, pg.password.as_deref(), pg.pool_size)
                .await
                .context("cannot open the PostgreSQL store")?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens the data dir, explaining the usual reason it cannot be: another
/// daemon holds it.
pub fn open_sled(dir: &std::path::Path) -> anyhow::Result<SledStore> {
    SledStore::open(dir).map_err(|e| match e {
        StoreError::Locked { .. } => anyhow::Error::new(e).context(format!(
            "the data dir {} is in use by another stephost process (stop it, or use its HTTP API)",
            dir.display()
        )),
        e => e.into(),
    })
}

/// The file the first admin token is written to, in the data dir.
pub const FIRST_ADMIN_TOKEN_FILE: &str = "first-admin-token";

/// The daemon process's signals: the returned future resolves on the first
/// SIGTERM or Ctrl-C (SIGINT), which starts a graceful shutdown (stop
/// accepting, let in-flight requests and step calls finish within
/// `shutdown_grace_ms`, flush, exit 0); a second one exits the process at
/// once (status 128 + signal). That loses nothing: whatever the daemon
/// acknowledged is already on disk, and a step cut short re-runs from its
/// last step boundary, with the same step-run-id, at the next start.
/// Call it inside the runtime; the handlers are in place when it returns.
pub fn shutdown_signals() -> impl Future<Output = ()> + Send + 'static {
    let (first, first_received) = tokio::sync::oneshot::channel::<()>();
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let (Ok(mut term), Ok(mut int)) = handlers else {
                tracing::error!("cannot listen for SIGTERM/SIGINT");
                return std::future::pending::<()>().await;
            };
            let mut first = Some(first);
            loop {
                let code = tokio::select! {
                    _ = term.recv() => 128 + 15,
                    _ = int.recv() => 128 + 2,
                };
                match first.take() {
                    Some(tx) => {
                        tracing::info!(
                            "signal received: shutting down gracefully (a second signal exits at once)"
                        );
                        let _ = tx.send(());
                    }
                    None => {
                        tracing::warn!(
                            "second signal: exiting at once; everything acknowledged is on disk, interrupted steps re-run at the next start"
                        );
                        std::process::exit(code);
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            let _ = first.send(());
            let _ = tokio::signal::ctrl_c().await;
            std::process::exit(130);
        }
    });
    async move {
        let _ = first_received.await;
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
