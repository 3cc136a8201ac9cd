//! Issue 12 end to end: one alert per root cause, with real Debian programs on loopback.
//!
//! A broker (mosquitto), a database (PostgreSQL) and an app whose `/health` really uses both
//! (an MQTT CONNECT→CONNACK round trip and a PostgreSQL startup that must reach authentication),
//! scheduled by lookout as README's TeslaMate example does: the app `depends_on` the broker
//! and the database. The alerts go two ways at once, each to its own Alertmanager (one
//! Alertmanager would merge them, since both paths give the alert the same labels):
//! - through Prometheus, which scrapes lookout's `/metrics` and evaluates the rule file
//!   `lookout rules` prints;
//! - straight from lookout (`alerting: {alertmanagers: …}`).
//!
//! Each Alertmanager has the inhibit rules `lookout rules --alertmanager` prints and a webhook
//! receiver recording every notification. Each scenario (kill the broker, SIGSTOP it, kill the
//! database) must give, on each path, exactly one firing notification naming the root cause and
//! one resolved notification after the restore, and never any for the app. The time from the
//! failure to the firing notification is printed per scenario and path (`alerting figure:`
//! lines; run with `--no-capture` to see them); it is not asserted on.
//!
//! Also here: the generated outputs pass the real checkers (`promtool check rules`, `amtool
//! check-config`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::daemon::{self, Daemon};
use crate::support::lookout::{Lookout, q, request};
use crate::support::pg::{self, Pg};

/// The targets' interval, Prometheus' scrape and evaluation interval.
const INTERVAL: &str = "5s";
/// The most any wait may take: a guard against hangs, not a performance expectation.
const HANG_GUARD: Duration = Duration::from_secs(120);
/// How long the app's checks of its dependencies may take.
const APP_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// After a restore, how long to keep listening for a late notification (a Prometheus scrape,
/// a rule evaluation and Alertmanager's group_wait, with room to spare).
const QUIET: Duration = Duration::from_secs(12);

// ---------------------------------------------------------------------------------------------
// The app: an HTTP server whose /health answers 200 only if the broker and the database work.

/// One MQTT 3.1.1 CONNECT (clean session, a unique client id) that must be answered by a
/// CONNACK accepting it. A stopped broker's port still accepts the TCP connection (the kernel
/// does), so only the CONNACK proves the broker works.
async fn mqtt_connack(addr: SocketAddr) -> Result<(), String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let id = format!("app-health-{}", N.fetch_add(1, Ordering::Relaxed));
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Variable header: protocol name, level 4, flags (clean session), keep-alive 10 s.
    let mut packet = vec![0x10, (10 + 2 + id.len()) as u8];
    packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10]);
    packet.extend_from_slice(&(id.len() as u16).to_be_bytes());
    packet.extend_from_slice(id.as_bytes());
    s.write_all(&packet)
        .await
        .map_err(|e| format!("send CONNECT: {e}"))?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack)
        .await
        .map_err(|e| format!("read CONNACK: {e}"))?;
    if connack != [0x20, 2, 0, 0] {
        return Err(format!("CONNACK {connack:02x?}"));
    }
    let _ = s.write_all(&[0xe0, 0]).await; // DISCONNECT
    Ok(())
}

