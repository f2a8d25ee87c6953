//! Secrets every node shares, such as the key callback tickets are
//! derived from: a callback URL made by one node must be accepted by any
//! other, so the key is created once, by whichever node asks first, and
//! read by all.

use super::PgStore;
use crate::store::{SecretStore, StoreFuture};

impl SecretStore for PgStore {
    fn node_secret<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Vec<u8>> {
        Box::pin(async move {
            // Of nodes racing to create it the first insert wins; every
            // one then reads the winner's value. Committed (and so
            // durable) before it is read back.
            let fresh = rand::random::<[u8; 32]>().to_vec();
            let sql = "INSERT INTO secrets (name, value) VALUES ($1, $2)
                       ON CONFLICT (name) DO NOTHING";
            self.run(sql, &[&name, &fresh]).await?;
            let row = self
                .row("SELECT value FROM secrets WHERE name = $1", &[&name])
                .await?;
            Ok(row.get(0))
        })
    }
}
