//! Work in progress.

use stephost_guest::{Context, Document, Outcome, Step};

struct Placeholder;

impl Step for Placeholder {
    fn run(_ctx: Context, _input: Document) -> Outcome {
        Outcome::fail("not-implemented", "work in progress")
    }
}

stephost_guest::export_step!(Placeholder);
