//! The dependency graph end to end: scheduled targets on switchable loopback servers, their
//! states and root causes on `/metrics` and `/api/v1/targets`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::support::lookout::Lookout;

/// An HTTP server whose paths answer the status set for them (200 until told otherwise).
#[derive(Clone, Default)]
struct Switches(Arc<std::sync::Mutex<HashMap<String, Arc<AtomicU16>>>>);

impl Switches {
    fn set(&self, path: &str, status: u16) {
        self.0
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_insert_with(|| Arc::new(AtomicU16::new(200)))
            .store(status, Ordering::SeqCst);
    }

    fn status(&self, path: &str) -> u16 {
        self.0
            .lock()
            .unwrap()
            .get(path)
            .map(|s| s.load(Ordering::SeqCst))
            .unwrap_or(200)
    }

    async fn serve(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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
                        let status = me.status(req.uri().path());
                        async move {
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"ok")))
                                    .unwrap(),
                            )
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
}

/// The targets' entries from `/api/v1/targets`, by name.
async fn api(lk: &Lookout) -> HashMap<String, serde_json::Value> {
    let a = lk.get("/api/v1/targets").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone()))
        .collect()
}

/// Polls the API until `done` holds (or fails after 30 s, a guard against hangs only).
async fn wait_for(
    lk: &Lookout,
    what: &str,
    done: impl Fn(&HashMap<String, serde_json::Value>) -> bool,
) -> HashMap<String, serde_json::Value> {
    for _ in 0..600 {
        let t = api(lk).await;
        if done(&t) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "not reached within 30s: {what}; targets: {:#?}",
        api(lk).await
    );
}

