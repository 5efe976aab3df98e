//! The history-limit policy: which appends a run may still make as its history grows, so that
//! a limit never makes a run unrecoverable (issue 10, promise C6).
//!
//! A store has two hard limits per history, events and bytes ([`HISTORY_EVENTS_MAX`] and
//! [`HISTORY_BYTES_MAX`] by default). Measured on the history as it would be after an append:
//!
//! | history after the append | accepted |
//! |---|---|
//! | up to the soft limit ([`SOFT_LIMIT_PERCENT`] of the hard one) | everything |
//! | past the soft limit, up to the hard limit | everything but new work: ActivityScheduled, TimerStarted, SignalWaitStarted |
//! | past the hard limit, up to the finishing reserve ([`FINISH_RESERVE_PERCENT`] more) | only what a run needs to end or continue as new: workflow-task events, outcomes of work already scheduled (completed, failed, timed out, cancelled, reconciled, timers fired), cancels and budget changes; no signals, progress, heartbeat details or late usage reports |
//! | past the reserve | only appends that close the run |
//!
//! An append that closes the run (complete, fail, cancel, continue-as-new, terminate, time out)
//! is always accepted: it is itself bounded (`APPEND_EVENTS_MAX` events, `PAYLOAD_BYTES_MAX`
//! per payload). Before, only those were exempt at the hard limit, so WorkflowTaskStarted,
//! ActivityCompleted and TimerFired were refused there and the task that would continue as new
//! could never start. Past the soft limit the workflow is told to continue as new
//! ([`HistoryLimits::continue_as_new_suggested`]).
//!
//! [`HISTORY_EVENTS_MAX`]: crate::store::HISTORY_EVENTS_MAX
//! [`HISTORY_BYTES_MAX`]: crate::store::HISTORY_BYTES_MAX

use crate::event::Event;

/// Where the soft limit is, in percent of the hard limit.
pub const SOFT_LIMIT_PERCENT: u64 = 90;
/// How far past the hard limit what a run needs to finish is still accepted, in percent of
/// the hard limit.
pub const FINISH_RESERVE_PERCENT: u64 = 10;
/// The finishing reserve is at least this many events, whatever the limit: finishing one open
/// task and one outstanding activity (a write's start, its outcome, the task's completion,
/// scheduled and started, the continue-as-new) takes several events, which 10% of a small
/// limit does not leave.
pub const FINISH_RESERVE_EVENTS_MIN: u64 = 32;

/// What an event does to a run, as far as the limits care. Ordered from the first refused to
/// the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Starts something the run must later wait for: refused past the soft limit.
    NewWork,
    /// Input and reports that do not help the run end: refused past the hard limit.
    Input,
    /// What a run needs to end or continue as new: refused past the finishing reserve.
    Finishing,
    /// Closes the run: never refused.
    Closing,
}

/// The class of one event.
pub fn class(e: &Event) -> Class {
    use Event as E;
    match e {
        E::ActivityScheduled(_)
        | E::TimerStarted(_)
        | E::SignalWaitStarted(_)
        | E::ChildRunRequested(_)
        | E::RunSignalRequested(_) => Class::NewWork,
        E::RunStarted(_)
        | E::SignalReceived(_)
        | E::UpdateRequested(_)
        | E::ActivityProgress(_)
        | E::ActivityUsageReported(_)
        | E::ProgressReported(_)
        | E::PartialResultRecorded(_)
        | E::SearchAttributesUpserted(_)
        | E::MemoRecorded(_) => Class::Input,
        E::WorkflowTaskScheduled(_)
        | E::WorkflowTaskStarted(_)
        | E::WorkflowTaskCompleted(_)
        | E::WorkflowTaskFailed(_)
        | E::WorkflowTaskTimedOut(_)
        | E::ActivityStarted(_)
        | E::ActivityCompleted(_)
        | E::ActivityFailed(_)
        | E::ActivityTimedOut(_)
        | E::ActivityCancelRequested(_)
        | E::ActivityCancelled(_)
        | E::ActivityOutcomeUnknown(_)
        | E::ActivityReconciled(_)
        | E::ApprovalRequested(_)
        | E::ActivityApproved(_)
        | E::ActivityDenied(_)
        | E::TimerFired(_)
        | E::TimerCancelled(_)
        | E::CancelRequested(_)
        | E::BudgetUpdated(_)
        | E::BudgetExceeded(_)
        | E::ChildRunStarted(_)
        | E::ChildRunStartFailed(_)
        | E::ChildRunClosed(_)
        | E::RunSignalResolved(_)
        | E::PatchMarker(_)
        | E::VersioningSet(_)
        | E::BuildPinned(_)
        | E::UpdateCompleted(_)
        | E::UpdateRejected(_) => Class::Finishing,
        E::RunCompleted(_)
        | E::RunFailed(_)
        | E::RunCancelled(_)
        | E::RunTerminated(_)
        | E::RunTimedOut(_)
        | E::RunContinuedAsNew(_) => Class::Closing,
    }
}

