//! A client that is not ours: Python grpcio stubs generated from proto/ alone
//! (tests/python/client.py) start a `hello` run, await its result and see NOT_FOUND for an
//! unknown run id. Proves the .proto is the whole contract.
//!
//! Needs `python3` with `grpcio grpcio-tools protobuf` (`.ci/run` installs them). Missing
//! ones fail the test with the command to run: a skipped cross-language test is one that
//! never runs.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use steadfast_tests::{Server, run_bounded, start_hello_worker, workspace_root};

const PIP_HINT: &str =
    "run `python3 -m pip install grpcio grpcio-tools protobuf` (CI's .ci/run does)";

#[test]
fn python_grpc_client_runs_hello() -> Result<()> {
    let deps = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, google.protobuf"])
        .output();
    match deps {
        Err(e) => panic!(
            "python3 is needed for the cross-language test ({e}); install Python 3, then {PIP_HINT}"
        ),
        Ok(o) if !o.status.success() => panic!(
            "the Python gRPC packages are missing ({}); {PIP_HINT}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => {}
    }

    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), None)?;
    let _worker = start_hello_worker(&server.url())?;
    let script = workspace_root().join("tests/python/client.py");
    let (code, out, err) = run_bounded(
        Command::new("python3")
            .arg(&script)
            .args([&server.url(), "hello", r#"{"name":"py"}"#]),
        Duration::from_secs(60),
    )?;
    assert_eq!(code, 0, "client.py failed\nstdout:\n{out}\nstderr:\n{err}");
    let line = out.lines().last().context("client.py printed nothing")?;
    let printed: Value =
        serde_json::from_str(line).with_context(|| format!("client.py's line: {line}"))?;
    assert_eq!(printed["status"], "RUN_STATUS_COMPLETED", "{printed}");
    assert!(
        printed["run_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{printed}"
    );
    let result = printed["result"].to_string();
    assert!(
        result.contains("py"),
        "the result names the input: {result}"
    );
    assert_eq!(printed["result"]["greeting"], "Hello, py!", "{printed}");
    Ok(())
}
