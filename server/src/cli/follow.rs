//! Following a run to its end: `run result` (AwaitResult long polls) and `run watch` (the
//! WatchRun stream, resumed after the last seq seen when it breaks). Both follow a run that
//! continues as new into its successor, and exit with the code of the final status.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use steadfast_engine::RunStatus;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

use super::client::{self, Backoff, Conn};
use super::fmt::is_json;
use super::live::LiveText;
use super::render::{failure_line, waiting_summary};
use super::{Exit, Outcome, events, exit, note, out, out_line, parse};

/// The end of the live line shown as the progress bar's message, in chars.
const LIVE_LINE_CHARS: usize = 100;

/// The longest AwaitResult the server holds (it caps the timeout at 60 s).
const AWAIT_SLICE_MS: u64 = 60_000;

#[derive(Args, Debug)]
pub struct ResultArgs {
    /// Run id.
    pub(super) run: String,
    /// Wait for the run to end (until --timeout, if given).
    #[arg(long)]
    pub(super) wait: bool,
    /// Wait at most this long (seconds, or 90s, 15m, 2h; implies --wait; default: no limit).
    #[arg(long, value_name = "SECS", value_parser = parse::duration_ms)]
    pub(super) timeout: Option<u64>,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Run id.
    pub(super) run: String,
    /// Start after this seq (0 = from the first event).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub(super) after: u64,
    /// Do not show the live output of running activities (an LLM call's tokens as they
    /// arrive); events only.
    #[arg(long)]
    pub(super) no_deltas: bool,
}

/// How a run stands, said in one line for stderr: `run X failed: boom [Type]`.
pub fn final_message(r: &pb::RunInfo) -> String {
    let id = &r.run_id;
    match crate::convert::status_from(r.status) {
        Some(RunStatus::Completed) => format!("run {id} completed"),
        Some(RunStatus::Failed) => format!(
            "run {id} failed: {}",
            r.failure
                .as_ref()
                .map(failure_line)
                .unwrap_or_else(|| "no failure recorded".into())
        ),
        Some(RunStatus::Cancelled) => format!("run {id} was cancelled"),
        Some(RunStatus::Terminated) => format!("run {id} was terminated"),
        Some(RunStatus::TimedOut) => format!("run {id} timed out"),
        Some(RunStatus::ContinuedAsNew) => {
            format!("run {id} continued as new run {}", r.continued_to)
        }
        Some(RunStatus::Running) | None => format!(
            "run {id} is still running (waiting on: {})",
            waiting_summary(r)
        ),
    }
}

/// The exit of `run result` / `run watch` for a run in this state (see [`exit`]).
pub fn outcome(r: &pb::RunInfo) -> Outcome {
    let code = match crate::convert::status_from(r.status) {
        Some(RunStatus::Completed) => return Ok(()),
        Some(RunStatus::Failed) => exit::FAILED,
        Some(RunStatus::Cancelled) => exit::CANCELLED,
        Some(RunStatus::Terminated) => exit::TERMINATED,
        Some(RunStatus::TimedOut) => exit::TIMED_OUT,
        Some(RunStatus::ContinuedAsNew) => exit::ERROR,
        Some(RunStatus::Running) | None => exit::RUNNING,
    };
    Err(Exit::with(code, final_message(r)))
}

/// The run that continues this one, if it continued as new.
fn successor(r: &pb::RunInfo) -> Option<String> {
    (crate::convert::status_from(r.status) == Some(RunStatus::ContinuedAsNew)
        && !r.continued_to.is_empty())
    .then(|| r.continued_to.clone())
}

/// Prints a result: JSON as the workflow wrote it (one trailing newline), anything else as
/// raw bytes with a note of its encoding.
fn print_result(p: &pb::Payload) -> Outcome {
    if is_json(p) {
        let mut data = p.data.clone();
        if data.last() != Some(&b'\n') {
            data.push(b'\n');
        }
        out(&data)
    } else {
        note(&format!(
            "the result is {} bytes of {}",
            p.data.len(),
            p.encoding
        ));
        out(&p.data)
    }
}

