//! Search attributes, the memo and failed activity types: set at start and upserted by the
//! workflow, found through the store's indexes, kept across a reopen; an upsert past the
//! limit is refused and stores nothing.

use crate::event::{self, ActivityOptions, Event};
use crate::ids::{DEFAULT_NAMESPACE, RunId};
use crate::payload::Payload;
use crate::search::{SEARCH_ATTRIBUTES_MAX, SearchAttributes, SearchValue};
use crate::store::contract::Backend;
use crate::store::contract::fixtures::{self, RunDriver, T0};
use crate::store::{Error, RunFilter, Store};

fn kw(s: &str) -> SearchValue {
    SearchValue::Keyword(s.into())
}

fn upsert(command_seq: u32, attrs: &[(&str, SearchValue)]) -> Event {
    Event::SearchAttributesUpserted(event::SearchAttributesUpserted {
        command_seq,
        attributes: attrs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect(),
    })
}

async fn list<S: Store>(store: &S, f: RunFilter) -> Vec<RunId> {
    store
        .list_runs(DEFAULT_NAMESPACE, &f, None, 100, T0)
        .await
        .unwrap()
        .iter()
        .map(|s| s.key.run_id)
        .collect()
}

fn by_attrs(attrs: &[(&str, SearchValue)]) -> RunFilter {
    RunFilter {
        attributes: attrs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect(),
        ..RunFilter::default()
    }
}

/// Four runs: `a` with attributes and a memo at start; `b` started as customer "globex" and
/// moved to "acme" by a workflow upsert; `c` whose "tool" activity failed for good; `d`
/// whose "tool" activity failed once and will be retried.
pub async fn attributes_memo_and_failed_activities<B: Backend>(backend: &mut B) {
    let store = backend.fresh().await;
    let mut a = RunDriver::start(&store, "a", "q").await;
    a.append(
        &store,
        vec![
            upsert(
                0,
                &[("customer", kw("acme")), ("priority", SearchValue::Int(2))],
            ),
            Event::MemoRecorded(event::MemoRecorded {
                memo: Payload::json(br#"{"note":"Refund for ACME, ticket 4711"}"#.to_vec()),
            }),
        ],
    )
    .await;
    let mut b = RunDriver::start(&store, "b", "q").await;
    b.append(&store, vec![upsert(0, &[("customer", kw("globex"))])])
        .await;
    b.run_workflow_task(&store).await;
    let cs = b.next_command();
    b.append(
        &store,
        vec![upsert(
            cs,
            &[("customer", kw("acme")), ("vip", SearchValue::Bool(true))],
        )],
    )
    .await;
    let mut c = RunDriver::start(&store, "c", "q").await;
    c.run_workflow_task(&store).await;
    let id = c.next_command();
    c.append(
        &store,
        vec![fixtures::activity(id, "aq", ActivityOptions::default())],
    )
    .await;
    c.append(&store, vec![fixtures::activity_failed(id, 1, None)])
        .await;
    let mut d = RunDriver::start(&store, "d", "q").await;
    d.run_workflow_task(&store).await;
    let id = d.next_command();
    d.append(
        &store,
        vec![fixtures::activity(id, "aq", ActivityOptions::default())],
    )
    .await;
    d.append(&store, vec![fixtures::activity_failed(id, 1, Some(T0 + 1))])
        .await;
    let (a, b, c) = (a.key.run_id, b.key.run_id, c.key.run_id);

    // The state carries them.
    let sa = store
        .run_state(&crate::ids::RunKey::new(DEFAULT_NAMESPACE, a))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sa.search_attributes.get("priority"),
        Some(&SearchValue::Int(2))
    );
    assert!(sa.memo.is_some(), "the memo is in the state");

    let check = |store: B::Store| async move {
        assert_eq!(
            list(&store, by_attrs(&[("customer", kw("acme"))])).await,
            vec![b, a],
            "newest first, the upserted value included"
        );
        assert!(
            list(&store, by_attrs(&[("customer", kw("globex"))]))
                .await
                .is_empty(),
            "an upsert replaces the old value in the index"
        );
        assert_eq!(
            list(&store, by_attrs(&[("priority", SearchValue::Int(2))])).await,
            vec![a]
        );
        assert!(
            list(&store, by_attrs(&[("priority", kw("2"))]))
                .await
                .is_empty(),
            "values are typed: the keyword \"2\" is not the int 2"
        );
        assert_eq!(
            list(
                &store,
                by_attrs(&[("customer", kw("acme")), ("vip", SearchValue::Bool(true))])
            )
            .await,
            vec![b],
            "every attribute must match"
        );
        let failed = RunFilter {
            failed_activity: Some("tool".into()),
            ..RunFilter::default()
        };
        assert_eq!(
            list(&store, failed).await,
            vec![c],
            "only a failure with no retry left counts"
        );
        let text = |q: &str| RunFilter {
            text: Some(q.into()),
            ..RunFilter::default()
        };
        assert_eq!(
            list(&store, text("refund ACME")).await,
            vec![a],
            "the memo's text"
        );
        assert!(list(&store, text("refund globex")).await.is_empty());
        let with_id = RunFilter {
            workflow_id: Some("b".into()),
            ..by_attrs(&[("customer", kw("acme"))])
        };
        assert_eq!(list(&store, with_id).await, vec![b]);
        // Paging through an attribute's runs.
        let f = by_attrs(&[("customer", kw("acme"))]);
        let p1 = store
            .list_runs(DEFAULT_NAMESPACE, &f, None, 1, T0)
            .await
            .unwrap();
        let p2 = store
            .list_runs(DEFAULT_NAMESPACE, &f, Some(p1[0].key.run_id), 1, T0)
            .await
            .unwrap();
        assert_eq!(
            (
                p1[0].key.run_id,
                p2.iter().map(|s| s.key.run_id).collect::<Vec<_>>()
            ),
            (b, vec![a])
        );
        store
    };
    let store = check(store).await;

    // Past the limit: refused, nothing stored.
    let mut e = RunDriver::start(&store, "e", "q").await;
    let many: SearchAttributes = (0..=SEARCH_ATTRIBUTES_MAX)
        .map(|i| (format!("a{i}"), SearchValue::Int(i as i64)))
        .collect();
    let refused = e
        .try_append(
            &store,
            vec![Event::SearchAttributesUpserted(
                event::SearchAttributesUpserted {
                    command_seq: 0,
                    attributes: many,
                },
            )],
        )
        .await;
    assert!(matches!(refused, Err(Error::Illegal { .. })), "{refused:?}");
    assert!(
        list(&store, by_attrs(&[("a0", SearchValue::Int(0))]))
            .await
            .is_empty()
    );

    let store = backend.reopen(store).await;
    check(store).await;
}
