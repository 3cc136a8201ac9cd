use std::time::{Duration, UNIX_EPOCH};

use crate::support::http_target::{HttpTarget, Route};
use crate::support::lookout::Lookout;

const MODULES: &str = r#"
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
  http_404:
    prober: http
    http:
      valid_status_codes: [404]
  http_4xx:
    prober: http
    http:
      valid_status_codes: ["4xx"]
  no_follow:
    prober: http
    http:
      follow_redirects: false
  post:
    prober: http
    http:
      method: POST
      body: '{"hello":"world"}'
      headers:
        Content-Type: application/json
        X-Custom: yes
  host_override:
    prober: http
    http:
      headers:
        Host: example.test
  basic:
    prober: http
    http:
      basic_auth:
        username: alice
        password: s3cret
  bearer:
    prober: http
    http:
      bearer_token: tok123
  gzip:
    prober: http
    http:
      compression: gzip
      headers:
        Accept-Encoding: gzip
  deflate:
    prober: http
    http:
      compression: deflate
      headers:
        Accept-Encoding: deflate
  body_ok:
    prober: http
    http:
      fail_if_body_not_matches_regexp: ["status: (up|ok)"]
  body_bad:
    prober: http
    http:
      fail_if_body_matches_regexp: ["error"]
  header_must:
    prober: http
    http:
      fail_if_header_not_matches:
        - header: X-Version
          regexp: "^v2"
  header_must_allow_missing:
    prober: http
    http:
      fail_if_header_not_matches:
        - header: X-Version
          regexp: "^v2"
          allow_missing: true
  header_forbid:
    prober: http
    http:
      fail_if_header_matches:
        - header: Server
          regexp: "(?i)apache"
  limit:
    prober: http
    http:
      body_size_limit: 1KB
  versions:
    prober: http
    http:
      valid_http_versions: ["HTTP/2.0"]
  not_ssl:
    prober: http
    http:
      fail_if_not_ssl: true
"#;

