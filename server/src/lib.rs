//! The Steadfast server: gRPC services over the engine's store, task dispatch by long poll,
//! the timer loop, and the admin CLI. The `steadfast` binary is `src/main.rs`.

pub mod config;
pub mod convert;
pub mod server;

pub use config::ServerConfig;
