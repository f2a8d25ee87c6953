//! The `stephost` binary: everything lives in the library.

fn main() -> anyhow::Result<()> {
    stephost::cli::run()
}
