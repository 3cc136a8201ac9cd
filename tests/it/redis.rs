use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::certs::Ca;
use crate::support::daemon::{self, Daemon};
use crate::support::lookout::Lookout;

const PASSWORD: &str = "redis-test-pw";

/// A redis-server of our own with `requirepass`, no persistence, in a temp dir.
struct Server {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

/// What a test server should be.
#[derive(Default)]
struct Options {
    /// Replicate from this port (the replica authenticates with `PASSWORD`).
    replica_of: Option<u16>,
    /// Serve TLS only, with this CA's leaf for 127.0.0.1.
    tls: Option<Ca>,
}

fn start(test: &str, opts: Options) -> Option<Server> {
    let bin = daemon::binary(
        "redis-server",
        &["/usr/bin/redis-server"],
        "redis-server",
        test,
    )?;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("redis.conf");
    let dir_path = dir.path().to_path_buf();
    let tls_files = opts.tls.as_ref().map(|ca| {
        let leaf = ca.leaf(&["localhost", "127.0.0.1"]).build();
        let (cert, key) = leaf.write_to(&dir_path);
        let ca_file = dir_path.join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        (cert, key, ca_file)
    });
    let daemon = Daemon::start("redis-server", dir.path(), 1, |ports| {
        let mut text = format!(
            "bind 127.0.0.1\n\
             requirepass {PASSWORD}\n\
             save \"\"\n\
             appendonly no\n\
             dir {}\n\
             daemonize no\n\
             logfile \"\"\n",
            dir_path.display()
        );
        match &tls_files {
            None => text.push_str(&format!("port {}\n", ports[0])),
            Some((cert, key, ca)) => text.push_str(&format!(
                "port 0\ntls-port {}\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\n",
                ports[0],
                cert.display(),
                key.display(),
                ca.display()
            )),
        }
        if let Some(primary) = opts.replica_of {
            text.push_str(&format!(
                "replicaof 127.0.0.1 {primary}\nmasterauth {PASSWORD}\n"
            ));
        }
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg(&conf);
        cmd
    });
    Some(Server { daemon, dir })
}

fn module(name: &str, body: &str) -> String {
    format!(
        "  {name}:\n    prober: redis\n    timeout: 5s\n    redis:\n      preferred_ip_protocol: ip4\n{body}"
    )
}

fn with_password(extra: &str) -> String {
    format!("      password: {PASSWORD}\n{extra}")
}

fn config(modules: &[String]) -> String {
    format!("modules:\n{}", modules.concat())
}

#[tokio::test]
async fn auth_select_and_ping() {
    let Some(srv) = start("redis auth and ping", Options::default()) else {
        return;
    };
    let lk = Lookout::start(&config(&[
        module("ok", &with_password("")),
        module("db3", &with_password("      db: 3\n")),
        module("bad_db", &with_password("      db: 999\n")),
        module("wrong_password", "      password: nope\n"),
        module("no_password", "      db: 0\n"),
    ]))
    .await;
    let t = srv.daemon.target();

    for m in ["ok", "db3"] {
        let s = lk.probe(m, &t).await;
        assert_eq!(s.value("probe_success"), 1.0, "{m}: {}", s.text);
        for phase in ["resolve", "connect", "tls", "auth", "ping"] {
            assert!(
                s.get_with("probe_redis_duration_seconds", &[("phase", phase)])
                    .is_some(),
                "{m}: no {phase} phase in {}",
                s.text
            );
        }
        assert!(s.series("probe_redis_role_info").is_empty());
        assert!(s.get("probe_tls_version_info").is_none());
    }
    for m in ["bad_db", "wrong_password", "no_password"] {
        let s = lk.probe(m, &t).await;
        assert_eq!(s.value("probe_success"), 0.0, "{m}: {}", s.text);
    }
    // A wrong password fails at AUTH: PING is never sent.
    let s = lk.probe("wrong_password", &t).await;
    assert_eq!(
        s.get_with("probe_redis_duration_seconds", &[("phase", "ping")]),
        Some(0.0),
        "{}",
        s.text
    );
}

#[tokio::test]
async fn a_stopped_server_fails() {
    let Some(mut srv) = start("redis stopped server", Options::default()) else {
        return;
    };
    let lk = Lookout::start(&config(&[module("ok", &with_password(""))])).await;
    let t = srv.daemon.target();
    assert_eq!(lk.probe("ok", &t).await.value("probe_success"), 1.0);
    srv.daemon.stop();
    let s = lk.probe("ok", &t).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
}

#[tokio::test]
async fn expect_role_checks_the_replication_role() {
    let Some(primary) = start("redis expect_role", Options::default()) else {
        return;
    };
    let lk = Lookout::start(&config(&[
        module("master", &with_password("      expect_role: master\n")),
        module("replica", &with_password("      expect_role: replica\n")),
    ]))
    .await;
    let t = primary.daemon.target();
    let s = lk.probe("master", &t).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(
        s.get_with("probe_redis_role_info", &[("role", "master")]),
        Some(1.0)
    );
    let s = lk.probe("replica", &t).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert_eq!(
        s.get_with("probe_redis_role_info", &[("role", "master")]),
        Some(1.0),
        "{}",
        s.text
    );

    // A real replica of it reports "slave", labelled replica.
    let replica = start(
        "redis expect_role",
        Options {
            replica_of: Some(primary.daemon.port()),
            ..Options::default()
        },
    )
    .unwrap();
    let s = lk.probe("replica", &replica.daemon.target()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(
        s.get_with("probe_redis_role_info", &[("role", "replica")]),
        Some(1.0)
    );
    let s = lk.probe("master", &replica.daemon.target()).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
}

#[tokio::test]
async fn tls_records_the_handshake() {
    let ca = Ca::new("lookout redis test CA");
    let ca_pem = ca.cert_pem();
    let Some(srv) = start(
        "redis TLS",
        Options {
            tls: Some(ca),
            ..Options::default()
        },
    ) else {
        return;
    };
    let ca_file = srv.dir.path().join("probe-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let lk = Lookout::start(&config(&[
        module(
            "tls",
            &with_password(&format!(
                "      tls: true\n      tls_config:\n        ca_file: {}\n",
                ca_file.display()
            )),
        ),
        module("plain", &with_password("")),
    ]))
    .await;
    let t = srv.daemon.target();
    let s = lk.probe("tls", &t).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert!(!s.series("probe_tls_version_info").is_empty(), "{}", s.text);
    assert!(
        s.get_with("probe_redis_duration_seconds", &[("phase", "tls")])
            .is_some_and(|v| v > 0.0)
    );
    // Plain RESP to a TLS port gets no PONG.
    let s = lk.probe("plain", &t).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
}

#[tokio::test]
async fn an_endless_reply_is_cut_off() {
    // Answers the first command with a bulk string that never ends.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"$1000000000\r\n").await;
                let chunk = vec![b'x'; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let lk = Lookout::start(&config(&[module("m", "      db: 0\n")])).await;
    let s = lk.probe("m", &target).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    let debug = lk.debug("m", &target).await;
    server.abort();
    assert!(debug.contains("more than 1048576 bytes"), "{debug}");
}
