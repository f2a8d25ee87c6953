//! The one wasmtime [`Engine`] of the daemon and the clock that interrupts
//! plugins: epoch interruption, ticked by a tokio task, lets a call's time
//! limit be checked without a thread per call and makes a busy plugin yield
//! to the executor so it cannot starve the others.
//!
//! Every step call instantiates its plugin afresh, so instantiation is the
//! hot path. The engine uses wasmtime's pooling allocator: linear memories,
//! tables, instance metadata and fiber stacks live in slots reserved once at
//! start, a slot remembers the module it last held (its copy-on-write memory
//! image stays mapped), and on release only the pages the call dirtied are
//! reset (`PAGEMAP_SCAN` where the kernel has it) instead of unmapping and
//! faulting everything in again. See `docs/performance.md` for the figures.

use std::time::Duration;

use anyhow::Context as _;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub use crate::config::DEFAULT_MAX_INSTANCES;

/// The engine's sizing, derived from the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// The largest linear memory any plugin may have: the pool's slot size.
    /// Each call's own, smaller limit is enforced by its store's limiter.
    pub max_memory_bytes: usize,
    /// Component instances live at once (the pool's size).
    pub max_instances: u32,
}

impl EngineOptions {
    /// Sized for the largest `memory_mb` any plugin is granted.
    pub fn for_config(config: &crate::Config) -> Self {
        let max_mb = config
            .plugins
            .keys()
            .map(|name| config.limits_for(name).memory_mb)
            .chain([config.limits.memory_mb])
            .max()
            .unwrap_or(config.limits.memory_mb);
        // 32-bit linear memories cannot exceed 4 GiB anyway.
        let bytes = max_mb.saturating_mul(1024 * 1024).min(4 << 30);
        Self {
            max_memory_bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
            max_instances: config.max_concurrent_steps,
        }
    }
}

/// Builds the engine every plugin is compiled for, sized for `config`.
pub fn new_engine(config: &crate::Config) -> anyhow::Result<Engine> {
    new_engine_with(&EngineOptions::for_config(config))
}

/// Builds the engine with explicit sizing.
pub fn new_engine_with(options: &EngineOptions) -> anyhow::Result<Engine> {
    let n = options.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        // A Rust plugin has a handful of core instances (the module and
        // the adapter shims); an interpreter-based one (Python, JS) more.
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(options.max_memory_bytes)
        // Big enough for interpreter-based components' metadata.
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(4 << 20)
        .max_tables_per_module(4)
        // Reset only the pages a call dirtied, with memset, and keep them
        // resident: the next call on the slot takes no page faults.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(256 << 10)
        // Fiber stacks are reused without zeroing (the default): keep what
        // a call touched resident, so the next one takes no faults either.
        .async_stack_keep_resident(256 << 10)
        // madvise a batch of released slots at once rather than one by one.
        .decommit_batch_size(16);

    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // Reserve only what a memory may grow to, not wasmtime's default 4 GiB
    // per slot: the pool reserves every slot's address space up front, and
    // several engines share one process in tests. Bounds checks come back,
    // which measured no slower on step dispatch.
    config.memory_reservation(options.max_memory_bytes as u64);
    // Memory images are mapped copy-on-write (the default, made explicit):
    // instantiating a plugin copies no data segments.
    config.memory_init_cow(true);
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("configure the wasm engine")
}

/// Advances the engine's epoch every [`EPOCH_TICK`] from a thread of its
/// own until aborted (or dropped). Not a runtime task: plugins spinning on
/// every runtime worker would starve such a task, and since they only yield
/// when the epoch moves, nothing would ever stop them.
pub fn spawn_epoch_ticker(engine: Engine) -> EpochTicker {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("stephost-epoch".into())
        .spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("spawn the epoch ticker thread");
    EpochTicker { stop }
}

/// Stops the epoch ticker thread when aborted or dropped.
#[derive(Debug)]
pub struct EpochTicker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    /// Stops the thread (it exits within one tick).
    pub fn abort(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Deserialized from the on-disk cache.
    Hit,
    /// Compiled (no entry, or an unusable one), and the cache written.
    Compiled,
    /// Compiled; the cache is off or could not be written.
    Uncached,
}

/// Compiled components on disk, so a restart (or a resume on an old
/// version) does not recompile. An entry is keyed by the component's
/// content hash and the engine's precompile compatibility hash (wasmtime
/// version, target and every code-affecting setting), and carries a
/// SHA-256 of its own bytes: a truncated, corrupt or incompatible entry is
/// removed and the component compiled again.
#[derive(Clone)]
pub struct ComponentCache {
    engine: Engine,
    dir: Option<std::path::PathBuf>,
    compat: String,
}

impl std::fmt::Debug for ComponentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentCache")
            .field("dir", &self.dir)
            .field("compat", &self.compat)
            .finish_non_exhaustive()
    }
}

