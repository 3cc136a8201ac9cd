//! `--config.check --config.file F` through both binaries: does each accept or reject the same
//! files?
//!
//! Every file in tests/testdata/config/{good,invalid} has a row in [`FILES`], and [`SNIPPETS`]
//! adds small configs for differences no testdata file shows. Each row states what lookout and
//! what blackbox 0.23 must answer, so a change on either side fails the test; a row where the
//! two differ must say why in one line (README.md, "Differences on purpose", for the stricter
//! config). Only accept/reject is compared: the messages differ by design. [`NOT_MEANT`] holds
//! differences this suite found that were not intended, now fixed: it guards against their return.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::exporter::blackbox_binary;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Accept,
    Reject,
}
use Verdict::{Accept, Reject};

/// What each binary must answer, and why they differ (empty when they agree).
struct Expect {
    lookout: Verdict,
    blackbox: Verdict,
    why: &'static str,
}

/// Both binaries answer `verdict`.
const fn same(verdict: Verdict) -> Expect {
    Expect {
        lookout: verdict,
        blackbox: verdict,
        why: "",
    }
}

/// lookout answers `lookout`, blackbox the other way, for the reason `why`.
const fn differ(lookout: Verdict, why: &'static str) -> Expect {
    let blackbox = match lookout {
        Accept => Reject,
        Reject => Accept,
    };
    Expect {
        lookout,
        blackbox,
        why,
    }
}

/// Lookout rejects, blackbox 0.23 accepts: the README's "Stricter config".
const fn stricter(why: &'static str) -> Expect {
    differ(Reject, why)
}

/// Lookout accepts a field or value added by a blackbox release after 0.23, which 0.23 rejects.
const fn newer(why: &'static str) -> Expect {
    differ(Accept, why)
}

/// Every file in tests/testdata/config/{good,invalid}, relative to that directory.
const FILES: &[(&str, Expect)] = &[
    (
        "good/all_fields.yml",
        newer(
            "post-0.23 fields (http_headers, no_proxy, enable_http3, body_file, *_cel, \
             proxy_from_environment) and the status class \"3xx\"",
        ),
    ),
    ("good/blackbox_023.yml", same(Accept)),
    (
        "good/probe_access.yml",
        newer("lookout's own probe_access section"),
    ),
    (
        "good/targets.yml",
        newer("lookout's own targets/defaults/scheduler sections"),
    ),
    (
        "invalid/bad_ip_protocol.yml",
        stricter("preferred_ip_protocol other than ip4/ip6; 0.23 reads anything else as ip4"),
    ),
    ("invalid/bad_regex.yml", same(Reject)),
    ("invalid/bad_size.yml", same(Reject)),
    ("invalid/bad_yaml_indent.yml", same(Reject)),
    ("invalid/compression_not_accepted.yml", same(Reject)),
    ("invalid/dns_bad_query_type.yml", same(Reject)),
    ("invalid/dns_missing_query_name.yml", same(Reject)),
    ("invalid/duration_without_unit.yml", same(Reject)),
    ("invalid/header_match_without_header.yml", same(Reject)),
    ("invalid/icmp_ttl_too_big.yml", same(Reject)),
    (
        "invalid/missing_ca_file.yml",
        stricter("lookout reads tls_config files at load; 0.23 only when a probe runs"),
    ),
    (
        "invalid/missing_password_file.yml",
        stricter("secret files are read at load (README); 0.23 reads them per probe"),
    ),
    ("invalid/password_and_file.yml", same(Reject)),
    ("invalid/unknown_field.yml", same(Reject)),
    (
        "invalid/unknown_prober.yml",
        stricter("unknown prober name; 0.23 loads it and fails each probe"),
    ),
    ("invalid/unknown_top_level.yml", same(Reject)),
    ("invalid/empty.yml", same(Reject)),
    // `targets:` is lookout's extension; 0.23 rejects the unknown top-level field anyway.
    ("invalid/target_dependency_cycle.yml", same(Reject)),
    ("invalid/target_duplicate_name.yml", same(Reject)),
    ("invalid/target_reserved_label.yml", same(Reject)),
    ("invalid/target_unknown_dependency.yml", same(Reject)),
    ("invalid/target_unknown_module.yml", same(Reject)),
    // `probe_access:` is lookout's extension too; 0.23 rejects the unknown top-level field.
    (
        "invalid/probe_access_allow_under_default_allow.yml",
        same(Reject),
    ),
    ("invalid/probe_access_bad_entry.yml", same(Reject)),
    ("invalid/probe_access_without_default.yml", same(Reject)),
    // icmp `count`/`interval` are lookout's extension; blackbox rejects the unknown fields.
    ("invalid/icmp_echoes_over_timeout.yml", same(Reject)),
    // `dns_server` and `every_address` are lookout's extensions; blackbox rejects the fields.
    ("invalid/dns_server_not_an_ip.yml", same(Reject)),
    ("invalid/every_address_on_unix.yml", same(Reject)),
];

