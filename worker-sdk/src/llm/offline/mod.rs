//! `offline-model`: a deterministic stand-in for a chat LLM, so the triage demo runs with
//! no network and no API key.
//!
//! It is honest heuristics, not a neural network: keyword and phrase matching against a
//! general support-desk lexicon (with a few common non-English words), light stemming,
//! synonym folding and fixed templates. No product, company or theme names are built in:
//! the lexicon in `text.rs` is general support vocabulary (codes, charges, declines,
//! timeouts, delays, crashes, ...), the task logic is in `tasks.rs`. Measured quality, and its
//! limits, are in `examples/triage/data/EVAL.md`. It understands exactly three task prompts, built by
//! [`classify_prompt`], [`merge_prompt`] and [`summary_prompt`]; the triage agent sends the
//! very same prompts to a real OpenAI-compatible model. Anything else gets a short reply
//! saying what it is. Pure functions: no I/O, no clock, no randomness, never panics.

mod tasks;
mod text;

use serde::{Deserialize, Serialize};

use tasks::{classify, merge, summarize};

/// The name the model reports in usage and output.
pub const MODEL_NAME: &str = "offline-model";

/// One chat message (role: "system" | "user" | "assistant" | "tool").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks: "system", "user", "assistant" or "tool".
    pub role: String,
    /// The text of the message.
    pub content: String,
}

impl Message {
    /// A message with the given role and content.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// Token estimate used for usage accounting (about 4 chars per token; deterministic).
pub fn count_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// System prompt of the classify task. The user message is [`CLASSIFY_USER_HEADER`]
/// followed by one JSON object per line: `{"id","product","channel","subject","body"}`.
/// Expected answer: `{"tickets":[{"id":"..","theme":"..","severity":"low|medium|high","noise":false}]}`.
pub const CLASSIFY_SYSTEM_PROMPT: &str = "You are a support-ticket triage analyst. Classify each support ticket you are given.\n\
For every ticket assign:\n\
- \"theme\": a short label (2-5 words, lowercase, no product names, no ticket ids) naming the concrete underlying problem, e.g. \"verification code not received\" or \"duplicate payment\". Tickets describing the same problem in different words, languages or tones must get the same label. If a ticket mentions several problems, label the one the customer leads with.\n\
- \"severity\": \"high\" (customer blocked, money or data at risk, many users affected), \"medium\" (something is broken but there is a workaround) or \"low\" (cosmetic, questions, noise).\n\
- \"noise\": true for tickets that report no problem: thank-you notes, spam, feature requests, off-topic or empty messages; false otherwise.\n\
Answer with JSON only, no prose, exactly in this shape, one entry per input ticket, same ids:\n\
{\"tickets\":[{\"id\":\"T-1\",\"theme\":\"...\",\"severity\":\"medium\",\"noise\":false}]}";

/// First line of the classify user message; the ticket JSON lines follow it.
pub const CLASSIFY_USER_HEADER: &str = "Tickets, one JSON object per line:";

/// System prompt of the merge task. The user message is [`MERGE_USER_HEADER`] followed by
/// one `{"label":"..","count":N}` JSON object per line.
/// Expected answer: `{"themes":[{"name":"canonical theme","labels":["label a","label b"]}]}`.
pub const MERGE_SYSTEM_PROMPT: &str = "You are a support-ticket triage analyst. Merge theme labels that were assigned to tickets in separate batches.\n\
Group the labels that describe the same underlying problem (synonyms, different wording, more or less specific versions of the same issue). Do not group labels that are merely about the same product or area but describe different problems.\n\
For each group give a canonical theme name: 2-5 words, lowercase, preferring the wording of the most frequent label. Every input label must appear in exactly one group, spelled exactly as given.\n\
Answer with JSON only, no prose, exactly in this shape:\n\
{\"themes\":[{\"name\":\"canonical theme\",\"labels\":[\"label a\",\"label b\"]}]}";

/// First line of the merge user message; the label JSON lines follow it.
pub const MERGE_USER_HEADER: &str = "Theme labels with ticket counts, one JSON object per line:";

/// System prompt of the summarize task. The user message is [`SUMMARY_USER_HEADER`] followed
/// by a JSON object: `{"total_tickets":N,"noise_tickets":N,"themes":[{"name":"..","count":N,
/// "share":0.16,"severity":"high","products":[".."],"examples":[{"id":"..","text":".."}]}]}`
/// (themes sorted by count, `share` a fraction of all tickets). Expected answer: Markdown.
pub const SUMMARY_SYSTEM_PROMPT: &str = "You are a support-ticket triage analyst writing for the head of support. You are given the facts of a triage report as JSON: total tickets, noise tickets, and the recurring themes with ticket counts, share of all tickets, severity, products affected and example ticket snippets.\n\
Write Markdown with exactly two sections:\n\
## Executive summary\n\
3-5 sentences: the size of the batch, the biggest themes with their counts and shares, which products they hit, and what stands out (severity, issues spanning several products).\n\
## Suggested actions\n\
A numbered list with one concrete, specific action per top theme (at most 8), naming the theme in bold and citing one or two example ticket ids.\n\
Use only the facts given; do not invent numbers.";

/// First line of the summarize user message; the facts JSON follows it.
pub const SUMMARY_USER_HEADER: &str = "Report facts (JSON):";

/// Builds the classify request for a batch of tickets given as JSON lines.
pub fn classify_prompt(tickets_jsonl: &str) -> Vec<Message> {
    vec![
        Message::new("system", CLASSIFY_SYSTEM_PROMPT),
        Message::new(
            "user",
            format!("{CLASSIFY_USER_HEADER}\n{}", tickets_jsonl.trim()),
        ),
    ]
}

/// Builds the merge request for the theme labels (with ticket counts) of all batches.
pub fn merge_prompt(labels_with_counts: &[(String, u64)]) -> Vec<Message> {
    let lines: Vec<String> = labels_with_counts
        .iter()
        .map(|(label, count)| serde_json::json!({"label": label, "count": count}).to_string())
        .collect();
    vec![
        Message::new("system", MERGE_SYSTEM_PROMPT),
        Message::new("user", format!("{MERGE_USER_HEADER}\n{}", lines.join("\n"))),
    ]
}

/// Builds the summarize request from the report facts JSON (format at [`SUMMARY_SYSTEM_PROMPT`]).
pub fn summary_prompt(report_facts_json: &str) -> Vec<Message> {
    vec![
        Message::new("system", SUMMARY_SYSTEM_PROMPT),
        Message::new(
            "user",
            format!("{SUMMARY_USER_HEADER}\n{}", report_facts_json.trim()),
        ),
    ]
}

/// One ticket in a classify answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifiedTicket {
    /// The ticket id, as given.
    pub id: String,
    /// Short lowercase theme label.
    pub theme: String,
    /// "low" | "medium" | "high".
    pub severity: String,
    /// True when the ticket reports no problem (thanks, spam, feature request, ...).
    pub noise: bool,
}

