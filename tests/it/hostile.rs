//! Hostile targets: each must end as a failed probe within its deadline and bounded memory.

use std::io::Write as _;
use std::time::Duration;

use crate::support::http_target::{HttpTarget, Route, silent_listener};
use crate::support::lookout::Lookout;

const MODULES: &str = "modules:
  fast:
    prober: http
    timeout: 1s
    http:
      preferred_ip_protocol: ip4
  fast_regex:
    prober: http
    timeout: 20s
    http:
      compression: gzip
      headers:
        Accept-Encoding: gzip
      fail_if_body_not_matches_regexp: [\"never\"]
  bomb_counted:
    prober: http
    timeout: 20s
    http:
      compression: gzip
      body_size_limit: 8MB
      headers:
        Accept-Encoding: gzip
";

/// The stall is far longer than the module timeout: a probe that ended before the stall did was
/// cut by lookout's deadline, not by the server.
const STALL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn stalled_headers_fail_at_the_deadline() {
    let target = HttpTarget::new()
        .route("/", Route::stall_headers(STALL))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("fast", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert!(
        s.value("probe_duration_seconds") < STALL.as_secs_f64(),
        "{}",
        s.text
    );
    assert!(
        lk.debug("fast", &target.url("/"))
            .await
            .contains("timed out")
    );
}

#[tokio::test]
async fn stalled_body_fails_at_the_deadline_keeping_what_was_measured() {
    let target = HttpTarget::new()
        .route("/", Route::stall_body(STALL))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("fast", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert!(s.value("probe_duration_seconds") < STALL.as_secs_f64());
    // The headers arrived before the stall, so the status is known.
    assert_eq!(s.value("probe_http_status_code"), 200.0, "{}", s.text);
}

#[tokio::test]
async fn a_silent_tcp_peer_fails_at_the_deadline() {
    let silent = silent_listener();
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("fast", &silent.url("/")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert_eq!(s.value("probe_http_status_code"), 0.0);
}

#[tokio::test]
async fn connection_closed_mid_body_fails() {
    let target = HttpTarget::new()
        .route("/", Route::close_mid_body(10_000, 100))
        .http1_only()
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("fast", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert_eq!(s.value("probe_http_status_code"), 200.0);
    assert_eq!(s.value("probe_http_content_length"), 10_000.0);
}

fn gzip_of_zeros(n: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..n / chunk.len() {
        e.write_all(&chunk).unwrap();
    }
    e.finish().unwrap()
}

#[tokio::test]
async fn gzip_bomb_is_bounded() {
    // 256 MiB of zeros in about 256 KiB: decompressed as a stream, never held in memory.
    let bomb = gzip_of_zeros(256 << 20);
    let target = HttpTarget::new()
        .route(
            "/",
            Route::status(200, bomb).header("Content-Encoding", "gzip"),
        )
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    // With a regex to match, lookout keeps at most 16 MiB and then fails the probe.
    let s = lk.probe("fast_regex", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert_eq!(s.value("probe_failed_due_to_regex"), 1.0);
    // With body_size_limit, reading stops at the limit.
    let s = lk.probe("bomb_counted", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert_eq!(
        s.value("probe_http_uncompressed_body_length"),
        (8u64 << 20) as f64
    );
}

#[tokio::test]
async fn garbage_instead_of_http_fails() {
    let raw = crate::support::http_target::raw_http_listener(&b"SSH-2.0-OpenSSH_9.2\r\n"[..]);
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("fast", &raw.url("/")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert!(
        lk.debug("fast", &raw.url("/"))
            .await
            .contains("reason=protocol")
    );
}

/// Resident memory of this process now and its peak since the last reset, in KiB (Linux).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Every hostile target of this file (and a few more) against a module with a 2 s timeout:
/// each fails, and well before its server would have let it end. Prints, for README's
/// "Security" figures, how far past the 2 s deadline each answer came and how much the
/// process' peak RSS rose during it (lookout and the hostile server together: the test
/// process holds both); no timing is asserted beyond "cut by the deadline".
#[tokio::test]
async fn every_hostile_target_ends_by_its_deadline() {
    const TIMEOUT: f64 = 2.0;
    let yaml = "modules:
  h:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
  h_regex:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
      compression: gzip
      headers:
        Accept-Encoding: gzip
      fail_if_body_not_matches_regexp: [\"never\"]
  h_plain_regex:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
      fail_if_body_not_matches_regexp: [\"never\"]
  h_gzip:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
      compression: gzip
      headers:
        Accept-Encoding: gzip
  h_tls:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
      tls_config: {insecure_skip_verify: true}
";
    let lk = Lookout::start(yaml).await;
    // 16 GiB of zeros in about 16 MiB, as 16,384 gzip members of 1 MiB each (one compressed
    // once): far longer to inflate than the deadline, even in a release build.
    let bomb = gzip_of_zeros(1 << 20).repeat(16 << 10);
    let target = HttpTarget::new()
        .route("/stall-headers", Route::stall_headers(STALL))
        .route("/stall-body", Route::stall_body(STALL))
        .route(
            "/bomb",
            Route::status(200, bomb).header("Content-Encoding", "gzip"),
        )
        .route("/big", Route::big(8 << 20))
        .http1_only()
        .start()
        .await;
    use crate::support::http_target::{RawListener, RawStep, loopback_v4};
    let drip = |head: &'static [u8], steps: usize| {
        let mut script = vec![
            RawStep::ReadUntil(b"\r\n\r\n".to_vec()),
            RawStep::Write(bytes::Bytes::from_static(head)),
        ];
        for _ in 0..steps {
            script.push(RawStep::Write(bytes::Bytes::from_static(b"a")));
            script.push(RawStep::Sleep(Duration::from_millis(50)));
        }
        RawListener::script(loopback_v4(), script)
    };
    let drip_headers = drip(b"HTTP/1.1 200 OK\r\nX-Slow: ", 1_000);
    let drip_body = drip(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", 1_000);
    let silent = silent_listener();
    let mut figures = Vec::new();
    for (case, module, url) in [
        ("headers never sent", "h", target.url("/stall-headers")),
        (
            "body stalls after the headers",
            "h",
            target.url("/stall-body"),
        ),
        (
            "headers dripped a byte per 50 ms",
            "h",
            drip_headers.url("/"),
        ),
        ("body dripped a byte per 50 ms", "h", drip_body.url("/")),
        ("silent TCP peer", "h", silent.url("/")),
        (
            "TLS handshake never answered",
            "h_tls",
            silent.url("/").replace("http://", "https://"),
        ),
        ("gzip bomb (16 GiB), counted", "h_gzip", target.url("/bomb")),
        (
            "gzip bomb (16 GiB), body regex",
            "h_regex",
            target.url("/bomb"),
        ),
        (
            "8 MiB body, body regex",
            "h_plain_regex",
            target.url("/big"),
        ),
    ] {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let (before, _) = rss_kib();
        let started = std::time::Instant::now();
        let s = lk
            .probe_with(
                module,
                &url,
                &[("X-Prometheus-Scrape-Timeout-Seconds", "10")],
            )
            .await;
        let took = started.elapsed().as_secs_f64();
        let (_, peak) = rss_kib();
        assert_eq!(s.value("probe_success"), 0.0, "{case}: {}", s.text);
        // Cut by the deadline, not by the server (which would take 30 s or more).
        assert!(took < STALL.as_secs_f64() / 3.0, "{case}: took {took:.1} s");
        figures.push(format!(
            "| {case} | {:+.3} | {} |",
            took - TIMEOUT,
            peak.saturating_sub(before) / 1024
        ));
    }
    println!(
        "| hostile target (timeout 2 s) | s past the deadline | peak RSS rise, MiB |\n|---|---|---|\n{}",
        figures.join("\n")
    );
}
