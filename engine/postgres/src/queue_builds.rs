//! The task queues' current builds (worker versioning): one row per queue in `queue_builds`.
//! Every workflow poll reads its queue's row (one primary-key lookup), so a change made on
//! one node routes the next poll of every node.

use steadfast_engine::store::Error;

use crate::{Inner, pg_err};

impl Inner {
    pub(crate) async fn set_queue_build(
        &self,
        namespace: &str,
        queue: &str,
        build: Option<&str>,
    ) -> Result<(), Error> {
        let client = self.client().await?;
        match build {
            Some(b) => client
                .execute(
                    "INSERT INTO queue_builds (namespace, queue, build_id) VALUES ($1, $2, $3) \
                     ON CONFLICT (namespace, queue) DO UPDATE SET build_id = EXCLUDED.build_id",
                    &[&namespace, &queue, &b],
                )
                .await
                .map_err(pg_err)?,
            None => client
                .execute(
                    "DELETE FROM queue_builds WHERE namespace = $1 AND queue = $2",
                    &[&namespace, &queue],
                )
                .await
                .map_err(pg_err)?,
        };
        Ok(())
    }

    pub(crate) async fn queue_build(
        &self,
        namespace: &str,
        queue: &str,
    ) -> Result<Option<String>, Error> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT build_id FROM queue_builds WHERE namespace = $1 AND queue = $2",
                &[&namespace, &queue],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| r.get(0)))
    }
}
