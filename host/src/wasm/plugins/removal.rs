//! Deleting an uploaded plugin (`DELETE /v1/plugins/{name}`): refused
//! while anything still needs one of its versions; otherwise its name, its
//! versions' bytes and their compiled forms go, except bytes another
//! plugin shares.

use std::collections::{BTreeSet, HashSet};

use super::{PluginError, Registry, refuse_fixed};
use crate::model::Execution;
use crate::store::{ExecutionStore, StoreError};

/// What a deletion removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The plugin.
    pub name: String,
    /// Hashes of its versions whose bytes were deleted.
    pub removed: Vec<String>,
    /// Hashes of its versions whose bytes stay, because another plugin
    /// (built in, configured or uploaded under another name) is the same
    /// component.
    pub shared: Vec<String>,
}

/// Executions show at most this many ids in a refusal.
const SHOWN_IDS: usize = 5;

/// Added to the other daemons' longest look interval before a deletion on
/// a shared store looks again: a look takes time of its own.
const SETTLE_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// What the executions say about one plugin name.
#[derive(Debug, Default)]
struct Usage {
    /// Non-terminal executions that will run one of its versions: the
    /// current step (pinned) or a later one (the current version then).
    needed_by: Vec<String>,
    /// How many of those.
    needed: usize,
    /// Versions of it that any execution pinned (terminal ones included):
    /// the only record of versions uploaded before versions were listed.
    pinned_here: HashSet<String>,
    /// Versions of it that non-terminal executions pinned.
    pinned_live_here: HashSet<String>,
    /// Versions of other plugins that non-terminal executions pinned.
    pinned_elsewhere: HashSet<String>,
}

impl Usage {
    fn add(&mut self, name: &str, exec: &Execution) {
        let live = !exec.state.is_terminal();
        let ahead = exec.steps.get(exec.step_index..).unwrap_or_default();
        if live && ahead.iter().any(|s| s.plugin == name) {
            self.needed += 1;
            if self.needed_by.len() < SHOWN_IDS {
                self.needed_by.push(exec.id.clone());
            }
        }
        for step in &exec.steps {
            let Some(hash) = &step.plugin_hash else {
                continue;
            };
            if step.plugin == name {
                self.pinned_here.insert(hash.clone());
                if live {
                    self.pinned_live_here.insert(hash.clone());
                }
            } else if live {
                self.pinned_elsewhere.insert(hash.clone());
            }
        }
    }

    async fn of(store: &dyn ExecutionStore, name: &str) -> Result<Self, StoreError> {
        let mut usage = Self::default();
        store
            .each_execution(&mut |exec| usage.add(name, &exec))
            .await?;
        Ok(usage)
    }

    /// Why the plugin cannot go, if anything needs it.
    fn refusal(&self) -> Option<String> {
        if self.needed == 0 {
            return None;
        }
        let more = if self.needed > self.needed_by.len() {
            format!(" and {} more", self.needed - self.needed_by.len())
        } else {
            String::new()
        };
        Some(format!(
            "{} running or suspended execution(s) will run it ({}{more}); \
             wait for them to end or cancel them, then delete it",
            self.needed,
            self.needed_by.join(", ")
        ))
    }
}