/// `(name, config, expectation)`: configs written into a temp dir that also holds `token.txt`.
const SNIPPETS: &[(&str, &str, Expect)] = &[
    // The README's "Stricter config", one value each.
    (
        "unknown_valid_rcode",
        "modules:\n  m:\n    prober: dns\n    dns:\n      query_name: x\n      valid_rcodes: [NOERROR, NOPE]\n",
        stricter("unknown valid_rcodes name; 0.23 fails each probe"),
    ),
    (
        "ip_protocol_tcp4",
        "modules:\n  m:\n    prober: tcp\n    tcp:\n      preferred_ip_protocol: tcp4\n",
        stricter("preferred_ip_protocol other than ip4/ip6; 0.23 reads it as ip4"),
    ),
    (
        "ip_protocol_empty_string",
        "modules:\n  m:\n    prober: icmp\n    icmp:\n      preferred_ip_protocol: \"\"\n",
        stricter("preferred_ip_protocol \"\" is not ip4/ip6; 0.23 reads it as ip6"),
    ),
    (
        "module_without_prober",
        "modules:\n  m:\n    timeout: 5s\n",
        stricter("a module without prober; 0.23 loads it and fails each probe"),
    ),
    // A duration without unit is rejected by 0.23 as well, in both spellings (yaml.v3 refuses
    // an int and time.ParseDuration a bare number).
    (
        "duration_string_without_unit",
        "modules:\n  m:\n    prober: http\n    timeout: \"5\"\n",
        same(Reject),
    ),
    // Checked at load by lookout, only when probing (or never) by 0.23.
    (
        "negative_timeout",
        "modules:\n  m:\n    prober: http\n    timeout: -5s\n",
        stricter("negative timeout; 0.23 accepts it"),
    ),
    (
        "missing_password_file",
        "modules:\n  m:\n    prober: http\n    http:\n      basic_auth:\n        username: u\n        password_file: nope.txt\n",
        stricter("secret files are read at load (README); 0.23 reads them per probe"),
    ),
    (
        "cert_file_without_key_file",
        "modules:\n  m:\n    prober: http\n    http:\n      tls_config:\n        cert_file: token.txt\n",
        stricter("client cert without key; 0.23 fails each probe"),
    ),
    (
        "bad_source_ip",
        "modules:\n  m:\n    prober: tcp\n    tcp:\n      source_ip_address: notanip\n",
        stricter("invalid source_ip_address; 0.23 fails each probe"),
    ),
    (
        "dns_bad_rr_regex",
        "modules:\n  m:\n    prober: dns\n    dns:\n      query_name: x\n      validate_answer_rrs:\n        fail_if_matches_regexp: [\"(\"]\n",
        stricter("0.23 compiles validate_*_rrs regexps per probe (plain strings in its config)"),
    ),
    (
        "dns_bad_transport",
        "modules:\n  m:\n    prober: dns\n    dns:\n      query_name: x\n      transport_protocol: sctp\n",
        stricter("transport_protocol other than udp/tcp; 0.23 fails each probe"),
    ),
    (
        "unknown_compression",
        "modules:\n  m:\n    prober: http\n    http:\n      compression: lzma\n",
        stricter("unknown compression algorithm; 0.23 fails each probe"),
    ),
    (
        "method_with_space",
        "modules:\n  m:\n    prober: http\n    http:\n      method: \"GE T\"\n",
        stricter("invalid HTTP method; 0.23 fails each probe"),
    ),
    (
        "header_name_with_space",
        "modules:\n  m:\n    prober: http\n    http:\n      headers:\n        \"Bad Header\": x\n",
        stricter("invalid header name; 0.23 fails each probe"),
    ),
    (
        "icmp_payload_size_too_big",
        "modules:\n  m:\n    prober: icmp\n    icmp:\n      payload_size: 70000\n",
        stricter("payload_size beyond 65535; 0.23 fails each probe"),
    ),
    // Sizes: 0.23 (alecthomas/units) requires a unit, lookout reads a bare number as bytes.
    (
        "body_size_limit_without_unit",
        "modules:\n  m:\n    prober: http\n    http:\n      body_size_limit: 100\n",
        differ(
            Accept,
            "a bare size is bytes in lookout (values.rs parse_size); 0.23 wants a unit",
        ),
    ),
    (
        "body_size_limit_minus_one",
        "modules:\n  m:\n    prober: http\n    http:\n      body_size_limit: -1\n",
        differ(
            Accept,
            "a negative bare size is no limit in lookout (values.rs Size); 0.23 wants a unit",
        ),
    ),
    // Fields from releases after 0.23, one at a time.
    (
        "http_headers",
        "modules:\n  m:\n    prober: http\n    http:\n      http_headers:\n        X-A:\n          values: [a]\n",
        newer("http_headers: added after 0.23"),
    ),
    (
        "body_file",
        "modules:\n  m:\n    prober: http\n    http:\n      body_file: token.txt\n",
        newer("body_file: added after 0.23"),
    ),
    (
        "no_proxy",
        "modules:\n  m:\n    prober: http\n    http:\n      proxy_url: http://127.0.0.1:3128\n      no_proxy: localhost\n",
        newer("no_proxy: added after 0.23"),
    ),
    (
        "proxy_from_environment",
        "modules:\n  m:\n    prober: http\n    http:\n      proxy_from_environment: true\n",
        newer("proxy_from_environment: added after 0.23"),
    ),
    (
        "enable_http3",
        "modules:\n  m:\n    prober: http\n    http:\n      enable_http3: false\n",
        newer("enable_http3: added after 0.23"),
    ),
    (
        "body_json_matches_cel",
        "modules:\n  m:\n    prober: http\n    http:\n      fail_if_body_json_matches_cel: \"body.a == 1\"\n",
        newer("fail_if_body_json_matches_cel: added after 0.23"),
    ),
    (
        "body_json_not_matches_cel",
        "modules:\n  m:\n    prober: http\n    http:\n      fail_if_body_json_not_matches_cel: \"body.a == 1\"\n",
        newer("fail_if_body_json_not_matches_cel: added after 0.23"),
    ),
    (
        "status_class",
        "modules:\n  m:\n    prober: http\n    http:\n      valid_status_codes: [\"2xx\"]\n",
        differ(
            Accept,
            "status classes in valid_status_codes (README); 0.23 wants integers",
        ),
    ),
    (
        "tcp_expect_bytes",
        "modules:\n  m:\n    prober: tcp\n    tcp:\n      query_response:\n        - expect_bytes: \"abc\"\n",
        newer("query_response expect_bytes: added after 0.23"),
    ),
    (
        "tcp_labels",
        "modules:\n  m:\n    prober: tcp\n    tcp:\n      query_response:\n        - expect: \"^v(.*)\"\n          labels:\n            - name: version\n              value: \"${1}\"\n",
        newer("query_response labels: added after 0.23"),
    ),
    // Debian's 0.23 build links a newer prometheus/common than upstream 0.23's v0.37, so it
    // already knows these; both accept.
    (
        "proxy_connect_header",
        "modules:\n  m:\n    prober: http\n    http:\n      proxy_url: http://127.0.0.1:3128\n      proxy_connect_header:\n        X-A: [b]\n",
        same(Accept),
    ),
    (
        "tls_max_version",
        "modules:\n  m:\n    prober: http\n    http:\n      tls_config:\n        max_version: TLS13\n",
        same(Accept),
    ),
    // Agreements worth pinning.
    ("modules_null", "modules:\n", same(Accept)),
    ("modules_empty_map", "modules: {}\n", same(Accept)),
    (
        "duplicate_key",
        "modules:\n  m:\n    prober: http\n    prober: tcp\n",
        same(Reject),
    ),
    (
        "icmp_negative_ttl",
        "modules:\n  m:\n    prober: icmp\n    icmp:\n      ttl: -1\n",
        same(Reject),
    ),
    (
        "bearer_token_and_file",
        "modules:\n  m:\n    prober: http\n    http:\n      bearer_token: a\n      bearer_token_file: token.txt\n",
        same(Reject),
    ),
    (
        "unknown_tls_version",
        "modules:\n  m:\n    prober: http\n    http:\n      tls_config:\n        min_version: TLS99\n",
        same(Reject),
    ),
    (
        "dns_bad_query_class",
        "modules:\n  m:\n    prober: dns\n    dns:\n      query_name: x\n      query_class: XX\n",
        same(Reject),
    ),
    (
        "tcp_bad_expect_regex",
        "modules:\n  m:\n    prober: tcp\n    tcp:\n      query_response:\n        - expect: \"(\"\n",
        same(Reject),
    ),
    (
        "grpc_unknown_field",
        "modules:\n  m:\n    prober: grpc\n    grpc:\n      services: x\n",
        same(Reject),
    ),
];

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn lookout_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lookout"))
}

