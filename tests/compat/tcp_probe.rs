//! tcp prober scenarios: a scripted line server on loopback (`support::tcp_target`), probed
//! through both exporters. Both exporters connect to the same server at the same time, so the
//! lines it records come from both; scenarios that check them expect every line twice.

use crate::runner::Scenario;
use crate::support::certs::{self, Ca, DAY, Leaf};
use crate::support::tcp_target::{self, Step, TcpTarget};

/// Organization put in every leaf subject, so `subject` labels carry CN and O.
const LEAF_ORG: &str = "lookout compat";

/// A tcp module: IPv4 first (targets are 127.0.0.1), a 5 s module timeout, plus `tcp_extra`
/// (YAML lines at the level of the `tcp:` section's keys, unindented).
fn tcp_module(tcp_extra: &str) -> String {
    let mut yaml = String::from("prober: tcp\ntimeout: 5s\ntcp:\n  preferred_ip_protocol: ip4\n");
    for line in tcp_extra.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// A server leaf for 127.0.0.1 (IP SAN) that also names `localhost` (DNS SAN), issued by `ca`.
fn leaf_for_loopback(ca: &Ca) -> Leaf {
    ca.leaf(&["127.0.0.1", "localhost"])
        .organization(LEAF_ORG)
        .build()
}

/// A temp dir holding `ca`'s certificate, and the `tls_config` lines trusting it.
fn trusting(ca: &Ca) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = ca.write_to(dir.path());
    (dir, format!("tls_config:\n  ca_file: {}", path.display()))
}

fn send(s: &str) -> Step {
    Step::Send(s.to_owned())
}

/// Asserts the target read exactly `per_connection` from each of the two exporters, in order
/// per connection (connections interleave, so the comparison is on sorted lines).
fn assert_received_twice(name: &str, target: &TcpTarget, per_connection: &[&str]) {
    let mut got = target.received();
    let mut want: Vec<String> = per_connection
        .iter()
        .chain(per_connection)
        .map(|s| (*s).to_owned())
        .collect();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "compat scenario `{name}`: the target must read the same lines from both exporters"
    );
}

/// No query_response and no `tcp:` section at all: blackbox's defaults (ip6 preferred with
/// fallback) resolve the IPv4 literal.
#[tokio::test]
async fn plain_connect_default_module() {
    let target = tcp_target::start(vec![Step::Hold], None, false).await;
    Scenario::new("plain_connect_default_module", "prober: tcp\ntimeout: 5s\n")
        .expect_success(true)
        .probe(&target.host_port())
        .await;
}

#[tokio::test]
async fn plain_connect_ip4() {
    let target = tcp_target::start(vec![], None, false).await;
    Scenario::new("plain_connect_ip4", tcp_module(""))
        .expect_success(true)
        .probe(&target.host_port())
        .await;
}

#[tokio::test]
async fn connection_refused() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    Scenario::new("connection_refused", tcp_module(""))
        .expect_success(false)
        .probe(&format!("127.0.0.1:{port}"))
        .await;
}

/// blackbox splits host and port before resolving: no `probe_ip_protocol` and friends.
#[tokio::test]
async fn target_without_port() {
    Scenario::new("target_without_port", tcp_module(""))
        .expect_success(false)
        .probe("127.0.0.1")
        .await;
}

#[tokio::test]
async fn ssh_banner_matches() {
    let target = tcp_target::start(
        vec![send("SSH-2.0-OpenSSH_9.6 compat\r\n"), Step::Hold],
        None,
        false,
    )
    .await;
    Scenario::new(
        "ssh_banner_matches",
        tcp_module("query_response:\n  - expect: \"^SSH-2.0-\""),
    )
    .expect_success(true)
    .probe(&target.host_port())
    .await;
}

/// The banner does not match and the server closes: the scanner ends without a match, so
/// blackbox sets `probe_failed_due_to_regex 1`.
#[tokio::test]
async fn banner_mismatch_then_close() {
    let target = tcp_target::start(vec![send("220 not ssh at all\r\n")], None, false).await;
    Scenario::new(
        "banner_mismatch_then_close",
        tcp_module("query_response:\n  - expect: \"^SSH-2.0-\""),
    )
    .expect_success(false)
    .probe(&target.host_port())
    .await;
}

/// A last line without `\n` before the close is still a line for Go's scanner.
#[tokio::test]
async fn banner_without_newline_then_close() {
    let target = tcp_target::start(vec![send("SSH-2.0-NoNewline")], None, false).await;
    Scenario::new(
        "banner_without_newline_then_close",
        tcp_module("query_response:\n  - expect: \"^SSH-2.0-NoNewline$\""),
    )
    .expect_success(true)
    .probe(&target.host_port())
    .await;
}

