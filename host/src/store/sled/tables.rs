//! The store traits on sled trees. Point reads answer at once; scans and
//! anything that flushes run on the blocking pool.

use std::sync::atomic::Ordering;

use super::{STATES, SledStore, TIMER_COUNT_KEY, blocking, count_key, count_value, decode, encode};
use crate::model::TokenRecord;
use crate::model::{CallbackRecord, Delivery, ExecState, Execution, IdempotentStart, Timer};
use crate::store::{
    CallbackStore, Change, Chore, ComponentStore, DeliveryStore, ExecutionFilter, ExecutionStore,
    NodeStore, SecretStore, StatsStore, StoreError, StoreFuture, TimerStore, TokenStore,
    WriteStats,
};

/// Executions an [`ExecutionStore::each_execution`] scan hands over at a
/// time: the scan stays at most two pages ahead of its visitor.
const SCAN_PAGE: usize = 256;

impl SledStore {
    /// A point read of a tree that batches write, never of half a batch.
    fn read(&self, tree: &sled::Tree, key: &[u8]) -> Result<Option<sled::IVec>, sled::Error> {
        let _visible = self.visibility.read();
        tree.get(key)
    }

    /// A point read of one JSON record of a tree that batches write.
    fn get<T: serde::de::DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        decoded(key.as_bytes(), self.read(tree, key.as_bytes())?)
    }
}

/// A point read of one JSON record of a tree batches do not write.
fn get<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &str,
) -> Result<Option<T>, StoreError> {
    decoded(key.as_bytes(), tree.get(key.as_bytes())?)
}

/// A JSON record as read under `key`, if there was one.
fn decoded<T: serde::de::DeserializeOwned>(
    key: &[u8],
    bytes: Option<sled::IVec>,
) -> Result<Option<T>, StoreError> {
    bytes.map(|b| decode(key, &b)).transpose()
}

impl ExecutionStore for SledStore {
    fn execution<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Execution>> {
        let found = self.get(&self.executions, id);
        Box::pin(async move { found })
    }

    fn executions<'a>(&'a self, filter: &'a ExecutionFilter) -> StoreFuture<'a, Vec<Execution>> {
        let (executions, indexes, filter) = (
            self.executions.clone(),
            self.indexes.clone(),
            filter.clone(),
        );
        Box::pin(blocking("execution listing", move || {
            super::listing::list(&executions, &indexes, &filter)
        }))
    }

    fn idempotent_start<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<IdempotentStart>> {
        let key = super::idempotency_key(key);
        let found = self
            .read(&self.indexes, &key)
            .map_err(StoreError::from)
            .and_then(|bytes| decoded(&key, bytes));
        Box::pin(async move { found })
    }

    fn each_execution<'a>(
        &'a self,
        visit: &'a mut (dyn FnMut(Execution) + Send),
    ) -> StoreFuture<'a, ()> {
        let tree = self.executions.clone();
        Box::pin(async move {
            // The scan reads on the blocking pool and hands over a page at
            // a time; the visitor runs here, on the caller's task.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Execution>, StoreError>>(1);
            let scan = tokio::task::spawn_blocking(move || {
                let mut page = Vec::with_capacity(SCAN_PAGE);
                for item in tree.iter() {
                    let exec = item
                        .map_err(StoreError::from)
                        .and_then(|(key, bytes)| decode(&key, &bytes));
                    match exec {
                        Ok(exec) => page.push(exec),
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                    // A visitor that stopped listening ends the scan.
                    if page.len() == SCAN_PAGE
                        && tx.blocking_send(Ok(std::mem::take(&mut page))).is_err()
                    {
                        return;
                    }
                }
                if !page.is_empty() {
                    let _ = tx.blocking_send(Ok(page));
                }
            });
            while let Some(page) = rx.recv().await {
                page?.into_iter().for_each(&mut *visit);
            }
            scan.await.map_err(|source| StoreError::Task {
                what: "execution scan",
                source,
            })
        })
    }

    fn ended<'a>(
        &'a self,
        state: ExecState,
        ended_ms: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        let Some(prefix) = super::ended_key(state, 0, "") else {
            return Box::pin(async { Ok(Vec::new()) });
        };
        let end = super::ended_key(state, ended_ms.saturating_add(1), "").unwrap_or_default();
        let tree = self.indexes.clone();
        Box::pin(blocking("ended scan", move || {
            let mut ids = Vec::new();
            for item in tree.range(prefix..end).keys().take(limit) {
                let key = item?;
                ids.push(String::from_utf8_lossy(&key[9..]).into_owned());
            }
            Ok(ids)
        }))
    }

    fn apply<'a>(&'a self, change: &'a Change) -> StoreFuture<'a, ()> {
        Box::pin(self.apply_grouped(change))
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.commit.flush(&self.db))
    }
}

