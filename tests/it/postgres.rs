use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::support::certs::{Ca, TEST_CA_NAME};
use crate::support::lookout::Lookout;
use crate::support::pg::{DATABASE, PASSWORD, Pg, USER};

/// The modules for the shared, plain-text cluster; `pw.txt` is beside the config.
fn modules() -> String {
    let base = format!(
        "    prober: postgres
    timeout: 10s
    postgres:
      user: {USER}
      database: {DATABASE}
      preferred_ip_protocol: ip4
"
    );
    let with_password = format!("{base}      password: {PASSWORD}\n");
    let module = |name: &str, common: &str, extra: &str| format!("  {name}:\n{common}{extra}");
    [
        module("pg", &with_password, ""),
        module("pg_file", &base, "      password_file: pw.txt\n"),
        module("standby_check", &with_password, "      fail_if_in_recovery: true\n"),
        module(
            "count",
            &with_password,
            "      query: SELECT name FROM events ORDER BY name\n",
        ),
        module(
            "default_app_name",
            &with_password,
            "      query: SELECT 1 WHERE current_setting('application_name') = 'lookout'\n",
        ),
        module(
            "polite",
            &with_password,
            "      application_name: lookout-polite\n      query: SELECT 1\n",
        ),
        module("wrong_password", &base, "      password: not-the-password\n"),
        module("no_password", &base, ""),
        module(
            "unknown_db",
            &with_password.replace(&format!("database: {DATABASE}"), "database: nope"),
            "",
        ),
        module(
            "bad_query",
            &with_password,
            "      query: SELECT * FROM missing_table\n",
        ),
        module(
            "write",
            &with_password,
            "      query: INSERT INTO events VALUES ('new', now())\n",
        ),
        module("require", &with_password, "      sslmode: require\n"),
        module(
            "fresh",
            &with_password,
            "      query: SELECT at FROM events WHERE name = 'fresh'\n      max_age: 5m\n",
        ),
        module(
            "stale",
            &with_password,
            "      query: SELECT at FROM events WHERE name = 'stale'\n      max_age: 5m\n",
        ),
        module(
            "fresh_epoch",
            &with_password,
            "      query: SELECT extract(epoch FROM at) FROM events WHERE name = 'fresh'\n      max_age: 5m\n",
        ),
        module(
            "fresh_local",
            &with_password,
            "      query: SELECT at::timestamp FROM events WHERE name = 'fresh'\n      max_age: 5m\n",
        ),
        module(
            "null_age",
            &with_password,
            "      query: SELECT max(at) FROM events WHERE name = 'nothing'\n      max_age: 5m\n",
        ),
        module(
            "sleepy",
            &with_password.replace("timeout: 10s", "timeout: 1s"),
            "      application_name: lookout-sleepy\n      query: SELECT pg_sleep(60)\n",
        ),
    ]
    .iter()
    .fold("modules:\n".to_owned(), |acc, m| acc + m)
}

async fn lookout() -> Lookout {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw.txt"), format!("{PASSWORD}\n")).unwrap();
    Lookout::start_in(dir, &modules()).await
}

const PHASES: [&str; 5] = ["resolve", "connect", "tls", "auth", "query"];

