//! `stephost migrate --from DIR --to postgres://…`: moves a stopped sled
//! daemon's state into a PostgreSQL database, so that the daemons on the
//! database carry on where it stopped. Everything is copied — executions
//! (ended ones too, with their history), callback records, timers, result
//! deliveries, API tokens, uploaded plugins with every version an
//! execution may resume on, and the callback-ticket key, so that callback
//! URLs partners already hold stay valid. The database must not have been
//! used by a daemon yet; a migration cut short can be run again.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::json;

use crate::config::store::{PASSWORD_ENV, resolve};
use crate::config::{StoreLocation, store::DEFAULT_POOL_SIZE};
use crate::store::{
    CallbackStore as _, ComponentStore as _, DeliveryStore as _, ExecutionStore as _, Import,
    PgStore, SecretStore as _, StatsStore as _, Store, TimerStore as _, TokenStore as _,
};

/// Executions read and written per transaction.
const BATCH: usize = 500;

/// Options of `stephost migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The data dir of a stopped sled daemon.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The database: postgres://user@host:port/database (its password in
    /// STEPHOST_STORE_PASSWORD or --to-password-file).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// A file whose first line is the database's password.
    #[arg(long, value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
}

/// Runs the migration; prints what was copied as one JSON object.
pub async fn execute(args: MigrateArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    crate::config::store::refuse_password_in_argument("--to", &args.to)?;
    let source = crate::daemon::open_sled(&args.from)?;
    let StoreLocation::Postgres(pg) = resolve(
        Some(&args.to),
        &args.from,
        args.to_password_file.as_deref(),
        DEFAULT_POOL_SIZE,
    )?
    else {
        anyhow::bail!("--to must be a postgres:// URL (its password in {PASSWORD_ENV})");
    };
    let target = PgStore::open_with(&pg.url, pg.password.as_deref(), pg.pool_size)
        .await
        .context("cannot open the PostgreSQL store")?;
    let already: u64 = target
        .count_executions_by_state()
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let key = source.node_secret(crate::workflow::TICKET_KEY).await?;
    target
        .import_secret(crate::workflow::TICKET_KEY, &key)
        .await
        .context("the callback-ticket key")?;
    if already > 0 {
        tracing::info!(
            executions = already,
            "the database holds executions already (a migration run before?): records present are kept"
        );
    }

    let mut ids = Vec::new();
    source.each_execution(&mut |e| ids.push(e.id)).await?;
    let mut hashes = BTreeSet::new();
    let (mut executions, mut new_executions, mut callbacks, mut deliveries) = (0, 0, 0, 0);
    for chunk in ids.chunks(BATCH) {
        let mut batch = Import::default();
        for id in chunk {
            let Some(exec) = source.execution(id).await? else {
                continue;
            };
            hashes.extend(exec.steps.iter().filter_map(|s| s.plugin_hash.clone()));
            for cid in source.callbacks_of(id).await? {
                if let Some(record) = source.callback(&cid).await? {
                    batch.callbacks.push(record);
                }
            }
            batch.deliveries.extend(source.deliveries_of(id).await?);
            if let Some(key) = &exec.idempotency_key {
                batch
                    .idempotent_starts
                    .extend(source.idempotent_start(key).await?);
            }
            batch.executions.push(exec);
        }
        executions += batch.executions.len();
        callbacks += batch.callbacks.len();
        deliveries += batch.deliveries.len();
        new_executions += target.import(&batch).await?;
    }
    let timers = source.due_timers(u64::MAX, usize::MAX).await?;
    for chunk in timers.chunks(BATCH * 4) {
        target
            .import(&Import {
                timers: chunk.to_vec(),
                ..Import::default()
            })
            .await?;
    }

    let tokens = source.tokens().await?;
    for token in &tokens {
        target.put_token(token).await?;
    }
    let plugins = copy_plugins(&source, &target, &mut hashes).await?;
    target.flush().await?;
    writeln!(
        out,
        "{}",
        json!({
            "from": args.from,
            "to": crate::config::store::redact(&pg.url),
            "executions": executions,
            "new_executions": new_executions,
            "callbacks": callbacks,
            "deliveries": deliveries,
            "timers": timers.len(),
            "tokens": tokens.len(),
            "plugins": plugins,
            "components": hashes.len(),
        })
    )?;
    Ok(0)
}

/// Copies the uploaded plugins (every version, the current one last, so
/// it stays current) and every component an execution names; `hashes`
/// ends up holding every component copied. Returns the plugins' names.
async fn copy_plugins(
    source: &dyn Store,
    target: &PgStore,
    hashes: &mut BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for (name, current) in source.plugin_refs().await? {
        let mut versions: Vec<String> = source
            .plugin_versions(&name)
            .await?
            .into_iter()
            .filter(|h| *h != current)
            .collect();
        versions.push(current);
        for hash in &versions {
            if let Some(bytes) = source.component(hash).await? {
                target.put_component(hash, &bytes).await?;
                target.put_plugin_ref(&name, hash).await?;
                hashes.insert(hash.clone());
            }
        }
        names.push(name);
    }
    // Versions only executions name (a plugin removed or re-uploaded since
    // they suspended, or a built-in one's): what they resume on.
    let mut missing = BTreeSet::new();
    for hash in hashes.iter() {
        if target.component(hash).await?.is_none() {
            match source.component(hash).await? {
                Some(bytes) => target.put_component(hash, &bytes).await?,
                None => {
                    missing.insert(hash.clone());
                }
            }
        }
    }
    for hash in missing {
        // A built-in plugin's version is in the binary, not the store.
        hashes.remove(&hash);
    }
    Ok(names)
}
