//! dns prober scenarios: the authoritative hickory-server of `support::dns_target` (zone
//! `example.org.`, UDP/TCP/DoT on loopback) and bare UDP responders, probed through both
//! exporters. The regular expressions are written against miekg/dns's `RR.String()` text
//! (`owner\tTTL\tCLASS\tTYPE\trdata`), which is what blackbox matches.
//!
//! The zone's addresses (192.0.2.x, 2001:db8::1) are record contents only: every query goes to
//! 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record};

use crate::runner::Scenario;
use crate::support::certs::Ca;
use crate::support::dns_target::{self, rcode_reply, udp_responder};

/// A dns module: IPv4 first (targets are 127.0.0.1), a 5 s module timeout, plus `dns_extra`
/// (YAML lines at the level of the `dns:` section's keys, unindented).
fn dns_module(dns_extra: &str) -> String {
    let mut yaml = String::from("prober: dns\ntimeout: 5s\ndns:\n  preferred_ip_protocol: ip4\n");
    for line in dns_extra.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// `query_name`/`query_type` lines for a module.
fn query(name: &str, qtype: &str) -> String {
    format!("query_name: {name}\nquery_type: {qtype}\n")
}

/// Probes the zone server's UDP port with `dns_extra`, expecting blackbox's `probe_success`.
async fn zone_udp(name: &'static str, dns_extra: &str, success: bool) {
    let server = dns_target::start(None).await;
    Scenario::new(name, dns_module(dns_extra))
        .expect_success(success)
        .probe(&server.udp.to_string())
        .await;
}

// --- Queries that succeed -------------------------------------------------------------------

#[tokio::test]
async fn dns_a_udp() {
    zone_udp("dns_a_udp", &query("example.org", "A"), true).await;
}

#[tokio::test]
async fn dns_a_tcp() {
    let server = dns_target::start(None).await;
    Scenario::new(
        "dns_a_tcp",
        dns_module(&format!(
            "{}transport_protocol: tcp",
            query("example.org", "A")
        )),
    )
    .expect_success(true)
    .probe(&server.tcp.to_string())
    .await;
}

#[tokio::test]
async fn dns_aaaa() {
    zone_udp("dns_aaaa", &query("example.org", "AAAA"), true).await;
}

#[tokio::test]
async fn dns_mx() {
    zone_udp("dns_mx", &query("example.org", "MX"), true).await;
}

#[tokio::test]
async fn dns_txt() {
    zone_udp("dns_txt", &query("example.org", "TXT"), true).await;
}

/// `probe_dns_serial` appears for SOA queries, set from the answer's SOA.
#[tokio::test]
async fn dns_soa_serial() {
    zone_udp("dns_soa_serial", &query("example.org", "SOA"), true).await;
}

/// A SOA query whose answer holds no SOA (it is in the authority section of the NXDOMAIN):
/// blackbox registers `probe_dns_serial` and leaves it at 0.
#[tokio::test]
async fn dns_soa_missing_name() {
    zone_udp(
        "dns_soa_missing_name",
        &format!(
            "{}valid_rcodes: [NXDOMAIN]",
            query("missing.example.org", "SOA")
        ),
        true,
    )
    .await;
}

/// An A query for a CNAME owner: the answer holds the CNAME (and the target's A records).
#[tokio::test]
async fn dns_cname() {
    zone_udp("dns_cname", &query("www.example.org", "A"), true).await;
}

/// No `query_type`: blackbox asks for ANY.
#[tokio::test]
async fn dns_default_query_type_any() {
    zone_udp(
        "dns_default_query_type_any",
        "query_name: example.org",
        true,
    )
    .await;
}

/// No `dns:` settings besides the name: ip6 preferred with fallback resolves the IPv4 literal.
#[tokio::test]
async fn dns_default_ip_protocol() {
    let server = dns_target::start(None).await;
    Scenario::new(
        "dns_default_ip_protocol",
        "prober: dns\ntimeout: 5s\ndns:\n  query_name: example.org\n  query_type: A\n",
    )
    .expect_success(true)
    .probe(&server.udp.to_string())
    .await;
}

// --- Response codes ---------------------------------------------------------------------------

#[tokio::test]
async fn dns_nxdomain_default_rcodes_fail() {
    zone_udp(
        "dns_nxdomain_default_rcodes_fail",
        &query("missing.example.org", "A"),
        false,
    )
    .await;
}

#[tokio::test]
async fn dns_nxdomain_valid_rcodes_pass() {
    zone_udp(
        "dns_nxdomain_valid_rcodes_pass",
        &format!(
            "{}valid_rcodes: [NXDOMAIN]",
            query("missing.example.org", "A")
        ),
        true,
    )
    .await;
}

/// NOERROR is not valid when `valid_rcodes` lists only NXDOMAIN.
#[tokio::test]
async fn dns_noerror_not_in_valid_rcodes() {
    zone_udp(
        "dns_noerror_not_in_valid_rcodes",
        &format!("{}valid_rcodes: [NXDOMAIN]", query("example.org", "A")),
        false,
    )
    .await;
}

#[tokio::test]
async fn dns_servfail_fails() {
    let addr = udp_responder(|q, _| Some(rcode_reply(q, ResponseCode::ServFail))).await;
    Scenario::new("dns_servfail_fails", dns_module(&query("example.org", "A")))
        .expect_success(false)
        .probe(&addr.to_string())
        .await;
}

#[tokio::test]
async fn dns_servfail_valid_rcodes_pass() {
    let addr = udp_responder(|q, _| Some(rcode_reply(q, ResponseCode::ServFail))).await;
    Scenario::new(
        "dns_servfail_valid_rcodes_pass",
        dns_module(&format!(
            "{}valid_rcodes: [SERVFAIL]",
            query("example.org", "A")
        )),
    )
    .expect_success(true)
    .probe(&addr.to_string())
    .await;
}

// --- recursion_desired ------------------------------------------------------------------------

/// A responder that answers NOERROR only to queries *without* RD, and REFUSED otherwise, so
/// the RD bit each exporter sends decides the outcome.
async fn rd_sensitive_responder() -> SocketAddr {
    udp_responder(|q, _| {
        let rd = q.get(2).is_some_and(|b| b & 0x01 == 1);
        let rcode = if rd {
            ResponseCode::Refused
        } else {
            ResponseCode::NoError
        };
        Some(rcode_reply(q, rcode))
    })
    .await
}

#[tokio::test]
async fn dns_recursion_desired_false() {
    let addr = rd_sensitive_responder().await;
    Scenario::new(
        "dns_recursion_desired_false",
        dns_module(&format!(
            "{}recursion_desired: false",
            query("example.org", "A")
        )),
    )
    .note("the responder answers NOERROR without RD and REFUSED with RD")
    .expect_success(true)
    .probe(&addr.to_string())
    .await;
}

#[tokio::test]
async fn dns_recursion_desired_default() {
    let addr = rd_sensitive_responder().await;
    Scenario::new(
        "dns_recursion_desired_default",
        dns_module(&query("example.org", "A")),
    )
    .note("the responder answers NOERROR without RD and REFUSED with RD")
    .expect_success(false)
    .probe(&addr.to_string())
    .await;
}

// --- validate_answer_rrs ----------------------------------------------------------------------
// The A query answers `example.org.\t3600\tIN\tA\t192.0.2.1` and `...192.0.2.2`.

/// An A query for example.org with one `validate_answer_rrs` option.
fn answer_check(option: &str, regex: &str) -> String {
    format!(
        "{}validate_answer_rrs:\n  {option}: ['{regex}']",
        query("example.org", "A")
    )
}

#[tokio::test]
async fn dns_answer_fail_if_matches_pass() {
    zone_udp(
        "dns_answer_fail_if_matches_pass",
        &answer_check("fail_if_matches_regexp", r"\tIN\tA\t203\.0\.113\."),
        true,
    )
    .await;
}

#[tokio::test]
async fn dns_answer_fail_if_matches_fail() {
    zone_udp(
        "dns_answer_fail_if_matches_fail",
        &answer_check(
            "fail_if_matches_regexp",
            r"example\.org\.\t3600\tIN\tA\t192\.0\.2\.2",
        ),
        false,
    )
    .await;
}

/// 0.23's quirk: `fail_if_all_match_regexp` fails when *not* every record matches, so every
/// record matching passes.
#[tokio::test]
async fn dns_answer_fail_if_all_match_pass_when_all_match() {
    zone_udp(
        "dns_answer_fail_if_all_match_pass_when_all_match",
        &answer_check(
            "fail_if_all_match_regexp",
            r"^example\.org\.\t3600\tIN\tA\t192\.0\.2\.[12]$",
        ),
        true,
    )
    .await;
}

/// 0.23's quirk, the other side: one of the two records does not match, so the probe fails.
#[tokio::test]
async fn dns_answer_fail_if_all_match_fail_when_one_differs() {
    zone_udp(
        "dns_answer_fail_if_all_match_fail_when_one_differs",
        &answer_check(
            "fail_if_all_match_regexp",
            r"example\.org\.\t3600\tIN\tA\t192\.0\.2\.1$",
        ),
        false,
    )
    .await;
}

/// 0.23's quirk with no records at all: nothing fails to match, so the check passes.
#[tokio::test]
async fn dns_answer_fail_if_all_match_empty_answer() {
    zone_udp(
        "dns_answer_fail_if_all_match_empty_answer",
        &format!(
            "{}valid_rcodes: [NXDOMAIN]\nvalidate_answer_rrs:\n  fail_if_all_match_regexp: ['.*']",
            query("missing.example.org", "A")
        ),
        true,
    )
    .await;
}

#[tokio::test]
async fn dns_answer_fail_if_not_matches_pass() {
    zone_udp(
        "dns_answer_fail_if_not_matches_pass",
        &answer_check(
            "fail_if_not_matches_regexp",
            r"^example\.org\.\t3600\tIN\tA\t192\.0\.2\.[12]$",
        ),
        true,
    )
    .await;
}

#[tokio::test]
async fn dns_answer_fail_if_not_matches_fail() {
    zone_udp(
        "dns_answer_fail_if_not_matches_fail",
        &answer_check(
            "fail_if_not_matches_regexp",
            r"example\.org\.\t3600\tIN\tA\t192\.0\.2\.1",
        ),
        false,
    )
    .await;
}

#[tokio::test]
async fn dns_answer_fail_if_none_matches_pass() {
    zone_udp(
        "dns_answer_fail_if_none_matches_pass",
        &answer_check(
            "fail_if_none_matches_regexp",
            r"example\.org\.\t3600\tIN\tA\t192\.0\.2\.1",
        ),
        true,
    )
    .await;
}

#[tokio::test]
async fn dns_answer_fail_if_none_matches_fail() {
    zone_udp(
        "dns_answer_fail_if_none_matches_fail",
        &answer_check(
            "fail_if_none_matches_regexp",
            r"example\.org\.\t3600\tIN\tA\t203\.0\.113\.1",
        ),
        false,
    )
    .await;
}

/// Exact texts of the other record types, each through `fail_if_none_matches_regexp`.
#[tokio::test]
async fn dns_answer_record_texts() {
    let server = dns_target::start(None).await;
    // One module can only hold one query, so each type is its own pair of exporters.
    for (name, qname, qtype, regex) in [
        (
            "dns_answer_record_texts_aaaa",
            "example.org",
            "AAAA",
            r"^example\.org\.\t3600\tIN\tAAAA\t2001:db8::1$",
        ),
        (
            "dns_answer_record_texts_mx",
            "example.org",
            "MX",
            r"^example\.org\.\t3600\tIN\tMX\t10 mail\.example\.org\.$",
        ),
        (
            "dns_answer_record_texts_txt",
            "example.org",
            "TXT",
            r#"^example\.org\.\t3600\tIN\tTXT\t"v=spf1 -all"$"#,
        ),
        (
            "dns_answer_record_texts_soa",
            "example.org",
            "SOA",
            r"^example\.org\.\t3600\tIN\tSOA\tns1\.example\.org\. hostmaster\.example\.org\. 2024010101 7200 3600 1209600 300$",
        ),
        (
            "dns_answer_record_texts_ns",
            "example.org",
            "NS",
            r"^example\.org\.\t3600\tIN\tNS\tns1\.example\.org\.$",
        ),
        (
            "dns_answer_record_texts_cname",
            "www.example.org",
            "A",
            r"^www\.example\.org\.\t3600\tIN\tCNAME\texample\.org\.$",
        ),
    ] {
        Scenario::new(
            name,
            dns_module(&format!(
                "{}validate_answer_rrs:\n  fail_if_none_matches_regexp: ['{regex}']",
                query(qname, qtype)
            )),
        )
        .expect_success(true)
        .probe(&server.udp.to_string())
        .await;
    }
}

// --- validate_authority_rrs / validate_additional_rrs -----------------------------------------

/// The SOA the zone puts in the authority section of an NXDOMAIN.
const AUTHORITY_SOA: &str =
    r"^example\.org\.\t3600\tIN\tSOA\tns1\.example\.org\. hostmaster\.example\.org\. 2024010101 ";

fn authority_check(option: &str) -> String {
    format!(
        "{}valid_rcodes: [NXDOMAIN]\nvalidate_authority_rrs:\n  {option}: ['{AUTHORITY_SOA}']",
        query("missing.example.org", "A")
    )
}

#[tokio::test]
async fn dns_authority_pass() {
    zone_udp(
        "dns_authority_pass",
        &authority_check("fail_if_not_matches_regexp"),
        true,
    )
    .await;
}

#[tokio::test]
async fn dns_authority_fail() {
    zone_udp(
        "dns_authority_fail",
        &authority_check("fail_if_matches_regexp"),
        false,
    )
    .await;
}

/// The MX answer carries the exchange's address as additional data.
const ADDITIONAL_MAIL: &str = r"^mail\.example\.org\.\t3600\tIN\tA\t192\.0\.2\.25$";

fn additional_check(option: &str) -> String {
    format!(
        "{}validate_additional_rrs:\n  {option}: ['{ADDITIONAL_MAIL}']",
        query("example.org", "MX")
    )
}

#[tokio::test]
async fn dns_additional_pass() {
    zone_udp(
        "dns_additional_pass",
        &additional_check("fail_if_none_matches_regexp"),
        true,
    )
    .await;
}

#[tokio::test]
async fn dns_additional_fail() {
    zone_udp(
        "dns_additional_fail",
        &additional_check("fail_if_matches_regexp"),
        false,
    )
    .await;
}

/// `fail_if_not_matches_regexp` on an empty section fails ("specified but no RRs returned").
#[tokio::test]
async fn dns_additional_empty_section_fails() {
    zone_udp(
        "dns_additional_empty_section_fails",
        &format!(
            "{}validate_additional_rrs:\n  fail_if_not_matches_regexp: ['.*']",
            query("example.org", "TXT")
        ),
        false,
    )
    .await;
}

// --- Transport failures -----------------------------------------------------------------------

/// The server never answers; the 1 s scrape timeout (less blackbox's 0.5 s offset) ends it.
#[tokio::test]
async fn dns_silent_udp_server() {
    let addr = udp_responder(|_, _| None).await;
    Scenario::new(
        "dns_silent_udp_server",
        dns_module(&query("example.org", "A")),
    )
    .scrape_timeout(Some("1"))
    .expect_success(false)
    .probe(&addr.to_string())
    .await;
}

#[tokio::test]
async fn dns_tcp_connection_refused() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    Scenario::new(
        "dns_tcp_connection_refused",
        dns_module(&format!(
            "{}transport_protocol: tcp",
            query("example.org", "A")
        )),
    )
    .expect_success(false)
    .probe(&format!("127.0.0.1:{port}"))
    .await;
}

