//! The three tasks the offline model understands: classify, merge and summarize.

use super::text::*;
use super::*;
use serde_json::Value;
use std::collections::BTreeMap;

// Task a: classify.

fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

const SPAM_MARKERS: &[&str] = &[
    "seo",
    "backlinks",
    "crypto",
    "guaranteed",
    "click here",
    "congratulations",
    "gift card",
    "whatsapp",
    "leads",
    "returns",
    "redesign",
    "bit.ly",
    "casino",
    "viagra",
    "unsubscribe",
    "guest posts",
    "lead generation",
    "we offer",
    "our services",
    "interested",
    "we build",
    "limited offer",
    "free audit",
];
const THANKS_MARKERS: &[&str] = &[
    "thank",
    "thanks",
    "thx",
    "merci",
    "danke",
    "gracias",
    "obrigado",
    "kudos",
    "appreciated",
    "works again",
    "never mind",
    "close this",
    "resolved",
    "keep it up",
];
const FEATURE_MARKERS: &[&str] = &[
    "feature request",
    "would be great",
    "would be nice",
    "please add",
    "can you add",
    "any plans",
    "suggestion",
    "would love",
    "idea",
    "wish list",
];
const OFFTOPIC_MARKERS: &[&str] = &[
    "hiring",
    "sponsor",
    "journalist",
    "thesis",
    "wrong company",
    "job",
    "press",
    "survey",
    "address of your",
];
const URGENT_MARKERS: &[&str] = &[
    "urgent",
    "asap",
    "immediately",
    "locked out",
    "overdraft",
    "stranded",
    "fraud",
    "stolen",
    "audit",
    "p1",
    "cant pay",
    "lost",
    "data loss",
    "all our",
    "production",
    "rent",
    "borrow money",
    "closing my account",
    "blind",
];

fn contains_any(text: &str, markers: &[&str]) -> usize {
    let padded = format!(" {} ", words(text).join(" "));
    let lower = text.to_lowercase();
    markers
        .iter()
        .filter(|m| {
            if m.contains('.') {
                lower.contains(*m)
            } else {
                padded.contains(&format!(" {m} ")) || padded.contains(&format!(" {m}s "))
            }
        })
        .count()
}

/// Classifies one ticket: (theme, severity, noise).
fn classify_one(subject: &str, body: &str) -> (String, &'static str, bool) {
    let all = format!("{subject}\n{body}");
    let a = analyze(subject, body);
    let symptoms = a.best(S);
    let objects = a.best(O);
    let problem: f64 = symptoms.iter().map(|(_, s)| s).sum();
    let noise_label = if contains_any(&all, SPAM_MARKERS) >= 2
        || (contains_any(&all, SPAM_MARKERS) >= 1 && all.contains("http"))
    {
        Some("spam")
    } else if problem < 2.5 && contains_any(&all, THANKS_MARKERS) > 0 {
        Some("thank you note")
    } else if problem < 2.5 && contains_any(&all, FEATURE_MARKERS) > 0 {
        Some("feature request")
    } else if problem < 2.0 && contains_any(&all, OFFTOPIC_MARKERS) > 0 {
        Some("off topic")
    } else if symptoms.is_empty() && objects.is_empty() && a.content.len() < 4 {
        Some("no details given")
    } else {
        None
    };
    if let Some(label) = noise_label {
        return (label.to_string(), "low", true);
    }
    let (symptom, object) = a.pair();
    let theme = if symptom.is_none() && object.is_none() {
        salient_bigram(&a.content)
    } else {
        compose_label(symptom, object, a.has("abroad"))
    };
    let severity = if contains_any(&all, URGENT_MARKERS) > 0
        || matches!(
            symptom,
            Some("deleted") | Some("locked out") | Some("crash")
        )
        || (symptom == Some("not received") && object == Some("verification code"))
    {
        "high"
    } else if matches!(symptom, Some("unclear") | Some("unreadable") | None) {
        "low"
    } else {
        "medium"
    };
    (theme, severity, false)
}

/// Fallback label: the two most frequent content words (counted by stem, shown as first
/// seen), in first-seen order; subject words come first in `content`, so they win ties.
fn salient_bigram(content: &[String]) -> String {
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (i, w) in content.iter().enumerate() {
        let e = counts.entry(stem(w)).or_insert((0, i));
        e.0 += 1;
    }
    let mut v: Vec<(usize, usize)> = counts.into_values().collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut top: Vec<usize> = v.into_iter().take(2).map(|(_, first)| first).collect();
    top.sort();
    let label: Vec<String> = top.into_iter().map(|i| content[i].clone()).collect();
    if label.is_empty() {
        "general inquiry".into()
    } else {
        label.join(" ")
    }
}

