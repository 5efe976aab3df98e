//! A run's derived rows: its ready tasks, its deadlines and its heartbeat deadlines, written
//! in the same transaction as the state they are derived from (by the engine's rules,
//! [`derive_for_tables`](steadfast_engine::store::core::derive_for_tables)).

use std::collections::{BTreeMap, BTreeSet};

use steadfast_engine::event::{CommandSeq, TimeMs};
use steadfast_engine::state::{ActivityPhase, RunState};
use steadfast_engine::store::core::TableTask;
use steadfast_engine::store::{Change, DueTimer, Error};
use tokio_postgres::types::ToSql;

use crate::codec::{self, TaskCols, TimerCols};
use crate::pg_err;

/// Where a ready task is offered: its queue, its type and its visible time.
type Offer = (String, String, TimeMs);

/// The ready tasks of a state, keyed by their row key.
fn tasks_by_cols(tasks: Vec<TableTask>) -> BTreeMap<TaskCols, Offer> {
    tasks
        .into_iter()
        .map(|t| {
            let (_, cols) = codec::task_cols(&t.task);
            (cols, (t.queue, t.type_name, t.visible_ms))
        })
        .collect()
}

fn timers_by_cols(timers: Vec<(TimeMs, DueTimer)>) -> BTreeMap<TimerCols, TimeMs> {
    timers
        .into_iter()
        .map(|(at, t)| (codec::timer_cols(&t).1, at))
        .collect()
}

/// Whether a state has started attempts that heartbeat (their deadlines need the heartbeat
/// rows).
pub(crate) fn heartbeating(s: &RunState) -> bool {
    s.is_open()
        && s.activities
            .values()
            .any(|a| a.options.heartbeat_ms > 0 && matches!(a.phase, ActivityPhase::Started { .. }))
}

pub(crate) type Heartbeats = BTreeMap<(CommandSeq, u32), TimeMs>;

/// Loads a run's recorded heartbeat deadlines.
pub(crate) async fn load_heartbeats(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &steadfast_engine::ids::RunKey,
) -> Result<Heartbeats, Error> {
    let stmt = tx
        .prepare_cached(
            "SELECT id, attempt, deadline_ms FROM heartbeats WHERE namespace = $1 AND run_id = $2",
        )
        .await
        .map_err(pg_err)?;
    let rows = tx
        .query(&stmt, &[&key.namespace, &key.run_id.0])
        .await
        .map_err(pg_err)?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let id = CommandSeq::try_from(r.get::<_, i64>(0)).ok()?;
            let attempt = u32::try_from(r.get::<_, i64>(1)).ok()?;
            Some(((id, attempt), r.get::<_, i64>(2)))
        })
        .collect())
}

