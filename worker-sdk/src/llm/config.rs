//! [`LlmConfig`]: where the LLM is and how to talk to it, from the environment.

use std::fmt;
use std::time::Duration;

use super::{Error, PriceTable};

/// Base URL of an OpenAI-compatible API (`https://api.openai.com/v1`,
/// `http://127.0.0.1:11434/v1`); unset or empty = the built-in offline model.
pub const ENV_BASE_URL: &str = "STEADFAST_LLM_BASE_URL";
/// API key, sent as `Authorization: Bearer <key>`; optional (local servers need none).
pub const ENV_API_KEY: &str = "STEADFAST_LLM_API_KEY";
/// Default model of requests that name none.
pub const ENV_MODEL: &str = "STEADFAST_LLM_MODEL";
/// Price overrides: inline JSON or the path of a JSON file (see [`PriceTable::from_setting`]).
pub const ENV_PRICES: &str = "STEADFAST_LLM_PRICES";
/// Time limit of one HTTP call, ms (default [`DEFAULT_TIMEOUT`]).
pub const ENV_TIMEOUT_MS: &str = "STEADFAST_LLM_TIMEOUT_MS";
/// Time limit of connecting, ms (default [`DEFAULT_CONNECT_TIMEOUT`]).
pub const ENV_CONNECT_TIMEOUT_MS: &str = "STEADFAST_LLM_CONNECT_TIMEOUT_MS";
/// Which API to call: `chat` (default: `POST {base}/chat/completions`) or `responses`
/// (`POST {base}/responses`, the OpenAI Responses API); see [`Api`].
pub const ENV_API: &str = "STEADFAST_LLM_API";
/// `true` runs each generation as a background job of the Responses API (needs
/// `STEADFAST_LLM_API=responses`): the response id is recorded in the run's history before
/// the activity waits on it, so a retry after a worker crash re-attaches instead of paying for
/// a new generation (see [`super::responses`]). Default `false`.
pub const ENV_BACKGROUND: &str = "STEADFAST_LLM_BACKGROUND";

/// First wait between two polls of a background response.
pub const DEFAULT_POLL_INITIAL: Duration = Duration::from_millis(250);
/// Longest wait between two polls of a background response (the waits grow x1.5 up to it).
pub const DEFAULT_POLL_MAX: Duration = Duration::from_secs(2);

/// The wire an [`super::LlmClient`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// `POST {base}/chat/completions`: OpenAI and every compatible server.
    #[default]
    ChatCompletions,
    /// `POST {base}/responses`: the OpenAI Responses API, optionally in background mode
    /// ([`LlmConfig::background`]).
    Responses,
}
/// Pause between the chunks the offline model streams, ms (default 0: as fast as they are
/// sent), so that a demo's live tokens arrive at a readable pace.
pub const ENV_OFFLINE_PACE_MS: &str = "STEADFAST_LLM_OFFLINE_PACE_MS";

/// Default time limit of one call: below the `llm.chat` activity's 120 s start-to-close,
/// so that a slow API ends the attempt with a typed, retryable error rather than an
/// activity timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(110);
/// Default time limit of connecting.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings of an [`super::LlmClient`]. `Debug` never shows the API key.
#[derive(Clone, PartialEq)]
pub struct LlmConfig {
    /// Base URL of the API, without `/chat/completions`; `None` = offline model.
    pub base_url: Option<String>,
    /// API key (never logged).
    pub api_key: Option<String>,
    /// Default model of requests that name none.
    pub model: Option<String>,
    /// Time limit of one call.
    pub timeout: Duration,
    /// Time limit of connecting.
    pub connect_timeout: Duration,
    /// Prices, for the cost of each call.
    pub prices: PriceTable,
    /// Which API to call.
    pub api: Api,
    /// Run generations as background jobs of the Responses API and re-attach to them on a
    /// retry (only with [`Api::Responses`]).
    pub background: bool,
    /// First wait between two polls of a background response.
    pub poll_initial: Duration,
    /// Longest wait between two polls of a background response.
    pub poll_max: Duration,
    /// Pause between the chunks of an offline answer streamed to watchers.
    pub offline_pace: Duration,
}

impl Default for LlmConfig {
    /// The offline model with default prices and timeouts.
    fn default() -> Self {
        LlmConfig {
            base_url: None,
            api_key: None,
            model: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            prices: PriceTable::default(),
            api: Api::ChatCompletions,
            background: false,
            poll_initial: DEFAULT_POLL_INITIAL,
            poll_max: DEFAULT_POLL_MAX,
            offline_pace: Duration::ZERO,
        }
    }
}

impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("api", &self.api)
            .field("background", &self.background)
            .finish_non_exhaustive()
    }
}

impl LlmConfig {
    /// An OpenAI-compatible API at `base_url` (e.g. `https://api.openai.com/v1`).
    pub fn openai_compatible(base_url: impl Into<String>) -> Self {
        LlmConfig {
            base_url: Some(base_url.into()),
            ..Default::default()
        }
    }

