//! Write stephost step plugins in Rust.
//!
//! A step plugin is a WebAssembly component that implements the
//! `stephost:plugin/step-plugin` world (`wit/stephost.wit`, shipped in this
//! crate). This crate holds the generated bindings for that world and
//! thin, typed helpers around them, so that a plugin is one type that
//! implements [`Step`] plus one [`export_step!`] line:
//!
//! ```no_run
//! use stephost_guest::{Context, Document, Outcome, Step};
//!
//! struct Upper;
//!
//! impl Step for Upper {
//!     fn run(_ctx: Context, input: Document) -> Outcome {
//!         match input.as_text() {
//!             Some(text) => Outcome::complete(Document::text(text.to_uppercase())),
//!             None => Outcome::fail("invalid-input", "input is not UTF-8 text"),
//!         }
//!     }
//! }
//!
//! stephost_guest::export_step!(Upper);
//! ```
//!
//! Build it as a `cdylib` with `cargo build --release --target wasm32-wasip2`;
//! the `.wasm` file cargo writes is the component the daemon loads.
//!
//! A plugin runs in a fresh sandbox for every call: nothing survives between
//! [`Step::run`] and [`Step::resume`] except the `state` bytes handed back in
//! [`Outcome::suspend`] or [`Outcome::retry_after`].
//!
//! Step logic with many ways to fail reads best as a function returning
//! `Result<Outcome, Failure>`, turned into an [`Outcome`] at the edge with
//! `.unwrap_or_else(Outcome::from)`: [`Failure`] is the error type of the
//! helpers whose errors a step usually just reports ([`Context::config`],
//! and every helper error converts into one). The codes those conversions
//! give (`egress-denied`, `http-error`, `signing-error`, …) are the ones
//! the Python and JavaScript SDKs report for the same condition; the
//! stephost repository's `docs/errors.md` lists them.
#![deny(missing_docs)]
// Stand-alone lints rather than the stephost workspace's: the crate is
// also built outside it (published, or vendored into a plugin project).
#![deny(unsafe_code)]

// wit-bindgen's output lowers values through raw pointers and does not
// document its plumbing; both are confined to this one module.
#[allow(unsafe_code, missing_docs)]
pub mod bindings;

pub mod callbacks;
mod context;
mod document;
pub mod http;
pub mod log;
mod outcome;
pub mod secrets;
pub mod signing;

pub use bindings::stephost::plugin::types::{
    Callback, Document, Failure, Outcome, PluginInfo, ResumeEvent, Retry, StepContext, Suspension,
};
pub use callbacks::Ticket;
pub use context::Context;

/// A step: what a plugin implements, once, for the type it exports with
/// [`export_step!`].
///
/// The functions take no `self` because there is no instance to keep:
/// every call starts in a fresh sandbox.
pub trait Step {
    /// Name, version, description and config schema of the plugin.
    ///
    /// The default leaves every field empty, and [`export_step!`] fills an
    /// empty name, version or description from the plugin crate's
    /// `Cargo.toml` (`name`, `version`, `description`), so most plugins need
    /// not override it.
    fn describe() -> PluginInfo {
        PluginInfo::new("", "")
    }

    /// Start the step on `input`.
    fn run(ctx: Context, input: Document) -> Outcome;

    /// Continue after a [`Outcome::suspend`] or [`Outcome::retry_after`],
    /// with the same `input` and the `state` returned then.
    ///
    /// The default fails with code `unexpected-resume`: a step that never
    /// suspends has nothing to continue.
    fn resume(ctx: Context, input: Document, state: Vec<u8>, event: ResumeEvent) -> Outcome {
        let _ = (input, state);
        Outcome::fail(
            "unexpected-resume",
            format!(
                "step `{}` never suspends, but was resumed by {}",
                ctx.step(),
                event.kind()
            ),
        )
    }
}

