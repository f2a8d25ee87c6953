//! A store in memory, with the semantics of the durable ones (version
//! checks, atomic changes, timers by due time) and none of their cost: for
//! unit tests of the workflow, which then need no data dir, and as the
//! second implementation that keeps the traits honest about what is the
//! store's contract and what is sled's.
//!
//! Everything lives behind one mutex, held only for a few map operations
//! and never across an await, so every change is atomic by construction.
//! Nothing survives the process: `flush` only counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::{
    CallbackStore, Change, Chore, ComponentStore, DeliveryStore, ExecutionFilter, ExecutionStore,
    NodeStore, SecretStore, StatsStore, StoreError, StoreFuture, TimerStore, TokenStore,
    WriteStats,
};
use crate::model::TokenRecord;
use crate::model::{CallbackRecord, Delivery, ExecState, Execution, IdempotentStart, Timer};

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    nodes: super::nodes::LocalNodes,
}

/// The tables, keyed as the durable stores key them, so that they sort
/// the same way (timers by [`Timer::key`], deliveries by
/// [`Delivery::key`]).
#[derive(Debug, Default)]
struct Tables {
    executions: BTreeMap<String, Execution>,
    callbacks: BTreeMap<String, CallbackRecord>,
    timers: BTreeMap<Vec<u8>, Timer>,
    deliveries: BTreeMap<String, Delivery>,
    idempotent_starts: BTreeMap<String, IdempotentStart>,
    tokens: HashMap<String, TokenRecord>,
    components: HashMap<String, Vec<u8>>,
    /// Uploaded plugin name -> hash of its current version.
    plugins: BTreeMap<String, String>,
    /// (name, hash) of every version uploaded under a name.
    plugin_versions: BTreeSet<(String, String)>,
    secrets: HashMap<String, Vec<u8>>,
    changes: u64,
    flush_requests: u64,
}

/// Refuses `new_version` unless the stored record is at the version
/// before it (or absent, for 1): the compare-and-swap of every store.
fn check(kind: &str, key: &str, stored: Option<u64>, new_version: u64) -> Result<(), StoreError> {
    let current = stored.unwrap_or(0);
    if current + 1 != new_version {
        return Err(StoreError::Conflict(format!(
            "{kind} {key} is at version {current}, change expects {}",
            new_version.saturating_sub(1)
        )));
    }
    Ok(())
}

impl Tables {
    /// Checks every version `change` expects, then writes all of it: a
    /// refused change leaves nothing behind.
    fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        if let Some(r) = &change.remove {
            let stored = self.executions.get(&r.id).map_or(0, |s| s.version);
            if stored != r.version {
                return Err(StoreError::Conflict(format!(
                    "execution {} is at version {stored}, its removal expects {}",
                    r.id, r.version
                )));
            }
        }
        if let Some(e) = &change.execution {
            let stored = self.executions.get(&e.id).map(|s| s.version);
            check("execution", &e.id, stored, e.version)?;
        }
        for c in &change.callbacks {
            let stored = self.callbacks.get(&c.correlation_id).map(|s| s.version);
            check("callback", &c.correlation_id, stored, c.version)?;
        }
        for d in &change.deliveries {
            let key = d.key();
            let stored = self.deliveries.get(&key).map(|s| s.version);
            check("delivery", &key, stored, d.version)?;
        }
        if let Some(i) = change.idempotent_start.as_ref()
            && self.idempotent_starts.contains_key(&i.key)
        {
            return Err(StoreError::Conflict(format!(
                "idempotency key {} is already stored",
                i.key
            )));
        }
        if let Some(i) = &change.idempotent_start {
            self.idempotent_starts.insert(i.key.clone(), i.clone());
        }
        if let Some(e) = &change.execution {
            self.executions.insert(e.id.clone(), e.clone());
        }
        for c in &change.callbacks {
            self.callbacks.insert(c.correlation_id.clone(), c.clone());
        }
        for t in &change.remove_timers {
            self.timers.remove(&t.key());
        }
        for t in &change.add_timers {
            self.timers.insert(t.key(), t.clone());
        }
        for d in &change.deliveries {
            self.deliveries.insert(d.key(), d.clone());
        }
        if let Some(r) = &change.remove {
            self.executions.remove(&r.id);
            for c in &r.callbacks {
                self.callbacks.remove(c);
            }
            for d in &r.deliveries {
                self.deliveries.remove(d);
            }
            if let Some(key) = &r.idempotency_key {
                self.idempotent_starts.remove(key);
            }
        }
        Ok(())
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tables; a panic elsewhere while holding them cannot leave a
    /// change half applied (every change is checked before it writes), so
    /// poisoning is ignored.
    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers at once: nothing here waits.
    fn ready<'a, T: Send + 'a>(value: Result<T, StoreError>) -> StoreFuture<'a, T> {
        Box::pin(std::future::ready(value))
    }
}

