//! `llm::chat` in workflow code: it schedules `llm.chat` with the LLM retry policy and
//! timeout, and a replay takes the recorded answer without calling any model.

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;
use steadfast_sdk::llm::{self, ChatRequest, ChatResponse, LlmUsage, Message};
use steadfast_sdk::payload;
use steadfast_sdk::replay::Replayer;
use steadfast_sdk::testing::TestRun;
use steadfast_sdk::workflow::Registry;
use steadfast_sdk::{ActivityError, WorkflowContext, WorkflowError};

async fn ask(ctx: WorkflowContext, question: String) -> Result<String, WorkflowError> {
    let request = ChatRequest::new([Message::user(question)]);
    match llm::chat(&ctx, &request).await {
        Ok(answer) => Ok(answer.text().to_owned()),
        Err(ActivityError::Failed { error_type, .. }) => Ok(format!("failed: {error_type}")),
        Err(e) => Err(e.into()),
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register_workflow("ask", ask);
    llm::declare(&mut registry);
    registry
}

fn answer() -> ChatResponse {
    ChatResponse {
        content: Some("Paris.".into()),
        finish_reason: "stop".into(),
        usage: LlmUsage {
            input_tokens: 5,
            output_tokens: 2,
            cost_micros: 0,
            model: "offline-model".into(),
        },
        model: "offline-model".into(),
        ..Default::default()
    }
}

fn completed_with(commands: &[pb::Command]) -> Option<String> {
    commands.iter().find_map(|c| match &c.command {
        Some(Cmd::CompleteRun(done)) => Some(payload::decode(done.result.as_ref()).unwrap()),
        _ => None,
    })
}

#[test]
fn chat_schedules_llm_chat_with_the_llm_options() {
    let mut run = TestRun::new(registry(), "ask", &"Capital of France?");
    let commands = run.step().unwrap();
    let [
        pb::Command {
            command: Some(Cmd::ScheduleActivity(schedule)),
            ..
        },
    ] = commands.as_slice()
    else {
        panic!("expected one ScheduleActivity, got {commands:?}");
    };
    assert_eq!(schedule.activity_type, llm::ACTIVITY_NAME);
    let input: ChatRequest = payload::decode(schedule.input.as_ref()).unwrap();
    assert_eq!(input.messages, vec![Message::user("Capital of France?")]);
    let options = schedule.options.as_ref().unwrap();
    assert_eq!(options.effect(), pb::Effect::Read);
    assert_eq!(options.start_to_close_timeout_ms, 120_000);
    let retry = options.retry.as_ref().unwrap();
    assert_eq!(
        (
            retry.initial_interval_ms,
            retry.backoff_coefficient,
            retry.maximum_attempts
        ),
        (1_000, 2.0, 5)
    );
    for ty in [llm::BAD_REQUEST_TYPE, llm::AUTH_TYPE] {
        assert!(
            retry.non_retryable_error_types.iter().any(|t| t == ty),
            "{ty}"
        );
    }

    run.history().activity_completed(1, &answer());
    let commands = run.step().unwrap();
    assert_eq!(completed_with(&commands).as_deref(), Some("Paris."));

    // Replayed from its history: the same commands, the recorded answer, no model call.
    let outcome = Replayer::new(registry())
        .replay(run.events().to_vec())
        .unwrap();
    assert!(outcome.finished && outcome.commands.is_empty());
}

#[test]
fn a_final_llm_failure_reaches_the_workflow_typed() {
    let mut run = TestRun::new(registry(), "ask", &"?");
    run.step().unwrap();
    run.history()
        .push(pb::history_event::Attributes::ActivityFailed(
            pb::ActivityFailed {
                command_seq: 1,
                attempt: 1,
                failure: Some(
                    ActivityError::from(llm::Error::from_status(401, "bad key".into()))
                        .to_failure(),
                ),
                retry_at_ms: 0,
                duration_ms: 3,
                usage: None,
            },
        ));
    let commands = run.step().unwrap();
    assert_eq!(
        completed_with(&commands).as_deref(),
        Some("failed: LlmAuth")
    );
}