// --- Target forms -----------------------------------------------------------------------------

/// `127.0.0.1` without a port means port 53. Binding 127.0.0.1:53 needs privileges and a free
/// port; without them the scenario is skipped with a notice.
#[tokio::test]
async fn dns_target_without_port() {
    let socket = match tokio::net::UdpSocket::bind("127.0.0.1:53").await {
        Ok(socket) => socket,
        Err(e) => {
            eprintln!(
                "SKIPPED compat scenario dns_target_without_port: cannot bind 127.0.0.1:53 ({e})"
            );
            return;
        }
    };
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&a_reply(&buf[..n]), peer).await;
        }
    });
    Scenario::new(
        "dns_target_without_port",
        dns_module(&format!(
            "{}validate_answer_rrs:\n  fail_if_none_matches_regexp: ['^example\\.org\\.\\t300\\tIN\\tA\\t192\\.0\\.2\\.1$']",
            query("example.org", "A")
        )),
    )
    .note("a responder on 127.0.0.1:53 answers example.org. 300 IN A 192.0.2.1")
    .expect_success(true)
    .probe("127.0.0.1")
    .await;
}

/// A NOERROR reply to `query` holding `example.org. 300 IN A 192.0.2.1`.
fn a_reply(query: &[u8]) -> Vec<u8> {
    let mut reply = Message::from_vec(&rcode_reply(query, ResponseCode::NoError)).unwrap();
    reply.add_answer(Record::from_rdata(
        Name::from_str("example.org.").unwrap(),
        300,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
    ));
    reply.to_vec().unwrap()
}

