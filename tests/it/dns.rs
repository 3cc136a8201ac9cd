//! The DNS prober against a real in-process hickory-server (UDP, TCP, DNS over TLS) and bare UDP
//! responders for replies a correct server never sends. Expected record texts are miekg/dns's
//! `RR.String()` forms, which blackbox's validators match against.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::proto::rr::rdata::TXT;
use hickory_server::proto::rr::{Name, RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::certs::Ca;
use crate::support::dns_target::{self, SERIAL, query_id, rcode_reply, udp_responder};
use crate::support::lookout::Lookout;
use crate::support::samples::Samples;

/// A config with one dns module per `(name, extra dns: lines)`, all asking for ip4.
fn config(modules: &[(&str, &str)]) -> String {
    let mut out = String::from("modules:\n");
    for (name, extra) in modules {
        out.push_str(&format!(
            "  {name}:\n    prober: dns\n    timeout: 5s\n    dns:\n      preferred_ip_protocol: ip4\n"
        ));
        for line in extra.lines() {
            out.push_str(&format!("      {line}\n"));
        }
    }
    out
}

fn assert_success(s: &Samples, expected: f64) {
    assert_eq!(s.value("probe_success"), expected, "{}", s.text);
}

const DNS_FAMILIES: [&str; 10] = [
    "probe_dns_additional_rrs",
    "probe_dns_answer_rrs",
    "probe_dns_authority_rrs",
    "probe_dns_duration_seconds",
    "probe_dns_lookup_time_seconds",
    "probe_dns_query_succeeded",
    "probe_duration_seconds",
    "probe_ip_addr_hash",
    "probe_ip_protocol",
    "probe_success",
];

#[tokio::test]
async fn udp_query_reports_counts_phases_and_families() {
    let server = dns_target::start(None).await;
    let lk = Lookout::start(&config(&[("a", "query_name: example.org\nquery_type: A")])).await;
    let s = lk.probe("a", &server.udp.to_string()).await;
    assert_success(&s, 1.0);
    assert_eq!(s.families(), DNS_FAMILIES);
    assert_eq!(s.value("probe_dns_answer_rrs"), 2.0);
    assert_eq!(s.value("probe_dns_query_succeeded"), 1.0);
    assert_eq!(s.value("probe_ip_protocol"), 4.0);
    for phase in ["resolve", "connect", "request"] {
        let v = s
            .get_with("probe_dns_duration_seconds", &[("phase", phase)])
            .unwrap_or_else(|| panic!("no {phase} phase in\n{}", s.text));
        assert!(v >= 0.0);
    }
    assert!(
        s.get_with("probe_dns_duration_seconds", &[("phase", "request")])
            .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn tcp_transport_and_target_without_brackets_or_with_a_name() {
    let server = dns_target::start(None).await;
    let lk = Lookout::start(&config(&[(
        "tcp",
        "query_name: example.org\nquery_type: MX\ntransport_protocol: tcp",
    )]))
    .await;
    let s = lk.probe("tcp", &server.tcp.to_string()).await;
    assert_success(&s, 1.0);
    assert_eq!(s.value("probe_dns_answer_rrs"), 1.0);
    // The same module by name: localhost resolves through /etc/hosts, ip4 preferred.
    let s = lk
        .probe("tcp", &format!("localhost:{}", server.tcp.port()))
        .await;
    assert_success(&s, 1.0);
    // UDP port against the TCP module: nothing listens on TCP there.
    let s = lk.probe("tcp", &server.udp.to_string()).await;
    assert_success(&s, 0.0);
    assert_eq!(s.value("probe_dns_query_succeeded"), 0.0);
}

#[tokio::test]
async fn soa_query_reports_probe_dns_serial() {
    let server = dns_target::start(None).await;
    let lk = Lookout::start(&config(&[
        ("soa", "query_name: example.org\nquery_type: SOA"),
        (
            "soa_missing",
            "query_name: nothere.example.org\nquery_type: SOA\nvalid_rcodes: [NXDOMAIN]",
        ),
        ("a", "query_name: example.org\nquery_type: A"),
    ]))
    .await;
    let s = lk.probe("soa", &server.udp.to_string()).await;
    assert_success(&s, 1.0);
    assert_eq!(s.value("probe_dns_serial"), f64::from(SERIAL));
    // Asked for SOA, none in the answer (it is in the authority section): present at 0.
    let s = lk.probe("soa_missing", &server.udp.to_string()).await;
    assert_success(&s, 1.0);
    assert_eq!(s.value("probe_dns_serial"), 0.0);
    assert_eq!(s.value("probe_dns_authority_rrs"), 1.0);
    // Other query types never carry the family.
    let s = lk.probe("a", &server.udp.to_string()).await;
    assert!(s.get("probe_dns_serial").is_none(), "{}", s.text);
}

#[tokio::test]
async fn nxdomain_fails_unless_valid_rcodes_allow_it() {
    let server = dns_target::start(None).await;
    let lk = Lookout::start(&config(&[
        ("default", "query_name: missing.example.org\nquery_type: A"),
        (
            "nx_ok",
            "query_name: missing.example.org\nquery_type: A\nvalid_rcodes: [NOERROR, NXDOMAIN]",
        ),
        (
            "noerror_refused",
            "query_name: example.org\nquery_type: A\nvalid_rcodes: [NXDOMAIN]",
        ),
    ]))
    .await;
    let target = server.udp.to_string();
    let s = lk.probe("default", &target).await;
    assert_success(&s, 0.0);
    // The query itself worked: blackbox reports that separately from the rcode check.
    assert_eq!(s.value("probe_dns_query_succeeded"), 1.0);
    assert_eq!(s.value("probe_dns_answer_rrs"), 0.0);
    assert_success(&lk.probe("nx_ok", &target).await, 1.0);
    assert_success(&lk.probe("noerror_refused", &target).await, 0.0);
}

#[tokio::test]
async fn servfail_against_valid_rcodes() {
    let addr = udp_responder(|q, _| Some(rcode_reply(q, ResponseCode::ServFail))).await;
    let lk = Lookout::start(&config(&[
        ("default", "query_name: example.org"),
        (
            "servfail_ok",
            "query_name: example.org\nvalid_rcodes: [SERVFAIL]",
        ),
    ]))
    .await;
    let s = lk.probe("default", &addr.to_string()).await;
    assert_success(&s, 0.0);
    assert_eq!(s.value("probe_dns_query_succeeded"), 1.0);
    assert!(
        lk.debug("default", &addr.to_string())
            .await
            .contains("rcode SERVFAIL is not one of the valid rcodes")
    );
    assert_success(&lk.probe("servfail_ok", &addr.to_string()).await, 1.0);
}

/// Each answer-section check on the two A records (192.0.2.1 and .2), pass and fail.
#[tokio::test]
async fn validate_answer_rrs_options_pass_and_fail() {
    let server = dns_target::start(None).await;
    let q = "query_name: example.org\nquery_type: A\nvalidate_answer_rrs:\n";
    let cases: &[(&str, &str, f64)] = &[
        (
            "matches_fail",
            r"  fail_if_matches_regexp: ['192\.0\.2\.2$']",
            0.0,
        ),
        (
            "matches_pass",
            r"  fail_if_matches_regexp: ['203\.0\.113\.']",
            1.0,
        ),
        // blackbox 0.23: fails when *not* all records match.
        (
            "all_fail",
            r"  fail_if_all_match_regexp: ['192\.0\.2\.1$']",
            0.0,
        ),
        (
            "all_pass",
            r"  fail_if_all_match_regexp: ['\tIN\tA\t192\.0\.2\.[12]$']",
            1.0,
        ),
        (
            "not_fail",
            r"  fail_if_not_matches_regexp: ['192\.0\.2\.1$']",
            0.0,
        ),
        (
            "not_pass",
            r"  fail_if_not_matches_regexp: ['^example\.org\.\t3600\tIN\tA\t192\.0\.2\.[12]$']",
            1.0,
        ),
        (
            "none_fail",
            r"  fail_if_none_matches_regexp: ['203\.0\.113\.']",
            0.0,
        ),
        (
            "none_pass",
            r"  fail_if_none_matches_regexp: ['192\.0\.2\.2$']",
            1.0,
        ),
    ];
    let modules: Vec<(&str, String)> = cases
        .iter()
        .map(|(name, v, _)| (*name, format!("{q}{v}")))
        .collect();
    let refs: Vec<(&str, &str)> = modules.iter().map(|(n, m)| (*n, m.as_str())).collect();
    let lk = Lookout::start(&config(&refs)).await;
    for (name, _, expected) in cases {
        let s = lk.probe(name, &server.udp.to_string()).await;
        assert_eq!(
            s.value("probe_success"),
            *expected,
            "module {name}:\n{}",
            s.text
        );
        assert_eq!(s.value("probe_dns_query_succeeded"), 1.0);
    }
}

/// Every record type the zone holds, matched against its miekg/dns text exactly.
#[tokio::test]
async fn records_render_as_miekg_prints_them() {
    let server = dns_target::start(None).await;
    let exact = |qname: &str, qtype: &str, re: &str| {
        format!(
            "query_name: {qname}\nquery_type: {qtype}\nvalidate_answer_rrs:\n  fail_if_none_matches_regexp: ['^{re}$']"
        )
    };
    let modules = [
        (
            "a",
            exact(
                "example.org",
                "A",
                r"example\.org\.\t3600\tIN\tA\t192\.0\.2\.1",
            ),
        ),
        (
            "aaaa",
            exact(
                "example.org",
                "AAAA",
                r"example\.org\.\t3600\tIN\tAAAA\t2001:db8::1",
            ),
        ),
        (
            "mx",
            exact(
                "example.org",
                "MX",
                r"example\.org\.\t3600\tIN\tMX\t10 mail\.example\.org\.",
            ),
        ),
        (
            "txt",
            exact(
                "example.org",
                "TXT",
                r#"example\.org\.\t3600\tIN\tTXT\t"v=spf1 -all""#,
            ),
        ),
        (
            "soa",
            exact(
                "example.org",
                "SOA",
                r"example\.org\.\t3600\tIN\tSOA\tns1\.example\.org\. hostmaster\.example\.org\. 2024010101 7200 3600 1209600 300",
            ),
        ),
        (
            "ns",
            exact(
                "example.org",
                "NS",
                r"example\.org\.\t3600\tIN\tNS\tns1\.example\.org\.",
            ),
        ),
        (
            "cname",
            exact(
                "www.example.org",
                "A",
                r"www\.example\.org\.\t3600\tIN\tCNAME\texample\.org\.",
            ),
        ),
    ];
    let refs: Vec<(&str, &str)> = modules.iter().map(|(n, m)| (*n, m.as_str())).collect();
    let lk = Lookout::start(&config(&refs)).await;
    for (name, _) in &modules {
        let s = lk.probe(name, &server.udp.to_string()).await;
        if s.value("probe_success") != 1.0 {
            panic!(
                "module {name}:\n{}",
                lk.debug(name, &server.udp.to_string()).await
            );
        }
    }
}

#[tokio::test]
async fn validate_authority_and_additional_rrs() {
    let server = dns_target::start(None).await;
    let nx = "query_name: missing.example.org\nquery_type: A\nvalid_rcodes: [NXDOMAIN]\n";
    let mx = "query_name: example.org\nquery_type: MX\n";
    let soa = r"'\tIN\tSOA\tns1\.example\.org\. hostmaster\.example\.org\. 2024010101 '";
    let modules = [
        (
            "auth_pass",
            format!("{nx}validate_authority_rrs:\n  fail_if_not_matches_regexp: [{soa}]"),
        ),
        (
            "auth_fail",
            format!("{nx}validate_authority_rrs:\n  fail_if_matches_regexp: [{soa}]"),
        ),
        (
            "auth_empty_fail",
            format!("{mx}validate_authority_rrs:\n  fail_if_none_matches_regexp: ['SOA']"),
        ),
        (
            "additional_pass",
            format!(
                "{mx}validate_additional_rrs:\n  fail_if_none_matches_regexp: ['^mail\\.example\\.org\\.\\t3600\\tIN\\tA\\t192\\.0\\.2\\.25$']"
            ),
        ),
        (
            "additional_fail",
            format!("{mx}validate_additional_rrs:\n  fail_if_matches_regexp: ['192\\.0\\.2\\.25']"),
        ),
    ];
    let refs: Vec<(&str, &str)> = modules.iter().map(|(n, m)| (*n, m.as_str())).collect();
    let lk = Lookout::start(&config(&refs)).await;
    let target = server.udp.to_string();
    for (name, expected) in [
        ("auth_pass", 1.0),
        ("auth_fail", 0.0),
        ("auth_empty_fail", 0.0),
        ("additional_pass", 1.0),
        ("additional_fail", 0.0),
    ] {
        let s = lk.probe(name, &target).await;
        if s.value("probe_success") != expected {
            panic!("module {name}:\n{}", lk.debug(name, &target).await);
        }
    }
}

#[tokio::test]
async fn recursion_desired_is_sent_as_configured() {
    // Refuses queries without RD, as a recursive resolver would answer a stub.
    let addr = udp_responder(|q, _| {
        let rd = q.get(2).is_some_and(|b| b & 0x01 == 1);
        let rcode = if rd {
            ResponseCode::NoError
        } else {
            ResponseCode::Refused
        };
        Some(rcode_reply(q, rcode))
    })
    .await;
    let lk = Lookout::start(&config(&[
        ("rd", "query_name: example.org"),
        ("no_rd", "query_name: example.org\nrecursion_desired: false"),
    ]))
    .await;
    assert_success(&lk.probe("rd", &addr.to_string()).await, 1.0);
    assert_success(&lk.probe("no_rd", &addr.to_string()).await, 0.0);
}

#[tokio::test]
async fn silent_udp_server_fails_at_the_deadline() {
    let addr = udp_responder(|_, _| None).await;
    let lk = Lookout::start(
        "modules:\n  m:\n    prober: dns\n    timeout: 1s\n    dns:\n      query_name: example.org\n",
    )
    .await;
    let s = lk.probe("m", &addr.to_string()).await;
    assert_success(&s, 0.0);
    assert_eq!(s.value("probe_dns_query_succeeded"), 0.0);
    assert_eq!(s.families(), DNS_FAMILIES);
}

#[tokio::test]
async fn reply_with_another_id_is_not_taken_for_the_answer() {
    let addr = udp_responder(|q, _| {
        let mut reply = rcode_reply(q, ResponseCode::NoError);
        reply[0] ^= 0xFF;
        Some(reply)
    })
    .await;
    let lk = Lookout::start(
        "modules:\n  m:\n    prober: dns\n    timeout: 1s\n    dns:\n      query_name: example.org\n",
    )
    .await;
    let s = lk.probe("m", &addr.to_string()).await;
    assert_success(&s, 0.0);
    assert_eq!(s.value("probe_dns_query_succeeded"), 0.0);
}

#[tokio::test]
async fn garbage_replies_fail_the_probe() {
    // The right id, then a header promising an answer and bytes that are not one.
    let udp = udp_responder(|q, _| {
        let mut reply = query_id(q).to_vec();
        reply.extend_from_slice(&[0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0, 0xC0, 0xFF, 0xFF]);
        Some(reply)
    })
    .await;
    let short = udp_responder(|q, _| Some(query_id(q).to_vec())).await;
    // A valid reply longer than 512 bytes: blackbox's client reads 512 bytes of a datagram (it
    // sends no EDNS), so the cut reply fails to decode there and here.
    let long = udp_responder(|q, _| {
        let mut reply = Message::from_vec(&rcode_reply(q, ResponseCode::NoError)).unwrap();
        let txt = TXT::new(vec!["x".repeat(250), "y".repeat(250)]);
        reply.add_answer(Record::from_rdata(
            Name::from_str("example.org.").unwrap(),
            60,
            RData::TXT(txt),
        ));
        Some(reply.to_vec().unwrap())
    })
    .await;
    // TCP: a length prefix promising more than is sent, then close.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            // Read the whole query first, so closing does not reset the connection.
            let len = stream.read_u16().await.unwrap_or(0);
            let mut query = vec![0u8; usize::from(len)];
            let _ = stream.read_exact(&mut query).await;
            let _ = stream.write_all(&[0xFF, 0xFF, 1, 2, 3]).await;
            let _ = stream.shutdown().await;
        }
    });
    let lk = Lookout::start(&config(&[
        ("udp", "query_name: example.org"),
        ("tcp", "query_name: example.org\ntransport_protocol: tcp"),
    ]))
    .await;
    for (module, target) in [("udp", udp), ("udp", short), ("udp", long), ("tcp", tcp)] {
        let s = lk.probe(module, &target.to_string()).await;
        assert_success(&s, 0.0);
        assert_eq!(s.value("probe_dns_query_succeeded"), 0.0);
        let debug = lk.debug(module, &target.to_string()).await;
        assert!(
            debug.contains("invalid DNS response") || debug.contains("closed the connection"),
            "{debug}"
        );
    }
}

