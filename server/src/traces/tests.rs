use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use steadfast_engine::Payload;
use steadfast_engine::event::{self as ev, Event, EventRecord};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::store::Store;

use super::spans::{self, Value};
use super::{cursor::Cursor, otlp};

fn rec(seq: u64, time_ms: i64, event: Event) -> EventRecord {
    EventRecord {
        seq,
        time_ms,
        hash: [0; 32],
        event,
    }
}

fn key() -> RunKey {
    RunKey::new(
        "default",
        RunId::parse("0190d3c2-7b4e-7000-8000-000000000001").unwrap(),
    )
}

/// A run: a workflow task, an LLM activity whose first attempt timed out (a killed worker)
/// and whose second completed with usage, a timer, a signal wait, then completion.
fn history() -> Vec<EventRecord> {
    let started = |seq, t, attempt| {
        rec(
            seq,
            t,
            Event::ActivityStarted(ev::ActivityStarted {
                command_seq: 1,
                attempt,
                worker: "w".into(),
                effect: ev::Effect::Read,
            }),
        )
    };
    vec![
        rec(
            1,
            1_000,
            Event::RunStarted(ev::RunStarted {
                workflow_type: "agent".into(),
                workflow_id: "wf".into(),
                task_queue: "q".into(),
                input: Payload::default(),
                run_timeout_ms: 0,
                budget: ev::Budget::default(),
                continued_from: None,
                identity: String::new(),
                random_seed: 0,
                parent: None,
                forked_from: None,
                schedule: None,
                traceparent: None,
            }),
        ),
        rec(
            2,
            1_000,
            Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
                task_queue: "q".into(),
                attempt: 1,
                not_before_ms: 0,
            }),
        ),
        rec(
            3,
            1_100,
            Event::WorkflowTaskStarted(ev::WorkflowTaskStarted {
                scheduled_seq: 2,
                worker: "w".into(),
                timeout_ms: 0,
            }),
        ),
        rec(
            4,
            1_200,
            Event::WorkflowTaskCompleted(ev::WorkflowTaskCompleted {
                started_seq: 3,
                worker: "w".into(),
            }),
        ),
        rec(
            5,
            1_200,
            Event::ActivityScheduled(ev::ActivityScheduled {
                command_seq: 1,
                activity_type: "llm.chat".into(),
                input: Payload::default(),
                options: Default::default(),
            }),
        ),
        started(6, 1_300, 1),
        rec(
            7,
            2_300,
            Event::ActivityTimedOut(ev::ActivityTimedOut {
                command_seq: 1,
                attempt: 1,
                timeout: ev::TimeoutKind::StartToClose,
                retry_at_ms: Some(2_400),
            }),
        ),
        started(8, 2_400, 2),
        rec(
            9,
            2_600,
            Event::ActivityCompleted(ev::ActivityCompleted {
                command_seq: 1,
                attempt: 2,
                result: Payload::default(),
                duration_ms: 200,
                usage: Some(ev::Usage {
                    input_tokens: 12,
                    output_tokens: 5,
                    cost_micros: 1_500,
                    model: "gpt-x".into(),
                }),
                reconciled: false,
            }),
        ),
        rec(
            10,
            2_600,
            Event::TimerStarted(ev::TimerStarted {
                command_seq: 2,
                fire_at_ms: 3_000,
            }),
        ),
        rec(
            11,
            3_000,
            Event::TimerFired(ev::TimerFired { command_seq: 2 }),
        ),
        rec(
            12,
            3_000,
            Event::SignalWaitStarted(ev::SignalWaitStarted {
                command_seq: 3,
                name: "approve".into(),
                question: String::new(),
                choices: vec![],
            }),
        ),
        rec(
            13,
            3_500,
            Event::RunCompleted(ev::RunCompleted {
                command_seq: 4,
                result: Payload::default(),
            }),
        ),
    ]
}

fn attr<'a>(s: &'a spans::Span, k: &str) -> Option<&'a Value> {
    s.attrs.iter().find(|(n, _)| *n == k).map(|(_, v)| v)
}