pub(super) fn classify(user: &str) -> String {
    let mut tickets = Vec::new();
    for (n, line) in user.lines().enumerate() {
        let line = line.trim().trim_end_matches(',');
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if !v.is_object() {
            continue;
        }
        let mut id = field(&v, "id");
        if id.is_empty() {
            id = format!("line-{}", n + 1);
        }
        let (theme, severity, noise) = classify_one(&field(&v, "subject"), &field(&v, "body"));
        tickets.push(ClassifiedTicket {
            id,
            theme,
            severity: severity.to_string(),
            noise,
        });
    }
    serde_json::to_string(&ClassifyAnswer { tickets }).unwrap_or_else(|_| "{\"tickets\":[]}".into())
}

// Task b: merge.

fn parse_label_line(line: &str) -> Option<(String, u64)> {
    let line = line.trim().trim_end_matches(',');
    if line.is_empty() {
        return None;
    }
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        let label = field(&v, "label");
        let count = v.get("count").and_then(Value::as_u64).unwrap_or(1);
        return (!label.trim().is_empty()).then_some((label, count));
    }
    // Tolerate "label<TAB>count" and "label: count" lines.
    let (label, count) = match line.rsplit_once(['\t', ':']) {
        Some((l, c)) if c.trim().parse::<u64>().is_ok() => {
            (l.trim(), c.trim().parse().unwrap_or(1))
        }
        _ => (line, 1),
    };
    (!label.is_empty() && !line.starts_with(MERGE_USER_HEADER)).then(|| (label.to_string(), count))
}

/// Symptoms too generic to tell two problems apart, and objects too broad to do so.
const GENERIC_SYMPTOMS: &[&str] = &["not working", "locked out"];
const BROAD_OBJECTS: &[&str] = &["app", "sync", "account", "email", "page"];

/// Merge key of a label: its (symptom, object) concepts, or its stemmed content words.
/// A generic symptom or a broad object is dropped, so the label joins a more specific group.
fn merge_key(label: &str) -> (Option<&'static str>, Option<&'static str>, String) {
    let a = analyze("", label);
    let (mut s, mut o) = a.pair();
    if o.is_some() && s.is_some_and(|s| GENERIC_SYMPTOMS.contains(&s)) {
        s = None;
    } else if s.is_some() && o.is_some_and(|o| BROAD_OBJECTS.contains(&o)) {
        o = None;
    }
    let mut rest: Vec<String> = a.content.iter().map(|w| stem(w)).collect();
    rest.sort();
    rest.dedup();
    (
        s,
        o,
        if s.is_none() && o.is_none() {
            rest.join(" ")
        } else {
            String::new()
        },
    )
}

pub(super) fn merge(user: &str) -> String {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (label, count) in user.lines().filter_map(parse_label_line) {
        *counts.entry(label).or_insert(0) += count;
    }
    // Full keys first; labels with only a symptom or only an object join the biggest
    // group sharing it. Everything iterates over sorted maps: order-independent.
    type Key = (Option<&'static str>, Option<&'static str>, String);
    let keys: BTreeMap<&String, Key> = counts.keys().map(|l| (l, merge_key(l))).collect();
    let mut groups: BTreeMap<Key, Vec<&String>> = BTreeMap::new();
    for (label, key) in &keys {
        if key.0.is_some() && key.1.is_some() || key.0.is_none() && key.1.is_none() {
            groups.entry(key.clone()).or_default().push(label);
        }
    }
    let total = |g: &Vec<&String>| g.iter().map(|l| counts[*l]).sum::<u64>();
    let full: Vec<(Key, u64)> = groups.iter().map(|(k, g)| (k.clone(), total(g))).collect();
    for (label, key) in &keys {
        if key.0.is_some() != key.1.is_some() {
            let target = full
                .iter()
                .filter(|(k, _)| {
                    k.0.is_some()
                        && k.1.is_some()
                        && ((key.0.is_some() && k.0 == key.0) || (key.1.is_some() && k.1 == key.1))
                })
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| key.clone());
            groups.entry(target).or_default().push(label);
        }
    }
    let mut themes: Vec<(u64, MergedTheme)> = groups
        .into_values()
        .map(|mut labels| {
            labels.sort();
            let name = labels
                .iter()
                .max_by(|a, b| {
                    counts[**a]
                        .cmp(&counts[**b])
                        .then(b.len().cmp(&a.len()))
                        .then(b.cmp(a))
                })
                .map(|l| l.to_string())
                .unwrap_or_default();
            let n = labels.iter().map(|l| counts[*l]).sum();
            (
                n,
                MergedTheme {
                    name,
                    labels: labels.into_iter().cloned().collect(),
                },
            )
        })
        .collect();
    themes.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.name.cmp(&b.1.name)));
    let answer = MergeAnswer {
        themes: themes.into_iter().map(|t| t.1).collect(),
    };
    serde_json::to_string(&answer).unwrap_or_else(|_| "{\"themes\":[]}".into())
}

// Task c: summarize.

