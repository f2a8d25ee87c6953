//! `stephost token ...`: API tokens, in a stopped daemon's data dir or
//! through a running daemon's `/v1/tokens` (a running daemon holds its
//! data dir locked).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;

use super::remote::{Remote, call};
use crate::auth::Permission;
use crate::model::now_ms;
use crate::store::StoreError;

/// Where the tokens are: a data dir (the daemon stopped) or a daemon.
#[derive(Debug, clap::Args)]
pub struct Where {
    /// The daemon's data dir [default: the config's, else ./stephost-data].
    #[arg(long, conflicts_with = "url")]
    data_dir: Option<PathBuf>,
    /// The daemon's config (TOML), for its data dir.
    #[arg(long, env = "STEPHOST_CONFIG", conflicts_with = "url")]
    config: Option<PathBuf>,
    /// Act through the running daemon at this base URL instead (needs an
    /// admin token).
    #[arg(long)]
    url: Option<String>,
    /// Admin API token, with --url.
    #[arg(long, env = "STEPHOST_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `stephost token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once: only its hash is stored.
    Create {
        /// Where the tokens are.
        #[command(flatten)]
        at: Where,
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
        /// admin, executions:write, executions:read or callbacks:send (repeatable).
        #[arg(long = "permission", required = true)]
        permissions: Vec<Permission>,
        /// Refuse it after this long (e.g. 90d, 12h, 30m) [default: never].
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List the tokens: id, name, permissions, creation, expiry and last
    /// use; never a token.
    List {
        /// Where the tokens are.
        #[command(flatten)]
        at: Where,
    },
    /// Revoke a token by its id: refused from then on.
    Revoke {
        /// Where the tokens are.
        #[command(flatten)]
        at: Where,
        /// Revoke it even if it is the last admin token.
        #[arg(long)]
        force: bool,
        /// The token's id (`token list`).
        id: String,
    },
}

/// Runs a token command; returns the exit code.
pub(super) async fn execute(command: TokenCommand, out: &mut dyn Write) -> anyhow::Result<i32> {
    let at = match &command {
        TokenCommand::Create { at, .. }
        | TokenCommand::List { at }
        | TokenCommand::Revoke { at, .. } => at,
    };
    if let Some(url) = &at.url {
        let remote = Remote {
            url: url.clone(),
            token: at.token.clone(),
        };
        return through_daemon(&remote, &command, out).await;
    }
    let store = open_data_dir(at).await?;
    match command {
        TokenCommand::Create {
            name,
            permissions,
            expires_in,
            ..
        } => {
            let expires_ms = expires_in.map(|d| now_ms().saturating_add(millis(d)));
            let (token, record) =
                crate::auth::create_token(store.as_ref(), &name, &permissions, expires_ms).await?;
            let mut view = record.public_view();
            view["token"] = json!(token);
            writeln!(out, "{view}")?;
        }
        TokenCommand::List { .. } => {
            let tokens = crate::auth::list_tokens(store.as_ref()).await?;
            let tokens: Vec<_> = tokens.iter().map(|t| t.public_view()).collect();
            writeln!(out, "{}", json!({ "tokens": tokens }))?;
        }
        TokenCommand::Revoke { force, id, .. } => {
            let revoked = crate::auth::revoke_token(store.as_ref(), &id, force).await?;
            writeln!(
                out,
                "{}",
                json!({"id": revoked.id, "name": revoked.name, "revoked": true})
            )?;
        }
    }
    Ok(0)
}

/// The data dir `at` names, opened; a dir a daemon holds is explained with
/// the way through it.
/// A configuration naming a PostgreSQL store opens that database, which
/// running daemons share.
async fn open_data_dir(at: &Where) -> anyhow::Result<std::sync::Arc<dyn crate::store::Store>> {
    let dir = match (&at.data_dir, &at.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => {
            let config = crate::config::Config::from_file(config)?;
            let location = config.store_location()?;
            if matches!(location, crate::config::StoreLocation::Postgres(_)) {
                return crate::daemon::open_store(&location).await;
            }
            config.data_dir
        }
        (None, None) => crate::config::Config::default().data_dir,
    };
    let sled = crate::config::StoreLocation::Sled(dir.clone());
    crate::daemon::open_store(&sled).await.map_err(|e| {
        if e.downcast_ref::<StoreError>()
            .is_some_and(|e| matches!(e, StoreError::Locked { .. }))
        {
            e.context(format!(
                "a daemon is running on {}: manage its tokens through it with --url <its base URL> --token <an admin token>",
                dir.display()
            ))
        } else {
            e
        }
    })
}

/// The same command through a running daemon's `/v1/tokens`.
async fn through_daemon(
    remote: &Remote,
    command: &TokenCommand,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    use reqwest::Method;
    let (method, path, body) = match command {
        TokenCommand::Create {
            name,
            permissions,
            expires_in,
            ..
        } => {
            let mut body = json!({"name": name, "permissions": permissions});
            if let Some(d) = expires_in {
                body["expires_in_secs"] = json!(d.as_secs().max(1));
            }
            let body = serde_json::to_vec(&body).context("encode the request")?;
            (Method::POST, "/v1/tokens".to_owned(), Some(body))
        }
        TokenCommand::List { .. } => (Method::GET, "/v1/tokens".to_owned(), None),
        TokenCommand::Revoke { force, id, .. } => {
            let id = url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
            let query = if *force { "?force=true" } else { "" };
            (Method::DELETE, format!("/v1/tokens/{id}{query}"), None)
        }
    };
    call(remote, method, &path, body, out).await
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
