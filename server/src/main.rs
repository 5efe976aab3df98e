//! The `steadfast` binary: `steadfast server` runs the server; the other commands are the admin
//! CLI (see `steadfast --help`, and `steadfast_server::cli`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    steadfast_server::cli::main(std::env::args_os()).await
}
