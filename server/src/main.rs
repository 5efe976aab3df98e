//! The `steadfast` binary: `steadfast server` runs the server; the other commands are the admin
//! CLI (see `steadfast --help`, and `steadfast_server::cli`).

fn main() -> std::process::ExitCode {
    steadfast_server::cli::run(std::env::args_os())
}

/// jemalloc instead of glibc's malloc: about a sixth of the server's CPU under load went to
/// malloc/free (glibc's `malloc_consolidate` and chunk unlinking among the top symbols). Five
/// interleaved pairs on the bench's throughput shape: +2-14% steps per second, server CPU per
/// step -5 to -15%, peak RSS +8 MiB (63-70 to 72-77 MiB). mimalloc was tried earlier and
/// doubled the peak RSS.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