/// Rewrites a run's derived rows from `old` to `new` (both as derived): tasks that left are
/// deleted, new or moved ones upserted (keeping a lease); timers are replaced, claims and all
/// (a deadline taken and not acted on comes back when the state changes). The delete and the
/// upsert of each table touch disjoint rows, so they may run in either order (pipelined).
/// Returns the changes other nodes should hear of.
pub(crate) async fn write_derived(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &steadfast_engine::ids::RunKey,
    old: (Vec<TableTask>, Vec<(TimeMs, DueTimer)>),
    new: (Vec<TableTask>, Vec<(TimeMs, DueTimer)>),
    timers_claimed: bool,
    changes: &mut Vec<Change>,
) -> Result<(), Error> {
    let kinds: BTreeMap<TaskCols, steadfast_engine::store::TaskKind> = new
        .0
        .iter()
        .map(|t| (codec::task_cols(&t.task).1, t.kind))
        .collect();
    let old_tasks = tasks_by_cols(old.0);
    let new_tasks = tasks_by_cols(new.0);
    let old_timers = timers_by_cols(old.1);
    let new_timers = timers_by_cols(new.1);
    let ns = &key.namespace;
    let run = &key.run_id.0;

    let gone: Vec<&TaskCols> = old_tasks
        .keys()
        .filter(|c| !new_tasks.contains_key(c))
        .collect();
    let moved: Vec<(&TaskCols, &Offer)> = new_tasks
        .iter()
        .filter(|(c, v)| old_tasks.get(c) != Some(v))
        .collect();
    let mut writes = Vec::new();
    if !gone.is_empty() {
        let stmt = tx
            .prepare_cached(
                "DELETE FROM tasks WHERE namespace = $1 AND run_id = $2 AND (kind, slot, attempt) \
                 IN (SELECT * FROM unnest($3::smallint[], $4::bigint[], $5::bigint[]))",
            )
            .await
            .map_err(pg_err)?;
        let k: Vec<i16> = gone.iter().map(|c| c.0).collect();
        let s: Vec<i64> = gone.iter().map(|c| c.1).collect();
        let a: Vec<i64> = gone.iter().map(|c| c.2).collect();
        writes.push((
            stmt,
            vec![
                Box::new(k) as Box<dyn ToSql + Sync + Send>,
                Box::new(s),
                Box::new(a),
            ],
        ));
    }
    if !moved.is_empty() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO tasks (namespace, run_id, kind, slot, attempt, queue, type, \
                 visible_ms) SELECT $1, $2, * FROM unnest($3::smallint[], $4::bigint[], \
                 $5::bigint[], $6::text[], $7::text[], $8::bigint[]) ON CONFLICT (namespace, \
                 run_id, kind, slot, attempt) DO UPDATE SET queue = EXCLUDED.queue, \
                 type = EXCLUDED.type, visible_ms = EXCLUDED.visible_ms",
            )
            .await
            .map_err(pg_err)?;
        let k: Vec<i16> = moved.iter().map(|(c, _)| c.0).collect();
        let s: Vec<i64> = moved.iter().map(|(c, _)| c.1).collect();
        let a: Vec<i64> = moved.iter().map(|(c, _)| c.2).collect();
        let q: Vec<String> = moved.iter().map(|(_, v)| v.0.clone()).collect();
        let t: Vec<String> = moved.iter().map(|(_, v)| v.1.clone()).collect();
        let v: Vec<i64> = moved.iter().map(|(_, v)| v.2).collect();
        let mut seen = BTreeSet::new();
        for (c, (queue, _, _)) in &moved {
            if let Some(kind) = kinds.get(c)
                && seen.insert((queue.clone(), codec::kind_code(*kind)))
            {
                changes.push(Change::TaskReady {
                    namespace: ns.clone(),
                    queue: queue.clone(),
                    kind: *kind,
                });
            }
        }
        writes.push((
            stmt,
            vec![
                Box::new(k),
                Box::new(s),
                Box::new(a),
                Box::new(q),
                Box::new(t),
                Box::new(v),
            ],
        ));
    }
    if old_timers != new_timers || timers_claimed {
        if new_timers
            .iter()
            .any(|(c, at)| old_timers.get(c) != Some(at))
        {
            changes.push(Change::Timers);
        }
        let stmt = tx
            .prepare_cached(
                "DELETE FROM timers WHERE namespace = $1 AND run_id = $2 AND (kind, id, attempt, \
                 timeout) NOT IN (SELECT * FROM unnest($3::smallint[], $4::bigint[], \
                 $5::bigint[], $6::smallint[]))",
            )
            .await
            .map_err(pg_err)?;
        let cols = |m: &BTreeMap<TimerCols, TimeMs>| {
            (
                m.keys().map(|c| c.0).collect::<Vec<i16>>(),
                m.keys().map(|c| c.1).collect::<Vec<i64>>(),
                m.keys().map(|c| c.2).collect::<Vec<i64>>(),
                m.keys().map(|c| c.3).collect::<Vec<i16>>(),
            )
        };
        let (k, i, a, t) = cols(&new_timers);
        writes.push((
            stmt,
            vec![
                Box::new(k.clone()),
                Box::new(i.clone()),
                Box::new(a.clone()),
                Box::new(t.clone()),
            ],
        ));
        if !new_timers.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO timers (namespace, run_id, kind, id, attempt, timeout, due_ms) \
                     SELECT $1, $2, * FROM unnest($3::smallint[], $4::bigint[], $5::bigint[], \
                     $6::smallint[], $7::bigint[]) ON CONFLICT (namespace, run_id, kind, id, \
                     attempt, timeout) DO UPDATE SET due_ms = EXCLUDED.due_ms, \
                     claimed_until_ms = 0, claim_owner = NULL",
                )
                .await
                .map_err(pg_err)?;
            let due: Vec<i64> = new_timers.values().copied().collect();
            writes.push((
                stmt,
                vec![
                    Box::new(k),
                    Box::new(i),
                    Box::new(a),
                    Box::new(t),
                    Box::new(due),
                ],
            ));
        }
    }
    let futs = writes.iter().map(|(stmt, rest)| {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![ns, run];
        params.extend(rest.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)));
        async move { tx.execute(stmt, &params).await }
    });
    futures::future::try_join_all(futs).await.map_err(pg_err)?;
    Ok(())
}
