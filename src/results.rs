//! Finished probes as data: every probe, scheduled or through `/probe`, becomes one
//! `ProbeResult` that is published to whoever needs it (the latest-state table behind `/metrics`,
//! the recent-probes pages, lookout's own counters, and later the dependency graph, the history
//! store and the alert sender).
//!
//! Two kinds of subscriber, so that a slow one never stalls probing:
//! - an inline `Subscriber` is called on the publishing task and must do O(1) work without
//!   waiting (a short lock, a counter, a map update);
//! - a channel subscriber (`ResultBus::subscribe`) gets each result through a bounded queue; when
//!   its queue is full the result is dropped for it alone and counted in
//!   `lookout_results_dropped_total{subscriber}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::config::{Module, Target};
use crate::logging::ProbeLog;
use crate::probe::Outcome;
use crate::probe::prober::{FailureKind, ProbeFailure};
use crate::probe::report::{Family, Kind, Report};

static PUBLISHED: Family = Family {
    name: "lookout_results_published_total",
    help: "Finished probes (scheduled and /probe) published to the result subscribers.",
    kind: Kind::Counter,
};
static DROPPED: Family = Family {
    name: "lookout_results_dropped_total",
    help: "Probe results a queued subscriber missed because its queue was full.",
    kind: Kind::Counter,
};

/// One finished probe.
#[derive(Debug)]
pub struct ProbeResult {
    /// The scheduled target it probed; `None` for a `/probe` request.
    pub scheduled: Option<Arc<Target>>,
    /// The module it ran with (its name and settings, for the debug text).
    pub module: Arc<Module>,
    /// The target string of a `/probe` request; empty for a scheduled probe, whose target
    /// string is its target's (`target()`), so a scheduled result copies no string.
    requested: String,
    /// When the probe started (wall clock).
    pub started: SystemTime,
    /// When it finished (wall clock).
    pub finished: SystemTime,
    /// How long it took (monotonic).
    pub duration: Duration,
    /// Why it failed; `None` on success.
    pub failure: Option<ProbeFailure>,
    /// Whether it ended in a panic (a bug in lookout).
    pub panicked: bool,
    /// Its measurements, `probe_success` and `probe_duration_seconds` included (shared with
    /// the latest-state table, which keeps it without a copy).
    pub report: Arc<Report>,
    /// Its captured log.
    pub logs: ProbeLog,
}

impl ProbeResult {
    /// The result of `outcome`, a `/probe` request's probe of `target` with `module` that
    /// started at `started`.
    pub fn new(
        outcome: Outcome,
        module: Arc<Module>,
        target: String,
        started: SystemTime,
    ) -> ProbeResult {
        ProbeResult::build(outcome, module, target, None, started)
    }

    /// The result of `outcome`, a scheduled probe of `target` that started at `started`.
    pub fn scheduled(outcome: Outcome, target: Arc<Target>, started: SystemTime) -> ProbeResult {
        let mut outcome = outcome;
        crate::probe::record_failure_info(&mut outcome.report, outcome.failure.as_ref());
        // Kept until the target's next probe by the latest-state table.
        outcome.report.shrink_to_fit();
        let module = target.module.clone();
        ProbeResult::build(outcome, module, String::new(), Some(target), started)
    }

    fn build(
        outcome: Outcome,
        module: Arc<Module>,
        requested: String,
        scheduled: Option<Arc<Target>>,
        started: SystemTime,
    ) -> ProbeResult {
        ProbeResult {
            scheduled,
            module,
            requested,
            started,
            finished: started + outcome.duration,
            duration: outcome.duration,
            failure: outcome.failure,
            panicked: outcome.panicked,
            report: Arc::new(outcome.report),
            logs: outcome.logs,
        }
    }

    /// The target string as probed.
    pub fn target(&self) -> &str {
        match &self.scheduled {
            Some(t) => &t.target,
            None => &self.requested,
        }
    }

    /// Whether the probe succeeded.
    pub fn success(&self) -> bool {
        self.failure.is_none()
    }

    /// The failure's kind, if it failed.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        self.failure.as_ref().map(|f| f.kind)
    }

    /// `finished` as Unix seconds.
    pub fn finished_unix(&self) -> f64 {
        unix_seconds(self.finished)
    }
}

