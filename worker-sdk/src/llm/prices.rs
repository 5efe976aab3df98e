//! [`PriceTable`]: USD per million input and output tokens, per model, so that every call
//! carries its cost and the server can enforce cost budgets.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Error;
use super::offline;

/// The price of one model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// USD per 1M prompt tokens.
    #[serde(alias = "input")]
    pub input_usd_per_mtok: f64,
    /// USD per 1M completion tokens.
    #[serde(alias = "output")]
    pub output_usd_per_mtok: f64,
}

impl ModelPrice {
    /// A price of `input` and `output` USD per million tokens.
    pub const fn new(input: f64, output: f64) -> Self {
        ModelPrice {
            input_usd_per_mtok: input,
            output_usd_per_mtok: output,
        }
    }

    /// The cost of a call in millionths of a dollar, rounded to the nearest.
    ///
    /// USD per million tokens times tokens is exactly micro-USD, so no scaling is needed.
    pub fn cost_micros(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        let micros = input_tokens as f64 * self.input_usd_per_mtok
            + output_tokens as f64 * self.output_usd_per_mtok;
        // `as` saturates: a negative or NaN price (refused at load) would give 0.
        micros.round() as u64
    }
}

/// List prices when this table was written (USD per 1M tokens, input / output). They go
/// stale: override them with `STEADFAST_LLM_PRICES`.
const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    (offline::MODEL_NAME, 0.0, 0.0),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("o3-mini", 1.10, 4.40),
    ("o4-mini", 1.10, 4.40),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-opus-4", 15.00, 75.00),
];

/// Prices per model name. A model is priced by its exact name, else by the longest known
/// name it starts with (`gpt-4o-mini-2024-07-18` is priced as `gpt-4o-mini`); unknown
/// models cost 0 (and are logged, since a cost budget cannot see them).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    prices: HashMap<String, ModelPrice>,
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable {
            prices: DEFAULT_PRICES
                .iter()
                .map(|&(model, input, output)| (model.to_owned(), ModelPrice::new(input, output)))
                .collect(),
        }
    }
}

impl PriceTable {
    /// A table with no prices at all.
    pub fn empty() -> Self {
        PriceTable {
            prices: HashMap::new(),
        }
    }

    /// Sets the price of `model`.
    pub fn set(&mut self, model: impl Into<String>, price: ModelPrice) -> &mut Self {
        self.prices.insert(model.into(), price);
        self
    }

    /// The price of `model`: exact name, else the longest known prefix.
    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        self.prices
            .iter()
            .filter(|(known, _)| model.starts_with(known.as_str()))
            .max_by_key(|(known, _)| known.len())
            .map(|(_, p)| *p)
    }

    /// The cost of a call to `model`, in micro-USD; 0 for unknown models.
    pub fn cost_micros(&self, model: &str, input_tokens: u64, output_tokens: u64) -> u64 {
        match self.price(model) {
            Some(p) => p.cost_micros(input_tokens, output_tokens),
            None => {
                tracing::warn!(
                    model,
                    "no price for this model: its cost counts as 0 (set STEADFAST_LLM_PRICES)"
                );
                0
            }
        }
    }

    /// Adds or replaces prices from JSON: `{"model": {"input": 2.5, "output": 10}}` (or
    /// `input_usd_per_mtok` / `output_usd_per_mtok`). Negative or non-finite prices are refused.
    pub fn merge_json(&mut self, json: &str) -> Result<(), Error> {
        let parsed: HashMap<String, ModelPrice> = serde_json::from_str(json).map_err(|e| {
            Error::Config(format!(
                "prices are not JSON like {{\"model\":{{\"input\":2.5,\"output\":10}}}}: {e}"
            ))
        })?;
        for (model, p) in &parsed {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(p.input_usd_per_mtok) || !ok(p.output_usd_per_mtok) {
                return Err(Error::Config(format!(
                    "price of {model} must be finite and >= 0"
                )));
            }
        }
        self.prices.extend(parsed);
        Ok(())
    }

    /// The value of `STEADFAST_LLM_PRICES` applied over the defaults: inline JSON (it starts
    /// with `{`) or the path of a JSON file.
    pub fn from_setting(setting: Option<&str>) -> Result<Self, Error> {
        let mut table = PriceTable::default();
        let Some(setting) = setting.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(table);
        };
        if setting.starts_with('{') {
            table.merge_json(setting)?;
        } else {
            let text = std::fs::read_to_string(setting)
                .map_err(|e| Error::Config(format!("cannot read price file {setting}: {e}")))?;
            table.merge_json(&text)?;
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_tokens_times_usd_per_million() {
        let t = PriceTable::default();
        // 1,000 input tokens at $2.50/M = $0.0025 = 2,500 micro-USD; 100 output at $10/M = 1,000.
        assert_eq!(t.cost_micros("gpt-4o", 1_000, 100), 3_500);
        assert_eq!(t.cost_micros(offline::MODEL_NAME, 1_000_000, 1_000_000), 0);
        assert_eq!(t.cost_micros("no-such-model", 10, 10), 0);
        assert_eq!(ModelPrice::new(0.15, 0.6).cost_micros(3, 1), 1); // 1.05 rounds to 1
    }

    #[test]
    fn dated_model_names_use_the_longest_prefix() {
        let t = PriceTable::default();
        assert_eq!(
            t.price("gpt-4o-mini-2024-07-18"),
            Some(ModelPrice::new(0.15, 0.60))
        );
        assert_eq!(
            t.price("gpt-4o-2024-08-06"),
            Some(ModelPrice::new(2.5, 10.0))
        );
        assert_eq!(t.price("llama3"), None);
    }

    #[test]
    fn overrides_from_json_and_file() {
        let t = PriceTable::from_setting(Some(r#"{"llama3":{"input":1,"output":2},"gpt-4o":{"input_usd_per_mtok":5,"output_usd_per_mtok":20}}"#)).unwrap();
        assert_eq!(t.cost_micros("llama3", 10, 10), 30);
        assert_eq!(t.cost_micros("gpt-4o", 1, 1), 25);
        assert_eq!(t.cost_micros("gpt-4o-mini", 1_000_000, 0), 150_000);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.json");
        std::fs::write(&path, r#"{"my-model":{"input":0.5,"output":1.5}}"#).unwrap();
        let t = PriceTable::from_setting(Some(path.to_str().unwrap())).unwrap();
        assert_eq!(t.cost_micros("my-model", 2, 2), 4);
        assert_eq!(
            PriceTable::from_setting(None).unwrap(),
            PriceTable::default()
        );
    }

    #[test]
    fn bad_prices_are_refused() {
        for bad in [
            "{not json",
            r#"{"m":{"input":-1,"output":1}}"#,
            r#"{"m":{"input":1}}"#,
            "/no/such/prices.json",
        ] {
            let err = PriceTable::from_setting(Some(bad)).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
        }
    }
}
