//! The scheduler: probes every target of `targets:` on its own interval, at a stable per-target
//! phase (a hash of its name) so that many targets with one interval spread evenly. It never lets
//! a target's probe overlap itself (an overrun counts as missed, it is not queued), bounds the
//! probes running at once, keeps each target's latest result for `/metrics`, and carries phase
//! and counters of unchanged targets across reloads.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Target, TargetSet};
use crate::probe::prober::ProbeRequest;
use crate::probe::report::{Family, Kind, Report};
use crate::probe::resolve::Resolver;
use crate::probe::{self, Outcome};

static PROBES_TOTAL: Family = Family {
    name: "lookout_probes_total",
    help: "Scheduled probes run, by result.",
    kind: Kind::Counter,
};
static MISSED_TOTAL: Family = Family {
    name: "lookout_probe_missed_total",
    help: "Scheduled probes not started because the previous probe of the target was still running.",
    kind: Kind::Counter,
};
static LAST_PROBE: Family = Family::gauge(
    "lookout_target_last_probe_timestamp_seconds",
    "When the target's latest completed probe finished, as a Unix timestamp.",
);
static TARGETS: Family =
    Family::gauge("lookout_scheduler_targets", "Targets the scheduler probes.");
static RUNNING: Family = Family::gauge(
    "lookout_scheduler_running_probes",
    "Scheduled probes running or waiting for a slot now.",
);
static MAX_CONCURRENCY: Family = Family::gauge(
    "lookout_scheduler_max_concurrency",
    "The most scheduled probes that may run at once.",
);
static LATENESS: Family = Family {
    name: "lookout_scheduler_start_lateness_seconds",
    help: "How late scheduled probes started against their planned time.",
    kind: Kind::Histogram,
};
static LATENESS_MAX: Family = Family::gauge(
    "lookout_scheduler_start_lateness_max_seconds",
    "The latest start of a scheduled probe against its planned time, since lookout started.",
);

/// Upper bounds of the lateness histogram's buckets, in seconds.
const LATENESS_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Runs one probe of a target by its deadline: `probe::run` in production, a stand-in in tests.
pub type Runner = Arc<dyn Fn(Arc<Target>, Instant) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// The runner that probes for real.
pub fn probe_runner(resolver: Resolver) -> Runner {
    Arc::new(move |target: Arc<Target>, deadline: Instant| {
        let resolver = resolver.clone();
        Box::pin(async move {
            let req = ProbeRequest {
                target: target.target.clone(),
                hostname: None,
            };
            probe::run(
                target.module.spec.clone(),
                &target.module_name,
                req,
                deadline,
                resolver,
            )
            .await
        })
    })
}

/// The latest completed probe of a target.
#[derive(Debug)]
pub struct LastResult {
    /// Its measurements.
    pub report: Report,
    /// When it finished (Unix seconds).
    pub finished_at: f64,
    /// Whether it succeeded.
    pub success: bool,
}

/// One scheduled target's live state.
#[derive(Debug)]
pub struct TargetState {
    target: ArcSwap<Target>,
    successes: AtomicU64,
    failures: AtomicU64,
    missed: AtomicU64,
    running: AtomicBool,
    last: Mutex<Option<Arc<LastResult>>>,
}

impl TargetState {
    fn new(target: Arc<Target>) -> TargetState {
        TargetState {
            target: ArcSwap::new(target),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            running: AtomicBool::new(false),
            last: Mutex::new(None),
        }
    }

    /// The target's definition.
    pub fn target(&self) -> Arc<Target> {
        self.target.load_full()
    }

    /// The latest completed result, if any.
    pub fn last(&self) -> Option<Arc<LastResult>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// This target's counters as a report (labels are added by the caller).
    pub fn counters(&self) -> Report {
        // Built per target on every scrape: size it exactly.
        let mut r = Report::with_capacity(4);
        r.set_labeled(
            &PROBES_TOTAL,
            &[("result", "success")],
            self.successes.load(Ordering::Relaxed) as f64,
        );
        r.set_labeled(
            &PROBES_TOTAL,
            &[("result", "failure")],
            self.failures.load(Ordering::Relaxed) as f64,
        );
        r.set(&MISSED_TOTAL, self.missed.load(Ordering::Relaxed) as f64);
        if let Some(last) = self.last() {
            r.set(&LAST_PROBE, last.finished_at);
        }
        r
    }
}

