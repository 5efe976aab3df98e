//! The support-ticket triage agent: load tickets (a tool), hand each product's tickets to a
//! sub-agent (a child run, [`product`]) that classifies them in batches with LLM calls
//! running concurrently under a limit, merge the themes across products, draft the summary
//! with a final LLM call, and write a Markdown report. Progress is reported after every
//! batch (by the sub-agents) and every product (by this run), and the report so far is kept
//! as the run's partial result, so a cancelled or stopped run still ends with what it found.

pub mod filing;
pub mod product;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::Poll;

use serde::{Deserialize, Serialize};
use steadfast_sdk::activity::{ActivityContext, ActivityError};
use steadfast_sdk::llm::{self, ChatRequest, ChatResponse, LlmClient, Message, offline};
use steadfast_sdk::workflow::{ChildBudget, ChildOptions, ChildRun, ParentClosePolicy};
use steadfast_sdk::{Effect, Worker, WorkflowContext, WorkflowError};

use product::{ProductInput, ProductOutput};
use report::{Classified, Facts, Footer};

/// The workflow type.
pub const WORKFLOW_TYPE: &str = "triage";
/// Tickets per classify call.
pub const DEFAULT_BATCH_SIZE: usize = 20;
/// Classify calls in flight at once, per product sub-agent.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// In [`TriageInput::report_path`], replaced by the run's id (so a fork writes its own report).
pub const RUN_ID_PLACEHOLDER: &str = "{run_id}";
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
    /// Classify calls in flight at once, per product sub-agent.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Where the worker writes the Markdown report; `{run_id}` in it is replaced by the
    /// run's id.
    pub report_path: String,
    /// The optional last step: file the top issues in the local tracker, each behind a
    /// human's approval ([`filing`]). `None`: the run is unattended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_issues: Option<filing::FileIssues>,
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
    /// The issues filed by the `--file-issues` step (empty without it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filed: Vec<filing::FiledIssue>,
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
    /// The first N tickets of the file (before the product filter).
    limit: Option<usize>,
    /// Only this product's tickets (a sub-agent's load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    product: Option<String>,
}

/// One LLM call: the run that recorded it and its activity id there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LlmCall {
    /// The run (this one or a product sub-agent).
    pub run_id: String,
    /// Its activity id (command seq) in that run.
    pub activity_id: u32,
}

