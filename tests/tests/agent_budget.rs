//! Budgets in the engine, across processes: a run started with `--max-tokens`,
//! `--max-activities` or `--max-cost-usd` is not dispatched past its ceiling, parks with
//! "waiting on budget" (also across a SIGKILL of the server), and resumes when
//! `steadfast run budget` raises the ceiling. Usage totals add up to what the LLM-like
//! activities reported.

mod agent_common;

use agent_common::{Env, waiting_of};
use anyhow::{Result, ensure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

/// One call's usage, drawn from the seed.
#[derive(Clone, Copy, Debug)]
struct Call {
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
}

impl Call {
    fn draw(rng: &mut StdRng) -> Call {
        Call {
            input_tokens: rng.gen_range(20..80),
            output_tokens: rng.gen_range(10..50),
            cost_micros: rng.gen_range(1_000..3_000),
        }
    }

    fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    fn agent_input(&self, steps: u32) -> String {
        json!({
            "steps": steps, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cost_micros": self.cost_micros, "model": "fake-model",
        })
        .to_string()
    }
}

/// `n` micros as a dollar amount for `--max-cost-usd`.
fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Sums the usage recorded in the history's ActivityCompleted events: (tokens, cost, calls).
fn history_usage(env: &Env, run: &str) -> Result<(u64, u64, u64)> {
    let events = env.rt.block_on(env.client().history(run))?;
    let mut sum = (0, 0, 0);
    for e in &events {
        if let Some(A::ActivityCompleted(c)) = &e.attributes
            && let Some(u) = &c.usage
        {
            sum.0 += u.input_tokens + u.output_tokens;
            sum.1 += u.cost_micros;
            sum.2 += 1;
        }
    }
    Ok(sum)
}

/// Asserts the usage of `run show --json` after `calls` calls of `call`, with `scheduled`
/// activities scheduled.
fn assert_usage(show: &Value, call: Call, calls: u64, scheduled: u64) -> Result<()> {
    let u = &show["usage"];
    ensure!(
        u["input_tokens"] == calls * call.input_tokens
            && u["output_tokens"] == calls * call.output_tokens
            && u["tokens"] == calls * call.tokens()
            && u["cost_micros"] == calls * call.cost_micros
            && u["llm_calls"] == calls
            && u["activities"] == scheduled,
        "usage after {calls} calls of {call:?} ({scheduled} scheduled): {u}"
    );
    Ok(())
}

/// Asserts that the run is parked on `dimension` with `limit` and `used`, still running.
fn assert_parked(show: &Value, dimension: &str, limit: u64, used: u64) -> Result<()> {
    ensure!(show["status"] == "running", "status: {}", show["status"]);
    let budget = waiting_of(show, "budget");
    ensure!(
        budget.len() == 1
            && budget[0]["dimension"] == dimension
            && budget[0]["limit"] == limit
            && budget[0]["used"] == used,
        "expected waiting on budget {dimension} {used}/{limit}, got {}",
        show["waiting_on"]
    );
    // Parked on the budget, the run waits on nothing the worker could do.
    ensure!(
        waiting_of(show, "activity")
            .iter()
            .all(|a| a["state"] != "running"),
        "no activity may run while parked: {}",
        show["waiting_on"]
    );
    Ok(())
}

/// Waits for the run to complete and checks its result has `steps` replies.
fn assert_completes(env: &Env, run: &str, steps: u32) -> Result<Value> {
    let info = env.wait_closed(run)?;
    ensure!(
        info.status() == pb::RunStatus::Completed,
        "run ended {:?}: {:?}",
        info.status(),
        info.failure
    );
    let out = env.ok(&["run", "result", run])?;
    let result: Value = serde_json::from_str(&out)?;
    ensure!(
        result["replies"].as_array().map(Vec::len) == Some(steps as usize),
        "result: {result}"
    );
    let starts = env.starts(run)?;
    let steps_seen: Vec<u64> = starts.iter().filter_map(|s| s["step"].as_u64()).collect();
    ensure!(
        steps_seen == (0..u64::from(steps)).collect::<Vec<_>>(),
        "each LLM call runs exactly once, in order: {steps_seen:?}"
    );
    env.show(run)
}

#[test]
fn token_budget_parks_the_run_across_a_server_crash_until_raised() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(agent_common::seed());
    let call = Call::draw(&mut rng);
    let steps = 5u32;
    // Calls 1-3 start below the ceiling (0, 1x, 2x < 2.5x); after the third it is reached.
    let limit = call.tokens() * 5 / 2;
    let mut env = Env::start()?;
    let _worker = env.worker()?;
    let limit_s = limit.to_string();
    let run = env.start_run(
        "llm_agent",
        &call.agent_input(steps),
        &["--max-tokens", &limit_s],
    )?;

    env.wait_waiting(&run, "budget")?;
    let show = env.show(&run)?;
    assert_parked(&show, "tokens", limit, 3 * call.tokens())?;
    assert_usage(&show, call, 3, 4)?;
    ensure!(env.starts(&run)?.len() == 3, "the 4th call was dispatched");
    // Usage is visible to people too.
    let text = env.ok(&["run", "show", &run])?;
    let want = format!(
        "4 activities, 3 LLM calls, {} tokens ({} in, {} out)",
        3 * call.tokens(),
        3 * call.input_tokens,
        3 * call.output_tokens
    );
    ensure!(text.contains(&want), "run show lacks {want:?}:\n{text}");
    ensure!(
        text.contains(&format!("budget: tokens {}/{limit}", 3 * call.tokens())),
        "run show does not say it waits on the budget:\n{text}"
    );
    let table = env.ok(&["run", "list", "--waiting", "budget"])?;
    let row = table
        .lines()
        .find(|l| l.starts_with(&run))
        .ok_or_else(|| anyhow::anyhow!("run list --waiting budget lacks {run}:\n{table}"))?;
    let cells: Vec<&str> = row.split_whitespace().collect();
    ensure!(
        cells.contains(&"4") && cells.contains(&(3 * call.tokens()).to_string().as_str()),
        "run list row lacks the steps / tokens: {row}"
    );

    // SIGKILL the server: the park is durable.
    env.server_restart()?;
    let show = env.show(&run)?;
    assert_parked(&show, "tokens", limit, 3 * call.tokens())?;
    assert_usage(&show, call, 3, 4)?;
    // The worker is back at work on the restarted server (another run completes), and the
    // parked run's next call still was not dispatched.
    let other = env.start_run("llm_agent", &call.agent_input(1), &[])?;
    assert_completes(&env, &other, 1)?;
    ensure!(
        env.starts(&run)?.len() == 3,
        "the parked call was dispatched after the restart"
    );
    let show = env.show(&run)?;
    assert_parked(&show, "tokens", limit, 3 * call.tokens())?;

    // Raised, but not past what is used: the run parks again, on the new ceiling.
    let short = (3 * call.tokens()).to_string();
    env.ok(&["run", "budget", &run, "--max-tokens", &short])?;
    env.wait_run(&run, "the run to park on the new ceiling", |r| {
        r.waiting_on.iter().any(|w| {
            matches!(&w.what, Some(pb::waiting_on::What::Budget(b)) if b.limit == 3 * call.tokens())
        })
    })?;
    assert_parked(
        &env.show(&run)?,
        "tokens",
        3 * call.tokens(),
        3 * call.tokens(),
    )?;
    ensure!(env.starts(&run)?.len() == 3, "dispatched past the ceiling");

    let raised = (call.tokens() * 10).to_string();
    let out = env.ok(&["run", "budget", &run, "--max-tokens", &raised])?;
    ensure!(out.contains(&format!("max_tokens={raised}")), "{out}");
    let show = assert_completes(&env, &run, steps)?;
    assert_usage(&show, call, u64::from(steps), u64::from(steps))?;
    ensure!(show["waiting_on"] == json!([]), "{}", show["waiting_on"]);
    let (tokens, cost, calls) = history_usage(&env, &run)?;
    ensure!(
        tokens == show["usage"]["tokens"] && cost == show["usage"]["cost_micros"] && calls == 5,
        "totals {} differ from the sum of the recorded calls ({tokens}, {cost}, {calls})",
        show["usage"]
    );
    Ok(())
}

