//! lookout's own long-lived metrics, served on `/metrics`.
//!
//! The reload and unknown-module metrics are also exposed under blackbox_exporter's names so that
//! existing alert rules keep working. Counts are atomics or small maps written on the request path
//! and read only when `/metrics` is scraped.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use crate::access::Reason;
use crate::probe::prober::FailureKind;
use crate::probe::report::{Family, Kind, Report};
use crate::results::{ProbeResult, Subscriber};

static BUILD_INFO: Family = Family::gauge(
    "lookout_build_info",
    "A metric with a constant '1' value labeled by version, revision and rustversion from which lookout was built.",
);
static BB_RELOAD_OK: Family = Family::gauge(
    "blackbox_exporter_config_last_reload_successful",
    "Blackbox exporter config loaded successfully.",
);
static BB_RELOAD_TS: Family = Family::gauge(
    "blackbox_exporter_config_last_reload_success_timestamp_seconds",
    "Timestamp of the last successful configuration reload.",
);
static BB_UNKNOWN: Family = Family {
    name: "blackbox_module_unknown_total",
    help: "Count of unknown modules requested by probes",
    kind: Kind::Counter,
};
static RELOAD_OK: Family = Family::gauge(
    "lookout_config_last_reload_successful",
    "Whether the last configuration reload succeeded (1) or failed (0).",
);
static RELOAD_TS: Family = Family::gauge(
    "lookout_config_last_reload_success_timestamp_seconds",
    "Timestamp of the last successful configuration reload.",
);
static PROBE_REQUESTS: Family = Family {
    name: "lookout_probe_requests_total",
    help: "Probes run through /probe, by module and result.",
    kind: Kind::Counter,
};
static PROBE_FAILURES: Family = Family {
    name: "lookout_probe_failures_total",
    help: "Failed probes (through /probe and scheduled) by module and failure reason.",
    kind: Kind::Counter,
};
static PROBE_PANICS: Family = Family {
    name: "lookout_probe_panics_total",
    help: "Probes that ended in a panic (a bug); the process kept serving.",
    kind: Kind::Counter,
};
static ACCESS_REFUSED: Family = Family {
    name: "lookout_probe_access_refused_total",
    help: "/probe requests refused by probe_access, by reason (deny_rule, metadata, default_deny).",
    kind: Kind::Counter,
};
static LIMITED: Family = Family {
    name: "lookout_probe_limited_total",
    help: "/probe requests refused by probe_limits with 429, by reason (rate, client_in_flight, in_flight).",
    kind: Kind::Counter,
};
static IN_FLIGHT: Family = Family::gauge(
    "lookout_probe_in_flight",
    "/probe probes running now (probe_limits.max_in_flight caps it).",
);
static CPU: Family = Family {
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent in seconds.",
    kind: Kind::Counter,
};
static RSS: Family = Family::gauge(
    "process_resident_memory_bytes",
    "Resident memory size in bytes.",
);
static VSZ: Family = Family::gauge(
    "process_virtual_memory_bytes",
    "Virtual memory size in bytes.",
);
static START: Family = Family::gauge(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
);
static OPEN_FDS: Family = Family::gauge("process_open_fds", "Number of open file descriptors.");
static MAX_FDS: Family = Family::gauge(
    "process_max_fds",
    "Maximum number of open file descriptors.",
);

/// The process-wide metrics of one lookout instance.
#[derive(Debug)]
pub struct SelfMetrics {
    reload_ok: AtomicU64,
    reload_ts_bits: AtomicU64,
    unknown_modules: AtomicU64,
    panics: AtomicU64,
    probes: Mutex<Counts>,
    failures: Mutex<Counts>,
    /// `/probe` requests refused by `probe_access`, indexed as `Reason::ALL`.
    access_refused: [AtomicU64; 3],
    /// `/probe` requests refused by `probe_limits`, indexed as `Limited::ALL`.
    limited: [AtomicU64; 3],
}

/// Counts by module, then by a label value.
type Counts = BTreeMap<String, BTreeMap<&'static str, u64>>;

impl Subscriber for SelfMetrics {
    fn deliver(&self, r: &Arc<ProbeResult>) {
        if r.panicked {
            self.panics.fetch_add(1, Ordering::Relaxed);
        }
        self.record_probe(
            &r.module.name,
            r.scheduled.is_none(),
            r.failure_kind().map(FailureKind::as_str),
        );
    }
}

