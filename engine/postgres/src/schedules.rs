//! Schedules: one row each in `schedules`, replaced by compare-and-set on `version` in a single
//! statement, so two nodes moving one schedule can never both win.

use steadfast_engine::store::{Error, StoredSchedule};
use tokio_postgres::Row;

use crate::{Inner, pg_err};

fn conflict(namespace: &str, name: &str, expected: u64, actual: u64) -> Error {
    Error::ScheduleConflict {
        namespace: namespace.into(),
        name: name.into(),
        expected,
        actual,
    }
}

fn stored(row: &Row) -> StoredSchedule {
    StoredSchedule {
        namespace: row.get(0),
        name: row.get(1),
        version: row.get::<_, i64>(2) as u64,
        data: row.get(3),
    }
}

impl Inner {
    async fn schedule_version(&self, namespace: &str, name: &str) -> Result<u64, Error> {
        Ok(self
            .get_schedule(namespace, name)
            .await?
            .map_or(0, |s| s.version))
    }

    pub(crate) async fn put_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected: u64,
        data: Vec<u8>,
    ) -> Result<u64, Error> {
        let client = self.client().await?;
        let written = if expected == 0 {
            client
                .execute(
                    "INSERT INTO schedules (namespace, name, version, data) VALUES ($1, $2, 1, $3) \
                     ON CONFLICT DO NOTHING",
                    &[&namespace, &name, &data],
                )
                .await
        } else {
            client
                .execute(
                    "UPDATE schedules SET version = version + 1, data = $4 \
                     WHERE namespace = $1 AND name = $2 AND version = $3",
                    &[&namespace, &name, &(expected as i64), &data],
                )
                .await
        }
        .map_err(pg_err)?;
        drop(client);
        if written == 1 {
            return Ok(expected + 1);
        }
        let actual = self.schedule_version(namespace, name).await?;
        Err(conflict(namespace, name, expected, actual))
    }

    pub(crate) async fn delete_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected: u64,
    ) -> Result<(), Error> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM schedules WHERE namespace = $1 AND name = $2 AND version = $3",
                &[&namespace, &name, &(expected as i64)],
            )
            .await
            .map_err(pg_err)?;
        drop(client);
        if n == 1 {
            return Ok(());
        }
        let actual = self.schedule_version(namespace, name).await?;
        Err(conflict(namespace, name, expected, actual))
    }

    pub(crate) async fn get_schedule(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredSchedule>, Error> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT namespace, name, version, data FROM schedules \
                 WHERE namespace = $1 AND name = $2",
                &[&namespace, &name],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.as_ref().map(stored))
    }

    pub(crate) async fn list_schedules(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredSchedule>, Error> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT namespace, name, version, data FROM schedules \
                 WHERE $1::text IS NULL OR namespace = $1 ORDER BY namespace, name",
                &[&namespace],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(stored).collect())
    }
}
