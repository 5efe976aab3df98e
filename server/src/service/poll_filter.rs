//! What a polling worker runs: the types it takes, and the effects it declared for the
//! activities among them. A task is handed only to a worker that runs its type, and a
//! `write` is recognised by what the worker that runs it says, never by a guess.

use std::collections::{HashMap, HashSet};

use steadfast_engine::event::Effect;
use steadfast_proto::v1 as pb;
use tonic::Status;

use crate::validate;

/// Most activity declarations one request may carry.
pub const DECLARATIONS_MAX: usize = validate::POLL_TYPES_MAX;

/// The types one worker takes (empty = any) and the effects it declared.
#[derive(Debug, Default, Clone)]
pub struct WorkerRuns {
    types: HashSet<String>,
    effects: HashMap<String, Effect>,
    /// The types whose calls the worker wants a human to approve before they run.
    approvals: HashSet<String>,
}

impl WorkerRuns {
    /// A workflow poller's types.
    pub fn workflows(types: &[String]) -> Result<WorkerRuns, Status> {
        validate::type_names("workflow_types", types.iter().map(String::as_str))?;
        Ok(WorkerRuns {
            types: types.iter().cloned().collect(),
            effects: HashMap::new(),
            approvals: HashSet::new(),
        })
    }

    /// An activity worker's types (`types` and the declared ones) and declared effects.
    pub fn activities(
        types_field: &str,
        types: &[String],
        declarations_field: &str,
        declarations: &[pb::ActivityDeclaration],
    ) -> Result<WorkerRuns, Status> {
        validate::type_names(types_field, types.iter().map(String::as_str))?;
        if declarations.len() > DECLARATIONS_MAX {
            return Err(Status::invalid_argument(format!(
                "{declarations_field} holds {} declarations; the limit is {DECLARATIONS_MAX}",
                declarations.len()
            )));
        }
        let mut runs = WorkerRuns {
            types: types.iter().cloned().collect(),
            effects: HashMap::with_capacity(declarations.len()),
            approvals: HashSet::new(),
        };
        for (i, d) in declarations.iter().enumerate() {
            validate::name(
                &format!("{declarations_field}[{i}].activity_type"),
                &d.activity_type,
            )?;
            let effect =
                validate::declared_effect(&format!("{declarations_field}[{i}].effect"), d.effect)?;
            runs.types.insert(d.activity_type.clone());
            runs.effects.insert(d.activity_type.clone(), effect);
            if d.requires_approval {
                runs.approvals.insert(d.activity_type.clone());
            }
        }
        Ok(runs)
    }

    /// Whether the worker takes tasks of `type_name`.
    pub fn takes(&self, type_name: &str) -> bool {
        self.types.is_empty() || self.types.contains(type_name)
    }

    /// The types the worker takes, sorted (empty = any): what its polls ask the store for.
    pub fn type_list(&self) -> Vec<String> {
        let mut v: Vec<String> = self.types.iter().cloned().collect();
        v.sort();
        v
    }

    /// Whether the worker takes every type (it named none).
    pub fn takes_any(&self) -> bool {
        self.types.is_empty()
    }

    /// The effect the worker declared for `activity_type`; `write` when it declared none.
    pub fn effect(&self, activity_type: &str) -> Effect {
        self.effects
            .get(activity_type)
            .copied()
            .unwrap_or(Effect::Write)
    }

    /// Whether the worker declared that calls of `activity_type` need a human's approval.
    pub fn requires_approval(&self, activity_type: &str) -> bool {
        self.approvals.contains(activity_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(t: &str, e: pb::Effect) -> pb::ActivityDeclaration {
        pb::ActivityDeclaration {
            activity_type: t.into(),
            effect: e as i32,
            requires_approval: false,
        }
    }

    #[test]
    fn declared_types_are_taken_with_their_effects_and_undeclared_are_writes() {
        let r = WorkerRuns::activities(
            "activity_types",
            &["plain".into()],
            "activities",
            &[
                decl("lookup", pb::Effect::Read),
                decl("charge", pb::Effect::Unspecified),
            ],
        )
        .unwrap();
        assert!(r.takes("plain") && r.takes("lookup") && r.takes("charge"));
        assert!(!r.takes("other") && !r.takes_any());
        assert_eq!(r.effect("lookup"), Effect::Read);
        assert_eq!(r.effect("charge"), Effect::Write);
        assert_eq!(r.effect("plain"), Effect::Write);
        let any = WorkerRuns::workflows(&[]).unwrap();
        assert!(any.takes_any() && any.takes("x"));
    }

    #[test]
    fn bad_declarations_are_refused_naming_the_field() {
        let e = WorkerRuns::activities("t", &[], "activities", &[decl("", pb::Effect::Read)])
            .unwrap_err();
        assert!(
            e.message().contains("activities[0].activity_type"),
            "{}",
            e.message()
        );
        let bad = pb::ActivityDeclaration {
            activity_type: "x".into(),
            effect: 42,
            requires_approval: false,
        };
        let e = WorkerRuns::activities("t", &[], "activities", &[bad]).unwrap_err();
        assert!(
            e.message().contains("activities[0].effect"),
            "{}",
            e.message()
        );
    }
}
