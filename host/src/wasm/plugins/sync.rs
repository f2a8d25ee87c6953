//! Uploaded plugins across daemons sharing a store: an upload (or a
//! removal) through one daemon is in the store, and every other daemon
//! takes it up at its next look, so a plugin uploaded through the load
//! balancer is there whichever node a start lands on. Versions an
//! execution resumes on are loaded by hash when needed anyway
//! ([`Registry::version`]); this is about the *current* version new
//! executions start on.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Registry, Source};
use crate::store::StoreError;

impl Registry {
    /// Brings this daemon's uploaded plugins in line with the store's:
    /// loads what another daemon uploaded since (a new name or a new
    /// version), and stops offering what another removed. Returns the
    /// names that changed.
    pub async fn sync_uploads(&self) -> Result<Vec<String>, StoreError> {
        let stored = self.store.plugin_refs().await?;
        let mut changed = Vec::new();
        for (name, hash) in &stored {
            if Source::fixed(&self.config, name).is_some()
                || self.current(name).is_some_and(|p| p.hash == *hash)
            {
                continue;
            }
            let Some(bytes) = self.store.component(hash).await? else {
                tracing::error!(plugin = %name, %hash, "an uploaded plugin's component is missing from the store; the previous version stays current");
                continue;
            };
            match self.compile(name, &bytes, Source::Upload).await {
                Ok(plugin) => {
                    let gate = self.gate(name);
                    let _exclusive = gate.write().await;
                    self.install(Arc::new(plugin));
                    tracing::info!(plugin = %name, hash = %&hash[..hash.len().min(12)], "took up a plugin uploaded through another daemon");
                    changed.push(name.clone());
                }
                Err(e) => {
                    tracing::error!(plugin = %name, error = %e, "a plugin uploaded through another daemon does not load here; the previous version stays current");
                }
            }
        }
        let names: HashSet<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
        for plugin in self.list() {
            if plugin.source == Source::Upload && !names.contains(plugin.name.as_str()) {
                let gate = self.gate(&plugin.name);
                let _exclusive = gate.write().await;
                self.current
                    .write()
                    .expect("registry lock poisoned")
                    .remove(&plugin.name);
                tracing::info!(plugin = %plugin.name, "a plugin removed through another daemon is no longer offered");
                changed.push(plugin.name.clone());
            }
        }
        Ok(changed)
    }
}