impl CallbackStore for SledStore {
    fn callback<'a>(&'a self, correlation_id: &'a str) -> StoreFuture<'a, Option<CallbackRecord>> {
        let found = self.get(&self.callbacks, correlation_id);
        Box::pin(async move { found })
    }

    fn callbacks_of<'a>(&'a self, execution_id: &'a str) -> StoreFuture<'a, Vec<String>> {
        // An execution has a callback per step attempt that registered
        // one: a few keys, read where they are.
        let prefix = super::callback_index_key(execution_id, "");
        let found = self
            .indexes
            .scan_prefix(&prefix)
            .keys()
            .map(|key| Ok(String::from_utf8_lossy(&key?[prefix.len()..]).into_owned()))
            .collect();
        Box::pin(async move { found })
    }
}

impl SledStore {
    fn due_timers_now(&self, now_ms: u64, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let end = (now_ms.saturating_add(1)).to_be_bytes();
        let mut out = Vec::new();
        for item in self.timers.range(..end.as_slice()).take(limit) {
            let (key, bytes) = item?;
            match decode(&key, &bytes) {
                Ok(timer) => out.push(timer),
                Err(e) => self.quarantine_timer(&key, &bytes, &e)?,
            }
        }
        Ok(out)
    }

    fn next_timer_due_now(&self) -> Result<Option<u64>, StoreError> {
        // The key starts with the due time, so a record that does not
        // decode still says when it is due (and is moved aside then).
        match self.timers.first()? {
            Some((key, bytes)) => match <[u8; 8]>::try_from(key.get(..8).unwrap_or_default()) {
                Ok(due) => Ok(Some(u64::from_be_bytes(due))),
                Err(_) => decode::<Timer>(&key, &bytes).map(|t| Some(t.due_ms)),
            },
            None => Ok(None),
        }
    }
}

impl TimerStore for SledStore {
    fn due_timers(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<Timer>> {
        // A batch of the timer loop: a short range read from the cache.
        let due = self.due_timers_now(now_ms, limit);
        Box::pin(async move { due })
    }

    fn next_timer_due(&self) -> StoreFuture<'_, Option<u64>> {
        let next = self.next_timer_due_now();
        Box::pin(async move { next })
    }

    fn timer_backlog(&self, now_ms: u64) -> StoreFuture<'_, (u64, u64)> {
        // sled keeps no length, so the total is the count every apply
        // keeps beside the timers. What is due changes with the clock, not
        // with a write, so that part is read: the keys start with the due
        // time, and only the due ones are walked (the timer loop's
        // backlog, normally none), off the async workers should it be long.
        let (timers, counts) = (self.timers.clone(), self.counts.clone());
        Box::pin(blocking("timer backlog", move || {
            let pending = count_value(counts.get(TIMER_COUNT_KEY)?.as_deref()).max(0) as u64;
            let end = now_ms.saturating_add(1).to_be_bytes();
            let due = timers.range(..end.as_slice()).keys().count() as u64;
            Ok((pending, due))
        }))
    }
}

impl DeliveryStore for SledStore {
    fn delivery<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Delivery>> {
        let found = self.get(&self.deliveries, key);
        Box::pin(async move { found })
    }

