//! The scheduler: planned times on a paused clock, the concurrency limit, overruns, and the
//! running binary's /metrics across reloads and shutdown.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lookout::config::{Target, TargetSet};
use lookout::probe::Outcome;
use lookout::probe::report::Report;
use lookout::schedule::{Runner, Scheduler, next_due, phase};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::http_target::{HttpTarget, Route};
use crate::support::lookout::{Lookout, request};
use crate::support::samples::Samples;

/// The target set of the config `yaml`: what the scheduler follows.
fn config(yaml: &str) -> Arc<TargetSet> {
    lookout::config::parse(yaml, std::path::Path::new("schedule-test.yml"))
        .unwrap()
        .targets
}

type Log = Arc<Mutex<Vec<(String, Instant)>>>;

/// A runner that records when each target started and takes `work` (on the paused clock).
fn recording_runner(work: Duration) -> (Runner, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let runner: Runner = Arc::new(move |t: Arc<Target>, _deadline| {
        l.lock().unwrap().push((t.name.clone(), Instant::now()));
        Box::pin(async move {
            tokio::time::sleep(work).await;
            Outcome {
                report: Report::new(),
                failure: None,
                panicked: false,
                duration: work,
                logs: Default::default(),
            }
        })
    });
    (runner, log)
}

fn targets_yaml(n: usize, interval: &str, concurrency: usize) -> String {
    let mut y = format!(
        "modules:\n  m:\n    prober: tcp\nscheduler:\n  max_concurrency: {concurrency}\ntargets:\n"
    );
    for i in 0..n {
        y.push_str(&format!(
            "  - {{name: t{i}, module: m, target: \"127.0.0.1:{}\", interval: {interval}}}\n",
            1000 + i
        ));
    }
    y
}

#[tokio::test(start_paused = true)]
async fn targets_fire_on_their_phase_grid_without_drift() {
    let cfg = config(&targets_yaml(20, "10s", 100));
    let (runner, log) = recording_runner(Duration::from_millis(300));
    let (_tx, rx) = tokio::sync::watch::channel(cfg.clone());
    let scheduler = Arc::new(Scheduler::default());
    let stop = CancellationToken::new();
    let epoch = scheduler.epoch();
    let task = tokio::spawn(scheduler.clone().run(
        rx,
        runner,
        stop.clone(),
        Duration::from_secs(5),
    ));
    // Ten intervals.
    tokio::time::sleep(Duration::from_secs(100)).await;
    stop.cancel();
    task.await.unwrap();
    let log = log.lock().unwrap();
    let interval = Duration::from_secs(10);
    for t in cfg.iter() {
        let starts: Vec<Instant> = log
            .iter()
            .filter(|(n, _)| *n == t.name)
            .map(|(_, at)| *at)
            .collect();
        assert!(
            starts.len() >= 9,
            "{} started {} times",
            t.name,
            starts.len()
        );
        let first = next_due(epoch, epoch, phase(&t.name, interval), interval);
        for (k, at) in starts.iter().enumerate() {
            // On the grid: the paused clock only rounds a timer up to tokio's 1 ms tick, and the
            // k-th start is still within that tick of its plan (no drift accumulates).
            let planned = first + interval * k as u32;
            assert!(
                *at >= planned && *at - planned < Duration::from_millis(1),
                "{} start {k}: {:?} late",
                t.name,
                *at - planned
            );
        }
    }
    // The phases spread the targets over the interval instead of firing them together.
    let distinct: std::collections::BTreeSet<_> = log.iter().take(20).map(|(_, at)| *at).collect();
    assert!(distinct.len() > 15, "phases not spread: {distinct:?}");
}