/// Runs `bin --config.check --config.file file` in `cwd`.
fn check(bin: &Path, file: &Path, cwd: &Path) -> Output {
    Command::new(bin)
        .arg("--config.check")
        .arg("--config.file")
        .arg(file)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("run {} --config.check: {e}", bin.display()))
}

fn verdict(out: &Output) -> Verdict {
    if out.status.success() { Accept } else { Reject }
}

/// The last lines a binary printed, for failure messages.
fn tail(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join("\n      ")
}

/// Runs both binaries on `file` and returns a description of every deviation from `expect`.
fn compare(blackbox: &Path, label: &str, file: &Path, cwd: &Path, expect: &Expect) -> Vec<String> {
    let ours = check(lookout_binary(), file, cwd);
    let theirs = check(blackbox, file, cwd);
    let mut out = Vec::new();
    for (who, got, want, output) in [
        ("lookout", verdict(&ours), expect.lookout, &ours),
        ("blackbox", verdict(&theirs), expect.blackbox, &theirs),
    ] {
        if got != want {
            out.push(format!(
                "{label}: {who} {got:?}, the table says {want:?} ({})\n      {}",
                if expect.why.is_empty() {
                    "both should agree"
                } else {
                    expect.why
                },
                tail(output)
            ));
        }
    }
    out
}

