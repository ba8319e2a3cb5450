//! The `tuma` binary: a thin shell over the library's CLI.

/// jemalloc instead of glibc's allocator: a node makes many small,
/// short-lived allocations across the runtime's threads, and with glibc's
/// malloc a fifth of its CPU time went to allocating and freeing. Measured
/// with `tuma bench payouts`: about a fifth less CPU for Tuma's own process
/// at about the same peak RSS (mimalloc was as fast, at nearly twice the
/// RSS).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tuma::cli::main()
}
