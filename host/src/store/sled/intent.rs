//! Write-ahead intents: how group apply makes a batch of changes atomic
//! without a sled transaction.
//!
//! sled 0.34 seals its IO buffer before and after every transaction and
//! every `apply_batch` (`PageCache::pin_log`), and writes each sealed
//! buffer back with a synchronous `sync_file_range`: about two disk
//! write-backs per transaction, whether the caller asked for durability or
//! not. At one cycle at a time they were four fifths of the bytes a cycle
//! wrote and a fifth of its latency (`docs/performance.md`, section 7). A
//! single insert seals nothing. So a batch is worked out in memory first
//! ([`Staged`]: every version check reads through it, seeing the batch's
//! own writes), then written as one record under [`INTENT_KEY`] in the
//! `intents` tree, then key by key, and then the intent is removed.
//!
//! sled recovers a prefix of its log, and the intent is logged before its
//! keys and removed after them. So after a crash either the intent is gone
//! and every key of its batch is there, or it is there and [`replay`]
//! writes its keys again (each holds the final value of its key, so
//! writing one twice is harmless), or nothing of the batch survived — and
//! then none of it was acknowledged, since acknowledging waits for a flush
//! of everything logged before it.
//!
//! Readers are kept off a half-written batch by [`Visibility`], as sled's
//! transactions kept them off theirs with a lock of sled's own: the keys of
//! a batch are written under its write lock, and the store's point reads
//! of these trees take its read lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::SledStore;
use crate::store::StoreError;

/// A batch's writes: the final value of every key it touches (`None`:
/// removed), by tree.
type Writes = BTreeMap<(TreeId, Vec<u8>), Option<sled::IVec>>;

/// The one key of the `intents` tree: one batch is written at a time
/// (group apply has one leader), so there is at most one intent.
pub(super) const INTENT_KEY: &[u8] = b"batch";

/// The trees a batch writes, by the byte that names each in an intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TreeId {
    Executions = 0,
    Callbacks = 1,
    Timers = 2,
    Deliveries = 3,
    Counts = 4,
    Indexes = 5,
}

impl TreeId {
    const ALL: [TreeId; 6] = [
        TreeId::Executions,
        TreeId::Callbacks,
        TreeId::Timers,
        TreeId::Deliveries,
        TreeId::Counts,
        TreeId::Indexes,
    ];

    fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.get(usize::from(b)).copied()
    }
}

impl SledStore {
    pub(super) fn tree(&self, id: TreeId) -> &sled::Tree {
        match id {
            TreeId::Executions => &self.executions,
            TreeId::Callbacks => &self.callbacks,
            TreeId::Timers => &self.timers,
            TreeId::Deliveries => &self.deliveries,
            TreeId::Counts => &self.counts,
            TreeId::Indexes => &self.indexes,
        }
    }
}

/// A batch's writes, before they are written: the final value of every
/// key it touches (`None`: removed), by tree.
pub(super) struct Staged<'a> {
    store: &'a SledStore,
    writes: std::cell::RefCell<Writes>,
}

impl<'a> Staged<'a> {
    pub(super) fn new(store: &'a SledStore) -> Self {
        Self {
            store,
            writes: Default::default(),
        }
    }

    /// One tree of the batch, read and written as a transaction's would be.
    pub(super) fn tree(&self, id: TreeId) -> StagedTree<'_, 'a> {
        StagedTree { staged: self, id }
    }