    /// Reads the `STEADFAST_LLM_*` variables of the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the `STEADFAST_LLM_*` settings from `lookup` (a name -> value function), so
    /// that tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let ms = |name: &str, default: Duration| -> Result<Duration, Error> {
            match get(name) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                    _ => Err(Error::Config(format!(
                        "{name} must be a positive number of milliseconds, not {v:?}"
                    ))),
                },
            }
        };
        let base_url = get(ENV_BASE_URL).map(|u| u.trim_end_matches('/').to_owned());
        if let Some(url) = base_url
            .as_deref()
            .filter(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(Error::Config(format!(
                "{ENV_BASE_URL} must start with http:// or https://, not {url:?}"
            )));
        }
        let api = match get(ENV_API).map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("chat" | "chat_completions") => Api::ChatCompletions,
            Some("responses") => Api::Responses,
            Some(other) => {
                return Err(Error::Config(format!(
                    "{ENV_API} must be \"chat\" or \"responses\", not {:?}",
                    other.chars().take(40).collect::<String>()
                )));
            }
        };
        let background = match get(ENV_BACKGROUND)
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false" | "0" | "no") => false,
            Some("true" | "1" | "yes") => true,
            Some(other) => {
                return Err(Error::Config(format!(
                    "{ENV_BACKGROUND} must be true or false, not {:?}",
                    other.chars().take(40).collect::<String>()
                )));
            }
        };
        LlmConfig {
            base_url,
            api_key: lookup(ENV_API_KEY).filter(|k| !k.trim().is_empty()),
            model: get(ENV_MODEL),
            timeout: ms(ENV_TIMEOUT_MS, DEFAULT_TIMEOUT)?,
            connect_timeout: ms(ENV_CONNECT_TIMEOUT_MS, DEFAULT_CONNECT_TIMEOUT)?,
            prices: PriceTable::from_setting(get(ENV_PRICES).as_deref())?,
            api,
            background,
            offline_pace: match get(ENV_OFFLINE_PACE_MS) {
                None => Duration::ZERO,
                Some(v) => Duration::from_millis(v.parse::<u64>().map_err(|_| {
                    Error::Config(format!(
                        "{ENV_OFFLINE_PACE_MS} must be a number of milliseconds, not {v:?}"
                    ))
                })?),
            },
            ..LlmConfig::default()
        }
        .validated()
    }

    /// The configuration, or why it cannot work.
    pub fn validated(self) -> Result<Self, Error> {
        if self.background && self.api != Api::Responses {
            return Err(Error::Config(format!(
                "background mode ({ENV_BACKGROUND}=true) needs the Responses API: set {ENV_API}=responses"
            )));
        }
        if self.poll_initial.is_zero() || self.poll_max < self.poll_initial {
            return Err(Error::Config(format!(
                "poll waits must be positive with poll_initial <= poll_max, not {:?} and {:?}",
                self.poll_initial, self.poll_max
            )));
        }
        Ok(self)
    }

    /// Calls the OpenAI Responses API (`POST {base}/responses`) instead of chat completions;
    /// with `background`, each generation runs as a background job that a retry re-attaches
    /// to (see [`super::responses`]).
    pub fn responses_api(mut self, background: bool) -> Self {
        self.api = Api::Responses;
        self.background = background;
        self
    }

    /// Sets the waits between two polls of a background response: the first, and the
    /// longest (they grow x1.5).
    pub fn poll_interval(mut self, initial: Duration, max: Duration) -> Self {
        self.poll_initial = initial;
        self.poll_max = max;
        self
    }

    /// Sets the pause between the chunks of a streamed offline answer.
    pub fn offline_pace(mut self, pace: Duration) -> Self {
        self.offline_pace = pace;
        self
    }

    /// Sets the API key.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the default model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the time limit of one call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the price table.
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<LlmConfig, Error> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LlmConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn nothing_set_means_offline_defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c, LlmConfig::default());
        assert_eq!(config(&[(ENV_BASE_URL, "  ")]).unwrap().base_url, None);
    }

    #[test]
    fn every_variable_is_read() {
        let c = config(&[
            (ENV_BASE_URL, "http://127.0.0.1:11434/v1/"),
            (ENV_API_KEY, "sk-secret"),
            (ENV_MODEL, "llama3"),
            (ENV_TIMEOUT_MS, "2500"),
            (ENV_CONNECT_TIMEOUT_MS, "300"),
            (ENV_PRICES, r#"{"llama3":{"input":1,"output":1}}"#),
        ])
        .unwrap();
        assert_eq!(c.base_url.as_deref(), Some("http://127.0.0.1:11434/v1"));
        assert_eq!(c.api_key.as_deref(), Some("sk-secret"));
        assert_eq!(c.model.as_deref(), Some("llama3"));
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.connect_timeout, Duration::from_millis(300));
        assert_eq!(c.prices.cost_micros("llama3", 1, 1), 2);
        assert_eq!((c.api, c.background), (Api::ChatCompletions, false));
        let r = config(&[(ENV_API, "Responses"), (ENV_BACKGROUND, "true")]).unwrap();
        assert_eq!((r.api, r.background), (Api::Responses, true));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("sk-secret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_name() {
        for (k, v) in [
            (ENV_TIMEOUT_MS, "soon"),
            (ENV_TIMEOUT_MS, "0"),
            (ENV_BASE_URL, "api.openai.com/v1"),
            (ENV_PRICES, "{oops"),
            (ENV_API, "completions"),
            (ENV_BACKGROUND, "maybe"),
            (ENV_BACKGROUND, "true"),
        ] {
            let e = config(&[(k, v)]).unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{k}={v}: {e}");
        }
        let e = config(&[(ENV_BACKGROUND, "1")]).unwrap_err();
        assert!(e.to_string().contains(ENV_API), "{e}");
        let e = config(&[(ENV_CONNECT_TIMEOUT_MS, "-1")]).unwrap_err();
        assert!(e.to_string().contains(ENV_CONNECT_TIMEOUT_MS), "{e}");
    }
}