#[test]
fn activity_budget_stops_the_next_activity_until_raised() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(agent_common::seed());
    let call = Call::draw(&mut rng);
    let k = rng.gen_range(1..4u64);
    let steps = k as u32 + 2;
    let env = Env::start()?;
    let _worker = env.worker()?;
    let k_s = k.to_string();
    let run = env.start_run(
        "llm_agent",
        &call.agent_input(steps),
        &["--max-activities", &k_s],
    )?;
    env.wait_waiting(&run, "budget")?;
    let show = env.show(&run)?;
    assert_parked(&show, "activities", k, k)?;
    assert_usage(&show, call, k, k + 1)?;
    ensure!(
        env.starts(&run)?.len() as u64 == k,
        "activity {} was dispatched",
        k + 1
    );
    // Raised on the same server (no restart): the parked activity is offered again.
    env.ok(&["run", "budget", &run, "--max-activities", "100"])?;
    let show = assert_completes(&env, &run, steps)?;
    assert_usage(&show, call, u64::from(steps), u64::from(steps))?;
    Ok(())
}

#[test]
fn cost_budget_stops_the_next_llm_call_until_raised() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(agent_common::seed());
    let call = Call::draw(&mut rng);
    let steps = 4u32;
    // Calls 1 and 2 start below the ceiling (0, 1x < 1.5x); the third would cross it.
    let limit = call.cost_micros * 3 / 2;
    let env = Env::start()?;
    let _worker = env.worker()?;
    let run = env.start_run(
        "llm_agent",
        &call.agent_input(steps),
        &["--max-cost-usd", &usd(limit)],
    )?;
    env.wait_waiting(&run, "budget")?;
    let show = env.show(&run)?;
    assert_parked(&show, "cost", limit, 2 * call.cost_micros)?;
    assert_usage(&show, call, 2, 3)?;
    ensure!(
        env.starts(&run)?.len() == 2,
        "the third call was dispatched"
    );
    ensure!(
        show["budget"]["max_cost_micros"] == limit,
        "{}",
        show["budget"]
    );
    env.ok(&["run", "budget", &run, "--max-cost-usd", "1"])?;
    let show = assert_completes(&env, &run, steps)?;
    assert_usage(&show, call, u64::from(steps), u64::from(steps))?;
    ensure!(
        show["budget"]["max_cost_micros"] == 1_000_000,
        "{}",
        show["budget"]
    );
    Ok(())
}

