//! The plugin registry: loads component bytes, checks them against the
//! `step-plugin` world, pre-instantiates them, and keeps every version by
//! content hash. A name points at its newest version; a suspended step
//! keeps the hash it started on and resumes on exactly that version.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::Digest as _;

use crate::bindings::{PluginInfo, StepPluginPre};
use crate::capabilities::{Grant, StepState};
use crate::config::Config;
use crate::engine::ComponentCache;
use crate::executor::Executor;
use crate::store::Store;

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
    /// Whether it is one of the embedded reference plugins.
    pub builtin: bool,
    /// What the operator granted it.
    pub grant: Arc<Grant>,
    /// Ready to instantiate.
    pub pre: StepPluginPre<StepState>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// SHA-256 hex of component bytes: a plugin version's identity.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

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
    versions: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
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
        }
    }

    /// Compiles and checks a component without registering it.
    async fn compile(
        &self,
        name: &str,
        bytes: &[u8],
        builtin: bool,
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
            self.config
                .grant_for(name)
                .map_err(|e| PluginError::Describe {
                    name: name.to_owned(),
                    reason: e.to_string(),
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
            builtin,
            grant,
            pre,
        })
    }

    /// Loads a component under `name`, keeps its bytes durably by hash, and
    /// makes it the version new executions use.
    pub async fn load(
        &self,
        name: &str,
        bytes: &[u8],
        builtin: bool,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let plugin = Arc::new(self.compile(name, bytes, builtin).await?);
        self.store.put_component(&plugin.hash, bytes)?;
        self.versions
            .write()
            .expect("registry lock poisoned")
            .insert(plugin.hash.clone(), plugin.clone());
        self.current
            .write()
            .expect("registry lock poisoned")
            .insert(name.to_owned(), plugin.clone());
        tracing::info!(plugin = name, hash = %&plugin.hash[..12], size = plugin.size, "plugin loaded");
        Ok(plugin)
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
        if let Some(p) = self
            .versions
            .read()
            .expect("registry lock poisoned")
            .get(hash)
        {
            return Ok(p.clone());
        }
        let bytes = self
            .store
            .component(hash)?
            .ok_or_else(|| PluginError::Unknown(format!("{name}@{hash}")))?;
        let plugin = Arc::new(self.compile(name, &bytes, false).await?);
        self.versions
            .write()
            .expect("registry lock poisoned")
            .insert(hash.to_owned(), plugin.clone());
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