#[tokio::test]
async fn dns_over_tls_verifies_the_server() {
    let ca = Ca::new("lookout test CA");
    let leaf = ca.leaf(&["dns.test", "127.0.0.1"]).build();
    let server = dns_target::start(Some(&leaf)).await;
    let tls = server.tls.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let dot = |extra: &str| {
        format!(
            "query_name: example.org\nquery_type: A\ntransport_protocol: tcp\ndns_over_tls: true\ntls_config:\n  ca_file: {}\n{extra}",
            ca_file.display()
        )
    };
    let modules = [
        ("dot", dot("")),
        ("dot_name", dot("  server_name: dns.test")),
        ("dot_wrong_name", dot("  server_name: other.test")),
        (
            "dot_untrusted",
            "query_name: example.org\ntransport_protocol: tcp\ndns_over_tls: true".to_owned(),
        ),
    ];
    let refs: Vec<(&str, &str)> = modules.iter().map(|(n, m)| (*n, m.as_str())).collect();
    let lk = Lookout::start_in(dir, &config(&refs)).await;
    // The target's host (an IP here) is the server name by default.
    let s = lk.probe("dot", &tls.to_string()).await;
    assert_success(&s, 1.0);
    assert_eq!(s.value("probe_dns_answer_rrs"), 2.0);
    // blackbox 0.23 reports no TLS families for DNS.
    assert_eq!(s.families(), DNS_FAMILIES);
    assert_success(&lk.probe("dot_name", &tls.to_string()).await, 1.0);
    for module in ["dot_wrong_name", "dot_untrusted"] {
        let s = lk.probe(module, &tls.to_string()).await;
        assert_success(&s, 0.0);
        assert_eq!(s.value("probe_dns_query_succeeded"), 0.0);
    }
}

