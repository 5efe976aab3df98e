//! Continue-as-new successors that a crash left uncreated (the old run's RunContinuedAsNew
//! was appended, the new run's RunStarted was not): what every store reports from
//! [`Store::missing_successors`], given the runs it holds as continued.

use crate::event::{Event, RunStarted};
use crate::ids::RunKey;
use crate::store::{Error, Store};

/// Of the `continued` runs, those whose successor does not exist, each with the RunStarted
/// that creates it (same workflow type, id, queue, timeout and budget; the continued input;
/// `continued_from` the old run; the random seed derived from the successor's id).
pub async fn missing_of<S: Store + ?Sized>(
    store: &S,
    continued: Vec<RunKey>,
) -> Result<Vec<(RunKey, RunStarted)>, Error> {
    let mut out = Vec::new();
    for key in continued {
        let Some(old) = store.run_state(&key).await? else {
            continue;
        };
        let Some(new_id) = old.continued_to else {
            continue;
        };
        let new_key = RunKey::new(key.namespace.clone(), new_id);
        if store.run_state(&new_key).await?.is_some() {
            continue;
        }
        let last = store.read_history(&key, old.last_seq, 1).await?;
        let Some(Event::RunContinuedAsNew(c)) = last.first().map(|r| &r.event) else {
            return Err(Error::Corrupt {
                run: Some(key.clone()),
                seq: Some(old.last_seq),
                detail: "a run continued as new does not end with RunContinuedAsNew".into(),
            });
        };
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&new_id.as_bytes()[8..]);
        out.push((
            new_key,
            RunStarted {
                workflow_type: old.workflow_type.clone(),
                workflow_id: old.workflow_id.clone(),
                task_queue: old.task_queue.clone(),
                input: c.input.clone(),
                run_timeout_ms: old.run_timeout_ms,
                budget: old.budget,
                continued_from: Some(key.run_id),
                identity: "continue-as-new (repaired after a restart)".into(),
                random_seed: u64::from_le_bytes(seed),
                parent: None,
                forked_from: None,
                schedule: None,
                traceparent: None,
            },
        ));
    }
    Ok(out)
}
