//! The throwaway-cluster harness: it starts, serves databases, and is stopped by PID.

use steadfast_postgres::testing::PgCluster;

#[tokio::test]
async fn a_cluster_starts_serves_and_stops_by_pid() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let pid = cluster.pid().expect("running") as Pid;
    let url = cluster.create_database("harness");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);
    let row = client
        .query_one("SHOW max_connections", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "200");
    drop(client);
    let _ = conn.await;
    let dir = cluster.socket_dir().parent().expect("dir").to_path_buf();
    drop(cluster);
    assert!(!process_exists(pid), "the postmaster {pid} is gone");
    assert!(!dir.exists(), "{dir:?} is removed");
}

type Pid = i32;

fn process_exists(pid: Pid) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The shared cluster of a test process is stopped by the kernel when that process exits
/// (its `static` is never dropped): this test runs itself as a child process that starts the
/// shared cluster, prints the postmaster's PID and exits.
#[test]
fn the_shared_cluster_stops_when_the_test_process_exits() {
    if std::env::var_os("STEADFAST_PG_HARNESS_CHILD").is_some() {
        let Some(c) = PgCluster::shared() else { return };
        println!("PID={}", c.pid().expect("running"));
        return;
    }
    if steadfast_postgres::testing::find_bin_dir().is_none() {
        eprintln!("{}", steadfast_postgres::testing::SKIP_MESSAGE);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "the_shared_cluster_stops_when_the_test_process_exits",
            "--nocapture",
        ])
        .env("STEADFAST_PG_HARNESS_CHILD", "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid: Pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PID="))
        .unwrap_or_else(|| panic!("the child printed no PID: {stdout}"))
        .parse()
        .expect("a pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while process_exists(pid) && !is_zombie(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the postmaster {pid} outlived its test process"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn is_zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}
