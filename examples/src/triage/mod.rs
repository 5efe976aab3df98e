//! The support-ticket triage agent: load tickets (a tool), classify them in batches with LLM
//! calls running concurrently under a limit, merge the themes across batches, draft the
//! summary with a final LLM call, and write a Markdown report. Progress is reported after
//! every batch, and the report so far is kept as the run's partial result, so a cancelled or
//! stopped run still ends with what it found.

pub mod report;

use std::collections::HashMap;
use std::future::poll_fn;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::Poll;

use serde::{Deserialize, Serialize};
use steadfast_sdk::activity::{ActivityContext, ActivityError};
use steadfast_sdk::llm::{self, ChatRequest, ChatResponse, LlmClient, Message, offline};
use steadfast_sdk::workflow::ActivityFuture;
use steadfast_sdk::{Effect, Worker, WorkflowContext, WorkflowError};

use report::{Classified, Facts, Footer};

/// The workflow type.
pub const WORKFLOW_TYPE: &str = "triage";
/// Tickets per classify call.
pub const DEFAULT_BATCH_SIZE: usize = 20;
/// Classify calls in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Largest ticket file the load tool reads (bytes).
pub const TICKETS_BYTES_MAX: u64 = 1024 * 1024;

/// One support ticket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// Id.
    pub id: String,
    /// When it was created.
    #[serde(default)]
    pub created_at: String,
    /// email, chat, phone, ...
    #[serde(default)]
    pub channel: String,
    /// Product.
    #[serde(default)]
    pub product: String,
    /// free, pro, enterprise.
    #[serde(default)]
    pub customer_tier: String,
    /// Subject.
    #[serde(default)]
    pub subject: String,
    /// Body.
    #[serde(default)]
    pub body: String,
}

/// The workflow's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriageInput {
    /// JSON Lines file of tickets (read by the worker's load tool).
    pub tickets_path: String,
    /// Only the first N tickets.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Tickets per classify call.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Classify calls in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Where the worker writes the Markdown report.
    pub report_path: String,
}

fn default_batch() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

/// The workflow's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriageOutput {
    /// Where the report is.
    pub report_path: String,
    /// Report facts.
    pub facts: Facts,
    /// Usage and ids.
    pub footer: Footer,
    /// Durability accounting of the LLM calls (see [`WriteOutcome`]).
    pub durability: WriteOutcome,
}

/// What the partial result holds while the run is under way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partial {
    /// Tickets classified so far.
    pub tickets_classified: u64,
    /// Of all tickets.
    pub tickets_total: u64,
    /// Theme label -> tickets so far (before merging).
    pub themes_so_far: Vec<(String, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LoadInput {
    path: String,
    limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WriteInput {
    path: String,
    markdown: String,
    run_id: String,
    llm_activity_ids: Vec<u32>,
}

/// How the LLM calls of a run were served, as seen by the worker that wrote the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// LLM results recorded in the run's history.
    pub llm_calls_recorded: u64,
    /// Of those, executed by the worker process that wrote the report.
    pub executed_by_this_worker: u64,
    /// Of those, replayed from the log (executed by an earlier worker, not called again).
    pub replayed_from_log: u64,
    /// Recorded LLM calls whose execution log shows more than one execution (retries of
    /// attempts whose result was never recorded; never a recorded result run again).
    pub executed_more_than_once: u64,
    /// Execution-log lines of this run (every attempt that actually called the model).
    pub executions_logged: u64,
}

static EXEC_LOG: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Sets the file where every LLM call this worker executes is logged (`run activity attempt
/// pid`), so a run can prove which results were replayed instead of called again.
pub fn set_execution_log(path: Option<PathBuf>) {
    let _ = EXEC_LOG.set(path);
}

fn log_execution(ctx: &ActivityContext) -> Result<(), ActivityError> {
    let Some(Some(path)) = EXEC_LOG.get() else {
        return Ok(());
    };
    let line = format!(
        "{} {} {} {}\n",
        ctx.run_id(),
        ctx.activity_id(),
        ctx.attempt(),
        std::process::id()
    );
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ActivityError::retryable(format!("execution log {}: {e}", path.display())))?;
    f.write_all(line.as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(|e| ActivityError::retryable(format!("execution log: {e}")))
}

/// Registers the workflow and its activities (the LLM calls go to `client`).
pub fn register(worker: &mut Worker, client: LlmClient) {
    worker.register_workflow(WORKFLOW_TYPE, triage);
    worker.register_activity("triage.load_tickets", Effect::Read, load_tickets);
    worker.register_activity("triage.write_report", Effect::Idempotent, write_report);
    worker.register_activity(
        llm::ACTIVITY_NAME,
        llm::ACTIVITY_EFFECT,
        move |ctx: ActivityContext, req: ChatRequest| {
            let client = client.clone();
            async move {
                log_execution(&ctx)?;
                client.run_activity(&ctx, req).await
            }
        },
    );
}

async fn load_tickets(
    _ctx: ActivityContext,
    input: LoadInput,
) -> Result<Vec<Ticket>, ActivityError> {
    let meta = std::fs::metadata(&input.path).map_err(|e| {
        ActivityError::non_retryable(format!("cannot read tickets file {}: {e}", input.path))
            .with_type("BadInput")
    })?;
    if meta.len() > TICKETS_BYTES_MAX {
        return Err(ActivityError::non_retryable(format!(
            "tickets file is {} bytes; the limit is {TICKETS_BYTES_MAX}: pass --limit or split it",
            meta.len()
        ))
        .with_type("BadInput"));
    }
    let text = std::fs::read_to_string(&input.path).map_err(|e| {
        ActivityError::non_retryable(format!("{}: {e}", input.path)).with_type("BadInput")
    })?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let t: Ticket = serde_json::from_str(line).map_err(|e| {
            ActivityError::non_retryable(format!("{} line {}: {e}", input.path, i + 1))
                .with_type("BadInput")
        })?;
        out.push(t);
        if input.limit.is_some_and(|n| out.len() >= n) {
            break;
        }
    }
    Ok(out)
}

