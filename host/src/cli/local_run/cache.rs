//! The per-user compiled-component cache of `stephost run`.
//!
//! `run` starts a throw-away daemon on a temporary data dir, whose own
//! cache would vanish with it: a Python or JavaScript component, tens of
//! megabytes of interpreter, would be compiled afresh (seconds) on every
//! run. So the throw-away daemon's `compiled_cache_dir` is a directory of
//! the user's instead (`$XDG_CACHE_HOME/stephost`, else
//! `~/.cache/stephost`), and the daemon's own `ComponentCache` serves every
//! later run: the same keys (content hash and engine settings), the same
//! digest check and recompile of a bad entry. This module only finds that
//! directory and keeps it from growing without bound, since every rebuild
//! of a plugin adds an entry: each run marks the entries it used, then
//! drops the least recently used ones beyond [`KEEP_BYTES`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What the cache may hold before old entries go: about twenty compiled
/// Python components (46 MB each), or hundreds of Rust ones.
pub(super) const KEEP_BYTES: u64 = 1 << 30;

/// A temporary file the cache left by a crash mid-write is this old
/// before it is removed (a younger one may be another run's, in flight).
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// The per-user cache directory, if the environment names a home for it.
pub(super) fn user_dir() -> Option<PathBuf> {
    dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn dir_from(xdg: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    // The XDG base directory spec: a relative path is invalid, ignore it.
    let absolute = |value: OsString| Some(PathBuf::from(value)).filter(|p| p.is_absolute());
    let base = xdg
        .and_then(absolute)
        .or_else(|| home.and_then(absolute).map(|home| home.join(".cache")))?;
    Some(base.join("stephost"))
}

/// A compiled entry is `HASH-COMPAT.cwasm`, its digest beside it with
/// `.sha256` appended (`ComponentCache::path_of`).
fn entry_hash(name: &str) -> Option<&str> {
    name.strip_suffix(".cwasm")?
        .split_once('-')
        .map(|(hash, _)| hash)
}

/// Marks the entries of the components with these content hashes as used
/// now (their modification time), so that pruning keeps them longest: a
/// cache hit only reads an entry, which leaves its times as they were.
pub(super) fn touch(dir: &Path, hashes: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if entry_hash(&name.to_string_lossy()).is_some_and(|h| hashes.iter().any(|u| u == h)) {
            // Best effort: an entry that cannot be marked is merely pruned
            // earlier, and compiled again if it is needed after that.
            if let Ok(file) = std::fs::File::open(entry.path()) {
                let _ = file.set_modified(SystemTime::now());
            }
        }
    }
}

/// Removes the least recently used entries, with their digests, until the
/// entries left take at most `keep` bytes, sparing those of `used`; and
/// temporary files a crash left behind. Returns how many entries went.
pub(super) fn prune(dir: &Path, keep: u64, used: &[String]) -> usize {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut entries = Vec::new();
    for entry in listing.flatten() {
        let (Ok(meta), name) = (entry.metadata(), entry.file_name()) else {
            continue;
        };
        let name = name.to_string_lossy();
        let modified = meta.modified().unwrap_or(now);
        if name.contains(".tmp-") {
            if now
                .duration_since(modified)
                .is_ok_and(|age| age > STALE_TEMP)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        } else if let Some(hash) = entry_hash(&name) {
            let spared = used.iter().any(|u| u == hash);
            entries.push((modified, meta.len(), spared, entry.path()));
        }
    }
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    entries.sort_by_key(|e| e.0);
    let mut removed = 0;
    for (_, len, spared, path) in entries {
        if total <= keep {
            break;
        }
        if spared {
            continue;
        }
        // Digest first: an entry without one is refused and compiled
        // again, never trusted, should another run read it meanwhile.
        let mut digest = path.clone().into_os_string();
        digest.push(".sha256");
        let _ = std::fs::remove_file(digest);
        if std::fs::remove_file(&path).is_ok() {
            total = total.saturating_sub(len);
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_follows_xdg_then_home() {
        let dir = |xdg: Option<&str>, home: Option<&str>| {
            dir_from(xdg.map(OsString::from), home.map(OsString::from))
        };
        assert_eq!(
            dir(Some("/x/cache"), Some("/home/u")),
            Some(PathBuf::from("/x/cache/stephost"))
        );
        assert_eq!(
            dir(None, Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache/stephost"))
        );
        assert_eq!(
            dir(Some("relative"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache/stephost")),
            "a relative XDG_CACHE_HOME is ignored"
        );
        assert_eq!(dir(None, None), None);
        assert_eq!(dir(Some(""), Some("")), None);
    }

    fn put(dir: &Path, hash: &str, bytes: usize, age_secs: u64) -> PathBuf {
        let path = dir.join(format!("{hash}-0123456789abcdef.cwasm"));
        std::fs::write(&path, vec![0u8; bytes]).unwrap();
        std::fs::write(
            dir.join(format!("{hash}-0123456789abcdef.cwasm.sha256")),
            "d",
        )
        .unwrap();
        let when = SystemTime::now() - Duration::from_secs(age_secs);
        std::fs::File::open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        path
    }

    #[test]
    fn pruning_drops_the_least_recently_used_entries_and_spares_the_used() {
        let dir = tempfile::tempdir().unwrap();
        let oldest = put(dir.path(), "aaaa", 100, 300);
        let old = put(dir.path(), "bbbb", 100, 200);
        let used = put(dir.path(), "cccc", 100, 400);
        let newest = put(dir.path(), "dddd", 100, 10);
        let stale = dir.path().join("entry.tmp-1-2");
        std::fs::write(&stale, "half").unwrap();
        std::fs::File::open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * STALE_TEMP)
            .unwrap();
        let fresh = dir.path().join("entry.tmp-3-4");
        std::fs::write(&fresh, "in flight").unwrap();

        assert_eq!(prune(dir.path(), 400, &["cccc".into()]), 0, "within budget");
        assert_eq!(prune(dir.path(), 200, &["cccc".into()]), 2);
        assert!(!oldest.exists() && !old.exists());
        assert!(
            !dir.path()
                .join("aaaa-0123456789abcdef.cwasm.sha256")
                .exists()
        );
        assert!(used.exists() && newest.exists());
        assert!(!stale.exists() && fresh.exists());
    }

    #[test]
    fn touching_marks_an_entry_as_just_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = put(dir.path(), "aaaa", 10, 3600);
        put(dir.path(), "bbbb", 10, 3600);
        touch(dir.path(), &["aaaa".into()]);
        let age = |p: &Path| {
            SystemTime::now()
                .duration_since(std::fs::metadata(p).unwrap().modified().unwrap())
                .unwrap_or_default()
        };
        assert!(age(&path) < Duration::from_secs(60));
        assert_eq!(prune(dir.path(), 10, &[]), 1);
        assert!(path.exists(), "the touched entry is the newest");
    }
}
