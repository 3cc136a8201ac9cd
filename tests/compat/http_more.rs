//! More http prober scenarios, on paths where a re-implementation easily drifts: unknown
//! content lengths, decompression edge cases, HTTP/1.0, TLS 1.2, cookies across redirects,
//! the `hostname` parameter.

use std::time::Duration;

use crate::runner::{ECHO_NOTE, Scenario, http_module};
use crate::support::certs::{self, Ca};
use crate::support::http_target::{HttpTarget, Route, raw_http_listener};

/// A temp dir holding `ca`'s certificate, and the `tls_config` lines trusting it.
fn trusting(ca: &Ca) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = ca.write_to(dir.path());
    (dir, format!("tls_config:\n  ca_file: {}", path.display()))
}

/// Chunked transfer encoding: no Content-Length, so Go reports -1.
#[tokio::test]
async fn chunked_body_has_unknown_content_length() {
    let target = HttpTarget::new()
        .route("/", Route::stall_body(Duration::from_millis(10)))
        .start()
        .await;
    Scenario::new("chunked_body_has_unknown_content_length", http_module(""))
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

/// HTTP/1.1 without Content-Length, delimited by the server closing the connection.
#[tokio::test]
async fn close_delimited_body() {
    let target =
        raw_http_listener("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello, close-delimited");
    Scenario::new("close_delimited_body", http_module(""))
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn http10_response() {
    let target = raw_http_listener("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
    Scenario::new("http10_response", http_module(""))
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn truncated_body_fails() {
    let target = HttpTarget::new()
        .http1_only()
        .route("/", Route::close_mid_body(100, 10))
        .start()
        .await;
    Scenario::new("truncated_body_fails", http_module(""))
        .expect_success(false)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn head_request_reports_declared_length() {
    let target = HttpTarget::new()
        .route("/", Route::ok("12345"))
        .start()
        .await;
    Scenario::new(
        "head_request_reports_declared_length",
        http_module("method: HEAD"),
    )
    .expect_success(true)
    .probe(&target.url("/"))
    .await;
}

/// blackbox 0.23 only reads raw DEFLATE; a zlib-wrapped body fails the probe.
#[tokio::test]
async fn deflate_zlib_wrapped_fails() {
    let target = HttpTarget::new()
        .route("/", Route::deflate_zlib("zlib wrapped body\n".repeat(10)))
        .start()
        .await;
    let module = http_module("compression: deflate\nheaders:\n  Accept-Encoding: deflate");
    Scenario::new("deflate_zlib_wrapped_fails", module)
        .expect_success(false)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn deflate_raw_passes() {
    let target = HttpTarget::new()
        .route("/", Route::deflate_raw("raw deflate body\n".repeat(10)))
        .start()
        .await;
    let module = http_module(
        "compression: deflate\nheaders:\n  Accept-Encoding: deflate\nfail_if_body_not_matches_regexp:\n  - 'raw deflate body'",
    );
    Scenario::new("deflate_raw_passes", module)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

/// A body that is not gzip at all, with `compression: gzip`.
#[tokio::test]
async fn gzip_expected_but_plain_body_fails() {
    let target = HttpTarget::new()
        .route("/", Route::ok("plain, not gzip\n"))
        .start()
        .await;
    let module = http_module("compression: gzip\nheaders:\n  Accept-Encoding: gzip");
    Scenario::new("gzip_expected_but_plain_body_fails", module)
        .expect_success(false)
        .probe(&target.url("/"))
        .await;
}

/// Body regexps are not evaluated when the status code already failed the probe.
#[tokio::test]
async fn status_500_skips_body_regexp() {
    let target = HttpTarget::new()
        .route("/", Route::status(500, "an error page\n"))
        .start()
        .await;
    let module = http_module("fail_if_body_matches_regexp:\n  - 'error'");
    Scenario::new("status_500_skips_body_regexp", module)
        .expect_success(false)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn valid_http_versions_mismatch_fails() {
    let target = HttpTarget::new()
        .route("/", Route::ok("h1\n"))
        .start()
        .await;
    Scenario::new(
        "valid_http_versions_mismatch_fails",
        http_module("valid_http_versions: [HTTP/2.0]"),
    )
    .expect_success(false)
    .probe(&target.url("/"))
    .await;
}

/// A target without a scheme gets `http://` prepended.
#[tokio::test]
async fn target_without_scheme() {
    let target = HttpTarget::new()
        .route("/", Route::ok("schemeless\n"))
        .start()
        .await;
    Scenario::new("target_without_scheme", http_module(""))
        .expect_success(true)
        .probe(&target.host_port())
        .await;
}

/// No scrape-timeout header: 120 s, capped by the module's 5 s.
#[tokio::test]
async fn no_scrape_timeout_header() {
    let target = HttpTarget::new()
        .route("/", Route::ok("hello\n"))
        .start()
        .await;
    Scenario::new("no_scrape_timeout_header", http_module(""))
        .scrape_timeout(None)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

#[tokio::test]
async fn tls12_only_server() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = ca
        .leaf(&["127.0.0.1", "localhost"])
        .organization("lookout compat")
        .build();
    let target = HttpTarget::new()
        .tls_versions(&[&rustls::version::TLS12])
        .route("/", Route::ok("tls 1.2\n"))
        .start_tls(&leaf)
        .await;
    let (dir, tls) = trusting(&ca);
    Scenario::new("tls12_only_server", http_module(&tls))
        .dir(dir)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

/// The final hop is HTTPS: `probe_http_ssl` and the TLS families describe it.
#[tokio::test]
async fn redirect_from_http_to_https() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = ca
        .leaf(&["127.0.0.1", "localhost"])
        .organization("lookout compat")
        .build();
    let secure = HttpTarget::new()
        .route("/", Route::ok("secure landing\n"))
        .start_tls(&leaf)
        .await;
    let plain = HttpTarget::new()
        .route("/go", Route::redirect(301, &secure.url("/")))
        .start()
        .await;
    let (dir, tls) = trusting(&ca);
    Scenario::new("redirect_from_http_to_https", http_module(&tls))
        .dir(dir)
        .expect_success(true)
        .probe(&plain.url("/go"))
        .await;
}

/// `hostname=` sets the Host header and the TLS server name: a leaf valid only for
/// `localhost` verifies although the target is an IP address.
#[tokio::test]
async fn hostname_parameter_sets_tls_server_name() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = ca
        .leaf(&["localhost"])
        .organization("lookout compat")
        .build();
    let target = HttpTarget::new()
        .route("/", Route::ok("named\n"))
        .start_tls(&leaf)
        .await;
    let (dir, tls) = trusting(&ca);
    Scenario::new("hostname_parameter_sets_tls_server_name", http_module(&tls))
        .dir(dir)
        .query("hostname", "localhost")
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

/// A cookie set on a redirect is sent on the next hop (blackbox uses a cookie jar).
#[tokio::test]
async fn cookie_set_on_redirect_is_sent() {
    let target = HttpTarget::new()
        .route(
            "/login",
            Route::redirect(302, "/echo").header("Set-Cookie", "session=abc123; Path=/"),
        )
        .route("/echo", Route::echo())
        .start()
        .await;
    let module = http_module(
        "headers:\n  User-Agent: compat-test\nfail_if_body_not_matches_regexp:\n  - '(?m)^cookie: session=abc123$'",
    );
    Scenario::new("cookie_set_on_redirect_is_sent", module)
        .note(ECHO_NOTE)
        .expect_success(true)
        .probe(&target.url("/login"))
        .await;
}

/// A Host header in the module replaces the target's host in the request.
#[tokio::test]
async fn host_header_override() {
    let target = HttpTarget::new().route("/", Route::echo()).start().await;
    let module = http_module(
        "headers:\n  Host: example.test\n  User-Agent: compat-test\nfail_if_body_not_matches_regexp:\n  - '(?m)^host: example.test$'",
    );
    Scenario::new("host_header_override", module)
        .note(ECHO_NOTE)
        .expect_success(true)
        .probe(&target.url("/"))
        .await;
}

/// A cookie scoped to another path is not sent on the redirected request.
#[tokio::test]
async fn cookie_path_is_respected_across_redirect() {
    let target = HttpTarget::new()
        .route(
            "/login",
            Route::redirect(302, "/echo").header("Set-Cookie", "session=abc123; Path=/private"),
        )
        .route("/echo", Route::echo())
        .start()
        .await;
    let module = http_module(
        "headers:\n  User-Agent: compat-test\nfail_if_body_matches_regexp:\n  - '(?m)^cookie:'",
    );
    Scenario::new("cookie_path_is_respected_across_redirect", module)
        .note(ECHO_NOTE)
        .expect_success(true)
        .probe(&target.url("/login"))
        .await;
}

/// 302 turns a POST into a GET without body (Go's client, as blackbox uses it).
#[tokio::test]
async fn post_redirected_by_302_becomes_get() {
    let target = HttpTarget::new()
        .route("/a", Route::redirect(302, "/b"))
        .route("/b", Route::echo())
        .start()
        .await;
    let module = http_module(
        "method: POST\nbody: posted\nheaders:\n  User-Agent: compat-test\nfail_if_body_not_matches_regexp:\n  - '^GET /b HTTP/1.1\\n'",
    );
    Scenario::new("post_redirected_by_302_becomes_get", module)
        .note(ECHO_NOTE)
        .expect_success(true)
        .probe(&target.url("/a"))
        .await;
}

/// 307 keeps the method and the body.
#[tokio::test]
async fn post_redirected_by_307_keeps_method_and_body() {
    let target = HttpTarget::new()
        .route("/a", Route::redirect(307, "/b"))
        .route("/b", Route::echo())
        .start()
        .await;
    let module = http_module(
        "method: POST\nbody: posted\nheaders:\n  User-Agent: compat-test\nfail_if_body_not_matches_regexp:\n  - '^POST /b HTTP/1.1\\n'\n  - '\\n\\nposted$'",
    );
    Scenario::new("post_redirected_by_307_keeps_method_and_body", module)
        .note(ECHO_NOTE)
        .expect_success(true)
        .probe(&target.url("/a"))
        .await;
}
