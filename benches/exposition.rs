//! Micro-benchmarks of exposition: one probe's report built and encoded as `/probe` answers it,
//! and the scheduler's `/metrics` for 10,000 targets.
//!
//! Run with `cargo bench --bench exposition`; figures are quoted in docs/benchmarks.md.

// Benchmarks are not probes: the dial policy and clippy.toml's socket rule do not apply here.
#![allow(clippy::disallowed_methods)]

use divan::{Bencher, black_box};
use lookout::metrics::{self, Format};
use lookout::probe::expect::PROBE_FAILED_DUE_TO_REGEX;
use lookout::probe::http::{
    PROBE_HTTP_CONTENT_LENGTH, PROBE_HTTP_DURATION_SECONDS, PROBE_HTTP_REDIRECTS, PROBE_HTTP_SSL,
    PROBE_HTTP_STATUS_CODE, PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH, PROBE_HTTP_VERSION,
};
use lookout::probe::report::{Family, Kind, Report};
use lookout::probe::resolve::{
    PROBE_DNS_LOOKUP_TIME_SECONDS, PROBE_IP_ADDR_HASH, PROBE_IP_PROTOCOL,
};
use lookout::probe::tls::{
    PROBE_SSL_EARLIEST_CERT_EXPIRY, PROBE_SSL_LAST_CHAIN_EXPIRY_TIMESTAMP_SECONDS,
    PROBE_SSL_LAST_CHAIN_INFO, PROBE_TLS_CIPHER_INFO, PROBE_TLS_VERSION_INFO,
};
use lookout::probe::{PROBE_DURATION_SECONDS, PROBE_SUCCESS};

fn main() {
    divan::main();
}

/// The report of one successful HTTPS probe, written in the order the HTTP prober writes it.
fn https_report() -> Report {
    let mut r = Report::new();
    r.declare(&PROBE_SUCCESS);
    r.declare(&PROBE_DURATION_SECONDS);
    for f in [
        &PROBE_HTTP_CONTENT_LENGTH,
        &PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH,
        &PROBE_HTTP_REDIRECTS,
        &PROBE_HTTP_SSL,
        &PROBE_HTTP_STATUS_CODE,
        &PROBE_HTTP_VERSION,
        &PROBE_FAILED_DUE_TO_REGEX,
    ] {
        r.declare(f);
    }
    r.set(&PROBE_IP_PROTOCOL, 4.0);
    r.set(&PROBE_IP_ADDR_HASH, 3_619_153_832.0);
    r.set(&PROBE_DNS_LOOKUP_TIME_SECONDS, 0.000_012_345);
    r.add(
        &PROBE_HTTP_DURATION_SECONDS,
        &[("phase", "resolve")],
        0.000_012_345,
    );
    for p in ["connect", "tls", "processing", "transfer"] {
        r.declare_labeled(&PROBE_HTTP_DURATION_SECONDS, &[("phase", p)]);
    }
    r.add(
        &PROBE_HTTP_DURATION_SECONDS,
        &[("phase", "connect")],
        0.000_101_2,
    );
    r.add(
        &PROBE_HTTP_DURATION_SECONDS,
        &[("phase", "tls")],
        0.001_234_5,
    );
    r.add(
        &PROBE_HTTP_DURATION_SECONDS,
        &[("phase", "processing")],
        0.000_201_7,
    );
    r.set(&PROBE_HTTP_STATUS_CODE, 200.0);
    r.set(&PROBE_HTTP_CONTENT_LENGTH, 3.0);
    r.set(&PROBE_HTTP_REDIRECTS, 0.0);
    r.set(&PROBE_HTTP_SSL, 1.0);
    r.set(&PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH, 3.0);
    r.add(
        &PROBE_HTTP_DURATION_SECONDS,
        &[("phase", "transfer")],
        0.000_045_6,
    );
    r.set(&PROBE_HTTP_VERSION, 1.1);
    r.set(&PROBE_SSL_EARLIEST_CERT_EXPIRY, 1_764_201_600.0);
    r.set(
        &PROBE_SSL_LAST_CHAIN_EXPIRY_TIMESTAMP_SECONDS,
        1_764_201_600.0,
    );
    r.set_labeled(
        &PROBE_SSL_LAST_CHAIN_INFO,
        &[
            (
                "fingerprint_sha256",
                "5e3c9b7ad1c0a7a4bc7c4d21a0f1d2b6d9e84c21d1f3e0d4b8a2f6c1e9d7b3a5",
            ),
            ("subject", "CN=localhost"),
            ("issuer", "CN=vs-blackbox CA"),
            ("subjectalternative", "localhost"),
            ("serialnumber", "4f1b2c3d4e5f60718293a4b5c6d7e8f9"),
        ],
        1.0,
    );
    r.set_labeled(&PROBE_TLS_VERSION_INFO, &[("version", "TLS 1.3")], 1.0);
    r.set_labeled(
        &PROBE_TLS_CIPHER_INFO,
        &[("cipher", "TLS_AES_256_GCM_SHA384")],
        1.0,
    );
    r.set(&PROBE_DURATION_SECONDS, 0.001_876_5);
    r.set(&PROBE_SUCCESS, 1.0);
    r
}

