//! The data dir is private to the daemon's user: it holds the key that
//! callback tickets are derived from, API token hashes, and every document
//! and callback body partners sent. A new one is created `0700` with its
//! files `0600`; an existing one that others may read is left as the
//! operator made it, with a warning at every start.

use std::path::Path;

/// Creates `dir` (and missing parents) readable by its owner only.
pub(super) fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The permission bits of `dir` that let group or others in, if any.
pub fn exposure(dir: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Makes the files under a private `dir` (`0700`) private too (`0600`):
/// sled creates them with the process's umask. Under a dir others may
/// read, the operator chose that; nothing is changed.
pub(super) fn tighten(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if exposure(dir).is_some() {
            return Ok(());
        }
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                let mode = meta.permissions().mode() & 0o777;
                let private = if meta.is_dir() {
                    stack.push(entry.path());
                    0o700
                } else {
                    0o600
                };
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(
                        entry.path(),
                        std::fs::Permissions::from_mode(mode & private),
                    )?;
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
