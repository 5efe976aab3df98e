//! The golden history of search attributes and the memo (discriminants 110-111), in a file
//! of its own so that the older golden files keep their bytes.

use super::history::*;
use steadfast_engine::event::*;
use steadfast_engine::payload::Payload;
use steadfast_engine::search::SearchValue;
use steadfast_engine::state::RunStatus;
use steadfast_engine::{RunId, RunKey};

/// Attributes of every type and a memo set at start (command seq 0), then an upsert by the
/// workflow (a command) that changes one value and adds another.
pub(crate) fn search_history() -> History {
    let id = RunId(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 | 11,
    ));
    let events = vec![
        /* 1 */ started("ticket-4711", Budget::default(), None),
        /* 2 */
        Event::SearchAttributesUpserted(SearchAttributesUpserted {
            command_seq: 0,
            attributes: [
                ("customer".to_string(), SearchValue::Keyword("acme".into())),
                ("priority".to_string(), SearchValue::Int(2)),
                ("vip".to_string(), SearchValue::Bool(true)),
                ("due".to_string(), SearchValue::Time(1_777_593_600_000)),
            ]
            .into(),
        }),
        /* 3 */
        Event::MemoRecorded(MemoRecorded {
            memo: Payload::json(r#"{"note":"refund request"}"#),
        }),
        /* 4 */ wft_scheduled(1, 0),
        /* 5 */ wft_started(4),
        /* 6 */ wft_completed(5),
        /* 7 */
        Event::SearchAttributesUpserted(SearchAttributesUpserted {
            command_seq: 1,
            attributes: [
                ("priority".to_string(), SearchValue::Int(1)),
                ("stage".to_string(), SearchValue::Keyword("triaged".into())),
            ]
            .into(),
        }),
    ];
    History {
        name: "search",
        key: RunKey::new("default", id),
        events,
        status: RunStatus::Running,
    }
}
