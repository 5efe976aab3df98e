//! Schedules: compare-and-set on the version, durable across a restart.

use crate::store::{Error, Store};

use super::Backend;

/// Create, replace and delete by version; a stale version writes nothing; namespaces are apart;
/// everything is there after a restart.
pub async fn schedules_compare_and_set_durably<B: Backend>(backend: &mut B) {
    let store = backend.fresh().await;
    assert_eq!(store.get_schedule("default", "a").await.unwrap(), None);
    assert_eq!(
        store
            .put_schedule("default", "a", 0, b"a1".to_vec())
            .await
            .unwrap(),
        1
    );
    // A second create (two nodes creating one name) conflicts and writes nothing.
    match store
        .put_schedule("default", "a", 0, b"other".to_vec())
        .await
    {
        Err(Error::ScheduleConflict {
            expected: 0,
            actual: 1,
            ..
        }) => {}
        r => panic!("a second create must conflict, got {r:?}"),
    }
    assert_eq!(
        store
            .put_schedule("default", "a", 1, b"a2".to_vec())
            .await
            .unwrap(),
        2
    );
    // A writer that read version 1 lost the race.
    assert!(matches!(
        store
            .put_schedule("default", "a", 1, b"stale".to_vec())
            .await,
        Err(Error::ScheduleConflict { actual: 2, .. })
    ));
    store
        .put_schedule("default", "b", 0, b"b1".to_vec())
        .await
        .unwrap();
    store
        .put_schedule("other", "a", 0, b"o1".to_vec())
        .await
        .unwrap();
    let names = |v: Vec<crate::store::StoredSchedule>| {
        v.into_iter()
            .map(|s| (s.namespace, s.name, s.version, s.data))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.list_schedules(Some("default")).await.unwrap()),
        vec![
            ("default".into(), "a".into(), 2, b"a2".to_vec()),
            ("default".into(), "b".into(), 1, b"b1".to_vec()),
        ]
    );
    assert_eq!(store.list_schedules(None).await.unwrap().len(), 3);
    assert!(matches!(
        store.delete_schedule("default", "b", 7).await,
        Err(Error::ScheduleConflict { actual: 1, .. })
    ));
    store.delete_schedule("default", "b", 1).await.unwrap();
    assert!(matches!(
        store.delete_schedule("default", "b", 1).await,
        Err(Error::ScheduleConflict { actual: 0, .. })
    ));

    let store = backend.reopen(store).await;
    let a = store.get_schedule("default", "a").await.unwrap().unwrap();
    assert_eq!((a.version, a.data), (2, b"a2".to_vec()));
    assert_eq!(store.get_schedule("default", "b").await.unwrap(), None);
    assert_eq!(
        store
            .get_schedule("other", "a")
            .await
            .unwrap()
            .unwrap()
            .data,
        b"o1".to_vec()
    );
    // Versions go on from where they were: a create after a delete starts again at 1.
    assert_eq!(
        store
            .put_schedule("default", "b", 0, b"b".to_vec())
            .await
            .unwrap(),
        1
    );
}

/// `list_runs` with a schedule filter finds the runs whose RunStarted names that schedule,
/// and not a run started by hand whose workflow id looks like a slot's.
pub async fn runs_are_listed_by_schedule<S: Store>(store: S) {
    use super::fixtures::{RunDriver, T0, started};
    use crate::event::ScheduleRef;
    use crate::store::RunFilter;

    let by = |name: &str, slot_ms| {
        let mut a = started(&crate::schedule::slot_workflow_id(name, slot_ms), "q");
        a.schedule = Some(ScheduleRef {
            name: name.into(),
            slot_ms,
        });
        a
    };
    let first = RunDriver::start_with(&store, by("night_ly", T0)).await;
    let mut second = RunDriver::start_with(&store, by("night_ly", T0 + 1_000)).await;
    second.run_workflow_task(&store).await;
    RunDriver::start_with(&store, by("nightly", T0)).await;
    RunDriver::start(&store, "night_ly@7", "q").await;
    let filter = RunFilter {
        schedule: Some("night_ly".into()),
        ..RunFilter::default()
    };
    let runs = store
        .list_runs("default", &filter, None, 10, T0)
        .await
        .unwrap();
    let got: Vec<_> = runs.iter().map(|s| s.key.run_id).collect();
    assert_eq!(got, vec![second.key.run_id, first.key.run_id]);
    assert_eq!(
        runs[0].schedule,
        Some(ScheduleRef {
            name: "night_ly".into(),
            slot_ms: T0 + 1_000
        })
    );
    // Paged one at a time, still only the schedule's runs.
    let page = store
        .list_runs("default", &filter, Some(second.key.run_id), 1, T0)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].key.run_id, first.key.run_id);
}
