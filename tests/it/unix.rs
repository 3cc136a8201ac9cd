//! `prober: unix` against scripted servers on unix sockets in the test's own directory: the
//! `query_response` dialogue with labels, TLS from the start, a missing socket, and
//! `probe_access` deciding by path (links resolved).

use crate::support::certs::Ca;
use crate::support::lookout::{Lookout, q};
use crate::support::tcp_target::{Step, start_unix};

fn send(s: &str) -> Step {
    Step::Send(s.to_owned())
}

const DIALOGUE: &str = "      query_response:
        - expect: \"^220 \"
        - send: \"HELO lookout\"
        - expect: \"^250 ok version=(.+)$\"
          labels:
            - {name: version, value: \"${1}\"}
";

fn script() -> Vec<Step> {
    vec![
        send("220 app ready\n"),
        Step::Read,
        send("250 ok version=1.2.3\n"),
    ]
}

#[tokio::test]
async fn a_dialogue_over_a_unix_socket_with_labels_and_a_missing_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let server = start_unix(&sock, script(), None, false).await;
    let lk = Lookout::start(&format!(
        "modules:\n  app:\n    prober: unix\n    timeout: 5s\n    unix:\n{DIALOGUE}"
    ))
    .await;
    let s = lk.probe("app", sock.to_str().unwrap()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_failed_due_to_regex"), 0.0);
    assert_eq!(s.value("probe_failed_due_to_bytes"), 0.0);
    assert_eq!(
        s.get_with("probe_expect_info", &[("version", "1.2.3")]),
        Some(1.0),
        "{}",
        s.text
    );
    assert_eq!(server.received(), ["HELO lookout"]);

    let missing = dir.path().join("nothing.sock");
    let s = lk.probe("app", missing.to_str().unwrap()).await;
    assert_eq!(s.value("probe_success"), 0.0);
    let debug = lk.debug("app", missing.to_str().unwrap()).await;
    assert!(debug.contains("nothing.sock"), "{debug}");
}

#[tokio::test]
async fn tls_from_the_start_over_a_unix_socket_records_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("lookout unix CA");
    let leaf = ca.leaf(&["app.internal"]).build();
    let ca_file = ca.write_to(dir.path());
    let sock = dir.path().join("tls.sock");
    let _server = start_unix(&sock, script(), Some(&leaf), true).await;
    let lk = Lookout::start(&format!(
        "modules:\n  app:\n    prober: unix\n    timeout: 5s\n    unix:\n      tls: true\n      tls_config:\n        ca_file: {}\n        server_name: app.internal\n{DIALOGUE}",
        ca_file.display()
    ))
    .await;
    let s = lk.probe("app", sock.to_str().unwrap()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert!(
        s.value("probe_ssl_earliest_cert_expiry") > 1e9,
        "{}",
        s.text
    );
    assert_eq!(s.series("probe_tls_version_info").len(), 1, "{}", s.text);
}

#[tokio::test]
async fn probe_access_decides_unix_sockets_by_their_resolved_path() {
    let dir = tempfile::tempdir().unwrap();
    let allowed_dir = dir.path().join("allowed");
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&allowed_dir).unwrap();
    std::fs::create_dir_all(&other_dir).unwrap();
    let allowed = allowed_dir.join("app.sock");
    let secret = other_dir.join("secret.sock");
    let allowed_server = start_unix(&allowed, script(), None, false).await;
    let secret_server = start_unix(&secret, script(), None, false).await;
    // A link in the allowed directory to the other socket.
    let link = allowed_dir.join("link.sock");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let resolved_dir = std::fs::canonicalize(&allowed_dir).unwrap();
    let lk = Lookout::start(&format!(
        "modules:\n  app:\n    prober: unix\n    timeout: 5s\n    unix:\n{DIALOGUE}probe_access:\n  default: deny\n  allow_unix: [\"{}/\"]\n",
        resolved_dir.display()
    ))
    .await;
    let get = |p: &std::path::Path| format!("/probe?module=app&target={}", q(p.to_str().unwrap()));
    let ok = lk.get(&get(&allowed)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("probe_success 1"), "{}", ok.body);
    for refused in [&secret, &link, &allowed_dir.join("../other/secret.sock")] {
        let a = lk.get(&get(refused)).await;
        assert_eq!(a.status, 403, "{}: {}", refused.display(), a.body);
        assert!(
            a.body
                .starts_with("Probe refused by probe_access: unix socket ")
                && a.body
                    .contains("secret.sock is not covered by any allow_unix entry"),
            "{}",
            a.body
        );
    }
    assert_eq!(allowed_server.received().len(), 1);
    assert!(
        secret_server.received().is_empty(),
        "the refused socket was reached"
    );
    let m = lk.get("/metrics").await.body;
    assert!(
        m.contains("lookout_probe_access_refused_total{reason=\"default_deny\"} 3"),
        "{m}"
    );
}
