//! What a store operation can fail with, as types: the workflow tells a
//! lost compare-and-swap from a broken disk, and the daemon a data dir held
//! by another process from one it cannot open, by matching a variant, not
//! by searching a message for words.

use std::path::PathBuf;

/// What the store can fail with. Each failure keeps its cause as its
/// [`source`](std::error::Error::source), so a caller can tell a full disk
/// from a lock held by another process by type, never by reading text; the
/// cause's text is in the message too, because logs and API answers show
/// only the message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record was changed by someone else since it was read.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Another process has the data dir open (sled allows one).
    #[error("the data dir {} is locked by another process: {source}", dir.display())]
    Locked {
        /// The data dir.
        dir: PathBuf,
        /// What the database said.
        #[source]
        source: sled::Error,
    },
    /// The data dir could not be created.
    #[error("cannot create data dir {}: {source}", dir.display())]
    CreateDir {
        /// The data dir.
        dir: PathBuf,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The database in the data dir could not be opened.
    #[error("cannot open data dir {}: {source}", dir.display())]
    Open {
        /// The data dir.
        dir: PathBuf,
        /// Why not.
        #[source]
        source: sled::Error,
    },
    /// The data dir was written by a newer stephost, in a layout this one
    /// does not know: reading it could misread it.
    #[error(
        "the data dir {} has data format {found}, written by a newer stephost; this one reads format {supported} and older (upgrade stephost, or use another data dir)",
        dir.display()
    )]
    NewerFormat {
        /// The data dir.
        dir: PathBuf,
        /// Its format.
        found: u64,
        /// The newest format this build reads.
        supported: u64,
    },
    /// The database failed (disk full, I/O error).
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// Blocking storage work could not finish on its thread (it panicked,
    /// or the runtime is shutting down).
    #[error("storage error: {what} failed: {source}")]
    Task {
        /// The work.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A write or flush was given up by the task that was doing it for
    /// this caller (it panicked or was cancelled).
    #[error("storage error: {0}")]
    Abandoned(&'static str),
    /// The PostgreSQL URL could not be parsed (its text is not repeated:
    /// it may hold a password).
    #[error("invalid PostgreSQL URL: {source}")]
    InvalidUrl {
        /// The parser's complaint.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The PostgreSQL server could not be reached (refused, timed out, no
    /// such host), or the connection to it broke.
    #[error("cannot reach PostgreSQL at {target}: {source}")]
    Unreachable {
        /// `user@host:port/database`, without the password.
        target: String,
        /// Why not.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server refused the login: wrong password, unknown user, or no
    /// `pg_hba.conf` line that lets it in.
    #[error(
        "PostgreSQL at {target} refused the login (check the user, and the password: in the URL, STEPHOST_STORE_PASSWORD or store_password_file): {source}"
    )]
    LoginRefused {
        /// `user@host:port/database`, without the password.
        target: String,
        /// What the server said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server has no database of the name the URL gives.
    #[error("PostgreSQL at {target} has no such database (create it, or fix the URL): {source}")]
    NoDatabase {
        /// `user@host:port/database`, without the password.
        target: String,
        /// What the server said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database's schema was migrated by a newer stephost, to a layout
    /// this one does not know: writing it could corrupt it.
    #[error(
        "the database {target} has schema version {found}, written by a newer stephost; this one knows schema version {supported} and older (upgrade stephost, or use another database)"
    )]
    NewerSchema {
        /// `user@host:port/database`, without the password.
        target: String,
        /// Its schema version.
        found: u64,
        /// The newest schema version this build knows.
        supported: u64,
    },
    /// No connection of the pool came free in time (every one is busy, or
    /// new ones cannot be made).
    #[error("no PostgreSQL connection to {target}: {source}")]
    Pool {
        /// `user@host:port/database`, without the password.
        target: String,
        /// The pool's complaint.
        #[source]
        source: deadpool_postgres::PoolError,
    },
    /// PostgreSQL failed a statement (disk full, a constraint, a bug).
    #[error("database error: {0}")]
    Postgres(#[source] tokio_postgres::Error),
    /// A batch of changes could not be written whole (the disk failed
    /// mid-batch): the store writes nothing more, so that nothing is
    /// written over the half-written batch, until it is opened again and
    /// finishes it.
    #[error(
        "storage error: an earlier batch of changes could not be written whole; restart the daemon to finish it (see the log for the cause)"
    )]
    Halted,
    /// The data dir holds an unfinished batch of changes that cannot be
    /// decoded: opening it would leave that batch half-written.
    #[error(
        "the data dir's unfinished batch of changes ({len} bytes, in the `intents` tree) cannot be decoded; restore the data dir from a backup"
    )]
    BadIntent {
        /// Its size.
        len: usize,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record {key}: {source}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoder's complaint.
        #[source]
        source: serde_json::Error,
    },
}