    /// The value of `key` with this batch's writes so far. The trees are
    /// read without [`Visibility`]: only the one writing batches writes
    /// them.
    fn get(&self, id: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, sled::Error> {
        if let Some(staged) = self.writes.borrow().get(&(id, key.to_vec())) {
            return Ok(staged.clone());
        }
        self.store.tree(id).get(key)
    }

    fn set(&self, id: TreeId, key: &[u8], value: Option<sled::IVec>) {
        self.writes.borrow_mut().insert((id, key.to_vec()), value);
    }

    /// Writes the batch: its intent, then its keys under the write lock of
    /// [`Visibility`], then the intent's removal. Should any of it fail,
    /// the store writes nothing more until it is opened again (and replays
    /// the intent): a later batch written over a half-written one would be
    /// undone by that replay.
    pub(super) fn write(self, gate: &mut Gate) -> Result<(), StoreError> {
        let store = self.store;
        if store.visibility.halted.load(Ordering::Acquire) {
            return Err(StoreError::Halted);
        }
        let writes = self.writes.into_inner();
        if writes.is_empty() {
            return Ok(());
        }
        let written = (|| {
            store.intents.insert(INTENT_KEY, gate.intent(&writes)?)?;
            #[cfg(test)]
            if store.visibility.crash_after_intent.load(Ordering::Acquire) {
                return Err(sled::Error::Io(std::io::Error::other(
                    "crashed (a test's) after the intent",
                )));
            }
            {
                let _hidden = store
                    .visibility
                    .lock
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                write_keys(store, &writes)?;
            }
            store.intents.remove(INTENT_KEY)?;
            Ok::<_, sled::Error>(())
        })();
        written.map_err(|e| {
            store.visibility.halted.store(true, Ordering::Release);
            tracing::error!(error = %e, "a batch of changes could not be written whole; the store writes nothing more until the daemon is restarted, which finishes the batch");
            StoreError::Sled(e)
        })
    }
}

fn write_keys(store: &SledStore, writes: &Writes) -> Result<(), sled::Error> {
    for ((id, key), value) in writes {
        let tree = store.tree(*id);
        match value {
            Some(v) => drop(tree.insert(key.as_slice(), v.clone())?),
            None => drop(tree.remove(key.as_slice())?),
        }
    }
    Ok(())
}

/// A tree of a [`Staged`] batch: the calls of sled's `TransactionalTree`
/// that group apply uses.
pub(super) struct StagedTree<'s, 'a> {
    staged: &'s Staged<'a>,
    id: TreeId,
}

impl StagedTree<'_, '_> {
    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<sled::IVec>, sled::Error> {
        self.staged.get(self.id, key.as_ref())
    }

    /// Stages `value` under `key`. Nothing is read: most writes of a batch
    /// (index keys, counters) need no previous value, and a read is a
    /// walk down sled's tree as costly as the write itself.
    pub(super) fn insert(&self, key: impl AsRef<[u8]>, value: impl Into<sled::IVec>) {
        self.staged.set(self.id, key.as_ref(), Some(value.into()));
    }

    /// Stages the removal of `key`, reading nothing.
    pub(super) fn remove(&self, key: impl AsRef<[u8]>) {
        self.staged.set(self.id, key.as_ref(), None);
    }

    /// [`Self::insert`], telling what `key` held before.
    pub(super) fn replace(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<sled::IVec>,
    ) -> Result<Option<sled::IVec>, sled::Error> {
        let before = self.get(key.as_ref())?;
        self.insert(key, value);
        Ok(before)
    }

