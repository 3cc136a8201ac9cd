use crate::support::certs::{self, Ca, DAY, now_unix};
use crate::support::http_target::{HttpTarget, Route};
use crate::support::lookout::Lookout;

/// Go's zero time, blackbox's last-chain expiry when no chain was verified.
const GO_ZERO_TIME: f64 = -62_135_596_800.0;

fn module(ca_file: &std::path::Path, extra: &str) -> String {
    format!(
        "modules:\n  tls:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n      tls_config:\n        ca_file: {}\n{extra}",
        ca_file.display()
    )
}

#[tokio::test]
async fn valid_chain_reports_exact_expiries_and_leaf_info() {
    let ca = Ca::new("lookout test CA");
    let not_after = now_unix() + 20 * DAY;
    let leaf = ca
        .leaf(&["localhost", "127.0.0.1"])
        .organization("lookout")
        .not_after(not_after)
        .build();
    let target = HttpTarget::new()
        .route("/", Route::ok("ok"))
        .http1_only()
        .start_tls(&leaf)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let lk = Lookout::start_in(dir, &module(&ca_file, "")).await;
    let s = lk.probe("tls", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_http_ssl"), 1.0);
    assert_eq!(s.value("probe_ssl_earliest_cert_expiry"), not_after as f64);
    // The verified chain is leaf + root; the leaf expires first.
    assert_eq!(
        s.value("probe_ssl_last_chain_expiry_timestamp_seconds"),
        not_after as f64
    );
    assert_eq!(
        s.series("probe_tls_version_info")[0].labels["version"],
        "TLS 1.3"
    );
    let info = s.series("probe_ssl_last_chain_info");
    assert_eq!(info.len(), 1, "{}", s.text);
    let l = &info[0].labels;
    assert_eq!(l["subject"], "CN=localhost,O=lookout");
    assert_eq!(l["issuer"], "CN=lookout test CA,O=lookout");
    assert_eq!(l["subjectalternative"], "localhost");
    assert_eq!(l["fingerprint_sha256"].len(), 64);
    // The target (rustls) follows the client's order, and lookout offers Go's: AES-128-GCM first,
    // which is what blackbox gets from such a server.
    assert_eq!(
        s.series("probe_tls_cipher_info")[0].labels["cipher"],
        "TLS_AES_128_GCM_SHA256",
        "{}",
        s.text
    );
}

#[tokio::test]
async fn intermediate_chain_earliest_and_last_chain_expiry() {
    let root = Ca::new("lookout test CA");
    let inter_expiry = now_unix() + 10 * DAY;
    let inter =
        root.intermediate_with_validity("lookout intermediate", now_unix() - DAY, inter_expiry);
    let leaf_expiry = now_unix() + 30 * DAY;
    let leaf = inter.leaf(&["127.0.0.1"]).not_after(leaf_expiry).build();
    let target = HttpTarget::new()
        .route("/", Route::ok("ok"))
        .start_tls(&leaf)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = root.write_to(dir.path());
    let lk = Lookout::start_in(dir, &module(&ca_file, "")).await;
    let s = lk.probe("tls", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    // Earliest over what the server sent (leaf, intermediate); last chain = leaf, inter, root.
    assert_eq!(
        s.value("probe_ssl_earliest_cert_expiry"),
        inter_expiry as f64
    );
    let chain_min = inter_expiry.min(leaf_expiry).min(root.not_after_unix());
    assert_eq!(
        s.value("probe_ssl_last_chain_expiry_timestamp_seconds"),
        chain_min as f64
    );
    // HTTP/2 is negotiated over TLS by ALPN, as blackbox does.
    assert_eq!(s.value("probe_http_version"), 2.0);
}

#[tokio::test]
async fn expired_wrong_host_and_self_signed_fail() {
    let ca = Ca::new("lookout test CA");
    let expired = ca
        .leaf(&["127.0.0.1"])
        .not_before(now_unix() - 10 * DAY)
        .not_after(now_unix() - DAY)
        .build();
    let wrong_host = ca.leaf(&["other.example"]).build();
    let self_signed = certs::self_signed(&["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let lk = Lookout::start_in(dir, &module(&ca_file, "")).await;
    for (what, leaf, reason) in [
        ("expired", &expired, "Expired"),
        ("wrong host", &wrong_host, "NotValidForName"),
        ("self-signed", &self_signed, "UnknownIssuer"),
    ] {
        let target = HttpTarget::new()
            .route("/", Route::ok("ok"))
            .start_tls(leaf)
            .await;
        let s = lk.probe("tls", &target.url("/")).await;
        assert_eq!(s.value("probe_success"), 0.0, "{what}: {}", s.text);
        // A failed handshake gives no response: no TLS families, as in blackbox.
        assert!(
            !s.types.contains_key("probe_ssl_earliest_cert_expiry"),
            "{what}: {}",
            s.text
        );
        let debug = lk.debug("tls", &target.url("/")).await;
        assert!(debug.contains(reason), "{what}: {debug}");
    }
}

#[tokio::test]
async fn insecure_skip_verify_reports_go_zero_time_for_the_chain() {
    let leaf = certs::self_signed(&["127.0.0.1"]);
    let target = HttpTarget::new()
        .route("/", Route::ok("ok"))
        .start_tls(&leaf)
        .await;
    let lk = Lookout::start(
        "modules:\n  insecure:\n    prober: http\n    http:\n      tls_config:\n        insecure_skip_verify: true\n",
    )
    .await;
    let s = lk.probe("insecure", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(
        s.value("probe_ssl_earliest_cert_expiry"),
        leaf.not_after as f64
    );
    assert_eq!(
        s.value("probe_ssl_last_chain_expiry_timestamp_seconds"),
        GO_ZERO_TIME
    );
}

#[tokio::test]
async fn redirect_from_http_to_https_sets_probe_http_ssl() {
    let ca = Ca::new("lookout test CA");
    let leaf = ca.leaf(&["127.0.0.1"]).build();
    let https = HttpTarget::new()
        .route("/secure", Route::ok("secure"))
        .start_tls(&leaf)
        .await;
    let http = HttpTarget::new()
        .route("/", Route::redirect(301, &https.url("/secure")))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let lk = Lookout::start_in(dir, &module(&ca_file, "      fail_if_not_ssl: true\n")).await;
    let s = lk.probe("tls", &http.url("/")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_http_ssl"), 1.0);
    assert_eq!(s.value("probe_http_redirects"), 1.0);
    assert!(
        s.get_with("probe_http_duration_seconds", &[("phase", "tls")])
            .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn server_name_overrides_verification_name() {
    let ca = Ca::new("lookout test CA");
    let leaf = ca.leaf(&["service.internal"]).build();
    let target = HttpTarget::new()
        .route("/", Route::ok("ok"))
        .start_tls(&leaf)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let yaml = format!(
        "modules:\n  tls:\n    prober: http\n    http:\n      tls_config:\n        ca_file: {}\n        server_name: service.internal\n",
        ca_file.display()
    );
    let lk = Lookout::start_in(dir, &yaml).await;
    let s = lk.probe("tls", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(
        target
            .last_request("/")
            .unwrap()
            .tls
            .unwrap()
            .sni
            .as_deref(),
        Some("service.internal")
    );
}

#[tokio::test]
async fn client_certificate_for_mutual_tls() {
    let ca = Ca::new("lookout test CA");
    let leaf = ca.leaf(&["127.0.0.1"]).build();
    let client = ca.client_leaf("prober").build();
    let target = HttpTarget::new()
        .route("/", Route::ok("ok"))
        .require_client_cert(&ca)
        .start_tls(&leaf)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let (cert, key) = client.write_to(dir.path());
    let yaml = format!(
        "modules:\n  mtls:\n    prober: http\n    http:\n      tls_config:\n        ca_file: {}\n        cert_file: {}\n        key_file: {}\n  nocert:\n    prober: http\n    http:\n      tls_config:\n        ca_file: {}\n",
        ca_file.display(),
        cert.display(),
        key.display(),
        ca_file.display()
    );
    let lk = Lookout::start_in(dir, &yaml).await;
    assert_eq!(
        lk.probe("mtls", &target.url("/"))
            .await
            .value("probe_success"),
        1.0
    );
    assert_eq!(
        lk.probe("nocert", &target.url("/"))
            .await
            .value("probe_success"),
        0.0
    );
}

#[tokio::test]
async fn fail_if_ssl_and_tls_version_limits() {
    let ca = Ca::new("lookout test CA");
    let leaf = ca.leaf(&["127.0.0.1"]).build();
    let target = HttpTarget::new()
        .route("/", Route::ok("ok"))
        .tls_versions(&[&rustls::version::TLS12])
        .start_tls(&leaf)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let yaml = format!(
        "modules:\n  nossl:\n    prober: http\n    http:\n      fail_if_ssl: true\n      tls_config: {{ca_file: {ca}}}\n  tls13:\n    prober: http\n    http:\n      tls_config: {{ca_file: {ca}, min_version: TLS13}}\n  tls12:\n    prober: http\n    http:\n      tls_config: {{ca_file: {ca}, max_version: TLS12}}\n",
        ca = ca_file.display()
    );
    let lk = Lookout::start_in(dir, &yaml).await;
    assert_eq!(
        lk.probe("nossl", &target.url("/"))
            .await
            .value("probe_success"),
        0.0
    );
    assert_eq!(
        lk.probe("tls13", &target.url("/"))
            .await
            .value("probe_success"),
        0.0
    );
    let s = lk.probe("tls12", &target.url("/")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(
        s.series("probe_tls_version_info")[0].labels["version"],
        "TLS 1.2"
    );
}