/// `${1}` in `send` is expanded from the expect's match; the `\r` of the server's `\r\n` is
/// not part of the line (Go's `ScanLines` drops it), so it is not captured either.
#[tokio::test]
async fn capture_group_substitution() {
    let target = tcp_target::start(
        vec![
            send("NOTICE * :hello\r\n"),
            send("PING :token-42\r\n"),
            Step::Read,
            send("PONG accepted\r\n"),
            Step::Hold,
        ],
        None,
        false,
    )
    .await;
    Scenario::new(
        "capture_group_substitution",
        tcp_module(
            "query_response:\n  - expect: \"PING :([^ ]+)\"\n    send: \"PONG ${1}\"\n  - expect: \"^PONG accepted$\"",
        ),
    )
    .expect_success(true)
    .probe(&target.host_port())
    .await;
    assert_received_twice("capture_group_substitution", &target, &["PONG token-42"]);
}

/// The server script of an SMTP server offering STARTTLS, and the matching query_response.
fn smtp_starttls_script() -> Vec<Step> {
    vec![
        send("220 mail.compat.test ESMTP ready\r\n"),
        Step::Read,
        send("250-mail.compat.test\r\n250-STARTTLS\r\n250 SIZE 1000\r\n"),
        Step::Read,
        send("220 2.0.0 Ready to start TLS\r\n"),
        Step::StartTls,
        Step::Read,
        send("250-mail.compat.test\r\n250 SIZE 1000\r\n"),
        Step::Read,
        send("221 2.0.0 Bye\r\n"),
        Step::Hold,
    ]
}

const SMTP_QUERY: &str = "query_response:
  - expect: \"^220 \"
  - send: \"EHLO compat\"
  - expect: \"^250-STARTTLS\"
  - send: \"STARTTLS\"
  - expect: \"^220 \"
  - starttls: true
  - send: \"EHLO compat\"
  - expect: \"^250 \"
  - send: \"QUIT\"
  - expect: \"^221 \"";

/// The TLS families (version, chain info, expiries) come from the STARTTLS handshake.
#[tokio::test]
async fn smtp_starttls() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = leaf_for_loopback(&ca);
    let target = tcp_target::start(smtp_starttls_script(), Some(&leaf), false).await;
    let (dir, tls) = trusting(&ca);
    Scenario::new("smtp_starttls", tcp_module(&format!("{SMTP_QUERY}\n{tls}")))
        .dir(dir)
        .expect_success(true)
        .probe(&target.host_port())
        .await;
    assert_received_twice(
        "smtp_starttls",
        &target,
        &["EHLO compat", "STARTTLS", "EHLO compat", "QUIT"],
    );
}

/// STARTTLS to a server whose certificate does not name 127.0.0.1: the handshake fails, no
/// TLS family is registered.
#[tokio::test]
async fn smtp_starttls_wrong_hostname() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = ca
        .leaf(&["wrong.compat.test"])
        .organization(LEAF_ORG)
        .build();
    let target = tcp_target::start(smtp_starttls_script(), Some(&leaf), false).await;
    let (dir, tls) = trusting(&ca);
    Scenario::new(
        "smtp_starttls_wrong_hostname",
        tcp_module(&format!("{SMTP_QUERY}\n{tls}")),
    )
    .dir(dir)
    .expect_success(false)
    .probe(&target.host_port())
    .await;
}

/// `tls: true`: TLS from the first byte, then a banner read over TLS.
#[tokio::test]
async fn tls_from_start() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = leaf_for_loopback(&ca);
    let target = tcp_target::start(
        vec![send("* OK IMAP4rev1 compat ready\r\n"), Step::Hold],
        Some(&leaf),
        true,
    )
    .await;
    let (dir, tls) = trusting(&ca);
    Scenario::new(
        "tls_from_start",
        tcp_module(&format!(
            "tls: true\nquery_response:\n  - expect: \"^\\\\* OK\"\n{tls}"
        )),
    )
    .dir(dir)
    .expect_success(true)
    .probe(&target.host_port())
    .await;
}

/// `tls: true` against a certificate for another name: the dial fails.
#[tokio::test]
async fn tls_wrong_hostname() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = ca
        .leaf(&["wrong.compat.test"])
        .organization(LEAF_ORG)
        .build();
    let target = tcp_target::start(vec![Step::Hold], Some(&leaf), true).await;
    let (dir, tls) = trusting(&ca);
    Scenario::new(
        "tls_wrong_hostname",
        tcp_module(&format!("tls: true\n{tls}")),
    )
    .dir(dir)
    .expect_success(false)
    .probe(&target.host_port())
    .await;
}

/// `tls_config.server_name` overrides the target's host for verification.
#[tokio::test]
async fn tls_server_name_from_config() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let leaf = ca.leaf(&["localhost"]).organization(LEAF_ORG).build();
    let target = tcp_target::start(vec![Step::Hold], Some(&leaf), true).await;
    let (dir, tls) = trusting(&ca);
    Scenario::new(
        "tls_server_name_from_config",
        tcp_module(&format!("tls: true\n{tls}\n  server_name: localhost")),
    )
    .dir(dir)
    .expect_success(true)
    .probe(&target.host_port())
    .await;
}