// --- DNS over TLS -----------------------------------------------------------------------------

/// 0.23 supports `dns_over_tls` (with `transport_protocol: tcp`); the server name defaults to
/// the target's host, here the IP literal, which Go verifies against the leaf's IP SAN.
#[tokio::test]
async fn dns_over_tls() {
    let ca = Ca::new("lookout compat CA");
    let leaf = ca.leaf(&["127.0.0.1", "localhost"]).build();
    let server = dns_target::start(Some(&leaf)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    Scenario::new(
        "dns_over_tls",
        dns_module(&format!(
            "{}transport_protocol: tcp\ndns_over_tls: true\ntls_config:\n  ca_file: {}",
            query("example.org", "A"),
            ca_file.display()
        )),
    )
    .dir(dir)
    .expect_success(true)
    .probe(&server.tls.unwrap().to_string())
    .await;
}

/// DoT against a server whose certificate the module does not trust.
#[tokio::test]
async fn dns_over_tls_untrusted() {
    let ca = Ca::new("lookout compat CA");
    let leaf = ca.leaf(&["127.0.0.1", "localhost"]).build();
    let server = dns_target::start(Some(&leaf)).await;
    Scenario::new(
        "dns_over_tls_untrusted",
        dns_module(&format!(
            "{}transport_protocol: tcp\ndns_over_tls: true",
            query("example.org", "A")
        )),
    )
    .expect_success(false)
    .probe(&server.tls.unwrap().to_string())
    .await;
}
