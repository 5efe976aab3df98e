//! Issue 12: TLS and mutual TLS between the server, the CLI and the SDK (a real worker).
//!
//! Certificates are made at run time with rcgen (a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate); no private key is committed. Checked:
//! - a TLS server answers a CLI that trusts its CA over https://, and refuses plaintext;
//! - a client that does not trust the CA (the system's roots only) cannot connect;
//! - with --tls-ca on the server (mutual TLS), a client without a certificate is refused and
//!   one with a certificate signed by the CA is served; `hello-worker` given the files and a
//!   token through the environment runs a workflow to completion over mutual TLS with auth.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use steadfast_tests::{Proc, Server, bin, run_bounded, secure};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path) -> Result<Pki> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "steadfast test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?;
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;

    let client_key = KeyPair::generate()?;
    let mut client = CertificateParams::new(vec!["steadfast-test-client".into()])?;
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key)?;

    let write = |name: &str, pem: String| -> Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, pem)?;
        Ok(p)
    };
    Ok(Pki {
        ca: write("ca.pem", ca_cert.pem())?,
        server_cert: write("server.pem", server_cert.pem())?,
        server_key: write("server.key", server_key.serialize_pem())?,
        client_cert: write("client.pem", client_cert.pem())?,
        client_key: write("client.key", client_key.serialize_pem())?,
    })
}

fn https(server: &Server) -> String {
    format!("https://{}", server.addr)
}

/// The CLI with `args` and `env` (nothing of the caller's STEADFAST_* environment).
fn cli(args: &[&str], env: &[(&str, &Path)]) -> Result<(i32, String, String)> {
    let mut cmd = Command::new(bin("steadfast"));
    cmd.args(args);
    for k in [
        "STEADFAST_TOKEN",
        "STEADFAST_TLS_CA",
        "STEADFAST_TLS_CERT",
        "STEADFAST_TLS_KEY",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(&mut cmd, Duration::from_secs(60))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn tls_serves_clients_that_trust_its_ca_and_refuses_the_others() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = make_pki(dir.path())?;
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &[
            "--tls-cert",
            s(&pki.server_cert),
            "--tls-key",
            s(&pki.server_key),
        ],
    )?;
    let url = https(&server);

    let (code, _, err) = cli(
        &["run", "list", "--addr", &url, "--tls-ca", s(&pki.ca)],
        &[],
    )?;
    assert_eq!(code, 0, "a client that trusts the CA: {err}");
    // The same from the environment, address without a scheme (TLS flags mean https).
    let (code, _, err) = cli(
        &["run", "list", "--addr", &server.addr.to_string()],
        &[("STEADFAST_TLS_CA", &pki.ca)],
    )?;
    assert_eq!(code, 0, "STEADFAST_TLS_CA: {err}");
    // The system's roots do not include the test CA.
    let (code, _, err) = cli(&["run", "list", "--addr", &url], &[])?;
    assert_eq!(code, 1, "untrusted certificate accepted: {err}");
    // Plaintext to a TLS port is not served.
    let (code, _, err) = cli(&["run", "list", "--addr", &server.url()], &[])?;
    assert_eq!(code, 1, "plaintext served by a TLS server: {err}");
    // TLS flags with an http:// address: a usage error, not a silent plaintext call.
    let (code, _, err) = cli(
        &[
            "run",
            "list",
            "--addr",
            &server.url(),
            "--tls-ca",
            s(&pki.ca),
        ],
        &[],
    )?;
    assert!(code == 2 && err.contains("https://"), "{code} {err}");
    Ok(())
}

#[test]
fn mutual_tls_with_tokens_runs_a_workflow_end_to_end() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = make_pki(dir.path())?;
    let client_token = secure::new_token()?;
    let worker_token = secure::new_token()?;
    let auth = dir.path().join("auth.txt");
    secure::write_auth_file(
        &auth,
        &[
            &secure::entry(&client_token, "client", "client", "default")?,
            &secure::entry(&worker_token, "worker", "worker", "default")?,
        ],
    )?;
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &[
            "--tls-cert",
            s(&pki.server_cert),
            "--tls-key",
            s(&pki.server_key),
            "--tls-ca",
            s(&pki.ca),
            "--auth-file",
            s(&auth),
        ],
    )?;
    let url = https(&server);

    // Trusts the server, but presents no certificate: the handshake fails.
    let (code, _, err) = cli(
        &["run", "list", "--addr", &url, "--tls-ca", s(&pki.ca)],
        &[],
    )?;
    assert_eq!(code, 1, "served without a client certificate: {err}");
    // A certificate from another CA is no better.
    let other = make_pki(&{
        let d = dir.path().join("other");
        std::fs::create_dir_all(&d)?;
        d
    })?;
    let (code, _, err) = cli(
        &[
            "run",
            "list",
            "--addr",
            &url,
            "--tls-ca",
            s(&pki.ca),
            "--tls-cert",
            s(&other.client_cert),
            "--tls-key",
            s(&other.client_key),
        ],
        &[],
    )?;
    assert_eq!(code, 1, "served a certificate of another CA: {err}");

    let env: Vec<(&str, &Path)> = vec![
        ("STEADFAST_TLS_CA", &pki.ca),
        ("STEADFAST_TLS_CERT", &pki.client_cert),
        ("STEADFAST_TLS_KEY", &pki.client_key),
    ];
    // The right certificate, but no token: TLS is not authentication by itself here.
    let (code, _, err) = cli(&["run", "list", "--addr", &url], &env)?;
    assert!(code == 1 && err.contains("UNAUTHENTICATED"), "{code} {err}");

    let mut worker_cmd = Command::new(bin("hello-worker"));
    worker_cmd
        .args(["--addr", &url])
        .env("STEADFAST_TOKEN", &worker_token)
        .env("RUST_LOG", "warn");
    for (k, v) in &env {
        worker_cmd.env(k, v);
    }
    let _worker = Proc::spawn("hello-worker", &mut worker_cmd)?;

    let mut cmd = Command::new(bin("steadfast"));
    cmd.args(["run", "start", "hello", "--input", r#"{"name":"Tls"}"#])
        .args(["--addr", &url])
        .env("STEADFAST_TOKEN", &client_token);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let (code, out, err) = run_bounded(&mut cmd, Duration::from_secs(60))?;
    assert_eq!(code, 0, "start over mutual TLS: {err}");
    let run = out.trim().to_string();
    let mut cmd = Command::new(bin("steadfast"));
    cmd.args(["run", "result", &run, "--wait", "--timeout", "60s"])
        .args(["--addr", &url])
        .env("STEADFAST_TOKEN", &client_token);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let (code, out, err) = run_bounded(&mut cmd, Duration::from_secs(90))?;
    assert_eq!(code, 0, "result over mutual TLS: {err}");
    assert!(out.contains("Hello, Tls!"), "{out}");
    Ok(())
}
