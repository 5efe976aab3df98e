//! The cost of a cold replay: a 50,000-event history (10,000 sequential activities).
//! Target < 100 ms in release builds; debug builds only print the time.

use std::time::Instant;

use steadfast_sdk::replay::Replayer;
use steadfast_sdk::testing::TestRun;
use steadfast_sdk::workflow::Registry;
use steadfast_sdk::{WorkflowContext, WorkflowError};

async fn many(ctx: WorkflowContext, n: u32) -> Result<u64, WorkflowError> {
    let mut sum = 0u64;
    for i in 0..n {
        sum += ctx.activity::<u64>("step", &i).await?;
    }
    Ok(sum)
}

#[test]
fn cold_replay_of_50k_events() {
    let mut registry = Registry::new();
    registry.register_workflow("many", many);
    let steps = 10_000u32;
    let mut run = TestRun::new(registry.clone(), "many", &steps);
    run.step().unwrap();
    for i in 1..=steps {
        run.history().activity_completed(i, &7u64);
        run.step().unwrap();
    }
    let events = run.events().to_vec();
    assert!(events.len() >= 50_000, "{} events", events.len());

    let replayer = Replayer::new(registry);
    let mut best = std::time::Duration::MAX;
    for _ in 0..3 {
        let events = events.clone();
        let t = Instant::now();
        let outcome = replayer.replay(events).unwrap();
        best = best.min(t.elapsed());
        assert!(outcome.finished && outcome.commands.is_empty());
    }
    eprintln!("cold replay of {} events: {:?}", events.len(), best);
    if !cfg!(debug_assertions) {
        assert!(best.as_millis() < 100, "cold replay took {best:?}");
    }
}
