//! The instance cache: deltas for cached runs, history for the others.

use std::num::NonZeroUsize;
use std::sync::Arc;

use steadfast_proto::v1 as pb;

use super::{Cache, Outcome, WorkflowThreads};
use crate::testing::HistoryBuilder;
use crate::workflow::{Error, Registry, WorkflowContext, WorkflowError};

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.register_workflow("two", |ctx: WorkflowContext, (): ()| async move {
        let a: u32 = ctx.activity("a", &()).await?;
        let b: u32 = ctx.activity("b", &()).await?;
        Ok::<_, WorkflowError>(a + b)
    });
    Arc::new(r)
}

fn task(run_id: &str, h: &HistoryBuilder, after: u64) -> pb::PollWorkflowTaskResponse {
    pb::PollWorkflowTaskResponse {
        task_token: "t".into(),
        run_id: run_id.into(),
        workflow_type: "two".into(),
        events: h.events_after(after),
        first_seq: after + 1,
        ..Default::default()
    }
}

fn completed(o: Outcome) -> Vec<pb::Command> {
    match o {
        Outcome::Completed(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn cached_runs_get_deltas_and_others_ask_for_history() {
    let mut cache = Cache::new(registry(), NonZeroUsize::new(1).unwrap());
    let mut h = HistoryBuilder::new("two", &());
    h.start_task();
    let c = completed(cache.activate(task("r1", &h, 0), None));
    let mut seen = h.last_seq();
    h.complete_task(&c)
        .activity_completed(1, &1u32)
        .start_task();

    // Cached: the delta alone is enough.
    let c = completed(cache.activate(task("r1", &h, seen), None));
    assert_eq!(c.len(), 1);
    seen = h.last_seq();
    h.complete_task(&c)
        .activity_completed(2, &2u32)
        .start_task();

    // A second run takes the only cache slot: r1 is evicted and must be replayed.
    let mut other = HistoryBuilder::new("two", &());
    other.start_task();
    completed(cache.activate(task("r2", &other, 0), None));
    let Outcome::NeedHistory(back) = cache.activate(task("r1", &h, seen), None) else {
        panic!("r1 was evicted")
    };
    let earlier = h.events()[..seen as usize].to_vec();
    let c = completed(cache.activate(back, Some(earlier)));
    assert!(matches!(
        c[0].command,
        Some(pb::command::Command::CompleteRun(_))
    ));
}

#[test]
fn a_delta_that_does_not_follow_the_cached_instance_asks_for_history() {
    let mut cache = Cache::new(registry(), NonZeroUsize::new(4).unwrap());
    let mut h = HistoryBuilder::new("two", &());
    h.start_task();
    let c = completed(cache.activate(task("r1", &h, 0), None));
    h.complete_task(&c)
        .activity_completed(1, &1u32)
        .start_task();
    assert!(matches!(
        cache.activate(task("r1", &h, 5), None),
        Outcome::NeedHistory(_)
    ));
}

#[test]
fn unknown_types_and_nondeterminism_are_failures() {
    let mut cache = Cache::new(registry(), NonZeroUsize::new(4).unwrap());
    let mut h = HistoryBuilder::new("two", &());
    h.start_task();
    let mut t = task("r1", &h, 0);
    t.workflow_type = "three".into();
    assert!(matches!(
        cache.activate(t, None),
        Outcome::Failed(Error::UnknownWorkflowType(_))
    ));

    let mut h = HistoryBuilder::new("two", &());
    h.start_task().complete_task(&[]).start_task();
    assert!(matches!(
        cache.activate(task("r1", &h, 0), None),
        Outcome::Failed(Error::Nondeterminism { seq: 1, .. })
    ));
}

/// Released by the test once it has seen the watchdog act, so that the abandoned thread
/// can finish (it exits: its job queue is closed).
static RELEASE: parking_lot::Mutex<Option<std::sync::mpsc::Receiver<()>>> =
    parking_lot::Mutex::new(None);

fn watched_registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.register_workflow("blocks", |_: WorkflowContext, (): ()| async move {
        // Blocking code in a workflow: it never yields until the test lets it.
        let rx = RELEASE.lock().take();
        if let Some(rx) = rx {
            let _ = rx.recv();
        }
        Ok::<_, WorkflowError>(())
    });
    r.register_workflow("quick", |_: WorkflowContext, (): ()| async move {
        Ok::<_, WorkflowError>(1u32)
    });
    Arc::new(r)
}

fn first_task(run_id: &str, workflow_type: &str) -> pb::PollWorkflowTaskResponse {
    let mut h = HistoryBuilder::new(workflow_type, &());
    h.start_task();
    pb::PollWorkflowTaskResponse {
        task_token: "t".into(),
        run_id: run_id.into(),
        workflow_type: workflow_type.into(),
        events: h.events().to_vec(),
        first_seq: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_that_does_not_yield_is_abandoned_and_the_thread_replaced() {
    let (release, rx) = std::sync::mpsc::channel();
    *RELEASE.lock() = Some(rx);
    let bound = std::time::Duration::from_millis(100);
    // One thread: the run behind the stuck one must be served by its replacement.
    let threads = WorkflowThreads::start(watched_registry(), 1, 8, bound).unwrap();
    let t0 = std::time::Instant::now();
    let (stuck, queued) = tokio::join!(
        threads.activate(first_task("stuck", "blocks"), None),
        async {
            tokio::task::yield_now().await;
            threads.activate(first_task("behind", "quick"), None).await
        }
    );
    let Outcome::Failed(e) = stuck else {
        panic!("{stuck:?}")
    };
    assert_eq!(e, Error::DidNotYield { limit_ms: 100 });
    assert!(e.to_string().starts_with("[STF-WT004]"), "{e}");
    assert_eq!(e.fail_cause(), pb::WorkflowTaskFailCause::WorkflowBlocked);
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        matches!(&queued, Outcome::Completed(c) if c.len() == 1),
        "the run queued behind it is served: {queued:?}"
    );
    // Quarantined: its next task fails at once, without costing another thread.
    assert!(matches!(
        threads.activate(first_task("stuck", "blocks"), None).await,
        Outcome::Failed(Error::DidNotYield { .. })
    ));
    assert!(matches!(
        threads.activate(first_task("other", "quick"), None).await,
        Outcome::Completed(_)
    ));
    let _ = release.send(());
}
