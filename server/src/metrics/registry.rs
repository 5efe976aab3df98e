//! Counters and histograms with bounded label sets, rendered in the Prometheus text
//! exposition format (version 0.0.4). Hand-written: the server needs a dozen families, no
//! registry crate.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

/// The label value that stands for every value past a label's limit.
pub const OTHER: &str = "other";

/// Longest label value kept (bytes); longer ones are cut at a character boundary.
pub const LABEL_VALUE_BYTES_MAX: usize = 128;

/// A label whose values come from callers (workflow and activity types, models): the first
/// `max` distinct values are kept, every later one becomes [`OTHER`], so a caller can never
/// grow the exposition without bound.
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    seen: HashSet<String>,
}

impl LabelCap {
    /// A label that keeps at most `max` distinct values.
    pub fn new(max: usize) -> LabelCap {
        LabelCap {
            max,
            seen: HashSet::new(),
        }
    }

    /// The value to use for `v`.
    pub fn value(&mut self, v: &str) -> String {
        let v = truncate(v, LABEL_VALUE_BYTES_MAX);
        if self.seen.contains(v) {
            return v.to_string();
        }
        if self.seen.len() < self.max {
            self.seen.insert(v.to_string());
            return v.to_string();
        }
        OTHER.to_string()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A family of counters (or gauges) by label values.
#[derive(Debug)]
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    values: BTreeMap<Vec<String>, f64>,
}

impl CounterVec {
    /// A counter family.
    pub fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> CounterVec {
        CounterVec {
            name,
            help,
            kind: "counter",
            labels,
            values: BTreeMap::new(),
        }
    }

    /// A gauge family (set, not added to).
    pub fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> CounterVec {
        CounterVec {
            kind: "gauge",
            ..CounterVec::counter(name, help, labels)
        }
    }

    /// Adds `by` to the series `values` (one per label, in order).
    pub fn add(&mut self, values: &[&str], by: f64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        *self
            .values
            .entry(values.iter().map(|v| v.to_string()).collect())
            .or_default() += by;
    }

    /// Sets the series `values` to `v` (gauges).
    pub fn set(&mut self, values: &[&str], v: f64) {
        self.values
            .insert(values.iter().map(|v| v.to_string()).collect(), v);
    }

    /// The value of one series (0 when never touched).
    pub fn get(&self, values: &[&str]) -> f64 {
        let k: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.values.get(&k).copied().unwrap_or(0.0)
    }

    /// Appends the family to `out`. A family without labels shows 0 before its first sample,
    /// so a scrape always lists it.
    pub fn render(&self, out: &mut String) {
        header(out, self.name, self.help, self.kind);
        if self.labels.is_empty() && self.values.is_empty() {
            let _ = writeln!(out, "{} 0", self.name);
        }
        for (values, v) in &self.values {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.name,
                labels(self.labels, values, None),
                number(*v)
            );
        }
    }
}

/// Bucket bounds (seconds) of latencies of tasks and attempts: milliseconds to an hour.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Bucket bounds (seconds) of whole runs: up to a day.
pub const RUN_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

#[derive(Debug, Clone, Default)]
struct Hist {
    /// Per bucket, not cumulative; the last one is +Inf.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A family of histograms by label values.
#[derive(Debug)]
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    values: BTreeMap<Vec<String>, Hist>,
}

impl HistogramVec {
    /// A histogram family with these bucket bounds (ascending).
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> HistogramVec {
        HistogramVec {
            name,
            help,
            labels,
            bounds,
            values: BTreeMap::new(),
        }
    }

    /// Records `v` in the series `values`.
    pub fn observe(&mut self, values: &[&str], v: f64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        let n = self.bounds.len() + 1;
        let h = self
            .values
            .entry(values.iter().map(|v| v.to_string()).collect())
            .or_insert_with(|| Hist {
                buckets: vec![0; n],
                ..Hist::default()
            });
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(n - 1);
        h.buckets[i] += 1;
        h.sum += v;
        h.count += 1;
    }

    /// Sets the series `values` from counts already bucketed by this family's bounds
    /// (`buckets[i]`: observations in bucket `i` alone, the last one past every bound), for
    /// histograms kept elsewhere and read at scrape time.
    pub fn set_buckets(&mut self, values: &[&str], buckets: &[u64], sum: f64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        debug_assert_eq!(buckets.len(), self.bounds.len() + 1, "{}", self.name);
        self.values.insert(
            values.iter().map(|v| v.to_string()).collect(),
            Hist {
                buckets: buckets.to_vec(),
                sum,
                count: buckets.iter().sum(),
            },
        );
    }

    /// How many observations one series has.
    pub fn count(&self, values: &[&str]) -> u64 {
        let k: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.values.get(&k).map_or(0, |h| h.count)
    }

    /// Appends the family to `out`.
    pub fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        for (values, h) in &self.values {
            let mut cumulative = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n;
                let le = self
                    .bounds
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| number(*b));
                let _ = writeln!(
                    out,
                    "{}_bucket{} {cumulative}",
                    self.name,
                    labels(self.labels, values, Some(&le))
                );
            }
            let l = labels(self.labels, values, None);
            let _ = writeln!(out, "{}_sum{l} {}", self.name, number(h.sum));
            let _ = writeln!(out, "{}_count{l} {}", self.name, h.count);
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(names: &[&str], values: &[String], le: Option<&str>) -> String {
    if names.is_empty() && le.is_none() {
        return String::new();
    }
    let mut s = String::from("{");
    let pairs = names
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .chain(le.map(|le| ("le", le)));
    for (i, (n, v)) in pairs.enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{n}=\"{}\"", escape(v));
    }
    s.push('}');
    s
}

/// A label value as the exposition format quotes it.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_past_the_cap_become_other() {
        let mut cap = LabelCap::new(2);
        assert_eq!(cap.value("a"), "a");
        assert_eq!(cap.value("b"), "b");
        assert_eq!(cap.value("c"), OTHER);
        assert_eq!(cap.value("a"), "a");
        let long = "é".repeat(LABEL_VALUE_BYTES_MAX);
        let mut cap = LabelCap::new(1);
        assert_eq!(cap.value(&long).len(), LABEL_VALUE_BYTES_MAX);
    }

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let mut c = CounterVec::counter("x_total", "Things.", &["type"]);
        c.add(&["a\"b\\c\nd"], 2.0);
        let mut out = String::new();
        c.render(&mut out);
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{type=\"a\\\"b\\\\c\\nd\"} 2\n"
        );
        let mut h = HistogramVec::new("d_seconds", "Time.", &[], &[0.1, 1.0]);
        h.observe(&[], 0.05);
        h.observe(&[], 0.5);
        h.observe(&[], 5.0);
        let mut out = String::new();
        h.render(&mut out);
        assert!(out.contains("d_seconds_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("d_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("d_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("d_seconds_sum 5.55\n"), "{out}");
        assert!(out.contains("d_seconds_count 3\n"), "{out}");
        let empty = CounterVec::counter("y_total", "Y.", &[]);
        let mut out = String::new();
        empty.render(&mut out);
        assert!(out.ends_with("y_total 0\n"), "{out}");
    }
}
