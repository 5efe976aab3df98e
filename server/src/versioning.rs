//! Worker versioning with build ids: which events pin a run, which keys a workflow poll asks
//! the store for, and what a pinned run's nondeterminism error adds. The routing rule itself
//! (a type key per build) lives in the engine, [`steadfast_engine::store::routing`], so that
//! both stores serve it from their per-type ready-task indexes.

use steadfast_engine::event::{self as ev, Event};
use steadfast_engine::state::RunState;
use steadfast_engine::store::{self, Store, routing};
use tonic::Status;

use crate::core::status;
use crate::validate;

/// The event that starts a run auto-upgrading (right after RunStarted).
pub fn auto_upgrade() -> Event {
    Event::VersioningSet(ev::VersioningSet {
        pinned_build: String::new(),
        auto_upgrade: true,
    })
}

/// The event that starts a run pinned to `build` (a successor that kept its build).
pub fn pinned(build: String) -> Event {
    Event::VersioningSet(ev::VersioningSet {
        pinned_build: build,
        auto_upgrade: false,
    })
}

/// A worker's declared build id: `None` when empty, refused when not a valid name.
pub fn worker_build<'a>(field: &str, build_id: &'a str) -> Result<Option<&'a str>, Status> {
    validate::opt_name(field, build_id)?;
    Ok((!build_id.is_empty()).then_some(build_id))
}

/// The BuildPinned that a completion by a worker of `build` records before its
/// WorkflowTaskCompleted: only for a run that is neither pinned nor auto-upgrading.
pub fn pin_on_completion(s: &RunState, build: Option<&str>) -> Option<Event> {
    let build = build?;
    (s.pinned_build.is_none() && !s.auto_upgrade).then(|| {
        Event::BuildPinned(ev::BuildPinned {
            build_id: build.to_string(),
        })
    })
}

/// The build a continue-as-new successor starts pinned to: its predecessor's, when the
/// workflow asked to keep it; `None` (the queue's current build) otherwise.
pub async fn successor_build(
    store: &dyn Store,
    started: &ev::RunStarted,
    namespace: &str,
) -> Result<Option<String>, store::Error> {
    let Some(old) = started.continued_from else {
        return Ok(None);
    };
    let old = store
        .run_state(&steadfast_engine::RunKey::new(namespace, old))
        .await?;
    Ok(old
        .filter(|o| o.successor_keeps_build && !o.auto_upgrade)
        .and_then(|o| o.pinned_build.clone()))
}

/// The type keys a workflow poll asks the store for (see [`routing::workflow_poll_keys`]).
/// A worker with a build must name its workflow types: a poll for "any type" cannot be told
/// apart by build.
pub async fn poll_keys(
    store: &dyn Store,
    namespace: &str,
    queue: &str,
    types: &[String],
    build: Option<&str>,
) -> Result<Vec<String>, Status> {
    if types.is_empty() {
        return Ok(Vec::new());
    }
    let current = store.queue_build(namespace, queue).await.map_err(status)?;
    Ok(routing::workflow_poll_keys(
        types,
        build,
        current.as_deref(),
    ))
}

/// Refuses a build-declaring workflow poll that names no types.
pub fn check_poll(types: &[String], build: Option<&str>) -> Result<(), Status> {
    if build.is_some() && types.is_empty() {
        return Err(Status::invalid_argument(
            "build_id is set but workflow_types is empty: a worker with a build must name the workflow types it runs",
        ));
    }
    Ok(())
}

/// What a nondeterminism failure of a pinned run adds to its message: the build it needs,
/// when the worker that failed runs another one (or declared none).
pub fn nondeterminism_hint(s: &RunState, worker_build: Option<&str>) -> Option<String> {
    let need = s.routed_build()?;
    if worker_build == Some(need) {
        return None;
    }
    Some(format!(
        " (this run is pinned to build {need:?} and the worker that failed runs {}: \
         run a worker of build {need:?}, or move the run with continue-as-new)",
        match worker_build {
            Some(b) => format!("build {b:?}"),
            None => "no build".to_string(),
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::event::EventRecord;
    use steadfast_engine::payload::Payload;
    use steadfast_engine::{RunId, RunKey};

    fn state(extra: Vec<Event>) -> RunState {
        let rec = |seq, event| EventRecord {
            seq,
            time_ms: 0,
            hash: [0; 32],
            event,
        };
        let started = Event::RunStarted(ev::RunStarted {
            workflow_type: "t".into(),
            workflow_id: "w".into(),
            task_queue: "q".into(),
            input: Payload::default(),
            run_timeout_ms: 0,
            budget: ev::Budget::default(),
            continued_from: None,
            identity: String::new(),
            random_seed: 0,
            parent: None,
            forked_from: None,
            schedule: None,
            traceparent: None,
        });
        let mut s =
            RunState::start(RunKey::new("default", RunId::new_v7()), &rec(1, started)).unwrap();
        for (i, e) in extra.into_iter().enumerate() {
            s.apply(&rec(2 + i as u64, e)).unwrap();
        }
        s
    }

    #[test]
    fn only_an_unpinned_run_is_pinned_and_never_an_auto_upgrading_one() {
        let fresh = state(vec![]);
        assert!(pin_on_completion(&fresh, Some("A")).is_some());
        assert!(pin_on_completion(&fresh, None).is_none());
        let auto = state(vec![auto_upgrade()]);
        assert!(pin_on_completion(&auto, Some("A")).is_none());
        assert_eq!(auto.routed_build(), None);
        let kept = state(vec![pinned("A".into())]);
        assert!(pin_on_completion(&kept, Some("B")).is_none());
        assert_eq!(kept.routed_build(), Some("A"));
    }

    #[test]
    fn the_nondeterminism_hint_names_the_build_a_run_needs() {
        let kept = state(vec![pinned("A".into())]);
        let hint = nondeterminism_hint(&kept, Some("B")).unwrap();
        assert!(hint.contains("pinned to build \"A\"") && hint.contains("build \"B\""));
        assert!(
            nondeterminism_hint(&kept, None)
                .unwrap()
                .contains("no build")
        );
        assert_eq!(nondeterminism_hint(&kept, Some("A")), None);
        assert_eq!(nondeterminism_hint(&state(vec![]), Some("B")), None);
    }

    #[test]
    fn a_build_worker_must_name_its_types() {
        assert!(check_poll(&[], Some("A")).is_err());
        assert!(check_poll(&[], None).is_ok());
        assert!(worker_build("build_id", "bad\u{7}").is_err());
        assert_eq!(worker_build("build_id", "").unwrap(), None);
    }
}
