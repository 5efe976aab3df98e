//! Retention across processes: a server started with `--retention` drops closed runs once
//! they are older than the period — their state and history read as not found, across a
//! restart too — and never an open run.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::json;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{Server, runtime, start_hello_worker};

#[test]
fn closed_runs_are_dropped_after_the_retention_period_open_runs_stay() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start_with(dir.path(), None, &["--retention", "1s"])?;
    let url = server.url();
    let mut worker = start_hello_worker(&url)?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.as_str()))?;
    let (closed, open) = rt.block_on(async {
        let h = client
            .start_workflow("hello", &json!({"name": "old"}), StartOptions::default())
            .await?;
        let _: serde_json::Value = h.result(Duration::from_secs(60)).await?;
        // No worker runs this type: the run stays open, waiting on its workflow task.
        let open = client
            .start_workflow("nobody-runs-this", &json!({}), StartOptions::default())
            .await?;
        anyhow::Ok((h.run_id, open.run_id))
    })?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gone = rt.block_on(client.describe(&closed)).is_err();
        if gone {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the closed run was not dropped within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = rt
        .block_on(client.history(&closed))
        .expect_err("history of a dropped run");
    ensure!(
        err.to_string().to_lowercase().contains("not found"),
        "a dropped run's history: {err}"
    );
    let info = rt.block_on(client.describe(&open))?;
    ensure!(info.status == steadfast_proto::v1::RunStatus::Running as i32);

    // A restart does not bring the dropped run back, even with sled gone.
    worker.kill9();
    ensure!(server.proc.terminate(Duration::from_secs(30)));
    std::fs::remove_dir_all(dir.path().join("sled"))?;
    server = Server::start_with(dir.path(), Some(server.addr.port()), &["--retention", "1s"])?;
    let client = rt.block_on(Client::connect(server.url().as_str()))?;
    ensure!(
        rt.block_on(client.describe(&closed)).is_err(),
        "a dropped run came back"
    );
    ensure!(
        rt.block_on(client.describe(&open)).is_ok(),
        "the open run is gone"
    );
    Ok(())
}
