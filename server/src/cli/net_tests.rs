//! The CLI's network code against an in-process fake ClientService: paging, the AwaitResult
//! loop, and WatchRun resuming after the last seq when the stream breaks. Stdout is captured
//! per thread (the tests run on a current-thread runtime).

// tonic::Status is what the generated service trait returns.
#![allow(clippy::result_large_err)]

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::client_service_server::{ClientService, ClientServiceServer};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::client::Conn;
use super::follow::{self, ResultArgs, WatchArgs};
use super::history::{self, HistoryCmd, ReplayArgs};
use super::replay::tests::{history_wire, key};
use super::{exit, export};

thread_local! {
    static STDOUT: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Appends to the captured stdout when a test captures it; `false` when not capturing.
pub fn capture(data: &[u8]) -> bool {
    STDOUT.with(|c| {
        c.borrow_mut()
            .as_mut()
            .map(|b| b.extend_from_slice(data))
            .is_some()
    })
}

async fn captured<F: std::future::Future>(f: F) -> (F::Output, String) {
    STDOUT.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let r = f.await;
    let out = STDOUT.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, String::from_utf8(out).unwrap())
}

/// Serves [`history_wire`]: history pages of at most 4 events, a watch stream that breaks
/// after seq 3 on its first call, and AwaitResult that closes on its second call.
#[derive(Default)]
struct Fake {
    watch_after: Mutex<Vec<u64>>,
    history_from: Mutex<Vec<u64>>,
    await_timeouts: Mutex<Vec<u64>>,
}

fn run_info(closed: bool) -> pb::RunInfo {
    pb::RunInfo {
        run_id: key().run_id.to_string(),
        status: if closed {
            pb::RunStatus::Completed
        } else {
            pb::RunStatus::Running
        } as i32,
        result: closed.then(|| pb::Payload {
            encoding: String::new(),
            data: br#""done""#.to_vec(),
        }),
        ..Default::default()
    }
}

struct Svc(Arc<Fake>);