impl ExecutionStore for MemoryStore {
    fn execution<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Execution>> {
        Self::ready(Ok(self.tables().executions.get(id).cloned()))
    }

    fn executions<'a>(&'a self, filter: &'a ExecutionFilter) -> StoreFuture<'a, Vec<Execution>> {
        let tables = self.tables();
        let all: Box<dyn Iterator<Item = &Execution>> = if filter.newest_first {
            Box::new(tables.executions.values().rev())
        } else {
            Box::new(tables.executions.values())
        };
        let found = all
            .filter(|e| filter.is_past(&e.id) && filter.matches(e))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        Self::ready(Ok(found))
    }

    fn each_execution<'a>(
        &'a self,
        visit: &'a mut (dyn FnMut(Execution) + Send),
    ) -> StoreFuture<'a, ()> {
        // Copied out first: the visitor runs without the lock.
        let all: Vec<_> = self.tables().executions.values().cloned().collect();
        all.into_iter().for_each(visit);
        Self::ready(Ok(()))
    }

    fn ended<'a>(
        &'a self,
        state: ExecState,
        ended_ms: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        // A scan: this store holds what one test writes. An ended
        // execution's last write is its end (or a later operator action,
        // which only makes it younger).
        let mut ended: Vec<_> = self
            .tables()
            .executions
            .values()
            .filter(|e| e.state == state && state.is_terminal() && e.updated_ms <= ended_ms)
            .map(|e| (e.updated_ms, e.id.clone()))
            .collect();
        ended.sort();
        Self::ready(Ok(ended
            .into_iter()
            .take(limit)
            .map(|(_, id)| id)
            .collect()))
    }

    fn idempotent_start<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<IdempotentStart>> {
        Self::ready(Ok(self.tables().idempotent_starts.get(key).cloned()))
    }

    fn apply<'a>(&'a self, change: &'a Change) -> StoreFuture<'a, ()> {
        let mut tables = self.tables();
        tables.changes += 1;
        Self::ready(tables.apply(change))
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        self.tables().flush_requests += 1;
        Self::ready(Ok(()))
    }
}

impl CallbackStore for MemoryStore {
    fn callback<'a>(&'a self, correlation_id: &'a str) -> StoreFuture<'a, Option<CallbackRecord>> {
        Self::ready(Ok(self.tables().callbacks.get(correlation_id).cloned()))
    }

    fn callbacks_of<'a>(&'a self, execution_id: &'a str) -> StoreFuture<'a, Vec<String>> {
        let ids = self
            .tables()
            .callbacks
            .values()
            .filter(|c| c.execution_id == execution_id)
            .map(|c| c.correlation_id.clone())
            .collect();
        Self::ready(Ok(ids))
    }
}

/// The first timer key after every timer due at `now_ms`.
fn due_end(now_ms: u64) -> Vec<u8> {
    now_ms.saturating_add(1).to_be_bytes().to_vec()
}

impl TimerStore for MemoryStore {
    fn due_timers(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<Timer>> {
        let due = self
            .tables()
            .timers
            .range(..due_end(now_ms))
            .take(limit)
            .map(|(_, t)| t.clone())
            .collect();
        Self::ready(Ok(due))
    }

    fn next_timer_due(&self) -> StoreFuture<'_, Option<u64>> {
        let next = self.tables().timers.values().next().map(|t| t.due_ms);
        Self::ready(Ok(next))
    }

    fn timer_backlog(&self, now_ms: u64) -> StoreFuture<'_, (u64, u64)> {
        // A map knows its length; only the due timers are walked.
        let tables = self.tables();
        let due = tables.timers.range(..due_end(now_ms)).count() as u64;
        Self::ready(Ok((tables.timers.len() as u64, due)))
    }
}

impl DeliveryStore for MemoryStore {
    fn delivery<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Delivery>> {
        Self::ready(Ok(self.tables().deliveries.get(key).cloned()))
    }

    fn deliveries_of<'a>(&'a self, execution_id: &'a str) -> StoreFuture<'a, Vec<Delivery>> {
        let prefix = format!("{execution_id}/");
        let found = self
            .tables()
            .deliveries
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, d)| d.clone())
            .collect();
        Self::ready(Ok(found))
    }
}

impl TokenStore for MemoryStore {
    fn put_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()> {
        self.tables()
            .tokens
            .insert(token.sha256.clone(), token.clone());
        Self::ready(Ok(()))
    }

