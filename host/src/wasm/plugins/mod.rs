//! The plugin registry: loads component bytes, checks them against the
//! `step-plugin` world, pre-instantiates them, and keeps every version by
//! name and content hash. A name points at its newest version; a suspended
//! step keeps the hash it started on and resumes on exactly that version.
//!
//! The code of a name comes from one [`Source`]: a config `path`, the
//! embedded reference plugins, or an upload. The first two are fixed by
//! the operator's files, so the API may neither replace nor delete them;
//! only uploaded plugins are managed through the API. What a plugin may
//! use is granted by name (`[plugins.NAME]`), whatever its source.

mod removal;
mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

pub use removal::Removed;

use crate::bindings::{PluginInfo, StepPluginPre};
use crate::capabilities::{Grant, StepState};
use crate::config::Config;
use crate::store::Store;
use crate::wasm::engine::{CacheOutcome, ComponentCache};
use crate::wasm::executor::Executor;

/// Why a plugin could not be loaded. Each names the problem so an operator
/// knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a WebAssembly component.
    #[error("plugin {name:?} is not a WebAssembly component: {reason}")]
    NotAComponent {
        /// Plugin name.
        name: String,
        /// What is wrong with the bytes.
        reason: String,
    },
    /// A component, but not one of the `step-plugin` world: missing exports
    /// or imports the host does not provide.
    #[error("plugin {name:?} does not fit the stephost:plugin/step-plugin world: {reason}")]
    WrongWorld {
        /// Plugin name.
        name: String,
        /// What the linker said.
        reason: String,
    },
    /// `describe` failed.
    #[error("plugin {name:?} failed in describe(): {reason}")]
    Describe {
        /// Plugin name.
        name: String,
        /// The failure.
        reason: String,
    },
    /// No such plugin (or version).
    #[error("unknown plugin {0:?}")]
    Unknown(String),
    /// The name is not usable.
    #[error("invalid plugin name {0:?}: use lower-case letters, digits, '-' and '_'")]
    InvalidName(String),
    /// The config file or the binary fixes this name's code, so the API
    /// may not replace or delete it: a restart would undo either.
    #[error("plugin {name:?} cannot be {action} through the API: {reason}")]
    FromConfig {
        /// Plugin name.
        name: String,
        /// `replaced` or `deleted`.
        action: &'static str,
        /// Where its code comes from, and how to change that.
        reason: String,
    },
    /// Executions still need one of its versions, or a workflow names it.
    #[error("plugin {name:?} is still needed: {by}")]
    InUse {
        /// Plugin name.
        name: String,
        /// Who needs it.
        by: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// One loaded version of a plugin.
pub struct LoadedPlugin {
    /// Name it was loaded under.
    pub name: String,
    /// SHA-256 of the component bytes, hex.
    pub hash: String,
    /// What `describe` said.
    pub info: PluginInfo,
    /// Size of the component in bytes.
    pub size: usize,
    /// Where its code comes from.
    pub source: Source,
    /// What the operator granted it.
    pub grant: Arc<Grant>,
    /// Ready to instantiate.
    pub pre: StepPluginPre<StepState>,
    /// Whether it was read from the compiled-component cache or compiled
    /// (`stephost run` reports it).
    pub compiled: CacheOutcome,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Where the code of a plugin name comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A `path` in its `[plugins.NAME]` section of the config file.
    Config,
    /// One of the embedded reference plugins.
    Builtin,
    /// Uploaded through `POST /v1/plugins`, kept in the data dir.
    Upload,
}

impl Source {
    /// The source the config file and the binary fix for `name`: its
    /// config `path` first (it may replace a built-in plugin), then a
    /// built-in plugin; `None` when only an upload can provide its code.
    pub fn fixed(config: &Config, name: &str) -> Option<Self> {
        if config.plugins.get(name).is_some_and(|p| p.path.is_some()) {
            Some(Self::Config)
        } else if crate::builtin::component(name).is_some() {
            Some(Self::Builtin)
        } else {
            None
        }
    }

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Builtin => "builtin",
            Self::Upload => "upload",
        }
    }
}

/// The refusal to `action` (replace, delete) a plugin whose code the
/// config file or the binary fixes; `None` for an uploaded name.
pub fn refuse_fixed(config: &Config, name: &str, action: &'static str) -> Option<PluginError> {
    let reason = match Source::fixed(config, name)? {
        Source::Config => {
            let path = config.plugins[name]
                .path
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            format!(
                "its code comes from {} (`path` of [plugins.{name}] in the config file); \
                 change that file and restart the daemon, or remove `path` to manage \
                 the plugin through the API",
                path.display()
            )
        }
        Source::Builtin | Source::Upload => format!(
            "it is built into the daemon; use another name, or set `path` in \
             [plugins.{name}] of the config file and restart the daemon to run other code \
             under this name"
        ),
    };
    Some(PluginError::FromConfig {
        name: name.to_owned(),
        action,
        reason,
    })
}