    fn deliveries_of<'a>(&'a self, execution_id: &'a str) -> StoreFuture<'a, Vec<Delivery>> {
        // One execution's few records, adjacent on disk.
        let prefix = format!("{execution_id}/");
        let found = self
            .deliveries
            .scan_prefix(prefix.as_bytes())
            .map(|item| {
                let (key, bytes) = item?;
                decode(&key, &bytes)
            })
            .collect();
        Box::pin(async move { found })
    }
}

impl TokenStore for SledStore {
    fn put_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()> {
        let tokens = self.tokens.clone();
        let (key, bytes) = (token.sha256.clone(), encode(token));
        Box::pin(blocking("token write", move || {
            tokens.insert(key.as_bytes(), bytes)?;
            tokens.flush()?;
            Ok(())
        }))
    }

    fn token<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
        let found = get(&self.tokens, sha256);
        Box::pin(async move { found })
    }

    fn token_count(&self) -> StoreFuture<'_, usize> {
        let tokens = self.tokens.clone();
        Box::pin(blocking("token count", move || Ok(tokens.len())))
    }

    fn tokens(&self) -> StoreFuture<'_, Vec<TokenRecord>> {
        let tokens = self.tokens.clone();
        Box::pin(blocking("token scan", move || {
            tokens
                .iter()
                .map(|item| {
                    let (key, bytes) = item?;
                    decode(&key, &bytes)
                })
                .collect()
        }))
    }

    fn remove_token<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, ()> {
        let tokens = self.tokens.clone();
        let key = sha256.to_owned();
        Box::pin(blocking("token removal", move || {
            tokens.remove(key.as_bytes())?;
            tokens.flush()?;
            Ok(())
        }))
    }

    fn put_first_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, bool> {
        let (tokens, lock) = (self.tokens.clone(), self.token_rules.clone());
        let (key, bytes) = (token.sha256.clone(), encode(token));
        Box::pin(blocking("first token", move || {
            // The data dir is this process's alone: a lock here is the
            // whole store's.
            let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
            if !tokens.is_empty() {
                return Ok(false);
            }
            tokens.insert(key.as_bytes(), bytes)?;
            tokens.flush()?;
            Ok(true)
        }))
    }

    fn remove_token_keeping_an_admin<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, bool> {
        let (tokens, lock) = (self.tokens.clone(), self.token_rules.clone());
        let key = sha256.to_owned();
        Box::pin(blocking("token removal", move || {
            let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
            let mut all = Vec::new();
            for item in tokens.iter() {
                let (k, bytes) = item?;
                all.push(decode::<TokenRecord>(&k, &bytes)?);
            }
            if !crate::store::tokens::keeps_an_admin(&all, &key) {
                return Ok(false);
            }
            tokens.remove(key.as_bytes())?;
            tokens.flush()?;
            Ok(true)
        }))
    }

    fn touch_token<'a>(&'a self, sha256: &'a str, at_ms: u64) -> StoreFuture<'a, ()> {
        // One atomic read-modify-write of that key: a revocation between
        // the read and the write cannot be undone by it.
        let touched = self.tokens.fetch_and_update(sha256.as_bytes(), |old| {
            let old = old?;
            let Ok(mut record) = serde_json::from_slice::<TokenRecord>(old) else {
                return Some(old.to_vec());
            };
            if record.last_used_ms.is_some_and(|t| t >= at_ms) {
                return Some(old.to_vec());
            }
            record.last_used_ms = Some(at_ms);
            Some(encode(&record))
        });
        Box::pin(async move { touched.map(drop).map_err(StoreError::from) })
    }
}