    /// [`Self::remove`], telling what `key` held before.
    pub(super) fn take(&self, key: impl AsRef<[u8]>) -> Result<Option<sled::IVec>, sled::Error> {
        let before = self.get(key.as_ref())?;
        self.remove(key);
        Ok(before)
    }
}

/// Keeps the store's readers off a batch being written, and its writer
/// off the store once a batch could not be written whole.
#[derive(Default)]
pub(super) struct Visibility {
    lock: std::sync::RwLock<()>,
    halted: AtomicBool,
    /// Stops a batch right after its intent is logged, as a crash would.
    #[cfg(test)]
    pub(super) crash_after_intent: AtomicBool,
}

impl Visibility {
    /// Held for a point read of a tree batches write.
    pub(super) fn read(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.lock.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// An intent's bytes: the number of writes (big-endian u32), then per
/// write the tree's byte, the key's length (big-endian u32) and the key,
/// then `0` for a removal or `1`, the value's length and the value.
fn encode(writes: &Writes) -> Vec<u8> {
    let size: usize = writes
        .iter()
        .map(|((_, k), v)| 10 + k.len() + v.as_ref().map_or(0, |v| v.len()))
        .sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(writes.len() as u32).to_be_bytes());
    for ((id, key), value) in writes {
        out.push(*id as u8);
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        match value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

/// The first byte of an intent: its writes as they are ...
const PLAIN: u8 = 0;
/// ... or compressed with zstd.
const ZSTD: u8 = 1;

/// Intents from this size on are compressed. A batch of many changes
/// (under load) is mostly JSON records much alike, written to disk in full
/// beside the records themselves: compressed, it adds a fraction of their
/// bytes instead of as many again. A lone change's intent is a few KB,
/// not worth the time.
const COMPRESS_FROM: usize = 8 * 1024;

/// zstd at its fastest level.
const ZSTD_LEVEL: i32 = 1;

/// What the batch writer keeps from one batch to the next, behind the
/// store's write gate: zstd's context, costly to make for each intent.
#[derive(Default)]
pub(super) struct Gate {
    compressor: Option<zstd::bulk::Compressor<'static>>,
}

impl Gate {
    /// The intent of `writes`, as stored.
    fn intent(&mut self, writes: &Writes) -> Result<Vec<u8>, sled::Error> {
        let plain = encode(writes);
        if plain.len() < COMPRESS_FROM {
            return Ok([&[PLAIN], plain.as_slice()].concat());
        }
        let compressor = match &mut self.compressor {
            Some(c) => c,
            none => none.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(sled::Error::Io)?),
        };
        let body = compressor.compress(&plain).map_err(sled::Error::Io)?;
        Ok([&[ZSTD], body.as_slice()].concat())
    }
}

/// The writes of a stored intent; `None` if its bytes are not one.
fn read_intent(bytes: &[u8]) -> Option<Writes> {
    match bytes.split_first()? {
        (&PLAIN, plain) => decode(plain),
        (&ZSTD, compressed) => decode(&zstd::stream::decode_all(compressed).ok()?),
        _ => None,
    }
}

/// The writes of an intent; `None` if its bytes are not one.
fn decode(mut bytes: &[u8]) -> Option<Writes> {
    fn take<'b>(bytes: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    fn len(bytes: &mut &[u8]) -> Option<usize> {
        let b = take(bytes, 4)?;
        usize::try_from(u32::from_be_bytes(b.try_into().ok()?)).ok()
    }
    let mut writes = Writes::new();
    let count = len(&mut bytes)?;
    for _ in 0..count {
        let id = TreeId::from_byte(take(&mut bytes, 1)?[0])?;
        let n = len(&mut bytes)?;
        let key = take(&mut bytes, n)?.to_vec();
        let value = match take(&mut bytes, 1)?[0] {
            0 => None,
            1 => {
                let n = len(&mut bytes)?;
                Some(sled::IVec::from(take(&mut bytes, n)?))
            }
            _ => return None,
        };
        writes.insert((id, key), value);
    }
    (bytes.is_empty() && writes.len() == count).then_some(writes)
}

/// Finishes the batch a crash interrupted, if any: writes its keys again
/// and removes its intent. Called at open, before anything reads the
/// trees. Tells whether there was one.
pub(super) fn replay(store: &SledStore) -> Result<bool, StoreError> {
    let Some(bytes) = store.intents.get(INTENT_KEY)? else {
        return Ok(false);
    };
    let writes = read_intent(&bytes).ok_or(StoreError::BadIntent { len: bytes.len() })?;
    write_keys(store, &writes)?;
    store.intents.remove(INTENT_KEY)?;
    store.db.flush()?;
    tracing::warn!(
        keys = writes.len(),
        "finished a batch of changes that the last run had logged but not written whole (it stopped mid-write)"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExecState, TimerKind, Waiting};
    use crate::store::conformance::{callback, execution};
    use crate::store::{
        CallbackStore as _, Change, ExecutionFilter, ExecutionStore as _, StatsStore as _,
        TimerStore as _,
    };

    /// A suspension: the execution `e` at version 2, its callback record
    /// and its timeout timer.
    fn suspension() -> Change {
        let mut exec = execution("e", 2);
        exec.state = ExecState::Suspended;
        exec.waiting = Some(Waiting {
            correlation_id: Some("c".into()),
            state: Vec::new(),
            due_ms: 50,
        });
        Change {
            execution: Some(exec),
            callbacks: vec![callback("c", 1)],
            add_timers: vec![crate::model::Timer {
                due_ms: 50,
                execution_id: "e".into(),
                kind: TimerKind::CallbackTimeout,
            }],
            ..Default::default()
        }
    }

    async fn suspended_ids(store: &SledStore) -> Vec<String> {
        let filter = ExecutionFilter {
            state: Some(ExecState::Suspended),
            ..Default::default()
        };
        let listed = store.executions(&filter).await.unwrap();
        listed.into_iter().map(|e| e.id).collect()
    }

    /// A batch stopped after its intent, as by a crash, is invisible to
    /// readers, stops every later write, and is finished whole when the
    /// data dir is opened again: the record, the callback, the timer, the
    /// counts and the listing index all at once.
    #[tokio::test]
    async fn a_batch_cut_off_after_its_intent_is_finished_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let start = Change {
                execution: Some(execution("e", 1)),
                ..Default::default()
            };
            store.apply(&start).await.unwrap();
            store
                .visibility
                .crash_after_intent
                .store(true, Ordering::Release);
            let cut = store.apply(&suspension()).await.unwrap_err();
            assert!(matches!(cut, StoreError::Sled(_)), "{cut:?}");
            assert_eq!(store.execution("e").await.unwrap().unwrap().version, 1);
            assert!(store.callback("c").await.unwrap().is_none());
            // Nothing more is written over the half-written batch.
            store
                .visibility
                .crash_after_intent
                .store(false, Ordering::Release);
            let later = Change {
                execution: Some(execution("f", 1)),
                ..Default::default()
            };
            let refused = store.apply(&later).await.unwrap_err();
            assert!(matches!(refused, StoreError::Halted), "{refused:?}");
            assert!(store.execution("f").await.unwrap().is_none());
            store.flush().await.unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let exec = store.execution("e").await.unwrap().unwrap();
        assert_eq!((exec.version, exec.state), (2, ExecState::Suspended));
        assert_eq!(store.callback("c").await.unwrap().unwrap().version, 1);
        assert_eq!(store.due_timers(100, 10).await.unwrap().len(), 1);
        let counts = store.count_executions_by_state().await.unwrap();
        assert!(counts.contains(&(ExecState::Suspended, 1)), "{counts:?}");
        assert!(counts.contains(&(ExecState::Running, 0)), "{counts:?}");
        assert_eq!(suspended_ids(&store).await, ["e"]);
        assert!(
            store.intents.is_empty(),
            "the intent is removed once replayed"
        );
        assert!(store.execution("f").await.unwrap().is_none());
        // And the store writes again.
        let mut next = execution("e", 3);
        next.state = ExecState::Completed;
        store
            .apply(&Change {
                execution: Some(next),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// An intent that cannot be decoded stops the open with an error that
    /// says what it is, and is left for the operator.
    #[test]
    fn an_undecodable_intent_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .intents
                .insert(INTENT_KEY, b"garbage".as_slice())
                .unwrap();
            store.db.flush().unwrap();
        }
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::BadIntent { len: 7 }), "{err:?}");
        assert!(err.to_string().contains("intents"), "{err}");
    }

