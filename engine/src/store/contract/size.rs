//! History sizes: every state carries its history's size in bytes (what the byte limit is
//! checked against, and what DescribeRun reports).

use crate::event::{Event, RunTerminated};
use crate::store::contract::Backend;
use crate::store::contract::fixtures::{self, RunDriver};
use crate::store::{RunFilter, Store};

/// Bytes an event may add beyond its payload (its other attributes, or a blob reference).
const OVERHEAD_BYTES_MAX: u64 = 256;

/// The size grows with each append by the stored attributes plus the blobs the events refer
/// to (a blob is stored once, but every reference counts); it is the same in the append's
/// state, `run_state`, `list_runs` and after a restart, open or closed.
pub async fn history_bytes_are_counted<B: Backend>(backend: &mut B) {
    let store = backend.fresh().await;
    let mut r = RunDriver::start(&store, "size", "q").await;
    let size = |s: &crate::state::RunState| s.history_bytes;
    let start = size(&store.run_state(&r.key).await.unwrap().unwrap());
    assert!(start > 0, "RunStarted has a size");

    let small = r
        .append(&store, vec![fixtures::signal("s", vec![b'a'; 100])])
        .await;
    let grew = size(&small.state) - start;
    assert!((100..100 + OVERHEAD_BYTES_MAX).contains(&grew), "{grew}");

    let big = vec![b'b'; 10_000];
    let first = r
        .append(&store, vec![fixtures::signal("s", big.clone())])
        .await;
    let grew = size(&first.state) - size(&small.state);
    assert!(
        (10_000..10_000 + OVERHEAD_BYTES_MAX).contains(&grew),
        "{grew}"
    );
    let again = r.append(&store, vec![fixtures::signal("s", big)]).await;
    let grew = size(&again.state) - size(&first.state);
    assert!(
        (10_000..10_000 + OVERHEAD_BYTES_MAX).contains(&grew),
        "{grew}"
    );

    let now = size(&store.run_state(&r.key).await.unwrap().unwrap());
    assert_eq!(
        now,
        size(&again.state),
        "run_state reports the append's size"
    );
    let store = backend.reopen(store).await;
    let open = store.run_state(&r.key).await.unwrap().unwrap();
    assert_eq!(size(&open), now, "the size survives a restart");

    let closed = r
        .append(
            &store,
            vec![Event::RunTerminated(RunTerminated {
                reason: "test".into(),
                identity: "t".into(),
            })],
        )
        .await;
    let store = backend.reopen(store).await;
    let after = store.run_state(&r.key).await.unwrap().unwrap();
    assert_eq!(
        size(&after),
        size(&closed.state),
        "a closed run keeps its size"
    );
    let listed = store
        .list_runs("default", &RunFilter::default(), None, 10, fixtures::T0)
        .await
        .unwrap();
    let listed = listed.iter().find(|s| s.key == r.key).expect("listed");
    assert_eq!(
        size(listed),
        size(&closed.state),
        "list_runs reports it too"
    );
}