/// One suggested action, chosen by what the theme name is about.
fn action_for(name: &str) -> &'static str {
    let (s, o, _) = merge_key(name);
    match (s, o) {
        (_, Some("screen reader")) => {
            "Run an accessibility audit of the affected screens with VoiceOver/TalkBack and keyboard-only navigation, and add accessible labels to every control."
        }
        (_, Some("dark mode")) => {
            "Test every screen in the dark theme and fix the colour tokens that give low-contrast or invisible text."
        }
        (Some("not received"), _) => {
            "Trace delivery end to end (provider status, rate limits, changes in the latest release), add monitoring of the delivery rate, and offer customers a fallback channel."
        }
        (Some("duplicate"), _) => {
            "Audit the payment path for double processing (retries, idempotency keys, double taps), refund the affected customers proactively, and add an alert on duplicate transactions."
        }
        (Some("declined"), _) => {
            "Review the decline reasons and risk rules for the affected transactions, fix false positives, and tell customers how to avoid them."
        }
        (Some("timeout"), _) => {
            "Profile the slow operation on large inputs, move it to a background job or paginate it, and tell customers about the workaround meanwhile."
        }
        (Some("delay"), _) => {
            "Measure the end-to-end latency against the promised time, find the queue or batch causing the backlog, and post status updates while it is fixed."
        }
        (Some("deleted"), _) => {
            "Treat it as a data-loss incident: stop the destructive code path, restore what can be restored from backups, and contact the affected customers."
        }
        (Some("crash"), _) => {
            "Pull the crash reports for the affected OS and device versions, ship a hotfix, and add those versions to the release test matrix."
        }
        (Some("expired"), _) => {
            "Check token lifetimes, clock skew and link pre-fetching by email scanners; make sure a freshly sent link works."
        }
        (Some("unclear"), _) => {
            "Rewrite the explanation in the product and on the pricing page, itemise every charge on statements, and give agents a clear answer macro."
        }
        (Some("deletion request"), _) => {
            "Route these to the privacy team with the statutory deadline tracked, and offer a self-service data export and deletion flow."
        }
        (Some("locked out"), _) => {
            "Give locked-out customers a verified recovery path and find what changed in the sign-in flow."
        }
        _ => {
            "Assign an owner, reproduce the problem with the example tickets, and reply to the affected customers with a status update."
        }
    }
}

pub(super) fn summarize(user: &str) -> String {
    let json = user.find('{').map(|i| &user[i..]).unwrap_or("");
    let facts: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let themes: Vec<&Value> = facts
        .get("themes")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let total = num(&facts, "total_tickets");
    let noise = num(&facts, "noise_tickets");
    let mut out = String::from("## Executive summary\n\n");
    if themes.is_empty() {
        out.push_str("No recurring themes were found in the facts given, so there is nothing to summarize yet.\n\n## Suggested actions\n\n1. Check that the tickets were loaded and classified.\n");
        return out;
    }
    let share = |t: &Value| {
        let s = num(t, "share");
        if s > 1.0 { s } else { s * 100.0 }
    };
    let name = |t: &Value| field(t, "name");
    let products = |t: &Value| -> Vec<String> {
        t.get("products")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    out.push_str(&format!(
        "Of {} tickets, {} describe a problem and {} were noise (thanks, spam, feature requests, off-topic). ",
        total as u64, (total - noise).max(0.0) as u64, noise as u64
    ));
    let first = themes[0];
    let p = products(first);
    out.push_str(&format!(
        "The biggest theme is **{}** ({} tickets, {:.1}%){}",
        name(first),
        num(first, "count") as u64,
        share(first),
        if p.is_empty() {
            ".".to_string()
        } else {
            format!(", mostly from {}.", p[0])
        }
    ));
    let next: Vec<String> = themes
        .iter()
        .skip(1)
        .take(2)
        .map(|t| format!("**{}** ({:.1}%)", name(t), share(t)))
        .collect();
    if !next.is_empty() {
        out.push_str(&format!(" It is followed by {}.", next.join(" and ")));
    }
    let top3: f64 = themes.iter().take(3).map(|t| share(t)).sum();
    out.push_str(&format!(
        " The top {} themes account for {:.0}% of all tickets.",
        themes.len().min(3),
        top3
    ));
    let high: Vec<String> = themes
        .iter()
        .filter(|t| field(t, "severity") == "high")
        .take(3)
        .map(|t| name(t))
        .collect();
    if !high.is_empty() {
        out.push_str(&format!(" Rated high severity: {}.", high.join(", ")));
    }
    let multi = |t: &&&Value| products(t).len() > 1;
    if let Some(t) = themes
        .iter()
        .skip(1)
        .find(multi)
        .or(themes.iter().find(multi))
    {
        out.push_str(&format!(
            " **{}** spans several products ({}).",
            name(t),
            products(t).join(", ")
        ));
    }
    out.push_str("\n\n## Suggested actions\n\n");
    for (i, t) in themes.iter().take(8).enumerate() {
        let ids: Vec<String> = t
            .get("examples")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .take(2)
                    .map(|e| field(e, "id"))
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let see = if ids.is_empty() {
            String::new()
        } else {
            format!(" See {}.", ids.join(", "))
        };
        out.push_str(&format!(
            "{}. **{}** ({} tickets): {}{}\n",
            i + 1,
            name(t),
            num(t, "count") as u64,
            action_for(&name(t)),
            see
        ));
    }
    out
}
