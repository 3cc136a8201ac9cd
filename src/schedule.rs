//! The scheduler: probes every target of `targets:` on its own interval, at a stable per-target
//! phase (a hash of its name) so that many targets with one interval spread evenly. It never lets
//! a target's probe overlap itself (an overrun counts as missed, it is not queued), bounds the
//! probes running at once, keeps each target's latest result for `/metrics`, and carries phase
//! and counters of unchanged targets across reloads.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Target, TargetSet};
use crate::health::{Change, Edges, Machine, Observation, Request, State};
use crate::probe::prober::ProbeFailure;
use crate::probe::prober::ProbeRequest;
use crate::probe::report::{Family, Kind, Report};
use crate::probe::resolve::Resolver;
use crate::probe::{self, Outcome};
use crate::results::{ProbeResult, ResultBus};

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
static TARGET_STATE: Family = Family::gauge(
    "lookout_target_state",
    "The target's state: one series per state, 1 for the current one (up, down, blocked by a dependency, unknown).",
);
static STATE_CHANGES: Family = Family {
    name: "lookout_target_state_changes_total",
    help: "Changes of the target's state.",
    kind: Kind::Counter,
};
static STATE_SINCE: Family = Family::gauge(
    "lookout_target_state_since_timestamp_seconds",
    "When the target entered its current state, as a Unix timestamp.",
);
static ROOT_CAUSE: Family = Family::gauge(
    "lookout_target_root_cause",
    "1 for each target that explains this target's failure (itself when it is down in its own right).",
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
        Box::pin(async move { probe_target(&target, deadline, resolver).await })
    })
}

/// One real probe of a scheduled target: its module (with the module's own resolver, if it
/// has `dns_server:`), no `probe_access` (the config's targets are trusted). Also what a peer's
/// confirmation request runs (`replicas_per_target`).
pub async fn probe_target(target: &Target, deadline: Instant, resolver: Resolver) -> Outcome {
    let req = ProbeRequest {
        target: target.target.clone(),
        hostname: None,
    };
    let resolver = target.module.resolver.clone().unwrap_or(resolver);
    probe::run(
        target.module.spec.clone(),
        &target.module_name,
        req,
        deadline,
        resolver,
        // Scheduled targets come from the config file: trusted, not `probe_access`'s.
        &crate::probe::net::AllowAll,
        target.module.every_address,
    )
    .await
}

/// `lookout_probe_confirmations{replica,result}`.
static PROBE_CONFIRMATIONS: Family = Family::gauge(
    "lookout_probe_confirmations",
    "On a failed probe of a target with replicas_per_target: what each peer asked to confirm it answered (1 per peer; result succeeded, failed or unreachable).",
);

static SLO_BUDGET: Family = Family::gauge(
    "lookout_slo_error_budget_remaining_ratio",
    "The share of the target's uptime error budget over its slo_window not yet spent (1 untouched, below 0 overspent).",
);
static SLO_BURN: Family = Family::gauge(
    "lookout_slo_burn_rate",
    "How fast the target's error budget burns over the last hour (1 spends exactly the budget over the window).",
);

/// One change of a target's state, for whoever records them (the history store).
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    /// The target's name.
    pub target: String,
    /// The state before.
    pub from: State,
    /// The state now.
    pub to: State,
    /// When (wall clock).
    pub at: SystemTime,
    /// Its root causes now.
    pub root_causes: Vec<String>,
    /// Its latest failure.
    pub failure: Option<ProbeFailure>,
}

/// One scheduled target's live state.
#[derive(Debug)]
pub struct TargetState {
    target: ArcSwap<Target>,
    successes: AtomicU64,
    failures: AtomicU64,
    missed: AtomicU64,
    /// `IS_RUNNING`, `REQUESTED`, `FOLLOW_UP` and `WATCHED`, in one word so that a probe ending
    /// and the loop asking for another cannot miss each other.
    flags: AtomicU8,
    last: Mutex<Option<Arc<LastResult>>>,
    health: Mutex<TargetHealth>,
    /// Error budget remaining and burn rate of its uptime objective, once computed.
    slo: Mutex<Option<(f64, f64)>>,
}

