//! The one place the WIT contract in `wit/` becomes Rust: every host module
//! uses these generated types and traits, so a change to the contract shows
//! up here and nowhere else.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "step-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::stephost::plugin::types::{
    Callback, Document, Failure, Outcome, PluginInfo, ResumeEvent, Retry, StepContext, Suspension,
};
pub use exports::stephost::plugin::step::Guest as StepExports;