/// Current versions of some plugins, held for a change that pins them: no
/// plugin among them can be deleted until this is dropped. Take it before
/// reading the versions, drop it once the change is written.
#[derive(Debug, Default)]
pub struct Pinned {
    plugins: HashMap<String, Arc<LoadedPlugin>>,
    _held: Vec<tokio::sync::OwnedRwLockReadGuard<()>>,
}

impl Pinned {
    /// The current version of `name`, if it is loaded.
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.get(name)
    }
}

pub use crate::model::content_hash;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Explains bytes that are not a component, before the compiler's message.
fn header_problem(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Some("no WebAssembly header (expected the bytes \\0asm)".into());
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Some(
            "this is a core WebAssembly module, not a component; build for wasm32-wasip2 \
             or wrap it with `wasm-tools component new`"
                .into(),
        );
    }
    None
}

/// All loaded plugins.
pub struct Registry {
    executor: Arc<Executor>,
    store: Arc<dyn Store>,
    config: Arc<Config>,
    current: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    /// Keyed by name and hash, not hash alone: the same bytes under two
    /// names are two plugins with two grants.
    versions: RwLock<HashMap<(String, String), Arc<LoadedPlugin>>>,
    /// One lock per plugin name ever loaded: read by whoever pins its
    /// current version until the pin is written ([`Registry::pin`]),
    /// written by an upload or a deletion of that name.
    gates: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    /// Held while component bytes are stored or deleted, so a deletion
    /// never drops bytes another name has just come to share (across the
    /// store's awaits, hence tokio's).
    blobs: tokio::sync::Mutex<()>,
    cache: ComponentCache,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry.
    /// Compiled components are cached in `compiled_cache_dir`
    /// (`<data_dir>/cache/` by default).
    pub fn new(executor: Arc<Executor>, store: Arc<dyn Store>, config: Arc<Config>) -> Self {
        let cache =
            ComponentCache::new(executor.engine().clone(), Some(config.compiled_cache_dir()));
        Self {
            cache,
            executor,
            store,
            config,
            current: RwLock::default(),
            versions: RwLock::default(),
            gates: Mutex::default(),
            blobs: tokio::sync::Mutex::default(),
        }
    }

