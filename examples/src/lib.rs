//! Runnable Steadfast agents. The binaries are in `src/bin/`: `hello-worker` (three activities
//! in sequence) and `triage` (the support-ticket triage agent, end to end in one command).

pub mod conn;
pub mod triage;