/// The class of an append: Closing when any event closes the run, else its most restricted
/// event's.
pub fn append_class<'a>(events: impl IntoIterator<Item = &'a Event>) -> Class {
    let mut least = Class::Closing;
    for e in events {
        match class(e) {
            Class::Closing => return Class::Closing,
            c => least = least.min(c),
        }
    }
    least
}

/// A history's hard limits; the soft limit and the reserve derive from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most events ([`crate::store::HISTORY_EVENTS_MAX`] by default).
    pub events_max: u64,
    /// Most bytes, counted as [`crate::state::RunState::history_bytes`]
    /// ([`crate::store::HISTORY_BYTES_MAX`] by default).
    pub bytes_max: u64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            events_max: crate::store::HISTORY_EVENTS_MAX,
            bytes_max: crate::store::HISTORY_BYTES_MAX,
        }
    }
}

/// Which threshold an append would pass, named for the error message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitHit(pub String);

fn percent(max: u64, p: u64) -> u64 {
    u64::try_from(u128::from(max) * u128::from(p) / 100).unwrap_or(u64::MAX)
}

impl HistoryLimits {
    /// Past this many events no new work is accepted.
    pub fn soft_events(&self) -> u64 {
        percent(self.events_max, SOFT_LIMIT_PERCENT)
    }

    /// Past this many bytes no new work is accepted.
    pub fn soft_bytes(&self) -> u64 {
        percent(self.bytes_max, SOFT_LIMIT_PERCENT)
    }

    /// Past this many events only appends that close the run are accepted.
    pub fn reserve_events(&self) -> u64 {
        self.events_max.saturating_add(
            percent(self.events_max, FINISH_RESERVE_PERCENT).max(FINISH_RESERVE_EVENTS_MIN),
        )
    }

    /// Past this many bytes only appends that close the run are accepted.
    pub fn reserve_bytes(&self) -> u64 {
        self.bytes_max
            .saturating_add(percent(self.bytes_max, FINISH_RESERVE_PERCENT))
    }

    /// Whether a run whose history holds `events` events and `bytes` bytes should continue as
    /// new: it is past its soft limit, where new work is refused.
    pub fn continue_as_new_suggested(&self, events: u64, bytes: u64) -> bool {
        events > self.soft_events() || bytes > self.soft_bytes()
    }

