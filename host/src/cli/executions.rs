//! `stephost executions ...`: a running daemon's executions, through its
//! HTTP API.

use std::io::Write;

use clap::Subcommand;

use super::remote::{Remote, call};

/// `stephost executions ...`
#[derive(Debug, Subcommand)]
pub enum ExecutionsCommand {
    /// List executions, newest first, a page at a time (the answer's
    /// next_cursor continues with --cursor).
    List {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Only those in this state (running, suspended, completed, failed).
        #[arg(long)]
        state: Option<String>,
        /// Only those of this workflow (a plugin run alone: its name).
        #[arg(long)]
        workflow: Option<String>,
        /// Only those whose current step runs on this plugin.
        #[arg(long)]
        plugin: Option<String>,
        /// Only those created at or after this time (ms since the epoch,
        /// or UTC as 2026-11-29T20:00:00Z).
        #[arg(long)]
        created_after: Option<String>,
        /// Only those created before this time.
        #[arg(long)]
        created_before: Option<String>,
        /// At most this many (1 to 10000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Go on after a previous page: its next_cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Oldest first instead.
        #[arg(long)]
        oldest_first: bool,
    },
    /// Show one execution with its status log.
    Show {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Execution id.
        id: String,
    },
    /// Re-run the failed step of a failed execution.
    Retry {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Execution id.
        id: String,
    },
    /// Skip the failed step and go on with the next.
    Skip {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Execution id.
        id: String,
    },
    /// Cancel a running or suspended execution.
    Cancel {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Execution id.
        id: String,
    },
    /// Remove an ended execution with its status log, callbacks and
    /// deliveries.
    Delete {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Execution id.
        id: String,
    },
}

/// `stephost executions ...` over the HTTP API.
pub(super) async fn execute(cmd: ExecutionsCommand, out: &mut dyn Write) -> anyhow::Result<i32> {
    let (remote, method, path) = match &cmd {
        ExecutionsCommand::List {
            remote,
            state,
            workflow,
            plugin,
            created_after,
            created_before,
            limit,
            cursor,
            oldest_first,
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", &limit.to_string());
            let order = if *oldest_first { "oldest" } else { "newest" };
            query.append_pair("order", order);
            for (key, value) in [
                ("state", state),
                ("workflow", workflow),
                ("plugin", plugin),
                ("created_after", created_after),
                ("created_before", created_before),
                ("cursor", cursor),
            ] {
                if let Some(value) = value {
                    query.append_pair(key, value);
                }
            }
            let path = format!("/v1/executions?{}", query.finish());
            (remote, reqwest::Method::GET, path)
        }
        ExecutionsCommand::Show { remote, id } => {
            (remote, reqwest::Method::GET, format!("/v1/executions/{id}"))
        }
        ExecutionsCommand::Retry { remote, id } => (
            remote,
            reqwest::Method::POST,
            format!("/v1/executions/{id}/retry"),
        ),
        ExecutionsCommand::Skip { remote, id } => (
            remote,
            reqwest::Method::POST,
            format!("/v1/executions/{id}/skip"),
        ),
        ExecutionsCommand::Cancel { remote, id } => (
            remote,
            reqwest::Method::POST,
            format!("/v1/executions/{id}/cancel"),
        ),
        ExecutionsCommand::Delete { remote, id } => (
            remote,
            reqwest::Method::DELETE,
            format!("/v1/executions/{id}"),
        ),
    };
    call(remote, method, &path, None, out).await
}