fn state(t: &HashMap<String, serde_json::Value>, name: &str) -> String {
    t[name]["state"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_dead_dependency_is_the_root_cause_and_its_dependent_is_blocked() {
    let switches = Switches::default();
    let addr = switches.serve().await;
    let yaml = format!(
        "modules:\n  http: {{prober: http, timeout: 1s}}\n\
         defaults: {{interval: 300ms, retries: 1, retry_interval: 50ms, recovery_grace: 1500ms}}\n\
         targets:\n\
         - {{name: host, module: http, target: \"http://{addr}/host\"}}\n\
         - {{name: db, module: http, target: \"http://{addr}/db\", depends_on: [host]}}\n\
         - {{name: broker, module: http, target: \"http://{addr}/broker\", depends_on: [host]}}\n\
         - {{name: app, module: http, target: \"http://{addr}/app\", depends_on: [db, broker]}}\n\
         - {{name: other, module: http, target: \"http://{addr}/other\"}}\n"
    );
    let lk = Lookout::start(&yaml).await;
    wait_for(&lk, "all up", |t| t.values().all(|v| v["state"] == "up")).await;

    // The database dies, and the app with it (its health needs the database).
    switches.set("/db", 503);
    switches.set("/app", 503);
    let t = wait_for(&lk, "db down, app blocked", |t| {
        state(t, "db") == "down" && state(t, "app") == "blocked"
    })
    .await;
    assert_eq!(t["app"]["root_causes"], serde_json::json!(["db"]));
    assert_eq!(t["db"]["root_causes"], serde_json::json!(["db"]));
    assert_eq!(
        t["db"]["last_failure"]["kind"], "assertion",
        "{:#?}",
        t["db"]
    );
    assert_eq!(t["db"]["dependents"], serde_json::json!(["app"]));
    assert_eq!(
        t["app"]["dependencies"],
        serde_json::json!(["db", "broker"])
    );
    // unknown -> up -> blocked: the app went straight from up to blocked, never named a root
    // cause on the way.
    assert_eq!(t["app"]["state_changes"], 2, "{:#?}", t["app"]);
    assert_eq!(state(&t, "broker"), "up");
    assert_eq!(state(&t, "other"), "up");

    let m = lk.get("/metrics").await.body;
    for line in [
        "lookout_target_state{instance=\"http://ADDR/app\",module=\"http\",state=\"blocked\",target=\"app\"} 1",
        "lookout_target_state{instance=\"http://ADDR/app\",module=\"http\",state=\"down\",target=\"app\"} 0",
        "lookout_target_state{instance=\"http://ADDR/db\",module=\"http\",state=\"down\",target=\"db\"} 1",
        "lookout_target_root_cause{instance=\"http://ADDR/app\",module=\"http\",root_cause=\"db\",target=\"app\"} 1",
        "lookout_target_state_changes_total{instance=\"http://ADDR/app\",module=\"http\",target=\"app\"} 2",
    ] {
        let line = line.replace("ADDR", &addr.to_string());
        assert!(m.lines().any(|l| l == line), "missing {line} in:\n{m}");
    }
    assert!(
        m.contains("lookout_target_state_since_timestamp_seconds{"),
        "{m}"
    );

    // Now the host under both dies too: it becomes the one root cause of everything above it.
    switches.set("/host", 503);
    switches.set("/broker", 503);
    let t = wait_for(&lk, "host down, the rest blocked by it", |t| {
        state(t, "host") == "down"
            && t["app"]["root_causes"] == serde_json::json!(["host"])
            && t["broker"]["root_causes"] == serde_json::json!(["host"])
    })
    .await;
    assert_eq!(state(&t, "db"), "blocked");
    assert_eq!(state(&t, "app"), "blocked");

    // The host and the database come back; the app still fails (say, reconnecting): it stays
    // blocked for its grace, then is down in its own right.
    switches.set("/host", 200);
    switches.set("/db", 200);
    switches.set("/broker", 200);
    let t = wait_for(&lk, "dependencies up again", |t| {
        ["host", "db", "broker"].iter().all(|n| state(t, n) == "up")
    })
    .await;
    assert_eq!(state(&t, "app"), "blocked", "{:#?}", t["app"]);
    let t = wait_for(&lk, "app down after the grace", |t| {
        state(t, "app") == "down"
    })
    .await;
    assert_eq!(t["app"]["root_causes"], serde_json::json!(["app"]));
    switches.set("/app", 200);
    wait_for(&lk, "app up", |t| state(t, "app") == "up").await;
}

#[tokio::test]
async fn alerts_go_straight_to_alertmanager_once_per_root_cause_and_resolve() {
    use crate::support::certs::Ca;
    use crate::support::http_target::{HttpTarget, Route};

    let switches = Switches::default();
    let addr = switches.serve().await;
    // An Alertmanager stand-in over TLS that records what it is sent (the end-to-end test with
    // Debian's alertmanager is in tests/it/alerting.rs).
    let ca = Ca::new("lookout test CA");
    let leaf = ca.leaf(&["127.0.0.1"]).build();
    let am = HttpTarget::new()
        .route("/api/v2/alerts", Route::ok(""))
        .start_tls(&leaf)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    std::fs::write(dir.path().join("am-password"), "s3cret\n").unwrap();
    let yaml = format!(
        "modules:\n  http: {{prober: http, timeout: 1s}}\n\
         defaults: {{interval: 300ms, retries: 1, retry_interval: 50ms}}\n\
         alerting:\n  resend_interval: 1s\n  labels: {{site: home}}\n  alertmanagers:\n\
         \x20   - url: {}\n      basic_auth: {{username: lookout, password_file: am-password}}\n\
         \x20     tls_config: {{ca_file: {}}}\n\
         targets:\n\
         - {{name: db, module: http, target: \"http://{addr}/db\", runbook_url: \"https://runbooks/db\"}}\n\
         - {{name: app, module: http, target: \"http://{addr}/app\", depends_on: [db]}}\n",
        am.url(""),
        ca_file.display()
    );
    let lk = Lookout::start_in(dir, &yaml).await;
    wait_for(&lk, "all up", |t| t.values().all(|v| v["state"] == "up")).await;
    switches.set("/db", 503);
    switches.set("/app", 503);
    wait_for(&lk, "db down", |t| {
        state(t, "db") == "down" && state(t, "app") == "blocked"
    })
    .await;

    let posted = || -> Vec<serde_json::Value> {
        am.requests("/api/v2/alerts")
            .iter()
            .flat_map(|r| {
                assert_eq!(r.method, "POST");
                assert_eq!(r.header("content-type"), Some("application/json"));
                // base64("lookout:s3cret")
                assert_eq!(
                    r.header("authorization"),
                    Some("Basic bG9va291dDpzM2NyZXQ=")
                );
                serde_json::from_slice::<Vec<serde_json::Value>>(&r.body).unwrap()
            })
            .collect()
    };
    for _ in 0..200 {
        if !posted().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alerts = posted();
    let first = alerts.first().expect("an alert was posted");
    assert_eq!(first["labels"]["alertname"], "LookoutTargetDown");
    assert_eq!(first["labels"]["target"], "db");
    assert_eq!(first["labels"]["severity"], "critical");
    assert_eq!(first["labels"]["site"], "home");
    assert_eq!(first["labels"]["instance"], format!("http://{addr}/db"));
    assert_eq!(first["annotations"]["runbook_url"], "https://runbooks/db");
    assert_eq!(first["annotations"]["dependents"], "app");
    assert!(
        first["annotations"]["reason"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{first}"
    );
    assert!(first["endsAt"].as_str().unwrap() > first["startsAt"].as_str().unwrap());
    // Re-sent while firing (resend_interval 1s), and never one for the blocked app.
    for _ in 0..100 {
        if posted().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alerts = posted();
    assert!(alerts.len() >= 2, "{alerts:#?}");
    assert!(
        alerts.iter().all(|a| a["labels"]["target"] == "db"),
        "{alerts:#?}"
    );

    // Recovery: the alert is sent once more, resolved (endsAt no later than now).
    switches.set("/db", 200);
    switches.set("/app", 200);
    wait_for(&lk, "all up again", |t| {
        t.values().all(|v| v["state"] == "up")
    })
    .await;
    let mut resolved = None;
    for _ in 0..200 {
        let now = lookout::alerts::rfc3339(std::time::SystemTime::now());
        resolved = posted()
            .into_iter()
            .find(|a| a["endsAt"].as_str().unwrap() <= now.as_str());
        if resolved.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resolved = resolved.expect("a resolved alert was posted");
    assert_eq!(resolved["labels"]["target"], "db");
    assert!(posted().iter().all(|a| a["labels"]["target"] == "db"));
    let m = lk.get("/metrics").await.body;
    assert!(m.contains("lookout_alerts_sent_total{alertmanager="), "{m}");
}