/// `t` as seconds since the Unix epoch (0 before it).
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A subscriber called inline by `publish`: it must not wait or do more than O(1) work.
pub trait Subscriber: Send + Sync + std::fmt::Debug {
    /// Takes note of one finished probe.
    fn deliver(&self, result: &Arc<ProbeResult>);
}

/// Which results a queued subscriber wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// Every result.
    All,
    /// Results of scheduled probes only (a `/probe` result is not even queued for it).
    Scheduled,
}

#[derive(Debug)]
struct Queued {
    name: &'static str,
    only: Only,
    tx: mpsc::Sender<Arc<ProbeResult>>,
    dropped: AtomicU64,
}

/// Where finished probes are published.
#[derive(Debug, Default)]
pub struct ResultBus {
    inline: RwLock<Vec<Arc<dyn Subscriber>>>,
    queued: RwLock<Vec<Arc<Queued>>>,
    published: AtomicU64,
}

impl ResultBus {
    /// Adds an inline subscriber.
    pub fn attach(&self, s: Arc<dyn Subscriber>) {
        self.inline
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(s);
    }

    /// A queue of at most `capacity` results for a subscriber that works at its own pace;
    /// results that find it full are dropped for it and counted under `name`. Dropping the
    /// receiver unsubscribes.
    pub fn subscribe(
        &self,
        name: &'static str,
        capacity: usize,
    ) -> mpsc::Receiver<Arc<ProbeResult>> {
        self.subscribe_to(name, capacity, Only::All)
    }

