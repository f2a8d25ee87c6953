//! The `stephost` binary: everything lives in the library.

/// mimalloc instead of the system allocator: a step cycle allocates and
/// frees many short-lived buffers (records, HTTP messages, Wasm stores)
/// across threads, where glibc's malloc spent a quarter of the daemon's CPU
/// (`docs/performance.md`, figure 3). `no_thp`: on machines with
/// transparent huge pages always on, mimalloc's arenas otherwise became
/// 2 MiB pages and the daemon's RSS grew by half, for no speed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    stephost::cli::run()
}
