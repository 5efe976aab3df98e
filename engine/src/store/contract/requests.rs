//! Request ids: a start or a signal retried with the same request id writes nothing the
//! second time and names the first, across restarts, within the window.

use crate::event::Event;
use crate::ids::{DEFAULT_NAMESPACE, RunId, RunKey};
use crate::store::contract::Backend;
use crate::store::contract::fixtures::{T0, signal, started};
use crate::store::{AppendRequest, Error, REQUEST_DEDUP_WINDOW_MS, RequestKey, RequestKind, Store};

fn start_req(time_ms: i64) -> (RunKey, AppendRequest) {
    let key = RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7());
    let req = AppendRequest {
        key: key.clone(),
        expected_next_seq: 1,
        events: vec![Event::RunStarted(started("", "q"))],
        time_ms,
        wait_durable: true,
    };
    (key, req)
}

fn q(kind: RequestKind, id: &str) -> RequestKey {
    RequestKey {
        kind,
        id: id.into(),
    }
}

/// Starts and signals retried with a request id are deduplicated, durably, within the window.
pub async fn request_ids_deduplicate_durably<B: Backend>(backend: &mut B) {
    let store = backend.fresh().await;
    let (first, req) = start_req(T0);
    store
        .append_once(req, q(RequestKind::Start, "start-1"))
        .await
        .unwrap();
    // The retry of the start creates nothing: it names the first run.
    let (second, req) = start_req(T0 + 1_000);
    match store
        .append_once(req, q(RequestKind::Start, "start-1"))
        .await
    {
        Err(Error::Duplicate { run_id, seq }) => {
            assert_eq!((run_id, seq), (first.run_id, 1));
        }
        other => panic!("a retried start: {other:?}"),
    }
    assert!(store.run_state(&second).await.unwrap().is_none());
    // Kinds have their own ids; another id is another request.
    let sig = |time_ms| AppendRequest {
        key: first.clone(),
        expected_next_seq: 2,
        events: vec![signal("s", b"1".to_vec())],
        time_ms,
        wait_durable: true,
    };
    store
        .append_once(sig(T0), q(RequestKind::Signal, "start-1"))
        .await
        .unwrap();
    let retried = AppendRequest {
        expected_next_seq: 3,
        ..sig(T0 + 5)
    };
    match store
        .append_once(retried, q(RequestKind::Signal, "start-1"))
        .await
    {
        Err(Error::Duplicate { run_id, seq }) => assert_eq!((run_id, seq), (first.run_id, 2)),
        other => panic!("a retried signal: {other:?}"),
    }
    assert_eq!(store.run_state(&first).await.unwrap().unwrap().last_seq, 2);
    // Bad ids are refused.
    let (_, req) = start_req(T0);
    assert!(matches!(
        store.append_once(req, q(RequestKind::Start, "")).await,
        Err(Error::Invalid(_))
    ));

    // Durable: after a restart (for the crash backend: with sled gone) the same holds.
    let store = backend.reopen(store).await;
    let (_, req) = start_req(T0 + 2_000);
    assert!(matches!(
        store.append_once(req, q(RequestKind::Start, "start-1")).await,
        Err(Error::Duplicate { run_id, .. }) if run_id == first.run_id
    ));
    // Past the window, the id is free again.
    let (third, req) = start_req(T0 + REQUEST_DEDUP_WINDOW_MS + 1);
    store
        .append_once(req, q(RequestKind::Start, "start-1"))
        .await
        .unwrap();
    assert!(store.run_state(&third).await.unwrap().is_some());
}
