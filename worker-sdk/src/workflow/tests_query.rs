//! Query handlers on an instance: answered from the replayed state, typed errors, and no
//! command issued.

use std::cell::Cell;
use std::rc::Rc;

use super::*;
use crate::payload;
use crate::testing::TestRun;

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_workflow("counted", |ctx: WorkflowContext, n: u32| async move {
        let done = Rc::new(Cell::new(0u32));
        let seen = Rc::clone(&done);
        ctx.on_query("done", move |plus: u32| seen.get() + plus);
        ctx.on_query("boom", |_: ()| -> u32 { panic!("no answer") });
        for i in 0..n {
            let _: u32 = ctx.activity("step", &i).await?;
            done.set(i + 1);
        }
        Ok::<_, WorkflowError>(done.get())
    });
    r
}

fn ask(run: &TestRun, name: &str, input: &impl serde::Serialize) -> Result<u32, QueryError> {
    let answer = run
        .instance()
        .query(name, &payload::encode(input).expect("encodes"))?;
    Ok(payload::decode(Some(&answer)).expect("decodes"))
}

#[test]
fn a_query_reads_the_state_the_history_led_to_and_issues_nothing() {
    let mut run = TestRun::new(registry(), "counted", &3u32);
    run.step().expect("first task");
    assert_eq!(ask(&run, "done", &0u32), Ok(0));
    run.history().activity_completed(1, &0u32);
    let commands = run.step().expect("second task");
    assert_eq!(commands.len(), 1, "one new activity: {commands:?}");
    assert_eq!(ask(&run, "done", &10u32), Ok(11));
    // Asking issued nothing: the next step's commands are only the workflow's own.
    assert_eq!(ask(&run, "done", &0u32), Ok(1));
    run.history().activity_completed(2, &1u32);
    let commands = run.step().expect("third task");
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(commands[0].seq, 3);
}

#[test]
fn unknown_names_and_failing_handlers_are_typed() {
    let mut run = TestRun::new(registry(), "counted", &1u32);
    run.step().expect("first task");
    match ask(&run, "nope", &()) {
        Err(QueryError::Unknown { name, known }) => {
            assert_eq!(name, "nope");
            assert_eq!(known, vec!["boom".to_string(), "done".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(ask(&run, "boom", &()), Err(QueryError::Failed { message, .. }) if message.contains("no answer"))
    );
    assert!(
        matches!(ask(&run, "done", &"not a number"), Err(QueryError::Failed { message, .. }) if message.contains("input"))
    );
    // The instance still works after a failed query.
    run.history().activity_completed(1, &0u32);
    let commands = run.step().expect("next task");
    assert_eq!(commands.len(), 1);
}
