//! Where the daemon keeps its durable state: sled in the data dir (one
//! daemon), or a PostgreSQL database several daemons share. Resolved here,
//! once, from `store`, `store_password_file`, `STEPHOST_STORE_PASSWORD` and
//! `--store`, so that the daemon and the offline commands open the same
//! thing and a password is looked for in the same places.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;

/// The environment variable a PostgreSQL password may come from.
pub const PASSWORD_ENV: &str = "STEPHOST_STORE_PASSWORD";

/// Connections a daemon keeps to PostgreSQL unless `store_pool_size` says
/// otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// `[cluster]`: daemons sharing a PostgreSQL store.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// How long a node may go without a heartbeat before the others take
    /// its running executions over (it writes one every third of this).
    /// Shorter: a dead node's steps re-run sooner; longer: a node that
    /// stalls (a long GC-free pause is rare, a database hiccup is not)
    /// is less often presumed dead while alive.
    pub lease_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { lease_ms: 30_000 }
    }
}

impl ClusterConfig {
    /// Every this many looks for stopped nodes, a node compares its
    /// uploaded plugins with the store's (what another node uploaded or
    /// removed).
    pub const UPLOAD_LOOKS: u32 = 3;

    /// How often a node writes its heartbeat: every third of the lease.
    pub fn beat_every(&self) -> Duration {
        Duration::from_millis((self.lease_ms / 3).max(1))
    }

    /// How often a node looks for executions that stopped nodes left
    /// running: at each heartbeat, at most a second apart.
    pub fn look_every(&self) -> Duration {
        self.beat_every().min(Duration::from_secs(1))
    }

    /// The longest a live node offers a plugin another node removed, when
    /// it misses the removal's hint: its next comparison with the store.
    pub fn upload_look_every(&self) -> Duration {
        self.look_every() * Self::UPLOAD_LOOKS
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(300..=3_600_000).contains(&self.lease_ms) {
            return Err(ConfigError::Invalid(format!(
                "cluster.lease_ms must be between 300 and 3600000 (one hour), got {}",
                self.lease_ms
            )));
        }
        Ok(())
    }
}

/// Where durable state lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// sled, in this directory (the data dir).
    Sled(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresLocation),
}

/// A PostgreSQL database and how to log in to it.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresLocation {
    /// `postgres://user@host:port/database?options` (a password in it is
    /// used, but better kept out of it).
    pub url: String,
    /// The password, from the environment or a file, when the URL has none.
    pub password: Option<String>,
    /// Connections to keep open.
    pub pool_size: usize,
}

// Never print a password: configs are logged and shown in errors.
impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sled(dir) => f.debug_tuple("Sled").field(dir).finish(),
            Self::Postgres(pg) => pg.fmt(f),
        }
    }
}

impl std::fmt::Debug for PostgresLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &redact(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// Whether `store` names a PostgreSQL database rather than sled.
pub fn is_postgres(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// Checks a `store` value: `sled`, or a PostgreSQL URL the client library
/// can parse.
pub fn validate(store: &str) -> Result<(), ConfigError> {
    if store == "sled" {
        return Ok(());
    }
    if !is_postgres(store) {
        return Err(ConfigError::Invalid(format!(
            "store must be \"sled\" or a postgres://user@host:port/database URL, got {:?}",
            redact(store)
        )));
    }
    store.parse::<tokio_postgres::Config>().map_err(|e| {
        ConfigError::Invalid(format!(
            "store: not a PostgreSQL URL ({e}): {}",
            redact(store)
        ))
    })?;
    Ok(())
}

/// Refuses a password typed on the command line: every user of the
/// machine can read a process's arguments.
pub fn refuse_password_in_argument(flag: &str, url: &str) -> Result<(), ConfigError> {
    let has_password = url
        .parse::<tokio_postgres::Config>()
        .is_ok_and(|c| c.get_password().is_some());
    if has_password {
        return Err(ConfigError::Invalid(format!(
            "{flag} carries a password, which every user of this machine can read in the process list; \
             give it in {PASSWORD_ENV} or a password file instead"
        )));
    }
    Ok(())
}

/// The store a configuration names.
pub fn resolve(
    store: Option<&str>,
    data_dir: &Path,
    password_file: Option<&Path>,
    pool_size: usize,
) -> Result<StoreLocation, ConfigError> {
    let url = match store {
        None | Some("sled") => return Ok(StoreLocation::Sled(data_dir.to_owned())),
        Some(url) => url,
    };
    validate(url)?;
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => Some(p),
        _ => match password_file {
            Some(path) => Some(read_password(path)?),
            None => None,
        },
    };
    Ok(StoreLocation::Postgres(PostgresLocation {
        url: url.to_owned(),
        password,
        pool_size,
    }))
}

/// A password file's first line (files written by `echo` end in a newline
/// that is not part of the password).
fn read_password(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "store_password_file {} is empty",
            path.display()
        )));
    }
    Ok(line.to_owned())
}

/// A URL with any password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    // postgres://user:password@host/… — the password sits between the
    // first ':' after the scheme and the last '@' before the path.
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/stephost?sslmode=disable"),
            "postgres://app:***@db:5432/stephost?sslmode=disable"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        let loc = StoreLocation::Postgres(PostgresLocation {
            url: "postgres://app:s3cret@db/x".into(),
            password: Some("other".into()),
            pool_size: 4,
        });
        let shown = format!("{loc:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("other"),
            "{shown}"
        );
    }

    #[test]
    fn store_values_are_checked() {
        validate("sled").unwrap();
        validate("postgres://app@db:5432/stephost").unwrap();
        validate("postgresql://app@db/stephost").unwrap();
        let e = validate("mysql://app@db/x").unwrap_err().to_string();
        assert!(e.contains("must be \"sled\" or a postgres://"), "{e}");
        let e = validate("postgres://app:pw@db:notaport/x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a PostgreSQL URL") && !e.contains("pw@"),
            "{e}"
        );
    }

    #[test]
    fn a_password_on_the_command_line_is_refused() {
        refuse_password_in_argument("--store", "postgres://app@db/x").unwrap();
        let e = refuse_password_in_argument("--store", "postgres://app:pw@db/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains(PASSWORD_ENV) && !e.contains("pw@"), "{e}");
    }

    #[test]
    fn the_password_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        let loc = resolve(
            Some("postgres://app@db/x"),
            dir.path(),
            Some(&file),
            DEFAULT_POOL_SIZE,
        )
        .unwrap();
        // The environment variable, when set, would win; tests of this
        // process never set it.
        assert!(std::env::var(PASSWORD_ENV).is_err());
        match loc {
            StoreLocation::Postgres(pg) => assert_eq!(pg.password.as_deref(), Some("hunter2")),
            other => panic!("{other:?}"),
        }
        std::fs::write(&file, "").unwrap();
        let e = resolve(Some("postgres://app@db/x"), dir.path(), Some(&file), 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is empty"), "{e}");
        assert_eq!(
            resolve(None, dir.path(), None, 4).unwrap(),
            StoreLocation::Sled(dir.path().to_owned())
        );
    }
}
