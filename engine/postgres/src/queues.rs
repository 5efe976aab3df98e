//! Task queues: the `tasks` rows (derived in the append's transaction) claimed with
//! `FOR UPDATE SKIP LOCKED` and a lease that expires ([`LEASE_MS`], on the callers' clock as
//! in the embedded store). Two nodes polling one queue never both get one task: the claim and
//! the lease are one statement, and a row another poll has locked is skipped, not waited for.
//! A lease only keeps pollers apart; the start of a task is an append at the expected seq, so
//! two hand-outs of one task can never both be recorded.

use steadfast_engine::event::TimeMs;
use steadfast_engine::store::core::LEASE_MS;
use steadfast_engine::store::{Change, Error, Task, TaskKind};

use crate::{Inner, codec, pg_err};

/// Claims the first visible, unleased task of a queue, of any type.
const POLL_ANY: &str = "WITH c AS (SELECT run_id, kind, slot, attempt FROM tasks \
     WHERE namespace = $1 AND queue = $2 AND kind = $3 AND visible_ms <= $4 \
     AND lease_until_ms <= $4 \
     ORDER BY visible_ms, run_id, slot, attempt LIMIT 1 FOR UPDATE SKIP LOCKED) \
     UPDATE tasks t SET lease_until_ms = $5, lease_owner = $6 FROM c \
     WHERE t.namespace = $1 AND t.run_id = c.run_id AND t.kind = c.kind \
     AND t.slot = c.slot AND t.attempt = c.attempt \
     RETURNING t.run_id, t.kind, t.slot, t.attempt";

/// Claims the first visible, unleased task of a queue among the types in `$7`.
const POLL_TYPES: &str = "WITH c AS (SELECT run_id, kind, slot, attempt FROM tasks \
     WHERE namespace = $1 AND queue = $2 AND kind = $3 AND type = ANY($7::text[]) \
     AND visible_ms <= $4 AND lease_until_ms <= $4 \
     ORDER BY visible_ms, run_id, slot, attempt LIMIT 1 FOR UPDATE SKIP LOCKED) \
     UPDATE tasks t SET lease_until_ms = $5, lease_owner = $6 FROM c \
     WHERE t.namespace = $1 AND t.run_id = c.run_id AND t.kind = c.kind \
     AND t.slot = c.slot AND t.attempt = c.attempt \
     RETURNING t.run_id, t.kind, t.slot, t.attempt";

impl Inner {
    pub(crate) async fn queues_with_work(
        &self,
        namespace: &str,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        let client = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = client
            .query(
                "SELECT DISTINCT queue FROM tasks WHERE namespace = $1 ORDER BY queue LIMIT $2",
                &[&namespace, &limit],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    pub(crate) async fn poll_task(
        &self,
        namespace: &str,
        queue: &str,
        kind: TaskKind,
        types: &[String],
        now_ms: TimeMs,
    ) -> Result<Option<Task>, Error> {
        self.observe(now_ms);
        let client = self.client().await?;
        // A typed poll reads only rows of its types (`tasks_ready_by_type`), so rows of types
        // nobody polls for, however many, are never scanned past.
        let stmt = client
            .prepare_cached(if types.is_empty() {
                POLL_ANY
            } else {
                POLL_TYPES
            })
            .await
            .map_err(pg_err)?;
        let until = now_ms.saturating_add(LEASE_MS);
        let kind_code = codec::kind_code(kind);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &namespace,
            &queue,
            &kind_code,
            &now_ms,
            &until,
            &self.options.node_id,
        ];
        if !types.is_empty() {
            params.push(&types);
        }
        let row = client.query_opt(&stmt, &params).await.map_err(pg_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let key = codec::run_key(namespace.to_string(), row.get(0));
        codec::task_from_cols(key, (row.get(1), row.get(2), row.get(3)))
            .map(Some)
            .ok_or_else(|| Error::Corrupt {
                run: None,
                seq: None,
                detail: "a task row has an unknown kind or out-of-range slot".into(),
            })
    }

    /// Leases one specific task if it is offered, visible and not leased.
    pub(crate) async fn take_task(&self, task: &Task, now_ms: TimeMs) -> Result<bool, Error> {
        self.observe(now_ms);
        let (key, (kind, slot, attempt)) = codec::task_cols(task);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE tasks SET lease_until_ms = $6, lease_owner = $7 \
                 WHERE namespace = $1 AND run_id = $2 AND kind = $3 AND slot = $4 \
                 AND attempt = $5 AND visible_ms <= $8 AND lease_until_ms <= $8",
            )
            .await
            .map_err(pg_err)?;
        let until = now_ms.saturating_add(LEASE_MS);
        let n = client
            .execute(
                &stmt,
                &[
                    &key.namespace,
                    &key.run_id.0,
                    &kind,
                    &slot,
                    &attempt,
                    &until,
                    &self.options.node_id,
                    &now_ms,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(n == 1)
    }

    /// Gives a leased task back; returns the change to announce when it is offered again.
    pub(crate) async fn release_task(&self, task: &Task) -> Result<Option<Change>, Error> {
        let (key, (kind, slot, attempt)) = codec::task_cols(task);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE tasks SET lease_until_ms = 0, lease_owner = NULL \
                 WHERE namespace = $1 AND run_id = $2 AND kind = $3 AND slot = $4 \
                 AND attempt = $5 AND lease_until_ms > 0 RETURNING queue",
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_opt(
                &stmt,
                &[&key.namespace, &key.run_id.0, &kind, &slot, &attempt],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| Change::TaskReady {
            namespace: key.namespace.clone(),
            queue: r.get(0),
            kind: match task {
                Task::Workflow { .. } => TaskKind::Workflow,
                Task::Activity { .. } => TaskKind::Activity,
            },
        }))
    }

    /// Keeps a task away from pollers until `until_ms` (a lease with that expiry, whether it
    /// is offered or leased now) and records its attempt; false when no row offers it.
    pub(crate) async fn defer_task(
        &self,
        task: &Task,
        until_ms: TimeMs,
        attempt: u32,
    ) -> Result<bool, Error> {
        let (key, (kind, slot, task_attempt)) = codec::task_cols(task);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE tasks SET lease_until_ms = $6, lease_owner = $7, deferred_attempt = $8 \
                 WHERE namespace = $1 AND run_id = $2 AND kind = $3 AND slot = $4 \
                 AND attempt = $5",
            )
            .await
            .map_err(pg_err)?;
        let n = client
            .execute(
                &stmt,
                &[
                    &key.namespace,
                    &key.run_id.0,
                    &kind,
                    &slot,
                    &task_attempt,
                    &until_ms,
                    &self.options.node_id,
                    &i64::from(attempt),
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(n == 1)
    }

    /// The attempt of the last [`Inner::defer_task`] of `task`, while a row still offers it.
    pub(crate) async fn task_attempt(&self, task: &Task) -> Result<Option<u32>, Error> {
        let (key, (kind, slot, task_attempt)) = codec::task_cols(task);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT deferred_attempt FROM tasks WHERE namespace = $1 AND run_id = $2 \
                 AND kind = $3 AND slot = $4 AND attempt = $5",
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_opt(
                &stmt,
                &[&key.namespace, &key.run_id.0, &kind, &slot, &task_attempt],
            )
            .await
            .map_err(pg_err)?;
        Ok(row
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .and_then(|a| u32::try_from(a).ok()))
    }
}
