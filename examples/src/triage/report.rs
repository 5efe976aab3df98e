//! The report: facts computed from the classified tickets (pure, deterministic), and their
//! Markdown rendering. The LLM writes only the prose (summary and actions); every number in
//! the report is computed here, so the counts always add up.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::Ticket;

/// Themes listed in the report's table.
pub const TOP_THEMES_MAX: usize = 10;
/// Example tickets shown per theme.
pub const EXAMPLES_PER_THEME: usize = 3;
/// Longest example snippet (characters).
pub const SNIPPET_CHARS_MAX: usize = 180;

/// What the model said about one ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classified {
    /// Ticket id.
    pub id: String,
    /// Theme label.
    pub theme: String,
    /// low | medium | high.
    pub severity: String,
    /// No problem reported.
    pub noise: bool,
}

/// One example ticket of a theme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Ticket id.
    pub id: String,
    /// Snippet of subject and body.
    pub text: String,
}

/// One recurring issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThemeFacts {
    /// Canonical theme name.
    pub name: String,
    /// Tickets in it.
    pub count: u64,
    /// Fraction of all tickets.
    pub share: f64,
    /// Most frequent severity.
    pub severity: String,
    /// Products affected, most affected first.
    pub products: Vec<String>,
    /// Example tickets.
    pub examples: Vec<Example>,
}

/// The facts of a report (also the summary prompt's input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// Tickets analysed.
    pub total_tickets: u64,
    /// Tickets that report no problem.
    pub noise_tickets: u64,
    /// Tickets no classification came back for (a batch failed or was malformed).
    #[serde(default)]
    pub unclassified_tickets: u64,
    /// Themes, largest first.
    pub themes: Vec<ThemeFacts>,
}