    /// Whether an append of `events`, leaving the history at `events_after` events and
    /// `bytes_after` bytes, is accepted; the refusal names the threshold it would pass.
    pub fn check<'a>(
        &self,
        events_after: u64,
        bytes_after: u64,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<(), LimitHit> {
        let (events_cap, bytes_cap, what) = match append_class(events) {
            Class::Closing => return Ok(()),
            Class::NewWork => (self.soft_events(), self.soft_bytes(), "its soft limit"),
            Class::Input => (self.events_max, self.bytes_max, "its limit"),
            Class::Finishing => (
                self.reserve_events(),
                self.reserve_bytes(),
                "the reserve kept past its limit for finishing",
            ),
        };
        let refused = |cap: u64, unit: &str, max: u64| {
            LimitHit(format!(
                "{what} of {cap} {unit} (the limit is {max} {unit}; past {soft} no new activities, timers or signal waits are accepted, past {max} only what the run needs to end or continue as new)",
                soft = percent(max, SOFT_LIMIT_PERCENT),
            ))
        };
        if events_after > events_cap {
            return Err(refused(events_cap, "events", self.events_max));
        }
        if bytes_after > bytes_cap {
            return Err(refused(bytes_cap, "bytes", self.bytes_max));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event as ev;
    use crate::payload::Payload;

    const L: HistoryLimits = HistoryLimits {
        events_max: 100,
        bytes_max: 10_000,
    };

    fn scheduled() -> Event {
        Event::ActivityScheduled(ev::ActivityScheduled {
            command_seq: 1,
            activity_type: "a".into(),
            input: Payload::default(),
            options: Default::default(),
        })
    }

    fn signal() -> Event {
        Event::SignalReceived(ev::SignalReceived {
            name: "s".into(),
            input: Payload::default(),
            identity: String::new(),
            request_id: String::new(),
        })
    }

    fn task_started() -> Event {
        Event::WorkflowTaskStarted(ev::WorkflowTaskStarted {
            scheduled_seq: 1,
            worker: "w".into(),
            timeout_ms: 0,
        })
    }

    fn completed() -> Event {
        Event::ActivityCompleted(ev::ActivityCompleted {
            command_seq: 1,
            attempt: 1,
            result: Payload::default(),
            duration_ms: 0,
            usage: None,
            reconciled: false,
        })
    }

    fn continued() -> Event {
        Event::RunContinuedAsNew(ev::RunContinuedAsNew {
            keep_build: false,
            command_seq: 2,
            new_run_id: crate::RunId::new_v7(),
            input: Payload::default(),
        })
    }

    #[test]
    fn thresholds() {
        // 10% of 100 events is below the minimum reserve of 32 events.
        assert_eq!(
            (L.soft_events(), L.events_max, L.reserve_events()),
            (90, 100, 100 + FINISH_RESERVE_EVENTS_MIN)
        );
        let big = HistoryLimits {
            events_max: 100_000,
            bytes_max: 1 << 20,
        };
        assert_eq!(big.reserve_events(), 110_000, "10% once that is more");
        assert_eq!((L.soft_bytes(), L.reserve_bytes()), (9_000, 11_000));
        let huge = HistoryLimits {
            events_max: u64::MAX,
            bytes_max: u64::MAX,
        };
        assert_eq!(huge.reserve_events(), u64::MAX, "saturates");
        assert!(huge.soft_events() < u64::MAX);
    }

    #[test]
    fn new_work_stops_at_the_soft_limit_and_the_run_is_told() {
        assert!(L.check(90, 0, &[scheduled()]).is_ok());
        let e = L.check(91, 0, &[scheduled()]).unwrap_err();
        assert!(e.0.contains("soft limit of 90 events"), "{e}");
        assert!(L.check(50, 9_001, &[scheduled()]).is_err(), "bytes too");
        assert!(!L.continue_as_new_suggested(90, 9_000));
        assert!(L.continue_as_new_suggested(91, 0));
        assert!(L.continue_as_new_suggested(0, 9_001));
    }

    #[test]
    fn input_stops_at_the_hard_limit() {
        assert!(L.check(100, 10_000, &[signal()]).is_ok());
        assert!(L.check(101, 0, &[signal()]).is_err());
        assert!(L.check(0, 10_001, &[signal()]).is_err());
        // An append is as restricted as its most restricted event.
        assert!(L.check(95, 0, &[task_started(), scheduled()]).is_err());
        assert!(L.check(101, 0, &[completed(), signal()]).is_err());
    }

    #[test]
    fn what_a_run_needs_to_finish_is_accepted_past_the_hard_limit() {
        // The task that would continue as new can start, and results still arrive.
        let reserve = L.reserve_events();
        for e in [task_started(), completed()] {
            assert!(L.check(reserve, 11_000, [&e]).is_ok(), "{:?}", e.kind());
            assert!(L.check(reserve + 1, 0, [&e]).is_err(), "{:?}", e.kind());
        }
    }

    #[test]
    fn closing_is_never_refused() {
        assert!(
            L.check(u64::MAX, u64::MAX, &[task_started(), continued()])
                .is_ok()
        );
    }
}