#[tokio::test]
async fn source_ip_address_binds_the_local_socket() {
    // Answers only queries sent from 127.0.0.2 (any 127/8 address is local on loopback).
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let udp = udp_responder(move |q, peer| {
        (peer.ip() == source).then(|| rcode_reply(q, ResponseCode::NoError))
    })
    .await;
    let server = dns_target::start(None).await;
    let lk = Lookout::start(
        "modules:\n  from2:\n    prober: dns\n    timeout: 1s\n    dns:\n      query_name: example.org\n      source_ip_address: 127.0.0.2\n  from2_tcp:\n    prober: dns\n    timeout: 1s\n    dns:\n      query_name: example.org\n      query_type: A\n      transport_protocol: tcp\n      source_ip_address: 127.0.0.2\n  default:\n    prober: dns\n    timeout: 1s\n    dns:\n      query_name: example.org\n  from_v6:\n    prober: dns\n    timeout: 1s\n    dns:\n      query_name: example.org\n      source_ip_address: \"::1\"\n",
    )
    .await;
    assert_success(&lk.probe("from2", &udp.to_string()).await, 1.0);
    assert_success(&lk.probe("from2_tcp", &server.tcp.to_string()).await, 1.0);
    // From 127.0.0.1 the responder stays silent, and an IPv6 source cannot reach an IPv4 target.
    assert_success(&lk.probe("default", &udp.to_string()).await, 0.0);
    assert_success(&lk.probe("from_v6", &udp.to_string()).await, 0.0);
}