async fn write_report(
    ctx: ActivityContext,
    input: WriteInput,
) -> Result<WriteOutcome, ActivityError> {
    let mut outcome = WriteOutcome {
        llm_calls_recorded: input.llm_activity_ids.len() as u64,
        ..Default::default()
    };
    if let Some(Some(path)) = EXEC_LOG.get() {
        let me = std::process::id().to_string();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut runs: HashMap<u32, (u64, bool)> = HashMap::new();
        for l in text.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() == 4 && f[0] == ctx.run_id() {
                if let Ok(id) = f[1].parse::<u32>() {
                    let e = runs.entry(id).or_default();
                    e.0 += 1;
                    e.1 |= f[3] == me;
                }
                outcome.executions_logged += 1;
            }
        }
        for id in &input.llm_activity_ids {
            let (n, mine) = runs.get(id).copied().unwrap_or((0, false));
            if mine {
                outcome.executed_by_this_worker += 1;
            } else {
                outcome.replayed_from_log += 1;
            }
            if n > 1 {
                outcome.executed_more_than_once += 1;
            }
        }
    } else {
        outcome.executed_by_this_worker = outcome.llm_calls_recorded;
    }
    let mut md = input.markdown;
    md.push_str(&format!(
        "Durability: {} LLM results recorded in the log; {} executed by the worker that wrote this report, {} replayed from the log instead of being called again{}.\n",
        outcome.llm_calls_recorded,
        outcome.executed_by_this_worker,
        outcome.replayed_from_log,
        if outcome.executed_more_than_once > 0 { format!(" ({} calls were retried after an attempt whose result was never recorded)", outcome.executed_more_than_once) } else { String::new() }
    ));
    let tmp = format!("{}.tmp", input.path);
    std::fs::write(&tmp, md.as_bytes())
        .and_then(|_| std::fs::rename(&tmp, &input.path))
        .map_err(|e| {
            ActivityError::retryable(format!("cannot write report {}: {e}", input.path))
        })?;
    Ok(outcome)
}

fn to_llm(messages: Vec<offline::Message>) -> Vec<Message> {
    messages
        .into_iter()
        .map(|m| Message::new(&m.role, m.content))
        .collect()
}

/// Extracts the JSON object of a model's answer (real models sometimes wrap it in prose or a
/// code fence).
fn json_object<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?).ok()
}

struct Usage {
    footer: Footer,
    models: Vec<String>,
}

impl Usage {
    fn add(&mut self, r: &ChatResponse) {
        self.footer.llm_calls += 1;
        self.footer.input_tokens += r.usage.input_tokens;
        self.footer.output_tokens += r.usage.output_tokens;
        self.footer.cost_micros += r.usage.cost_micros;
        if !self.models.contains(&r.model) {
            self.models.push(r.model.clone());
        }
    }
}

type Call = Pin<Box<ActivityFuture<ChatResponse>>>;

