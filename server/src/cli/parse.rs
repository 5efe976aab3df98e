//! Parsing of command-line values: JSON inputs, durations, dollar amounts, filters.
//!
//! Every parser answers a message that says what to fix; none of them panics.

use std::io::Read;

use steadfast_engine::state::RunStatus;

/// The `--waiting` filter values understood by `ListRuns`.
pub const WAITING_KINDS: &[&str] = &[
    "signal",
    "approval",
    "activity",
    "timer",
    "budget",
    "reconciliation",
    "child",
    "workflow_task",
    "build",
    "idle",
];

/// Reads a JSON argument: inline text, `@path` for a file, `-` for stdin. Returns the bytes
/// exactly as given (the workflow sees what the user wrote), after checking they parse.
pub fn json_arg(flag: &str, value: &str) -> Result<Vec<u8>, String> {
    let bytes = if value == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("{flag} -: cannot read stdin: {e}"))?;
        buf
    } else if let Some(path) = value.strip_prefix('@') {
        std::fs::read(path).map_err(|e| format!("{flag} {value}: cannot read {path}: {e}"))?
    } else {
        value.as_bytes().to_vec()
    };
    check_json(flag, &bytes)?;
    Ok(bytes)
}

/// Checks that `bytes` are one JSON value.
pub fn check_json(flag: &str, bytes: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .map(|_| ())
        .map_err(|e| {
            format!("{flag} is not valid JSON: {e} (quote strings in the shell: --input '\"yes\"')")
        })
}

/// A duration: plain seconds (`90`), or a number with a unit (`500ms`, `90s`, `15m`, `2h`,
/// `1d`). Returns milliseconds.
pub fn duration_ms(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("{value:?} is not a duration: use seconds (90) or a unit (500ms, 90s, 15m, 2h, 1d)")
    })?;
    let factor: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{value:?} has an unknown unit {unit:?}: use ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{value:?} is too long a duration"))
}

/// Shortest `--workflow-task-timeout`: a workflow task needs a round trip and an activation.
pub const WORKFLOW_TASK_TIMEOUT_MS_MIN: u64 = 100;

/// `--workflow-task-timeout`: a [`duration_ms`] of at least [`WORKFLOW_TASK_TIMEOUT_MS_MIN`].
pub fn workflow_task_timeout_ms(value: &str) -> Result<u64, String> {
    let ms = duration_ms(value)?;
    if ms < WORKFLOW_TASK_TIMEOUT_MS_MIN {
        return Err(format!(
            "{value:?} is too short for a workflow task timeout: give at least {WORKFLOW_TASK_TIMEOUT_MS_MIN}ms"
        ));
    }
    Ok(ms)
}

/// A dollar amount (`1`, `0.25`, `$3.50`, at most 6 decimals) in millionths of a dollar,
/// computed without floating point so that `0.000001` is exactly 1.
pub fn usd_micros(value: &str) -> Result<u64, String> {
    let bad = || format!("{value:?} is not a dollar amount: use e.g. 2.50 (at most 6 decimals)");
    let v = value.trim().trim_start_matches('$');
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if !digits(whole) || !digits(frac) || frac.len() > 6 {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_micros: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac_micros))
        .ok_or_else(|| format!("{value:?} is too large"))
}

/// A run status name as printed by the CLI (`running`, `timed_out`, ...); `-` may stand for `_`.
pub fn status(value: &str) -> Result<RunStatus, String> {
    RunStatus::parse(&value.trim().to_ascii_lowercase().replace('-', "_")).ok_or_else(|| {
        format!("{value:?} is not a run status: use running, completed, failed, cancelled, terminated, timed_out or continued_as_new")
    })
}

/// A `--waiting` filter value.
pub fn waiting(value: &str) -> Result<String, String> {
    let v = value.trim().to_ascii_lowercase().replace('-', "_");
    if WAITING_KINDS.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(format!(
            "{value:?} is not a waiting kind: use one of {}",
            WAITING_KINDS.join(", ")
        ))
    }
}

/// `--store`: a PostgreSQL URL (the embedded store is chosen by leaving it out).
pub fn store_url(value: &str) -> Result<String, String> {
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        return Ok(value.to_string());
    }
    let shown: String = value.chars().take(24).collect();
    Err(format!(
        "expected a PostgreSQL URL, postgres://user:password@host:5432/database, got {shown:?}; \
         leave --store out for the embedded store in --data-dir"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_task_timeouts_are_durations_of_at_least_100ms() {
        assert_eq!(workflow_task_timeout_ms("10s"), Ok(10_000));
        assert_eq!(workflow_task_timeout_ms("250ms"), Ok(250));
        let e = workflow_task_timeout_ms("50ms").unwrap_err();
        assert!(e.contains("at least 100ms"), "{e}");
        assert!(workflow_task_timeout_ms("soon").is_err());
    }

    #[test]
    fn json_is_checked_and_kept_verbatim() {
        assert_eq!(
            json_arg("--input", r#"{"a": 1}"#).unwrap(),
            br#"{"a": 1}"#.to_vec()
        );
        let err = json_arg("--input", "yes").unwrap_err();
        assert!(
            err.starts_with("--input is not valid JSON: expected value at line 1 column 1"),
            "{err}"
        );
        assert!(json_arg("--input", "").is_err());
        assert!(
            json_arg("--input", "@/nonexistent/file")
                .unwrap_err()
                .contains("cannot read")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms("90"), Ok(90_000));
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("15m"), Ok(900_000));
        assert_eq!(duration_ms("2h"), Ok(7_200_000));
        assert_eq!(duration_ms("1d"), Ok(86_400_000));
        assert!(duration_ms("").is_err());
        assert!(duration_ms("-5").is_err());
        assert!(duration_ms("1.5").is_err());
        assert!(duration_ms("3w").unwrap_err().contains("unknown unit"));
        assert!(duration_ms("99999999999999999999").is_err());
        assert!(
            duration_ms(&format!("{}d", u64::MAX / 1000))
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn dollars_are_exact() {
        assert_eq!(usd_micros("1"), Ok(1_000_000));
        assert_eq!(usd_micros("2.50"), Ok(2_500_000));
        assert_eq!(usd_micros("$0.000001"), Ok(1));
        assert_eq!(usd_micros(".5"), Ok(500_000));
        assert_eq!(usd_micros("3."), Ok(3_000_000));
        assert!(usd_micros("0.0000001").is_err());
        assert!(usd_micros("-1").is_err());
        assert!(usd_micros("1e3").is_err());
        assert!(usd_micros(".").is_err());
        assert!(usd_micros("").is_err());
        assert!(
            usd_micros("99999999999999999")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn statuses_and_waiting() {
        assert_eq!(status("timed-out"), Ok(RunStatus::TimedOut));
        assert_eq!(status("Completed"), Ok(RunStatus::Completed));
        assert!(status("done").is_err());
        assert_eq!(waiting("workflow-task").as_deref(), Ok("workflow_task"));
        assert_eq!(waiting("Idle").as_deref(), Ok("idle"));
        assert!(waiting("human").unwrap_err().contains("signal"));
    }
}
