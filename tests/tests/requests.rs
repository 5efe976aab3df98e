//! Idempotent requests across processes (issue "fenced workers", point 4): a StartWorkflow or
//! SignalRun retried with the same `request_id` — also after the server was SIGKILLed and
//! restarted in between — gets the first answer and writes nothing again.

use anyhow::{Result, ensure};
use steadfast_proto::v1 as pb;
use steadfast_sdk::client::Client;
use steadfast_tests::{Server, runtime};

fn start_req(request_id: &str) -> pb::StartWorkflowRequest {
    pb::StartWorkflowRequest {
        workflow_type: "nobody-runs-this".into(),
        input: Some(pb::Payload {
            encoding: "json".into(),
            data: b"{}".to_vec(),
        }),
        request_id: request_id.into(),
        ..Default::default()
    }
}

fn signal_req(run_id: &str, request_id: &str) -> pb::SignalRunRequest {
    pb::SignalRunRequest {
        run_id: run_id.into(),
        signal_name: "approve".into(),
        input: Some(pb::Payload {
            encoding: "json".into(),
            data: b"true".to_vec(),
        }),
        request_id: request_id.into(),
        ..Default::default()
    }
}

fn signals(history: &[pb::HistoryEvent]) -> usize {
    history
        .iter()
        .filter(|e| e.kind == pb::EventKind::SignalReceived as i32)
        .count()
}

#[test]
fn duplicate_request_ids_are_answered_once_across_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(dir.path(), None)?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(server.url().as_str()))?;
    let mut svc = client.service();
    let first = rt
        .block_on(svc.start_workflow(start_req("start-42")))?
        .into_inner();
    let again = rt
        .block_on(svc.start_workflow(start_req("start-42")))?
        .into_inner();
    ensure!(
        again.run_id == first.run_id,
        "a retried start created another run"
    );
    let other = rt
        .block_on(svc.start_workflow(start_req("start-43")))?
        .into_inner();
    ensure!(
        other.run_id != first.run_id,
        "another request id is another run"
    );
    rt.block_on(svc.signal_run(signal_req(&first.run_id, "sig-1")))?;
    rt.block_on(svc.signal_run(signal_req(&first.run_id, "sig-1")))?;
    let h = rt.block_on(client.history(&first.run_id))?;
    ensure!(
        signals(&h) == 1,
        "a retried signal was delivered {} times",
        signals(&h)
    );

    // The dedup is durable: after a SIGKILL and a restart, the same ids still dedupe.
    server.crash_and_restart()?;
    let client = rt.block_on(Client::connect(server.url().as_str()))?;
    let mut svc = client.service();
    let after = rt
        .block_on(svc.start_workflow(start_req("start-42")))?
        .into_inner();
    ensure!(
        after.run_id == first.run_id,
        "a start retried after a restart created another run"
    );
    rt.block_on(svc.signal_run(signal_req(&first.run_id, "sig-1")))?;
    let h = rt.block_on(client.history(&first.run_id))?;
    ensure!(
        signals(&h) == 1,
        "a signal retried after a restart was delivered again"
    );
    // A new id is a new signal.
    rt.block_on(svc.signal_run(signal_req(&first.run_id, "sig-2")))?;
    let h = rt.block_on(client.history(&first.run_id))?;
    ensure!(signals(&h) == 2);
    let runs = rt
        .block_on(svc.list_runs(pb::ListRunsRequest {
            page_size: 100,
            ..Default::default()
        }))?
        .into_inner();
    ensure!(
        runs.runs.len() == 2,
        "{} runs listed, want 2",
        runs.runs.len()
    );
    Ok(())
}
