//! The one place the WIT contract is turned into Rust.
//!
//! Everything else in this crate wraps these types and functions. They are
//! public so that a plugin can drop down to the raw contract when a helper
//! does not fit, and so that the export macro, which expands in the plugin's
//! crate, can reach them through `stephost_guest::bindings`.

wit_bindgen::generate!({
    // The crate's own copy of wit/stephost.wit (kept identical by a test in
    // the host), so that the published and the vendored crate carry it.
    path: "wit",
    world: "step-plugin",
    // Plain data everywhere, so equality is cheap to offer and makes the
    // outcomes of a step easy to assert on in tests.
    additional_derives: [PartialEq, Eq],
    export_macro_name: "export_step_plugin",
    pub_export_macro: true,
    default_bindings_module: "stephost_guest::bindings",
});