type Watch = Pin<Box<dyn Stream<Item = Result<pb::WatchRunResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientService for Svc {
    type WatchRunStream = Watch;

    async fn get_history(
        &self,
        r: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let r = r.into_inner();
        self.0.history_from.lock().unwrap().push(r.from_seq);
        let page = (r.page_size as usize).min(4);
        let events: Vec<_> = history_wire()
            .into_iter()
            .filter(|e| e.seq >= r.from_seq)
            .take(page)
            .collect();
        let last = events.last().map_or(0, |e| e.seq);
        let next_seq = if last == 0 || last == history_wire().len() as u64 {
            0
        } else {
            last + 1
        };
        Ok(Response::new(pb::GetHistoryResponse { events, next_seq }))
    }

    async fn await_result(
        &self,
        r: Request<pb::AwaitResultRequest>,
    ) -> Result<Response<pb::AwaitResultResponse>, Status> {
        let mut calls = self.0.await_timeouts.lock().unwrap();
        calls.push(r.into_inner().timeout_ms);
        let closed = calls.len() >= 2 && calls.iter().all(|t| *t > 0);
        Ok(Response::new(pb::AwaitResultResponse {
            closed,
            run: Some(run_info(closed)),
        }))
    }

    async fn watch_run(&self, r: Request<pb::WatchRunRequest>) -> Result<Response<Watch>, Status> {
        let after = r.into_inner().after_seq;
        let first = {
            let mut calls = self.0.watch_after.lock().unwrap();
            calls.push(after);
            calls.len() == 1
        };
        let mut items: Vec<Result<pb::WatchRunResponse, Status>> = history_wire()
            .into_iter()
            // The second stream repeats seq 3: the CLI must not show it twice.
            .filter(|e| e.seq > after.saturating_sub(1) && (!first || e.seq <= 3))
            .map(|e| {
                let run = super::events::is_terminal(&e).then(|| run_info(true));
                Ok(pb::WatchRunResponse {
                    event: Some(e),
                    run,
                    delta: None,
                })
            })
            .collect();
        if first {
            items.push(Err(Status::unavailable("server restarting")));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn update_run(
        &self,
        _: Request<pb::UpdateRunRequest>,
    ) -> Result<Response<pb::UpdateRunResponse>, Status> {
        Err(Status::unimplemented("not used by these tests"))
    }

    async fn query_run(
        &self,
        _: Request<pb::QueryRunRequest>,
    ) -> Result<Response<pb::QueryRunResponse>, Status> {
        Err(Status::unimplemented("not used by these tests"))
    }

    async fn approve_activity(
        &self,
        _: Request<pb::ApproveActivityRequest>,
    ) -> Result<Response<pb::ApproveActivityResponse>, Status> {
        Err(Status::unimplemented("not used by these tests"))
    }

    async fn deny_activity(
        &self,
        _: Request<pb::DenyActivityRequest>,
    ) -> Result<Response<pb::DenyActivityResponse>, Status> {
        Err(Status::unimplemented("not used by these tests"))
    }

    async fn describe_run(
        &self,
        _: Request<pb::DescribeRunRequest>,
    ) -> Result<Response<pb::DescribeRunResponse>, Status> {
        Ok(Response::new(pb::DescribeRunResponse {
            run: Some(run_info(true)),
            fork_run_ids: Vec::new(),
        }))
    }

    async fn start_workflow(
        &self,
        _: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::StartWorkflowResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_runs(
        &self,
        _: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn cancel_run(
        &self,
        _: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn terminate_run(
        &self,
        _: Request<pb::TerminateRunRequest>,
    ) -> Result<Response<pb::TerminateRunResponse>, Status> {
        Err(Status::not_found("run default/x not found"))
    }
    async fn signal_run(
        &self,
        _: Request<pb::SignalRunRequest>,
    ) -> Result<Response<pb::SignalRunResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_blob(
        &self,
        _: Request<pb::GetBlobRequest>,
    ) -> Result<Response<pb::GetBlobResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

async fn serve() -> (Arc<Fake>, Conn) {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = ClientServiceServer::new(Svc(fake.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (fake, Conn::connect(&addr.to_string(), "default").unwrap())
}

#[tokio::test(flavor = "current_thread")]
async fn watch_resumes_after_the_last_seq_and_exits_with_the_status() {
    let (fake, conn) = serve().await;
    let args = WatchArgs {
        run: key().run_id.to_string(),
        after: 0,
        no_deltas: false,
    };
    let (r, out) = captured(follow::watch(&conn, args)).await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(*fake.watch_after.lock().unwrap(), [0, 3]);
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>(), "{out}");
    assert!(
        out.lines().last().unwrap().contains("RunCompleted"),
        "{out}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn result_without_wait_says_running_and_with_wait_prints_the_result() {
    let (fake, conn) = serve().await;
    let run = key().run_id.to_string();
    let (r, out) = captured(follow::result(
        &conn,
        ResultArgs {
            run: run.clone(),
            wait: false,
            timeout: None,
        },
    ))
    .await;
    assert_eq!(r.unwrap_err().code, exit::RUNNING);
    assert_eq!(out, "");
    fake.await_timeouts.lock().unwrap().clear();
    let (r, out) = captured(follow::result(
        &conn,
        ResultArgs {
            run,
            wait: true,
            timeout: None,
        },
    ))
    .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(out, "\"done\"\n");
    assert_eq!(*fake.await_timeouts.lock().unwrap(), [60_000, 60_000]);
}

#[tokio::test(flavor = "current_thread")]
async fn history_is_fetched_page_by_page_and_exports_replay_offline() {
    let (fake, conn) = serve().await;
    let run = key().run_id.to_string();
    let events = history::fetch(&conn, &run, None).await.unwrap();
    assert_eq!(events, history_wire());
    assert_eq!(*fake.history_from.lock().unwrap(), [1, 5, 9]);
    fake.history_from.lock().unwrap().clear();
    assert_eq!(history::fetch(&conn, &run, Some(6)).await.unwrap().len(), 6);
    assert_eq!(
        *fake.history_from.lock().unwrap(),
        [1, 5],
        "stops at --until"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    let text: String = events
        .iter()
        .map(|e| export::export_line("default", &run, e) + "\n")
        .collect();
    std::fs::write(file.path(), text).unwrap();
    let args = ReplayArgs {
        run: None,
        file: Some(file.path().into()),
        until: None,
        json: true,
    };
    let (r, out) = captured(async { history::replay_file(&args) }).await;
    assert!(r.is_ok(), "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "completed");
    assert_eq!(v["results"][0]["result"], serde_json::json!({"id": 7}));

    let args = ReplayArgs {
        run: Some(run.clone()),
        file: None,
        until: Some(6),
        json: false,
    };
    let (r, out) = captured(history::dispatch(&conn, HistoryCmd::Replay(args))).await;
    assert!(r.is_ok(), "{r:?}");
    assert!(out.starts_with("replayed to    seq 6 ("), "{out}");
}

#[tokio::test(flavor = "current_thread")]
async fn server_errors_are_passed_through() {
    let (_fake, conn) = serve().await;
    let req = pb::TerminateRunRequest::default();
    let e = conn.status(conn.client().terminate_run(req).await.unwrap_err());
    assert_eq!(e.code, exit::ERROR);
    assert_eq!(
        e.message.as_deref(),
        Some("error: run default/x not found (NOT_FOUND)")
    );
}
