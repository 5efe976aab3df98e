//! The limits on what callers may ask of a server: named settings with defaults, each refusal
//! a status that names the limit and the setting that raises it (issue 12).
//!
//! Set with `steadfast server --limit NAME=VALUE` (repeatable) or
//! `STEADFAST_LIMITS=NAME=VALUE,NAME=VALUE`, as Temporal's dynamic config sets one key at a
//! time. The size limits can be lowered but not raised past the ceiling the storage format is
//! built for (the `*_CEILING` constants).

use std::sync::RwLock;

use steadfast_engine::ids::NAME_LEN_MAX;
use steadfast_engine::payload::PAYLOAD_BYTES_MAX;
use tonic::Status;

/// The most any request may be, whatever the setting: past it nothing is decoded.
pub const REQUEST_BYTES_CEILING: u64 = 64 << 20;

/// Every limit, by name. `NAME`, the default, and what it bounds.
pub const NAMES: &[(&str, u64, &str)] = &[
    (
        "payload_bytes_max",
        PAYLOAD_BYTES_MAX as u64,
        "bytes of one payload (input, result, signal, heartbeat details)",
    ),
    (
        "request_bytes_max",
        crate::server::REQUEST_BYTES_MAX as u64,
        "bytes of one request, before it is decoded",
    ),
    (
        "name_bytes_max",
        NAME_LEN_MAX as u64,
        "bytes of a name (namespace, type, queue, workflow id, signal, identity)",
    ),
    (
        "page_size_max",
        1_000,
        "runs or events in one page of ListRuns / GetHistory (larger pages are cut to it)",
    ),
    (
        "pending_activities_per_run_max",
        2_000,
        "activities scheduled and not closed in one run",
    ),
    (
        "pending_timers_per_run_max",
        2_000,
        "timers started and not fired or cancelled in one run",
    ),
    (
        "pending_signals_per_run_max",
        10_000,
        "signals received that the run has not waited for yet",
    ),
    (
        "polls_in_flight_per_connection_max",
        1_000,
        "long polls waiting at once on one client connection",
    ),
    (
        "task_queues_per_namespace_max",
        1_000,
        "task queues with work in one namespace (a start or an activity on one more is refused)",
    ),
];

/// The limits one server enforces. Defaults in [`NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one payload.
    pub payload_bytes_max: u64,
    /// Bytes of one request.
    pub request_bytes_max: u64,
    /// Bytes of one name.
    pub name_bytes_max: u64,
    /// Items in one page.
    pub page_size_max: u64,
    /// Open activities in one run.
    pub pending_activities_per_run_max: u64,
    /// Open timers in one run.
    pub pending_timers_per_run_max: u64,
    /// Signals received and not yet waited for in one run.
    pub pending_signals_per_run_max: u64,
    /// Long polls waiting at once on one connection.
    pub polls_in_flight_per_connection_max: u64,
    /// Task queues with work in one namespace.
    pub task_queues_per_namespace_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let mut l = Limits {
            payload_bytes_max: 0,
            request_bytes_max: 0,
            name_bytes_max: 0,
            page_size_max: 0,
            pending_activities_per_run_max: 0,
            pending_timers_per_run_max: 0,
            pending_signals_per_run_max: 0,
            polls_in_flight_per_connection_max: 0,
            task_queues_per_namespace_max: 0,
        };
        for (name, default, _) in NAMES {
            *l.field(name).expect("every name has a field") = *default;
        }
        l
    }
}

/// Why a `--limit` setting is refused at startup.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not `NAME=VALUE`.
    #[error("--limit {0}: expected NAME=VALUE (e.g. payload_bytes_max=1048576)")]
    Syntax(String),
    /// No such limit.
    #[error("--limit: no limit named {name}; the limits are: {known}")]
    Unknown {
        /// The name given (quoted, cut short).
        name: String,
        /// Every name.
        known: String,
    },
    /// Not a positive whole number, or past the ceiling.
    #[error("--limit {name}={value}: give a whole number from 1 to {ceiling}")]
    Value {
        /// The limit.
        name: &'static str,
        /// The value given (quoted, cut short).
        value: String,
        /// The largest value allowed.
        ceiling: u64,
    },
}

impl Limits {
    fn field(&mut self, name: &str) -> Option<&mut u64> {
        Some(match name {
            "payload_bytes_max" => &mut self.payload_bytes_max,
            "request_bytes_max" => &mut self.request_bytes_max,
            "name_bytes_max" => &mut self.name_bytes_max,
            "page_size_max" => &mut self.page_size_max,
            "pending_activities_per_run_max" => &mut self.pending_activities_per_run_max,
            "pending_timers_per_run_max" => &mut self.pending_timers_per_run_max,
            "pending_signals_per_run_max" => &mut self.pending_signals_per_run_max,
            "polls_in_flight_per_connection_max" => &mut self.polls_in_flight_per_connection_max,
            "task_queues_per_namespace_max" => &mut self.task_queues_per_namespace_max,
            _ => return None,
        })
    }

