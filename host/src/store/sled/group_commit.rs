//! Group commit: concurrent flushes of the store share disk flushes, so a
//! burst of acknowledged transitions costs a couple of fsyncs, not one
//! each.

use std::sync::Mutex;

use super::StoreError;

/// Group commit: concurrent
/// [`ExecutionStore::flush`](crate::store::ExecutionStore::flush) callers
/// share disk flushes.
///
/// Each caller takes a ticket after its writes are applied. One caller at a
/// time leads: it notes the newest ticket issued, flushes sled (which makes
/// every write applied before the flush started durable), and publishes
/// that ticket as flushed. Callers that arrive meanwhile wait; when the
/// flush ends, those it covered return, and one of the rest leads the next
/// flush for all of them. So N overlapping requests cost about two fsyncs,
/// not N, and nobody returns before a flush that began after its writes.
#[derive(Debug)]
pub(super) struct GroupCommit {
    state: Mutex<CommitState>,
    /// Bumped whenever a flush ends (or its leader gives up).
    done: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
pub(super) struct CommitState {
    /// Tickets handed out so far.
    pub(super) issued: u64,
    /// Every ticket up to this one is durable.
    flushed: u64,
    /// A leader is flushing now.
    flushing: bool,
    /// Disk flushes done, for the benchmarks and tests.
    pub(super) disk_flushes: u64,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            done: tokio::sync::watch::channel(0).0,
        }
    }
}

/// Clears `flushing` if a leader's future is dropped mid-flush, so the
/// waiters elect another instead of waiting forever.
struct LeaderGuard<'a> {
    commit: &'a GroupCommit,
    armed: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.commit.lock().flushing = false;
            self.commit.done.send_modify(|n| *n += 1);
        }
    }
}

impl GroupCommit {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) async fn flush(&self, db: &sled::Db) -> Result<(), StoreError> {
        let mut done = self.done.subscribe();
        let ticket = {
            let mut s = self.lock();
            s.issued += 1;
            s.issued
        };
        loop {
            let lead = {
                let mut s = self.lock();
                if s.flushed >= ticket {
                    return Ok(());
                }
                if s.flushing {
                    None
                } else {
                    s.flushing = true;
                    Some(())
                }
            };
            let Some(()) = lead else {
                // Marks the current value seen; a change after the check
                // above wakes us.
                done.borrow_and_update();
                if self.lock().flushing && done.changed().await.is_err() {
                    return Err(StoreError::Abandoned("group commit closed"));
                }
                continue;
            };
            let mut guard = LeaderGuard {
                commit: self,
                armed: true,
            };
            // Let the other ready tasks of this thread finish their writes
            // and take tickets first, so this flush covers them too.
            tokio::task::yield_now().await;
            let covers = self.lock().issued;
            let db = db.clone();
            let result = tokio::task::spawn_blocking(move || db.flush()).await;
            guard.armed = false;
            let result = match result {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(StoreError::Sled(e)),
                Err(source) => Err(StoreError::Task {
                    what: "flush",
                    source,
                }),
            };
            {
                let mut s = self.lock();
                s.flushing = false;
                s.disk_flushes += 1;
                if result.is_ok() {
                    s.flushed = s.flushed.max(covers);
                }
            }
            self.done.send_modify(|n| *n += 1);
            // On failure the others try a flush of their own and see the
            // error themselves.
            return result;
        }
    }
}