#[test]
fn one_span_per_operation_with_attempts_as_events() {
    let k = key();
    let h = history();
    let all = spans::spans(&k, &h);
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "workflow_task",
            "activity llm.chat",
            "timer",
            "signal_wait approve",
            "run agent"
        ]
    );
    let ids: std::collections::BTreeSet<_> = all.iter().map(|s| s.span_id).collect();
    assert_eq!(ids.len(), all.len(), "distinct span ids");
    let root = all.last().unwrap();
    assert_eq!(root.parent, None);
    assert_eq!(
        (root.start_ms, root.end_ms, root.closed_seq),
        (1_000, 3_500, 13)
    );
    for s in &all[..4] {
        assert_eq!(s.parent, Some(root.span_id), "{}", s.name);
        assert_eq!(s.trace_id, spans::trace_id(&k));
    }
    let llm = &all[1];
    assert_eq!(llm.span_id, spans::span_id(&k, "activity", 5));
    assert_eq!(
        (llm.start_ms, llm.end_ms, llm.closed_seq),
        (1_200, 2_600, 9)
    );
    let outcomes: Vec<_> = llm
        .events
        .iter()
        .map(|e| {
            (
                attr_ev(e, "steadfast.attempt"),
                attr_ev(e, "steadfast.outcome"),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (Some(Value::Int(1)), Some(Value::Str("timed_out".into()))),
            (Some(Value::Int(2)), Some(Value::Str("completed".into())))
        ]
    );
    assert_eq!(
        attr(llm, "gen_ai.request.model"),
        Some(&Value::Str("gpt-x".into()))
    );
    assert_eq!(
        attr(llm, "gen_ai.usage.input_tokens"),
        Some(&Value::Int(12))
    );
    assert_eq!(
        attr(llm, "gen_ai.usage.output_tokens"),
        Some(&Value::Int(5))
    );
    assert_eq!(
        attr(llm, "steadfast.cost_usd"),
        Some(&Value::Double(0.0015))
    );
    assert_eq!(llm.error, None);
    // The wait the run closed over ends with the run.
    assert_eq!(
        attr(&all[3], "steadfast.closed_by"),
        Some(&Value::Str("run_closed".into()))
    );
    // A prefix of the history gives the same spans for what it closes: ids do not depend
    // on when they are computed.
    let early = spans::spans(&k, &h[..9]);
    assert_eq!(early, all[..2].to_vec());
    assert_eq!(
        spans::activity_traceparent(&k, None, 5),
        format!(
            "00-{}-{}-01",
            hex::encode(llm.trace_id),
            hex::encode(llm.span_id)
        )
    );
}

fn attr_ev(e: &spans::SpanEvent, k: &str) -> Option<Value> {
    e.attrs
        .iter()
        .find(|(n, _)| *n == k)
        .map(|(_, v)| v.clone())
}

#[test]
fn otlp_json_uses_hex_ids_and_string_nanos() {
    let k = key();
    let all = spans::spans(&k, &history());
    let body: serde_json::Value = serde_json::from_slice(&otlp::encode(&all)).unwrap();
    let s = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][1];
    assert_eq!(s["spanId"], hex::encode(all[1].span_id));
    assert_eq!(s["traceId"].as_str().unwrap().len(), 32);
    assert_eq!(s["startTimeUnixNano"], "1200000000");
    assert_eq!(s["parentSpanId"], hex::encode(all[4].span_id));
    assert_eq!(s["events"].as_array().unwrap().len(), 2);
    assert_eq!(
        otlp::traces_url("http://h:4318/"),
        "http://h:4318/v1/traces"
    );
    assert_eq!(otlp::traces_url("http://h/v1/traces"), "http://h/v1/traces");
}

#[test]
fn the_cursor_survives_a_reopen_and_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key(), RunKey::new("other", RunId::new_v7()));
    {
        let mut c = Cursor::open(dir.path()).unwrap();
        assert!(c.track(&a).unwrap());
        assert!(!c.track(&a).unwrap());
        c.track(&b).unwrap();
        c.ack(&a, 9, false).unwrap();
        c.ack(&b, 4, true).unwrap();
    }
    let p = dir.path().join(super::cursor::CURSOR_FILE);
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str("[\"=\",\"defa");
    std::fs::write(&p, text).unwrap();
    let c = Cursor::open(dir.path()).unwrap();
    assert_eq!(c.acked.into_iter().collect::<Vec<_>>(), vec![(a, 9)]);
}

#[test]
fn a_given_traceparent_is_continued() {
    let k = key();
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut h = history();
    if let Event::RunStarted(a) = &mut h[0].event {
        a.traceparent = Some(tp.into());
    }
    let own = spans::spans(&k, &history());
    let all = spans::spans(&k, &h);
    assert_eq!(all.len(), own.len());
    let trace: [u8; 16] = hex::decode("0af7651916cd43dd8448eb211c80319c")
        .unwrap()
        .try_into()
        .unwrap();
    for (s, o) in all.iter().zip(&own) {
        assert_eq!(s.trace_id, trace, "{}", s.name);
        assert_eq!(s.span_id, o.span_id, "{}", s.name);
    }
    let root = all.iter().find(|s| s.name == "run agent").unwrap();
    assert_eq!(
        root.parent,
        Some(hex::decode("b7ad6b7169203331").unwrap().try_into().unwrap())
    );
    let llm = all.iter().find(|s| s.name.starts_with("activity")).unwrap();
    assert_eq!(
        spans::activity_traceparent(&k, Some(tp), 5),
        format!("00-{}-{}-01", hex::encode(trace), hex::encode(llm.span_id))
    );
}