    fn token<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
        Self::ready(Ok(self.tables().tokens.get(sha256).cloned()))
    }

    fn token_count(&self) -> StoreFuture<'_, usize> {
        Self::ready(Ok(self.tables().tokens.len()))
    }

    fn tokens(&self) -> StoreFuture<'_, Vec<TokenRecord>> {
        Self::ready(Ok(self.tables().tokens.values().cloned().collect()))
    }

    fn remove_token<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, ()> {
        self.tables().tokens.remove(sha256);
        Self::ready(Ok(()))
    }

    fn put_first_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, bool> {
        let mut tables = self.tables();
        let first = tables.tokens.is_empty();
        if first {
            tables.tokens.insert(token.sha256.clone(), token.clone());
        }
        Self::ready(Ok(first))
    }

    fn remove_token_keeping_an_admin<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, bool> {
        let mut tables = self.tables();
        let removable = super::tokens::keeps_an_admin(tables.tokens.values(), sha256);
        if removable {
            tables.tokens.remove(sha256);
        }
        Self::ready(Ok(removable))
    }

    fn touch_token<'a>(&'a self, sha256: &'a str, at_ms: u64) -> StoreFuture<'a, ()> {
        if let Some(record) = self.tables().tokens.get_mut(sha256) {
            record.last_used_ms = Some(record.last_used_ms.map_or(at_ms, |t| t.max(at_ms)));
        }
        Self::ready(Ok(()))
    }
}

impl ComponentStore for MemoryStore {
    fn put_component<'a>(&'a self, hash: &'a str, bytes: &'a [u8]) -> StoreFuture<'a, ()> {
        self.tables()
            .components
            .entry(hash.to_owned())
            .or_insert_with(|| bytes.to_vec());
        Self::ready(Ok(()))
    }

    fn component<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Self::ready(Ok(self.tables().components.get(hash).cloned()))
    }

    fn remove_component<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, ()> {
        self.tables().components.remove(hash);
        Self::ready(Ok(()))
    }

    fn put_plugin_ref<'a>(&'a self, name: &'a str, hash: &'a str) -> StoreFuture<'a, ()> {
        let mut tables = self.tables();
        tables
            .plugin_versions
            .insert((name.to_owned(), hash.to_owned()));
        tables.plugins.insert(name.to_owned(), hash.to_owned());
        Self::ready(Ok(()))
    }

    fn plugin_refs(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        let refs = self
            .tables()
            .plugins
            .iter()
            .map(|(n, h)| (n.clone(), h.clone()))
            .collect();
        Self::ready(Ok(refs))
    }

    fn plugin_versions<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Vec<String>> {
        let versions = self
            .tables()
            .plugin_versions
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, h)| h.clone())
            .collect();
        Self::ready(Ok(versions))
    }

    fn remove_plugin_ref<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ()> {
        let mut tables = self.tables();
        tables.plugins.remove(name);
        tables.plugin_versions.retain(|(n, _)| n != name);
        Self::ready(Ok(()))
    }
}

impl NodeStore for MemoryStore {
    fn is_shared(&self) -> bool {
        false
    }

    fn heartbeat<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
        self.nodes.heartbeat(node);
        Self::ready(Ok(()))
    }

    fn leave<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
        self.nodes.leave(node);
        Self::ready(Ok(()))
    }

    fn lead<'a>(&'a self, chore: Chore, node: &'a str, hold_ms: u64) -> StoreFuture<'a, bool> {
        Self::ready(Ok(self.nodes.lead(chore, node, hold_ms)))
    }

    fn orphaned<'a>(
        &'a self,
        node: &'a str,
        lease_ms: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Execution>> {
        Box::pin(self.nodes.orphaned(self, node, lease_ms, limit))
    }
}

impl SecretStore for MemoryStore {
    fn node_secret<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Vec<u8>> {
        let secret = self
            .tables()
            .secrets
            .entry(name.to_owned())
            .or_insert_with(|| rand::random::<[u8; 32]>().to_vec())
            .clone();
        Self::ready(Ok(secret))
    }
}

impl StatsStore for MemoryStore {
    fn count_executions_by_state(&self) -> StoreFuture<'_, Vec<(ExecState, u64)>> {
        let tables = self.tables();
        let counts = ExecState::ALL
            .into_iter()
            .map(|state| {
                let n = tables.executions.values().filter(|e| e.state == state);
                (state, n.count() as u64)
            })
            .collect();
        Self::ready(Ok(counts))
    }

    fn count_executions_by_workflow<'a>(
        &'a self,
        workflow: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<(String, ExecState, u64)>> {
        // A scan: this store holds what one test writes.
        let mut counts = std::collections::BTreeMap::new();
        for e in self.tables().executions.values() {
            if workflow.is_none_or(|w| w == e.workflow) {
                *counts.entry((e.workflow.clone(), e.state)).or_insert(0) += 1;
            }
        }
        let counts = counts.into_iter().map(|((w, s), n)| (w, s, n)).collect();
        Self::ready(Ok(counts))
    }

    fn quarantined_timers(&self) -> u64 {
        // Records are kept as values, never decoded: none can be corrupt.
        0
    }

    fn write_stats(&self) -> WriteStats {
        let tables = self.tables();
        WriteStats {
            changes: tables.changes,
            transactions: tables.changes,
            flush_requests: tables.flush_requests,
            disk_flushes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    crate::store_conformance!(crate::store::conformance::Volatile::new(
        super::MemoryStore::new()
    ));
}