impl Default for SelfMetrics {
    fn default() -> Self {
        SelfMetrics {
            reload_ok: AtomicU64::new(0),
            reload_ts_bits: AtomicU64::new(0f64.to_bits()),
            unknown_modules: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            probes: Mutex::default(),
            failures: Mutex::default(),
            access_refused: Default::default(),
            limited: Default::default(),
        }
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl SelfMetrics {
    /// Records the outcome of a config load or reload.
    pub fn record_reload(&self, ok: bool) {
        self.reload_ok.store(u64::from(ok), Ordering::Relaxed);
        if ok {
            self.reload_ts_bits
                .store(now_seconds().to_bits(), Ordering::Relaxed);
        }
    }

    /// Counts a `/probe` request for a module that does not exist.
    pub fn record_unknown_module(&self) {
        self.unknown_modules.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a `/probe` request that `probe_access` refused.
    pub fn record_access_refusal(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.access_refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a `/probe` request that `probe_limits` refused.
    pub fn record_limited(&self, reason: crate::limits::Limited) {
        if let Some(i) = crate::limits::Limited::ALL
            .iter()
            .position(|r| *r == reason)
        {
            self.limited[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a finished probe: `/probe` requests by module and result, failures (of `/probe`
    /// and scheduled probes alike) by module and reason, panics.
    fn record_probe(&self, module: &str, via_probe_endpoint: bool, reason: Option<&'static str>) {
        fn bump(map: &Mutex<Counts>, module: &str, key: &'static str) {
            let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
            // Looked up by `&str` first: no allocation once a module has been seen.
            match map.get_mut(module) {
                Some(keys) => *keys.entry(key).or_insert(0) += 1,
                None => {
                    map.insert(module.to_owned(), BTreeMap::from([(key, 1)]));
                }
            }
        }
        if via_probe_endpoint {
            let result = if reason.is_some() {
                "failure"
            } else {
                "success"
            };
            bump(&self.probes, module, result);
        }
        if let Some(reason) = reason {
            bump(&self.failures, module, reason);
        }
    }

    /// The current values as a report, ready for exposition, with `in_flight` `/probe` probes
    /// running.
    pub fn snapshot(&self, in_flight: usize) -> Report {
        let mut r = Report::new();
        r.set_labeled(
            &BUILD_INFO,
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                (
                    "revision",
                    option_env!("LOOKOUT_REVISION").unwrap_or("unknown"),
                ),
                (
                    "rustversion",
                    option_env!("LOOKOUT_RUSTC_VERSION").unwrap_or("unknown"),
                ),
            ],
            1.0,
        );
        let ok = self.reload_ok.load(Ordering::Relaxed) as f64;
        let ts = f64::from_bits(self.reload_ts_bits.load(Ordering::Relaxed));
        r.set(&BB_RELOAD_OK, ok);
        r.set(&RELOAD_OK, ok);
        r.set(&BB_RELOAD_TS, ts);
        r.set(&RELOAD_TS, ts);
        r.set(
            &BB_UNKNOWN,
            self.unknown_modules.load(Ordering::Relaxed) as f64,
        );
        r.set(&PROBE_PANICS, self.panics.load(Ordering::Relaxed) as f64);
        for (module, results) in self.probes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for (result, n) in results {
                r.set_labeled(
                    &PROBE_REQUESTS,
                    &[("module", module), ("result", result)],
                    *n as f64,
                );
            }
        }
        for (module, reasons) in self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for (reason, n) in reasons {
                r.set_labeled(
                    &PROBE_FAILURES,
                    &[("module", module), ("reason", reason)],
                    *n as f64,
                );
            }
        }
        // Every reason from the start, so a rate over them works before the first refusal.
        for (reason, n) in Reason::ALL.iter().zip(&self.access_refused) {
            r.set_labeled(
                &ACCESS_REFUSED,
                &[("reason", reason.as_str())],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        for (reason, n) in crate::limits::Limited::ALL.iter().zip(&self.limited) {
            r.set_labeled(
                &LIMITED,
                &[("reason", reason.as_str())],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        r.set(&IN_FLIGHT, in_flight as f64);
        process_metrics(&mut r);
        r
    }
}

/// Go's process collector metrics, read from /proc (Linux only; absent elsewhere).
fn process_metrics(r: &mut Report) {
    let Ok(me) = procfs::process::Process::myself() else {
        return;
    };
    if let Ok(stat) = me.stat() {
        let tps = procfs::ticks_per_second() as f64;
        r.set(&CPU, (stat.utime + stat.stime) as f64 / tps);
        r.set(&VSZ, stat.vsize as f64);
        r.set(&RSS, stat.rss as f64 * procfs::page_size() as f64);
        if let Ok(boot) = procfs::boot_time_secs() {
            r.set(&START, boot as f64 + stat.starttime as f64 / tps);
        }
    }
    if let Ok(n) = me.fd_count() {
        r.set(&OPEN_FDS, n as f64);
    }
    if let Ok(limits) = me.limits()
        && let procfs::process::LimitValue::Value(v) = limits.max_open_files.soft_limit
    {
        r.set(&MAX_FDS, v as f64);
    }
}
