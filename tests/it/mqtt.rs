use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::support::certs::{Ca, Leaf};
use crate::support::daemon::{self, Daemon};
use crate::support::lookout::Lookout;

const PROBE_USER: (&str, &str) = ("probe", "probe-pw");
/// May subscribe under lookout/ but not publish there.
const READER_USER: (&str, &str) = ("reader", "reader-pw");
/// Has no topic at all.
const DENIED_USER: (&str, &str) = ("denied", "denied-pw");

const ACL: &str = "user probe
topic readwrite lookout/#
topic readwrite sensors/#

user reader
topic read lookout/#

user denied
topic read nothing-here
";

/// A mosquitto of our own: password file, ACL, a plain listener and optionally a TLS one.
struct Broker {
    daemon: Daemon,
    dir: tempfile::TempDir,
    /// The TLS listener's port and the CA that signed its certificate.
    tls: Option<(u16, Ca, Leaf)>,
}

impl Broker {
    fn target(&self) -> String {
        self.daemon.target()
    }

    fn tls_target(&self) -> String {
        format!("127.0.0.1:{}", self.tls.as_ref().expect("a TLS listener").0)
    }

    fn ca_file(&self) -> String {
        let (_, ca, _) = self.tls.as_ref().expect("a TLS listener");
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert_pem()).unwrap();
        path.display().to_string()
    }
}

fn passwd(mosquitto_passwd: &Path, file: &Path, create: bool, (user, pw): (&str, &str)) {
    let mut cmd = Command::new(mosquitto_passwd);
    if create {
        cmd.arg("-c");
    }
    let status = cmd.arg("-b").arg(file).arg(user).arg(pw).status().unwrap();
    assert!(status.success(), "mosquitto_passwd for {user} failed");
}

/// Starts a broker, or `None` when mosquitto is not installed (outside CI).
fn broker(test: &str, with_tls: bool) -> Option<Broker> {
    let bin = daemon::binary("mosquitto", &["/usr/sbin/mosquitto"], "mosquitto", test)?;
    let pw_bin = daemon::binary(
        "mosquitto_passwd",
        &["/usr/bin/mosquitto_passwd"],
        "mosquitto",
        test,
    )?;
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("passwd");
    passwd(&pw_bin, &pwfile, true, PROBE_USER);
    passwd(&pw_bin, &pwfile, false, READER_USER);
    passwd(&pw_bin, &pwfile, false, DENIED_USER);
    let acl = dir.path().join("acl");
    std::fs::write(&acl, ACL).unwrap();
    let tls = with_tls.then(|| {
        let ca = Ca::new("lookout mqtt test CA");
        let leaf = ca.leaf(&["localhost", "127.0.0.1"]).build();
        (ca, leaf)
    });
    let conf = dir.path().join("mosquitto.conf");
    let dir_path = dir.path().to_path_buf();
    let daemon = Daemon::start(
        "mosquitto",
        dir.path(),
        if with_tls { 2 } else { 1 },
        |ports| {
            // Global settings first, then the listeners. `user root` keeps mosquitto from switching
            // to the `mosquitto` user, which could not read this test's private temp dir.
            let mut text = format!(
                "per_listener_settings false\n\
             allow_anonymous false\n\
             password_file {}\n\
             acl_file {}\n\
             persistence false\n\
             user root\n\
             log_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n\
             listener {} 127.0.0.1\n",
                pwfile.display(),
                acl.display(),
                ports[0],
            );
            if let Some((_, leaf)) = &tls {
                let (cert, key) = leaf.write_to(&dir_path);
                text.push_str(&format!(
                    "listener {} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                    ports[1],
                    cert.display(),
                    key.display()
                ));
            }
            std::fs::write(&conf, text).unwrap();
            let mut cmd = Command::new(&bin);
            cmd.arg("-c").arg(&conf);
            cmd
        },
    );
    let tls = tls.map(|(ca, leaf)| (daemon.ports[1], ca, leaf));
    Some(Broker { daemon, dir, tls })
}

/// Publishes one message as the probe user with rumqttc's own client, waiting for its PUBACK.
async fn publish(port: u16, topic: &str, payload: &str, retain: bool) {
    let mut opts = MqttOptions::new(format!("test-pub-{port}"), "127.0.0.1", port);
    opts.set_credentials(PROBE_USER.0, PROBE_USER.1);
    let (client, mut events) = AsyncClient::new(opts, 10);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("publishing to the test broker: {e}"),
            }
        }
    })
    .await
    .expect("the test publisher got its PUBACK");
    client.disconnect().await.unwrap();
    // Drive the DISCONNECT out.
    let _ = tokio::time::timeout(Duration::from_secs(2), events.poll()).await;
}

