//! Repairs after a crash that fall between two appends.
//!
//! Continue-as-new is two appends: the old run's RunContinuedAsNew (which names the new run
//! and holds its input), then the new run's RunStarted. A crash between them leaves a run
//! that points at a successor that was never created; the old run's event holds everything
//! needed to create it, so the server does that on start.

use crate::embedded::keys::{self, BY_STATUS};
use crate::embedded::{EmbeddedStore, sled_err};
use crate::event::RunStarted;
use crate::ids::{RunId, RunKey};
use crate::state::RunStatus;
use crate::store::Error;

impl EmbeddedStore {
    /// The keys of every open run (for the server's start-up reconciliation of child runs).
    pub async fn open_runs(&self) -> Result<Vec<RunKey>, Error> {
        let mut out = Vec::new();
        for item in self.inner.db.scan_prefix([BY_STATUS]) {
            let (k, _) = item.map_err(sled_err)?;
            // x | ns len | ns | status | run id (16)
            let Some(&n) = k.get(1) else { continue };
            let n = n as usize;
            if k.len() != 2 + n + 1 + 16 || k[2 + n] != keys::status_code(RunStatus::Running) {
                continue;
            }
            if let (Ok(ns), Ok(id)) = (
                std::str::from_utf8(&k[2..2 + n]),
                uuid::Uuid::from_slice(&k[3 + n..]),
            ) {
                out.push(RunKey::new(ns, RunId(id)));
            }
        }
        Ok(out)
    }

    /// Runs continued as new whose successor does not exist, with the RunStarted that
    /// creates it (same workflow type, id, queue, timeout and budget; the continued input;
    /// `continued_from` the old run).
    pub async fn missing_successors(&self) -> Result<Vec<(RunKey, RunStarted)>, Error> {
        let mut continued = Vec::new();
        for item in self.inner.db.scan_prefix([BY_STATUS]) {
            let (k, _) = item.map_err(sled_err)?;
            // x | ns len | ns | status | run id (16)
            let Some(&n) = k.get(1) else { continue };
            let n = n as usize;
            if k.len() != 2 + n + 1 + 16 || k[2 + n] != keys::status_code(RunStatus::ContinuedAsNew)
            {
                continue;
            }
            let (Ok(ns), Ok(id)) = (
                std::str::from_utf8(&k[2..2 + n]),
                uuid::Uuid::from_slice(&k[3 + n..]),
            ) else {
                continue;
            };
            continued.push(RunKey::new(ns, RunId(id)));
        }
        crate::store::successor::missing_of(self, continued).await
    }
}