/// The triage workflow.
pub async fn triage(
    ctx: WorkflowContext,
    input: TriageInput,
) -> Result<TriageOutput, WorkflowError> {
    let batch_size = input.batch_size.clamp(1, 200);
    let concurrency = input.concurrency.clamp(1, 64);
    ctx.progress(0, 0, "loading tickets");
    let tickets: Vec<Ticket> = ctx
        .activity(
            "triage.load_tickets",
            &LoadInput {
                path: input.tickets_path.clone(),
                limit: input.limit,
            },
        )
        .await?;
    let total = tickets.len() as u64;
    let batches: Vec<&[Ticket]> = tickets.chunks(batch_size).collect();
    let mut usage = Usage {
        footer: Footer {
            run_id: ctx.run_id().to_string(),
            ..Default::default()
        },
        models: Vec::new(),
    };
    let mut llm_ids = Vec::new();
    let mut classified: HashMap<String, Classified> = HashMap::new();
    let mut label_counts: HashMap<String, u64> = HashMap::new();
    let mut in_flight: Vec<(usize, Call)> = Vec::new();
    let (mut next, mut done) = (0usize, 0u64);
    ctx.progress(
        0,
        total,
        format!("classifying {total} tickets in {} batches", batches.len()),
    );
    loop {
        while in_flight.len() < concurrency && next < batches.len() && !ctx.is_cancel_requested() {
            let lines: Vec<String> = batches[next]
                .iter()
                .map(|t| serde_json::json!({"id": t.id, "product": t.product, "channel": t.channel, "subject": t.subject, "body": t.body}).to_string())
                .collect();
            let call = llm::chat(
                &ctx,
                &ChatRequest::new(to_llm(offline::classify_prompt(&lines.join("\n")))),
            );
            llm_ids.push(call.id());
            in_flight.push((next, Box::pin(call)));
            next += 1;
        }
        if in_flight.is_empty() {
            break;
        }
        // The first finished call in issue order: deterministic on every replay.
        let (i, result) = poll_fn(|cx| {
            for (k, (_, f)) in in_flight.iter_mut().enumerate() {
                if let Poll::Ready(r) = f.as_mut().poll(cx) {
                    return Poll::Ready((k, r));
                }
            }
            Poll::Pending
        })
        .await;
        let (b, _) = in_flight.remove(i);
        done += batches[b].len() as u64;
        match result {
            Ok(resp) => {
                usage.add(&resp);
                match resp
                    .content
                    .as_deref()
                    .and_then(json_object::<offline::ClassifyAnswer>)
                {
                    Some(answer) => {
                        let ids: std::collections::HashSet<&str> =
                            batches[b].iter().map(|t| t.id.as_str()).collect();
                        for c in answer
                            .tickets
                            .into_iter()
                            .filter(|c| ids.contains(c.id.as_str()))
                        {
                            if !c.noise {
                                *label_counts
                                    .entry(c.theme.trim().to_lowercase())
                                    .or_default() += 1;
                            }
                            classified.insert(
                                c.id.clone(),
                                Classified {
                                    id: c.id,
                                    theme: c.theme,
                                    severity: c.severity,
                                    noise: c.noise,
                                },
                            );
                        }
                    }
                    None => usage.footer.failed_batches += 1,
                }
            }
            Err(_) => usage.footer.failed_batches += 1,
        }
        ctx.progress(
            done,
            total,
            format!("classified batch {} of {}", b + 1, batches.len()),
        );
        let mut so_far: Vec<(String, u64)> =
            label_counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
        so_far.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        so_far.truncate(20);
        ctx.set_partial_result(&Partial {
            tickets_classified: classified.len() as u64,
            tickets_total: total,
            themes_so_far: so_far,
        })?;
    }
    if ctx.is_cancel_requested() {
        let partial = serde_json::to_value(Partial {
            tickets_classified: classified.len() as u64,
            tickets_total: total,
            themes_so_far: {
                let mut v: Vec<(String, u64)> = label_counts.into_iter().collect();
                v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                v
            },
        })?;
        return Err(WorkflowError::Cancelled {
            partial: Some(partial),
        });
    }

    ctx.progress(done, total, "merging themes across batches");
    let mut labels: Vec<(String, u64)> = label_counts.into_iter().collect();
    labels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut canonical: HashMap<String, String> = HashMap::new();
    if !labels.is_empty() {
        let call = llm::chat(
            &ctx,
            &ChatRequest::new(to_llm(offline::merge_prompt(&labels))),
        );
        llm_ids.push(call.id());
        let resp = call.await?;
        usage.add(&resp);
        if let Some(answer) = resp
            .content
            .as_deref()
            .and_then(json_object::<offline::MergeAnswer>)
        {
            for t in answer.themes {
                for l in t.labels {
                    canonical.insert(l.trim().to_lowercase(), t.name.trim().to_lowercase());
                }
            }
        }
    }
    let facts = report::facts(&tickets, &classified, &canonical);

    ctx.progress(done, total, "drafting the summary");
    let facts_json = serde_json::to_string(&report::summary_facts(&facts))?;
    let call = llm::chat(
        &ctx,
        &ChatRequest::new(to_llm(offline::summary_prompt(&facts_json))),
    );
    llm_ids.push(call.id());
    let resp = call.await?;
    usage.add(&resp);
    let prose = resp.content.unwrap_or_default();

    usage.footer.model = usage.models.join(", ");
    let markdown = report::render(&facts, &prose, &usage.footer, &input.tickets_path);
    ctx.progress(done, total, "writing the report");
    let durability: WriteOutcome = ctx
        .activity(
            "triage.write_report",
            &WriteInput {
                path: input.report_path.clone(),
                markdown,
                run_id: ctx.run_id().to_string(),
                llm_activity_ids: llm_ids,
            },
        )
        .await?;
    ctx.progress(total, total, "done");
    Ok(TriageOutput {
        report_path: input.report_path,
        facts,
        footer: usage.footer,
        durability,
    })
}
