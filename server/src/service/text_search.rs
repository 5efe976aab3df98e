//! `ListRuns` with `text`: a free-text match has no index, so the server bounds what one
//! request reads. It pages through the runs that match every other filter (by their indexes),
//! newest first, checks the text on each, and stops when the page is full or after
//! [`TEXT_SCAN_RUNS_MAX`] runs; the token then names the last run read, so the next request
//! goes on from there. A page may be short, or empty, and still have a next token: each
//! request costs at most that many state reads, whatever the number of runs.

use std::sync::Arc;

use steadfast_engine::RunId;
use steadfast_engine::event::TimeMs;
use steadfast_engine::state::RunState;
use steadfast_engine::store::{self, RunFilter, Store};

/// Runs read per store call.
pub const TEXT_SCAN_CHUNK: usize = 1_000;
/// Most runs one request reads before it answers with what it found and a token.
pub const TEXT_SCAN_RUNS_MAX: usize = 10_000;

/// Bounds of one text page.
#[derive(Debug, Clone, Copy)]
pub struct Scan {
    /// Runs read per store call.
    pub chunk: usize,
    /// Most runs read in all.
    pub runs_max: usize,
}

impl Default for Scan {
    fn default() -> Self {
        Scan {
            chunk: TEXT_SCAN_CHUNK,
            runs_max: TEXT_SCAN_RUNS_MAX,
        }
    }
}

/// One page of the runs matching `filter` (whose `text` is set), newest first after
/// `after`, at most `size`; and where the next page starts (`None`: no more runs).
pub async fn page(
    store: &dyn Store,
    namespace: &str,
    filter: &RunFilter,
    after: Option<RunId>,
    size: usize,
    now_ms: TimeMs,
    scan: Scan,
) -> Result<(Vec<Arc<RunState>>, Option<RunId>), store::Error> {
    let query = filter.text.clone().unwrap_or_default();
    let indexed = RunFilter {
        text: None,
        ..filter.clone()
    };
    let mut out = Vec::new();
    let mut cursor = after;
    let mut read = 0usize;
    loop {
        let chunk = scan.chunk.min(scan.runs_max - read).max(1);
        let runs = store
            .list_runs(namespace, &indexed, cursor, chunk, now_ms)
            .await?;
        for s in &runs {
            read += 1;
            cursor = Some(s.key.run_id);
            if steadfast_engine::search::text_matches(s, &query) {
                out.push(s.clone());
                if out.len() >= size {
                    return Ok((out, cursor));
                }
            }
        }
        if runs.len() < chunk {
            return Ok((out, None));
        }
        if read >= scan.runs_max {
            return Ok((out, cursor));
        }
    }
}

#[cfg(test)]
mod tests {
    use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
    use steadfast_engine::event::Event;
    use steadfast_engine::ids::RunKey;
    use steadfast_engine::store::AppendRequest;
    use steadfast_engine::store::contract::fixtures;

    use super::*;

    /// 50 runs; the text matches the 4th and the 41st oldest. With 20 runs read per request
    /// the pages are: [41st] (token: the 31st), [] (token: the 11th), [4th] (end).
    #[tokio::test]
    async fn a_text_page_reads_a_bounded_number_of_runs_and_goes_on_from_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let mut ids = Vec::new();
        for i in 0..50 {
            let key = RunKey::new("default", RunId::new_v7());
            let wid = if i == 3 || i == 40 {
                format!("needle-{i}")
            } else {
                format!("hay-{i}")
            };
            store
                .append(AppendRequest {
                    key: key.clone(),
                    expected_next_seq: 1,
                    events: vec![Event::RunStarted(fixtures::started(&wid, "q"))],
                    time_ms: 1,
                    wait_durable: true,
                })
                .await
                .unwrap();
            ids.push(key.run_id);
        }
        let filter = RunFilter {
            text: Some("NEEDLE".into()),
            ..RunFilter::default()
        };
        let scan = Scan {
            chunk: 7,
            runs_max: 20,
        };
        let get = |after| page(&store, "default", &filter, after, 10, 1, scan);
        let (p1, t1) = get(None).await.unwrap();
        assert_eq!(
            p1.iter().map(|s| s.key.run_id).collect::<Vec<_>>(),
            vec![ids[40]]
        );
        assert_eq!(t1, Some(ids[30]), "20 runs read: 49..=30");
        let (p2, t2) = get(t1).await.unwrap();
        assert!(p2.is_empty());
        assert_eq!(t2, Some(ids[10]));
        let (p3, t3) = get(t2).await.unwrap();
        assert_eq!(
            p3.iter().map(|s| s.key.run_id).collect::<Vec<_>>(),
            vec![ids[3]]
        );
        assert_eq!(t3, None, "the last runs were read: no more pages");
        // A full page ends at its last run, whatever was left to read.
        let (p, t) = page(&store, "default", &filter, None, 1, 1, Scan::default())
            .await
            .unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(t, Some(ids[40]));
    }
}