impl LlmCall {
    fn of(ctx: &WorkflowContext, activity_id: u32) -> LlmCall {
        LlmCall {
            run_id: ctx.run_id().to_string(),
            activity_id,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WriteInput {
    path: String,
    markdown: String,
    /// Every LLM call of the run and its sub-agents.
    llm_calls: Vec<LlmCall>,
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

/// Registers the workflows (`triage` with the summary prompt of `prompt`, and its
/// per-product sub-agent) and their activities (the LLM calls go to `client`).
pub fn register(worker: &mut Worker, client: LlmClient, prompt: PromptVersion) {
    worker.register_workflow(WORKFLOW_TYPE, move |ctx, input| triage(ctx, input, prompt));
    worker.register_workflow(product::WORKFLOW_TYPE, product::classify_product);
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
    if let Some(product) = &input.product {
        out.retain(|t| &t.product == product);
    }
    Ok(out)
}

async fn write_report(
    _ctx: ActivityContext,
    input: WriteInput,
) -> Result<WriteOutcome, ActivityError> {
    let mut outcome = WriteOutcome {
        llm_calls_recorded: input.llm_calls.len() as u64,
        ..Default::default()
    };
    if let Some(Some(path)) = EXEC_LOG.get() {
        let me = std::process::id().to_string();
        let runs: std::collections::HashSet<&str> =
            input.llm_calls.iter().map(|c| c.run_id.as_str()).collect();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut calls: HashMap<(&str, u32), (u64, bool)> = HashMap::new();
        for l in text.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() == 4 && runs.contains(f[0]) {
                if let Ok(id) = f[1].parse::<u32>() {
                    let e = calls.entry((f[0], id)).or_default();
                    e.0 += 1;
                    e.1 |= f[3] == me;
                }
                outcome.executions_logged += 1;
            }
        }
        for c in &input.llm_calls {
            let (n, mine) = calls
                .get(&(c.run_id.as_str(), c.activity_id))
                .copied()
                .unwrap_or((0, false));
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

pub(crate) fn to_llm(messages: Vec<offline::Message>) -> Vec<Message> {
    messages
        .into_iter()
        .map(|m| Message::new(&m.role, m.content))
        .collect()
}

/// Extracts the JSON object of a model's answer (real models sometimes wrap it in prose or a
/// code fence).
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
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

/// Which prompt writes the report's summary: the worker's `--prompt-version`. `V2` is put
/// behind the patch [`SUMMARY_PROMPT_V2_PATCH`], so that runs which drafted their summary on
/// v1 replay on a v2 worker, and a fork made before the summary takes v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PromptVersion {
    /// The summary prompt of the offline model's task.
    #[default]
    V1,
    /// v1 plus an instruction to lead with the most urgent issue.
    V2,
}

/// The progress message of the summary step: the `llm.chat` the run schedules after it
/// writes the summary (the triage CLI shows its live tokens).
pub const DRAFTING_SUMMARY: &str = "drafting the summary";

/// The patch id of the v2 summary prompt.
pub const SUMMARY_PROMPT_V2_PATCH: &str = "triage-summary-prompt-v2";

/// What the v2 summary prompt adds to v1's system prompt.
pub const SUMMARY_PROMPT_V2_ADDITION: &str = "Open the executive summary with the single most urgent issue (highest severity, then most tickets) and the product it hits, in one sentence.";

fn summary_prompt(ctx: &WorkflowContext, version: PromptVersion, facts_json: &str) -> Vec<Message> {
    let mut messages = offline::summary_prompt(facts_json);
    if version == PromptVersion::V2
        && ctx.patched(SUMMARY_PROMPT_V2_PATCH)
        && let Some(system) = messages.iter_mut().find(|m| m.role == "system")
    {
        system.content = format!("{}\n{SUMMARY_PROMPT_V2_ADDITION}", system.content);
    }
    to_llm(messages)
}

type Child = Pin<Box<ChildRun<ProductOutput>>>;

/// The triage workflow: one `triage.product` child run per product classifies that
/// product's tickets; this run merges their themes, drafts the summary and writes the
/// report.
pub async fn triage(
    ctx: WorkflowContext,
    input: TriageInput,
    prompt: PromptVersion,
) -> Result<TriageOutput, WorkflowError> {
    ctx.progress(0, 0, "loading tickets");
    let tickets: Vec<Ticket> = ctx
        .activity(
            "triage.load_tickets",
            &LoadInput {
                path: input.tickets_path.clone(),
                limit: input.limit,
                product: None,
            },
        )
        .await?;
    let total = tickets.len() as u64;
    // Sorted by name: the children are started in the same order on every replay.
    let mut products: BTreeMap<&str, u64> = BTreeMap::new();
    for t in &tickets {
        *products.entry(t.product.as_str()).or_default() += 1;
    }
    ctx.progress(
        0,
        total,
        format!(
            "classifying {total} tickets with {} product sub-agents",
            products.len()
        ),
    );
    let mut children: Vec<(String, Child)> = Vec::new();
    for product in products.keys() {
        let child = ctx
            .child::<ProductOutput>(
                product::WORKFLOW_TYPE,
                &ProductInput {
                    tickets_path: input.tickets_path.clone(),
                    limit: input.limit,
                    product: product.to_string(),
                    batch_size: input.batch_size,
                    concurrency: input.concurrency,
                },
            )
            // Inherit, not split: products differ tenfold in size and tickets in length, so
            // a fixed split would park a big product's sub-agent while small ones leave their
            // share unused; each child still stops at the parent's room, and its usage
            // counts against the parent's ceilings once it closes (README, "Child runs").
            .with_options(
                ChildOptions::default()
                    .budget(ChildBudget::Inherit)
                    .parent_close_policy(ParentClosePolicy::Cancel),
            );
        children.push((product.to_string(), Box::pin(child)));
    }
    let mut usage = Usage {
        footer: Footer {
            run_id: ctx.run_id().to_string(),
            ..Default::default()
        },
        models: Vec::new(),
    };
    let mut llm_calls: Vec<LlmCall> = Vec::new();
    let mut classified: HashMap<String, Classified> = HashMap::new();
    let mut label_counts: HashMap<String, u64> = HashMap::new();
    let (products_total, mut done) = (children.len(), 0u64);
    while !children.is_empty() {
        // The first finished child in start order: deterministic on every replay.
        let (i, result) = poll_fn(|cx| {
            for (k, (_, f)) in children.iter_mut().enumerate() {
                if let Poll::Ready(r) = f.as_mut().poll(cx) {
                    return Poll::Ready((k, r));
                }
            }
            Poll::Pending
        })
        .await;
        let (product, _) = children.remove(i);
        done += products.get(product.as_str()).copied().unwrap_or(0);
        match result {
            Ok(p) => {
                usage.footer.llm_calls += p.llm_calls.len() as u64;
                usage.footer.input_tokens += p.input_tokens;
                usage.footer.output_tokens += p.output_tokens;
                usage.footer.cost_micros += p.cost_micros;
                usage.footer.failed_batches += p.failed_batches;
                for m in p.models {
                    if !usage.models.contains(&m) {
                        usage.models.push(m);
                    }
                }
                llm_calls.extend(p.llm_calls);
                for (label, n) in p.label_counts {
                    *label_counts.entry(label).or_default() += n;
                }
                for c in p.classified {
                    classified.insert(c.id.clone(), c);
                }
            }
            // A product whose sub-agent failed counts as unclassified in the report.
            Err(_) => usage.footer.failed_batches += 1,
        }
        ctx.progress(
            done,
            total,
            format!(
                "product {product:?} classified ({} of {products_total})",
                products_total - children.len()
            ),
        );
        ctx.set_partial_result(&Partial {
            tickets_classified: classified.len() as u64,
            tickets_total: total,
            themes_so_far: top_labels(&label_counts, 20),
        })?;
    }
    if ctx.is_cancel_requested() {
        let partial = serde_json::to_value(Partial {
            tickets_classified: classified.len() as u64,
            tickets_total: total,
            themes_so_far: top_labels(&label_counts, usize::MAX),
        })?;
        return Err(WorkflowError::Cancelled {
            partial: Some(partial),
        });
    }

    ctx.progress(done, total, "merging themes across products");
    let labels = top_labels(&label_counts, usize::MAX);
    let mut canonical: HashMap<String, String> = HashMap::new();
    if !labels.is_empty() {
        let call = llm::chat(
            &ctx,
            &ChatRequest::new(to_llm(offline::merge_prompt(&labels))),
        );
        llm_calls.push(LlmCall::of(&ctx, call.id()));
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

    ctx.progress(done, total, DRAFTING_SUMMARY);
    let facts_json = serde_json::to_string(&report::summary_facts(&facts))?;
    let call = llm::chat(
        &ctx,
        &ChatRequest::new(summary_prompt(&ctx, prompt, &facts_json)),
    );
    llm_calls.push(LlmCall::of(&ctx, call.id()));
    let resp = call.await?;
    usage.add(&resp);
    let prose = resp.content.unwrap_or_default();

    usage.footer.model = usage.models.join(", ");
    let markdown = report::render(&facts, &prose, &usage.footer, &input.tickets_path);
    let report_path = input.report_path.replace(RUN_ID_PLACEHOLDER, ctx.run_id());
    ctx.progress(done, total, "writing the report");
    let durability: WriteOutcome = ctx
        .activity(
            "triage.write_report",
            &WriteInput {
                path: report_path.clone(),
                markdown,
                llm_calls,
            },
        )
        .await?;
    let filed = match &input.file_issues {
        Some(f) => {
            ctx.progress(
                total,
                total,
                "filing the top issues (each waits for approval)",
            );
            filing::file_top_issues(&ctx, &facts, f).await?
        }
        None => Vec::new(),
    };
    ctx.progress(total, total, "done");
    Ok(TriageOutput {
        report_path,
        facts,
        footer: usage.footer,
        durability,
        filed,
    })
}

fn top_labels(counts: &HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}