impl ComponentStore for SledStore {
    fn put_component<'a>(&'a self, hash: &'a str, bytes: &'a [u8]) -> StoreFuture<'a, ()> {
        // Written to the page cache only; the plugin ref written after it
        // flushes both.
        let written = match self.components.contains_key(hash) {
            Ok(true) => Ok(()),
            Ok(false) => self.components.insert(hash, bytes).map(drop),
            Err(e) => Err(e),
        }
        .map_err(StoreError::from);
        Box::pin(async move { written })
    }

    fn component<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let found = self
            .components
            .get(hash)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(StoreError::from);
        Box::pin(async move { found })
    }

    fn remove_component<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, ()> {
        let removed = self
            .components
            .remove(hash)
            .map(drop)
            .map_err(StoreError::from);
        Box::pin(async move { removed })
    }

    fn put_plugin_ref<'a>(&'a self, name: &'a str, hash: &'a str) -> StoreFuture<'a, ()> {
        let (db, name, hash) = (self.db.clone(), name.to_owned(), hash.to_owned());
        Box::pin(blocking("plugin write", move || {
            super::plugin_refs::put(&db, &name, &hash)
        }))
    }

    fn plugin_refs(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        let db = self.db.clone();
        Box::pin(blocking("plugin list", move || {
            super::plugin_refs::all(&db)
        }))
    }

    fn plugin_versions<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Vec<String>> {
        let (db, name) = (self.db.clone(), name.to_owned());
        Box::pin(blocking("plugin versions", move || {
            super::plugin_refs::versions(&db, &name)
        }))
    }

    fn remove_plugin_ref<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ()> {
        let (db, name) = (self.db.clone(), name.to_owned());
        Box::pin(blocking("plugin removal", move || {
            super::plugin_refs::remove(&db, &name)
        }))
    }
}

/// One process holds a data dir, so its nodes are that process's.
impl NodeStore for SledStore {
    fn is_shared(&self) -> bool {
        false
    }

    fn heartbeat<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
        self.nodes.heartbeat(node);
        Box::pin(std::future::ready(Ok(())))
    }

    fn leave<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
        self.nodes.leave(node);
        Box::pin(std::future::ready(Ok(())))
    }

    fn lead<'a>(&'a self, chore: Chore, node: &'a str, hold_ms: u64) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self
            .nodes
            .lead(chore, node, hold_ms))))
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

impl SecretStore for SledStore {
    fn node_secret<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Vec<u8>> {
        let (db, key) = (self.db.clone(), format!("secret/{name}"));
        Box::pin(blocking("node secret", move || {
            let meta = db.open_tree("meta")?;
            if let Some(existing) = meta.get(key.as_bytes())? {
                return Ok(existing.to_vec());
            }
            let fresh = rand::random::<[u8; 32]>();
            // Of two racing creators the first wins; both then use its value.
            let _ = meta.compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(&fresh[..]))?;
            meta.flush()?;
            meta.get(key.as_bytes())?
                .map(|v| v.to_vec())
                .ok_or(StoreError::Abandoned("node secret vanished after creation"))
        }))
    }
}

impl StatsStore for SledStore {
    fn count_executions_by_state(&self) -> StoreFuture<'_, Vec<(ExecState, u64)>> {
        // Kept by `apply`: four reads, whatever the number of executions.
        let counts = STATES
            .into_iter()
            .map(|state| {
                let n = self.read(&self.counts, count_key(state))?;
                Ok((state, count_value(n.as_deref()).max(0) as u64))
            })
            .collect();
        Box::pin(async move { counts })
    }

    fn count_executions_by_workflow<'a>(
        &'a self,
        workflow: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<(String, ExecState, u64)>> {
        // Kept by `apply`: a range of the counters, one per workflow and
        // state any execution is in.
        let prefix = super::listing::workflow_counts_prefix(workflow);
        let counts = self
            .counts
            .scan_prefix(prefix)
            .filter_map(|item| match item {
                Err(e) => Some(Err(StoreError::from(e))),
                Ok((key, n)) => super::listing::parse_workflow_count_key(&key)
                    .map(|(w, s)| Ok((w, s, count_value(Some(&n)).max(0) as u64))),
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map(|mut counts| {
                // Keys sort states by their tag; the answer by state order.
                counts.sort();
                counts
            });
        Box::pin(async move { counts })
    }

    fn quarantined_timers(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    fn write_stats(&self) -> WriteStats {
        let (changes, transactions) = {
            let a = self.applier.lock();
            (a.changes, a.transactions)
        };
        let c = self.commit.lock();
        WriteStats {
            changes,
            transactions,
            flush_requests: c.issued,
            disk_flushes: c.disk_flushes,
        }
    }
}
