//! Histories: appends, conflicts, refusals, limits, workflow ids, paging, lists and blobs.

use crate::event::{self, Event, chain, genesis_hash};
use crate::ids::{DEFAULT_NAMESPACE, RunId, RunKey};
use crate::state::RunStatus;
use crate::store::contract::fixtures::{self, RunDriver, T0};
use crate::store::{
    APPEND_EVENTS_MAX, AppendRequest, Error, HISTORY_EVENTS_MAX, RunFilter, Store, inline_payload,
};

fn req(key: &RunKey, expected_next_seq: u64, events: Vec<Event>) -> AppendRequest {
    AppendRequest {
        key: key.clone(),
        expected_next_seq,
        events,
        time_ms: T0,
        wait_durable: true,
    }
}

/// A run is created at seq 1 and extended at the expected seq; records chain and read back.
pub async fn create_and_append<S: Store>(store: S) {
    let mut r = RunDriver::start(&store, "create", "q").await;
    let a = r
        .append(
            &store,
            vec![
                fixtures::signal("s", b"1".to_vec()),
                fixtures::signal("s", b"2".to_vec()),
            ],
        )
        .await;
    assert_eq!(
        a.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(a.state.last_seq, 3);
    assert_eq!(a.state.last_hash, a.records[1].hash);
    let h = store.read_history(&r.key, 1, 100).await.unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(&h[1..], &a.records[..]);
    chain::verify(&r.key, genesis_hash(&r.key), 1, &h).expect("the stored history verifies");
    let s = store
        .run_state(&r.key)
        .await
        .unwrap()
        .expect("the run exists");
    assert_eq!(*s, *a.state);
    assert_eq!(s.status, RunStatus::Running);
    assert!(
        store
            .run_state(&RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.stats().records >= 3);
}

/// Appending at the wrong seq is a typed conflict; a second creation too.
pub async fn conflict_is_typed<S: Store>(store: S) {
    let mut r = RunDriver::start(&store, "conflict", "q").await;
    r.append(&store, vec![fixtures::signal("s", b"1".to_vec())])
        .await;
    for expected in [2, 4, 1] {
        match store
            .append(req(
                &r.key,
                expected,
                vec![fixtures::signal("s", b"x".to_vec())],
            ))
            .await
        {
            Err(Error::Conflict {
                run,
                expected: e,
                actual,
            }) => {
                assert_eq!((run, e, actual), (r.key.clone(), expected, 3));
            }
            other => panic!("expected a conflict at {expected}, got {other:?}"),
        }
    }
    assert!(matches!(
        store
            .append(req(
                &r.key,
                1,
                vec![Event::RunStarted(fixtures::started("conflict2", "q"))]
            ))
            .await,
        Err(Error::Conflict { .. })
    ));
    let unknown = RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7());
    assert!(matches!(
        store
            .append(req(&unknown, 2, vec![fixtures::signal("s", vec![])]))
            .await,
        Err(Error::Conflict { actual: 1, .. })
    ));
    assert_eq!(store.read_history(&r.key, 1, 10).await.unwrap().len(), 2);
}

/// An illegal event refuses the whole append and nothing is stored.
pub async fn illegal_events_store_nothing<S: Store>(store: S) {
    let mut r = RunDriver::start(&store, "illegal", "q").await;
    let before = store.run_state(&r.key).await.unwrap().unwrap();
    let bad = vec![
        fixtures::signal("ok", b"1".to_vec()),
        Event::TimerFired(event::TimerFired { command_seq: 99 }),
    ];
    match store.append(req(&r.key, 2, bad)).await {
        Err(Error::Illegal { run, .. }) => assert_eq!(run, r.key),
        other => panic!("expected Illegal, got {other:?}"),
    }
    assert_eq!(
        store.read_history(&r.key, 1, 10).await.unwrap().len(),
        1,
        "nothing of a refused append is stored"
    );
    assert_eq!(*store.run_state(&r.key).await.unwrap().unwrap(), *before);
    r.append(&store, vec![fixtures::signal("ok", b"1".to_vec())])
        .await;
    // A history must begin with RunStarted; a refused creation leaves no run.
    let key = RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7());
    assert!(matches!(
        store
            .append(req(&key, 1, vec![fixtures::signal("s", vec![])]))
            .await,
        Err(Error::Illegal { .. })
    ));
    assert!(store.run_state(&key).await.unwrap().is_none());
    assert!(matches!(
        store.read_history(&key, 1, 10).await,
        Err(Error::NotFound(_))
    ));
    // Nothing may follow a terminal event.
    r.append(
        &store,
        vec![Event::RunTerminated(event::RunTerminated {
            reason: "t".into(),
            identity: "t".into(),
        })],
    )
    .await;
    assert!(matches!(
        store
            .append(req(&r.key, r.next, vec![fixtures::signal("late", vec![])]))
            .await,
        Err(Error::Illegal { .. })
    ));
}

