//! The example dependency modules in config/examples/dependencies.yml against real local
//! servers, and the scheduler running dependency probes like any other.

use std::time::Duration;

use crate::support::certs::Ca;
use crate::support::daemon::{self, Daemon};
use crate::support::http_target::{HttpTarget, Route};
use crate::support::lookout::Lookout;
use crate::support::pg::{self, Pg};
use crate::support::samples::Samples;
use crate::support::tcp_target::{self, Step};

/// The shipped examples, with `ca_file` added to the STARTTLS modules so they trust `ca`.
fn examples_trusting(ca_file: &std::path::Path) -> String {
    let text = std::fs::read_to_string("config/examples/dependencies.yml").unwrap();
    let mut doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    for name in ["smtp_starttls", "imap_starttls"] {
        let tcp = &mut doc["modules"][name]["tcp"];
        let mut tls = serde_norway::Mapping::new();
        tls.insert("ca_file".into(), ca_file.to_str().unwrap().into());
        tcp.as_mapping_mut()
            .unwrap()
            .insert("tls_config".into(), tls.into());
    }
    serde_norway::to_string(&doc).unwrap()
}

fn send(s: &str) -> Step {
    Step::Send(s.to_owned())
}

#[tokio::test]
async fn shipped_tcp_and_http_examples_work_against_local_servers() {
    let ca = Ca::new("lookout test CA");
    let leaf = ca.leaf(&["127.0.0.1"]).build();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let lk = Lookout::start_in(dir, &examples_trusting(&ca_file)).await;

    let ssh = tcp_target::start(
        vec![
            send("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"),
            Step::Hold,
        ],
        None,
        false,
    )
    .await;
    let s = lk.probe("ssh_banner", &ssh.host_port()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);

    let smtp = tcp_target::start(
        vec![
            send("220 mail.lan ESMTP Postfix\r\n"),
            Step::Read,
            send("250-mail.lan\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"),
            Step::Read,
            send("220 2.0.0 Ready to start TLS\r\n"),
            Step::StartTls,
            Step::Read,
            send("250-mail.lan\r\n250 AUTH PLAIN\r\n"),
            Step::Read,
            send("221 2.0.0 Bye\r\n"),
        ],
        Some(&leaf),
        false,
    )
    .await;
    let s = lk.probe("smtp_starttls", &smtp.host_port()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(
        s.value("probe_ssl_earliest_cert_expiry"),
        leaf.not_after as f64
    );
    assert_eq!(
        smtp.received(),
        [
            "EHLO lookout.invalid",
            "STARTTLS",
            "EHLO lookout.invalid",
            "QUIT"
        ]
    );

    let imap = tcp_target::start(
        vec![
            send("* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n"),
            Step::Read,
            send("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\na1 OK Pre-login capabilities listed\r\n"),
            Step::Read,
            send("a2 OK Begin TLS negotiation now.\r\n"),
            Step::StartTls,
            Step::Read,
            send("* BYE Logging out\r\na3 OK Logout completed.\r\n"),
        ],
        Some(&leaf),
        false,
    )
    .await;
    let s = lk.probe("imap_starttls", &imap.host_port()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.series("probe_tls_version_info").len(), 1);

    let app = HttpTarget::new()
        .route("/health", Route::ok(r#"{"status": "ok", "db": "up"}"#))
        .route(
            "/degraded",
            Route::ok(r#"{"status":"down","db":"unreachable"}"#),
        )
        .start()
        .await;
    let s = lk.probe("http_json_health", &app.url("/health")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    let s = lk.probe("http_json_health", &app.url("/degraded")).await;
    assert_eq!(
        (
            s.value("probe_success"),
            s.value("probe_failed_due_to_regex")
        ),
        (0.0, 1.0)
    );
}

fn success_of(s: &Samples, target: &str) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| {
            x.name == "probe_success" && x.labels.get("target").map(String::as_str) == Some(target)
        })
        .map(|x| x.value)
}

/// An anonymous mosquitto on a free loopback port; `None` when mosquitto is not installed.
fn mosquitto(dir: &std::path::Path) -> Option<Daemon> {
    let bin = daemon::binary(
        "mosquitto",
        &["/usr/sbin/mosquitto"],
        "mosquitto",
        "dependencies",
    )?;
    Some(Daemon::start("mosquitto", dir, 1, |ports| {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\nuser root\n",
                ports[0]
            ),
        )
        .unwrap();
        let mut c = std::process::Command::new(&bin);
        c.arg("-c").arg(&conf);
        c
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_runs_dependency_checks_and_shows_a_failure_within_an_interval() {
    let Some(pg) = Pg::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = mosquitto(dir.path()) else {
        return;
    };
    let yaml = format!(
        "modules:\n  pg:\n    prober: postgres\n    timeout: 2s\n    postgres:\n      user: {}\n      password: {}\n      database: {}\n      sslmode: disable\n      query: SELECT max(at) FROM events\n      max_age: 5m\n  mqtt:\n    prober: mqtt\n    timeout: 2s\n    mqtt: {{}}\ndefaults:\n  interval: 1s\ntargets:\n  - {{name: teslamate-db, module: pg, target: \"{}\"}}\n  - {{name: teslamate-mqtt, module: mqtt, target: \"{}\"}}\n",
        pg::USER,
        pg::PASSWORD,
        pg::DATABASE,
        pg.target(),
        broker.target()
    );
    let lk = Lookout::start(&yaml).await;
    let mut last = String::new();
    let mut both_up = false;
    for _ in 0..200 {
        last = lk.get("/metrics").await.body;
        let s = Samples::parse(&last);
        if success_of(&s, "teslamate-db") == Some(1.0)
            && success_of(&s, "teslamate-mqtt") == Some(1.0)
        {
            assert!(
                s.samples.iter().any(|x| x.name == "probe_data_age_seconds"),
                "{last}"
            );
            both_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(both_up, "dependencies never reported up:\n{last}");

    // The broker dies: the next probe (one interval) shows it on /metrics.
    broker.stop();
    let mut down = false;
    for _ in 0..100 {
        let s = Samples::parse(&lk.get("/metrics").await.body);
        if success_of(&s, "teslamate-mqtt") == Some(0.0) {
            assert_eq!(success_of(&s, "teslamate-db"), Some(1.0));
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(down, "the dead broker never showed as failed");
}
