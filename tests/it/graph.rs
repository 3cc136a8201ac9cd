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