/// `run result`.
pub async fn result(conn: &Conn, a: ResultArgs) -> Outcome {
    let wait = a.wait || a.timeout.is_some();
    let deadline = a
        .timeout
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut run_id = a.run.clone();
    let mut backoff = Backoff::default();
    // Retry only once the server was seen: one that never answered is reported at once.
    let mut seen = false;
    loop {
        let timeout_ms = match (wait, deadline) {
            (false, _) => 0,
            (true, None) => AWAIT_SLICE_MS,
            (true, Some(d)) => {
                (d.saturating_duration_since(Instant::now()).as_millis() as u64).min(AWAIT_SLICE_MS)
            }
        };
        let asked = Instant::now();
        let req = pb::AwaitResultRequest {
            namespace: conn.namespace.clone(),
            run_id: run_id.clone(),
            timeout_ms,
        };
        let r = match conn.client().await_result(req).await {
            Ok(r) => {
                backoff.reset();
                seen = true;
                r.into_inner()
            }
            Err(s) if wait && seen && client::is_transient(&s) => {
                if backoff.is_fresh() {
                    note(&format!(
                        "waiting for run {run_id} was interrupted ({}); retrying",
                        client::status_message(&s)
                    ));
                }
                let Some(delay) = backoff.next_delay() else {
                    return Err(conn.status(s));
                };
                tokio::time::sleep(delay).await;
                continue;
            }
            Err(s) => return Err(conn.status(s)),
        };
        let run = r.run.ok_or_else(|| {
            Exit::error(format!("the server answered for run {run_id} with no run"))
        })?;
        if r.closed {
            if let Some(next) = successor(&run) {
                note(&format!(
                    "run {run_id} continued as new run {next}; following it"
                ));
                run_id = next;
                continue;
            }
            if let Some(p) = &run.result {
                print_result(p)?;
            }
            return outcome(&run);
        }
        if !wait || deadline.is_some_and(|d| Instant::now() >= d) {
            return outcome(&run);
        }
        // A server that answers at once without waiting must not turn this into a busy loop.
        if asked.elapsed() < Duration::from_millis(200) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// What `run watch` draws: plain lines (pipes, files) or a progress bar (terminals).
enum Ui {
    Plain {
        live: LiveText,
    },
    Bar {
        bar: ProgressBar,
        has_progress: bool,
        live: LiveText,
        /// The live line being written, shown as the bar's message until it ends.
        partial: String,
    },
}

impl Ui {
    fn new() -> Ui {
        if !(std::io::stdout().is_terminal() && std::io::stderr().is_terminal()) {
            return Ui::Plain {
                live: LiveText::default(),
            };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Ui::Bar {
            bar,
            has_progress: false,
            live: LiveText::default(),
            partial: String::new(),
        }
    }

    /// Live output: as it arrives on stdout; under a progress bar, whole lines above it and
    /// the line being written as its message.
    fn delta(&mut self, d: &pb::ActivityDelta) -> Outcome {
        match self {
            Ui::Plain { live } => out(live.render(d).as_bytes()),
            Ui::Bar {
                bar, live, partial, ..
            } => {
                partial.push_str(&live.render(d));
                while let Some(nl) = partial.find('\n') {
                    let line: String = partial.drain(..=nl).collect();
                    bar.println(line.trim_end_matches('\n'));
                }
                let tail: String = {
                    let n = partial.chars().count();
                    partial
                        .chars()
                        .skip(n.saturating_sub(LIVE_LINE_CHARS))
                        .collect()
                };
                bar.set_message(tail);
                Ok(())
            }
        }
    }

    fn event(&mut self, e: &pb::HistoryEvent, run: Option<&pb::RunInfo>) -> Outcome {
        let (bar, has_progress) = match self {
            Ui::Plain { live } => {
                if live.end_line() {
                    out(b"\n")?;
                }
                return out_line(&events::line(e));
            }
            Ui::Bar {
                bar,
                has_progress,
                live,
                partial,
            } => {
                if live.end_line() || !partial.is_empty() {
                    bar.println(std::mem::take(partial));
                }
                (bar, has_progress)
            }
        };
        let progress = match &e.attributes {
            Some(A::ProgressReported(p)) => Some((p.done, p.total, p.message.clone())),
            _ => run
                .and_then(|r| r.progress.as_ref())
                .filter(|_| !*has_progress)
                .map(|p| (p.done, p.total, p.message.clone())),
        };
        if let Some((done, total, message)) = progress {
            if !*has_progress && total > 0 {
                let style = ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
                );
                bar.set_style(
                    style
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                *has_progress = true;
            }
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(message);
        } else if !*has_progress && let Some(r) = run {
            bar.set_message(format!("waiting on: {}", waiting_summary(r)));
        }
        if events::is_notable(e) {
            bar.println(events::line(e));
        }
        Ok(())
    }

    fn note(&self, msg: &str) {
        match self {
            Ui::Plain { .. } => note(msg),
            Ui::Bar { bar, .. } => bar.println(msg),
        }
    }

    fn finish(&self) {
        if let Ui::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

/// `run watch`.
pub async fn watch(conn: &Conn, a: WatchArgs) -> Outcome {
    let mut ui = Ui::new();
    let r = watch_loop(conn, a, &mut ui).await;
    ui.finish();
    r
}

async fn watch_loop(conn: &Conn, a: WatchArgs, ui: &mut Ui) -> Outcome {
    let mut run_id = a.run.clone();
    let mut after = a.after;
    let mut backoff = Backoff::default();
    let mut seen = false;
    loop {
        let req = pb::WatchRunRequest {
            namespace: conn.namespace.clone(),
            run_id: run_id.clone(),
            after_seq: after,
            include_deltas: !a.no_deltas,
        };
        let mut interrupted = None;
        let mut switched = false;
        match conn.client().watch_run(req).await {
            Err(s) if seen && client::is_transient(&s) => interrupted = Some(s),
            Err(s) => return Err(conn.status(s)),
            Ok(stream) => {
                seen = true;
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(resp)) => {
                            backoff.reset();
                            if let Some(d) = &resp.delta {
                                ui.delta(d)?;
                            }
                            let Some(e) = resp.event else { continue };
                            // After a resume the server may repeat what was already shown.
                            if e.seq <= after {
                                continue;
                            }
                            after = e.seq;
                            ui.event(&e, resp.run.as_ref())?;
                            if let Some(A::RunContinuedAsNew(c)) = &e.attributes {
                                ui.note(&format!(
                                    "run {run_id} continued as new run {}; following it",
                                    c.new_run_id
                                ));
                                run_id = c.new_run_id.clone();
                                after = 0;
                                switched = true;
                                break;
                            }
                            if events::is_terminal(&e) {
                                let run = match resp.run {
                                    Some(r)
                                        if crate::convert::status_from(r.status)
                                            .is_some_and(RunStatus::is_closed) =>
                                    {
                                        r
                                    }
                                    _ => super::run::describe(conn, &run_id).await?,
                                };
                                return finish(ui, &run);
                            }
                        }
                        Ok(None) => break,
                        Err(s) if client::is_transient(&s) => {
                            interrupted = Some(s);
                            break;
                        }
                        Err(s) => return Err(conn.status(s)),
                    }
                }
            }
        }
        if switched {
            // Just switched to a successor run: start its stream at once.
            continue;
        }
        // The stream ended without a terminal event: the run may have closed before `after`,
        // or the server went away. Ask, then resume.
        if interrupted.is_none() {
            let req = pb::DescribeRunRequest {
                namespace: conn.namespace.clone(),
                run_id: run_id.clone(),
                approval_previews: false,
            };
            match conn.client().describe_run(req).await {
                Ok(r) => {
                    if let Some(run) = r.into_inner().run.filter(|r| {
                        crate::convert::status_from(r.status).is_some_and(RunStatus::is_closed)
                    }) {
                        if let Some(next) = successor(&run) {
                            ui.note(&format!(
                                "run {run_id} continued as new run {next}; following it"
                            ));
                            run_id = next;
                            after = 0;
                            continue;
                        }
                        return finish(ui, &run);
                    }
                }
                Err(s) if client::is_transient(&s) => interrupted = Some(s),
                Err(s) => return Err(conn.status(s)),
            }
        }
        if let Some(s) = interrupted.as_ref().filter(|_| backoff.is_fresh()) {
            ui.note(&format!(
                "stream interrupted ({}); resuming after seq {after}",
                client::status_message(s)
            ));
        }
        let Some(delay) = backoff.next_delay() else {
            let why = interrupted
                .map(|s| client::status_message(&s))
                .unwrap_or_else(|| "the stream kept ending".into());
            return Err(Exit::error(format!(
                "lost the event stream of run {run_id} and could not resume it for {}s ({why}); resume with `steadfast run watch {run_id} --after {after}`",
                client::RECONNECT_FOR.as_secs()
            )));
        };
        tokio::time::sleep(delay).await;
    }
}

fn finish(ui: &Ui, run: &pb::RunInfo) -> Outcome {
    ui.finish();
    let r = outcome(run);
    if r.is_ok() {
        note(&final_message(run));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: pb::RunStatus) -> pb::RunInfo {
        pb::RunInfo {
            run_id: "r1".into(),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes_follow_the_status() {
        assert!(outcome(&run(pb::RunStatus::Completed)).is_ok());
        let code = |s| outcome(&run(s)).unwrap_err().code;
        assert_eq!(code(pb::RunStatus::Failed), exit::FAILED);
        assert_eq!(code(pb::RunStatus::Cancelled), exit::CANCELLED);
        assert_eq!(code(pb::RunStatus::Terminated), exit::TERMINATED);
        assert_eq!(code(pb::RunStatus::TimedOut), exit::TIMED_OUT);
        assert_eq!(code(pb::RunStatus::Running), exit::RUNNING);
        assert_eq!(code(pb::RunStatus::Unspecified), exit::RUNNING);
    }

    #[test]
    fn final_messages() {
        let mut r = run(pb::RunStatus::Failed);
        r.failure = Some(pb::Failure {
            message: "boom".into(),
            r#type: "Tool".into(),
            ..Default::default()
        });
        assert_eq!(final_message(&r), "run r1 failed: boom [Tool]");
        assert_eq!(
            final_message(&run(pb::RunStatus::Running)),
            "run r1 is still running (waiting on: -)"
        );
        let mut c = run(pb::RunStatus::ContinuedAsNew);
        assert_eq!(successor(&c), None);
        c.continued_to = "r2".into();
        assert_eq!(successor(&c).as_deref(), Some("r2"));
        assert_eq!(successor(&run(pb::RunStatus::Completed)), None);
    }
}