/// The table's own rules: a reason exactly where the verdicts differ.
fn table_problems<'a>(rows: impl Iterator<Item = (&'a str, &'a Expect)>) -> Vec<String> {
    rows.filter_map(|(name, e)| {
        let differ = e.lookout != e.blackbox;
        match (differ, e.why.is_empty()) {
            (true, true) => Some(format!("{name}: verdicts differ without a reason")),
            (false, false) => Some(format!("{name}: verdicts agree but a reason is given")),
            _ => None,
        }
    })
    .collect()
}

fn yml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    v.sort();
    v
}

#[test]
fn testdata_files_accepted_and_rejected_as_tabled() {
    let base = Path::new("tests/testdata/config");
    let mut problems = table_problems(FILES.iter().map(|(f, e)| (*f, e)));

    // The table covers exactly the files on disk, and agrees with their directory.
    let mut on_disk = Vec::new();
    for sub in ["good", "invalid"] {
        for path in yml_files(&manifest_dir().join(base).join(sub)) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            on_disk.push(format!("{sub}/{name}"));
        }
    }
    for file in &on_disk {
        if !FILES.iter().any(|(f, _)| f == file) {
            problems.push(format!("{file}: no row in FILES (add one)"));
        }
    }
    for (file, expect) in FILES {
        if !on_disk.iter().any(|f| f == file) {
            problems.push(format!("{file}: row in FILES but no such file"));
        }
        let want = if file.starts_with("good/") {
            Accept
        } else {
            Reject
        };
        if expect.lookout != want {
            problems.push(format!(
                "{file}: the table says lookout {:?}, its directory says {want:?}",
                expect.lookout
            ));
        }
    }

    let Some(blackbox) = blackbox_binary("testdata_files_accepted_and_rejected_as_tabled") else {
        assert!(problems.is_empty(), "{}", problems.join("\n  - "));
        return;
    };
    for (file, expect) in FILES {
        // Relative paths, as `tests/it/config.rs` loads them, from the crate root.
        let path = base.join(file);
        problems.extend(compare(&blackbox, file, &path, manifest_dir(), expect));
    }
    assert!(
        problems.is_empty(),
        "config check differs from the table in tests/compat/config_check.rs:\n  - {}",
        problems.join("\n  - ")
    );
}

