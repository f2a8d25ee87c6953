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

/// The advisory lock the token writes that check a rule over every token
/// take ("tokens" in ASCII): every daemon on the database waits on the
/// same one.
const TOKEN_RULES_LOCK: i64 = 0x746f_6b65_6e73;

impl PgStore {
    /// Runs `decide` on every token under [`TOKEN_RULES_LOCK`], in one
    /// transaction that also makes the write `decide` asks for (`Some`:
    /// the statement and its parameters); its answer.
    async fn under_token_rules<'w>(
        &self,
        decide: impl FnOnce(&[TokenRecord]) -> (bool, Option<TokenWrite<'w>>),
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.fail(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&TOKEN_RULES_LOCK])
            .await
            .map_err(|e| self.fail(e))?;
        let rows = tx
            .query("SELECT sha256, record FROM tokens", &[])
            .await
            .map_err(|e| self.fail(e))?;
        let all = rows
            .iter()
            .map(|row| decode(row, 1, &row.get::<_, String>(0)))
            .collect::<Result<Vec<TokenRecord>, _>>()?;
        let (answer, write) = decide(&all);
        if let Some(write) = write {
            let result = match write {
                TokenWrite::Insert(t) => {
                    let sql = "INSERT INTO tokens (sha256, record) VALUES ($1, $2)";
                    tx.execute(sql, &[&t.sha256, &Json::of(t)]).await
                }
                TokenWrite::Delete(sha256) => {
                    tx.execute("DELETE FROM tokens WHERE sha256 = $1", &[&sha256])
                        .await
                }
            };
            result.map_err(|e| self.fail(e))?;
        }
        tx.commit().await.map_err(|e| self.fail(e))?;
        Ok(answer)
    }
}

/// A write a token rule allows.
enum TokenWrite<'a> {
    Insert(&'a TokenRecord),
    Delete(&'a str),
}

impl TokenStore for PgStore {
    fn put_first_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, bool> {
        Box::pin(self.under_token_rules(move |all| {
            let first = all.is_empty();
            (first, first.then_some(TokenWrite::Insert(token)))
        }))
    }

    fn remove_token_keeping_an_admin<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.under_token_rules(move |all| {
            let removable = crate::store::tokens::keeps_an_admin(all, sha256);
            (removable, removable.then_some(TokenWrite::Delete(sha256)))
        }))
    }

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