/// The JSON answer to a classify request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifyAnswer {
    /// One entry per input ticket.
    pub tickets: Vec<ClassifiedTicket>,
}

/// One group in a merge answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedTheme {
    /// Canonical theme name.
    pub name: String,
    /// The input labels that belong to this theme, spelled as given.
    pub labels: Vec<String>,
}

/// The JSON answer to a merge request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeAnswer {
    /// The merged themes, largest first.
    pub themes: Vec<MergedTheme>,
}

/// Answers a chat request as the offline model: returns the assistant's text.
pub fn complete(messages: &[Message]) -> String {
    let system: String = messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    let user = messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.as_str())
        .unwrap_or("");
    let has = |header: &str, prompt: &str| {
        user.starts_with(header) || system.contains(prompt.lines().next().unwrap_or(prompt))
    };
    if has(CLASSIFY_USER_HEADER, CLASSIFY_SYSTEM_PROMPT) && !system.contains("Merge theme labels") {
        classify(user)
    } else if has(MERGE_USER_HEADER, MERGE_SYSTEM_PROMPT) {
        merge(user)
    } else if has(SUMMARY_USER_HEADER, SUMMARY_SYSTEM_PROMPT) {
        summarize(user)
    } else {
        format!(
            "I am {MODEL_NAME}, a deterministic offline stand-in for a language model (keyword heuristics, \
             no neural network). I can only classify support tickets, merge theme labels and summarize \
             triage reports for the Steadfast triage agent; I cannot answer free-form questions."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const TICKETS: &str = r#"{"id":"T-1","product":"P","channel":"email","subject":"No SMS code","body":"Since the update the verification code never arrives, I cannot log in."}
{"id":"T-2","product":"P","channel":"chat","subject":"Charged twice","body":"I was billed two times for the same purchase."}
{"id":"T-3","product":"P","channel":"email","subject":"Thanks!","body":"Thank you, all good now."}
{"id":"T-4","product":"P","channel":"email","subject":"Offer","body":"We offer guaranteed SEO rankings, click here http://x.example"}
{"id":42,"subject":null,"body":"the app crashes on open"}"#;

    fn classify_answer(jsonl: &str) -> ClassifyAnswer {
        serde_json::from_str(&complete(&classify_prompt(jsonl))).expect("classify answer is JSON")
    }

    #[test]
    fn classify_labels_noise_and_ids() {
        let a = classify_answer(TICKETS);
        let ids: Vec<&str> = a.tickets.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["T-1", "T-2", "T-3", "T-4", "42"]);
        assert_eq!(a.tickets[0].theme, "verification code not received");
        assert_eq!(a.tickets[1].theme, "duplicate payment");
        assert!(a.tickets[2].noise && a.tickets[3].noise && !a.tickets[0].noise);
        assert_eq!(a.tickets[4].theme, "app crash");
        assert!(
            a.tickets
                .iter()
                .all(|t| ["low", "medium", "high"].contains(&t.severity.as_str()))
        );
    }

    #[test]
    fn merge_covers_every_label_once_and_ignores_order() {
        let labels: Vec<(String, u64)> = [
            ("duplicate payment", 9),
            ("double charge", 3),
            ("payment charged twice", 2),
            ("app crash", 5),
            ("crash on startup", 1),
            ("dark mode issue", 1),
        ]
        .iter()
        .map(|(l, c)| (l.to_string(), *c))
        .collect();
        let out = complete(&merge_prompt(&labels));
        let mut reversed = labels.clone();
        reversed.reverse();
        assert_eq!(out, complete(&merge_prompt(&reversed)));
        let a: MergeAnswer = serde_json::from_str(&out).expect("merge answer is JSON");
        let mut seen: Vec<&str> = a
            .themes
            .iter()
            .flat_map(|t| t.labels.iter().map(String::as_str))
            .collect();
        seen.sort();
        let mut want: Vec<&str> = labels.iter().map(|(l, _)| l.as_str()).collect();
        want.sort();
        assert_eq!(seen, want);
        let dup = a
            .themes
            .iter()
            .find(|t| t.name == "duplicate payment")
            .expect("duplicate group");
        assert_eq!(dup.labels.len(), 3);
    }

    #[test]
    fn summary_is_markdown_with_both_sections() {
        let facts = r#"{"total_tickets":100,"noise_tickets":10,"themes":[{"name":"verification code not received","count":30,"share":0.3,"severity":"high","products":["A","B"],"examples":[{"id":"T-1","text":"no code"}]},{"name":"duplicate payment","count":20,"share":0.2,"products":["C"],"examples":[]}]}"#;
        let md = complete(&summary_prompt(facts));
        assert!(md.starts_with("## Executive summary") && md.contains("## Suggested actions"));
        assert!(
            md.contains("**verification code not received** (30 tickets, 30.0%)")
                && md.contains("See T-1.")
        );
        assert!(complete(&summary_prompt("not json")).contains("## Suggested actions"));
    }

    #[test]
    fn other_requests_get_the_offline_disclaimer() {
        let reply = complete(&[Message::new("user", "What is the capital of France?")]);
        assert!(reply.contains(MODEL_NAME) && reply.contains("cannot answer free-form questions"));
        assert!(complete(&[]).contains(MODEL_NAME));
    }

    #[test]
    fn deterministic_and_token_counts() {
        for m in [
            classify_prompt(TICKETS),
            merge_prompt(&[("a b".into(), 2)]),
            summary_prompt("{}"),
        ] {
            assert_eq!(complete(&m), complete(&m));
        }
        assert_eq!(
            (
                count_tokens(""),
                count_tokens("abcd"),
                count_tokens("abcde")
            ),
            (0, 1, 2)
        );
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        let alphabet: Vec<char> = "ab z{}[]\":,\n\t\\0123456789-'’éß漢🙂=.".chars().collect();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for round in 0..400 {
            let len = next() % 200;
            let noise: String = (0..len)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect();
            let line = format!(
                r#"{{"id":"x{round}","subject":"{}","body":{}}}"#,
                noise.replace(['"', '\\'], ""),
                serde_json::json!(noise)
            );
            let prompts = [
                classify_prompt(&noise),
                classify_prompt(&line),
                merge_prompt(&[(noise.clone(), round)]),
                summary_prompt(&noise),
                vec![Message::new("system", &noise), Message::new("user", &noise)],
                vec![Message::new(
                    "user",
                    format!("{MERGE_USER_HEADER}\n{noise}"),
                )],
            ];
            for (i, p) in prompts.iter().enumerate() {
                let out = complete(p);
                assert!(!out.is_empty());
                if i < 3 {
                    serde_json::from_str::<Value>(&out)
                        .expect("classify/merge answers are always JSON");
                }
            }
        }
    }
}