/// Start-lateness statistics.
#[derive(Debug, Default)]
struct Lateness {
    buckets: [AtomicU64; LATENESS_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl Lateness {
    fn record(&self, late: Duration) {
        let secs = late.as_secs_f64();
        let i = LATENESS_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENESS_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = late.as_micros() as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }
}

/// The scheduler's shared state: read by `/metrics`, written by the scheduling loop and probes.
#[derive(Debug)]
pub struct Scheduler {
    /// The origin of every target's grid; fixed for the process, so phases survive reloads.
    epoch: Instant,
    states: ArcSwap<Vec<Arc<TargetState>>>,
    running: AtomicU64,
    max_concurrency: AtomicU64,
    lateness: Lateness,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            epoch: Instant::now(),
            states: ArcSwap::from_pointee(Vec::new()),
            running: AtomicU64::new(0),
            max_concurrency: AtomicU64::new(0),
            lateness: Lateness::default(),
        }
    }
}

/// FNV-1a, 64 bit: a stable hash of a target's name for its phase (the same on every run and
/// every machine, unlike std's randomly keyed hasher).
fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The target's phase: its offset into each interval.
pub fn phase(name: &str, interval: Duration) -> Duration {
    let nanos = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(stable_hash(name)) % nanos) as u64)
}

/// The first planned time at or after `now` for a target with this phase and interval, on the
/// grid `epoch + phase + k * interval`.
pub fn next_due(epoch: Instant, now: Instant, phase: Duration, interval: Duration) -> Instant {
    let first = epoch + phase;
    if now <= first {
        return first;
    }
    let since = now.duration_since(first).as_nanos();
    let step = interval.as_nanos().max(1);
    let k = since.div_ceil(step);
    first + Duration::from_nanos((k * step) as u64)
}

impl Scheduler {
    /// The origin of the targets' planned times.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The live states, for exposition.
    pub fn states(&self) -> Arc<Vec<Arc<TargetState>>> {
        self.states.load_full()
    }

