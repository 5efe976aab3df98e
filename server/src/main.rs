//! The `steadfast` binary: `steadfast server` runs the server; the other commands are the admin
//! CLI (see `steadfast --help`, and `steadfast_server::cli`).

fn main() -> std::process::ExitCode {
    steadfast_server::cli::run(std::env::args_os())
}
