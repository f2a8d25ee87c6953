//! LISTEN/NOTIFY between the daemons on one database, as a hint only: a
//! node that uploads or removes a plugin, or leaves, says so on the
//! `stephost_changes` channel, and the others look at once instead of at
//! their next poll. Polling stays the truth: a hint lost to a broken
//! connection (or to a transaction-pooling proxy, which does not pass
//! LISTEN on) only makes a node wait for its poll, as it did without one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

use super::PgStore;

/// The channel every node listens and notifies on.
const CHANNEL: &str = "stephost_changes";

/// How long the listener waits before connecting again after its
/// connection failed.
const RECONNECT: Duration = Duration::from_secs(1);

/// This store's side of the channel: the hints that arrived, and the task
/// that listens, started by the first wait and stopped with the store.
#[derive(Default)]
pub(super) struct Hints {
    arrived: Arc<Notify>,
    listener: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Hints {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get() {
            task.abort();
        }
    }
}

impl PgStore {
    /// Completes when another node (or this one) hints at a change.
    pub(super) async fn hinted(&self) {
        self.hints.listener.get_or_init(|| {
            let (config, target, arrived) = (
                self.config.clone(),
                self.target.clone(),
                self.hints.arrived.clone(),
            );
            tokio::spawn(listen(config, target, arrived)).abort_handle()
        });
        self.hints.arrived.notified().await;
    }

    /// Tells every node something changed (`what`: for the log); a
    /// failure is only logged, as the others' polls will see it anyway.
    pub(super) async fn hint(&self, what: &str) {
        let sql = "SELECT pg_notify($1, $2)";
        if let Err(e) = self.rows(sql, &[&CHANNEL, &what]).await {
            tracing::debug!(error = %e, what, "could not hint the other nodes; they see it at their next poll");
        }
    }
}

/// Listens on [`CHANNEL`] on a connection of its own (a pooled one would
/// be handed to others), reconnecting after a failure, for as long as the
/// store lives.
async fn listen(config: Arc<tokio_postgres::Config>, target: Arc<str>, arrived: Arc<Notify>) {
    loop {
        match listen_once(&config, &arrived).await {
            Ok(()) => {
                tracing::debug!(database = %target, "the hint connection closed; listening again")
            }
            Err(e) => {
                tracing::debug!(database = %target, error = %e, "the hint connection failed; polling covers it, listening again")
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    arrived: &Arc<Notify>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let arrived = arrived.clone();
    // The connection's messages are read by this task while the client
    // asks to listen; notifications come through them.
    let messages = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(_) = message? {
                // A permit is kept when nobody waits: a hint that arrives
                // while the node is looking is not lost.
                arrived.notify_one();
            }
        }
        Ok(())
    });
    let guard = AbortOnDrop(messages.abort_handle());
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    let ended = messages.await;
    drop(guard);
    drop(client);
    ended.unwrap_or(Ok(()))
}

/// Stops the message task when the listener is dropped (the store went).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