    /// The configuration grants are read from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The lock of `name`, created on first use.
    fn gate(&self, name: &str) -> Arc<tokio::sync::RwLock<()>> {
        self.gates
            .lock()
            .expect("registry lock poisoned")
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Compiles and checks a component without registering it.
    async fn compile(
        &self,
        name: &str,
        bytes: &[u8],
        source: Source,
    ) -> Result<LoadedPlugin, PluginError> {
        if !valid_name(name) {
            return Err(PluginError::InvalidName(name.to_owned()));
        }
        if let Some(reason) = header_problem(bytes) {
            return Err(PluginError::NotAComponent {
                name: name.to_owned(),
                reason,
            });
        }
        let hash = content_hash(bytes);
        let cache = self.cache.clone();
        let owned = bytes.to_vec();
        let key = hash.clone();
        let started = std::time::Instant::now();
        // Compiling is CPU-bound for up to seconds: keep it off the runtime.
        let (component, from) =
            tokio::task::spawn_blocking(move || cache.load_or_compile(&key, &owned))
                .await
                .map_err(|e| PluginError::NotAComponent {
                    name: name.to_owned(),
                    reason: format!("compiler crashed: {e}"),
                })?
                .map_err(|e| PluginError::NotAComponent {
                    name: name.to_owned(),
                    reason: format!("{e:#}"),
                })?;
        tracing::debug!(plugin = name, hash = %&hash[..12], ?from, elapsed_ms = started.elapsed().as_millis() as u64, "component ready");
        let pre = self
            .executor
            .prepare(&component)
            .map_err(|e| PluginError::WrongWorld {
                name: name.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let grant = Arc::new(
            crate::grant::Grant::for_plugin(&self.config, name).map_err(|e| {
                PluginError::Describe {
                    name: name.to_owned(),
                    reason: e.to_string(),
                }
            })?,
        );
        let info = self
            .executor
            .describe(&pre, grant.clone(), name)
            .await
            .map_err(|e| PluginError::Describe {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(LoadedPlugin {
            name: name.to_owned(),
            hash,
            info,
            size: bytes.len(),
            source,
            grant,
            pre,
            compiled: from,
        })
    }

    /// Loads a component under `name` at start (built in or from a config
    /// path), keeps its bytes durably by hash, and makes it the version
    /// new executions use.
    pub async fn load(
        &self,
        name: &str,
        bytes: &[u8],
        source: Source,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let plugin = Arc::new(self.compile(name, bytes, source).await?);
        {
            let _blobs = self.blobs.lock().await;
            self.store.put_component(&plugin.hash, bytes).await?;
            self.install(plugin.clone());
        }
        tracing::info!(plugin = name, hash = %&plugin.hash[..12], size = plugin.size, source = source.as_str(), "plugin loaded");
        Ok(plugin)
    }

    /// Loads an uploaded component under `name`: compiled, checked and
    /// described before anything changes, then kept durably (bytes and
    /// name) and made the version new executions use. Refused for a name
    /// whose code the config file or the binary fixes.
    pub async fn upload(&self, name: &str, bytes: &[u8]) -> Result<Arc<LoadedPlugin>, PluginError> {
        if let Some(refusal) = refuse_fixed(&self.config, name, "replaced") {
            return Err(refusal);
        }
        let plugin = Arc::new(self.compile(name, bytes, Source::Upload).await?);
        // Not while a deletion of this name is deciding what to drop; and
        // of two concurrent uploads, the one recorded last is current.
        let gate = self.gate(name);
        let _exclusive = gate.write().await;
        {
            let _blobs = self.blobs.lock().await;
            self.store.put_component(&plugin.hash, bytes).await?;
            self.store.put_plugin_ref(name, &plugin.hash).await?;
            self.install(plugin.clone());
        }
        tracing::info!(plugin = name, hash = %&plugin.hash[..12], size = plugin.size, "plugin uploaded");
        Ok(plugin)
    }

    /// Makes `plugin` its name's current version.
    fn install(&self, plugin: Arc<LoadedPlugin>) {
        // The gate exists before the plugin can be found (see `pin`).
        self.gate(&plugin.name);
        self.versions
            .write()
            .expect("registry lock poisoned")
            .insert((plugin.name.clone(), plugin.hash.clone()), plugin.clone());
        self.current
            .write()
            .expect("registry lock poisoned")
            .insert(plugin.name.clone(), plugin);
    }

    /// The current versions of `names`, which cannot be deleted until the
    /// returned [`Pinned`] is dropped. Whoever writes an execution pinned
    /// to a current version (start, retry, skip) holds it until the write
    /// is done, so a deletion never misses an execution that needs it.
    pub async fn pin<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Pinned {
        let mut names: Vec<&str> = names.into_iter().collect();
        // One order for everyone; a deletion holds only one gate anyway.
        names.sort_unstable();
        names.dedup();
        let mut pinned = Pinned::default();
        for name in names {
            // A name never loaded has no gate (and none is made for it, so
            // requests naming random plugins cannot grow the map).
            let gate = self
                .gates
                .lock()
                .expect("registry lock poisoned")
                .get(name)
                .cloned();
            let Some(gate) = gate else { continue };
            pinned._held.push(gate.read_owned().await);
            if let Some(plugin) = self.current(name) {
                pinned.plugins.insert(name.to_owned(), plugin);
            }
        }
        pinned
    }

    /// The version new executions of `name` use.
    pub fn current(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.current
            .read()
            .expect("registry lock poisoned")
            .get(name)
            .cloned()
    }

    /// A specific version, loading it from the store if this daemon has not
    /// seen it since it started (an execution suspended on an older build).
    pub async fn version(&self, name: &str, hash: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        let key = (name.to_owned(), hash.to_owned());
        if let Some(p) = self
            .versions
            .read()
            .expect("registry lock poisoned")
            .get(&key)
        {
            return Ok(p.clone());
        }
        let bytes = self
            .store
            .component(hash)
            .await?
            .ok_or_else(|| PluginError::Unknown(format!("{name}@{hash}")))?;
        let source = Source::fixed(&self.config, name).unwrap_or(Source::Upload);
        let plugin = Arc::new(self.compile(name, &bytes, source).await?);
        self.versions
            .write()
            .expect("registry lock poisoned")
            .insert(key, plugin.clone());
        Ok(plugin)
    }

    /// Current versions, by name.
    pub fn list(&self) -> Vec<Arc<LoadedPlugin>> {
        let mut all: Vec<_> = self
            .current
            .read()
            .expect("registry lock poisoned")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("wait-for-callback"));
        assert!(valid_name("http_task2"));
        assert!(!valid_name(""));
        assert!(!valid_name("../etc"));
        assert!(!valid_name("Echo"));
    }

    #[test]
    fn core_modules_and_garbage_are_told_apart() {
        assert!(
            header_problem(b"hello world")
                .unwrap()
                .contains("no WebAssembly header")
        );
        let core = b"\0asm\x01\0\0\0";
        assert!(
            header_problem(core)
                .unwrap()
                .contains("core WebAssembly module")
        );
        let component = b"\0asm\x0d\0\x01\0";
        assert!(header_problem(component).is_none());
    }
}
