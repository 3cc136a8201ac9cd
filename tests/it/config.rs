//! Config loading against files in tests/testdata/config: every good file loads, and each bad
//! file fails with exactly the message in its `.err` file (set LOOKOUT_BLESS=1 to rewrite them).

use std::path::Path;

fn files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no files in {dir}");
    v
}

#[test]
fn good_files_load() {
    for f in files("tests/testdata/config/good") {
        if let Err(e) = lookout::config::load(&f) {
            panic!("{} should load: {e}", f.display());
        }
    }
    // And the shipped configs too.
    let mut shipped = vec![std::path::PathBuf::from("config/lookout.yml")];
    shipped.extend(
        std::fs::read_dir("config/examples")
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yml")),
    );
    for f in shipped {
        lookout::config::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

#[test]
fn every_documented_field_is_kept() {
    let c = lookout::config::load(Path::new("tests/testdata/config/good/all_fields.yml")).unwrap();
    assert_eq!(c.modules.len(), 10);
    let yaml = c.to_yaml();
    for field in [
        "skip_resolve_phase_with_proxy",
        "fail_if_header_not_matches",
        "validate_additional_rrs",
        "dont_fragment",
    ] {
        assert!(yaml.contains(field), "{field} lost:\n{yaml}");
    }
    assert!(
        !yaml.contains("secret-token"),
        "a file's secret leaked into /config:\n{yaml}"
    );
}

#[test]
fn bad_files_fail_with_their_golden_message() {
    let bless = std::env::var_os("LOOKOUT_BLESS").is_some();
    let mut failures = Vec::new();
    for f in files("tests/testdata/config/invalid") {
        let err_file = f.with_extension("err");
        let got = match lookout::config::load(&f) {
            Ok(_) => {
                failures.push(format!("{} loaded but should fail", f.display()));
                continue;
            }
            Err(e) => e.to_string(),
        };
        assert!(
            got.starts_with(&f.display().to_string()),
            "error does not name the file: {got}"
        );
        if bless {
            std::fs::write(&err_file, format!("{got}\n")).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&err_file).unwrap_or_default();
        if want.trim_end() != got {
            failures.push(format!(
                "{}:\n  want: {}\n  got:  {got}",
                f.display(),
                want.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The cases of blackbox 0.28's `config/testdata` (its files read at the main branch; these
/// modules are written for this test, not copied), each with blackbox's verdict: `None` for
/// a file it loads, else a fragment of the reason it refuses one.
#[test]
fn blackbox_028_testdata_cases_get_blackbox_verdicts() {
    let http = |body: &str| format!("modules:\n  m:\n    prober: http\n    http:\n{body}");
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "a good mix",
            "modules:\n  h: {prober: http, http: {valid_status_codes: [200]}}\n  t: {prober: tcp}\n  d: {prober: dns, dns: {query_name: example.org, query_type: AAAA}}\n  i: {prober: icmp, icmp: {ttl: 64}}\n  g: {prober: grpc, grpc: {metadata: {k: [v]}}}\n  u: {prober: unix, unix: {query_response: [{expect: '^ok'}]}}\n".into(),
            None,
        ),
        ("an unknown dns field", "modules:\n  d: {prober: dns, dns: {query_name: x, extra: 1}}\n".into(), Some("unknown field `extra`")),
        ("bearer_token and its file", http("      bearer_token: a\n      bearer_token_file: /dev/null\n"), Some("at most one of bearer_token & bearer_token_file")),
        ("a dns query class that is none", "modules:\n  d: {prober: dns, dns: {query_name: x, query_class: Q}}\n".into(), Some("query class 'Q' is not valid")),
        ("a dns module without a name", "modules:\n  d: {prober: dns, dns: {query_type: A}}\n".into(), Some("query name must be set")),
        ("a dns query type that is none", "modules:\n  d: {prober: dns, dns: {query_name: x, query_type: Q}}\n".into(), Some("query type 'Q' is not valid")),
        ("body and body_file", http("      body: x\n      body_file: /dev/null\n"), Some("at most one of body and body_file")),
        ("a broken body regex", http("      fail_if_body_matches_regexp: ['(']\n"), Some("could not compile regular expression")),
        ("a broken negated body regex", http("      fail_if_body_not_matches_regexp: ['[']\n"), Some("could not compile regular expression")),
        ("Accept-Encoding against compression", http("      compression: gzip\n      headers: {Accept-Encoding: br}\n"), Some("invalid configuration")),
        ("the same in another case", http("      compression: gzip\n      headers: {aCCept-encoding: deflate}\n"), Some("invalid configuration")),
        ("Accept-Encoding refusing every encoding", http("      compression: gzip\n      headers: {Accept-Encoding: '*;q=0.0'}\n"), Some("invalid configuration")),
        ("a broken header regex", http("      fail_if_header_not_matches: [{header: X, regexp: '('}]\n"), Some("could not compile regular expression")),
        ("a header matcher without regexp", http("      fail_if_header_not_matches: [{header: X}]\n"), Some("missing field `regexp`")),
        ("HTTP/3 with HTTP/2 on", http("      enable_http3: true\n      enable_http2: true\n      valid_http_versions: [HTTP/3.0]\n"), Some("when enable_http3 is true, enable_http2 must be set to false")),
        ("HTTP/3 with older versions", http("      enable_http3: true\n      enable_http2: false\n      valid_http_versions: [HTTP/1.1, HTTP/3.0]\n"), Some("HTTP/3 and HTTP/2.0/1.1 cannot be used together")),
        ("HTTP/3 with both on", http("      enable_http3: true\n      enable_http2: true\n      valid_http_versions: [HTTP/2.0, HTTP/3.0]\n"), Some("HTTP/3 and HTTP/2.0/1.1 cannot be used together")),
        ("HTTP/3 alone, HTTP/2 left on by default", http("      enable_http3: true\n"), Some("when enable_http3 is true, enable_http2 must be set to false")),
        ("HTTP/3.0 expected without HTTP/3", http("      valid_http_versions: [HTTP/3.0]\n"), Some("HTTP/3 cannot be used as a valid HTTP version when enable_http3 is false")),
        ("HTTP/3 done right", http("      enable_http3: true\n      enable_http2: false\n      valid_http_versions: [HTTP/3.0]\n"), None),
        ("an icmp ttl over 255", "modules:\n  i: {prober: icmp, icmp: {ttl: 256}}\n".into(), Some("cannot exceed 255")),
        ("a negative icmp ttl", "modules:\n  i: {prober: icmp, icmp: {ttl: -1}}\n".into(), Some("cannot be negative")),
        ("an unknown prober", "modules:\n  x: {prober: nope}\n".into(), Some("unknown prober \"nope\"")),
        ("a broken tcp expect", "modules:\n  t: {prober: tcp, tcp: {query_response: [{expect: '('}]}}\n".into(), Some("could not compile regular expression")),
        ("a broken unix expect", "modules:\n  u: {prober: unix, unix: {query_response: [{expect: '('}]}}\n".into(), Some("could not compile regular expression")),
        ("a broken websocket expect", "modules:\n  w: {prober: websocket, websocket: {query_response: [{expect: ':['}]}}\n".into(), Some("could not compile regular expression")),
        ("a websocket module as blackbox.yml has it", "modules:\n  w: {prober: websocket}\n".into(), None),
        ("websocket with credentials and headers", "modules:\n  w:\n    prober: websocket\n    websocket:\n      http_config: {basic_auth: {username: u, password: p}, tls_config: {insecure_skip_verify: true}}\n      headers: {X-Some-Header: v}\n      query_response: [{expect: '^Hello,\\s(.+)', send: 'hi ${1}'}, {expect: '^Welcome'}]\n".into(), None),
    ];
    let mut wrong = Vec::new();
    for (case, yaml, want) in &cases {
        let got = lookout::config::parse(yaml, Path::new("case.yml"));
        match (want, got) {
            (None, Ok(_)) => {}
            (Some(w), Err(e)) if e.to_string().contains(w) => {}
            (want, got) => wrong.push(format!(
                "{case}: want {want:?}, got {:?}",
                got.map(|_| "loaded").map_err(|e| e.to_string())
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
