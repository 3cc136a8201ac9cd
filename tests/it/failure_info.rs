//! `probe_failure_info{reason}` (issue 17): one enumerable reason per failed probe, on `/probe`
//! with `--probe.failure-info` and always for scheduled targets; absent on success, and absent
//! from `/probe` without the flag (blackbox's answer unchanged).

use std::time::Duration;

use crate::support::certs::{self, Ca, now_unix};
use crate::support::dns_target;
use crate::support::http_target::{HttpTarget, Route};
use crate::support::lookout::Lookout;
use crate::support::samples::Samples;

const DAY: i64 = 86_400;

fn modules(ca_file: &str) -> String {
    format!(
        "modules:
  tcp: {{prober: tcp, timeout: 2s}}
  http: {{prober: http, timeout: 2s}}
  http_fast: {{prober: http, timeout: 500ms}}
  http_regex: {{prober: http, timeout: 2s, http: {{fail_if_body_not_matches_regexp: ['^healthy']}}}}
  http_small: {{prober: http, timeout: 2s, http: {{body_size_limit: 16}}}}
  http_ssl: {{prober: http, timeout: 2s, http: {{fail_if_not_ssl: true}}}}
  https: {{prober: http, timeout: 2s, http: {{tls_config: {{ca_file: {ca_file}}}}}}}
  dns_nx: {{prober: dns, timeout: 2s, dns: {{query_name: missing.example.org, query_type: A, preferred_ip_protocol: ip4}}}}
  dns_rr: {{prober: dns, timeout: 2s, dns: {{query_name: example.org, query_type: A, preferred_ip_protocol: ip4, validate_answer_rrs: {{fail_if_none_matches_regexp: ['nothing-like-this']}}}}}}
"
    )
}

/// The reasons on a `/probe` answer.
fn reasons(s: &Samples) -> Vec<String> {
    s.series("probe_failure_info")
        .iter()
        .map(|x| {
            assert_eq!(x.value, 1.0, "{}", s.text);
            x.labels["reason"].clone()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_names_its_reason() {
    let ca = Ca::new("lookout test CA");
    let expired = ca
        .leaf(&["127.0.0.1"])
        .not_before(now_unix() - 10 * DAY)
        .not_after(now_unix() - DAY)
        .build();
    let wrong_host = ca.leaf(&["other.example"]).build();
    let untrusted = certs::self_signed(&["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let lk = Lookout::start_with_flags(
        dir,
        &modules(ca_file.to_str().unwrap()),
        &["--probe.failure-info"],
    )
    .await;
    let web = HttpTarget::new()
        .route("/ok", Route::ok("healthy and more than sixteen bytes"))
        .route("/missing", Route::status(404, "no"))
        .route("/sick", Route::ok("sick"))
        .route("/slow", Route::ok("late").delay(Duration::from_secs(5)))
        .start()
        .await;
    // A port nothing listens on: bind one, note it, close it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dns = dns_target::start(None).await;
    let mut cases: Vec<(&str, String, &str)> = vec![
        ("tcp", closed.to_string(), "connect_refused"),
        ("http", web.url("/missing"), "status_code"),
        ("http_regex", web.url("/sick"), "regex"),
        ("http_small", web.url("/ok"), "body_too_large"),
        ("http_ssl", web.url("/ok"), "ssl"),
        ("http_fast", web.url("/slow"), "timeout"),
        ("dns_nx", dns.udp.to_string(), "dns_rcode"),
        ("dns_rr", dns.udp.to_string(), "dns_validation"),
        ("http", "http://[::1".into(), "invalid_target"),
    ];
    let mut tls_targets = Vec::new();
    for (leaf, reason) in [
        (&expired, "certificate_expired"),
        (&wrong_host, "certificate_wrong_host"),
        (&untrusted, "certificate_untrusted"),
    ] {
        let t = HttpTarget::new()
            .route("/", Route::ok("ok"))
            .start_tls(leaf)
            .await;
        cases.push(("https", t.url("/"), reason));
        tls_targets.push(t);
    }
    for (module, target, reason) in &cases {
        let s = lk.probe(module, target).await;
        assert_eq!(
            s.value("probe_success"),
            0.0,
            "{module} {target}: {}",
            s.text
        );
        assert_eq!(reasons(&s), [*reason], "{module} {target}: {}", s.text);
    }
    // A success has none.
    let s = lk.probe("http", &web.url("/ok")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert!(reasons(&s).is_empty(), "{}", s.text);
}

#[tokio::test]
async fn without_the_flag_probe_answers_as_blackbox_does() {
    let lk = Lookout::start("modules:\n  tcp: {prober: tcp, timeout: 1s}\n").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = lk.probe("tcp", &closed.to_string()).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert!(!s.types.contains_key("probe_failure_info"), "{}", s.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_targets_always_carry_it() {
    let up = HttpTarget::new().route("/", Route::ok("ok")).start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let lk = Lookout::start(&format!(
        "modules:\n  tcp: {{prober: tcp, timeout: 1s}}\n  http: {{prober: http, timeout: 1s}}\n\
         targets:\n  - {{name: gone, module: tcp, target: '{closed}', interval: 200ms}}\n  \
         - {{name: fine, module: http, target: '{}', interval: 200ms}}\n",
        up.url("/")
    ))
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = Samples::parse(&lk.get("/metrics").await.body);
        let of = |target: &str| -> Vec<(String, f64)> {
            m.series("probe_failure_info")
                .iter()
                .filter(|s| s.labels.get("target").map(String::as_str) == Some(target))
                .map(|s| (s.labels["reason"].clone(), s.value))
                .collect()
        };
        let fine_probed = m
            .series("probe_success")
            .iter()
            .any(|s| s.labels.get("target").map(String::as_str) == Some("fine"));
        if !of("gone").is_empty() && fine_probed {
            assert_eq!(of("gone"), [("connect_refused".to_owned(), 1.0)]);
            assert!(of("fine").is_empty(), "{}", m.text);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", m.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
