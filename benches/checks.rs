//! Micro-benchmarks of the per-probe checks: evaluating an HTTP module's header and body
//! expressions on a response, and turning a server's certificate chain into blackbox's TLS
//! families (parsing every certificate, fingerprint, Go-style names, expiries).
//!
//! Run with `cargo bench --bench checks`; figures are quoted in docs/benchmarks.md.

// Benchmarks are not probes: the dial policy and clippy.toml's socket rule do not apply here.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

use divan::{Bencher, black_box};
use http::{HeaderMap, HeaderValue};
use lookout::probe::http as http_probe;
use lookout::probe::report::Report;
use lookout::probe::tls::{self, CertFacts, Handshake};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

fn main() {
    divan::main();
}

/// A health-check module with the four kinds of expression blackbox users write.
const HTTP_MODULE: &str = r#"
valid_status_codes: [200]
fail_if_body_matches_regexp:
  - "(?i)maintenance|internal server error"
fail_if_body_not_matches_regexp:
  - '"status"\s*:\s*"(ok|up)"'
fail_if_header_matches:
  - header: X-Error
    regexp: ".+"
    allow_missing: true
fail_if_header_not_matches:
  - header: Content-Type
    regexp: "^application/json"
"#;

fn http_spec() -> http_probe::Spec {
    let section: http_probe::Section = serde_norway::from_str(HTTP_MODULE).expect("module parses");
    http_probe::Spec::build(&section, Path::new(".")).expect("module builds")
}

/// A 4 KiB JSON health document whose `"status": "ok"` comes last.
fn health_body() -> Vec<u8> {
    let mut body = String::from("{\"checks\": [");
    let mut i = 0;
    while body.len() < 4000 {
        body.push_str(&format!(
            "{{\"name\": \"dependency-{i}\", \"latency_ms\": {}, \"healthy\": true}},",
            i * 7 % 100
        ));
        i += 1;
    }
    body.push_str("{}], \"status\": \"ok\"}");
    body.into_bytes()
}

fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json; charset=utf-8"),
        ("server", "nginx/1.26.3"),
        ("date", "Wed, 25 Nov 2026 12:00:00 GMT"),
        ("cache-control", "no-store"),
        ("content-length", "4032"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

/// Two header expressions and two body expressions over a 4 KiB body, all passing.
#[divan::bench]
fn http_header_and_body_regexes(bencher: Bencher) {
    let spec = http_spec();
    let headers = response_headers();
    let body = health_body();
    assert!(spec.check_response(&headers, &body).is_ok());
    bencher.bench(|| spec.check_response(black_box(&headers), black_box(&body)));
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name
        .push(DnType::OrganizationName, "lookout");
    p.distinguished_name.push(DnType::CountryName, "DE");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A root, an intermediate and a leaf for three names (ECDSA P-256, as rcgen makes them).
fn chain() -> (
    CertificateDer<'static>,
    CertificateDer<'static>,
    CertificateDer<'static>,
) {
    let root_key = KeyPair::generate().expect("key");
    let root_params = ca_params("lookout bench root");
    let root = root_params.self_signed(&root_key).expect("root");
    let root_issuer = Issuer::new(root_params, root_key);
    let int_key = KeyPair::generate().expect("key");
    let mut int_params = ca_params("lookout bench intermediate");
    int_params.use_authority_key_identifier_extension = true;
    let int = int_params.signed_by(&int_key, &root_issuer).expect("int");
    let int_issuer = Issuer::new(int_params, int_key);
    let leaf_key = KeyPair::generate().expect("key");
    let mut leaf_params = CertificateParams::new(vec![
        "wiki.example.org".to_owned(),
        "www.example.org".to_owned(),
        "example.org".to_owned(),
    ])
    .expect("names");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "wiki.example.org");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf = leaf_params.signed_by(&leaf_key, &int_issuer).expect("leaf");
    (
        CertificateDer::from(leaf.der().to_vec()),
        CertificateDer::from(int.der().to_vec()),
        CertificateDer::from(root.der().to_vec()),
    )
}

/// Facts of one leaf certificate: parse, SHA-256 fingerprint, subject, issuer, SANs, serial.
#[divan::bench]
fn parse_leaf_certificate(bencher: Bencher) {
    let (leaf, _, _) = chain();
    bencher.bench(|| CertFacts::parse(black_box(&leaf)));
}

/// The TLS families of one HTTPS probe: the server's two certificates and the verified
/// three-certificate chain turned into expiries, leaf info, version and cipher.
#[divan::bench]
fn record_tls_families(bencher: Bencher) {
    let (leaf, int, root) = chain();
    let hs = Handshake {
        version: "TLS 1.3",
        cipher: "TLS_AES_256_GCM_SHA384".to_owned(),
        alpn: Some(b"http/1.1".to_vec()),
        peer: vec![leaf.clone(), int.clone()],
        verified_chain: Some(vec![leaf, int, root]),
    };
    bencher.bench(|| {
        let mut r = Report::new();
        tls::record(&mut r, black_box(&hs));
        r
    });
}