/// A PostgreSQL startup that must reach authentication: an SSLRequest answered `N` (the
/// test cluster has no TLS), then a startup message answered with an authentication request
/// (`R`), which a server still starting up or recovering does not send.
async fn pg_reaches_auth(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .map_err(|e| format!("send SSLRequest: {e}"))?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .await
        .map_err(|e| format!("read SSLRequest answer: {e}"))?;
    if b[0] != b'N' {
        return Err(format!("SSLRequest answered {:?}", b[0] as char));
    }
    let mut params = Vec::new();
    for (k, v) in [("user", pg::USER), ("database", pg::DATABASE)] {
        params.extend_from_slice(k.as_bytes());
        params.push(0);
        params.extend_from_slice(v.as_bytes());
        params.push(0);
    }
    params.push(0);
    let mut startup = ((8 + params.len()) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    startup.extend_from_slice(&params);
    s.write_all(&startup)
        .await
        .map_err(|e| format!("send startup: {e}"))?;
    s.read_exact(&mut b)
        .await
        .map_err(|e| format!("read startup answer: {e}"))?;
    if b[0] != b'R' {
        let mut rest = [0u8; 256];
        let n = s.read(&mut rest).await.unwrap_or(0);
        return Err(format!(
            "startup answered {:?}: {}",
            b[0] as char,
            String::from_utf8_lossy(&rest[..n])
        ));
    }
    Ok(())
}

async fn within(what: &str, f: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    match tokio::time::timeout(APP_CHECK_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {APP_CHECK_TIMEOUT:?}")),
    }
}

/// Starts the app; returns its address.
async fn start_app(broker: SocketAddr, db: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let (status, body) = if req.uri().path() != "/health" {
                            (404, "not found".to_owned())
                        } else {
                            let (m, p) = tokio::join!(
                                within("broker", mqtt_connack(broker)),
                                within("database", pg_reaches_auth(db))
                            );
                            match (m, p) {
                                (Ok(()), Ok(())) => (200, "ok".to_owned()),
                                (m, p) => (
                                    503,
                                    [m.err(), p.err()]
                                        .into_iter()
                                        .flatten()
                                        .collect::<Vec<_>>()
                                        .join("; "),
                                ),
                            }
                        };
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// The webhook receiver: records every notification Alertmanager sends, with its arrival time.

/// One webhook notification.
#[derive(Debug, Clone)]
struct Notification {
    /// When it arrived.
    at: Instant,
    /// The webhook path: which Alertmanager (so which path) sent it.
    path: String,
    /// `firing` or `resolved`.
    status: String,
    /// Its alerts' `target` labels with their status.
    alerts: Vec<(String, String)>,
    body: Value,
}

impl Notification {
    fn names(&self, target: &str) -> bool {
        self.alerts.iter().any(|(t, _)| t == target)
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Notification>>>);

impl Recorder {
    async fn start(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let me = me.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let at = Instant::now();
                            let body: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                                panic!("webhook body: {e}: {}", String::from_utf8_lossy(&body))
                            });
                            let alerts = body["alerts"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|a| {
                                    (
                                        a["labels"]["target"].as_str().unwrap_or("").to_owned(),
                                        a["status"].as_str().unwrap_or("").to_owned(),
                                    )
                                })
                                .collect();
                            let status = body["status"].as_str().unwrap_or("").to_owned();
                            me.0.lock().unwrap().push(Notification {
                                at,
                                path,
                                status,
                                alerts,
                                body,
                            });
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn all(&self) -> Vec<Notification> {
        self.0.lock().unwrap().clone()
    }

    /// The notifications of `path` since `since`.
    fn of(&self, path: &str, since: Instant) -> Vec<Notification> {
        self.all()
            .into_iter()
            .filter(|n| n.path == path && n.at >= since)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The programs.

/// `lookout rules` (or `--alertmanager`) on `config`, run as a user would.
fn lookout_rules(config: &Path, alertmanager: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout"));
    cmd.arg("rules").arg("--config.file").arg(config);
    if alertmanager {
        cmd.arg("--alertmanager");
    }
    let out = cmd.output().expect("run lookout rules");
    assert!(
        out.status.success(),
        "lookout rules failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An alertmanager.yml with a webhook receiver for `webhook` (resolved notifications too) and
/// `inhibit` (the `--alertmanager` output) under `inhibit_rules:`.
fn alertmanager_yml(webhook: &str, inhibit: &str) -> String {
    let inhibit: String = inhibit.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "route:\n  receiver: recorder\n  group_by: [alertname, target]\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: recorder\n    webhook_configs:\n      - url: {webhook}\n        \
         send_resolved: true\n\
         inhibit_rules:\n{inhibit}"
    )
}

/// Starts Debian's Alertmanager with the config `make_config(port)` returns (written into
/// `dir`), its own data dir, and clustering off.
fn start_alertmanager(
    bin: &Path,
    dir: &Path,
    name: &str,
    mut make_config: impl FnMut(u16) -> String,
) -> Daemon {
    let config = dir.join(format!("{name}.yml"));
    let data = dir.join(format!("{name}-data"));
    Daemon::start(name, dir, 1, |ports| {
        std::fs::write(&config, make_config(ports[0])).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", ports[0]))
            .arg("--cluster.listen-address=");
        cmd
    })
}

/// Starts Debian's Prometheus scraping `lookout` every INTERVAL (honor_labels), evaluating
/// `rules` every INTERVAL and sending alerts to the Alertmanager on `am_port`.
fn start_prometheus(
    bin: &Path,
    dir: &Path,
    lookout: SocketAddr,
    am_port: u16,
    rules: &Path,
) -> Daemon {
    let config = dir.join("prometheus.yml");
    let data = dir.join("prometheus-data");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: {INTERVAL}\n  evaluation_interval: {INTERVAL}\n\
             rule_files: [{}]\n\
             alerting:\n  alertmanagers:\n    - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]\n\
             scrape_configs:\n  - job_name: lookout\n    honor_labels: true\n    \
             static_configs: [{{targets: ['{lookout}']}}]\n",
            rules.display()
        ),
    )
    .unwrap();
    Daemon::start("prometheus", dir, 1, |ports| {
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", ports[0]));
        cmd
    })
}

/// A mosquitto of our own on a free port, anonymous, no persistence; returns it and the
/// command that starts it again on the same port.
fn start_mosquitto(bin: &Path, dir: &Path) -> (Daemon, impl Fn() -> Command) {
    let conf = dir.join("mosquitto.conf");
    let command = {
        let (bin, conf) = (bin.to_path_buf(), conf.clone());
        move || {
            let mut cmd = Command::new(&bin);
            cmd.arg("-c").arg(&conf);
            cmd
        }
    };
    let daemon = Daemon::start("mosquitto", dir, 1, |ports| {
        // `user root` keeps mosquitto from switching to the `mosquitto` user, which could not
        // read this test's private temp dir.
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n",
                ports[0]
            ),
        )
        .unwrap();
        command()
    });
    (daemon, command)
}

