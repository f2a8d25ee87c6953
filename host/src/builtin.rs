//! The reference plugins, compiled from `plugins/` by the build script and
//! embedded, so that `stephost serve` runs with no files beside it.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The embedded component of a reference plugin, by name.
pub fn component(name: &str) -> Option<&'static [u8]> {
    BUILTIN_PLUGINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}