#[test]
fn traceparents_are_checked() {
    let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert!(spans::parse_traceparent(ok).is_ok());
    for bad in [
        "",
        "garbage",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
    ] {
        assert!(spans::parse_traceparent(bad).is_err(), "{bad:?} accepted");
    }
}

/// An OTLP/HTTP endpoint on a loopback port answering 200; counts the spans by name.
async fn collector() -> (String, Arc<Mutex<BTreeMap<String, usize>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let names: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let sink = names.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let (r, mut w) = conn.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim().to_ascii_lowercase();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).await.unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    for s in v["resourceSpans"][0]["scopeSpans"][0]["spans"]
                        .as_array()
                        .unwrap()
                    {
                        let name = s["name"].as_str().unwrap().to_string();
                        *sink.lock().entry(name).or_default() += 1;
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    w.write_all(reply.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (url, names)
}

fn records_read(t: &super::Tracer) -> u64 {
    t.records_read.load(std::sync::atomic::Ordering::Relaxed)
}

/// Exporting after every workflow task reads each history record once, not the history from
/// seq 1 each time; a restarted exporter reads the run from seq 1 once (to learn its open
/// operations) and sends nothing twice.
#[tokio::test]
async fn the_exporter_reads_each_record_once_per_process() {
    use steadfast_engine::store::contract::fixtures::RunDriver;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = steadfast_engine::embedded::EmbeddedStore::open(
        dir.path().join("data"),
        steadfast_engine::embedded::EmbeddedOptions::default(),
    )
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let (url, names) = collector().await;
    let client = reqwest::Client::new();
    let mut run = RunDriver::start(store.as_ref(), "wf", "q").await;
    let tracer = super::Tracer::open(&url, dir.path(), store.as_ref())
        .await
        .unwrap();
    // What the append hook does for a run first appended to by this process.
    tracer.cursor.lock().track(&run.key).unwrap();
    const TASKS: usize = 20;
    for _ in 0..TASKS {
        run.run_workflow_task(store.as_ref()).await;
        tracer
            .export_run(&client, store.as_ref(), &run.key)
            .await
            .unwrap();
    }
    let len = run.next - 1;
    // From seq 1 each time, it would have read 4 + 7 + ... + len records.
    assert_eq!(records_read(&tracer), len);
    assert_eq!(names.lock().get("workflow_task"), Some(&TASKS));

    drop(tracer);
    let tracer = super::Tracer::open(&url, dir.path(), store.as_ref())
        .await
        .unwrap();
    run.run_workflow_task(store.as_ref()).await;
    tracer
        .export_run(&client, store.as_ref(), &run.key)
        .await
        .unwrap();
    assert_eq!(records_read(&tracer), len + 3, "rebuilt once from seq 1");
    run.run_workflow_task(store.as_ref()).await;
    tracer
        .export_run(&client, store.as_ref(), &run.key)
        .await
        .unwrap();
    assert_eq!(records_read(&tracer), len + 6, "then only the new records");
    assert_eq!(
        names.lock().get("workflow_task"),
        Some(&(TASKS + 2)),
        "no span sent twice"
    );
}

/// Dispatch asks for a run's given traceparent on every activity it hands out: the store is
/// read once per run.
#[tokio::test]
async fn a_runs_traceparent_is_read_once() {
    use steadfast_engine::store::contract::fixtures::{RunDriver, started};
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = steadfast_engine::embedded::EmbeddedStore::open(
        dir.path(),
        steadfast_engine::embedded::EmbeddedOptions::default(),
    )
    .unwrap();
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let with = RunDriver::start_with(
        &store,
        ev::RunStarted {
            traceparent: Some(given.into()),
            ..started("a", "q")
        },
    )
    .await;
    let without = RunDriver::start(&store, "b", "q").await;
    let cache = super::given::RunTraceparents::default();
    for _ in 0..5 {
        assert_eq!(
            cache.get(&store, &with.key).await.unwrap().as_deref(),
            Some(given)
        );
        assert_eq!(cache.get(&store, &without.key).await.unwrap(), None);
    }
    assert_eq!(cache.reads(), 2);
    assert_eq!(cache.len(), 2);
}