#[tokio::test(start_paused = true)]
async fn no_target_starves_at_the_concurrency_limit() {
    // 10 targets, 2 slots, each probe takes 1 s: 10 s of work per 10 s interval, just fits.
    let cfg = config(&targets_yaml(10, "10s", 2));
    let (runner, log) = recording_runner(Duration::from_millis(900));
    let (_tx, rx) = tokio::sync::watch::channel(cfg.clone());
    let scheduler = Arc::new(Scheduler::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(scheduler.clone().run(
        rx,
        runner,
        stop.clone(),
        Duration::from_secs(5),
    ));
    tokio::time::sleep(Duration::from_secs(60)).await;
    stop.cancel();
    task.await.unwrap();
    let log = log.lock().unwrap();
    for t in cfg.iter() {
        let n = log.iter().filter(|(name, _)| *name == t.name).count();
        assert!(n >= 5, "{} ran only {n} times in 6 intervals", t.name);
    }
    for s in scheduler.states().iter() {
        let c = s.counters();
        assert_eq!(
            c.samples()
                .iter()
                .find(|x| x.family.name == "lookout_probe_missed_total")
                .unwrap()
                .value,
            0.0
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_overrunning_probe_is_counted_as_missed_not_queued() {
    let cfg = config(&targets_yaml(1, "10s", 10));
    let (runner, log) = recording_runner(Duration::from_secs(25));
    let (_tx, rx) = tokio::sync::watch::channel(cfg.clone());
    let scheduler = Arc::new(Scheduler::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(scheduler.clone().run(
        rx,
        runner,
        stop.clone(),
        Duration::from_secs(30),
    ));
    tokio::time::sleep(Duration::from_secs(61)).await;
    stop.cancel();
    task.await.unwrap();
    // Slots at p, p+10, …, p+60 (7 at most): a probe runs 25 s, so only every third slot starts.
    let started = log.lock().unwrap().len();
    assert!((2..=3).contains(&started), "started {started}");
    let missed = scheduler.states()[0]
        .counters()
        .samples()
        .iter()
        .find(|x| x.family.name == "lookout_probe_missed_total")
        .unwrap()
        .value;
    assert!(missed >= 3.0, "missed {missed}");
}

fn series_for<'a>(
    s: &'a Samples,
    name: &str,
    target: &str,
) -> Vec<&'a crate::support::samples::Sample> {
    s.samples
        .iter()
        .filter(|x| x.name == name && x.labels.get("target").map(String::as_str) == Some(target))
        .collect()
}

async fn metrics_until(lk: &Lookout, what: &str, ok: impl Fn(&Samples) -> bool) -> Samples {
    for _ in 0..200 {
        let s = Samples::parse(&lk.get("/metrics").await.body);
        if ok(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never saw {what}:\n{}", lk.get("/metrics").await.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_results_on_metrics_across_reloads() {
    let web = HttpTarget::new()
        .route("/", Route::ok("ok"))
        .route("/down", Route::status(503, "down"))
        .start()
        .await;
    let yaml = |extra: &str| {
        format!(
            "modules:\n  http_2xx:\n    prober: http\n    http:\n      preferred_ip_protocol: ip4\ndefaults:\n  interval: 200ms\ntargets:\n  - name: web\n    module: http_2xx\n    target: {}\n    labels: {{team: home}}\n  - name: broken\n    module: http_2xx\n    target: {}\n{extra}",
            web.url("/"),
            web.url("/down")
        )
    };
    let lk = Lookout::start(&yaml("")).await;
    let s = metrics_until(&lk, "both targets probed", |s| {
        !series_for(s, "probe_success", "web").is_empty()
            && !series_for(s, "probe_success", "broken").is_empty()
    })
    .await;
    let web_success = series_for(&s, "probe_success", "web")[0];
    assert_eq!(web_success.value, 1.0);
    assert_eq!(web_success.labels["instance"], web.url("/"));
    assert_eq!(web_success.labels["module"], "http_2xx");
    assert_eq!(web_success.labels["team"], "home");
    assert_eq!(series_for(&s, "probe_success", "broken")[0].value, 0.0);
    assert_eq!(
        series_for(&s, "probe_http_status_code", "broken")[0].value,
        503.0
    );
    assert!(s.types["lookout_probes_total"] == "counter");
    assert!(series_for(&s, "lookout_target_last_probe_timestamp_seconds", "web")[0].value > 1e9);

    // Reload: relabel "web", drop "broken", add "fresh".
    std::fs::write(
        &lk.config_path,
        format!(
            "modules:\n  http_2xx:\n    prober: http\ndefaults:\n  interval: 200ms\ntargets:\n  - name: web\n    module: http_2xx\n    target: {}\n    labels: {{team: ops}}\n  - name: fresh\n    module: http_2xx\n    target: {}\n",
            web.url("/"),
            web.url("/")
        ),
    )
    .unwrap();
    assert_eq!(request(lk.addr, "POST", "/-/reload", &[]).await.status, 200);
    let s = metrics_until(&lk, "reloaded targets", |s| {
        series_for(s, "probe_success", "fresh").len() == 1
            && series_for(s, "probe_success", "web")
                .iter()
                .any(|x| x.labels["team"] == "ops")
    })
    .await;
    assert!(
        series_for(&s, "probe_success", "broken").is_empty(),
        "removed target still exposed"
    );
    assert!(series_for(&s, "lookout_probes_total", "broken").is_empty());
    assert!(
        series_for(&s, "probe_success", "web")
            .iter()
            .all(|x| x.labels["team"] == "ops")
    );

    // A broken file keeps the old targets running.
    let before = series_for(&s, "lookout_probes_total", "fresh")
        .iter()
        .map(|x| x.value)
        .sum::<f64>();
    std::fs::write(&lk.config_path, "modules: [not, a, map]\n").unwrap();
    assert_eq!(request(lk.addr, "POST", "/-/reload", &[]).await.status, 500);
    let s = metrics_until(&lk, "old targets still probed", |s| {
        series_for(s, "lookout_probes_total", "fresh")
            .iter()
            .map(|x| x.value)
            .sum::<f64>()
            > before
    })
    .await;
    assert_eq!(
        s.value("blackbox_exporter_config_last_reload_successful"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_targets_keep_their_counters_across_reloads() {
    let web = HttpTarget::new().route("/", Route::ok("ok")).start().await;
    let base = format!(
        "modules:\n  http_2xx:\n    prober: http\ndefaults:\n  interval: 200ms\ntargets:\n  - name: web\n    module: http_2xx\n    target: {}\n",
        web.url("/")
    );
    let lk = Lookout::start(&base).await;
    let total = |s: &Samples| {
        series_for(s, "lookout_probes_total", "web")
            .iter()
            .map(|x| x.value)
            .sum::<f64>()
    };
    let s = metrics_until(&lk, "a few probes", |s| total(s) >= 3.0).await;
    let before = total(&s);
    std::fs::write(
        &lk.config_path,
        format!(
            "{base}  - name: other\n    module: http_2xx\n    target: {}\n",
            web.url("/")
        ),
    )
    .unwrap();
    assert_eq!(request(lk.addr, "POST", "/-/reload", &[]).await.status, 200);
    let s = Samples::parse(&lk.get("/metrics").await.body);
    assert!(
        total(&s) >= before,
        "counters of an unchanged target were reset"
    );
}

#[test]
fn the_file_watch_reloads_and_sigterm_exits_cleanly() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stall = HttpTarget::new().route("/slow", Route::stall_headers(Duration::from_secs(60))).start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("lookout.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(&cfg, "modules:\n  http_2xx:\n    prober: http\n").unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lookout"))
            .args([
                "--config.file",
                cfg.to_str().unwrap(),
                "--web.listen-address",
                &format!("127.0.0.1:{port}"),
                "--config.watch-interval",
                "100ms",
                "--shutdown.grace-period",
                "2s",
                "--storage.path",
                dir.path().join("data").to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // The watch picks up a new target without any signal.
        std::fs::write(
            &cfg,
            format!(
                "modules:\n  http_2xx:\n    prober: http\n    timeout: 30s\ntargets:\n  - name: slow\n    module: http_2xx\n    target: {}\n    interval: 60s\n",
                stall.url("/slow")
            ),
        )
        .unwrap();
        for _ in 0..400 {
            if stall.hits("/slow") > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(stall.hits("/slow") > 0, "the watched file's new target was never probed");
        // A probe is running (stalled); SIGTERM must still end the process, with status 0.
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let mut status = None;
        for _ in 0..400 {
            if let Some(s) = child.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = match status {
            Some(s) => s,
            None => {
                let _ = child.kill();
                panic!("lookout did not exit after SIGTERM");
            }
        };
        assert!(status.success(), "exit status {status}");
    });
}

/// A target probed once an hour is probed soon after start (not up to an hour later, at its
/// phase), then is on every scrape in between with the same values and the time of its probe:
/// Prometheus never sees it go stale, and the freshness series says how old the sample is
/// (issue 17, long intervals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_interval_target_is_probed_soon_and_on_every_scrape_after() {
    let web = HttpTarget::new().route("/", Route::ok("ok")).start().await;
    let lk = Lookout::start(&format!(
        "modules:\n  http: {{prober: http, timeout: 2s}}\ntargets:\n  - {{name: hourly, module: http, target: '{}', interval: 1h}}\n",
        web.url("/")
    ))
    .await;
    let of = |m: &Samples, name: &str| {
        m.series(name)
            .iter()
            .find(|s| s.labels.get("target").map(String::as_str) == Some("hourly"))
            .map(|s| s.value)
    };
    // Within the first-probe window (15 s), whatever the target's phase in its hour.
    let mut at = None;
    for _ in 0..400 {
        let m = Samples::parse(&lk.get("/metrics").await.body);
        if let Some(t) = of(&m, "lookout_target_last_probe_timestamp_seconds") {
            at = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = at.expect("the hourly target was probed within 20 s of start");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let m = Samples::parse(&lk.get("/metrics").await.body);
        assert_eq!(of(&m, "probe_success"), Some(1.0), "{}", m.text);
        assert_eq!(
            of(&m, "lookout_target_last_probe_timestamp_seconds"),
            Some(at)
        );
    }
}
