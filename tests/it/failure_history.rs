//! Failures kept per target (`--history.failures-per-target`, `--history.failed-targets`): a
//! target that fails on every probe cannot push another's rare failure out of `/` and `/logs`.

use std::time::Duration;

use crate::support::lookout::{Lookout, q};

const CONFIG: &str = "modules:\n  tcp:\n    prober: tcp\n    timeout: 2s\n";

/// The number of failure blocks in a `/logs?…&failures=true` answer.
fn blocks(body: &str) -> usize {
    body.lines()
        .filter(|l| l.starts_with("=== Failure at "))
        .count()
}

#[tokio::test]
async fn a_rare_failure_outlives_a_target_that_always_fails() {
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = up.accept().await {
            drop(s);
        }
    });
    let lk = Lookout::start_with_flags(
        tempfile::tempdir().unwrap(),
        CONFIG,
        &["--history.limit", "3", "--history.failures-per-target", "2"],
    )
    .await;
    // The rare failure first (id 0), then a flood of another target's failures and successes.
    lk.probe("tcp", "127.0.0.1:1").await;
    for _ in 0..6 {
        lk.probe("tcp", "127.0.0.1:2").await;
        lk.probe("tcp", &up_addr).await;
    }

    // The ring of 3 has forgotten it; its own table has not, nor its /logs?id= link.
    let page = lk.get("/").await.body;
    let recent = &page[..page.find("Recent failures by target").expect("the section")];
    assert!(!recent.contains("127.0.0.1:1<"), "{page}");
    let failures = &page[page.find("Recent failures by target").unwrap()..];
    assert!(failures.contains("<td>127.0.0.1:1</td>"), "{page}");
    assert!(
        failures.contains("<td>127.0.0.1:2</td><td>tcp</td><td>6</td>"),
        "the total: {page}"
    );
    assert!(
        !failures.contains(&up_addr),
        "a target that never failed: {page}"
    );
    assert!(
        failures.contains(&format!(
            "/logs?target={}&amp;module=tcp&amp;failures=true",
            q("127.0.0.1:1")
        )),
        "{page}"
    );
    assert_eq!(lk.get("/logs?id=0").await.status, 200);

    let rare = lk
        .get("/logs?target=127.0.0.1:1&module=tcp&failures=true")
        .await;
    assert_eq!(rare.status, 200, "{}", rare.body);
    assert_eq!(blocks(&rare.body), 1, "{}", rare.body);
    let head = rare.body.lines().next().unwrap();
    // An RFC 3339 time in UTC, the id, and the reason.
    assert!(
        head.starts_with("=== Failure at 20") && head.contains("Z (id 0)"),
        "{head}"
    );
    assert!(
        head.contains("module tcp, target 127.0.0.1:1: connect"),
        "{head}"
    );
    assert!(rare.body.contains("Logs for the probe:"), "{}", rare.body);

    let flaky = lk.get("/logs?target=127.0.0.1:2&failures=true").await;
    assert_eq!(blocks(&flaky.body), 2, "bounded per target: {}", flaky.body);

    for (path, status, body) in [
        (
            format!("/logs?target={}&failures=true", q(&up_addr)),
            404,
            "Probe target has no kept failures\n",
        ),
        (
            "/logs?target=127.0.0.1:1&module=other&failures=true".to_owned(),
            404,
            "Probe target has no kept failures\n",
        ),
        (
            "/logs?id=0&failures=true".to_owned(),
            400,
            "Probe failures filter only works in conjunction with target parameter\n",
        ),
    ] {
        let a = lk.get(&path).await;
        assert_eq!((a.status, a.body.as_str()), (status, body), "{path}");
    }
    // Without failures=true, /logs?target= answers as blackbox: the newest probe.
    assert_eq!(lk.get("/logs?target=127.0.0.1:2").await.status, 200);
}

#[tokio::test]
async fn scheduled_failures_are_kept_by_target_name() {
    let lk = Lookout::start(
        "modules:\n  tcp:\n    prober: tcp\n    timeout: 1s\ntargets:\n  - {name: db, module: tcp, target: '127.0.0.1:1', interval: 1s}\n",
    )
    .await;
    let mut body = None;
    for _ in 0..100 {
        let a = lk.get("/logs?target=db&failures=true").await;
        if a.status == 200 {
            body = Some(a.body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = body.expect("the scheduled target's failure is kept");
    assert!(body.starts_with("=== Failure at "), "{body}");
    assert!(body.contains("target 127.0.0.1:1"), "{body}");
    // By address too, as /logs?target= finds scheduled targets.
    let a = lk
        .get("/logs?target=127.0.0.1:1&module=tcp&failures=true")
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let page = lk.get("/").await.body;
    assert!(page.contains("<td>db</td><td>tcp</td>"), "{page}");
}

#[tokio::test]
async fn zero_per_target_keeps_no_failures() {
    let lk = Lookout::start_with_flags(
        tempfile::tempdir().unwrap(),
        CONFIG,
        &["--history.failures-per-target", "0"],
    )
    .await;
    lk.probe("tcp", "127.0.0.1:1").await;
    let a = lk.get("/logs?target=127.0.0.1:1&failures=true").await;
    assert_eq!(a.status, 404);
    // The ring still has it.
    assert_eq!(lk.get("/logs?target=127.0.0.1:1").await.status, 200);
}