#[tokio::test]
async fn ok_200_reports_blackbox_families() {
    let target = HttpTarget::new()
        .route("/", Route::ok("hello"))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("http_2xx", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_http_status_code"), 200.0);
    assert_eq!(s.value("probe_http_content_length"), 5.0);
    assert_eq!(s.value("probe_http_uncompressed_body_length"), 5.0);
    assert_eq!(s.value("probe_http_version"), 1.1);
    assert_eq!(s.value("probe_http_ssl"), 0.0);
    assert_eq!(s.value("probe_http_redirects"), 0.0);
    assert_eq!(s.value("probe_ip_protocol"), 4.0);
    assert_eq!(s.value("probe_ip_addr_hash"), 3_668_918_509.0);
    assert_eq!(s.value("probe_failed_due_to_regex"), 0.0);
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        assert!(
            s.get_with("probe_http_duration_seconds", &[("phase", phase)])
                .is_some(),
            "{phase}: {}",
            s.text
        );
    }
    // Plain HTTP: no TLS families, no Last-Modified.
    for absent in [
        "probe_ssl_earliest_cert_expiry",
        "probe_tls_version_info",
        "probe_http_last_modified_timestamp_seconds",
    ] {
        assert!(
            !s.types.contains_key(absent),
            "{absent} present:\n{}",
            s.text
        );
    }
    // What the target saw: blackbox's request shape.
    let r = target.last_request("/").unwrap();
    assert_eq!(r.method, "GET");
    assert!(r.header("user-agent").unwrap().starts_with("lookout/"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.host(), Some(target.host_port().as_str()));
}

#[tokio::test]
async fn target_without_scheme_defaults_to_http() {
    let target = HttpTarget::new().route("/x", Route::ok("x")).start().await;
    let lk = Lookout::start(MODULES).await;
    let s = lk
        .probe("http_2xx", &format!("{}/x", target.host_port()))
        .await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
}

#[tokio::test]
async fn status_codes_follow_valid_status_codes() {
    let target = HttpTarget::new()
        .route("/missing", Route::status(404, "nope"))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("http_2xx", &target.url("/missing")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert_eq!(s.value("probe_http_status_code"), 404.0);
    // blackbox still reads the body of a rejected status.
    assert_eq!(s.value("probe_http_uncompressed_body_length"), 4.0);
    assert_eq!(
        lk.probe("http_404", &target.url("/missing"))
            .await
            .value("probe_success"),
        1.0
    );
    assert_eq!(
        lk.probe("http_4xx", &target.url("/missing"))
            .await
            .value("probe_success"),
        1.0
    );
}

#[tokio::test]
async fn redirects_are_followed_and_counted() {
    let target = HttpTarget::new()
        .route("/a", Route::redirect(302, "/b"))
        .route("/b", Route::redirect(301, "{base}/c"))
        .route("/c", Route::ok("done"))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("http_2xx", &target.url("/a")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_http_redirects"), 2.0);
    assert_eq!(s.value("probe_http_uncompressed_body_length"), 4.0);
    assert_eq!(target.hits("/c"), 1);
}

#[tokio::test]
async fn follow_redirects_false_stops_at_the_first() {
    let target = HttpTarget::new()
        .route("/a", Route::redirect(302, "/b"))
        .route("/b", Route::ok("b"))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("no_follow", &target.url("/a")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert_eq!(s.value("probe_http_status_code"), 302.0);
    // blackbox reports 1: the redirect it declined to follow.
    assert_eq!(s.value("probe_http_redirects"), 1.0);
    assert_eq!(target.hits("/b"), 0);
}

#[tokio::test]
async fn redirect_loop_stops_after_ten() {
    let target = HttpTarget::new()
        .route("/loop", Route::redirect(302, "/loop"))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("http_2xx", &target.url("/loop")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert_eq!(s.value("probe_http_redirects"), 11.0);
    assert_eq!(target.hits("/loop"), 11);
}

#[tokio::test]
async fn post_sends_body_and_headers() {
    let target = HttpTarget::new()
        .route("/echo", Route::echo())
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("post", &target.url("/echo")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    let r = target.last_request("/echo").unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(&r.body[..], br#"{"hello":"world"}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-custom"), Some("yes"));
}

#[tokio::test]
async fn host_header_and_hostname_parameter() {
    let target = HttpTarget::new().route("/", Route::echo()).start().await;
    let lk = Lookout::start(MODULES).await;
    lk.probe("host_override", &target.url("/")).await;
    assert_eq!(
        target.last_request("/").unwrap().host(),
        Some("example.test")
    );
    let a = lk
        .get(&format!(
            "/probe?module=http_2xx&target={}&hostname=other.test",
            crate::support::lookout::q(&target.url("/"))
        ))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(target.last_request("/").unwrap().host(), Some("other.test"));
    // A hostname that conflicts with the module's Host header is refused, as by blackbox.
    let a = lk
        .get(&format!(
            "/probe?module=host_override&target={}&hostname=other.test",
            crate::support::lookout::q(&target.url("/"))
        ))
        .await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("host header defined both"), "{}", a.body);
}

#[tokio::test]
async fn basic_auth_and_bearer_token() {
    let target = HttpTarget::new().route("/", Route::echo()).start().await;
    let lk = Lookout::start(MODULES).await;
    lk.probe("basic", &target.url("/")).await;
    assert_eq!(
        target.last_request("/").unwrap().header("authorization"),
        Some("Basic YWxpY2U6czNjcmV0")
    );
    lk.probe("bearer", &target.url("/")).await;
    assert_eq!(
        target.last_request("/").unwrap().header("authorization"),
        Some("Bearer tok123")
    );
}

#[tokio::test]
async fn password_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
    let target = HttpTarget::new().route("/", Route::echo()).start().await;
    let lk = Lookout::start_in(
        dir,
        "modules:\n  m:\n    prober: http\n    http:\n      basic_auth:\n        username: bob\n        password_file: pw\n",
    )
    .await;
    lk.probe("m", &target.url("/")).await;
    // base64("bob:from-file")
    assert_eq!(
        target.last_request("/").unwrap().header("authorization"),
        Some("Basic Ym9iOmZyb20tZmlsZQ==")
    );
}

#[tokio::test]
async fn gzip_and_raw_deflate_bodies_are_decompressed() {
    let body = "x".repeat(5000);
    let target = HttpTarget::new()
        .route("/gz", Route::gzip(&body))
        .route("/df", Route::deflate_raw(&body))
        .route("/zlib", Route::deflate_zlib(&body))
        .route("/plain", Route::ok(body.clone()))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("gzip", &target.url("/gz")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_http_uncompressed_body_length"), 5000.0);
    assert!(s.value("probe_http_content_length") < 5000.0);
    assert_eq!(
        target
            .last_request("/gz")
            .unwrap()
            .header("accept-encoding"),
        Some("gzip")
    );
    assert_eq!(
        lk.probe("deflate", &target.url("/df"))
            .await
            .value("probe_success"),
        1.0
    );
    // As blackbox: `deflate` means raw deflate; a zlib-wrapped body fails.
    assert_eq!(
        lk.probe("deflate", &target.url("/zlib"))
            .await
            .value("probe_success"),
        0.0
    );
    // A plain body where gzip is expected fails.
    assert_eq!(
        lk.probe("gzip", &target.url("/plain"))
            .await
            .value("probe_success"),
        0.0
    );
}

#[tokio::test]
async fn body_regexes() {
    let target = HttpTarget::new()
        .route("/up", Route::ok("status: up"))
        .route("/down", Route::ok("status: down, error: db"))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("body_ok", &target.url("/up")).await;
    assert_eq!(
        (
            s.value("probe_success"),
            s.value("probe_failed_due_to_regex")
        ),
        (1.0, 0.0)
    );
    let s = lk.probe("body_ok", &target.url("/down")).await;
    assert_eq!(
        (
            s.value("probe_success"),
            s.value("probe_failed_due_to_regex")
        ),
        (0.0, 1.0)
    );
    let s = lk.probe("body_bad", &target.url("/up")).await;
    assert_eq!(
        (
            s.value("probe_success"),
            s.value("probe_failed_due_to_regex")
        ),
        (1.0, 0.0)
    );
    let s = lk.probe("body_bad", &target.url("/down")).await;
    assert_eq!(
        (
            s.value("probe_success"),
            s.value("probe_failed_due_to_regex")
        ),
        (0.0, 1.0)
    );
}

#[tokio::test]
async fn header_regexes() {
    let target = HttpTarget::new()
        .route(
            "/v2",
            Route::ok("x")
                .header("X-Version", "v1")
                .header("X-Version", "v2.3"),
        )
        .route("/v1", Route::ok("x").header("X-Version", "v1"))
        .route("/none", Route::ok("x"))
        .route("/apache", Route::ok("x").header("Server", "Apache/2.4"))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let ok = |s: crate::support::samples::Samples| {
        (
            s.value("probe_success"),
            s.value("probe_failed_due_to_regex"),
        )
    };
    // Any value of a multi-valued header may match.
    assert_eq!(
        ok(lk.probe("header_must", &target.url("/v2")).await),
        (1.0, 0.0)
    );
    assert_eq!(
        ok(lk.probe("header_must", &target.url("/v1")).await),
        (0.0, 1.0)
    );
    assert_eq!(
        ok(lk.probe("header_must", &target.url("/none")).await),
        (0.0, 1.0)
    );
    assert_eq!(
        ok(lk
            .probe("header_must_allow_missing", &target.url("/none"))
            .await),
        (1.0, 0.0)
    );
    assert_eq!(
        ok(lk.probe("header_forbid", &target.url("/apache")).await),
        (0.0, 1.0)
    );
    // As in blackbox, a missing header fails fail_if_header_matches too unless allow_missing.
    assert_eq!(
        ok(lk.probe("header_forbid", &target.url("/none")).await),
        (0.0, 1.0)
    );
}

#[tokio::test]
async fn body_size_limit_fails_larger_bodies() {
    let target = HttpTarget::new()
        .route("/small", Route::ok("x".repeat(1000)))
        .route("/big", Route::big(4096))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    assert_eq!(
        lk.probe("limit", &target.url("/small"))
            .await
            .value("probe_success"),
        1.0
    );
    let s = lk.probe("limit", &target.url("/big")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    // blackbox counts the bytes it read up to the limit.
    assert_eq!(s.value("probe_http_uncompressed_body_length"), 1024.0);
}

#[tokio::test]
async fn last_modified_is_reported() {
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let target = HttpTarget::new()
        .route("/", Route::ok("x").last_modified(at))
        .start()
        .await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("http_2xx", &target.url("/")).await;
    assert_eq!(
        s.value("probe_http_last_modified_timestamp_seconds"),
        1_700_000_000.0
    );
}

#[tokio::test]
async fn valid_http_versions_and_fail_if_not_ssl() {
    let target = HttpTarget::new().route("/", Route::ok("x")).start().await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("versions", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert_eq!(s.value("probe_http_version"), 1.1);
    assert_eq!(
        lk.probe("not_ssl", &target.url("/"))
            .await
            .value("probe_success"),
        0.0
    );
}

#[tokio::test]
async fn connection_refused_fails_with_zeroed_families() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let lk = Lookout::start(MODULES).await;
    let s = lk
        .probe("http_2xx", &format!("http://127.0.0.1:{port}/"))
        .await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert_eq!(s.value("probe_http_status_code"), 0.0);
    assert_eq!(s.value("probe_http_content_length"), 0.0);
    assert_eq!(s.value("probe_ip_protocol"), 4.0);
}

#[tokio::test]
async fn unparseable_target_is_a_failed_probe_not_an_error() {
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("http_2xx", "http://[::1").await;
    assert_eq!(s.value("probe_success"), 0.0);
    // blackbox returns before resolving: no resolution families, no phases.
    assert!(!s.types.contains_key("probe_ip_protocol"), "{}", s.text);
    assert!(
        !s.types.contains_key("probe_http_duration_seconds"),
        "{}",
        s.text
    );
    assert_eq!(s.value("probe_http_status_code"), 0.0);
}

#[tokio::test]
async fn debug_output_has_logs_metrics_and_config() {
    let target = HttpTarget::new()
        .route("/", Route::status(500, "boom"))
        .start()
        .await;
    let lk = Lookout::start(
        "modules:\n  m:\n    prober: http\n    http:\n      basic_auth:\n        username: u\n        password: topsecret\n",
    )
    .await;
    let text = lk.debug("m", &target.url("/")).await;
    assert!(text.starts_with("Logs for the probe:\n"), "{text}");
    assert!(text.contains("Probe failed"), "{text}");
    assert!(
        text.contains("invalid HTTP response status code 500"),
        "{text}"
    );
    assert!(
        text.contains("Metrics that would have been returned:\nprobe_")
            || text.contains("# HELP probe_"),
        "{text}"
    );
    assert!(
        text.contains("Module configuration:\nprober: http"),
        "{text}"
    );
    assert!(
        !text.contains("topsecret") && text.contains("<secret>"),
        "{text}"
    );
}

/// `oauth2` client credentials: the token request as Go's oauth2 sends it (POST, form with the
/// grant, scopes and endpoint params, the client id and secret as basic auth), the token sent
/// as `Authorization` on the probe's requests and cached between probes; a failing token
/// endpoint fails the probe saying so; `probe_access` judges the token endpoint too.
#[tokio::test]
async fn oauth2_client_credentials_fetch_cache_and_send_the_token() {
    use crate::support::lookout::q;
    let tokens = HttpTarget::new()
        .route(
            "/token",
            Route::ok(r#"{"access_token":"tok-1","token_type":"bearer","expires_in":3600}"#)
                .header("Content-Type", "application/json"),
        )
        .route("/broken", Route::status(500, "no"))
        .start()
        .await;
    let app = HttpTarget::new().route("/", Route::echo()).start().await;
    let module = |name: &str, path: &str| {
        format!(
            "  {name}:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n      fail_if_body_not_matches_regexp: [\"authorization: Bearer tok-1\"]\n      oauth2:\n        client_id: my id\n        client_secret: s3cret\n        scopes: [read, write]\n        token_url: {}\n        endpoint_params: {{audience: probe}}\n",
            tokens.url(path)
        )
    };
    let lk = Lookout::start(&format!(
        "modules:\n{}{}",
        module("oauth", "/token"),
        module("broken", "/broken")
    ))
    .await;
    for _ in 0..2 {
        let s = lk.probe("oauth", &app.url("/")).await;
        assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    }
    let asked = tokens.requests("/token");
    assert_eq!(asked.len(), 1, "the token is cached between probes");
    let t = &asked[0];
    assert_eq!(t.method, "POST");
    assert_eq!(
        String::from_utf8_lossy(&t.body),
        "grant_type=client_credentials&scope=read+write&audience=probe"
    );
    assert_eq!(
        t.header("authorization"),
        Some("Basic bXkraWQ6czNjcmV0"),
        "client id and secret, query-escaped, as basic auth"
    );
    assert_eq!(
        t.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );

    let s = lk.probe("broken", &app.url("/")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    let d = lk.debug("broken", &app.url("/")).await;
    assert!(d.contains("answered 500 Internal Server Error"), "{d}");

    // probe_access judges the token endpoint: only the app's port is allowed.
    let guarded = Lookout::start(&format!(
        "modules:\n{}probe_access:\n  default: deny\n  allow: [\"127.0.0.1/32:{}\"]\n",
        module("oauth", "/token"),
        app.addr.port()
    ))
    .await;
    let a = guarded
        .get(&format!("/probe?module=oauth&target={}", q(&app.url("/"))))
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(
        a.body
            .contains(&format!("127.0.0.1:{}", tokens.addr.port())),
        "{}",
        a.body
    );
    assert_eq!(
        tokens.requests("/token").len(),
        1,
        "nothing reached the refused endpoint"
    );
}

/// blackbox's `fail_if_body_json_matches_cel` / `fail_if_body_json_not_matches_cel`: the JSON
/// body as `body`, `probe_failed_due_to_cel` 0 or 1, a body that is not JSON failing, and a
/// family only for modules with an expression.
#[tokio::test]
async fn cel_expressions_judge_the_json_body() {
    let target = HttpTarget::new()
        .route(
            "/health",
            Route::ok(
                r#"{"status":"ok","checks":[{"name":"db","up":true},{"name":"mq","up":true}]}"#,
            ),
        )
        .route(
            "/degraded",
            Route::ok(r#"{"status":"degraded","checks":[{"name":"db","up":false}]}"#),
        )
        .route("/text", Route::ok("all good"))
        .start()
        .await;
    let lk = Lookout::start(
        "modules:
  healthy:
    prober: http
    http:
      preferred_ip_protocol: ip4
      fail_if_body_json_not_matches_cel: \"body.status == 'ok' && body.checks.all(c, c.up)\"
  not_degraded:
    prober: http
    http:
      preferred_ip_protocol: ip4
      fail_if_body_json_matches_cel: \"body.status == 'degraded'\"
  plain:
    prober: http
    http:
      preferred_ip_protocol: ip4
",
    )
    .await;
    for (module, path, success, cel) in [
        ("healthy", "/health", 1.0, 0.0),
        ("healthy", "/degraded", 0.0, 1.0),
        ("healthy", "/text", 0.0, 1.0),
        ("not_degraded", "/health", 1.0, 0.0),
        ("not_degraded", "/degraded", 0.0, 1.0),
    ] {
        let s = lk.probe(module, &target.url(path)).await;
        assert_eq!(
            s.value("probe_success"),
            success,
            "{module} {path}: {}",
            s.text
        );
        assert_eq!(
            s.value("probe_failed_due_to_cel"),
            cel,
            "{module} {path}: {}",
            s.text
        );
    }
    let d = lk.debug("healthy", &target.url("/text")).await;
    assert!(d.contains("the body is not JSON"), "{d}");
    let s = lk.probe("plain", &target.url("/health")).await;
    assert!(s.series("probe_failed_due_to_cel").is_empty(), "{}", s.text);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "modules:\n  m:\n    prober: http\n    http:\n      fail_if_body_json_matches_cel: \"body.(\"\n",
    )
    .unwrap();
    let e = lookout::config::load(&file).unwrap_err().to_string();
    assert!(
        e.contains("field modules.m.http.fail_if_body_json_matches_cel")
            && e.contains("Could not compile CEL program"),
        "{e}"
    );
}
