//! `stephost token ...`: API tokens in a stopped daemon's data dir (a
//! running daemon holds it, and takes the same from an admin over
//! `/v1/tokens`).

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use crate::auth::Permission;
use crate::daemon::open_store;

/// `stephost token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token in a data dir (while the daemon is stopped; a
    /// running daemon takes `POST /v1/tokens` from an admin) and print it
    /// once: only its hash is stored.
    Create {
        /// The daemon's data dir.
        #[arg(long, default_value = "./stephost-data")]
        data_dir: PathBuf,
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
        /// admin, executions:write, executions:read or callbacks:send (repeatable).
        #[arg(long = "permission", required = true)]
        permissions: Vec<Permission>,
    },
    /// List the tokens of a data dir (while the daemon is stopped; a
    /// running daemon answers `GET /v1/tokens` to an admin): never a token.
    List {
        /// The daemon's data dir.
        #[arg(long, default_value = "./stephost-data")]
        data_dir: PathBuf,
    },
    /// Revoke a token of a data dir by its id (while the daemon is stopped;
    /// a running daemon takes `DELETE /v1/tokens/{id}` from an admin).
    Revoke {
        /// The daemon's data dir.
        #[arg(long, default_value = "./stephost-data")]
        data_dir: PathBuf,
        /// Revoke it even if it is the last admin token.
        #[arg(long)]
        force: bool,
        /// The token's id (`token list`).
        id: String,
    },
}

/// Runs a token command; returns the exit code.
pub(super) async fn execute(command: TokenCommand, out: &mut dyn Write) -> anyhow::Result<i32> {
    match command {
        TokenCommand::Create {
            data_dir,
            name,
            permissions,
        } => {
            let store = open_store(&data_dir)?;
            let (token, record) = crate::auth::create_token(&store, &name, &permissions).await?;
            writeln!(
                out,
                "{}",
                json!({"id": record.id, "name": record.name, "permissions": record.permissions, "token": token})
            )?;
            Ok(0)
        }
        TokenCommand::List { data_dir } => {
            let store = open_store(&data_dir)?;
            let tokens = crate::auth::list_tokens(&store).await?;
            let tokens: Vec<_> = tokens.iter().map(|t| t.public_view()).collect();
            writeln!(out, "{}", json!({ "tokens": tokens }))?;
            Ok(0)
        }
        TokenCommand::Revoke {
            data_dir,
            force,
            id,
        } => {
            let store = open_store(&data_dir)?;
            let revoked = crate::auth::revoke_token(&store, &id, force).await?;
            writeln!(
                out,
                "{}",
                json!({"id": revoked.id, "name": revoked.name, "revoked": true})
            )?;
            Ok(0)
        }
    }
}