    /// The scheduler's own metrics.
    pub fn self_metrics(&self) -> Report {
        let mut r = Report::new();
        r.set(&TARGETS, self.states.load().len() as f64);
        r.set(&RUNNING, self.running.load(Ordering::Relaxed) as f64);
        r.set(
            &MAX_CONCURRENCY,
            self.max_concurrency.load(Ordering::Relaxed) as f64,
        );
        let buckets: Vec<(f64, u64)> = LATENESS_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(
                self.lateness
                    .buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed)),
            )
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.lateness.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        r.set_histogram(&LATENESS, buckets, sum, count);
        r.set(
            &LATENESS_MAX,
            self.lateness.max_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        r
    }

    /// Replaces the target set with `set`, keeping the state (counters, last result, phase)
    /// of targets whose schedule did not change.
    fn apply(&self, set: &TargetSet) -> Vec<Arc<TargetState>> {
        let old: HashMap<String, Arc<TargetState>> = self
            .states
            .load()
            .iter()
            .map(|s| (s.target().name.clone(), s.clone()))
            .collect();
        let states: Vec<Arc<TargetState>> = set
            .iter()
            .map(|t| match old.get(&t.name) {
                Some(s) if s.target().same_schedule(t) => {
                    // The module's settings may have changed; the schedule and counters stay.
                    s.target.store(t.clone());
                    s.clone()
                }
                _ => Arc::new(TargetState::new(t.clone())),
            })
            .collect();
        self.states.store(Arc::new(states.clone()));
        self.max_concurrency
            .store(set.settings().max_concurrency as u64, Ordering::Relaxed);
        states
    }

    /// Runs the scheduling loop until `shutdown`, following target set changes from `sets`;
    /// then waits up to `grace` for running probes.
    pub async fn run(
        self: Arc<Self>,
        mut sets: watch::Receiver<Arc<TargetSet>>,
        runner: Runner,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let epoch = self.epoch;
        let tracker = TaskTracker::new();
        let mut set = sets.borrow_and_update().clone();
        let mut limit = set.settings().max_concurrency;
        let mut semaphore = Arc::new(Semaphore::new(limit));
        let mut states = self.apply(&set);
        // (due, generation-local index); rebuilt whole on every reload.
        let mut heap: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
        let rebuild = |states: &[Arc<TargetState>],
                       heap: &mut BinaryHeap<Reverse<(Instant, usize)>>| {
            heap.clear();
            let now = Instant::now();
            for (i, s) in states.iter().enumerate() {
                let t = s.target();
                heap.push(Reverse((
                    next_due(epoch, now, phase(&t.name, t.interval), t.interval),
                    i,
                )));
            }
        };
        rebuild(&states, &mut heap);
        tracing::info!(targets = states.len(), "Scheduler started");
        loop {
            let next = heap.peek().map(|Reverse((due, _))| *due);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                changed = sets.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    set = sets.borrow_and_update().clone();
                    if set.settings().max_concurrency != limit {
                        // Probes running under the old limit keep their permits; new ones use the new.
                        limit = set.settings().max_concurrency;
                        semaphore = Arc::new(Semaphore::new(limit));
                    }
                    states = self.apply(&set);
                    rebuild(&states, &mut heap);
                    tracing::info!(targets = states.len(), "Scheduler reloaded");
                }
                _ = sleep_until_opt(next) => {
                    let now = Instant::now();
                    while let Some(Reverse((due, i))) = heap.peek().copied() {
                        if due > now {
                            break;
                        }
                        heap.pop();
                        let state = states[i].clone();
                        let target = state.target();
                        self.dispatch(&state, &target, due, &semaphore, &runner, &tracker);
                        let mut next_due = due + target.interval;
                        // A loop that fell behind (a stalled machine) skips the slots it missed
                        // instead of firing them all at once.
                        while next_due <= now {
                            state.missed.fetch_add(1, Ordering::Relaxed);
                            next_due += target.interval;
                        }
                        heap.push(Reverse((next_due, i)));
                    }
                }
            }
        }
        tracker.close();
        tracing::info!(
            running = self.running.load(Ordering::Relaxed),
            "Scheduler stopping; waiting for running probes"
        );
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("Probes still running after the grace period; abandoning them");
        }
    }

    fn dispatch(
        self: &Arc<Self>,
        state: &Arc<TargetState>,
        target: &Arc<Target>,
        due: Instant,
        semaphore: &Arc<Semaphore>,
        runner: &Runner,
        tracker: &TaskTracker,
    ) {
        if state.running.swap(true, Ordering::AcqRel) {
            state.missed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.running.fetch_add(1, Ordering::Relaxed);
        let (me, state, target, semaphore, runner) = (
            self.clone(),
            state.clone(),
            target.clone(),
            semaphore.clone(),
            runner.clone(),
        );
        tracker.spawn(async move {
            // The semaphore is fair, so at the limit every target still gets its turn in order.
            let permit = semaphore.acquire_owned().await;
            let start = Instant::now();
            me.lateness.record(start.saturating_duration_since(due));
            let outcome = runner(target.clone(), start + target.timeout).await;
            drop(permit);
            let success = outcome.success();
            if success {
                state.successes.fetch_add(1, Ordering::Relaxed);
            } else {
                state.failures.fetch_add(1, Ordering::Relaxed);
            }
            let finished_at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            *state.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(LastResult {
                report: outcome.report,
                finished_at,
                success,
            }));
            state.running.store(false, Ordering::Release);
            me.running.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_stable_and_within_the_interval() {
        let i = Duration::from_secs(60);
        assert_eq!(phase("db", i), phase("db", i));
        assert!(phase("db", i) < i);
        assert_ne!(phase("db", i), phase("wiki", i));
    }

    #[test]
    fn next_due_is_on_the_grid() {
        let epoch = Instant::now();
        let i = Duration::from_secs(10);
        let p = Duration::from_secs(3);
        assert_eq!(next_due(epoch, epoch, p, i), epoch + p);
        assert_eq!(
            next_due(epoch, epoch + Duration::from_secs(4), p, i),
            epoch + Duration::from_secs(13)
        );
        assert_eq!(
            next_due(epoch, epoch + Duration::from_secs(13), p, i),
            epoch + Duration::from_secs(13)
        );
    }
}
