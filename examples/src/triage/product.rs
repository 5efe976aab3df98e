//! The per-product sub-agent (`triage.product`), a child run of `triage`: it loads its
//! product's tickets and classifies them in batches, with LLM calls running concurrently
//! under a limit, reporting progress after every batch. Its usage rolls up into the parent's
//! when it closes (the engine does that; the result carries the footer the report needs).

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use serde::{Deserialize, Serialize};
use steadfast_sdk::llm::{self, ChatRequest, ChatResponse, offline};
use steadfast_sdk::workflow::ActivityFuture;
use steadfast_sdk::{WorkflowContext, WorkflowError};

use super::report::Classified;
use super::{LlmCall, LoadInput, Ticket, json_object, to_llm};

/// The workflow type of the per-product sub-agent.
pub const WORKFLOW_TYPE: &str = "triage.product";

/// The sub-agent's input: where the tickets are and which product is its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProductInput {
    /// JSON Lines file of tickets (read by the worker's load tool).
    pub tickets_path: String,
    /// Only the first N tickets of the file (before the product filter, as the parent).
    #[serde(default)]
    pub limit: Option<usize>,
    /// The product whose tickets this sub-agent classifies.
    pub product: String,
    /// Tickets per classify call.
    pub batch_size: usize,
    /// Classify calls in flight at once (in this sub-agent).
    pub concurrency: usize,
}

/// What the sub-agent found, and what it spent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProductOutput {
    /// The product.
    pub product: String,
    /// Tickets of the product.
    pub tickets: u64,
    /// The model's verdict per ticket.
    pub classified: Vec<Classified>,
    /// Theme label (trimmed, lower case) -> tickets, noise excluded, before merging.
    pub label_counts: Vec<(String, u64)>,
    /// LLM calls made (all recorded in this run).
    pub llm_calls: Vec<LlmCall>,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Millionths of a dollar.
    pub cost_micros: u64,
    /// The models that answered.
    pub models: Vec<String>,
    /// Batches whose classification failed.
    pub failed_batches: u64,
}

impl ProductOutput {
    fn add(&mut self, r: &ChatResponse) {
        self.input_tokens += r.usage.input_tokens;
        self.output_tokens += r.usage.output_tokens;
        self.cost_micros += r.usage.cost_micros;
        if !self.models.contains(&r.model) {
            self.models.push(r.model.clone());
        }
    }

    fn sorted_labels(counts: HashMap<String, u64>) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

type Call = Pin<Box<ActivityFuture<ChatResponse>>>;

/// The per-product sub-agent.
pub async fn classify_product(
    ctx: WorkflowContext,
    input: ProductInput,
) -> Result<ProductOutput, WorkflowError> {
    let batch_size = input.batch_size.clamp(1, 200);
    let concurrency = input.concurrency.clamp(1, 64);
    let tickets: Vec<Ticket> = ctx
        .activity(
            "triage.load_tickets",
            &LoadInput {
                path: input.tickets_path.clone(),
                limit: input.limit,
                product: Some(input.product.clone()),
            },
        )
        .await?;
    let total = tickets.len() as u64;
    let batches: Vec<&[Ticket]> = tickets.chunks(batch_size).collect();
    let mut out = ProductOutput {
        product: input.product.clone(),
        tickets: total,
        ..Default::default()
    };
    let mut classified: Vec<Classified> = Vec::new();
    let mut label_counts: HashMap<String, u64> = HashMap::new();
    let mut in_flight: Vec<(usize, Call)> = Vec::new();
    let (mut next, mut done) = (0usize, 0u64);
    ctx.progress(
        0,
        total,
        format!(
            "{}: {total} tickets in {} batches",
            input.product,
            batches.len()
        ),
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
            out.llm_calls.push(LlmCall {
                run_id: ctx.run_id().to_string(),
                activity_id: call.id(),
            });
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
        let answer = match result {
            Ok(resp) => {
                out.add(&resp);
                resp.content
                    .as_deref()
                    .and_then(json_object::<offline::ClassifyAnswer>)
            }
            Err(_) => None,
        };
        match answer {
            Some(answer) => {
                let ids: std::collections::HashSet<&str> =
                    batches[b].iter().map(|t| t.id.as_str()).collect();
                for c in answer
                    .tickets
                    .into_iter()
                    .filter(|c| ids.contains(c.id.as_str()))
                {
                    if classified.iter().any(|k| k.id == c.id) {
                        continue;
                    }
                    if !c.noise {
                        *label_counts
                            .entry(c.theme.trim().to_lowercase())
                            .or_default() += 1;
                    }
                    classified.push(Classified {
                        id: c.id,
                        theme: c.theme,
                        severity: c.severity,
                        noise: c.noise,
                    });
                }
            }
            None => out.failed_batches += 1,
        }
        ctx.progress(
            done,
            total,
            format!(
                "{}: classified batch {} of {}",
                input.product,
                b + 1,
                batches.len()
            ),
        );
    }
    out.classified = classified;
    out.label_counts = ProductOutput::sorted_labels(label_counts);
    if ctx.is_cancel_requested() {
        return Err(WorkflowError::Cancelled {
            partial: Some(serde_json::to_value(&out)?),
        });
    }
    Ok(out)
}
