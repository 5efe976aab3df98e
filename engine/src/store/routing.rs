//! Which worker build takes a workflow task (worker versioning).
//!
//! Both stores index ready tasks by a *type key* (the embedded store's per-type sets, the
//! PostgreSQL `tasks_ready_by_type` index), and a typed poll reads only the keys it names.
//! Build routing is folded into that key, so neither store needed a routing rule of its own:
//! - a workflow task of a run pinned to build `B` is indexed under `type \x1f B`;
//! - every other task (unpinned and auto-upgrading runs, activities) under its bare type.
//!
//! A workflow poller of build `W` asks for `type \x1f W` (its pinned runs) and, when `W` is
//! the task queue's current build or no current build is set, the bare `type` too. So a
//! pinned run's tasks reach only its build, and the first task of a new run (or every task
//! of an auto-upgrading run) reaches the current build. Activities go to any worker of their
//! type, whatever its build. Names never hold control characters (the server refuses them),
//! so a key with the separator cannot be a type's name.

/// Between a workflow type and a build id in a type key.
pub const BUILD_SEPARATOR: char = '\u{1f}';

/// The type key a ready workflow task is indexed under.
pub fn workflow_task_key(workflow_type: &str, build: Option<&str>) -> String {
    match build {
        Some(b) => format!("{workflow_type}{BUILD_SEPARATOR}{b}"),
        None => workflow_type.to_string(),
    }
}

/// The type keys a workflow poll asks for: a worker of `worker_build` (`None`: it declared
/// none) running `types`, on a queue whose current build is `current_build`. A worker
/// without a build takes unpinned tasks only while the queue has no current build.
pub fn workflow_poll_keys(
    types: &[String],
    worker_build: Option<&str>,
    current_build: Option<&str>,
) -> Vec<String> {
    let takes_unpinned = current_build.is_none() || current_build == worker_build;
    let mut keys = Vec::with_capacity(types.len() * 2);
    for t in types {
        if let Some(b) = worker_build {
            keys.push(workflow_task_key(t, Some(b)));
        }
        if takes_unpinned {
            keys.push(t.clone());
        }
    }
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_pinned_task_reaches_only_its_build() {
        let pinned = workflow_task_key("agent", Some("A"));
        for current in [None, Some("A"), Some("B")] {
            assert!(workflow_poll_keys(&v(&["agent"]), Some("A"), current).contains(&pinned));
            assert!(!workflow_poll_keys(&v(&["agent"]), Some("B"), current).contains(&pinned));
            assert!(!workflow_poll_keys(&v(&["agent"]), None, current).contains(&pinned));
        }
    }

    #[test]
    fn unpinned_tasks_reach_the_current_build() {
        let t = &v(&["agent"]);
        let bare = "agent".to_string();
        assert!(workflow_poll_keys(t, Some("B"), Some("B")).contains(&bare));
        assert!(!workflow_poll_keys(t, Some("A"), Some("B")).contains(&bare));
        assert!(!workflow_poll_keys(t, None, Some("B")).contains(&bare));
        // No current build: any worker of the type.
        assert!(workflow_poll_keys(t, Some("A"), None).contains(&bare));
        assert_eq!(workflow_poll_keys(t, None, None), v(&["agent"]));
    }
}
