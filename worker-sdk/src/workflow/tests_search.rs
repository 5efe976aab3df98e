//! `upsert_search_attributes`: a command with a seq, matched by names and values on replay;
//! the attributes and memo a caller set at start (command seq 0) are not commands.

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;
use steadfast_proto::v1::history_event::Attributes as Ev;

use super::*;
use crate::replay::Replayer;
use crate::search::{SearchValue, list_to_proto};
use crate::testing::TestRun;

fn registry(stage: &'static str) -> Registry {
    let mut r = Registry::new();
    r.register_workflow("tagged", move |ctx: WorkflowContext, _: ()| async move {
        // Given out of order and with a repeated name: sent by name, the last value kept.
        ctx.upsert_search_attributes([
            ("stage", SearchValue::from("new")),
            ("priority", SearchValue::Int(2)),
            ("stage", SearchValue::from(stage)),
        ]);
        let _: String = ctx.activity("a", &()).await?;
        ctx.upsert_search_attributes([("done", SearchValue::Bool(true))]);
        Ok::<_, WorkflowError>(())
    });
    r
}

fn shown(commands: &[pb::Command]) -> Vec<String> {
    commands
        .iter()
        .map(|c| match c.command.as_ref().unwrap() {
            Cmd::UpsertSearchAttributes(u) => format!(
                "{}:attrs({})",
                c.seq,
                u.attributes
                    .iter()
                    .map(|a| format!("{}={:?}", a.name, SearchValue::from_proto(a).unwrap()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Cmd::ScheduleActivity(a) => format!("{}:activity({})", c.seq, a.activity_type),
            Cmd::CompleteRun(_) => format!("{}:complete", c.seq),
            other => format!("{}:{other:?}", c.seq),
        })
        .collect()
}

#[test]
fn upserts_are_commands_that_replay_identically() {
    let mut run = TestRun::new(registry("triaged"), "tagged", &());
    // What a caller set at start: recorded before the first task, not a command.
    run.history()
        .push(Ev::SearchAttributesUpserted(pb::SearchAttributesUpserted {
            command_seq: 0,
            attributes: list_to_proto([("customer", SearchValue::from("acme"))]),
        }))
        .push(Ev::MemoRecorded(pb::MemoRecorded {
            memo: Some(crate::payload::encode(&serde_json::json!({"n": 1})).unwrap()),
        }));
    let mut live = run.step().unwrap();
    assert_eq!(
        shown(&live),
        [
            "1:attrs(priority=Int(2),stage=Keyword(\"triaged\"))",
            "2:activity(a)"
        ]
    );
    run.history().activity_completed(2, &"A");
    let c = run.step().unwrap();
    assert_eq!(shown(&c), ["3:attrs(done=Bool(true))", "4:complete"]);
    live.extend(c);

    let outcome = Replayer::new(registry("triaged"))
        .replay(run.events().to_vec())
        .expect("replay");
    assert!(outcome.commands.is_empty(), "nothing is sent again");
    assert_eq!(outcome.confirmed, live);

    // Code that upserts another value at the same point is nondeterministic.
    let err = Replayer::new(registry("escalated"))
        .replay(run.events().to_vec())
        .expect_err("a different upsert");
    let text = err.to_string();
    assert!(
        text.contains("STF-ND001") && text.contains("command seq 1"),
        "{text}"
    );
}