fn snippet(t: &Ticket) -> String {
    let text = format!(
        "{} — {}",
        t.subject.trim(),
        t.body.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    if text.chars().count() <= SNIPPET_CHARS_MAX {
        return text;
    }
    let cut: String = text.chars().take(SNIPPET_CHARS_MAX).collect();
    format!("{}…", cut.trim_end())
}

/// Up to EXAMPLES_PER_THEME examples, skipping near-duplicates (copy-paste follow-ups).
fn distinct_examples(tickets: &[&Ticket]) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    for t in tickets {
        let text = snippet(t);
        let key: String = t
            .body
            .chars()
            .filter(|c| c.is_alphanumeric())
            .take(80)
            .collect::<String>()
            .to_lowercase();
        let dup = out.iter().any(|e| e.text == text)
            || tickets.iter().take_while(|x| x.id != t.id).any(|x| {
                out.iter().any(|e| e.id == x.id)
                    && x.body
                        .chars()
                        .filter(|c| c.is_alphanumeric())
                        .take(80)
                        .collect::<String>()
                        .to_lowercase()
                        == key
            });
        if !dup {
            out.push(Example {
                id: t.id.clone(),
                text,
            });
        }
        if out.len() == EXAMPLES_PER_THEME {
            break;
        }
    }
    out
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

/// Computes the facts. `canonical` maps a label to its merged theme (unmapped labels stand
/// for themselves). Every ticket is counted exactly once: in a theme, as noise, or as
/// unclassified.
pub fn facts(
    tickets: &[Ticket],
    classified: &HashMap<String, Classified>,
    canonical: &HashMap<String, String>,
) -> Facts {
    struct Acc<'a> {
        tickets: Vec<&'a Ticket>,
        severities: BTreeMap<String, u64>,
        products: BTreeMap<String, u64>,
    }
    let mut themes: BTreeMap<String, Acc<'_>> = BTreeMap::new();
    let (mut noise, mut unclassified) = (0u64, 0u64);
    for t in tickets {
        let Some(c) = classified.get(&t.id) else {
            unclassified += 1;
            continue;
        };
        if c.noise {
            noise += 1;
            continue;
        }
        let label = c.theme.trim().to_lowercase();
        let name = canonical.get(&label).cloned().unwrap_or(label);
        let acc = themes.entry(name).or_insert_with(|| Acc {
            tickets: Vec::new(),
            severities: BTreeMap::new(),
            products: BTreeMap::new(),
        });
        acc.tickets.push(t);
        *acc.severities.entry(c.severity.clone()).or_default() += 1;
        *acc.products.entry(t.product.clone()).or_default() += 1;
    }
    let total = tickets.len() as u64;
    let mut out: Vec<ThemeFacts> = themes
        .into_iter()
        .map(|(name, acc)| {
            let severity = acc
                .severities
                .iter()
                .max_by_key(|(s, n)| (**n, severity_rank(s)))
                .map(|(s, _)| s.clone())
                .unwrap_or_else(|| "medium".into());
            let mut products: Vec<(String, u64)> = acc.products.into_iter().collect();
            products.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut examples: Vec<&Ticket> = acc.tickets.clone();
            // Longer tickets first: they say more; ties by id for determinism.
            examples.sort_by(|a, b| {
                b.body
                    .len()
                    .min(400)
                    .cmp(&a.body.len().min(400))
                    .then(a.id.cmp(&b.id))
            });
            ThemeFacts {
                count: acc.tickets.len() as u64,
                share: if total == 0 {
                    0.0
                } else {
                    acc.tickets.len() as f64 / total as f64
                },
                severity,
                products: products.into_iter().map(|(p, _)| p).collect(),
                examples: distinct_examples(&examples),
                name,
            }
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    Facts {
        total_tickets: total,
        noise_tickets: noise,
        unclassified_tickets: unclassified,
        themes: out,
    }
}

/// The facts sent to the summarising model: the top themes only, examples shortened.
pub fn summary_facts(f: &Facts) -> Facts {
    let mut top = f.clone();
    top.themes.truncate(TOP_THEMES_MAX);
    for t in &mut top.themes {
        t.examples.truncate(2);
    }
    top
}

/// Footer numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Footer {
    /// The run.
    pub run_id: String,
    /// LLM calls recorded.
    pub llm_calls: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Millionths of a dollar.
    pub cost_micros: u64,
    /// The model(s) that answered.
    pub model: String,
    /// Batches whose classification failed.
    pub failed_batches: u64,
}

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// Renders the report. `prose` is the model's Markdown (summary and actions).
pub fn render(f: &Facts, prose: &str, footer: &Footer, source: &str) -> String {
    let mut md = String::new();
    md.push_str("# Support ticket triage report\n\n");
    md.push_str(&format!(
        "**{}** tickets from `{}` · **{}** recurring themes · {} noise (thanks, spam, feature requests){}\n\n",
        f.total_tickets,
        source,
        f.themes.iter().filter(|t| t.count >= 2).count(),
        f.noise_tickets,
        if f.unclassified_tickets > 0 { format!(" · {} unclassified", f.unclassified_tickets) } else { String::new() }
    ));
    md.push_str(prose.trim());
    md.push_str("\n\n## Top recurring issues\n\n| # | Theme | Tickets | Share | Severity | Products |\n|---|---|---:|---:|---|---|\n");
    let top: Vec<&ThemeFacts> = f
        .themes
        .iter()
        .filter(|t| t.count >= 2)
        .take(TOP_THEMES_MAX)
        .collect();
    for (i, t) in top.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            t.name,
            t.count,
            pct(t.share),
            t.severity,
            t.products.join(", ")
        ));
    }
    for (i, t) in top.iter().enumerate() {
        md.push_str(&format!(
            "\n### {}. {} — {} tickets ({})\n\n",
            i + 1,
            t.name,
            t.count,
            pct(t.share)
        ));
        md.push_str(&format!(
            "Products: {}. Severity: {}.\n\n",
            t.products.join(", "),
            t.severity
        ));
        for e in &t.examples {
            md.push_str(&format!(
                "> **{}**: {}\n>\n",
                e.id,
                e.text.replace('\n', " ")
            ));
        }
    }
    let rest: u64 = f
        .themes
        .iter()
        .filter(|t| !top.iter().any(|x| x.name == t.name))
        .map(|t| t.count)
        .sum();
    md.push_str(&format!(
        "\n*Accounting:* {} in the top themes + {} in smaller themes + {} noise + {} unclassified = {} tickets.\n",
        top.iter().map(|t| t.count).sum::<u64>(),
        rest,
        f.noise_tickets,
        f.unclassified_tickets,
        f.total_tickets
    ));
    md.push_str(&format!(
        "\n---\nRun `{}` · model `{}` · {} LLM calls · {} tokens ({} in, {} out) · cost ${:.4}{}\n",
        footer.run_id,
        footer.model,
        footer.llm_calls,
        footer.input_tokens + footer.output_tokens,
        footer.input_tokens,
        footer.output_tokens,
        footer.cost_micros as f64 / 1e6,
        if footer.failed_batches > 0 {
            format!(" · {} batches failed", footer.failed_batches)
        } else {
            String::new()
        }
    ));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(id: &str, product: &str) -> Ticket {
        Ticket {
            id: id.into(),
            product: product.into(),
            subject: format!("subject {id}"),
            body: "body".into(),
            ..Default::default()
        }
    }

    fn class(id: &str, theme: &str, noise: bool) -> (String, Classified) {
        (
            id.into(),
            Classified {
                id: id.into(),
                theme: theme.into(),
                severity: "high".into(),
                noise,
            },
        )
    }

    #[test]
    fn every_ticket_counted_once() {
        let tickets: Vec<Ticket> = (0..10)
            .map(|i| ticket(&format!("T{i}"), if i % 2 == 0 { "A" } else { "B" }))
            .collect();
        let classified: HashMap<_, _> = vec![
            class("T0", "login code missing", false),
            class("T1", "sms code not received", false),
            class("T2", "login code missing", false),
            class("T3", "double charge", false),
            class("T4", "spam", true),
            class("T5", "double charge", false),
            class("T6", "double charge", false),
            class("T7", "thanks", true),
            class("T8", "export slow", false),
        ]
        .into_iter()
        .collect();
        let canonical: HashMap<_, _> = vec![(
            "sms code not received".to_string(),
            "login code missing".to_string(),
        )]
        .into_iter()
        .collect();
        let f = facts(&tickets, &classified, &canonical);
        assert_eq!(f.total_tickets, 10);
        assert_eq!(f.noise_tickets, 2);
        assert_eq!(f.unclassified_tickets, 1);
        let counted: u64 = f.themes.iter().map(|t| t.count).sum::<u64>()
            + f.noise_tickets
            + f.unclassified_tickets;
        assert_eq!(counted, 10);
        assert_eq!(f.themes[0].name, "double charge");
        assert_eq!(f.themes[0].count, 3);
        assert_eq!(f.themes[1].name, "login code missing");
        assert_eq!(f.themes[1].count, 3);
        assert_eq!(f.themes[1].products, vec!["A".to_string(), "B".to_string()]);
        assert!((f.themes[0].share - 0.3).abs() < 1e-9);
        let md = render(
            &f,
            "## Executive summary\nx",
            &Footer {
                run_id: "r".into(),
                llm_calls: 3,
                ..Default::default()
            },
            "t.jsonl",
        );
        assert!(md.contains("| 1 | double charge | 3 | 30.0% |"), "{md}");
        assert!(md.contains("= 10 tickets"), "{md}");
        assert!(md.contains("Run `r`"), "{md}");
    }
}
