//! Records are kept whole, as the JSON text serde writes, in columns of
//! type `json` (beside the few columns that are compared or indexed).
//!
//! `json`, not `jsonb`: `json` keeps the exact text, while `jsonb` refuses
//! a string holding `\u0000` (which a partner's callback body or a
//! plugin's error text may well contain) and rewrites numbers and key
//! order, so a record would not always come back as it was written. An
//! operator can still query the records with the JSON operators.
//!
//! On the wire both directions are the text itself (the binary format of
//! `json` is its text), so no `serde_json::Value` is built in between.

use bytes::BytesMut;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::store::StoreError;

/// A record's JSON text, as a statement parameter.
#[derive(Debug)]
pub(super) struct Json(Vec<u8>);

impl Json {
    /// `value` as JSON.
    pub(super) fn of<T: serde::Serialize>(value: &T) -> Self {
        Self(serde_json::to_vec(value).expect("records always serialise"))
    }
}

impl ToSql for Json {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON
    }

    to_sql_checked!();
}

/// A `json` column's text as it came from the server, borrowed from the
/// row.
struct JsonText<'a>(&'a [u8]);

impl<'a> FromSql<'a> for JsonText<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(raw))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON
    }
}

/// Decodes the `json` column `column` of `row`, the record stored under
/// `key` (named in the error should it not decode).
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    row: &Row,
    column: usize,
    key: &str,
) -> Result<T, StoreError> {
    let JsonText(text) = row.try_get(column).map_err(StoreError::Postgres)?;
    serde_json::from_slice(text).map_err(|source| StoreError::Corrupt {
        key: key.to_owned(),
        source,
    })
}