/// A publisher sending a (non-retained) message every 100 ms until dropped.
fn publish_continuously(port: u16, topic: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut opts = MqttOptions::new("test-ticker", "127.0.0.1", port);
        opts.set_credentials(PROBE_USER.0, PROBE_USER.1);
        let (client, mut events) = AsyncClient::new(opts, 10);
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        for n in 0.. {
            let _ = client
                .publish(topic, QoS::AtMostOnce, false, format!("{n}").into_bytes())
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn module(name: &str, timeout: &str, body: &str) -> String {
    format!("  {name}:\n    prober: mqtt\n    timeout: {timeout}\n    mqtt:\n{body}")
}

fn creds((user, pw): (&str, &str)) -> String {
    format!("      username: {user}\n      password: {pw}\n      preferred_ip_protocol: ip4\n")
}

fn config(modules: &[String]) -> String {
    format!("modules:\n{}", modules.concat())
}

#[tokio::test]
async fn round_trip_succeeds_and_disconnects_cleanly() {
    let Some(b) = broker("mqtt round trip", false) else {
        return;
    };
    let lk = Lookout::start(&config(&[
        module(
            "v311",
            "5s",
            &format!("{}      client_id: lookout-rt-311\n", creds(PROBE_USER)),
        ),
        module(
            "v5",
            "5s",
            &format!(
                "{}      client_id: lookout-rt-5\n      protocol_version: 5\n      qos: 0\n",
                creds(PROBE_USER)
            ),
        ),
    ]))
    .await;
    for (module, id) in [("v311", "lookout-rt-311"), ("v5", "lookout-rt-5")] {
        let s = lk.probe(module, &b.target()).await;
        assert_eq!(s.value("probe_success"), 1.0, "{module}: {}", s.text);
        assert_eq!(s.value("probe_mqtt_connack_code"), 0.0, "{}", s.text);
        for phase in ["resolve", "connect", "tls", "subscribe", "round_trip"] {
            assert!(
                s.get_with("probe_mqtt_duration_seconds", &[("phase", phase)])
                    .is_some(),
                "{module}: no {phase} phase in {}",
                s.text
            );
        }
        assert!(s.get("probe_tls_version_info").is_none());
        assert_eq!(s.value("probe_ip_protocol"), 4.0);
        // mosquitto logs a DISCONNECT as "disconnected" and a dropped socket as "closed its
        // connection".
        let clean = format!("Client {id} disconnected");
        let mut log = String::new();
        for _ in 0..100 {
            log = b.daemon.output();
            if log.contains(&clean) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            log.contains(&clean),
            "{module}: no clean DISCONNECT in\n{log}"
        );
        assert!(
            !log.contains(&format!("Client {id} closed its connection")),
            "{log}"
        );
    }
}

#[tokio::test]
async fn wrong_password_records_the_connack_code() {
    let Some(b) = broker("mqtt wrong password", false) else {
        return;
    };
    let lk = Lookout::start(&config(&[
        module("v311", "5s", &creds(("probe", "nope"))),
        module(
            "v5",
            "5s",
            &format!("{}      protocol_version: 5\n", creds(("probe", "nope"))),
        ),
    ]))
    .await;
    // 3.1.1: 5 (not authorized); 5: 0x86 (134, bad user name or password) or 0x87.
    for (module, codes) in [("v311", &[4.0, 5.0][..]), ("v5", &[134.0, 135.0][..])] {
        let s = lk.probe(module, &b.target()).await;
        assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
        let code = s.value("probe_mqtt_connack_code");
        assert!(
            codes.contains(&code),
            "{module}: connack {code}\n{}",
            s.text
        );
    }
}

#[tokio::test]
async fn an_acl_that_denies_the_topic_fails_after_a_good_connect() {
    let Some(b) = broker("mqtt ACL", false) else {
        return;
    };
    let lk = Lookout::start(&config(&[
        // No topic at all: the subscription is refused (or never delivers).
        module("denied", "2s", &creds(DENIED_USER)),
        module(
            "denied_v5",
            "2s",
            &format!("{}      protocol_version: 5\n", creds(DENIED_USER)),
        ),
        // May subscribe but not publish: the message never comes back.
        module("reader", "2s", &creds(READER_USER)),
    ]))
    .await;
    for m in ["denied", "denied_v5", "reader"] {
        let s = lk.probe(m, &b.target()).await;
        assert_eq!(s.value("probe_success"), 0.0, "{m}: {}", s.text);
        assert_eq!(
            s.value("probe_mqtt_connack_code"),
            0.0,
            "{m}: the connection itself is accepted: {}",
            s.text
        );
        if m == "reader" {
            // The reader's subscription is granted: the failure is in the round trip.
            assert!(
                s.get_with("probe_mqtt_duration_seconds", &[("phase", "round_trip")])
                    .is_some_and(|v| v > 0.0),
                "{}",
                s.text
            );
        }
    }
}

#[tokio::test]
async fn a_stopped_broker_fails_with_no_connack() {
    let Some(mut b) = broker("mqtt stopped broker", false) else {
        return;
    };
    let lk = Lookout::start(&config(&[module("m", "3s", &creds(PROBE_USER))])).await;
    assert_eq!(lk.probe("m", &b.target()).await.value("probe_success"), 1.0);
    b.daemon.stop();
    let s = lk.probe("m", &b.target()).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert_eq!(s.value("probe_mqtt_connack_code"), -1.0);
}

#[tokio::test]
async fn a_broker_that_never_answers_fails_in_time_and_is_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    // Accepts, reads the CONNECT, never answers; reports what it read until the probe closed.
    let silent = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let res = s.read_to_end(&mut got).await;
        (got, res.is_ok())
    });
    let lk = Lookout::start(&config(&[module("m", "1s", &creds(PROBE_USER))])).await;
    let s = lk.probe("m", &target).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert_eq!(s.value("probe_mqtt_connack_code"), -1.0);
    let (got, clean_eof) = tokio::time::timeout(Duration::from_secs(10), silent)
        .await
        .expect("the probe closed the connection")
        .unwrap();
    assert_eq!(got.first(), Some(&0x10), "a CONNECT was sent first");
    assert!(clean_eof, "the connection ended with FIN, not a reset");
}

