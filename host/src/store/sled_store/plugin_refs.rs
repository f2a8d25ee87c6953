//! The names of uploaded plugins (tree `plugins`: name -> current hash)
//! and the versions uploaded under each (tree `plugin-versions`:
//! `name/hash`, so deleting a plugin finds the bytes of every one of
//! them).

use sled::Transactional as _;
use sled::transaction::ConflictableTransactionError;

use super::{SledStore, storage_only};
use crate::store::StoreError;

const PLUGIN_VERSIONS: &str = "plugin-versions";

/// [`Store::put_plugin_ref`](crate::store::Store::put_plugin_ref).
pub(super) fn put(store: &SledStore, name: &str, hash: &str) -> Result<(), StoreError> {
    let versions = store.db.open_tree(PLUGIN_VERSIONS)?;
    versions.insert(format!("{name}/{hash}").as_bytes(), &[])?;
    let refs = store.db.open_tree("plugins")?;
    refs.insert(name.as_bytes(), hash.as_bytes())?;
    refs.flush()?;
    Ok(())
}

/// [`Store::plugin_refs`](crate::store::Store::plugin_refs).
pub(super) fn all(store: &SledStore) -> Result<Vec<(String, String)>, StoreError> {
    let refs = store.db.open_tree("plugins")?;
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

/// [`Store::plugin_versions`](crate::store::Store::plugin_versions).
pub(super) fn versions(store: &SledStore, name: &str) -> Result<Vec<String>, StoreError> {
    let versions = store.db.open_tree(PLUGIN_VERSIONS)?;
    let prefix = format!("{name}/");
    versions
        .scan_prefix(prefix.as_bytes())
        .map(|item| {
            let (key, _) = item?;
            Ok(String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
        })
        .collect()
}

/// [`Store::remove_plugin_ref`](crate::store::Store::remove_plugin_ref).
pub(super) fn remove(store: &SledStore, name: &str) -> Result<(), StoreError> {
    let refs = store.db.open_tree("plugins")?;
    let versions = store.db.open_tree(PLUGIN_VERSIONS)?;
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
    store.db.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::{SledStore, Store as _};

    #[test]
    fn every_uploaded_version_is_listed_until_the_name_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.put_plugin_ref("a", "h1").unwrap();
        store.put_plugin_ref("a", "h2").unwrap();
        store.put_plugin_ref("ab", "h3").unwrap();
        let mut versions = store.plugin_versions("a").unwrap();
        versions.sort();
        assert_eq!(versions, ["h1", "h2"], "not those of a name it prefixes");
        assert_eq!(
            store.plugin_refs().unwrap(),
            [("a".into(), "h2".into()), ("ab".into(), "h3".into())]
        );

        store.remove_plugin_ref("a").unwrap();
        assert!(store.plugin_versions("a").unwrap().is_empty());
        assert_eq!(store.plugin_refs().unwrap(), [("ab".into(), "h3".into())]);
        assert_eq!(store.plugin_versions("ab").unwrap(), ["h3"]);
    }
}