/// A target's health as `/metrics` and the API show it (names, not indices).
#[derive(Debug, Clone)]
pub struct TargetHealth {
    /// Its state.
    pub state: State,
    /// Since when (wall clock).
    pub since: Option<SystemTime>,
    /// The names of its root causes (itself when down).
    pub root_causes: Vec<String>,
    /// Its latest failure.
    pub last_failure: Option<ProbeFailure>,
    /// Changes of state so far.
    pub changes: u64,
}

impl Default for TargetHealth {
    fn default() -> Self {
        TargetHealth {
            state: State::Unknown,
            since: None,
            root_causes: Vec::new(),
            last_failure: None,
            changes: 0,
        }
    }
}

impl TargetState {
    fn new(target: Arc<Target>) -> TargetState {
        TargetState {
            target: ArcSwap::new(target),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            flags: AtomicU8::new(WATCHED),
            last: Mutex::new(None),
            health: Mutex::new(TargetHealth::default()),
            slo: Mutex::new(None),
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

    /// Takes note of the target's newest result: its counters and the latest-state table
    /// behind `/metrics`. The probe's task calls it with the state in hand, so a result needs no
    /// lookup by name; a result of a target a reload removed lands in a state nobody reads.
    fn record(&self, result: &ProbeResult) {
        if result.success() {
            self.successes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let last = LastResult {
            report: result.report.clone(),
            finished: result.finished,
            duration: result.duration,
            failure: result.failure.clone(),
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(last));
    }

    /// The target's health.
    pub fn health(&self) -> TargetHealth {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets the standing of its uptime objective (shown on `/metrics`).
    pub fn set_slo(&self, budget_remaining: f64, burn_rate: f64) {
        *self.slo.lock().unwrap_or_else(|e| e.into_inner()) = Some((budget_remaining, burn_rate));
    }

    /// Error budget remaining and burn rate of its uptime objective, once computed.
    pub fn slo(&self) -> Option<(f64, f64)> {
        *self.slo.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This target's counters and health as a report (labels are added by the caller).
    pub fn counters(&self) -> Report {
        // Built per target on every scrape: size it for the usual case.
        let mut r = Report::with_capacity(10);
        {
            let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            for st in State::ALL {
                r.set_labeled(
                    &TARGET_STATE,
                    &[("state", st.as_str())],
                    if h.state == st { 1.0 } else { 0.0 },
                );
            }
            r.set(&STATE_CHANGES, h.changes as f64);
            if let Some(since) = h.since {
                r.set(&STATE_SINCE, crate::results::unix_seconds(since));
            }
            for root in &h.root_causes {
                r.set_labeled(&ROOT_CAUSE, &[("root_cause", root.as_str())], 1.0);
            }
        }
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
            r.set(&LAST_PROBE, last.finished_unix());
        }
        if let Some((budget, burn)) = *self.slo.lock().unwrap_or_else(|e| e.into_inner()) {
            r.set(&SLO_BUDGET, budget);
            r.set(&SLO_BURN, burn);
        }
        r
    }
}

/// A probe of the target is running.
const IS_RUNNING: u8 = 1;
/// The running probe is a requested one (a planned slot it overlaps is not a miss).
const REQUESTED: u8 = 2;
/// A requested probe found the target busy: run one when the current probe ends.
const FOLLOW_UP: u8 = 4;
/// The health machine wants this target's successes at once (`Machine::wants_results`);
/// without it a success waits in the inbox for the loop's next wake-up.
const WATCHED: u8 = 8;

impl TargetState {
    fn set_watched(&self, on: bool) {
        if on {
            self.flags.fetch_or(WATCHED, Ordering::AcqRel);
        } else {
            self.flags.fetch_and(!WATCHED, Ordering::AcqRel);
        }
    }
}

/// A finished probe on its way back to the scheduling loop.
struct Finished {
    generation: u64,
    index: usize,
    obs: Observation,
    /// A requested probe found it running: run one now.
    follow_up: bool,
}

/// Where probes leave their results for the loop. The loop is woken only for a result that may
/// change something (a failure, a requested follow-up, a target the health machine watches);
/// the successes of steadily-up targets (nearly all of them, nearly always) wait for its next
/// wake-up, which at many targets comes within milliseconds for the next planned probe, so a
/// result no longer costs a wake-up of its own.
#[derive(Default)]
struct Inbox {
    queue: Mutex<Vec<Finished>>,
    wake: Notify,
}

impl Inbox {
    fn push(&self, f: Finished, urgent: bool) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).push(f);
        if urgent {
            self.wake.notify_one();
        }
    }

    /// Swaps the waiting results into `buf` (empty), keeping both buffers' capacity.
    fn take(&self, buf: &mut Vec<Finished>) {
        std::mem::swap(
            &mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()),
            buf,
        );
    }
}

/// What the latest-state table keeps of a target's last probe: its measurements and outcome,
/// not its captured log (that stays with the recent-probes ring), since 100k targets each
/// holding a log kept hundreds of MiB alive (scripts/bench-scheduler).
#[derive(Debug)]
pub struct LastResult {
    /// Its measurements.
    pub report: Arc<Report>,
    /// When it finished.
    pub finished: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// Why it failed; `None` on success.
    pub failure: Option<ProbeFailure>,
}

impl LastResult {
    /// Whether it succeeded.
    pub fn success(&self) -> bool {
        self.failure.is_none()
    }