#[tokio::test]
async fn a_healthy_server_is_reported() {
    let Some(pg) = Pg::shared() else { return };
    let lk = lookout().await;
    let t = pg.target();

    let s = lk.probe("pg", &t).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert!(
        s.value("probe_postgres_server_version_num") >= 90_600.0,
        "{}",
        s.text
    );
    assert_eq!(s.value("probe_postgres_in_recovery"), 0.0);
    assert_eq!(s.value("probe_ip_protocol"), 4.0);
    assert!(s.get("probe_ip_addr_hash").is_some());
    assert!(s.get("probe_dns_lookup_time_seconds").is_some());
    for phase in PHASES {
        assert!(
            s.get_with("probe_postgres_duration_seconds", &[("phase", phase)])
                .is_some(),
            "phase {phase}:\n{}",
            s.text
        );
    }
    // sslmode prefer against a server without TLS goes on in plain text.
    assert!(s.series("probe_tls_version_info").is_empty(), "{}", s.text);
    // Families of paths not taken.
    assert_eq!(s.get("probe_postgres_query_rows"), None);
    assert_eq!(s.get("probe_data_age_seconds"), None);

    let s = lk.probe("pg_file", &t).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    let s = lk.probe("standby_check", &t).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    let s = lk.probe("count", &t).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_postgres_query_rows"), 2.0);
    let s = lk.probe("default_app_name", &t).await;
    assert_eq!(s.value("probe_postgres_query_rows"), 1.0, "{}", s.text);

    // A finished probe ends its session (the wait only guards against a hang).
    let s = lk.probe("polite", &t).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    let start = std::time::Instant::now();
    while pg.sessions("lookout-polite") > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the session is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Probes `module` and checks it failed; returns the debug output (log and metrics).
async fn failed(lk: &Lookout, module: &str, target: &str) -> String {
    let s = lk.probe(module, target).await;
    assert_eq!(s.value("probe_success"), 0.0, "{module}: {}", s.text);
    lk.debug(module, target).await
}

#[tokio::test]
async fn failures_carry_the_servers_message() {
    let Some(pg) = Pg::shared() else { return };
    let lk = lookout().await;
    let t = pg.target();

    let s = lk.probe("wrong_password", &t).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    let auth = s
        .get_with("probe_postgres_duration_seconds", &[("phase", "auth")])
        .expect("auth phase");
    assert!(auth > 0.0, "{}", s.text);
    assert_eq!(s.get("probe_postgres_server_version_num"), None);
    let d = lk.debug("wrong_password", &t).await;
    assert!(d.contains("authentication failed"), "{d}");
    assert!(d.contains("28P01"), "{d}");
    assert!(d.contains("reason=assertion"), "{d}");
    // The password never reaches the debug output.
    assert!(!d.contains("not-the-password"), "{d}");

    let d = failed(&lk, "no_password", &t).await;
    assert!(d.contains("for a password and none is configured"), "{d}");

    let d = failed(&lk, "unknown_db", &t).await;
    assert!(d.contains("nope"), "{d}");
    assert!(d.contains("does not exist"), "{d}");
    assert!(d.contains("3D000"), "{d}");

    let d = failed(&lk, "bad_query", &t).await;
    assert!(d.contains("query failed"), "{d}");
    assert!(d.contains("missing_table"), "{d}");
    assert!(d.contains("42P01"), "{d}");
    assert!(!d.contains("probe_postgres_query_rows"), "{d}");

    // The query runs in a read-only transaction.
    let d = failed(&lk, "write", &t).await;
    assert!(d.contains("read-only transaction"), "{d}");
    assert!(d.contains("25006"), "{d}");

    let d = failed(&lk, "require", &t).await;
    assert!(d.contains("does not support TLS"), "{d}");
    assert!(d.contains("reason=tls"), "{d}");
}

#[tokio::test]
async fn freshness_is_checked_against_max_age() {
    let Some(pg) = Pg::shared() else { return };
    let lk = lookout().await;
    let t = pg.target();

    // A row written a minute before the cluster's setup finished: generous bounds, the age is
    // what is checked, not lookout's speed.
    for module in ["fresh", "fresh_epoch", "fresh_local"] {
        let s = lk.probe(module, &t).await;
        assert_eq!(s.value("probe_success"), 1.0, "{module}: {}", s.text);
        let age = s.value("probe_data_age_seconds");
        assert!((50.0..400.0).contains(&age), "{module}: age {age}");
        assert_eq!(s.value("probe_postgres_query_rows"), 1.0);
    }

    let s = lk.probe("stale", &t).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    let age = s.value("probe_data_age_seconds");
    assert!((3500.0..4000.0).contains(&age), "age {age}");
    let d = lk.debug("stale", &t).await;
    assert!(d.contains("older than max_age 5m"), "{d}");

    let d = failed(&lk, "null_age", &t).await;
    assert!(d.contains("is NULL"), "{d}");
    assert!(!d.contains("probe_data_age_seconds "), "{d}");
}

#[tokio::test]
async fn a_timed_out_query_leaves_no_session_behind() {
    let Some(pg) = Pg::shared() else { return };
    let lk = lookout().await;
    let t = pg.target();

    let d = failed(&lk, "sleepy", &t).await;
    assert!(d.contains("timed out"), "{d}");
    // Both probes' sessions go: the socket is closed when the deadline drops the probe, and the
    // query's statement_timeout stops the server's side. The wait only guards against a hang.
    let start = std::time::Instant::now();
    while pg.sessions("lookout-sleepy") > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "sessions of timed-out probes are still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_silent_server_times_out_and_is_hung_up_on() {
    // Accepts connections and never answers; reports when lookout closes each one.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                let _ = closed_tx.send(());
            });
        }
    });
    let lk = Lookout::start(&format!(
        "modules:
  silent:
    prober: postgres
    timeout: 1s
    postgres:
      user: {USER}
  silent_plain:
    prober: postgres
    timeout: 1s
    postgres:
      user: {USER}
      sslmode: disable
"
    ))
    .await;
    let t = addr.to_string();
    for module in ["silent", "silent_plain"] {
        let d = failed(&lk, module, &t).await;
        assert!(d.contains("timed out"), "{module}: {d}");
    }
    // Four probes, four connections, each closed by lookout (the wait only guards a hang).
    for _ in 0..4 {
        tokio::time::timeout(Duration::from_secs(30), closed.recv())
            .await
            .expect("lookout closed its connection")
            .unwrap();
    }
    server.abort();
}