/// lookout's config: the TeslaMate shape (broker, database, and the app depending on both),
/// alerting straight to the Alertmanager on `am_port`.
fn lookout_yml(broker: SocketAddr, db: SocketAddr, app: SocketAddr, am_port: u16) -> String {
    format!(
        "modules:
  http_2xx: {{prober: http, timeout: 2s}}
  db_login:
    prober: postgres
    timeout: 2s
    postgres:
      user: {user}
      password: {password}
      database: {database}
      sslmode: disable
  mqtt_round_trip:
    prober: mqtt
    timeout: 2s
    mqtt:
      topic: lookout/probe
defaults: {{interval: {INTERVAL}, retries: 1, retry_interval: 1s}}
alerting:
  alertmanagers:
    - url: http://127.0.0.1:{am_port}
targets:
  - {{name: broker, module: mqtt_round_trip, target: \"{broker}\"}}
  - {{name: db, module: db_login, target: \"{db}\", runbook_url: \"https://runbooks.example/db\"}}
  - name: app
    module: http_2xx
    target: http://{app}/health
    depends_on: [broker, db]
",
        user = pg::USER,
        password = pg::PASSWORD,
        database = pg::DATABASE,
    )
}

// ---------------------------------------------------------------------------------------------
// Polling.

/// Polls `f` every 100 ms until it returns `Some`; panics with `what` (and `context()`) after
/// HANG_GUARD.
async fn wait_for<T>(
    what: &str,
    mut f: impl AsyncFnMut() -> Option<T>,
    context: impl AsyncFnOnce() -> String,
) -> T {
    let start = Instant::now();
    while start.elapsed() < HANG_GUARD {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "not reached within {HANG_GUARD:?}: {what}\n{}",
        context().await
    );
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let a = request(addr, "GET", path, &[]).await;
    assert_eq!(a.status, 200, "GET {path}: {}", a.body);
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", a.body))
}

/// lookout's targets from `/api/v1/targets`, by name.
async fn targets(lk: &Lookout) -> BTreeMap<String, Value> {
    get_json(lk.addr, "/api/v1/targets").await["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone()))
        .collect()
}

/// The result vector of a Prometheus instant query.
async fn prom_query(prom: SocketAddr, expr: &str) -> Vec<Value> {
    let v = get_json(prom, &format!("/api/v1/query?query={}", q(expr))).await;
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v["data"]["result"].as_array().unwrap().clone()
}

/// The alerts an Alertmanager holds (active, silenced, inhibited and unprocessed ones).
async fn am_alerts(am: SocketAddr) -> Vec<Value> {
    get_json(am, "/api/v2/alerts")
        .await
        .as_array()
        .unwrap()
        .clone()
}

async fn ready(addr: SocketAddr) -> bool {
    request(addr, "GET", "/-/ready", &[]).await.status == 200
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    KillBroker,
    StopBroker,
    KillDb,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::KillBroker => "kill broker (SIGKILL)",
            Scenario::StopBroker => "stop broker (SIGSTOP)",
            Scenario::KillDb => "kill postgres (SIGKILL)",
        }
    }

    fn root(self) -> &'static str {
        match self {
            Scenario::KillBroker | Scenario::StopBroker => "broker",
            Scenario::KillDb => "db",
        }
    }
}

/// The two alert paths: the webhook path of their Alertmanager, and a name for the figures.
const PATHS: [(&str, &str); 2] = [("/prometheus", "prometheus"), ("/direct", "direct")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_per_root_cause_through_prometheus_and_straight_to_alertmanager() {
    let test = "alerting::one_notification_per_root_cause";
    let Some(mosquitto) = daemon::binary("mosquitto", &["/usr/sbin/mosquitto"], "mosquitto", test)
    else {
        return;
    };
    let Some(prometheus) =
        daemon::binary("prometheus", &["/usr/bin/prometheus"], "prometheus", test)
    else {
        return;
    };
    let Some(alertmanager) = daemon::binary(
        "prometheus-alertmanager",
        &["/usr/bin/prometheus-alertmanager"],
        "prometheus-alertmanager",
        test,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, broker_command) = start_mosquitto(&mosquitto, dir.path());
    let Some(mut db) = tokio::task::block_in_place(|| Pg::start(None)) else {
        return;
    };
    let broker_addr: SocketAddr = broker.target().parse().unwrap();
    let app = start_app(broker_addr, db.addr).await;
    let recorder = Recorder::default();
    let hook = recorder.start().await;

    // The config names the direct path's Alertmanager, so it is written once that one's port
    // is known; both Alertmanagers get the inhibit rules printed from it.
    let config = dir.path().join("lookout.yml");
    let mut yaml = String::new();
    let mut inhibit = String::new();
    let am_direct = start_alertmanager(&alertmanager, dir.path(), "am-direct", |port| {
        yaml = lookout_yml(broker_addr, db.addr, app, port);
        std::fs::write(&config, &yaml).unwrap();
        inhibit = lookout_rules(&config, true);
        alertmanager_yml(&format!("http://{hook}/direct"), &inhibit)
    });
    let am_prom = start_alertmanager(&alertmanager, dir.path(), "am-prometheus", |_| {
        alertmanager_yml(&format!("http://{hook}/prometheus"), &inhibit)
    });
    let rules = dir.path().join("lookout.rules.yml");
    std::fs::write(&rules, lookout_rules(&config, false)).unwrap();

    let lk = Lookout::start(&yaml).await;
    let prom = start_prometheus(&prometheus, dir.path(), lk.addr, am_prom.port(), &rules);
    let loopback = |d: &Daemon| SocketAddr::from(([127, 0, 0, 1], d.port()));
    let (prom_addr, am_direct_addr, am_prom_addr) =
        (loopback(&prom), loopback(&am_direct), loopback(&am_prom));

    // Everything is up and wired before the first failure, so the figures measure detection
    // and delivery, not start-up.
    for (name, addr) in [
        ("prometheus", prom_addr),
        ("alertmanager (direct)", am_direct_addr),
        ("alertmanager (prometheus)", am_prom_addr),
    ] {
        wait_for(
            &format!("{name} ready"),
            async || ready(addr).await.then_some(()),
            async || String::new(),
        )
        .await;
    }
    wait_for(
        "all targets up in lookout",
        async || {
            targets(&lk)
                .await
                .values()
                .all(|t| t["state"] == "up")
                .then_some(())
        },
        async || format!("{:#?}", targets(&lk).await),
    )
    .await;
    wait_for(
        "Prometheus sees the targets up, evaluates the rules and knows its Alertmanager",
        async || {
            let up = prom_query(prom_addr, "sum(lookout_target_state{state=\"up\"})").await;
            let groups = get_json(prom_addr, "/api/v1/rules").await;
            let rules = &groups["data"]["groups"][0]["rules"];
            let evaluated = rules.as_array().is_some_and(|r| {
                r.len() == 3
                    && r.iter().all(|r| {
                        r["health"] == "ok"
                            && !r["lastEvaluation"]
                                .as_str()
                                .unwrap_or("0001")
                                .starts_with("0001")
                    })
            });
            let ams = get_json(prom_addr, "/api/v1/alertmanagers").await;
            let wired = ams["data"]["activeAlertmanagers"]
                .as_array()
                .is_some_and(|a| a.len() == 1);
            (up.first().is_some_and(|s| s["value"][1] == "3") && evaluated && wired).then_some(())
        },
        async || prom.output(),
    )
    .await;
    // Each Alertmanager runs with the generated inhibit rules: the broker's and the database's
    // alerts mute the app's.
    for am in [am_direct_addr, am_prom_addr] {
        let status = get_json(am, "/api/v2/status").await;
        let loaded: serde_norway::Value =
            serde_norway::from_str(status["config"]["original"].as_str().unwrap()).unwrap();
        let rules = loaded["inhibit_rules"].as_sequence().unwrap();
        assert_eq!(rules.len(), 2, "{loaded:?}");
        for (rule, root) in rules.iter().zip(["broker", "db"]) {
            assert_eq!(
                rule["source_matchers"][1].as_str(),
                Some(format!("target=\"{root}\"").as_str()),
                "{rule:?}"
            );
            assert_eq!(
                rule["target_matchers"][0].as_str(),
                Some("target=~\"app\""),
                "{rule:?}"
            );
        }
    }
    assert!(
        recorder.all().is_empty(),
        "notifications before any failure: {:#?}",
        recorder.all()
    );

    let mut figures: Vec<(Scenario, &str, f64)> = Vec::new();
    let mut app_changes = targets(&lk).await["app"]["state_changes"].as_u64().unwrap();
    for scenario in [Scenario::KillBroker, Scenario::StopBroker, Scenario::KillDb] {
        let root = scenario.root();
        let failed = Instant::now();
        match scenario {
            Scenario::KillBroker => tokio::task::block_in_place(|| broker.stop()),
            Scenario::StopBroker => broker.signal("STOP"),
            Scenario::KillDb => tokio::task::block_in_place(|| db.kill()),
        }

        // The firing notification, on each path.
        for (path, name) in PATHS {
            let n = wait_for(
                &format!("{}: a firing notification via {name}", scenario.name()),
                async || {
                    recorder
                        .of(path, failed)
                        .into_iter()
                        .find(|n| n.status == "firing")
                },
                async || {
                    format!(
                        "lookout: {:#?}\nnotifications: {:#?}",
                        targets(&lk).await,
                        recorder.all()
                    )
                },
            )
            .await;
            let secs = n.at.duration_since(failed).as_secs_f64();
            eprintln!(
                "alerting figure: {:<24} | {:<10} | {secs:5.1} s from failure to firing notification",
                scenario.name(),
                name
            );
            figures.push((scenario, name, secs));
        }
        // lookout's view: the root cause is down, the app blocked by it alone.
        let t = wait_for(
            &format!("{}: {root} down and the app blocked by it", scenario.name()),
            async || {
                let t = targets(&lk).await;
                (t[root]["state"] == "down"
                    && t["app"]["state"] == "blocked"
                    && t["app"]["root_causes"] == serde_json::json!([root]))
                .then_some(t)
            },
            async || format!("{:#?}", targets(&lk).await),
        )
        .await;
        for other in ["broker", "db"].into_iter().filter(|n| *n != root) {
            assert_eq!(t[other]["state"], "up", "{t:#?}");
        }
        // While the app is blocked, neither Alertmanager holds an alert for it, not even one
        // the inhibit rules mute (a muted alert sends no notification, but should not exist).
        for am in [am_direct_addr, am_prom_addr] {
            let alerts = am_alerts(am).await;
            assert!(
                alerts.iter().all(|a| a["labels"]["target"] != "app"),
                "{}: an alert for the app: {alerts:#?}",
                scenario.name()
            );
        }

        let restored = Instant::now();
        match scenario {
            Scenario::KillBroker => {
                tokio::task::block_in_place(|| broker.restart(broker_command()))
            }
            Scenario::StopBroker => broker.signal("CONT"),
            Scenario::KillDb => tokio::task::block_in_place(|| db.restart()),
        }
        for (path, name) in PATHS {
            wait_for(
                &format!("{}: a resolved notification via {name}", scenario.name()),
                async || {
                    recorder
                        .of(path, restored)
                        .into_iter()
                        .find(|n| n.status == "resolved")
                },
                async || {
                    format!(
                        "lookout: {:#?}\nnotifications: {:#?}",
                        targets(&lk).await,
                        recorder.all()
                    )
                },
            )
            .await;
        }
        wait_for(
            &format!("{}: all targets up again", scenario.name()),
            async || {
                let t = targets(&lk).await;
                t.values().all(|t| t["state"] == "up").then_some(())
            },
            async || format!("{:#?}", targets(&lk).await),
        )
        .await;
        // Room for a late notification (say, one for the app after the restore) to arrive.
        tokio::time::sleep(QUIET).await;

        for (path, name) in PATHS {
            let window = recorder.of(path, failed);
            let firing: Vec<&Notification> =
                window.iter().filter(|n| n.status == "firing").collect();
            let resolved: Vec<&Notification> =
                window.iter().filter(|n| n.status == "resolved").collect();
            let context = format!("{} via {name}: {window:#?}", scenario.name());
            assert_eq!(
                firing.len(),
                1,
                "exactly one firing notification: {context}"
            );
            assert_eq!(
                resolved.len(),
                1,
                "exactly one resolved notification: {context}"
            );
            assert_eq!(window.len(), 2, "{context}");
            assert!(
                resolved[0].at >= restored,
                "resolved before the restore: {context}"
            );
            for n in &window {
                assert!(
                    !n.alerts.is_empty() && n.alerts.iter().all(|(t, _)| t == root),
                    "a notification about anything but {root}: {context}"
                );
            }
            let labels = &firing[0].body["alerts"][0]["labels"];
            assert_eq!(labels["alertname"], "LookoutTargetDown", "{context}");
            assert_eq!(labels["severity"], "critical", "{context}");
        }
        // Both paths give the alert the same labels.
        let labels = |path: &str| {
            recorder
                .of(path, failed)
                .iter()
                .find(|n| n.status == "firing")
                .map(|n| n.body["alerts"][0]["labels"].clone())
        };
        assert_eq!(labels("/prometheus"), labels("/direct"));

        // Never anything for the app: no notification, no alert in either Alertmanager (not
        // even an inhibited one), and lookout took it from up to blocked and back, never down.
        let all = recorder.all();
        assert!(
            all.iter().all(|n| !n.names("app")),
            "a notification for the app: {all:#?}"
        );
        for am in [am_direct_addr, am_prom_addr] {
            let alerts = am_alerts(am).await;
            assert!(
                alerts.iter().all(|a| a["labels"]["target"] != "app"),
                "{alerts:#?}"
            );
        }
        let t = targets(&lk).await;
        app_changes += 2;
        assert_eq!(
            t["app"]["state_changes"], app_changes,
            "the app went other ways than up -> blocked -> up: {:#?}",
            t["app"]
        );
    }
    let app_down = prom_query(
        prom_addr,
        "max_over_time(lookout_target_state{target=\"app\",state=\"down\"}[1h]) == 1 \
         or max_over_time(ALERTS{target=\"app\"}[1h])",
    )
    .await;
    assert!(
        app_down.is_empty(),
        "the app down or alerting: {app_down:#?}"
    );

    eprintln!("alerting figures (seconds from the failure to the firing notification):");
    eprintln!(
        "alerting figures: {:<24} | {:>10} | {:>6}",
        "scenario", "prometheus", "direct"
    );
    for scenario in [Scenario::KillBroker, Scenario::StopBroker, Scenario::KillDb] {
        let of = |path: &str| {
            figures
                .iter()
                .find(|(s, p, _)| *s == scenario && *p == path)
                .map(|(_, _, secs)| *secs)
                .unwrap_or(f64::NAN)
        };
        eprintln!(
            "alerting figures: {:<24} | {:>10.1} | {:>6.1}",
            scenario.name(),
            of("prometheus"),
            of("direct")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The generated outputs against the real checkers.

/// README's TeslaMate example (passwords from files beside it), with a runbook and a label.
const TESLAMATE: &str = "modules:
  http_2xx: {prober: http, timeout: 5s}
  teslamate_db_fresh:
    prober: postgres
    timeout: 5s
    postgres:
      user: teslamate
      password_file: teslamate-db-password
      database: teslamate
      sslmode: disable
      query: SELECT max(date) FROM positions
      max_age: 6h
  teslamate_mqtt:
    prober: mqtt
    timeout: 5s
    mqtt:
      username: teslamate
      password_file: teslamate-mqtt-password
      topic: lookout/probe
defaults: {labels: {site: home}}
targets:
  - {name: teslamate-db, module: teslamate_db_fresh, target: \"postgres.teslamate.svc:5432\",
     runbook_url: \"https://wiki.example/teslamate-db\"}
  - {name: teslamate-mqtt, module: teslamate_mqtt, target: \"mosquitto.teslamate.svc:1883\", severity: warning}
  - name: teslamate
    module: http_2xx
    target: http://teslamate.teslamate.svc:4000/
    depends_on: [teslamate-db, teslamate-mqtt]
";

fn teslamate_config(dir: &Path) -> PathBuf {
    for f in ["teslamate-db-password", "teslamate-mqtt-password"] {
        std::fs::write(dir.join(f), "secret\n").unwrap();
    }
    let path = dir.join("lookout.yml");
    std::fs::write(&path, TESLAMATE).unwrap();
    path
}

fn checker(name: &str, test: &str) -> Option<PathBuf> {
    let package = match name {
        "promtool" => "prometheus",
        _ => "prometheus-alertmanager",
    };
    daemon::binary(name, &[&format!("/usr/bin/{name}")], package, test)
}

fn run_checker(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("run the checker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{text}",
        bin.display()
    );
    text
}

#[test]
fn generated_rules_pass_promtool_check_rules() {
    let Some(promtool) = checker("promtool", "alerting::generated_rules_pass_promtool") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("lookout.rules.yml");
    std::fs::write(&rules, lookout_rules(&teslamate_config(dir.path()), false)).unwrap();
    let out = run_checker(
        &promtool,
        &["check", "rules", "--lint-fatal", rules.to_str().unwrap()],
    );
    assert!(out.contains("SUCCESS: 3 rules found"), "{out}");
}

#[test]
fn generated_inhibit_rules_pass_amtool_check_config() {
    let Some(amtool) = checker("amtool", "alerting::generated_inhibit_rules_pass_amtool") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let inhibit = lookout_rules(&teslamate_config(dir.path()), true);
    let am = dir.path().join("alertmanager.yml");
    std::fs::write(&am, alertmanager_yml("http://127.0.0.1:9/hook", &inhibit)).unwrap();
    let out = run_checker(&amtool, &["check-config", am.to_str().unwrap()]);
    // teslamate-db and teslamate-mqtt have a dependent: one inhibit rule each.
    assert!(out.contains("SUCCESS"), "{out}");
    assert!(out.contains(" - 2 inhibit rules"), "{out}");
}