impl Registry {
    /// Deletes the uploaded plugin `name`: its current version and every
    /// version uploaded or pinned under it leave the registry and the
    /// store (bytes another plugin is made of stay). Refused for a name
    /// the config file or the binary provides, and while a running or
    /// suspended execution or a configured workflow needs it.
    pub async fn remove(&self, name: &str) -> Result<Removed, PluginError> {
        if let Some(refusal) = refuse_fixed(&self.config, name, "deleted") {
            return Err(refusal);
        }
        let gate = self
            .gates
            .lock()
            .expect("registry lock poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| PluginError::Unknown(name.to_owned()))?;
        // No execution can pin a version of it while this is held, so the
        // scan below sees every execution that will need it.
        let _exclusive = gate.write().await;
        let current = self
            .current(name)
            .ok_or_else(|| PluginError::Unknown(name.to_owned()))?;
        let in_use = |by: String| PluginError::InUse {
            name: name.to_owned(),
            by,
        };
        if let Some((workflow, _)) = self
            .config
            .workflows
            .iter()
            .find(|(_, wf)| wf.steps.iter().any(|s| s.plugin == name))
        {
            return Err(in_use(format!(
                "workflow {workflow:?} of the config file uses it (the daemon would not \
                 start without it); remove it from the workflow first"
            )));
        }
        let usage = Usage::of(self.store.as_ref(), name).await?;
        if let Some(by) = usage.refusal() {
            return Err(in_use(by));
        }

        // The name first: should the daemon stop half-way, it starts
        // without the plugin and with some orphaned bytes, rather than
        // refuse to start over a missing component.
        self.store.remove_plugin_ref(name).await?;
        self.current
            .write()
            .expect("registry lock poisoned")
            .remove(name);
        // Daemons sharing the store offer the plugin until they hear of
        // the removal (a hint at once, else their next look): one of them
        // may start an execution on it after the scan above, which the
        // gate, this process's alone, did not stop. Wait that out and
        // look again; a version pinned meanwhile keeps its bytes, so that
        // execution can still load it wherever it resumes.
        let mut late = HashSet::new();
        if self.store.is_shared() {
            tokio::time::sleep(self.config.cluster.upload_look_every() + SETTLE_MARGIN).await;
            late = Usage::of(self.store.as_ref(), name).await?.pinned_live_here;
            if !late.is_empty() {
                tracing::warn!(
                    plugin = name,
                    versions = late.len(),
                    "executions started on another daemon while the plugin was being deleted; the versions they run keep their bytes"
                );
            }
        }

        let removed = {
            let _blobs = self.blobs.lock().await;
            let mut candidates: BTreeSet<String> = self
                .store
                .plugin_versions(name)
                .await?
                .into_iter()
                .collect();
            candidates.extend(usage.pinned_here);
            candidates.insert(current.hash.clone());
            let mut shared = usage.pinned_elsewhere;
            shared.extend(late);
            for (other, hash) in self.store.plugin_refs().await? {
                if other != name {
                    shared.extend(self.store.plugin_versions(&other).await?);
                }
                // The name itself only if another daemon uploaded it anew
                // since its ref went: that upload is current, keep it.
                shared.insert(hash);
            }
            {
                let versions = self.versions.read().expect("registry lock poisoned");
                for (plugin, hash) in versions.keys() {
                    if plugin == name {
                        candidates.insert(hash.clone());
                    } else {
                        shared.insert(hash.clone());
                    }
                }
            }
            self.versions
                .write()
                .expect("registry lock poisoned")
                .retain(|(plugin, _), _| plugin != name);
            let (kept, gone): (Vec<_>, Vec<_>) =
                candidates.into_iter().partition(|h| shared.contains(h));
            for hash in &gone {
                self.store.remove_component(hash).await?;
                self.cache.remove(hash);
            }
            Removed {
                name: name.to_owned(),
                removed: gone,
                shared: kept,
            }
        };
        self.store.flush().await?;
        tracing::info!(
            plugin = name,
            removed = removed.removed.len(),
            shared = removed.shared.len(),
            "plugin deleted"
        );
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Doc, ExecState, StepSpec};

    fn exec(id: &str, state: ExecState, step_index: usize, steps: &[(&str, &str)]) -> Execution {
        let steps = steps
            .iter()
            .map(|(plugin, hash)| StepSpec {
                name: (*plugin).to_owned(),
                plugin: (*plugin).to_owned(),
                config: serde_json::Value::Null,
                plugin_hash: (!hash.is_empty()).then(|| (*hash).to_owned()),
            })
            .collect();
        let mut exec = Execution::new(
            id.to_owned(),
            "w".into(),
            steps,
            Doc::json(&serde_json::json!({})),
            "r".into(),
            0,
        );
        exec.state = state;
        exec.step_index = step_index;
        exec
    }

    #[test]
    fn live_executions_need_the_current_and_later_steps_only() {
        let mut usage = Usage::default();
        // Suspended on it, a later step of a running one, and a finished
        // step of a running one (which no longer needs it).
        usage.add("p", &exec("a", ExecState::Suspended, 0, &[("p", "h1")]));
        usage.add(
            "p",
            &exec("b", ExecState::Running, 0, &[("q", "h9"), ("p", "")]),
        );
        usage.add(
            "p",
            &exec("c", ExecState::Running, 1, &[("p", "h2"), ("q", "h8")]),
        );
        usage.add("p", &exec("d", ExecState::Completed, 0, &[("p", "h3")]));
        usage.add("p", &exec("e", ExecState::Failed, 0, &[("q", "h7")]));
        assert_eq!(usage.needed_by, ["a", "b"]);
        let mut here: Vec<_> = usage.pinned_here.iter().cloned().collect();
        here.sort();
        assert_eq!(here, ["h1", "h2", "h3"], "every version pinned under it");
        let mut elsewhere: Vec<_> = usage.pinned_elsewhere.iter().cloned().collect();
        elsewhere.sort();
        assert_eq!(elsewhere, ["h8", "h9"], "only live executions of others");
        let why = usage.refusal().unwrap();
        assert!(
            why.contains("2 running or suspended") && why.contains("a, b"),
            "{why}"
        );
    }

    #[test]
    fn a_refusal_names_a_few_executions_and_counts_the_rest() {
        let mut usage = Usage::default();
        for n in 0..8 {
            usage.add(
                "p",
                &exec(&format!("x{n}"), ExecState::Suspended, 0, &[("p", "h")]),
            );
        }
        let why = usage.refusal().unwrap();
        assert!(
            why.contains("x4 and 3 more") && !why.contains("x5"),
            "{why}"
        );
        assert!(Usage::default().refusal().is_none());
    }
}
