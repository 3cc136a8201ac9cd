use crate::support::certs::{Ca, DAY, now_unix};
use crate::support::lookout::Lookout;
use crate::support::tcp_target::{self, Step};

fn send(s: &str) -> Step {
    Step::Send(s.to_owned())
}

#[tokio::test]
async fn connect_and_ssh_banner() {
    let server = tcp_target::start(
        vec![send("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"), Step::Hold],
        None,
        false,
    )
    .await;
    let lk = Lookout::start(
        "modules:\n  tcp_connect:\n    prober: tcp\n    tcp:\n      preferred_ip_protocol: ip4\n  ssh:\n    prober: tcp\n    timeout: 2s\n    tcp:\n      query_response:\n        - expect: \"^SSH-2.0-\"\n  ftp:\n    prober: tcp\n    timeout: 2s\n    tcp:\n      query_response:\n        - expect: \"^220 \"\n",
    )
    .await;
    let s = lk.probe("tcp_connect", &server.host_port()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_ip_protocol"), 4.0);
    assert_eq!(s.value("probe_failed_due_to_regex"), 0.0);
    assert_eq!(
        s.families(),
        [
            "probe_dns_lookup_time_seconds",
            "probe_duration_seconds",
            "probe_failed_due_to_regex",
            "probe_ip_addr_hash",
            "probe_ip_protocol",
            "probe_success"
        ]
    );
    let s = lk.probe("ssh", &server.host_port()).await;
    assert_eq!(
        (
            s.value("probe_success"),
            s.value("probe_failed_due_to_regex")
        ),
        (1.0, 0.0),
        "{}",
        s.text
    );
    // A banner that never matches: the server holds the connection, so the deadline ends it
    // (blackbox reads until the deadline too) and the regex is not reported as failed.
    let s = lk.probe("ftp", &server.host_port()).await;
    assert_eq!(s.value("probe_success"), 0.0);
}

#[tokio::test]
async fn banner_then_close_without_match_sets_failed_due_to_regex() {
    let server = tcp_target::start(vec![send("hello\r\n")], None, false).await;
    let lk = Lookout::start("modules:\n  m:\n    prober: tcp\n    tcp:\n      query_response:\n        - expect: \"^220\"\n").await;
    let s = lk.probe("m", &server.host_port()).await;
    assert_eq!(
        (
            s.value("probe_success"),
            s.value("probe_failed_due_to_regex")
        ),
        (0.0, 1.0),
        "{}",
        s.text
    );
}

#[tokio::test]
async fn capture_groups_are_substituted_into_the_next_send() {
    let server = tcp_target::start(
        vec![
            send("PING :token-4711\r\n"),
            Step::Read,
            send("welcome\r\n"),
            Step::Hold,
        ],
        None,
        false,
    )
    .await;
    let lk = Lookout::start(
        "modules:\n  m:\n    prober: tcp\n    timeout: 2s\n    tcp:\n      query_response:\n        - expect: \"PING :([^ ]+)\"\n          send: \"PONG ${1}\"\n        - expect: \"^welcome\"\n",
    )
    .await;
    let s = lk.probe("m", &server.host_port()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(server.received(), ["PONG token-4711"]);
}

#[tokio::test]
async fn expect_labels_and_bytes() {
    let server = tcp_target::start(
        vec![send("SSH-2.0-OpenSSH_9.2\r\n+OK\n"), Step::Hold],
        None,
        false,
    )
    .await;
    let lk = Lookout::start(
        "modules:\n  m:\n    prober: tcp\n    timeout: 2s\n    tcp:\n      query_response:\n        - expect: \"^SSH-2.0-([^ ]+)\"\n          labels:\n            - name: version\n              value: \"${1}\"\n        - expect_bytes: \"+OK\"\n",
    )
    .await;
    let s = lk.probe("m", &server.host_port()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(
        s.get_with("probe_expect_info", &[("version", "OpenSSH_9.2")]),
        Some(1.0),
        "{}",
        s.text
    );
    assert_eq!(s.value("probe_failed_due_to_bytes"), 0.0);
}

#[tokio::test]
async fn smtp_starttls_records_certificate_metrics() {
    let ca = Ca::new("lookout test CA");
    let expiry = now_unix() + 40 * DAY;
    let leaf = ca
        .leaf(&["localhost", "127.0.0.1"])
        .not_after(expiry)
        .build();
    let server = tcp_target::start(
        vec![
            send("220 mail.test ESMTP\r\n"),
            Step::Read,
            send("250-mail.test\r\n250-STARTTLS\r\n250 OK\r\n"),
            Step::Read,
            send("220 2.0.0 Ready to start TLS\r\n"),
            Step::StartTls,
            Step::Read,
            send("221 bye\r\n"),
        ],
        Some(&leaf),
        false,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let yaml = format!(
        "modules:\n  smtp:\n    prober: tcp\n    timeout: 5s\n    tcp:\n      tls_config:\n        ca_file: {}\n      query_response:\n        - expect: \"^220 \"\n        - send: \"EHLO prober\\r\"\n        - expect: \"^250-STARTTLS\"\n        - send: \"STARTTLS\\r\"\n        - expect: \"^220\"\n        - starttls: true\n        - send: \"QUIT\\r\"\n        - expect: \"^221\"\n",
        ca_file.display()
    );
    let lk = Lookout::start_in(dir, &yaml).await;
    let s = lk.probe("smtp", &server.host_port()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_ssl_earliest_cert_expiry"), expiry as f64);
    assert_eq!(
        s.value("probe_ssl_last_chain_expiry_timestamp_seconds"),
        expiry as f64
    );
    assert_eq!(s.series("probe_tls_version_info").len(), 1);
    assert_eq!(server.received(), ["EHLO prober", "STARTTLS", "QUIT"]);
}

#[tokio::test]
async fn tls_from_the_start_and_wrong_hostname() {
    let ca = Ca::new("lookout test CA");
    let good = ca.leaf(&["127.0.0.1"]).build();
    let wrong = ca.leaf(&["elsewhere.test"]).build();
    let ok_server = tcp_target::start(
        vec![send("+OK POP3 ready\r\n"), Step::Hold],
        Some(&good),
        true,
    )
    .await;
    let bad_server = tcp_target::start(
        vec![send("+OK POP3 ready\r\n"), Step::Hold],
        Some(&wrong),
        true,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let yaml = format!(
        "modules:\n  pop3s:\n    prober: tcp\n    timeout: 2s\n    tcp:\n      tls: true\n      tls_config:\n        ca_file: {}\n      query_response:\n        - expect: \"^\\\\+OK\"\n",
        ca_file.display()
    );
    let lk = Lookout::start_in(dir, &yaml).await;
    let s = lk.probe("pop3s", &ok_server.host_port()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert!(s.types.contains_key("probe_ssl_last_chain_info"));
    let s = lk.probe("pop3s", &bad_server.host_port()).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert!(
        !s.types.contains_key("probe_ssl_last_chain_info"),
        "{}",
        s.text
    );
    assert!(
        lk.debug("pop3s", &bad_server.host_port())
            .await
            .contains("NotValidForName")
    );
}

#[tokio::test]
async fn silent_server_fails_at_the_deadline_and_bad_targets_fail() {
    let server = tcp_target::start(vec![Step::Hold], None, false).await;
    let lk = Lookout::start(
        "modules:\n  m:\n    prober: tcp\n    timeout: 1s\n    tcp:\n      query_response:\n        - expect: \"^220\"\n",
    )
    .await;
    let s = lk.probe("m", &server.host_port()).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert!(s.value("probe_duration_seconds") < 30.0);
    assert!(
        lk.debug("m", &server.host_port())
            .await
            .contains("timed out")
    );
    // No port: blackbox fails before resolving.
    let s = lk.probe("m", "127.0.0.1").await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert!(!s.types.contains_key("probe_ip_protocol"));
}
