//! The schema, versioned: migrations applied at connect inside one transaction.
//!
//! `steadfast_schema_version` holds one row, the version this database is at. A node applies
//! the migrations past it in order, and refuses a database at a newer version than it knows
//! (a newer node migrated it; running an older one against it could misread its rows).
//! Never edit a released migration: add one.

use tokio_postgres::Client;

use steadfast_engine::store::Error;

use crate::pg_err;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = 4;

/// Serialises concurrent migrations of one database (several nodes starting at once).
const MIGRATION_LOCK_KEY: i64 = 0x5374_6164_6661_7374; // "Steadfast"

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    namespace     text     NOT NULL,
    run_id        uuid     NOT NULL,
    workflow_id   text     NOT NULL,
    workflow_type text     NOT NULL,
    status        text     NOT NULL,
    open          boolean  NOT NULL,
    next_seq      bigint   NOT NULL,
    last_hash     bytea    NOT NULL,
    -- msgpack of the RunState (steadfast_engine::state), folded from the events below
    state         bytea    NOT NULL,
    history_bytes bigint   NOT NULL,
    started_ms    bigint   NOT NULL,
    closed_ms     bigint,
    PRIMARY KEY (namespace, run_id)
);
-- At most one open run per workflow id, enforced here so that two nodes cannot both start one.
CREATE UNIQUE INDEX runs_open_workflow_id ON runs (namespace, workflow_id)
    WHERE open AND workflow_id <> '';
CREATE INDEX runs_by_status ON runs (namespace, status, run_id DESC);
CREATE INDEX runs_by_type ON runs (namespace, workflow_type, run_id DESC);
CREATE INDEX runs_open ON runs (namespace, run_id DESC) WHERE open;
CREATE INDEX runs_closed ON runs (closed_ms) WHERE NOT open;

CREATE TABLE events (
    namespace text   NOT NULL,
    run_id    uuid   NOT NULL,
    seq       bigint NOT NULL,
    -- steadfast_engine::event::encode_record: carries its hash, verified on read
    record    bytea  NOT NULL,
    PRIMARY KEY (namespace, run_id, seq)
);

-- Ready tasks, derived from the run states in the append's transaction.
CREATE TABLE tasks (
    namespace      text     NOT NULL,
    run_id         uuid     NOT NULL,
    kind           smallint NOT NULL,
    slot           bigint   NOT NULL,
    attempt        bigint   NOT NULL,
    queue          text     NOT NULL,
    -- The workflow type (a workflow task) or activity type (an activity task): what a poll
    -- filters on, so that tasks of a type nobody polls for never hold back the others.
    type           text     NOT NULL,
    visible_ms     bigint   NOT NULL,
    lease_until_ms bigint   NOT NULL DEFAULT 0,
    lease_owner    text,
    -- Store::defer_task's attempt (a held run's transient workflow-task attempts).
    deferred_attempt bigint,
    PRIMARY KEY (namespace, run_id, kind, slot, attempt)
);
CREATE INDEX tasks_ready ON tasks (namespace, queue, kind, visible_ms);
CREATE INDEX tasks_ready_by_type ON tasks (namespace, queue, kind, type, visible_ms);
CREATE INDEX tasks_visible ON tasks (visible_ms);
CREATE INDEX tasks_leases ON tasks (lease_until_ms) WHERE lease_until_ms > 0;

-- Deadlines, derived likewise; a claim (by the node that took it) expires.
CREATE TABLE timers (
    namespace        text     NOT NULL,
    run_id           uuid     NOT NULL,
    kind             smallint NOT NULL,
    id               bigint   NOT NULL,
    attempt          bigint   NOT NULL,
    timeout          smallint NOT NULL,
    due_ms           bigint   NOT NULL,
    claimed_until_ms bigint   NOT NULL DEFAULT 0,
    claim_owner      text,
    PRIMARY KEY (namespace, run_id, kind, id, attempt, timeout)
);
CREATE INDEX timers_due ON timers (due_ms);
CREATE INDEX timers_claims ON timers (claimed_until_ms) WHERE claimed_until_ms > 0;

