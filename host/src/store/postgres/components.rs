//! Component bytes by content hash, and the names of uploaded plugins with
//! every version uploaded under each.

use super::PgStore;
use crate::store::{ComponentStore, StoreError, StoreFuture};

impl PgStore {
    /// Names `hash` the current version of plugin `name`, and one of its
    /// versions, at once.
    async fn put_ref(&self, name: &str, hash: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.fail(e))?;
        let sql = "INSERT INTO plugin_versions (name, hash) VALUES ($1, $2)
                   ON CONFLICT (name, hash) DO NOTHING";
        tx.execute(sql, &[&name, &hash])
            .await
            .map_err(|e| self.fail(e))?;
        let sql = "INSERT INTO plugins (name, hash) VALUES ($1, $2)
                   ON CONFLICT (name) DO UPDATE SET hash = excluded.hash";
        tx.execute(sql, &[&name, &hash])
            .await
            .map_err(|e| self.fail(e))?;
        tx.commit().await.map_err(|e| self.fail(e))
    }

    /// Forgets plugin `name` and its list of versions at once.
    async fn remove_ref(&self, name: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.fail(e))?;
        for sql in [
            "DELETE FROM plugins WHERE name = $1",
            "DELETE FROM plugin_versions WHERE name = $1",
        ] {
            tx.execute(sql, &[&name]).await.map_err(|e| self.fail(e))?;
        }
        tx.commit().await.map_err(|e| self.fail(e))
    }
}

impl ComponentStore for PgStore {
    fn put_component<'a>(&'a self, hash: &'a str, bytes: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // The same hash is the same bytes: the first stay.
            let sql = "INSERT INTO components (hash, bytes) VALUES ($1, $2)
                       ON CONFLICT (hash) DO NOTHING";
            self.run(sql, &[&hash, &bytes]).await?;
            Ok(())
        })
    }

    fn component<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let sql = "SELECT bytes FROM components WHERE hash = $1";
            let rows = self.rows(sql, &[&hash]).await?;
            Ok(rows.first().map(|row| row.get(0)))
        })
    }

    fn remove_component<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.run("DELETE FROM components WHERE hash = $1", &[&hash])
                .await?;
            Ok(())
        })
    }

    fn put_plugin_ref<'a>(&'a self, name: &'a str, hash: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.put_ref(name, hash).await?;
            // The other nodes load the new version at once, not at their
            // next poll.
            self.hint("plugin uploaded").await;
            Ok(())
        })
    }

    fn plugin_refs(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        Box::pin(async move {
            let rows = self
                .rows("SELECT name, hash FROM plugins ORDER BY name", &[])
                .await?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }

    fn plugin_versions<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let sql = "SELECT hash FROM plugin_versions WHERE name = $1";
            let rows = self.rows(sql, &[&name]).await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn remove_plugin_ref<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.remove_ref(name).await?;
            self.hint("plugin removed").await;
            Ok(())
        })
    }
}
