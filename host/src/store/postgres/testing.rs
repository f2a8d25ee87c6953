//! A private PostgreSQL server for the tests, so that the PostgreSQL store
//! is tested against the real thing, never a mock: `initdb` into a
//! temporary directory, `pg_ctl start` on a free loopback port with fsync
//! on, and one fresh database per test (`CREATE DATABASE`), so tests
//! share one server per test binary and still never see each other's
//! rows.
//!
//! Where PostgreSQL is not installed the tests fail, saying what to
//! install: a store that was never tested must not look tested.
//!
//! The server is stopped by a small guard process that waits on a pipe
//! from this one: when the cluster is dropped, or when the test binary
//! exits however it exits (even killed, which runs no destructor), the
//! pipe closes and the guard stops the server (`pg_ctl stop -m fast`,
//! then by PID) and removes its directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};

/// What to do when the server programs are missing.
pub const INSTALL_HINT: &str = "PostgreSQL is not installed: the PostgreSQL store's tests need its server programs (initdb, pg_ctl, postgres), looked for on PATH and in /usr/lib/postgresql/*/bin; install them with `apt-get install postgresql`";

/// The user that owns the test database (a superuser).
const USER: &str = "postgres";

/// A running PostgreSQL server of the tests.
pub struct Cluster {
    /// Its data, socket and log; removed when it stops.
    dir: PathBuf,
    port: u16,
    password: String,
    /// The postmaster's process id.
    pid: u32,
    /// Where initdb, pg_ctl and postgres are.
    bin: PathBuf,
    /// Whether the server runs as `postgres` (this process is root).
    as_postgres: bool,
    /// Stops the server when dropped.
    _guard: Guard,
}

/// The server every test of this binary shares, started on first use.
/// Panics, with what went wrong, when it cannot be started.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match SHARED.get_or_init(|| Cluster::start().map_err(|e| format!("{e:#}"))) {
        Ok(cluster) => cluster,
        Err(e) => panic!("cannot start the PostgreSQL server the store tests need: {e}"),
    }
}

/// The URL of a new, empty database on the [`shared`] server.
pub async fn database() -> String {
    // Starting the server blocks for a few seconds, once.
    let cluster = match tokio::task::spawn_blocking(shared).await {
        Ok(cluster) => cluster,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    cluster
        .fresh_database()
        .await
        .expect("a new database on the test server")
}

/// The directory that holds `initdb`, `pg_ctl` and `postgres`: that of
/// the first `initdb` on `path` (its symlinks resolved, as `pg_ctl` looks
/// for `postgres` beside itself), else the newest under `lib` (Debian's
/// `/usr/lib/postgresql/VERSION/bin`, which is not on PATH).
pub fn bin_dir(lib: &Path, path: &[PathBuf]) -> anyhow::Result<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    for dir in path {
        if let Ok(initdb) = std::fs::canonicalize(dir.join("initdb"))
            && let Some(bin) = initdb.parent()
            && complete(bin)
        {
            return Ok(bin.to_path_buf());
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| complete(bin))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!("{INSTALL_HINT}"),
    }
}

/// `pg_ctl start` of the server in `dir` on `port`, fsync on, its socket
/// in `dir`, logging to `dir/server.log`.
fn pg_ctl_start(as_postgres: bool, bin: &Path, dir: &Path, port: u16) -> anyhow::Result<()> {
    let mut pg_ctl = command(as_postgres, &bin.join("pg_ctl"), dir);
    pg_ctl
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-l")
        .arg(dir.join("server.log"))
        .args(["-w", "-t", "60", "-o"])
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=300",
            dir.display()
        ))
        .arg("start");
    run(pg_ctl, "pg_ctl start")
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding a port to find a free one")?;
    Ok(listener.local_addr()?.port())
}

/// `program`, run as `postgres` when this process is root (PostgreSQL
/// refuses to run as root), else as this user; in `dir`, which that user
/// can enter (the test's own directory may not be).
fn command(as_postgres: bool, program: &Path, dir: &Path) -> Command {
    let mut cmd = if as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.current_dir(dir);
    cmd
}