    /// Like `subscribe`, for the results `only` picks: filtered here, so a subscriber of
    /// scheduled results is never woken by a `/probe` request.
    pub fn subscribe_to(
        &self,
        name: &'static str,
        capacity: usize,
        only: Only,
    ) -> mpsc::Receiver<Arc<ProbeResult>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.queued
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(Queued {
                name,
                only,
                tx,
                dropped: AtomicU64::new(0),
            }));
        rx
    }

    /// Publishes one finished probe to every subscriber. Never waits.
    pub fn publish(&self, result: ProbeResult) -> Arc<ProbeResult> {
        let result = Arc::new(result);
        self.published.fetch_add(1, Ordering::Relaxed);
        for s in self.inline.read().unwrap_or_else(|e| e.into_inner()).iter() {
            s.deliver(&result);
        }
        let mut closed = false;
        for q in self.queued.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if q.only == Only::Scheduled && result.scheduled.is_none() {
                continue;
            }
            match q.tx.try_send(result.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    q.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
            }
        }
        if closed {
            self.queued
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|q| !q.tx.is_closed());
        }
        result
    }

    /// The bus's own counters.
    pub fn metrics(&self) -> Report {
        let mut r = Report::with_capacity(4);
        r.set(&PUBLISHED, self.published.load(Ordering::Relaxed) as f64);
        for q in self.queued.read().unwrap_or_else(|e| e.into_inner()).iter() {
            r.set_labeled(
                &DROPPED,
                &[("subscriber", q.name)],
                q.dropped.load(Ordering::Relaxed) as f64,
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<String>>);
    impl Subscriber for Seen {
        fn deliver(&self, r: &Arc<ProbeResult>) {
            self.0.lock().unwrap().push(r.target().to_owned());
        }
    }

    fn result(target: &str) -> ProbeResult {
        let module = crate::config::parse("modules:\n  m: {prober: tcp}\n", "t.yml".as_ref())
            .unwrap()
            .modules["m"]
            .clone();
        let outcome = Outcome {
            report: Report::new(),
            failure: None,
            panicked: false,
            duration: Duration::from_millis(5),
            logs: ProbeLog::default(),
        };
        ProbeResult::new(outcome, module, target.into(), SystemTime::now())
    }

    #[tokio::test]
    async fn a_full_queue_drops_for_its_subscriber_alone() {
        let bus = ResultBus::default();
        let seen = Arc::new(Seen::default());
        bus.attach(seen.clone());
        let mut slow = bus.subscribe("slow", 2);
        let mut fast = bus.subscribe("fast", 16);
        for i in 0..5 {
            bus.publish(result(&format!("t{i}")));
        }
        assert_eq!(seen.0.lock().unwrap().len(), 5);
        let mut got = Vec::new();
        while let Ok(r) = fast.try_recv() {
            got.push(r.target().to_owned());
        }
        assert_eq!(got, ["t0", "t1", "t2", "t3", "t4"]);
        assert_eq!(slow.try_recv().unwrap().target(), "t0");
        assert_eq!(slow.try_recv().unwrap().target(), "t1");
        assert!(slow.try_recv().is_err());
        let text = crate::metrics::encode_text(&[(&[], &bus.metrics())]);
        assert!(
            text.contains("lookout_results_dropped_total{subscriber=\"slow\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("lookout_results_dropped_total{subscriber=\"fast\"} 0"),
            "{text}"
        );
        assert!(text.contains("lookout_results_published_total 5"), "{text}");
        // A subscriber of scheduled results only never sees /probe results.
        let mut scheduled = bus.subscribe_to("scheduled", 16, Only::Scheduled);
        bus.publish(result("adhoc"));
        assert!(scheduled.try_recv().is_err());
        // A subscriber that goes away is forgotten.
        drop(slow);
        bus.publish(result("t5"));
        assert!(!crate::metrics::encode_text(&[(&[], &bus.metrics())]).contains("\"slow\""));
    }

    /// GET `path` from a lookout on `addr` (HTTP/1.0, so the answer ends with the connection).
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        #[allow(clippy::disallowed_methods)] // A test client of lookout's own listener.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_panicking_probe_is_counted_and_lookout_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lookout.yml");
        std::fs::write(
            &path,
            format!(
                "modules:\n  tcp: {{prober: tcp, timeout: 1s}}\ntargets:\n  - {{name: boom, module: tcp, target: \"{}\", interval: 100ms}}\n",
                crate::probe::PANIC_TARGET
            ),
        )
        .unwrap();
        let cli = <crate::cli::Cli as clap::Parser>::parse_from([
            "lookout",
            "--config.file",
            path.to_str().unwrap(),
            "--web.listen-address",
            "127.0.0.1:0",
            "--storage.path",
            dir.path().join("data").to_str().unwrap(),
        ]);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = crate::App::start(&cli, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
        let answer = get(
            app.local_addr,
            &format!("/probe?module=tcp&target={}", crate::probe::PANIC_TARGET),
        )
        .await;
        assert!(answer.contains("probe_success 0"), "{answer}");
        // The scheduled target panics too, every 100 ms; wait for a few of them.
        let mut metrics = String::new();
        for _ in 0..100 {
            metrics = get(app.local_addr, "/metrics").await;
            if metrics.contains("lookout_probes_total{instance=\"lookout-test:panic\",module=\"tcp\",result=\"failure\",target=\"boom\"} 3") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let panics = metrics
            .lines()
            .find_map(|l| l.strip_prefix("lookout_probe_panics_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no panic counter in:\n{metrics}"));
        assert!(
            panics >= 4.0,
            "one /probe and three scheduled panics:\n{metrics}"
        );
        // Failures by reason count scheduled probes too.
        let internal = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("lookout_probe_failures_total{module=\"tcp\",reason=\"internal\"} ")
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(internal >= 4.0, "{metrics}");
        assert!(
            metrics.contains("lookout_probe_requests_total{module=\"tcp\",result=\"failure\"} 1"),
            "{metrics}"
        );
        // Both kinds of probe are on the page, with their reason, and their logs open.
        let page = get(app.local_addr, "/").await;
        assert!(page.contains("Recent scheduled probes"), "{page}");
        assert!(page.contains("<td>boom</td>"), "{page}");
        assert!(page.contains("Failure (internal: probe panicked"), "{page}");
        let id = page
            .split("/logs?id=")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned();
        let logs = get(app.local_addr, &format!("/logs?id={id}")).await;
        assert!(
            logs.contains("Metrics that would have been returned:"),
            "{logs}"
        );
        assert!(logs.contains("probe_success 0"), "{logs}");
        let _ = tx.send(());
        let _ = app.task.await;
    }
}