#[tokio::test]
async fn sslmodes_against_a_tls_server() {
    let ca = Ca::new(TEST_CA_NAME);
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]).build();
    let Some(mut pg) = Pg::start(Some(&leaf)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let module = |name: &str, extra: &str| {
        format!(
            "  {name}:
    prober: postgres
    timeout: 10s
    postgres:
      user: {USER}
      password: {PASSWORD}
      database: {DATABASE}
{extra}"
        )
    };
    let ca_line = format!("        ca_file: {}\n", ca_file.display());
    let yaml = [
        module(
            "verify_full",
            &format!("      sslmode: verify-full\n      tls_config:\n{ca_line}"),
        ),
        module(
            "verify_full_wrong_name",
            &format!(
                "      sslmode: verify-full\n      tls_config:\n{ca_line}        server_name: elsewhere.test\n"
            ),
        ),
        module(
            "verify_ca_wrong_name",
            &format!(
                "      sslmode: verify-ca\n      tls_config:\n{ca_line}        server_name: elsewhere.test\n"
            ),
        ),
        module("verify_full_system_roots", "      sslmode: verify-full\n"),
        module("require", "      sslmode: require\n"),
        module("prefer", ""),
        module("disable", "      sslmode: disable\n"),
    ]
    .iter()
    .fold("modules:\n".to_owned(), |acc, m| acc + m);
    let lk = Lookout::start_in(dir, &yaml).await;
    let t = pg.target();

    let s = lk.probe("verify_full", &t).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert!(!s.series("probe_tls_version_info").is_empty(), "{}", s.text);
    assert!(!s.series("probe_tls_cipher_info").is_empty(), "{}", s.text);
    assert_eq!(
        s.value("probe_ssl_earliest_cert_expiry"),
        leaf.not_after as f64
    );
    assert_eq!(
        s.value("probe_ssl_last_chain_expiry_timestamp_seconds"),
        leaf.not_after.min(ca.not_after_unix()) as f64
    );
    assert!(
        s.get_with("probe_postgres_duration_seconds", &[("phase", "tls")])
            .unwrap()
            > 0.0
    );

    let d = failed(&lk, "verify_full_wrong_name", &t).await;
    assert!(d.contains("NotValidForName"), "{d}");
    assert!(d.contains("reason=tls"), "{d}");
    let d = failed(&lk, "verify_full_system_roots", &t).await;
    assert!(d.contains("UnknownIssuer"), "{d}");

    // verify-ca checks the chain only.
    let s = lk.probe("verify_ca_wrong_name", &t).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(
        s.value("probe_ssl_last_chain_expiry_timestamp_seconds"),
        leaf.not_after as f64
    );

    // require and prefer without a CA use TLS and verify nothing: no verified chain.
    for m in ["require", "prefer"] {
        let s = lk.probe(m, &t).await;
        assert_eq!(s.value("probe_success"), 1.0, "{m}: {}", s.text);
        assert!(
            !s.series("probe_tls_version_info").is_empty(),
            "{m}: {}",
            s.text
        );
        assert_eq!(
            s.value("probe_ssl_last_chain_expiry_timestamp_seconds"),
            -62_135_596_800.0
        );
    }

    let s = lk.probe("disable", &t).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert!(s.series("probe_tls_version_info").is_empty(), "{}", s.text);

    // A stopped server: the connection is refused.
    pg.stop();
    let d = failed(&lk, "verify_full", &t).await;
    assert!(d.contains("reason=connect"), "{d}");
}