/// Writes each row's config into one temp dir (beside a `token.txt`) and compares.
fn compare_snippets(blackbox: &Path, rows: &[(&str, &str, Expect)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.txt"), "secret-token\n").unwrap();
    let mut problems = Vec::new();
    for (name, yaml, expect) in rows {
        let file = format!("{name}.yml");
        std::fs::write(dir.path().join(&file), yaml).unwrap();
        let label = format!("{name} ({yaml:?})");
        problems.extend(compare(
            blackbox,
            &label,
            Path::new(&file),
            dir.path(),
            expect,
        ));
    }
    problems
}

#[test]
fn snippets_accepted_and_rejected_as_tabled() {
    let mut problems = table_problems(SNIPPETS.iter().map(|(n, _, e)| (*n, e)));
    if let Some(blackbox) = blackbox_binary("snippets_accepted_and_rejected_as_tabled") {
        problems.extend(compare_snippets(&blackbox, SNIPPETS));
    }
    assert!(
        problems.is_empty(),
        "config check differs from the table in tests/compat/config_check.rs:\n  - {}",
        problems.join("\n  - ")
    );
}

/// Differences found by this suite that no one meant (not in the README, or against the
/// code's own comment): each row expects what blackbox 0.23 does, so the test fails until
/// lookout changes or the row moves to [`SNIPPETS`] with a reason.
const NOT_MEANT: &[(&str, &str, Expect)] = &[
    // blackbox 0.23 refuses a file without any YAML document ("error parsing config file: EOF":
    // yaml.v3's Decoder.Decode returns io.EOF) and so never starts; lookout loaded zero modules
    // until it refused empty files too.
    ("empty_file", "", same(Reject)),
    ("comment_only", "# no modules yet\n", same(Reject)),
    // alecthomas/units parses "-1KB" and 0.23 turns a negative limit into "no limit"; lookout
    // once refused "-1KB" and now reads any negative size as no limit.
    (
        "negative_body_size_limit_with_unit",
        "modules:\n  m:\n    prober: http\n    http:\n      body_size_limit: -1KB\n",
        same(Accept),
    ),
];

#[test]
fn differences_not_meant_are_absent() {
    let Some(blackbox) = blackbox_binary("differences_not_meant_are_absent") else {
        return;
    };
    let problems = compare_snippets(&blackbox, NOT_MEANT);
    assert!(
        problems.is_empty(),
        "config check differs from blackbox 0.23 (unintended, see NOT_MEANT):\n  - {}",
        problems.join("\n  - ")
    );
}