/// Writing one HTTPS probe's 25 series into a fresh report.
#[divan::bench]
fn build_https_report() -> Report {
    https_report()
}

/// Encoding it as `/probe` answers by default (text 0.0.4, Go's order and float format).
#[divan::bench]
fn encode_https_report_text(bencher: Bencher) {
    let r = https_report();
    bencher.bench(|| metrics::encode_text(&[(&[], black_box(&r))]));
}

/// Encoding it as OpenMetrics (when the scrape's Accept header asks for it).
#[divan::bench]
fn encode_https_report_openmetrics(bencher: Bencher) {
    let r = https_report();
    bencher.bench(|| metrics::encode(Format::OpenMetrics, &[(&[], black_box(&r))]));
}

/// The per-target counters the scheduler adds (same names and types as in `schedule.rs`).
static PROBES_TOTAL: Family = Family {
    name: "lookout_probes_total",
    help: "Scheduled probes run, by result.",
    kind: Kind::Counter,
};
static MISSED_TOTAL: Family = Family {
    name: "lookout_probe_missed_total",
    help: "Scheduled probes not started because the previous probe of the target was still running.",
    kind: Kind::Counter,
};
static LAST_PROBE: Family = Family::gauge(
    "lookout_target_last_probe_timestamp_seconds",
    "When the target's latest completed probe finished, as a Unix timestamp.",
);

/// One scheduled `tcp_connect` target's latest report and counters, as `/metrics` holds them.
fn tcp_target(i: usize) -> (Vec<(String, String)>, Report, Report) {
    let labels = vec![
        ("target".to_owned(), format!("db-{i:05}")),
        (
            "instance".to_owned(),
            format!("10.0.{}.{}:5432", i / 250, i % 250),
        ),
        ("module".to_owned(), "tcp_connect".to_owned()),
        ("site".to_owned(), "home".to_owned()),
    ];
    let mut r = Report::new();
    r.declare(&PROBE_SUCCESS);
    r.declare(&PROBE_DURATION_SECONDS);
    r.set(&PROBE_IP_PROTOCOL, 4.0);
    r.set(&PROBE_IP_ADDR_HASH, 1_000_000.0 + i as f64);
    r.set(&PROBE_DNS_LOOKUP_TIME_SECONDS, 0.000_003_1);
    r.set(&PROBE_DURATION_SECONDS, 0.000_187_3 + i as f64 * 1e-9);
    r.set(&PROBE_SUCCESS, 1.0);
    let mut c = Report::new();
    c.set_labeled(&PROBES_TOTAL, &[("result", "success")], 1234.0);
    c.set_labeled(&PROBES_TOTAL, &[("result", "failure")], 2.0);
    c.set(&MISSED_TOTAL, 0.0);
    c.set(&LAST_PROBE, 1_764_072_000.123 + i as f64);
    (labels, r, c)
}

/// The scheduler's `/metrics` for 10,000 targets: every target's latest report and counters,
/// labelled, grouped by family and sorted as Go's registry sorts them.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn encode_metrics_10k_targets(bencher: Bencher) {
    let targets: Vec<_> = (0..10_000).map(tcp_target).collect();
    bencher.bench(|| {
        let mut parts: Vec<(&[(String, String)], &Report)> = Vec::with_capacity(2 * targets.len());
        for (labels, last, counters) in &targets {
            parts.push((labels, last));
            parts.push((labels, counters));
        }
        metrics::encode(Format::Text, black_box(&parts))
    });
}