/// Feeds [`std::hash::Hash`] output into SHA-256: a compatibility key that
/// is stable across processes and Rust versions (unlike `DefaultHasher`).
struct Sha256Hasher(sha2::Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the full digest is used")
    }
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }
}

/// Writes a new file only its owner can read (`0600`).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// A hex digest of the engine's precompile compatibility hash.
pub fn compatibility_key(engine: &Engine) -> String {
    use std::hash::Hash as _;
    let mut hasher = Sha256Hasher(<sha2::Sha256 as sha2::Digest>::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(sha2::Digest::finalize(hasher.0))
}

impl ComponentCache {
    /// A cache in `dir` (created if missing); without a usable directory
    /// the cache is off and every load compiles.
    pub fn new(engine: Engine, dir: Option<std::path::PathBuf>) -> Self {
        // Private like the data dir: whoever can write an entry here runs
        // code in the daemon (its digest sits beside it).
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        let dir = dir.and_then(|dir| match builder.create(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "compiled-component cache is off: cannot create its directory");
                None
            }
        });
        let compat = compatibility_key(&engine);
        Self {
            engine,
            dir,
            compat,
        }
    }

    /// The cache file of a component with content hash `hash`.
    pub fn path_of(&self, hash: &str) -> Option<std::path::PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{hash}-{}.cwasm", &self.compat[..16])))
    }

    /// Drops the cache entry of `hash` (a deleted plugin version), if any.
    pub fn remove(&self, hash: &str) {
        if let Some(path) = self.path_of(hash) {
            // Missing files are fine: the entry may never have been written.
            let _ = std::fs::remove_file(digest_path(&path));
            let _ = std::fs::remove_file(&path);
        }
    }

    /// The compiled component for `bytes` (whose SHA-256 hex is `hash`):
    /// from the cache if it holds a good entry, else compiled and stored.
    /// Blocking and CPU-bound: call it off the async runtime.
    pub fn load_or_compile(
        &self,
        hash: &str,
        bytes: &[u8],
    ) -> anyhow::Result<(wasmtime::component::Component, CacheOutcome)> {
        let Some(path) = self.path_of(hash) else {
            return Ok((self.compile(bytes)?, CacheOutcome::Uncached));
        };
        if path.exists() {
            match self.read(&path) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "unusable compiled-component cache entry; compiling again");
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(digest_path(&path));
                }
            }
        }
        let component = self.compile(bytes)?;
        match self.write(&path, &component) {
            Ok(()) => Ok((component, CacheOutcome::Compiled)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "could not write the compiled-component cache");
                Ok((component, CacheOutcome::Uncached))
            }
        }
    }

    fn compile(&self, bytes: &[u8]) -> anyhow::Result<wasmtime::component::Component> {
        wasmtime::component::Component::new(&self.engine, bytes).map_err(anyhow::Error::from)
    }

    /// Checks the entry against its recorded digest, then maps it.
    fn read(&self, path: &std::path::Path) -> anyhow::Result<wasmtime::component::Component> {
        let expected = std::fs::read_to_string(digest_path(path)).context("read its digest")?;
        // Streamed through a small buffer rather than read whole: an
        // interpreter's entry is tens of megabytes, and a buffer that size,
        // zeroed and copied into on every load, cost nearly as much as the
        // hash itself.
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let file = std::fs::File::open(path).context("open it")?;
        std::io::copy(
            &mut std::io::BufReader::with_capacity(1 << 20, file),
            &mut hasher,
        )
        .context("read it")?;
        let actual = hex::encode(sha2::Digest::finalize(hasher));
        anyhow::ensure!(
            expected.trim() == actual,
            "its contents do not match their recorded SHA-256 (corrupt or truncated)"
        );
        deserialize_trusted(&self.engine, path)
    }

    /// Writes the entry and its digest to temporary files and renames them
    /// into place, digest first: a reader never sees a half-written entry.
    fn write(
        &self,
        path: &std::path::Path,
        component: &wasmtime::component::Component,
    ) -> anyhow::Result<()> {
        let serialized = component.serialize().map_err(anyhow::Error::from)?;
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&serialized));
        let dir = path.parent().context("cache entries live in a directory")?;
        let unique = format!(".tmp-{}-{}", std::process::id(), rand::random::<u64>());
        let tmp = dir.join(format!("entry{unique}"));
        let tmp_digest = dir.join(format!("digest{unique}"));
        let result = (|| {
            write_private(&tmp, &serialized).context("write the entry")?;
            write_private(&tmp_digest, digest.as_bytes()).context("write its digest")?;
            std::fs::rename(&tmp_digest, digest_path(path)).context("rename its digest")?;
            std::fs::rename(&tmp, path).context("rename the entry")?;
            anyhow::Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&tmp_digest);
        }
        result
    }
}