    #[test]
    fn an_intent_decodes_to_the_writes_it_was_made_of() {
        let mut writes = Writes::new();
        writes.insert((TreeId::Executions, b"e1".to_vec()), Some(b"{}".into()));
        writes.insert((TreeId::Indexes, b"k/e1/c".to_vec()), Some(b"".into()));
        writes.insert((TreeId::Timers, vec![0, 1, 2]), None);
        let bytes = encode(&writes);
        assert_eq!(decode(&bytes), Some(writes));
        // Cut anywhere, longer, or with a tree it does not know, it is
        // refused: never read as fewer writes than it holds.
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode(&[bytes.as_slice(), b"x"].concat()), None);
        let mut unknown = bytes.clone();
        unknown[4] = 9;
        assert_eq!(decode(&unknown), None);
    }

    /// A small intent is stored as it is; a large one (a batch under load)
    /// compressed, and both read back as the writes they hold.
    #[test]
    fn a_large_intent_is_compressed_and_reads_back_whole() {
        let mut gate = Gate::default();
        let mut small = Writes::new();
        small.insert((TreeId::Executions, b"e1".to_vec()), Some(b"{}".into()));
        let stored = gate.intent(&small).unwrap();
        assert_eq!(stored[0], PLAIN);
        assert_eq!(read_intent(&stored), Some(small));

        let mut large = Writes::new();
        for i in 0..100 {
            let record = format!(r#"{{"id":"{i:036}","state":"suspended","steps":[]}}"#);
            large.insert(
                (TreeId::Executions, format!("{i:036}").into_bytes()),
                Some(record.into_bytes().into()),
            );
            large.insert((TreeId::Timers, format!("t{i}").into_bytes()), None);
        }
        let plain = encode(&large).len();
        assert!(plain >= COMPRESS_FROM, "{plain}");
        // Twice: the second reuses the first one's context.
        for _ in 0..2 {
            let stored = gate.intent(&large).unwrap();
            assert_eq!(stored[0], ZSTD);
            assert!(stored.len() < plain / 2, "{} of {plain}", stored.len());
            assert_eq!(read_intent(&stored).as_ref(), Some(&large));
        }
        assert_eq!(read_intent(&[2, 0, 0, 0, 0]), None, "an unknown first byte");
    }
}