    /// `finished` as Unix seconds.
    pub fn finished_unix(&self) -> f64 {
        crate::results::unix_seconds(self.finished)
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
    results: Arc<ResultBus>,
    /// Notified whenever a target's health changes.
    pub health_changed: Arc<Notify>,
    /// Queues of whoever records every change (`subscribe_changes`).
    change_subscribers: Mutex<Vec<mpsc::Sender<ChangeEvent>>>,
    /// The peers that confirm failures of targets with `replicas_per_target` above 1
    /// (`--shard.peers`); unset, this replica's verdict is the only one.
    confirmer: std::sync::OnceLock<Arc<crate::peers::Confirmer>>,
}

impl Default for Scheduler {
    /// A scheduler publishing to a bus of its own.
    fn default() -> Self {
        Scheduler::new(Arc::new(ResultBus::default()))
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
    /// A scheduler that publishes every finished probe to `results`, where its latest-state
    /// table subscribes.
    pub fn new(results: Arc<ResultBus>) -> Scheduler {
        Scheduler {
            epoch: Instant::now(),
            states: ArcSwap::from_pointee(Vec::new()),
            running: AtomicU64::new(0),
            max_concurrency: AtomicU64::new(0),
            lateness: Lateness::default(),
            results,
            health_changed: Arc::new(Notify::new()),
            change_subscribers: Mutex::new(Vec::new()),
            confirmer: std::sync::OnceLock::new(),
        }
    }

    /// Lets failures of targets with `replicas_per_target` above 1 be confirmed by peers; set
    /// once, before the scheduler runs.
    pub fn set_confirmer(&self, confirmer: Arc<crate::peers::Confirmer>) {
        let _ = self.confirmer.set(confirmer);
    }

    /// Where this scheduler publishes its results.
    pub fn results(&self) -> &Arc<ResultBus> {
        &self.results
    }

    /// The origin of the targets' planned times.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The live states, for exposition.
    pub fn states(&self) -> Arc<Vec<Arc<TargetState>>> {
        self.states.load_full()
    }

    /// A queue of at most `capacity` state changes, every one as it is decided (a full queue
    /// drops the change for this subscriber and logs it). Dropping the receiver unsubscribes.
    pub fn subscribe_changes(&self, capacity: usize) -> mpsc::Receiver<ChangeEvent> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.change_subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
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
    ///
    /// The loop owns the targets' health (`health::Machine`): each finished probe comes back
    /// to it (straight from the probe's task, not through the result bus, since a dropped result
    /// would leave a state undecided), and the machine answers with confirmation re-probes and
    /// dependency checks, which run outside the targets' grids and never count as missed.
    pub async fn run(
        self: Arc<Self>,
        mut sets: watch::Receiver<Arc<TargetSet>>,
        runner: Runner,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let tracker = TaskTracker::new();
        let set = sets.borrow_and_update().clone();
        // Bounded: each probe leaves one result, and the loop takes them all at every wake-up,
        // which comes at the latest with the next planned probe.
        let inbox = Arc::new(Inbox::default());
        let mut taken = Vec::new();
        let mut run = Loop {
            limit: set.settings().max_concurrency,
            semaphore: Arc::new(Semaphore::new(set.settings().max_concurrency)),
            states: self.apply(&set),
            grid: BinaryHeap::new(),
            extra: BinaryHeap::new(),
            machine: Machine::new(Vec::new(), Edges::default()),
            generation: 0,
            inbox: inbox.clone(),
            touched: Vec::new(),
        };
        run.machine = machine_for(&set, &run.states, None, Instant::now());
        run.rewatch_all();
        self.publish_health(&run.states, &run.machine, None);
        run.rebuild_grid(self.epoch);
        tracing::info!(targets = run.states.len(), "Scheduler started");
        loop {
            let next = [
                run.grid.peek().map(|Reverse((due, _))| *due),
                run.extra.peek().map(|Reverse((due, _))| *due),
                run.machine.next_wakeup(),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                changed = sets.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let set = sets.borrow_and_update().clone();
                    if set.settings().max_concurrency != run.limit {
                        // Probes running under the old limit keep their permits; new ones use the new.
                        run.limit = set.settings().max_concurrency;
                        run.semaphore = Arc::new(Semaphore::new(run.limit));
                    }
                    let old_states = std::mem::take(&mut run.states);
                    run.states = self.apply(&set);
                    run.machine = machine_for(
                        &set,
                        &run.states,
                        Some((&old_states, &run.machine)),
                        Instant::now(),
                    );
                    run.generation += 1;
                    run.extra.clear();
                    run.rewatch_all();
                    self.publish_health(&run.states, &run.machine, None);
                    run.rebuild_grid(self.epoch);
                    tracing::info!(targets = run.states.len(), "Scheduler reloaded");
                }
                _ = inbox.wake.notified() => {
                    self.take_results(&mut run, &mut taken);
                }
                _ = sleep_until_opt(next) => {
                    self.take_results(&mut run, &mut taken);
                    let now = Instant::now();
                    while let Some(Reverse((due, i))) = run.grid.peek().copied() {
                        if due > now {
                            break;
                        }
                        run.grid.pop();
                        let state = run.states[i].clone();
                        let target = state.target();
                        self.dispatch(&run, i, Some(due), &runner, &tracker);
                        let mut next_due = due + target.interval;
                        // A loop that fell behind (a stalled machine) skips the slots it missed
                        // instead of firing them all at once.
                        while next_due <= now {
                            state.missed.fetch_add(1, Ordering::Relaxed);
                            next_due += target.interval;
                        }
                        run.grid.push(Reverse((next_due, i)));
                    }
                    while let Some(Reverse((due, i))) = run.extra.peek().copied() {
                        if due > now {
                            break;
                        }
                        run.extra.pop();
                        self.dispatch(&run, i, None, &runner, &tracker);
                    }
                    let mut changes = Vec::new();
                    run.machine.tick(now, SystemTime::now(), &mut changes);
                    run.rewatch_touched();
                    if !changes.is_empty() {
                        self.publish_health(&run.states, &run.machine, Some(&changes));
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

    /// Hands the results waiting in the inbox to the health machine, in the order they came,
    /// and queues what it asks for.
    fn take_results(&self, run: &mut Loop, buf: &mut Vec<Finished>) {
        run.inbox.take(buf);
        if buf.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut changes = Vec::new();
        for f in buf.drain(..) {
            if f.generation != run.generation {
                continue;
            }
            for request in run.machine.observe(f.index, &f.obs, now, &mut changes) {
                match request {
                    Request::Confirm(j, at) => run.extra.push(Reverse((at, j))),
                    Request::Dependency(j) => run.extra.push(Reverse((now, j))),
                }
            }
            // A request that found the target busy runs now that it is free.
            if f.follow_up {
                run.extra.push(Reverse((now, f.index)));
            }
        }
        run.rewatch_touched();
        if !changes.is_empty() {
            self.publish_health(&run.states, &run.machine, Some(&changes));
        }
    }

    /// Copies the machine's view of the changed targets (all of them when `changes` is `None`)
    /// into their states for `/metrics` and the API, logs each change once, and wakes whoever
    /// follows health (the alert sender).
    fn publish_health(
        &self,
        states: &[Arc<TargetState>],
        machine: &Machine,
        changes: Option<&[Change]>,
    ) {
        let name = |i: usize| states[i].target().name.clone();
        let view = |i: usize| {
            let v = machine.view(i);
            TargetHealth {
                state: v.state,
                since: v.since,
                root_causes: v.root_causes.iter().map(|&r| name(r)).collect(),
                last_failure: v.last_failure,
                changes: v.changes,
            }
        };
        match changes {
            None => {
                for (i, s) in states.iter().enumerate() {
                    *s.health.lock().unwrap_or_else(|e| e.into_inner()) = view(i);
                }
            }
            Some(changes) => {
                for c in changes {
                    let h = view(c.target);
                    let target = name(c.target);
                    let roots = h.root_causes.join(",");
                    let reason = h.last_failure.as_ref().map(|f| f.to_string());
                    // One line per change of state (not per probe): lifecycle, at INFO.
                    tracing::info!(
                        target = %target,
                        from = c.from.as_str(),
                        to = c.to.as_str(),
                        root_cause = %roots,
                        reason = reason.as_deref().unwrap_or(""),
                        "Target state changed"
                    );
                    {
                        let mut subs = self
                            .change_subscribers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        if !subs.is_empty() {
                            let event = ChangeEvent {
                                target: target.clone(),
                                from: c.from,
                                to: c.to,
                                at: h.since.unwrap_or_else(SystemTime::now),
                                root_causes: h.root_causes.clone(),
                                failure: h.last_failure.clone(),
                            };
                            subs.retain(|s| match s.try_send(event.clone()) {
                                Err(mpsc::error::TrySendError::Closed(_)) => false,
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    tracing::warn!(target = %target, "State change queue full; a change is not recorded");
                                    true
                                }
                                Ok(()) => true,
                            });
                        }
                    }
                    *states[c.target]
                        .health
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = h;
                }
            }
        }
        self.health_changed.notify_one();
    }

    /// Starts one probe of target `i`: a planned one (`due` is its slot) or one the health
    /// machine asked for. A planned probe finding the previous one still running counts as
    /// missed; a requested one runs right after it instead.
    fn dispatch(
        self: &Arc<Self>,
        run: &Loop,
        i: usize,
        due: Option<Instant>,
        runner: &Runner,
        tracker: &TaskTracker,
    ) {
        let state = &run.states[i];
        let mut f = state.flags.load(Ordering::Acquire);
        loop {
            let new = match (f & IS_RUNNING != 0, due) {
                // A requested probe is running: the target is being probed, nothing is missed.
                (true, Some(_)) if f & REQUESTED != 0 => return,
                (true, Some(_)) => {
                    state.missed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                (true, None) => f | FOLLOW_UP,
                (false, Some(_)) => (f | IS_RUNNING) & !REQUESTED,
                (false, None) => f | IS_RUNNING | REQUESTED,
            };
            match state
                .flags
                .compare_exchange_weak(f, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => f = actual,
            }
        }
        if f & IS_RUNNING != 0 {
            // The follow-up is recorded: the running probe's end asks for it.
            return;
        }
        self.running.fetch_add(1, Ordering::Relaxed);
        let (me, state, target, semaphore, runner) = (
            self.clone(),
            state.clone(),
            state.target(),
            run.semaphore.clone(),
            runner.clone(),
        );
        let (inbox, generation) = (run.inbox.clone(), run.generation);
        tracker.spawn(async move {
            // The semaphore is fair, so at the limit every target still gets its turn in order.
            let permit = semaphore.acquire_owned().await;
            let start = Instant::now();
            if let Some(due) = due {
                me.lateness.record(start.saturating_duration_since(due));
            }
            let started = SystemTime::now();
            let mut outcome = runner(target.clone(), start + target.timeout).await;
            drop(permit);
            // replicas_per_target: a failure counts only when the confirming peers see it too.
            let mut overruled = false;
            if outcome.failure.is_some()
                && target.replicas_per_target > 1
                && let Some(confirmer) = me.confirmer.get()
            {
                for (replica, verdict) in confirmer.confirm(&target).await {
                    overruled |= verdict == crate::peers::Verdict::Succeeded;
                    tracing::debug!(target = %target.name, replica, verdict = ?verdict, "Confirmation from a peer");
                    outcome.report.set_labeled(
                        &PROBE_CONFIRMATIONS,
                        &[("replica", &replica.to_string()), ("result", verdict.label())],
                        1.0,
                    );
                }
            }
            let finished = Instant::now();
            let result = ProbeResult::scheduled(outcome, target, started);
            state.record(&result);
            let obs = Observation {
                started: start,
                finished,
                finished_wall: result.finished,
                // This replica's failure, unless a peer's probe succeeded: then the target is
                // not down, only unreachable from here (the result itself stays as probed).
                failure: if overruled {
                    None
                } else {
                    result.failure.clone()
                },
            };
            me.results.publish(result);
            let flags = state
                .flags
                .fetch_and(!(IS_RUNNING | REQUESTED | FOLLOW_UP), Ordering::AcqRel);
            me.running.fetch_sub(1, Ordering::Relaxed);
            let follow_up = flags & FOLLOW_UP != 0;
            let urgent = obs.failure.is_some() || follow_up || flags & WATCHED != 0;
            let finished = Finished {
                generation,
                index: i,
                obs,
                follow_up,
            };
            inbox.push(finished, urgent);
        });
    }
}

/// The scheduling loop's own state.
struct Loop {
    limit: usize,
    semaphore: Arc<Semaphore>,
    states: Vec<Arc<TargetState>>,
    /// Planned probes: (due, index), rebuilt whole on every reload.
    grid: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Probes the health machine asked for: (when, index).
    extra: BinaryHeap<Reverse<(Instant, usize)>>,
    machine: Machine,
    /// Bumped on every reload, so results of the previous target set are ignored.
    generation: u64,
    inbox: Arc<Inbox>,
    /// Scratch for `rewatch_touched`.
    touched: Vec<usize>,
}

impl Loop {
    /// Marks each target the machine wants results of at once (all of them after a reload).
    fn rewatch_all(&mut self) {
        self.machine.take_touched(&mut Vec::new());
        for (i, s) in self.states.iter().enumerate() {
            s.set_watched(self.machine.wants_results(i));
        }
    }

    /// Re-marks the targets the machine touched since, and their dependencies (whether a
    /// dependency is watched depends on its dependents).
    fn rewatch_touched(&mut self) {
        self.machine.take_touched(&mut self.touched);
        if self.touched.is_empty() {
            return;
        }
        let mut all = std::mem::take(&mut self.touched);
        let direct = all.len();
        for k in 0..direct {
            all.extend_from_slice(&self.machine.edges().dependencies[all[k]]);
        }
        all.sort_unstable();
        all.dedup();
        for &i in &all {
            self.states[i].set_watched(self.machine.wants_results(i));
        }
        all.clear();
        self.touched = all;
    }

    fn rebuild_grid(&mut self, epoch: Instant) {
        self.grid.clear();
        let now = Instant::now();
        // A target never probed whose first slot is far off (a long interval, or a start just
        // after its phase) gets a first probe sooner, spread over `window` by the same phase
        // hash, so a restart is not an interval of nothing on /metrics. The window grows with
        // the targets (1 ms each), so these first probes come at most 1,000 a second.
        let window = FIRST_PROBE_WITHIN.max(Duration::from_millis(self.states.len() as u64));
        for (i, s) in self.states.iter().enumerate() {
            let t = s.target();
            let due = next_due(epoch, now, phase(&t.name, t.interval), t.interval);
            self.grid.push(Reverse((due, i)));
            if s.last().is_none() && due > now + window {
                self.extra.push(Reverse((now + phase(&t.name, window), i)));
            }
        }
    }
}

/// How soon (at least) a target without a result is first probed when its first planned slot
/// is later.
pub const FIRST_PROBE_WITHIN: Duration = Duration::from_secs(15);

/// A health machine for `set` (whose targets `states` follow, in order), keeping what `old`
/// knew of targets that stay (by name).
fn machine_for(
    set: &TargetSet,
    states: &[Arc<TargetState>],
    old: Option<(&[Arc<TargetState>], &Machine)>,
    now: Instant,
) -> Machine {
    let targets: Vec<Arc<Target>> = states.iter().map(|s| s.target()).collect();
    let graph = set.graph();
    let edges = Edges::from_dependencies(
        (0..targets.len())
            .map(|i| graph.dependencies(i).to_vec())
            .collect(),
    );
    let policies = targets.iter().map(|t| t.health).collect();
    match old {
        None => Machine::new(policies, edges),
        Some((old_states, old_machine)) => {
            let old_index: HashMap<String, usize> = old_states
                .iter()
                .enumerate()
                .map(|(i, s)| (s.target().name.clone(), i))
                .collect();
            let previous: Vec<Option<usize>> = targets
                .iter()
                .map(|t| old_index.get(&t.name).copied())
                .collect();
            Machine::carry_over(old_machine, &previous, policies, edges, now)
        }
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