/// Runs `cmd`, failing with its output if it fails.
fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what} ({cmd:?})"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Cluster {
    /// Creates and starts a new server in a temporary directory.
    pub fn start() -> anyhow::Result<Self> {
        let lib = Path::new("/usr/lib/postgresql");
        let path: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        let bin = bin_dir(lib, &path)?;
        let as_postgres = rustix::process::geteuid().is_root();
        let dir = tempfile::Builder::new()
            .prefix("stephost-pg-")
            .tempdir()
            .context("creating the test server's directory")?
            .keep();
        // From here on, a failure stops whatever was started and removes
        // the directory.
        let guard = Guard::start(as_postgres, &bin, &dir)?;
        let password = hex::encode(rand::random::<[u8; 16]>());
        let pwfile = dir.join("pwfile");
        std::fs::File::create(&pwfile)
            .and_then(|mut f| f.write_all(password.as_bytes()))
            .context("writing the password file")?;
        if as_postgres {
            // The server's files must be its user's; the directory is 0700.
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:"]).arg(&dir);
            run(chown, "chown of the test server's directory to postgres").context(
                "running the tests as root needs a `postgres` user to run the server as",
            )?;
        }
        let data = dir.join("data");
        let mut initdb = command(as_postgres, &bin.join("initdb"), &dir);
        // Logins over TCP need the password (so a wrong one can be tested);
        // --no-sync only skips flushing the new cluster's files once, the
        // server itself runs with fsync on.
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(initdb, "initdb")?;
        std::fs::remove_file(&pwfile).context("removing the password file")?;

        let mut tries = 0;
        let port = loop {
            // Another process may take the free port before the server
            // binds it: try another.
            let port = free_port()?;
            match pg_ctl_start(as_postgres, &bin, &dir, port) {
                Ok(()) => break port,
                Err(e) if tries >= 2 => {
                    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                    return Err(e.context(format!("the server's log:\n{log}")));
                }
                Err(_) => tries += 1,
            }
        };
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .context("reading postmaster.pid")?
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .context("postmaster.pid holds no process id")?;
        Ok(Self {
            dir,
            port,
            password,
            pid,
            bin,
            as_postgres,
            _guard: guard,
        })
    }

    /// Stops the server (`-m fast`: sessions are cut), keeping its data,
    /// as a database restart or outage would.
    pub fn stop_server(&self) -> anyhow::Result<()> {
        let mut pg_ctl = command(self.as_postgres, &self.bin.join("pg_ctl"), &self.dir);
        pg_ctl
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run(pg_ctl, "pg_ctl stop")
    }

    /// Starts the stopped server again, on its port.
    pub fn start_server(&self) -> anyhow::Result<()> {
        pg_ctl_start(self.as_postgres, &self.bin, &self.dir, self.port)
    }

    /// The URL of database `name`, with the password.
    pub fn url(&self, name: &str) -> String {
        self.url_with_password(name, &self.password)
    }

    /// The URL of database `name` with any password (to test a wrong one).
    pub fn url_with_password(&self, name: &str, password: &str) -> String {
        format!(
            "postgres://{USER}:{password}@127.0.0.1:{}/{name}",
            self.port
        )
    }

    /// The password of its superuser.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The postmaster's process id, as first started ([`Cluster::start_server`]
    /// makes another).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The directory of its data, socket and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The end of the server's log, for an error: a server that refuses
    /// connections ("in recovery mode", "starting up") says why only there
    /// (a backend killed, a full disk).
    pub fn log_tail(&self) -> String {
        const LINES: usize = 30;
        match std::fs::read_to_string(self.dir.join("server.log")) {
            Ok(log) => {
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(LINES)..].join("\n");
                format!("the end of the test server's log:\n{tail}")
            }
            Err(e) => format!("the test server's log is unreadable: {e}"),
        }
    }

    /// A new, empty database; its URL.
    pub async fn fresh_database(&self) -> anyhow::Result<String> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .with_context(|| self.log_tail())
                .context("connecting to the test server")?;
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| self.log_tail())
            .with_context(|| format!("creating database {name}"))?;
        drop(client);
        let _ = connection.await;
        Ok(self.url(&name))
    }
}

/// A process that, once its stdin closes, stops the server in `dir`
/// (`pg_ctl stop -m fast`, else by the PID in `postmaster.pid`) and
/// removes `dir`. Its stdin closes when this is dropped, or when the test
/// binary exits in any way.
struct Guard {
    stdin: Option<ChildStdin>,
    child: Child,
}

impl Guard {
    fn start(as_postgres: bool, bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        // Signals to the test's process group (a ^C) must not kill the
        // guard before it has stopped the server.
        let script = r#"trap '' INT TERM HUP
read _ignored
if ! "$@" -D "$DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
  pid=$(head -n 1 "$DIR/data/postmaster.pid" 2>/dev/null) && kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$DIR""#;
        let stop = command(as_postgres, &bin.join("pg_ctl"), Path::new("/"));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("stephost-pg-guard")
            .arg(stop.get_program())
            .args(stop.get_args())
            .env("DIR", dir)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the guard of the test server")?;
        let stdin = child.stdin.take();
        Ok(Self { stdin, child })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
