//! From a connection URL to a pool of connections, and from what the
//! client library reports to a [`StoreError`] an operator can act on: an
//! unreachable server, a refused login and a wrong URL are different
//! variants, never one "database error" whose text must be read.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// Connections kept open to the database unless configured otherwise.
/// Every `apply` holds one for its transaction; a daemon's concurrent
/// transitions beyond this wait in the pool's queue.
pub(super) const POOL_SIZE: usize = crate::config::store::DEFAULT_POOL_SIZE;

/// How long a connection attempt may take when the URL does not say
/// (`connect_timeout`): an address that drops packets must end in
/// [`StoreError::Unreachable`], not hang the daemon's start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for a free connection before it is told
/// [`StoreError::Pool`].
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool of connections to the database `url` names, that database as
/// messages name it, and how to connect to it. Makes no connection yet.
pub(super) fn pool(
    url: &str,
    password: Option<&str>,
    size: usize,
) -> Result<(Pool, String, tokio_postgres::Config), StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|source| StoreError::InvalidUrl { source })?;
    // A password in the URL is what its writer meant; the other is the
    // fallback from the environment or a file.
    if config.get_password().is_none()
        && let Some(password) = password
    {
        config.password(password);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        // So that `pg_stat_activity` tells the daemon's connections apart.
        config.application_name("stephost");
    }
    let target = target(&config);
    let manager = Manager::from_config(
        config.clone(),
        tokio_postgres::NoTls,
        ManagerConfig {
            // A connection that broke is noticed by its closed flag; a
            // round trip per checkout would double the cost of a read.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(WAIT_TIMEOUT))
        .build()
        .expect("the pool is given a runtime for its timeouts");
    Ok((pool, target, config))
}

/// `user@host:port/database`: where a URL points, without its password.
fn target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(dir)) => dir.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("(no user)");
    let database = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{database}")
}

/// What a failure of the client library means for the operator: a server
/// that cannot be reached, a refused login, a missing database, or any
/// other failure of a statement.
pub(super) fn classify(source: tokio_postgres::Error, target: &str) -> StoreError {
    let target = target.to_owned();
    match source.code() {
        Some(code)
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            return StoreError::LoginRefused { target, source };
        }
        Some(code) if *code == SqlState::INVALID_CATALOG_NAME => {
            return StoreError::NoDatabase { target, source };
        }
        // The server ended the session under us (an administrator, or a
        // shutdown): the database is as gone as an unreachable one.
        Some(code)
            if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW =>
        {
            return StoreError::Unreachable { target, source };
        }
        Some(_) => return StoreError::Postgres(source),
        None => {}
    }
    // No answer from the server at all: the socket failed (refused, timed
    // out, reset) or the connection is closed.
    let io = std::error::Error::source(&source).is_some_and(|cause| cause.is::<std::io::Error>());
    if io || source.is_closed() {
        StoreError::Unreachable { target, source }
    } else {
        StoreError::Postgres(source)
    }
}

/// [`classify`] for the pool: a connection it failed to make says why.
pub(super) fn pool_error(source: PoolError, target: &str) -> StoreError {
    match source {
        PoolError::Backend(e) => classify(e, target),
        source => StoreError::Pool {
            target: target.to_owned(),
            source,
        },
    }
}

/// Whether a transaction failed only because it ran into another one (a
/// deadlock, or a serialisation failure), so that running it again is
/// what the caller meant.
pub(super) fn is_transient(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    })
}
