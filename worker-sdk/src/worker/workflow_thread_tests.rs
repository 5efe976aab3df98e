//! The instance cache: deltas for cached runs, history for the others.

use std::num::NonZeroUsize;
use std::sync::Arc;

use steadfast_proto::v1 as pb;

use super::{Cache, Outcome};
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
