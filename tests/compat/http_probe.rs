//! http prober scenarios: one in-process target, probed through both exporters.

use std::time::{Duration, UNIX_EPOCH};

use crate::runner::{ECHO_NOTE, Scenario, http_module};
use crate::support::certs::{self, Ca, DAY, Leaf, now_unix};
use crate::support::http_target::{HttpTarget, Route};

/// Organization put in every leaf subject, so `subject` labels carry CN and O.
const LEAF_ORG: &str = "lookout compat";

/// A server leaf for 127.0.0.1 (IP SAN) that also names `localhost` (DNS SAN, which is what
/// `subjectalternative` reports), issued by `ca`.
fn leaf_for_loopback(ca: &Ca) -> Leaf {
    ca.leaf(&["127.0.0.1", "localhost"])
        .organization(LEAF_ORG)
        .build()
}

/// A temp dir holding `ca`'s certificate, and the `tls_config` lines trusting it.
fn trusting(ca: &Ca) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = ca.write_to(dir.path());
    let yaml = format!("tls_config:\n  ca_file: {}", path.display());
    (dir, yaml)
}

#[tokio::test]
async fn plain_200() {
    let target = HttpTarget::new()
        .route("/", Route::ok("hello from the compat target\n"))
        .start()
        .await;
    Scenario::new("plain_200", http_module(""))
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn status_404_fails() {
    let target = HttpTarget::new()
        .route("/", Route::status(404, "nothing here\n"))
        .start()
        .await;
    Scenario::new("status_404_fails", http_module(""))
        .expect_success(false)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn valid_status_codes_accepts_404() {
    let target = HttpTarget::new()
        .route("/", Route::status(404, "nothing here\n"))
        .start()
        .await;
    Scenario::new(
        "valid_status_codes_accepts_404",
        http_module("valid_status_codes: [404]"),
    )
    .expect_success(true)
    .probe(&target.url("/"))
    .await;
}

#[tokio::test]
async fn redirect_chain_of_two_hops() {
    let target = HttpTarget::new()
        .route("/a", Route::redirect(302, "{base}/b"))
        .route("/b", Route::redirect(302, "/c"))
        .route("/c", Route::ok("landed\n"))
        .start()
        .await;
    Scenario::new("redirect_chain_of_two_hops", http_module(""))
        .expect_success(true)
        .probe(&target.url("/a"))
        .await;
}

#[tokio::test]
async fn redirect_loop_stops() {
    let target = HttpTarget::new()
        .route("/loop", Route::redirect(302, "/loop"))
        .start()
        .await;
    Scenario::new("redirect_loop_stops", http_module(""))
        .expect_success(false)
        .probe(&target.url("/loop"))
        .await;
}

#[tokio::test]
async fn follow_redirects_false_reports_the_302() {
    let target = HttpTarget::new()
        .route("/a", Route::redirect(302, "/b"))
        .route("/b", Route::ok("not reached\n"))
        .start()
        .await;
    Scenario::new(
        "follow_redirects_false_reports_the_302",
        http_module("follow_redirects: false"),
    )
    .expect_success(false)
    .probe(&target.url("/a"))
    .await;
}

#[tokio::test]
async fn follow_redirects_false_with_302_valid() {
    let target = HttpTarget::new()
        .route("/a", Route::redirect(302, "/b"))
        .route("/b", Route::ok("not reached\n"))
        .start()
        .await;
    Scenario::new(
        "follow_redirects_false_with_302_valid",
        http_module("follow_redirects: false\nvalid_status_codes: [302]"),
    )
    .expect_success(true)
    .probe(&target.url("/a"))
    .await;
}

/// The echo target describes the request in its body, so the body length compares the
/// requests both exporters sent. The User-Agent is pinned because blackbox 0.23 sends
/// `Blackbox Exporter/0.23.0` and lookout its own name (an intended difference).
#[tokio::test]
async fn post_with_body_and_headers() {
    let target = HttpTarget::new().route("/", Route::echo()).start().await;
    let module = http_module(
        r#"method: POST
body: '{"hello":"compat"}'
headers:
  User-Agent: compat-test
  Content-Type: application/json
  X-Compat: yes please
fail_if_body_not_matches_regexp:
  - '^POST / HTTP/1.1\n'
  - '(?m)^x-compat: yes please$'
  - '(?m)^content-type: application/json$'
  - '\n\n\{"hello":"compat"\}$'"#,
    );
    Scenario::new("post_with_body_and_headers", module)
        .note(ECHO_NOTE)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn basic_auth_is_sent() {
    let target = HttpTarget::new().route("/", Route::echo()).start().await;
    let module = http_module(
        r#"headers:
  User-Agent: compat-test
basic_auth:
  username: user
  password: pass
fail_if_body_not_matches_regexp:
  - '(?m)^authorization: Basic dXNlcjpwYXNz$'"#,
    );
    Scenario::new("basic_auth_is_sent", module)
        .note(ECHO_NOTE)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn gzip_body_is_decompressed() {
    let body = "compressed hello, compressed hello, compressed hello\n".repeat(20);
    let target = HttpTarget::new()
        .route("/", Route::gzip(body))
        .start()
        .await;
    let module = http_module(
        r#"compression: gzip
headers:
  Accept-Encoding: gzip
fail_if_body_not_matches_regexp:
  - 'compressed hello'"#,
    );
    Scenario::new("gzip_body_is_decompressed", module)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn body_regexp_matches() {
    let target = HttpTarget::new()
        .route("/", Route::ok("status: all good\n"))
        .start()
        .await;
    let module = http_module("fail_if_body_not_matches_regexp:\n  - 'all good'");
    Scenario::new("body_regexp_matches", module)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn fail_if_body_matches_regexp_fails() {
    let target = HttpTarget::new()
        .route("/", Route::ok("status: internal error\n"))
        .start()
        .await;
    let module = http_module("fail_if_body_matches_regexp:\n  - 'error'");
    Scenario::new("fail_if_body_matches_regexp_fails", module)
        .expect_success(false)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn fail_if_header_matches_fails() {
    let target = HttpTarget::new()
        .route("/", Route::ok("ok\n").header("X-Status", "broken"))
        .start()
        .await;
    let module = http_module("fail_if_header_matches:\n  - header: X-Status\n    regexp: broken");
    Scenario::new("fail_if_header_matches_fails", module)
        .expect_success(false)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn fail_if_header_not_matches_passes() {
    let target = HttpTarget::new()
        .route("/", Route::ok("ok\n").header("X-Status", "healthy"))
        .start()
        .await;
    let module =
        http_module("fail_if_header_not_matches:\n  - header: x-status\n    regexp: '^heal'");
    Scenario::new("fail_if_header_not_matches_passes", module)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn fail_if_header_not_matches_missing_header_fails() {
    let target = HttpTarget::new()
        .route("/", Route::ok("ok\n"))
        .start()
        .await;
    let module =
        http_module("fail_if_header_not_matches:\n  - header: X-Status\n    regexp: healthy");
    Scenario::new("fail_if_header_not_matches_missing_header_fails", module)
        .expect_success(false)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn fail_if_header_not_matches_allow_missing_passes() {
    let target = HttpTarget::new()
        .route("/", Route::ok("ok\n"))
        .start()
        .await;
    let module = http_module(
        "fail_if_header_not_matches:\n  - header: X-Status\n    regexp: healthy\n    allow_missing: true",
    );
    Scenario::new("fail_if_header_not_matches_allow_missing_passes", module)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn last_modified_header() {
    let at = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let target = HttpTarget::new()
        .route("/", Route::ok("old news\n").last_modified(at))
        .start()
        .await;
    Scenario::new("last_modified_header", http_module(""))
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn body_size_limit_exceeded_fails() {
    let target = HttpTarget::new().route("/", Route::big(4096)).start().await;
    Scenario::new(
        "body_size_limit_exceeded_fails",
        http_module("body_size_limit: 1KB"),
    )
    .expect_success(false)
    .probe(&target.url("/"))
    .await;
}

#[tokio::test]
async fn connection_refused() {
    // Bind a port and release it: nothing listens there any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    Scenario::new("connection_refused", http_module(""))
        .expect_success(false)
        .probe(&format!("http://{addr}/"))
        .await;
}

#[tokio::test]
async fn invalid_target_url() {
    Scenario::new("invalid_target_url", http_module(""))
        .expect_success(false)
        .probe("http://[::1")
        .await;
}

#[tokio::test]
async fn https_private_ca_http1() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = leaf_for_loopback(&ca);
    let target = HttpTarget::new()
        .http1_only()
        .route("/", Route::ok("secure hello\n"))
        .start_tls(&leaf)
        .await;
    let (dir, tls) = trusting(&ca);
    Scenario::new("https_private_ca_http1", http_module(&tls))
        .dir(dir)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

/// Root, intermediate and leaf expire at different times so the two expiry families are told
/// apart: the earliest peer certificate is the leaf (the root is not sent), the earliest in
/// the verified chain is the root.
#[tokio::test]
async fn https_chain_through_intermediate() {
    let now = now_unix();
    let root = Ca::with_validity(certs::TEST_CA_NAME, now - DAY, now + 20 * DAY);
    let intermediate =
        root.intermediate_with_validity("lookout compat intermediate", now - DAY, now + 60 * DAY);
    let leaf = intermediate
        .leaf(&["127.0.0.1", "localhost"])
        .organization(LEAF_ORG)
        .not_after(now + 40 * DAY)
        .build();
    assert_eq!(leaf.chain_ders.len(), 2, "server sends leaf + intermediate");
    let target = HttpTarget::new()
        .route("/", Route::ok("chained hello\n"))
        .start_tls(&leaf)
        .await;
    let (dir, tls) = trusting(&root);
    Scenario::new("https_chain_through_intermediate", http_module(&tls))
        .dir(dir)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn https_expired_leaf_fails() {
    let now = now_unix();
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = ca
        .leaf(&["127.0.0.1", "localhost"])
        .organization(LEAF_ORG)
        .not_before(now - 10 * DAY)
        .not_after(now - DAY)
        .build();
    let target = HttpTarget::new()
        .route("/", Route::ok("stale\n"))
        .start_tls(&leaf)
        .await;
    let (dir, tls) = trusting(&ca);
    Scenario::new("https_expired_leaf_fails", http_module(&tls))
        .dir(dir)
        .expect_success(false)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn https_wrong_hostname_fails() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = ca.leaf(&["wrong.example"]).organization(LEAF_ORG).build();
    let target = HttpTarget::new()
        .route("/", Route::ok("who am i\n"))
        .start_tls(&leaf)
        .await;
    let (dir, tls) = trusting(&ca);
    Scenario::new("https_wrong_hostname_fails", http_module(&tls))
        .dir(dir)
        .expect_success(false)
        .probe(&target.url("/"))
        .await;
}

/// Without verification there is no verified chain: blackbox reports Go's zero time
/// (-62135596800) as the last chain expiry.
#[tokio::test]
async fn https_self_signed_insecure_skip_verify() {
    let leaf = certs::self_signed_builder(&["127.0.0.1", "localhost"])
        .organization(LEAF_ORG)
        .build();
    let target = HttpTarget::new()
        .route("/", Route::ok("trust me\n"))
        .start_tls(&leaf)
        .await;
    Scenario::new(
        "https_self_signed_insecure_skip_verify",
        http_module("tls_config:\n  insecure_skip_verify: true"),
    )
    .expect_success(true)
    .probe(&target.url("/"))
    .await;
}

#[tokio::test]
async fn fail_if_not_ssl_on_http() {
    let target = HttpTarget::new()
        .route("/", Route::ok("plain\n"))
        .start()
        .await;
    Scenario::new(
        "fail_if_not_ssl_on_http",
        http_module("fail_if_not_ssl: true"),
    )
    .expect_success(false)
    .probe(&target.url("/"))
    .await;
}

#[tokio::test]
async fn fail_if_ssl_on_https() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = leaf_for_loopback(&ca);
    let target = HttpTarget::new()
        .route("/", Route::ok("secure\n"))
        .start_tls(&leaf)
        .await;
    let (dir, tls) = trusting(&ca);
    Scenario::new(
        "fail_if_ssl_on_https",
        http_module(&format!("fail_if_ssl: true\n{tls}")),
    )
    .dir(dir)
    .expect_success(false)
    .probe(&target.url("/"))
    .await;
}

/// The target offers h2 and http/1.1 in ALPN; both exporters must negotiate HTTP/2.
#[tokio::test]
async fn http2_over_tls() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = leaf_for_loopback(&ca);
    let target = HttpTarget::new()
        .route("/", Route::ok("h2 hello\n"))
        .start_tls(&leaf)
        .await;
    let (dir, tls) = trusting(&ca);
    Scenario::new(
        "http2_over_tls",
        http_module(&format!("valid_http_versions: [HTTP/2.0]\n{tls}")),
    )
    .dir(dir)
    .expect_success(true)
    .probe(&target.url("/"))
    .await;
}

/// The target accepts the request and sends nothing for 5 s; the scrape timeout of 2 s
/// (1.5 s after the offset) ends the probe first.
#[tokio::test]
async fn stalled_headers_time_out() {
    let target = HttpTarget::new()
        .route("/", Route::stall_headers(Duration::from_secs(5)))
        .start()
        .await;
    Scenario::new("stalled_headers_time_out", http_module(""))
        .scrape_timeout(Some("2"))
        .expect_success(false)
        .probe(&target.url("/"))
        .await;
}
