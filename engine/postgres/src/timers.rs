//! Deadlines: the `timers` rows (derived in the append's transaction), taken by claiming them
//! with `FOR UPDATE SKIP LOCKED`, so that one node fires each.
//!
//! A claim lasts [`TIMER_CLAIM_MS`] on the *database's* clock: it stands for "a node is acting
//! on this deadline", so it must expire if that node dies before appending the event, and that
//! is a matter of real time, not of the deadline's own time (which callers pass as `now_ms`).
//! A state change of the run puts every deadline of the run back, unclaimed, as the trait
//! says; a restarted node gives back its own claims when it connects.

use steadfast_engine::event::{CommandSeq, TimeMs, TimeoutKind};
use steadfast_engine::ids::RunKey;
use steadfast_engine::state::ActivityPhase;
use steadfast_engine::store::core::derive_for_tables;
use steadfast_engine::store::{Change, DueTimer, Error};

use crate::derived::{load_heartbeats, write_derived};
use crate::{Inner, codec, pg_err};

/// How long a node's claim on a due deadline keeps other nodes off it, in real time.
pub const TIMER_CLAIM_MS: i64 = 30_000;

/// The database's clock in epoch milliseconds (one clock for every node's claims).
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

impl Inner {
    pub(crate) async fn take_due_timers(
        &self,
        now_ms: TimeMs,
        limit: usize,
    ) -> Result<Vec<DueTimer>, Error> {
        self.observe(now_ms);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "WITH c AS (SELECT namespace, run_id, kind, id, attempt, timeout FROM timers \
                 WHERE due_ms <= $1 AND claimed_until_ms <= {DB_NOW_MS} \
                 ORDER BY due_ms, kind, namespace, run_id, id, attempt, timeout \
                 LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 UPDATE timers t SET claimed_until_ms = {DB_NOW_MS} + $3, claim_owner = $4 \
                 FROM c WHERE t.namespace = c.namespace AND t.run_id = c.run_id \
                 AND t.kind = c.kind AND t.id = c.id AND t.attempt = c.attempt \
                 AND t.timeout = c.timeout \
                 RETURNING t.namespace, t.run_id, t.kind, t.id, t.attempt, t.timeout, t.due_ms"
            ))
            .await
            .map_err(pg_err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &stmt,
                &[&now_ms, &limit, &TIMER_CLAIM_MS, &self.options.node_id],
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let key = codec::run_key(r.get(0), r.get(1));
            let t = codec::timer_from_cols(key, (r.get(2), r.get(3), r.get(4), r.get(5)))
                .ok_or_else(|| Error::Corrupt {
                    run: None,
                    seq: None,
                    detail: "a timer row has an unknown kind or out-of-range id".into(),
                })?;
            out.push((r.get::<_, i64>(6), t));
        }
        // UPDATE ... RETURNING does not keep the CTE's order.
        out.sort();
        Ok(out.into_iter().map(|(_, t)| t).collect())
    }

    /// The earliest unclaimed deadline, claim expiry, not-yet-visible task or lease expiry.
    pub(crate) async fn next_wakeup_ms(&self) -> Result<Option<TimeMs>, Error> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT LEAST( \
                 (SELECT min(due_ms) FROM timers WHERE claimed_until_ms = 0), \
                 (SELECT min(claimed_until_ms) FROM timers WHERE claimed_until_ms > 0), \
                 (SELECT min(visible_ms) FROM tasks WHERE visible_ms > $1), \
                 (SELECT min(lease_until_ms) FROM tasks WHERE lease_until_ms > $1 \
                  AND lease_until_ms > 0))",
            )
            .await
            .map_err(pg_err)?;
        let seen = self.now_seen_ms.load(std::sync::atomic::Ordering::Relaxed);
        let row = client.query_one(&stmt, &[&seen]).await.map_err(pg_err)?;
        Ok(row.get(0))
    }

    /// Records a heartbeat deadline of a started attempt and re-derives the run's deadlines,
    /// under the run's row lock (so it cannot interleave with an append to the run).
    pub(crate) async fn set_attempt_deadline(
        &self,
        key: &RunKey,
        id: CommandSeq,
        attempt: u32,
        deadline_ms: TimeMs,
        timeout: TimeoutKind,
    ) -> Result<Vec<Change>, Error> {
        if timeout != TimeoutKind::Heartbeat {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let stmt = tx
            .prepare_cached(
                "SELECT state, history_bytes FROM runs WHERE namespace = $1 AND run_id = $2 \
                 FOR UPDATE",
            )
            .await
            .map_err(pg_err)?;
        let Some(row) = tx
            .query_opt(&stmt, &[&key.namespace, &key.run_id.0])
            .await
            .map_err(pg_err)?
        else {
            return Ok(Vec::new());
        };
        let state = codec::decode_state(key, row.get(0), row.get(1))?;
        let started = state.is_open()
            && state.activities.get(&id).is_some_and(|a| {
                a.attempt == attempt && matches!(a.phase, ActivityPhase::Started { .. })
            });
        if !started {
            return Ok(Vec::new());
        }
        let old_heartbeats = load_heartbeats(&tx, key).await?;
        let mut heartbeats = old_heartbeats.clone();
        heartbeats.insert((id, attempt), deadline_ms);
        tx.execute(
            "INSERT INTO heartbeats (namespace, run_id, id, attempt, deadline_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (namespace, run_id, id, attempt) \
             DO UPDATE SET deadline_ms = EXCLUDED.deadline_ms",
            &[
                &key.namespace,
                &key.run_id.0,
                &i64::from(id),
                &i64::from(attempt),
                &deadline_ms,
            ],
        )
        .await
        .map_err(pg_err)?;
        let mut changes = Vec::new();
        write_derived(
            &tx,
            key,
            derive_for_tables(&state, &old_heartbeats),
            derive_for_tables(&state, &heartbeats),
            true,
            &mut changes,
        )
        .await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(changes)
    }
}