/// Request limits are typed refusals.
pub async fn limits_are_refused<S: Store>(store: S) {
    let r = RunDriver::start(&store, "limits", "q").await;
    assert!(matches!(
        store.append(req(&r.key, 2, vec![])).await,
        Err(Error::Invalid(_))
    ));
    let many = (0..=APPEND_EVENTS_MAX)
        .map(|_| fixtures::signal("s", vec![]))
        .collect();
    assert!(matches!(
        store.append(req(&r.key, 2, many)).await,
        Err(Error::Invalid(_))
    ));
    let huge = fixtures::signal("s", vec![b'x'; crate::payload::PAYLOAD_BYTES_MAX + 1]);
    assert!(matches!(
        store.append(req(&r.key, 2, vec![huge])).await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(store.read_history(&r.key, 1, 10).await.unwrap().len(), 1);
}

/// The history event limit (slow: appends 100,000 events).
pub async fn history_event_limit<S: Store>(store: S) {
    let mut r = RunDriver::start(&store, "event-limit", "q").await;
    while r.next - 1 + APPEND_EVENTS_MAX as u64 <= HISTORY_EVENTS_MAX {
        r.append(
            &store,
            (0..APPEND_EVENTS_MAX)
                .map(|_| fixtures::signal("s", vec![]))
                .collect(),
        )
        .await;
    }
    let room = HISTORY_EVENTS_MAX - (r.next - 1);
    r.append(
        &store,
        (0..room).map(|_| fixtures::signal("s", vec![])).collect(),
    )
    .await;
    match store
        .append(req(&r.key, r.next, vec![fixtures::signal("s", vec![])]))
        .await
    {
        Err(Error::HistoryLimit { run, .. }) => assert_eq!(run, r.key),
        other => panic!("expected HistoryLimit, got {other:?}"),
    }
}

/// At most one open run per workflow id; the id is free again once the run closes.
pub async fn workflow_id_unique_while_open<S: Store>(store: S) {
    let mut a = RunDriver::start(&store, "wid", "q").await;
    let b = RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7());
    match store
        .append(req(
            &b,
            1,
            vec![Event::RunStarted(fixtures::started("wid", "q"))],
        ))
        .await
    {
        Err(Error::WorkflowIdInUse {
            workflow_id,
            run_id,
        }) => assert_eq!((workflow_id.as_str(), run_id), ("wid", a.key.run_id)),
        other => panic!("expected WorkflowIdInUse, got {other:?}"),
    }
    assert!(store.run_state(&b).await.unwrap().is_none());
    assert_eq!(
        store
            .open_run_for_workflow_id(DEFAULT_NAMESPACE, "wid")
            .await
            .unwrap(),
        Some(a.key.run_id)
    );
    assert_eq!(
        store
            .open_run_for_workflow_id("other-ns", "wid")
            .await
            .unwrap(),
        None
    );
    let cs = a.next_command();
    a.append(
        &store,
        vec![Event::RunCompleted(event::RunCompleted {
            command_seq: cs,
            result: crate::payload::Payload::json(b"1".to_vec()),
        })],
    )
    .await;
    assert_eq!(
        store
            .open_run_for_workflow_id(DEFAULT_NAMESPACE, "wid")
            .await
            .unwrap(),
        None
    );
    store
        .append(req(
            &b,
            1,
            vec![Event::RunStarted(fixtures::started("wid", "q"))],
        ))
        .await
        .expect("the id is free after close");
    assert_eq!(
        store
            .open_run_for_workflow_id(DEFAULT_NAMESPACE, "wid")
            .await
            .unwrap(),
        Some(b.run_id)
    );
}

/// Pages cover the history exactly, in order.
pub async fn read_history_pages<S: Store>(store: S) {
    let mut r = RunDriver::start(&store, "pages", "q").await;
    for i in 0..24u32 {
        r.append(
            &store,
            vec![fixtures::signal("s", i.to_string().into_bytes())],
        )
        .await;
    }
    let all = store.read_history(&r.key, 1, 1_000).await.unwrap();
    assert_eq!(all.len(), 25);
    let mut paged = Vec::new();
    let mut from = 1;
    loop {
        let page = store.read_history(&r.key, from, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        assert_eq!(page[0].seq, from);
        from += page.len() as u64;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(
        store.read_history(&r.key, 20, 100).await.unwrap(),
        all[19..].to_vec()
    );
    assert!(store.read_history(&r.key, 26, 10).await.unwrap().is_empty());
    assert!(store.read_history(&r.key, 5, 0).await.unwrap().is_empty());
    assert!(matches!(
        store
            .read_history(&RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7()), 1, 10)
            .await,
        Err(Error::NotFound(_))
    ));
}

/// Lists filter by status, type and waiting category, newest first, in pages.
pub async fn list_runs_filters_and_pages<S: Store>(store: S) {
    let mut runs = Vec::new();
    for i in 0..6 {
        let mut attrs = fixtures::started(&format!("list-{i}"), "q");
        attrs.workflow_type = if i % 2 == 0 {
            "even".into()
        } else {
            "odd".into()
        };
        runs.push(RunDriver::start_with(&store, attrs).await);
    }
    // 0 completed; 1 waits on a signal; 2 terminated; the rest just run.
    let cs = runs[0].next_command();
    runs[0]
        .append(
            &store,
            vec![Event::RunCompleted(event::RunCompleted {
                command_seq: cs,
                result: crate::payload::Payload::json(b"1".to_vec()),
            })],
        )
        .await;
    let cs = runs[1].next_command();
    let wait = Event::SignalWaitStarted(event::SignalWaitStarted {
        command_seq: cs,
        name: "approve".into(),
        question: "ok?".into(),
        choices: vec!["yes".into()],
    });
    runs[1].append(&store, vec![wait]).await;
    runs[2]
        .append(
            &store,
            vec![Event::RunTerminated(event::RunTerminated {
                reason: "t".into(),
                identity: "t".into(),
            })],
        )
        .await;
    let mut ids: Vec<RunId> = runs.iter().map(|r| r.key.run_id).collect();
    ids.sort();
    ids.reverse();
    let list = |f: RunFilter, after: Option<RunId>, limit: usize| {
        let store = &store;
        async move {
            store
                .list_runs(DEFAULT_NAMESPACE, &f, after, limit, T0)
                .await
                .unwrap()
                .iter()
                .map(|s| s.key.run_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(RunFilter::default(), None, 100).await,
        ids,
        "all runs, newest first"
    );
    let page1 = list(RunFilter::default(), None, 4).await;
    let page2 = list(RunFilter::default(), page1.last().copied(), 4).await;
    assert_eq!(
        [page1, page2].concat(),
        ids,
        "pages continue after the last id"
    );
    let f = |status: Option<RunStatus>, t: Option<&str>, w: Option<&str>| RunFilter {
        status,
        workflow_type: t.map(Into::into),
        waiting: w.map(Into::into),
        ..RunFilter::default()
    };
    assert_eq!(
        list(f(Some(RunStatus::Completed), None, None), None, 10).await,
        vec![runs[0].key.run_id]
    );
    assert_eq!(
        list(f(Some(RunStatus::Terminated), None, None), None, 10).await,
        vec![runs[2].key.run_id]
    );
    let mut running: Vec<RunId> = [1, 3, 4, 5].iter().map(|i| runs[*i].key.run_id).collect();
    running.sort();
    running.reverse();
    assert_eq!(
        list(f(Some(RunStatus::Running), None, None), None, 10).await,
        running
    );
    let mut even: Vec<RunId> = [0, 2, 4].iter().map(|i| runs[*i].key.run_id).collect();
    even.sort();
    even.reverse();
    assert_eq!(list(f(None, Some("even"), None), None, 10).await, even);
    assert_eq!(
        list(f(Some(RunStatus::Running), Some("even"), None), None, 10).await,
        vec![runs[4].key.run_id]
    );
    assert_eq!(
        list(f(None, None, Some("signal")), None, 10).await,
        vec![runs[1].key.run_id]
    );
    assert!(list(f(None, Some("none"), None), None, 10).await.is_empty());
    assert!(
        store
            .list_runs("elsewhere", &RunFilter::default(), None, 10, T0)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Blobs are content-addressed and deduplicated; large payloads come back inline.
pub async fn blobs_dedupe_and_inline<S: Store>(store: S) {
    let data = b"0123456789".repeat(100);
    let h1 = store.put_blob("default", data.clone()).await.unwrap();
    let h2 = store.put_blob("", data.clone()).await.unwrap();
    assert_eq!(h1, h2);
    assert_eq!(h1, *blake3::hash(&data).as_bytes());
    assert_eq!(
        store.get_blob("default", &h1).await.unwrap(),
        Some(data.clone())
    );
    assert_eq!(
        store.get_blob("", &h1).await.unwrap(),
        Some(data),
        "'' is default"
    );
    assert_eq!(store.get_blob("default", &[9; 32]).await.unwrap(), None);

    let big = vec![b'y'; crate::payload::INLINE_BYTES_MAX + 1];
    let mut a = RunDriver::start(&store, "blob-a", "q").await;
    let mut b = RunDriver::start(&store, "blob-b", "q").await;
    let small = b"{}".to_vec();
    a.append(
        &store,
        vec![
            fixtures::signal("big", big.clone()),
            fixtures::signal("big", big.clone()),
            fixtures::signal("small", small.clone()),
        ],
    )
    .await;
    b.append(&store, vec![fixtures::signal("big", big.clone())])
        .await;
    for r in [&a, &b] {
        for rec in store.read_history(&r.key, 2, 10).await.unwrap() {
            let Event::SignalReceived(s) = rec.event else {
                panic!("a signal")
            };
            let want = if s.name == "big" { &big } else { &small };
            if s.name == "big" {
                assert!(
                    s.input.blob.is_some() && s.input.data.is_empty(),
                    "a large payload is stored as a blob"
                );
                assert_eq!(s.input.len(), big.len() as u64);
            }
            assert_eq!(
                &inline_payload(&store, &r.key.namespace, &s.input)
                    .await
                    .unwrap()
                    .data,
                want
            );
        }
    }
}

/// `verify_history` checks a whole history (payloads kept as blobs included) and ends where
/// the run's state ends; an unknown run is NotFound.
pub async fn verify_history_of_intact_runs<S: Store>(store: S) {
    let mut r = RunDriver::start(&store, "verify", "q").await;
    r.run_workflow_task(&store).await;
    for i in 0..1_200u32 {
        // Some payloads large enough to be kept as blobs, and more than one page of events.
        let data = if i % 100 == 0 {
            vec![b'x'; 4_000 + i as usize]
        } else {
            i.to_string().into_bytes()
        };
        r.append(&store, vec![fixtures::signal("s", data)]).await;
    }
    let state = store.run_state(&r.key).await.unwrap().unwrap();
    let v = store.verify_history(&r.key).await.unwrap();
    assert_eq!(v.events, state.last_seq);
    assert_eq!(v.last_hash, state.last_hash);
    assert!(matches!(
        store
            .verify_history(&RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7()))
            .await,
        Err(Error::NotFound(_))
    ));
}

/// Blobs are content-addressed per namespace: the same bytes put in two namespaces are two
/// blobs, a namespace never reads another's (`None`, as for a hash nobody stored), and a run's
/// large payloads are blobs of the run's namespace.
pub async fn blobs_are_scoped_by_namespace<S: Store>(store: S) {
    let data = b"tenant secret ".repeat(100);
    let h = store.put_blob("tenant-a", data.clone()).await.unwrap();
    assert_eq!(
        store.get_blob("tenant-a", &h).await.unwrap(),
        Some(data.clone())
    );
    assert_eq!(store.get_blob("tenant-b", &h).await.unwrap(), None);
    assert_eq!(store.get_blob("default", &h).await.unwrap(), None);
    // The same bytes in tenant-b: a blob of its own, same hash.
    assert_eq!(store.put_blob("tenant-b", data.clone()).await.unwrap(), h);
    assert_eq!(store.get_blob("tenant-b", &h).await.unwrap(), Some(data));

    // A run's externalised payload is readable in its namespace only.
    let big = vec![b'z'; crate::payload::INLINE_BYTES_MAX + 7];
    let mut a = RunDriver::start(&store, "scoped-blob", "q").await;
    a.append(&store, vec![fixtures::signal("big", big.clone())])
        .await;
    let h = store.read_history(&a.key, 2, 1).await.unwrap();
    let Event::SignalReceived(s) = &h[0].event else {
        panic!("a signal")
    };
    let hash = s.input.blob.expect("stored as a blob").hash;
    let ns = &a.key.namespace;
    let other = if ns == "tenant-c" {
        "tenant-d"
    } else {
        "tenant-c"
    };
    assert_eq!(store.get_blob(ns, &hash).await.unwrap(), Some(big.clone()));
    assert_eq!(store.get_blob(other, &hash).await.unwrap(), None);
    assert!(inline_payload(&store, other, &s.input).await.is_err());
    assert_eq!(
        inline_payload(&store, ns, &s.input).await.unwrap().data,
        big
    );
}
