//! Update handlers on an instance: validated, run as workflow code beside the workflow,
//! answered by a command; the same history replays to the same commands.

use std::cell::RefCell;
use std::rc::Rc;

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;

use super::*;
use crate::replay::Replayer;
use crate::testing::TestRun;

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_workflow("steer", |ctx: WorkflowContext, _: ()| async move {
        let items = Rc::new(RefCell::new(Vec::<String>::new()));
        let (list, hctx) = (Rc::clone(&items), ctx.clone());
        ctx.on_update_validated(
            "add",
            |item: &String| {
                if item.starts_with("bad") {
                    Err("no bad items".to_string())
                } else {
                    Ok(())
                }
            },
            move |item: String| {
                let (list, ctx) = (Rc::clone(&list), hctx.clone());
                async move {
                    let _: u32 = ctx.activity("step", &item).await?;
                    list.borrow_mut().push(item);
                    let len = list.borrow().len();
                    Ok::<_, WorkflowError>(len)
                }
            },
        );
        let _: serde_json::Value = ctx.wait_signal("finish").await?;
        let out = items.borrow().clone();
        Ok::<_, WorkflowError>(out)
    });
    r
}

fn kinds(commands: &[pb::Command]) -> Vec<String> {
    commands
        .iter()
        .map(|c| match c.command.as_ref().unwrap() {
            Cmd::ScheduleActivity(a) => format!("{}:activity({})", c.seq, a.activity_type),
            Cmd::WaitSignal(w) => format!("{}:wait({})", c.seq, w.name),
            Cmd::CompleteUpdate(u) => format!(
                "{}:update_done({},{})",
                c.seq,
                u.update_id,
                String::from_utf8_lossy(&u.result.as_ref().unwrap().data)
            ),
            Cmd::RejectUpdate(u) => {
                format!("{}:update_rejected({},{})", c.seq, u.update_id, u.reason)
            }
            Cmd::CompleteRun(r) => format!(
                "{}:complete({})",
                c.seq,
                String::from_utf8_lossy(&r.result.as_ref().unwrap().data)
            ),
            other => format!("{}:{other:?}", c.seq),
        })
        .collect()
}

#[test]
fn an_update_is_validated_runs_an_activity_and_replays_identically() {
    let mut run = TestRun::new(registry(), "steer", &());
    assert_eq!(kinds(&run.step().unwrap()), ["1:wait(finish)"]);
    run.history().update("u-bad", "add", &"bad-x");
    assert_eq!(
        kinds(&run.step().unwrap()),
        ["2:update_rejected(u-bad,no bad items)"]
    );
    run.history().update("u-1", "add", &"alpha");
    run.history().update("u-2", "nope", &"x");
    // Every update delivered is validated (in history order) before the handlers run.
    assert_eq!(
        kinds(&run.step().unwrap()),
        [
            "3:update_rejected(u-2,the workflow has no update handler \"nope\" (it has [\"add\"]))"
                .to_string(),
            "4:activity(step)".to_string(),
        ]
    );
    run.history().activity_completed(4, &0u32);
    assert_eq!(kinds(&run.step().unwrap()), ["5:update_done(u-1,1)"]);
    run.history().signal("finish", &());
    assert_eq!(kinds(&run.step().unwrap()), ["6:complete([\"alpha\"])"]);
    // The whole history replays from scratch with no new command.
    let outcome = Replayer::new(registry())
        .replay(run.events().to_vec())
        .expect("replays");
    assert!(outcome.commands.is_empty(), "{:?}", outcome.commands);
    assert!(outcome.finished);
}