fn digest_path(entry: &std::path::Path) -> std::path::PathBuf {
    entry.with_extension("cwasm.sha256")
}

/// Maps a compiled component from the cache.
#[allow(unsafe_code)]
fn deserialize_trusted(
    engine: &Engine,
    path: &std::path::Path,
) -> anyhow::Result<wasmtime::component::Component> {
    // SAFETY: `deserialize_file` trusts the file to be machine code that
    // wasmtime itself produced. This one is: only this daemon writes its
    // data dir's `cache/`, every entry was written by `Component::serialize`
    // of this daemon, under a name keyed by the component's content hash and
    // this engine's precompile compatibility hash (wasmtime also checks its
    // own version and settings header and refuses a mismatch), and the
    // caller has just checked the file against the SHA-256 recorded when it
    // was written, so a truncated or corrupt entry never gets here.
    unsafe { wasmtime::component::Component::deserialize_file(engine, path) }
        .map_err(anyhow::Error::from)
        .context("deserialize it")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_engine(max_memory_mb: usize) -> Engine {
        new_engine_with(&EngineOptions {
            max_memory_bytes: max_memory_mb << 20,
            max_instances: 4,
        })
        .unwrap()
    }

    fn echo() -> &'static [u8] {
        crate::builtin::component("echo").expect("echo is built in")
    }

    #[test]
    fn the_pool_is_sized_for_the_largest_plugin_memory() {
        let mut config = crate::Config::default();
        assert_eq!(
            EngineOptions::for_config(&config).max_memory_bytes,
            128 << 20
        );
        config.plugins.insert(
            "big".into(),
            crate::config::PluginConfig {
                memory_mb: Some(512),
                ..Default::default()
            },
        );
        assert_eq!(
            EngineOptions::for_config(&config).max_memory_bytes,
            512 << 20
        );
    }

    #[test]
    fn a_cached_component_is_read_back_instead_of_compiled() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(small_engine(64), Some(dir.path().join("cache")));
        let hash = crate::model::content_hash(echo());
        let (_, first) = cache.load_or_compile(&hash, echo()).unwrap();
        assert_eq!(first, CacheOutcome::Compiled);
        assert!(cache.path_of(&hash).unwrap().exists());
        let (_, second) = cache.load_or_compile(&hash, echo()).unwrap();
        assert_eq!(second, CacheOutcome::Hit);
    }

    #[test]
    fn a_corrupt_or_truncated_entry_is_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(small_engine(64), Some(dir.path().join("cache")));
        let hash = crate::model::content_hash(echo());
        cache.load_or_compile(&hash, echo()).unwrap();
        let path = cache.path_of(&hash).unwrap();

        // One flipped bit in the middle of the machine code.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let (_, outcome) = cache.load_or_compile(&hash, echo()).unwrap();
        assert_eq!(outcome, CacheOutcome::Compiled);
        assert_eq!(
            cache.load_or_compile(&hash, echo()).unwrap().1,
            CacheOutcome::Hit,
            "the entry was rewritten"
        );

        // Cut short, as by a crash mid-write of an older daemon.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
        assert_eq!(
            cache.load_or_compile(&hash, echo()).unwrap().1,
            CacheOutcome::Compiled
        );

        // Its digest lost.
        std::fs::remove_file(digest_path(&path)).unwrap();
        assert_eq!(
            cache.load_or_compile(&hash, echo()).unwrap().1,
            CacheOutcome::Compiled
        );
    }

    #[test]
    fn an_entry_from_an_incompatible_engine_is_refused_and_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let old = ComponentCache::new(small_engine(64), Some(cache_dir.clone()));
        let new = ComponentCache::new(small_engine(256), Some(cache_dir));
        assert_ne!(old.compat, new.compat, "memory settings change the code");
        let hash = crate::model::content_hash(echo());
        old.load_or_compile(&hash, echo()).unwrap();
        // Even under the new engine's name (with a matching digest),
        // wasmtime's own header check refuses the old engine's code.
        let (from, to) = (old.path_of(&hash).unwrap(), new.path_of(&hash).unwrap());
        std::fs::copy(&from, &to).unwrap();
        std::fs::copy(digest_path(&from), digest_path(&to)).unwrap();
        let (_, outcome) = new.load_or_compile(&hash, echo()).unwrap();
        assert_eq!(outcome, CacheOutcome::Compiled);
        assert_eq!(
            new.load_or_compile(&hash, echo()).unwrap().1,
            CacheOutcome::Hit
        );
    }

    #[test]
    fn without_a_directory_the_cache_is_off() {
        let cache = ComponentCache::new(small_engine(64), None);
        let hash = crate::model::content_hash(echo());
        assert_eq!(
            cache.load_or_compile(&hash, echo()).unwrap().1,
            CacheOutcome::Uncached
        );
    }
}