-- The last heartbeat deadline of started attempts that heartbeated.
CREATE TABLE heartbeats (
    namespace   text   NOT NULL,
    run_id      uuid   NOT NULL,
    id          bigint NOT NULL,
    attempt     bigint NOT NULL,
    deadline_ms bigint NOT NULL,
    PRIMARY KEY (namespace, run_id, id, attempt)
);

-- Blobs, content-addressed per namespace; namespace '' holds legacy blobs stored before blobs
-- were scoped (readable from every namespace).
CREATE TABLE blobs (
    namespace text  NOT NULL DEFAULT '',
    hash      bytea NOT NULL,
    data      bytea NOT NULL,
    PRIMARY KEY (namespace, hash)
);

CREATE TABLE requests (
    namespace text     NOT NULL,
    kind      smallint NOT NULL,
    id        text     NOT NULL,
    run_id    uuid     NOT NULL,
    seq       bigint   NOT NULL,
    time_ms   bigint   NOT NULL,
    PRIMARY KEY (namespace, kind, id)
);
CREATE INDEX requests_time ON requests (time_ms);

-- Values every node shares, made once by the first node that needs them (the task-token key).
CREATE TABLE settings (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);
"#,
    r#"
-- Schedules (issue 18): one row each, replaced by compare-and-set on `version`.
CREATE TABLE schedules (
    namespace text   NOT NULL,
    name      text   NOT NULL,
    version   bigint NOT NULL,
    data      bytea  NOT NULL,
    PRIMARY KEY (namespace, name)
);
"#,
    r#"
-- The current build of each task queue (worker versioning, issue 18).
CREATE TABLE queue_builds (
    namespace text NOT NULL,
    queue     text NOT NULL,
    build_id  text NOT NULL,
    PRIMARY KEY (namespace, queue)
);
"#,
    r#"
-- Search (issue 18 point 5, issue 14 point 6): every run of a workflow id, newest first; and
-- the runs that carry a search attribute value or had an activity type fail, kept beside
-- the run's row in each append's transaction (steadfast_postgres::search). Runs stored
-- before v4 carry neither, so nothing needs backfilling.
CREATE INDEX runs_by_workflow_id ON runs (namespace, workflow_id, run_id DESC);
CREATE TABLE run_search (
    namespace text     NOT NULL,
    -- 3 = search attribute (value: name len | name | type | value), 4 = failed activity type
    kind      smallint NOT NULL,
    value     bytea    NOT NULL,
    run_id    uuid     NOT NULL,
    PRIMARY KEY (namespace, kind, value, run_id)
);
CREATE INDEX run_search_by_run ON run_search (namespace, run_id);
"#,
];

/// Brings the database to [`SCHEMA_VERSION`], in one transaction; refuses a newer one.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS steadfast_schema_version (version integer NOT NULL)",
    )
    .await
    .map_err(pg_err)?;
    let current: i32 = match tx
        .query_opt("SELECT version FROM steadfast_schema_version", &[])
        .await
        .map_err(pg_err)?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO steadfast_schema_version VALUES (0)", &[])
                .await
                .map_err(pg_err)?;
            0
        }
    };
    if current > SCHEMA_VERSION {
        return Err(Error::Unavailable(format!(
            "[STF-PG-SCHEMA] the database's Steadfast schema is at version {current}, newer than \
             this build knows ({SCHEMA_VERSION}): run the newer steadfast, or a fresh database"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await.map_err(pg_err)?;
        tracing::info!(version = i + 1, "PostgreSQL schema migrated");
    }
    // Runs stored before v4 have no `run_search` rows; of what those rows index, only a
    // fork's origin can be in such a run's state (attributes and failed activity types are
    // newer than its rows), so their forks are indexed here, once, in the migration's
    // transaction.
    if (1..4).contains(&current) {
        crate::search::backfill_forks(&tx).await?;
    }
    tx.execute(
        "UPDATE steadfast_schema_version SET version = $1",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)
}
