//! The names of uploaded plugins (tree `plugins`: name -> current hash)
//! and the versions uploaded under each (tree `plugin-versions`:
//! `name/hash`, so deleting a plugin finds the bytes of every one of
//! them). Blocking: the callers run these on the blocking pool.

use sled::Transactional as _;
use sled::transaction::ConflictableTransactionError;

use super::storage_only;
use crate::store::StoreError;

const PLUGIN_VERSIONS: &str = "plugin-versions";

/// [`ComponentStore::put_plugin_ref`](crate::store::ComponentStore::put_plugin_ref).
pub(super) fn put(db: &sled::Db, name: &str, hash: &str) -> Result<(), StoreError> {
    let versions = db.open_tree(PLUGIN_VERSIONS)?;
    versions.insert(format!("{name}/{hash}").as_bytes(), &[])?;
    let refs = db.open_tree("plugins")?;
    refs.insert(name.as_bytes(), hash.as_bytes())?;
    refs.flush()?;
    Ok(())
}

/// [`ComponentStore::plugin_refs`](crate::store::ComponentStore::plugin_refs).
pub(super) fn all(db: &sled::Db) -> Result<Vec<(String, String)>, StoreError> {
    let refs = db.open_tree("plugins")?;
    refs.iter()
        .map(|item| {
            let (k, v) = item?;
            Ok((
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ))
        })
        .collect()
}

/// [`ComponentStore::plugin_versions`](crate::store::ComponentStore::plugin_versions).
pub(super) fn versions(db: &sled::Db, name: &str) -> Result<Vec<String>, StoreError> {
    let versions = db.open_tree(PLUGIN_VERSIONS)?;
    let prefix = format!("{name}/");
    versions
        .scan_prefix(prefix.as_bytes())
        .map(|item| {
            let (key, _) = item?;
            Ok(String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
        })
        .collect()
}

/// [`ComponentStore::remove_plugin_ref`](crate::store::ComponentStore::remove_plugin_ref).
pub(super) fn remove(db: &sled::Db, name: &str) -> Result<(), StoreError> {
    let refs = db.open_tree("plugins")?;
    let versions = db.open_tree(PLUGIN_VERSIONS)?;
    // A transaction cannot scan: list the version keys first. Only the
    // admin API writes these trees, one plugin name at a time.
    let keys = versions
        .scan_prefix(format!("{name}/").as_bytes())
        .keys()
        .collect::<Result<Vec<_>, _>>()?;
    // One transaction: a crash leaves the plugin whole or gone.
    (&refs, &versions)
        .transaction(|(refs, versions)| {
            refs.remove(name.as_bytes())?;
            for key in &keys {
                versions.remove(key)?;
            }
            Ok::<_, ConflictableTransactionError<std::convert::Infallible>>(())
        })
        .map_err(storage_only)?;
    db.flush()?;
    Ok(())
}
