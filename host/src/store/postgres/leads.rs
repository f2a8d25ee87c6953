//! Which node runs each single-runner chore, by PostgreSQL's session
//! advisory locks: the leader of a chore is the node whose connection
//! holds that chore's lock.
//!
//! A session lock lives as long as the connection that took it, so each
//! node takes its locks on a connection of its own, outside the pool (a
//! pooled connection would carry them to whoever used it next). The
//! server lets the lock go when that connection ends, which covers a node
//! that is killed (its socket closes) and one that hangs or is cut off:
//! the connection's `idle_session_timeout` is the leader's hold, and each
//! time the leader asks again it both proves it still holds the lock and
//! starts the timeout anew. A node cut off from the database may go on
//! believing it leads until its next ask fails; the chores' writes are
//! compare-and-swaps, so two leaders for a moment only duplicate work.

use std::collections::{HashMap, HashSet};

use tokio::sync::Mutex;

use super::PgStore;
use super::connect::classify;
use crate::store::{Chore, StoreError};

/// The first half of each chore lock's two-part key ("step" in ASCII).
/// Two-part keys are a space of their own, apart from the one-part keys
/// of the migration and token locks.
const CHORE_LOCKS: i32 = 0x7374_6570;

/// The second half: the chore's own number, fixed once given, since two
/// daemons of different builds must agree on it.
fn key(chore: Chore) -> i32 {
    match chore {
        Chore::Retention => 1,
        Chore::TakeOver => 2,
    }
}

/// Each node's leader connection, by node id (one per daemon; the
/// conformance suite plays several nodes through one store).
#[derive(Default)]
pub(super) struct Leads {
    nodes: Mutex<HashMap<String, Session>>,
}

/// A connection that holds locks, and which chores' locks it holds.
struct Session {
    client: tokio_postgres::Client,
    held: HashSet<Chore>,
    /// Whether the server knows `idle_session_timeout` (PostgreSQL 14 and
    /// later). On an older one a hung leader keeps its locks until its
    /// connection ends.
    timeout: bool,
    /// The task that drives the connection, stopped with the session.
    driver: tokio::task::AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl PgStore {
    /// [`NodeStore::lead`](crate::store::NodeStore::lead).
    pub(super) async fn lead(
        &self,
        chore: Chore,
        node: &str,
        hold_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut nodes = self.leads.nodes.lock().await;
        // A session that broke took its locks with it; the second try is
        // on a fresh connection, and its failure is the answer.
        for fresh in [false, true] {
            if nodes.get(node).is_none_or(|s| s.client.is_closed()) {
                nodes.insert(node.to_owned(), self.session().await?);
            }
            let session = nodes.get_mut(node).expect("inserted above");
            match ask(session, chore, hold_ms).await {
                Ok(leads) => return Ok(leads),
                Err(e) => {
                    nodes.remove(node);
                    if fresh {
                        return Err(classify(e, &self.target));
                    }
                }
            }
        }
        unreachable!("the second try returns")
    }

    /// Lets go of every lock `node` holds, at once rather than when the
    /// server notices its connection closed.
    pub(super) async fn resign(&self, node: &str) {
        let Some(session) = self.leads.nodes.lock().await.remove(node) else {
            return;
        };
        if let Err(e) = session
            .client
            .batch_execute("SELECT pg_advisory_unlock_all()")
            .await
        {
            tracing::debug!(node, error = %e, "could not let go of the chore locks; closing their connection does");
        }
    }

    async fn session(&self) -> Result<Session, StoreError> {
        let (client, connection) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| classify(e, &self.target))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "the chore lock connection ended");
            }
        })
        .abort_handle();
        let version: String = client
            .query_one("SHOW server_version_num", &[])
            .await
            .map_err(|e| classify(e, &self.target))?
            .get(0);
        let timeout = version.parse::<u32>().is_ok_and(|v| v >= 140_000);
        if !timeout {
            tracing::warn!(database = %self.target, server_version_num = %version, "PostgreSQL before 14 has no idle_session_timeout: a chore's leader that hangs keeps its lead until its connection ends");
        }
        Ok(Session {
            client,
            held: HashSet::new(),
            timeout,
            driver,
        })
    }
}

/// One round trip: sets the hold as the session's idle timeout (which
/// the query itself starts anew) and takes the chore's lock unless this
/// session holds it already (a session lock taken twice would need two
/// unlocks).
async fn ask(
    session: &mut Session,
    chore: Chore,
    hold_ms: u64,
) -> Result<bool, tokio_postgres::Error> {
    // The setting's unit is milliseconds and its range an int4's.
    let hold = hold_ms.clamp(1, i32::MAX as u64).to_string();
    let set = if session.timeout {
        "set_config('idle_session_timeout', $1, false)"
    } else {
        "$1::text"
    };
    if session.held.contains(&chore) {
        session
            .client
            .query_one(&format!("SELECT {set}"), &[&hold])
            .await?;
        return Ok(true);
    }
    let sql = format!("SELECT {set}, pg_try_advisory_lock($2, $3)");
    let row = session
        .client
        .query_one(&sql, &[&hold, &CHORE_LOCKS, &key(chore)])
        .await?;
    let taken: bool = row.get(1);
    if taken {
        session.held.insert(chore);
    }
    Ok(taken)
}