#[tokio::test]
async fn subscribe_mode_counts_retained_messages_unless_told_not_to() {
    let Some(b) = broker("mqtt subscribe mode", false) else {
        return;
    };
    publish(b.daemon.port(), "sensors/kitchen/temp", "21.5", true).await;
    let sub = |topic: &str, extra: &str| {
        format!(
            "{}      mode: subscribe\n      topic: '{topic}'\n{extra}",
            creds(PROBE_USER)
        )
    };
    let lk = Lookout::start(&config(&[
        module("retained", "3s", &sub("sensors/#", "")),
        module(
            "retained_v5",
            "3s",
            &sub("sensors/+/temp", "      protocol_version: 5\n"),
        ),
        module(
            "fresh_only",
            "1s",
            &sub("sensors/#", "      ignore_retained: true\n"),
        ),
        module("silent", "1s", &sub("sensors/attic/#", "")),
        module(
            "ticker",
            "5s",
            &sub(
                "sensors/ticker",
                "      ignore_retained: true\n      qos: 0\n",
            ),
        ),
    ]))
    .await;
    let t = b.target();

    for m in ["retained", "retained_v5"] {
        let s = lk.probe(m, &t).await;
        assert_eq!(s.value("probe_success"), 1.0, "{m}: {}", s.text);
        assert!(
            s.get_with("probe_mqtt_duration_seconds", &[("phase", "first_message")])
                .is_some(),
            "{}",
            s.text
        );
        assert!(
            s.get_with("probe_mqtt_duration_seconds", &[("phase", "round_trip")])
                .is_none()
        );
    }
    // Only the retained message exists: with ignore_retained nothing counts before the deadline.
    let s = lk.probe("fresh_only", &t).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert_eq!(s.value("probe_mqtt_connack_code"), 0.0);
    // No publisher at all.
    let s = lk.probe("silent", &t).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);

    // A live publisher counts even with ignore_retained.
    let ticker = publish_continuously(b.daemon.port(), "sensors/ticker");
    let s = lk.probe("ticker", &t).await;
    ticker.abort();
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
}

#[tokio::test]
async fn tls_listener_records_the_handshake() {
    let Some(b) = broker("mqtt TLS", true) else {
        return;
    };
    let ca_file = b.ca_file();
    let lk = Lookout::start(&config(&[
        module(
            "tls",
            "5s",
            &format!(
                "{}      tls: true\n      tls_config:\n        ca_file: {ca_file}\n",
                creds(PROBE_USER)
            ),
        ),
        // Without our CA the certificate is not trusted.
        module(
            "untrusted",
            "5s",
            &format!("{}      tls: true\n", creds(PROBE_USER)),
        ),
    ]))
    .await;
    let s = lk.probe("tls", &b.tls_target()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    let (_, _, leaf) = b.tls.as_ref().unwrap();
    assert_eq!(
        s.value("probe_ssl_earliest_cert_expiry"),
        leaf.not_after as f64
    );
    assert!(!s.series("probe_tls_version_info").is_empty(), "{}", s.text);
    assert!(
        s.get_with("probe_mqtt_duration_seconds", &[("phase", "tls")])
            .is_some_and(|v| v > 0.0),
        "{}",
        s.text
    );

    let s = lk.probe("untrusted", &b.tls_target()).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert_eq!(s.value("probe_mqtt_connack_code"), -1.0);
}
