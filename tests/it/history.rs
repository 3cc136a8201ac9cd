//! The history store with the real binary: a SIGKILL in the middle of writing loses at most the
//! batch being gathered, and a file that is not lookout's history stops lookout from starting.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use lookout::health::State;
use lookout::history::{FILE_NAME, Store};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// (alive ms, the `up` target's raw result starts) as on disk, read without writing.
fn on_disk(file: &std::path::Path) -> (i64, Vec<i64>) {
    let c = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let alive = c
        .query_row("SELECT value FROM meta WHERE key = 'alive'", [], |r| {
            r.get(0)
        })
        .unwrap_or(0);
    let mut st = c
        .prepare("SELECT r.start FROM raw r JOIN targets t ON t.id = r.target WHERE t.name = 'up' ORDER BY r.start")
        .unwrap();
    let starts = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<i64>, _>>()
        .unwrap();
    (alive, starts)
}

#[test]
fn sigkill_mid_write_loses_at_most_the_last_batch() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let down_port = free_port(); // Closed again: connections are refused.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lookout.yml");
    std::fs::write(
        &config,
        format!(
            "modules:\n  tcp: {{prober: tcp, timeout: 1s}}\n\
             targets:\n  - {{name: up, module: tcp, target: \"{up_addr}\", interval: 100ms}}\n  \
             - {{name: down, module: tcp, target: \"127.0.0.1:{down_port}\", interval: 100ms, retries: 1, retry_interval: 10ms}}\n\
             history: {{flush_interval: 200ms}}\n"
        ),
    )
    .unwrap();
    let storage = dir.path().join("data");
    let file = storage.join(FILE_NAME);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args([
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            &format!("127.0.0.1:{}", free_port()),
            "--storage.path",
            storage.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until batches have landed for a while (and `down` has had its incident).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no history written in 30s");
        std::thread::sleep(Duration::from_millis(200));
        if file.exists() && on_disk(&file).1.len() >= 20 {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL, whatever the writer is doing.
    let killed = unix_ms(SystemTime::now());
    child.wait().unwrap();

    let (alive, starts) = on_disk(&file);
    // Batches landed until the end: the last one at most a flush (and a loaded machine's
    // scheduling slack) before the kill.
    assert!(
        killed - alive < 2_000,
        "last batch {}ms before the kill",
        killed - alive
    );
    // Every result up to the last batch is there: no gap in the 100ms series.
    let gaps: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g < 1_000),
        "gaps in the results: {gaps:?}"
    );
    assert!(alive - starts.last().unwrap() < 1_500);

    // Reopened by lookout: recovered, and nothing lost by reopening.
    let (store, _writer) = Store::open(&storage).expect("reopens after SIGKILL");
    assert_eq!(on_disk(&file).1.len(), starts.len());
    let changes = store.state_changes("up", 10).unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.from == State::Unknown && c.to == State::Up),
        "{changes:?}"
    );
    let incidents = store.incidents("down", 10).unwrap();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].end, None);
    assert_eq!(incidents[0].kind.as_deref(), Some("connect"));
    assert_eq!(incidents[0].root_causes, ["down"]);
}

#[test]
fn lookout_refuses_to_start_on_a_file_that_is_not_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data");
    std::fs::create_dir(&storage).unwrap();
    let file = storage.join(FILE_NAME);
    let bytes = b"someone's notes\n".repeat(20);
    std::fs::write(&file, &bytes).unwrap();
    let config = dir.path().join("lookout.yml");
    std::fs::write(&config, "modules:\n  tcp: {prober: tcp}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args([
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            &format!("127.0.0.1:{}", free_port()),
            "--storage.path",
            storage.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("not an SQLite database"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}
