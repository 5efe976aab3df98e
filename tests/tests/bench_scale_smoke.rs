//! The scale benchmark keeps building and running (issue 13, point 5 for point 4):
//! `steadfast-bench-scale --quick` fills 1,000 closed and 100 open runs, starts a real server
//! on them and must print every table with a number in every row. The real sizes (10k, 100k
//! and 1M closed runs, 10,000 open) stay opt-in (README, Benchmarks).

use std::process::Command;
use std::time::Duration;

use steadfast_tests::{bin, run_bounded};

const SMOKE_TIMEOUT: Duration = Duration::from_secs(240);

/// Every table and row the bench prints, by title and row name.
const ROWS: &[(&str, &[&str])] = &[
    (
        "Data",
        &[
            "writing the new runs, s",
            "log bytes per run",
            "sled bytes per run",
            "data dir, MiB",
        ],
    ),
    (
        "Startup and memory",
        &[
            "startup until serving (spawn to the first ListRuns answered), ms",
            "RSS after startup, MiB",
            "peak RSS (VmHWM) after startup, MiB",
            "RSS after the list calls, MiB",
            "peak RSS (VmHWM) after the list calls, MiB",
            "restart after SIGKILL until serving (largest size), ms",
        ],
    ),
    ("ListRuns, first page (ms)", LIST_ROWS),
    ("ListRuns, page 50 through page tokens (ms)", LIST_ROWS),
    (
        "UI API GET /api/v1/runs (ms)",
        &[
            "first page",
            "status=completed",
            "status=running",
            "page 50 (page_token)",
        ],
    ),
];

const LIST_ROWS: &[&str] = &[
    "unfiltered",
    "status completed",
    "status running",
    "type triage",
    "waiting signal",
    "waiting activity",
];

/// The cells after the row name of row `row` in the table titled `title`.
fn cells(out: &str, title: &str, row: &str) -> Vec<String> {
    let table = out
        .split("\n\n")
        .skip_while(|block| block.trim() != title)
        .nth(1)
        .unwrap_or_else(|| panic!("no table {title:?} in:\n{out}"));
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("| {row} |")))
        .unwrap_or_else(|| panic!("no row {row:?} in table {title:?}:\n{table}"));
    line.split('|')
        .map(str::trim)
        .skip(2)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn quick_scale_bench_prints_every_row_with_numbers() {
    let (code, out, err) = run_bounded(
        Command::new(bin("steadfast-bench-scale")).arg("--quick"),
        SMOKE_TIMEOUT,
    )
    .unwrap();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("| | 1000 closed + 100 open |"),
        "one column, the quick size: {out}"
    );
    for (title, rows) in ROWS {
        for row in *rows {
            let cells = cells(&out, title, row);
            assert_eq!(cells.len(), 1, "{title} / {row}: {cells:?}");
            // A deep page beyond the last is marked "(pN)" after its time.
            let first = cells[0].split_whitespace().next().unwrap_or("");
            let v: f64 = first
                .parse()
                .unwrap_or_else(|_| panic!("{title} / {row}: {:?} is not a number", cells[0]));
            assert!(v >= 0.0, "{title} / {row}: {v}");
        }
    }
    // Measured, not zero: the server's memory was read and a run takes disk.
    let rss: f64 = cells(&out, "Startup and memory", "RSS after startup, MiB")[0]
        .parse()
        .unwrap();
    assert!(rss > 1.0, "{out}");
    let log: f64 = cells(&out, "Data", "log bytes per run")[0].parse().unwrap();
    assert!(log > 100.0, "{out}");
}
