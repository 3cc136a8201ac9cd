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
