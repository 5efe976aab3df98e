//! The connection flags every example takes, named as the `steadfast` CLI names them: a bearer
//! token (for a server with `--auth-file`) and TLS files (for an `https://` server).

use std::path::PathBuf;
use std::process::Command;

use steadfast_sdk::client::{ClientConfig, TlsFiles};

/// `--token`, `--tls-ca`, `--tls-cert`, `--tls-key`, each also from the environment.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Security {
    /// The bearer token sent with every call (a server with --auth-file requires one).
    #[arg(long, env = "STEADFAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The CA that signed the server's certificate (https:// servers; default: the system's
    /// roots).
    #[arg(long, env = "STEADFAST_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate, for a server that requires mutual TLS.
    #[arg(long, env = "STEADFAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert.
    #[arg(long, env = "STEADFAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl Security {
    /// The client configuration for `addr` with these.
    pub fn config(&self, addr: &str) -> ClientConfig {
        ClientConfig::new(addr)
            .token(self.token.clone())
            .tls(TlsFiles {
                ca: self.tls_ca.clone(),
                client_identity: self.tls_cert.clone().zip(self.tls_key.clone()),
                domain: None,
            })
    }

    /// Hands these to a child process through its environment (never its arguments, which
    /// `ps` shows).
    pub fn pass_to(&self, cmd: &mut Command) {
        let mut set = |k: &str, v: Option<&std::ffi::OsStr>| match v {
            Some(v) => {
                cmd.env(k, v);
            }
            None => {
                cmd.env_remove(k);
            }
        };
        set(
            "STEADFAST_TOKEN",
            self.token.as_deref().map(std::ffi::OsStr::new),
        );
        set(
            "STEADFAST_TLS_CA",
            self.tls_ca.as_deref().map(|p| p.as_os_str()),
        );
        set(
            "STEADFAST_TLS_CERT",
            self.tls_cert.as_deref().map(|p| p.as_os_str()),
        );
        set(
            "STEADFAST_TLS_KEY",
            self.tls_key.as_deref().map(|p| p.as_os_str()),
        );
    }
}
