//! The `stephost` binary: everything lives in the library.

/// mimalloc instead of the system allocator: a step cycle allocates and
/// frees many short-lived buffers (records, HTTP messages, Wasm stores)
/// across threads, where glibc's malloc spent a quarter of the daemon's CPU
/// (`docs/performance.md`, figure 3).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    stephost::cli::run()
}
