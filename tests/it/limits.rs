//! `probe_limits`: past a limit `/probe` answers 429 with `Retry-After` at once, before anything
//! is dialled; a flood opens no more connections than the cap; scheduled targets are not
//! limited; the counts are on `/metrics`.

use std::time::Duration;

use crate::support::http_target::{HttpTarget, Route, silent_listener};
use crate::support::lookout::{Lookout, q, request};

const MODULES: &str = "modules:
  slow:
    prober: http
    timeout: 3s
    http:
      preferred_ip_protocol: ip4
";

fn probe_path(module: &str, target: &str) -> String {
    format!("/probe?module={}&target={}", q(module), q(target))
}

fn counter(metrics: &str, reason: &str) -> f64 {
    let line = format!("lookout_probe_limited_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in /metrics"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_flood_past_the_global_cap_gets_429_and_opens_no_more_connections_than_the_cap() {
    let silent = silent_listener();
    let lk = Lookout::start(&format!("{MODULES}probe_limits:\n  max_in_flight: 5\n")).await;
    let path = probe_path("slow", &silent.url("/"));
    let addr = lk.addr;
    let answers = futures_util::future::join_all((0..60).map(|_| {
        let path = path.clone();
        async move { request(addr, "GET", &path, &[]).await }
    }))
    .await;
    let limited: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    let probed = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(limited.len() + probed, 60, "only 200s and 429s");
    // At most five ran at once; the others were refused while those held their places (the
    // 60 requests arrive well within the 3 s the first five take, so few more than five ran).
    assert!((1..=10).contains(&probed), "{probed} probed");
    assert!(
        silent.accepted() <= probed,
        "{} connections",
        silent.accepted()
    );
    let a = limited[0];
    assert_eq!(a.headers.get("retry-after").unwrap(), "1");
    assert_eq!(
        a.body,
        "Probe refused by probe_limits: too many probes running at once (max_in_flight)\n"
    );
    let m = lk.get("/metrics").await.body;
    assert_eq!(counter(&m, "in_flight"), limited.len() as f64);
    assert_eq!(counter(&m, "rate"), 0.0);
    assert!(m.contains("\nlookout_probe_in_flight 0\n"), "{m}");
}

#[tokio::test]
async fn a_client_past_its_rate_waits_for_its_retry_after() {
    let target = HttpTarget::new().route("/", Route::ok("ok")).start().await;
    let lk = Lookout::start(&format!(
        "{MODULES}probe_limits:\n  per_client: {{rate: 0.2, burst: 2}}\n"
    ))
    .await;
    let path = probe_path("slow", &target.url("/"));
    for _ in 0..2 {
        assert_eq!(lk.get(&path).await.status, 200);
    }
    let a = lk.get(&path).await;
    assert_eq!(a.status, 429, "{}", a.body);
    // One request per 5 s: the next token is at most 5 s away.
    let wait: u64 = a
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&wait), "Retry-After {wait}");
    assert!(a.body.contains("(per_client.rate)"), "{}", a.body);
    // A bad request is still a bad request, not a 429.
    assert_eq!(lk.get("/probe?module=slow").await.status, 400);
    let m = lk.get("/metrics").await.body;
    assert_eq!(counter(&m, "rate"), 1.0);
    // Nothing reached the target for the refused request.
    assert_eq!(target.requests("/").len(), 2);
}

/// The status line of `GET path` sent from `source` (a loopback address: Linux answers all of
/// 127.0.0.0/8), over a connection of its own.
async fn status_from(source: &str, lookout: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(lookout).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {lookout}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_client_past_its_own_in_flight_limit_is_refused_while_others_are_not() {
    let silent = silent_listener();
    let lk = Lookout::start(&format!(
        "{MODULES}probe_limits:\n  per_client: {{max_in_flight: 1}}\n"
    ))
    .await;
    let path = probe_path("slow", &silent.url("/"));
    let addr = lk.addr;
    let first = tokio::spawn({
        let path = path.clone();
        async move { status_from("127.0.0.1", addr, &path).await }
    });
    // Until the first holds its place.
    let mut running = false;
    for _ in 0..200 {
        if lk
            .get("/metrics")
            .await
            .body
            .contains("\nlookout_probe_in_flight 1\n")
        {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "the first probe never started");
    let second = lk.get(&path).await;
    assert_eq!(second.status, 429, "{}", second.body);
    assert!(
        second.body.contains("(per_client.max_in_flight)"),
        "{}",
        second.body
    );
    // Another client (another loopback source address) is not held to the first one's limit.
    assert_eq!(
        status_from("127.0.0.2", addr, &path).await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(first.await.unwrap(), "HTTP/1.1 200 OK");
    assert_eq!(lk.get(&path).await.status, 200);
}

#[tokio::test]
async fn scheduled_targets_are_not_limited_and_a_bad_section_names_its_field() {
    let target = HttpTarget::new().route("/", Route::ok("ok")).start().await;
    let lk = Lookout::start(&format!(
        "{MODULES}probe_limits:\n  max_in_flight: 1\n  per_client: {{rate: 0.01, burst: 1}}\ntargets:\n{}",
        (0..5)
            .map(|i| format!(
                "- {{name: t{i}, module: slow, target: '{}', interval: 1s}}\n",
                target.url("/")
            ))
            .collect::<String>()
    ))
    .await;
    // All five scheduled targets get probed though the cap is one and the rate one per 100 s.
    let mut seen = 0;
    for _ in 0..100 {
        let m = lk.get("/metrics").await.body;
        seen = m
            .lines()
            .filter(|l| l.starts_with("probe_success{") && l.ends_with(" 1"))
            .count();
        if seen == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 5);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        format!("{MODULES}probe_limits:\n  per_client:\n    rate: 0\n"),
    )
    .unwrap();
    let e = lookout::config::load(&file).unwrap_err().to_string();
    assert!(
        e.contains("bad.yml:") && e.contains("field probe_limits.per_client.rate"),
        "{e}"
    );
}