#[test]
fn wall_time_budget_stops_the_next_activity_until_raised() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _worker = env.worker()?;
    // Steps of 1.5 s under a 2 s budget: steps 0 and 1 start in time, step 2 would not.
    let run = env.start_run(
        "steps",
        r#"{"n":4,"step_ms":1500}"#,
        &["--max-duration", "2s"],
    )?;
    env.wait_waiting(&run, "budget")?;
    let show = env.show(&run)?;
    ensure!(show["status"] == "running", "{}", show["status"]);
    let b = waiting_of(&show, "budget");
    ensure!(
        b.len() == 1
            && b[0]["dimension"] == "duration"
            && b[0]["limit"] == 2_000
            && b[0]["used"].as_u64().is_some_and(|u| u >= 2_000),
        "{}",
        show["waiting_on"]
    );
    ensure!(env.starts(&run)?.len() == 2, "step 2 was dispatched");
    // The partial result of the two steps is visible while parked.
    ensure!(
        show["result"]["done"].as_array().map(Vec::len) == Some(2),
        "{}",
        show["result"]
    );
    env.ok(&["run", "budget", &run, "--max-duration", "1h"])?;
    let info = env.wait_closed(&run)?;
    ensure!(info.status() == pb::RunStatus::Completed, "{info:?}");
    ensure!(env.starts(&run)?.len() == 4);
    Ok(())
}
