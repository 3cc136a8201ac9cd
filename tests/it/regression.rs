//! One test per fixed bug, named `r<issue>_<what>`, with the issue it came from.
//! (Bugs that only a unit test can reach are named the same way beside the code:
//! `results::tests::a_panicking_probe_is_counted_and_lookout_keeps_serving` for issue 11's
//! `lookout_probe_panics_total` that nothing incremented.)

use crate::support::lookout::{Lookout, PROMETHEUS_ACCEPT, request};

const CONFIG: &str = "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n";

/// Issue 14: Prometheus asks for OpenMetrics first and lookout answered it, where blackbox
/// answers text 0.0.4 whatever `Accept` says; every scrape got another format than before.
#[tokio::test]
async fn r14_text_format_whatever_prometheus_accepts() {
    let lk = Lookout::start(CONFIG).await;
    for path in ["/metrics", "/probe?module=http_2xx&target=127.0.0.1:1"] {
        let a = request(lk.addr, "GET", path, &[("Accept", PROMETHEUS_ACCEPT)]).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert_eq!(
            a.content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{path}"
        );
        assert!(!a.body.contains("# EOF"), "{path}: {}", a.body);
    }
}

/// Issue 13: the history store was opened at ./data whatever the config, so lookout refused to
/// start where blackbox runs fine — a working directory it cannot write (Debian's unit runs in
/// /), a read-only root filesystem — even for a blackbox config that schedules nothing. A
/// config without `targets:` and no `--storage.path` must write nothing to disk.
#[tokio::test]
async fn r13_a_blackbox_config_writes_no_history_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blackbox.yml"), CONFIG).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .current_dir(dir.path())
        .args([
            "--config.file",
            "blackbox.yml",
            "--web.listen-address",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut healthy = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            healthy = request(addr, "GET", "/-/healthy", &[]).await.body == "Healthy";
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let page = request(addr, "GET", "/status", &[]).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(healthy, "lookout did not start");
    assert_eq!(page.status, 200);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["blackbox.yml"],
        "lookout wrote to its working directory"
    );
}
