//! API token records by the hash of the token. Each write commits before
//! it returns, so a revoked token is refused by every node from then on.

use super::PgStore;
use super::json::{Json, decode};
use crate::model::TokenRecord;
use crate::store::{StoreError, StoreFuture, TokenStore};

impl PgStore {
    /// Records a use at `at_ms` if it is later than the one recorded: a
    /// read and a write of the locked row, so a revocation cannot slip in
    /// between and be undone, and of two nodes recording uses the later
    /// use stays.
    async fn touch(&self, sha256: &str, at_ms: u64) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.fail(e))?;
        let sql = "SELECT record FROM tokens WHERE sha256 = $1 FOR UPDATE";
        let Some(row) = tx
            .query_opt(sql, &[&sha256])
            .await
            .map_err(|e| self.fail(e))?
        else {
            // Revoked (or never there): nothing to record.
            return Ok(());
        };
        // A record this build cannot read is left as it is, like sled does.
        let Ok(mut record) = decode::<TokenRecord>(&row, 0, sha256) else {
            return Ok(());
        };
        if record.last_used_ms.is_some_and(|t| t >= at_ms) {
            return Ok(());
        }
        record.last_used_ms = Some(at_ms);
        let sql = "UPDATE tokens SET record = $2 WHERE sha256 = $1";
        tx.execute(sql, &[&sha256, &Json::of(&record)])
            .await
            .map_err(|e| self.fail(e))?;
        tx.commit().await.map_err(|e| self.fail(e))
    }
}

impl TokenStore for PgStore {
    fn put_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO tokens (sha256, record) VALUES ($1, $2)
                       ON CONFLICT (sha256) DO UPDATE SET record = excluded.record";
            self.run(sql, &[&token.sha256, &Json::of(token)]).await?;
            Ok(())
        })
    }

    fn token<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
        Box::pin(async move {
            let sql = "SELECT record FROM tokens WHERE sha256 = $1";
            let rows = self.rows(sql, &[&sha256]).await?;
            rows.first().map(|row| decode(row, 0, sha256)).transpose()
        })
    }

    fn token_count(&self) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let row = self.row("SELECT count(*) FROM tokens", &[]).await?;
            Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
    }

    fn tokens(&self) -> StoreFuture<'_, Vec<TokenRecord>> {
        Box::pin(async move {
            let rows = self.rows("SELECT sha256, record FROM tokens", &[]).await?;
            rows.iter()
                .map(|row| decode(row, 1, &row.get::<_, String>(0)))
                .collect()
        })
    }

    fn remove_token<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.run("DELETE FROM tokens WHERE sha256 = $1", &[&sha256])
                .await?;
            Ok(())
        })
    }

    fn touch_token<'a>(&'a self, sha256: &'a str, at_ms: u64) -> StoreFuture<'a, ()> {
        Box::pin(self.touch(sha256, at_ms))
    }
}