/// Export a type implementing [`Step`] as the plugin's `step` interface.
///
/// Use it once, at the top level of the plugin's `cdylib` crate, with the
/// plain name of the type (a path is not accepted, because the underlying
/// generated macro takes an identifier):
///
/// ```ignore
/// struct Echo;
/// impl stephost_guest::Step for Echo { /* ... */ }
/// stephost_guest::export_step!(Echo);
/// ```
///
/// To implement the raw generated `Guest` trait instead, use
/// `stephost_guest::bindings::export_step_plugin!(MyType)`.
#[macro_export]
macro_rules! export_step {
    ($ty:ident) => {
        impl $crate::bindings::exports::stephost::plugin::step::Guest for $ty {
            fn describe() -> $crate::PluginInfo {
                // Expanded in the plugin's crate, so these are the plugin's
                // own Cargo metadata, not this SDK's.
                $crate::__private::fill_info(
                    <$ty as $crate::Step>::describe(),
                    ::core::env!("CARGO_PKG_NAME"),
                    ::core::env!("CARGO_PKG_VERSION"),
                    ::core::env!("CARGO_PKG_DESCRIPTION"),
                )
            }

            fn run(ctx: $crate::StepContext, input: $crate::Document) -> $crate::Outcome {
                <$ty as $crate::Step>::run($crate::Context::new(ctx), input)
            }

            fn resume(
                ctx: $crate::StepContext,
                input: $crate::Document,
                state: ::std::vec::Vec<u8>,
                event: $crate::ResumeEvent,
            ) -> $crate::Outcome {
                <$ty as $crate::Step>::resume($crate::Context::new(ctx), input, state, event)
            }
        }

        $crate::bindings::export_step_plugin!($ty with_types_in $crate::bindings);
    };
}

/// Support for [`export_step!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    use crate::PluginInfo;

    /// Fill what the plugin left empty from its Cargo metadata.
    pub fn fill_info(
        mut info: PluginInfo,
        name: &str,
        version: &str,
        description: &str,
    ) -> PluginInfo {
        if info.name.is_empty() {
            info.name = name.to_owned();
        }
        if info.version.is_empty() {
            info.version = version.to_owned();
        }
        if info.description.is_empty() {
            info.description = description.to_owned();
        }
        info
    }
}

impl PluginInfo {
    /// Info with a name and version, no description and no config schema.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            config_schema: None,
        }
    }

    /// Set the one-sentence description shown to operators.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Publish the JSON Schema of the step's config (as JSON text).
    pub fn with_config_schema(mut self, schema: impl Into<String>) -> Self {
        self.config_schema = Some(schema.into());
        self
    }
}

impl ResumeEvent {
    /// `callback`, `timeout` or `timer`: the WIT name of the event, for
    /// messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ResumeEvent::Callback(_) => "callback",
            ResumeEvent::Timeout => "timeout",
            ResumeEvent::Timer => "timer",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NeverSuspends;

    impl Step for NeverSuspends {
        fn run(_ctx: Context, input: Document) -> Outcome {
            Outcome::complete(input)
        }
    }

    #[test]
    fn default_describe_is_filled_from_cargo_metadata() {
        let info = __private::fill_info(NeverSuspends::describe(), "p", "1.2.3", "does p");
        assert_eq!(
            info,
            PluginInfo::new("p", "1.2.3").with_description("does p")
        );
    }

    #[test]
    fn explicit_describe_fields_win() {
        let info = __private::fill_info(
            PluginInfo::new("mine", "").with_config_schema("{}"),
            "p",
            "1.2.3",
            "",
        );
        assert_eq!(info.name, "mine");
        assert_eq!(info.version, "1.2.3");
        assert_eq!(info.config_schema.as_deref(), Some("{}"));
    }

    #[test]
    fn default_resume_fails_with_unexpected_resume() {
        let ctx = context::tests::ctx("");
        let out = NeverSuspends::resume(ctx, Document::text("x"), vec![], ResumeEvent::Timer);
        match out {
            Outcome::Fail(f) => {
                assert_eq!(f.error_code.as_deref(), Some("unexpected-resume"));
                assert!(f.error_text.contains("timer"), "{}", f.error_text);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}