/// A server that accepts and never writes: with a 1 s scrape timeout both give up waiting for
/// the banner (a read deadline, not a regex failure).
#[tokio::test]
async fn silent_server_times_out() {
    let target = tcp_target::start(vec![Step::Hold], None, false).await;
    Scenario::new(
        "silent_server_times_out",
        tcp_module("query_response:\n  - expect: \"^220\""),
    )
    .scrape_timeout(Some("1"))
    .expect_success(false)
    .probe(&target.host_port())
    .await;
}

/// Named groups, `$$` and a group that does not exist: Go's `Regexp.Expand` rules.
#[tokio::test]
async fn named_capture_group_and_dollar() {
    let target = tcp_target::start(
        vec![
            send("HELLO user=alice id=7\r\n"),
            Step::Read,
            send("OK\r\n"),
            Step::Hold,
        ],
        None,
        false,
    )
    .await;
    Scenario::new(
        "named_capture_group_and_dollar",
        tcp_module(
            "query_response:\n  - expect: \"user=(?P<user>[a-z]+) id=([0-9]+)\"\n    send: \"LOGIN ${user} $2 $$5 [${9}]\"\n  - expect: \"^OK$\"",
        ),
    )
    .expect_success(true)
    .probe(&target.host_port())
    .await;
    assert_received_twice(
        "named_capture_group_and_dollar",
        &target,
        &["LOGIN alice 7 $5 []"],
    );
}

/// The first expect matches, then the server closes before the second one's line.
#[tokio::test]
async fn second_expect_after_close() {
    let target = tcp_target::start(vec![send("220 hello\r\n")], None, false).await;
    Scenario::new(
        "second_expect_after_close",
        tcp_module("query_response:\n  - expect: \"^220\"\n  - expect: \"^250\""),
    )
    .expect_success(false)
    .probe(&target.host_port())
    .await;
}

/// A line longer than Go's `bufio.MaxScanTokenSize` (64 KiB): the scanner stops with an
/// error, which is not a regex failure.
#[tokio::test]
async fn line_longer_than_64k() {
    let long = format!("{}\r\n", "x".repeat(70 * 1024));
    let target = tcp_target::start(vec![send(&long), Step::Hold], None, false).await;
    Scenario::new(
        "line_longer_than_64k",
        tcp_module("query_response:\n  - expect: \"^220\""),
    )
    .expect_success(false)
    .probe(&target.host_port())
    .await;
}

/// `insecure_skip_verify` with a self-signed leaf: no verified chain, so blackbox reports the
/// zero time for the last chain's expiry.
#[tokio::test]
async fn tls_insecure_skip_verify_self_signed() {
    let leaf = certs::self_signed(&["127.0.0.1", "localhost"]);
    let target = tcp_target::start(vec![Step::Hold], Some(&leaf), true).await;
    Scenario::new(
        "tls_insecure_skip_verify_self_signed",
        tcp_module("tls: true\ntls_config:\n  insecure_skip_verify: true"),
    )
    .expect_success(true)
    .probe(&target.host_port())
    .await;
}

/// A leaf issued by an intermediate that expires before it: the chain families see the
/// intermediate (sent in the handshake).
#[tokio::test]
async fn tls_chain_with_intermediate() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let now = certs::now_unix();
    let intermediate =
        ca.intermediate_with_validity("lookout compat intermediate", now - DAY, now + 10 * DAY);
    let leaf = intermediate
        .leaf(&["127.0.0.1", "localhost"])
        .organization(LEAF_ORG)
        .build();
    let target = tcp_target::start(vec![Step::Hold], Some(&leaf), true).await;
    let (dir, tls) = trusting(&ca);
    Scenario::new(
        "tls_chain_with_intermediate",
        tcp_module(&format!("tls: true\n{tls}")),
    )
    .dir(dir)
    .expect_success(true)
    .probe(&target.host_port())
    .await;
}

/// An expired leaf: verification fails, the probe fails.
#[tokio::test]
async fn tls_expired_certificate() {
    let ca = Ca::new(certs::TEST_CA_NAME);
    let now = certs::now_unix();
    let leaf = ca
        .leaf(&["127.0.0.1", "localhost"])
        .organization(LEAF_ORG)
        .not_before(now - 10 * DAY)
        .not_after(now - DAY)
        .build();
    let target = tcp_target::start(vec![Step::Hold], Some(&leaf), true).await;
    let (dir, tls) = trusting(&ca);
    Scenario::new(
        "tls_expired_certificate",
        tcp_module(&format!("tls: true\n{tls}")),
    )
    .dir(dir)
    .expect_success(false)
    .probe(&target.host_port())
    .await;
}