    /// The defaults with each `NAME=VALUE` of `settings` applied, in order.
    pub fn parse<'a>(settings: impl IntoIterator<Item = &'a str>) -> Result<Limits, Error> {
        let mut l = Limits::default();
        for s in settings {
            l.set(s)?;
        }
        Ok(l)
    }

    /// Applies one `NAME=VALUE`.
    pub fn set(&mut self, setting: &str) -> Result<(), Error> {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| Error::Syntax(crate::validate::quote(setting)))?;
        let (name, value) = (name.trim(), value.trim());
        let Some(&(known, _, _)) = NAMES.iter().find(|(n, _, _)| *n == name) else {
            return Err(Error::Unknown {
                name: crate::validate::quote(name),
                known: NAMES
                    .iter()
                    .map(|(n, _, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let ceiling = ceiling(known);
        let v = value
            .replace('_', "")
            .parse::<u64>()
            .ok()
            .filter(|v| (1..=ceiling).contains(v))
            .ok_or_else(|| Error::Value {
                name: known,
                value: crate::validate::quote(value),
                ceiling,
            })?;
        *self.field(known).expect("known name") = v;
        Ok(())
    }
}

/// The largest value a limit may be set to: the format bounds for sizes, else any.
fn ceiling(name: &str) -> u64 {
    match name {
        "payload_bytes_max" => PAYLOAD_BYTES_MAX as u64,
        "name_bytes_max" => NAME_LEN_MAX as u64,
        "request_bytes_max" => REQUEST_BYTES_CEILING,
        // The stores cut a page there: a larger one would end the listing early.
        "page_size_max" => steadfast_engine::embedded::LIST_RUNS_PAGE_MAX as u64,
        _ => u32::MAX as u64,
    }
}

/// The refusal of a request past `limit`: RESOURCE_EXHAUSTED naming the limit, its value and
/// the setting that changes it.
pub fn exceeded(what: impl std::fmt::Display, limit: &str, value: u64) -> Status {
    Status::resource_exhausted(format!(
        "{what}; the limit is {limit} = {value} (server setting --limit {limit}=N)"
    ))
}

/// Refuses work on `queues` in `namespace` when one of them holds no work yet and the
/// namespace already has `max` queues that do: each queue is an index and a set of pollers, so
/// a caller that invents a queue name per run cannot grow them without bound. Only growth is
/// refused: a queue that has work takes more.
pub async fn queue_room(
    store: &dyn steadfast_engine::store::Store,
    namespace: &str,
    queues: &[&str],
    max: u64,
) -> Result<(), Status> {
    let want = max.saturating_add(1).min(usize::MAX as u64) as usize;
    let mut have: Option<Vec<String>> = None;
    for q in queues {
        let have = match &mut have {
            Some(h) => h,
            None => have.insert(
                store
                    .queues_with_work(namespace, want)
                    .await
                    .map_err(crate::core::status)?,
            ),
        };
        if have.iter().any(|h| h == q) {
            continue;
        }
        if have.len() as u64 >= max {
            return Err(exceeded(
                format_args!(
                    "task queue {} would be one more queue with work in namespace {}, which has {}",
                    crate::validate::quote(q),
                    crate::validate::quote(namespace),
                    have.len()
                ),
                "task_queues_per_namespace_max",
                max,
            ));
        }
        have.push(q.to_string());
    }
    Ok(())
}

/// The limits of this process's server. One server per process sets them when it starts
/// serving ([`install`]); the free validation functions read them, so that a name or a
/// payload is checked the same way wherever it arrives.
static CURRENT: RwLock<Option<Limits>> = RwLock::new(None);

/// Makes `limits` those of this process.
pub fn install(limits: Limits) {
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = Some(limits);
}

/// This process's limits (the defaults until [`install`]).
pub fn current() -> Limits {
    CURRENT
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_settings() {
        let d = Limits::default();
        assert_eq!(d.payload_bytes_max, PAYLOAD_BYTES_MAX as u64);
        assert_eq!(d.page_size_max, 1_000);
        let l = Limits::parse(["page_size_max=10", "pending_timers_per_run_max = 3"]).unwrap();
        assert_eq!((l.page_size_max, l.pending_timers_per_run_max), (10, 3));
        assert_eq!(l.payload_bytes_max, d.payload_bytes_max);
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        let e = Limits::parse(["page_size_max"]).unwrap_err();
        assert!(e.to_string().contains("NAME=VALUE"), "{e}");
        let e = Limits::parse(["pages=1"]).unwrap_err().to_string();
        assert!(
            e.contains("no limit named \"pages\"") && e.contains("page_size_max"),
            "{e}"
        );
        let e = Limits::parse(["payload_bytes_max=99999999"]).unwrap_err();
        assert!(e.to_string().contains("from 1 to 2097152"), "{e}");
        assert!(Limits::parse(["page_size_max=0"]).is_err());
        assert!(Limits::parse(["page_size_max=-1"]).is_err());
        let long = format!("x={}", "9".repeat(10_000));
        assert!(
            Limits::parse([long.as_str()])
                .unwrap_err()
                .to_string()
                .len()
                < 300
        );
    }

    #[test]
    fn refusals_name_the_setting() {
        let s = exceeded("12 timers pending", "pending_timers_per_run_max", 10);
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().contains("--limit pending_timers_per_run_max=N"),
            "{}",
            s.message()
        );
    }
}
