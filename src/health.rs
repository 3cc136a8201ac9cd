//! Target health: what each scheduled target's state is (`up`, `down`, `blocked`, `unknown`), and
//! which down targets are the root cause of the others' failures.
//!
//! A pure state machine, driven by the scheduler's loop with probe results and the clock, and
//! answering with what to probe next (confirmation re-probes, dependency checks) and which states
//! changed. No I/O and no locks here, so the rules are tested as tables (`health/tests.rs`).
//!
//! The rules:
//! - **Confirmation.** A failure starts a streak; the target is re-probed `retries` times,
//!   `retry_interval` apart, and only a streak of `retries + 1` failures makes it failing. A
//!   success in between absorbs the blip. Recovery is confirmed the same way.
//! - **Dependencies first.** The first failure of a streak asks for every dependency to be probed
//!   at once. A failing target's state is decided only when each dependency is known to be failing
//!   or has a fresh, confirmed success (a probe that started after the target's first failure), so
//!   a target is never named the root cause in the seconds before its dependency's failure is
//!   confirmed. Until then it keeps its previous state.
//! - **States.** A failing target is `blocked` when a dependency is `down` or `blocked` (its root
//!   causes are the union of theirs), else `down` (it is its own root cause). A target not yet
//!   probed, or failing its first probes unconfirmed, is `unknown`.
//! - **Recovery edge.** When a blocked target's dependencies recover while it still fails (an app
//!   reconnecting with back-off), it stays `blocked` with its old root causes for
//!   `recovery_grace` or until it succeeds; still failing after that, it is `down` in its own
//!   right.

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::probe::prober::{FailureKind, ProbeFailure};

/// A target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Not probed yet, or failing without confirmation yet.
    Unknown,
    /// Its probes succeed.
    Up,
    /// It fails, and no dependency explains it: it is a root cause.
    Down,
    /// It fails while a dependency is down: the dependency explains it.
    Blocked,
}

impl State {
    /// Every state, in the order metrics list them.
    pub const ALL: [State; 4] = [State::Up, State::Down, State::Blocked, State::Unknown];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Down => "down",
            State::Blocked => "blocked",
        }
    }

    fn failing(self) -> bool {
        matches!(self, State::Down | State::Blocked)
    }
}

/// How one target's failures and recoveries are confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Re-probes that must fail (or succeed) too before a change of health is believed.
    pub retries: u32,
    /// The spacing of those re-probes, from the end of one to the start of the next.
    pub retry_interval: Duration,
    /// How long a dependent still failing after its root cause recovered stays `blocked`.
    pub recovery_grace: Duration,
}

/// One finished probe, as the state machine needs it.
#[derive(Debug, Clone)]
pub struct Observation {
    /// When the probe started.
    pub started: Instant,
    /// When it finished.
    pub finished: Instant,
    /// When it finished, by the wall clock (for `since` timestamps).
    pub finished_wall: SystemTime,
    /// Why it failed; `None` on success.
    pub failure: Option<ProbeFailure>,
}

/// What the scheduler should probe outside the targets' grids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Probe target `.0` at `.1` to confirm a change (a retry).
    Confirm(usize, Instant),
    /// Probe target `.0` now: a dependent of it started failing.
    Dependency(usize),
}

/// A change of a target's state or root causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The target's index.
    pub target: usize,
    /// The state before.
    pub from: State,
    /// The state now.
    pub to: State,
    /// Its root causes now (itself when `down`; empty when up or unknown).
    pub root_causes: Vec<usize>,
}

/// What one target's state is, for exposition.
#[derive(Debug, Clone)]
pub struct View {
    /// Its state.
    pub state: State,
    /// Since when (wall clock); `None` while unknown from the start.
    pub since: Option<SystemTime>,
    /// Its root causes (itself when down).
    pub root_causes: Vec<usize>,
    /// The kind and reason of its latest failure, if it ever failed.
    pub last_failure: Option<ProbeFailure>,
    /// State changes since lookout started (or the target appeared).
    pub changes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Unknown,
    Up,
    Failing,
}

#[derive(Debug, Clone)]
struct Node {
    policy: Policy,
    health: Health,
    /// Results in a row that contradict `health` (failures while up, successes while failing).
    streak: u32,
    /// When the current failure streak began (the first failed probe's end).
    failing_since: Option<Instant>,
    /// The start of the newest probe whose result was observed.
    last_started: Option<Instant>,
    state: State,
    /// Whether `state` reflects `health` (false while waiting for dependencies).
    decided: bool,
    since: Option<SystemTime>,
    roots: Vec<usize>,
    grace_until: Option<Instant>,
    last_failure: Option<ProbeFailure>,
    changes: u64,
}

impl Node {
    fn new(policy: Policy) -> Node {
        Node {
            policy,
            health: Health::Unknown,
            streak: 0,
            failing_since: None,
            last_started: None,
            state: State::Unknown,
            decided: true,
            since: None,
            roots: Vec::new(),
            grace_until: None,
            last_failure: None,
            changes: 0,
        }
    }

    /// Up, but a failure streak is being confirmed.
    fn suspect(&self) -> bool {
        self.health != Health::Failing && self.streak > 0
    }
}

/// What a dependency tells a failing dependent.
enum DepStatus<'a> {
    Failing(&'a [usize]),
    Healthy,
    Undecided,
}

/// The dependency structure the machine works on: for each target, the indices it depends on
/// and those depending on it, and a topological order (dependencies before dependents).
#[derive(Debug, Clone, Default)]
pub struct Edges {
    /// `dependencies[i]`: what target `i` depends on.
    pub dependencies: Vec<Vec<usize>>,
    /// `dependents[i]`: what depends on target `i`.
    pub dependents: Vec<Vec<usize>>,
    /// Position of each target in a topological order.
    pub rank: Vec<usize>,
}

impl Edges {
    /// From each target's dependencies (which must form no cycle: the config rejects cycles).
    pub fn from_dependencies(dependencies: Vec<Vec<usize>>) -> Edges {
        let n = dependencies.len();
        let mut dependents = vec![Vec::new(); n];
        for (i, deps) in dependencies.iter().enumerate() {
            for &d in deps {
                dependents[d].push(i);
            }
        }
        // Kahn's algorithm; a node left over (only on a cycle) is ranked last.
        let mut missing: Vec<usize> = dependencies.iter().map(Vec::len).collect();
        let mut ready: Vec<usize> = (0..n).filter(|&i| missing[i] == 0).collect();
        let mut rank = vec![usize::MAX; n];
        let mut next = 0;
        while let Some(i) = ready.pop() {
            rank[i] = next;
            next += 1;
            for &j in &dependents[i] {
                missing[j] -= 1;
                if missing[j] == 0 {
                    ready.push(j);
                }
            }
        }
        for r in rank.iter_mut().filter(|r| **r == usize::MAX) {
            *r = next;
            next += 1;
        }
        Edges {
            dependencies,
            dependents,
            rank,
        }
    }
}

/// The state machine over all scheduled targets.
#[derive(Debug, Clone)]
pub struct Machine {
    nodes: Vec<Node>,
    edges: Edges,
    /// Grace periods by end; entries whose target's grace changed since are harmless.
    graces: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Targets observed or re-derived since the caller last asked (`take_touched`).
    touched: Vec<usize>,
}

impl Machine {
    /// A machine for targets with these policies and edges, all `unknown`.
    pub fn new(policies: Vec<Policy>, edges: Edges) -> Machine {
        Machine {
            nodes: policies.into_iter().map(Node::new).collect(),
            edges,
            graces: BinaryHeap::new(),
            touched: Vec::new(),
        }
    }

    /// A machine for a new target set that keeps what is known of targets that stay:
    /// `previous[i]` is target `i`'s index in `old`, if it was there.
    pub fn carry_over(
        old: &Machine,
        previous: &[Option<usize>],
        policies: Vec<Policy>,
        edges: Edges,
        now: Instant,
    ) -> Machine {
        let mut m = Machine::new(policies, edges);
        for (i, p) in previous.iter().enumerate() {
            if let Some(&p) = p.as_ref()
                && let Some(o) = old.nodes.get(p)
            {
                let policy = m.nodes[i].policy;
                m.nodes[i] = Node {
                    policy,
                    roots: Vec::new(),
                    ..o.clone()
                };
                if let Some(until) = o.grace_until {
                    m.graces.push(Reverse((until, i)));
                }
            }
        }
        // Root causes are indices: derive them all again in the new numbering.
        let mut order: Vec<usize> = (0..m.nodes.len()).collect();
        order.sort_by_key(|&i| m.edges.rank[i]);
        for i in order {
            if m.nodes[i].state.failing() {
                m.nodes[i].roots = m.derive_roots(i);
            }
        }
        let mut changes = Vec::new();
        m.rederive_all(now, &mut changes);
        m
    }

    /// The number of targets.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no targets.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Target `i`'s state, for exposition.
    pub fn view(&self, i: usize) -> View {
        let n = &self.nodes[i];
        View {
            state: n.state,
            since: n.since,
            root_causes: n.roots.clone(),
            last_failure: n.last_failure.clone(),
            changes: n.changes,
        }
    }

    /// Target `i`'s state.
    pub fn state(&self, i: usize) -> State {
        self.nodes[i].state
    }

    /// Target `i`'s root causes.
    pub fn root_causes(&self, i: usize) -> &[usize] {
        &self.nodes[i].roots
    }

    /// The edges the machine works on.
    pub fn edges(&self) -> &Edges {
        &self.edges
    }

    /// Whether the machine needs target `i`'s successful results as they come: `false` only
    /// while `i` is steadily up (no streak being confirmed) and no dependent of it is failing,
    /// being confirmed or waiting for a fresh result. A success of such a target changes
    /// nothing, so the caller may hand it over later, in a batch; failures always matter.
    pub fn wants_results(&self, i: usize) -> bool {
        let unsettled =
            |n: &Node| n.health != Health::Up || n.streak > 0 || !n.decided || n.state != State::Up;
        unsettled(&self.nodes[i])
            || self.edges.dependents[i]
                .iter()
                .any(|&j| unsettled(&self.nodes[j]))
    }

    /// Moves the targets observed or re-derived since the last call into `out`: whether the
    /// machine wants their results (and their dependencies') may have changed.
    pub fn take_touched(&mut self, out: &mut Vec<usize>) {
        out.append(&mut self.touched);
    }

    /// The earliest grace period that will end, for the caller's timer.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.graces.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes in one finished probe of target `i`. Returns the probes to run next and appends the
    /// state changes to `changes`.
    pub fn observe(
        &mut self,
        i: usize,
        obs: &Observation,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Vec<Request> {
        if obs.failure.is_none() && !self.wants_results(i) {
            // A steadily-up target succeeding again, with no dependent waiting on it: nothing
            // can change but the start of its newest probe.
            let n = &mut self.nodes[i];
            if n.last_started.is_none_or(|s| obs.started > s) {
                n.last_started = Some(obs.started);
            }
            return Vec::new();
        }
        let mut requests = Vec::new();
        self.touched.push(i);
        let n = &mut self.nodes[i];
        if n.last_started.is_none_or(|s| obs.started > s) {
            n.last_started = Some(obs.started);
        }
        let retries = n.policy.retries;
        let retry_at = obs.finished + n.policy.retry_interval;
        match (n.health, obs.failure.is_none()) {
            (Health::Unknown, true) => {
                n.health = Health::Up;
                n.streak = 0;
            }
            (Health::Up, true) | (Health::Failing, false) => n.streak = 0,
            (Health::Unknown | Health::Up, false) => {
                if n.streak == 0 {
                    n.failing_since = Some(obs.finished);
                    requests.extend(
                        self.edges.dependencies[i]
                            .iter()
                            .map(|&d| Request::Dependency(d)),
                    );
                }
                n.streak += 1;
                if n.streak > retries {
                    n.health = Health::Failing;
                    n.streak = 0;
                } else {
                    requests.push(Request::Confirm(i, retry_at));
                }
            }
            (Health::Failing, true) => {
                n.streak += 1;
                if n.streak > retries {
                    n.health = Health::Up;
                    n.streak = 0;
                    n.failing_since = None;
                } else {
                    requests.push(Request::Confirm(i, retry_at));
                }
            }
        }
        if let Some(f) = &obs.failure {
            n.last_failure = Some(f.clone());
        }
        let wall = obs.finished_wall;
        // Target `i` may change, and its dependents waiting for a fresh result of it may now be
        // decided.
        let mut work: Vec<usize> = vec![i];
        work.extend(self.edges.dependents[i].iter().copied());
        self.propagate(work, now, wall, changes);
        requests
    }

    /// Ends the grace periods due by `now`.
    pub fn tick(&mut self, now: Instant, wall: SystemTime, changes: &mut Vec<Change>) {
        let mut due = Vec::new();
        while let Some(Reverse((at, i))) = self.graces.peek().copied() {
            if at > now {
                break;
            }
            self.graces.pop();
            due.push(i);
        }
        if !due.is_empty() {
            self.propagate(due, now, wall, changes);
        }
    }

    fn rederive_all(&mut self, now: Instant, changes: &mut Vec<Change>) {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        let wall = SystemTime::now();
        self.propagate(all, now, wall, changes);
    }

    /// Re-derives the targets in `start` and, where a state or root set changed, their
    /// dependents, in topological order so each sees its dependencies' final word. Work is
    /// proportional to what changed, not to the number of targets.
    fn propagate(
        &mut self,
        start: Vec<usize>,
        now: Instant,
        wall: SystemTime,
        changes: &mut Vec<Change>,
    ) {
        let rank = |i: usize| self.edges.rank[i];
        let mut heap: BinaryHeap<Reverse<(usize, usize)>> =
            start.into_iter().map(|i| Reverse((rank(i), i))).collect();
        // A target is pushed only by targets ranked before it, so all its copies in the heap
        // come out one after another: skipping a repeat of the last one is enough.
        let mut last = None;
        while let Some(Reverse((_, i))) = heap.pop() {
            if last == Some(i) {
                continue;
            }
            last = Some(i);
            if self.derive(i, now, wall, changes) {
                for &j in &self.edges.dependents[i] {
                    heap.push(Reverse((self.edges.rank[j], j)));
                }
            }
        }
    }

    fn dep_status(&self, d: usize, since: Option<Instant>) -> DepStatus<'_> {
        let n = &self.nodes[d];
        if !n.decided {
            return DepStatus::Undecided;
        }
        match n.state {
            State::Down | State::Blocked => DepStatus::Failing(&n.roots),
            State::Unknown => DepStatus::Undecided,
            State::Up => {
                let fresh = match (since, n.last_started) {
                    (Some(since), Some(started)) => started >= since,
                    (None, _) => true,
                    (Some(_), None) => false,
                };
                if n.suspect() || !fresh {
                    DepStatus::Undecided
                } else {
                    DepStatus::Healthy
                }
            }
        }
    }

    fn derive_roots(&self, i: usize) -> Vec<usize> {
        let mut roots: Vec<usize> = Vec::new();
        for &d in &self.edges.dependencies[i] {
            let n = &self.nodes[d];
            if n.state.failing() {
                roots.extend_from_slice(&n.roots);
            }
        }
        if roots.is_empty() {
            return vec![i];
        }
        roots.sort_unstable();
        roots.dedup();
        roots
    }

    /// Derives target `i`'s state from its health and its dependencies'; records a change.
    /// Returns whether its state or root causes changed.
    fn derive(
        &mut self,
        i: usize,
        now: Instant,
        wall: SystemTime,
        changes: &mut Vec<Change>,
    ) -> bool {
        let (state, roots, decided, grace) = {
            let n = &self.nodes[i];
            match n.health {
                Health::Unknown => (State::Unknown, Vec::new(), true, None),
                Health::Up => (State::Up, Vec::new(), true, None),
                Health::Failing => {
                    let mut failing: Vec<usize> = Vec::new();
                    let mut undecided = false;
                    for &d in &self.edges.dependencies[i] {
                        match self.dep_status(d, n.failing_since) {
                            DepStatus::Failing(r) => failing.extend_from_slice(r),
                            DepStatus::Undecided => undecided = true,
                            DepStatus::Healthy => {}
                        }
                    }
                    if !failing.is_empty() {
                        failing.sort_unstable();
                        failing.dedup();
                        (State::Blocked, failing, true, None)
                    } else if undecided {
                        (n.state, n.roots.clone(), false, n.grace_until)
                    } else if n.state == State::Blocked {
                        // Its dependencies recovered before it did.
                        let until = n.grace_until.unwrap_or(now + n.policy.recovery_grace);
                        if until > now {
                            (State::Blocked, n.roots.clone(), true, Some(until))
                        } else {
                            (State::Down, vec![i], true, None)
                        }
                    } else {
                        (State::Down, vec![i], true, None)
                    }
                }
            }
        };
        self.touched.push(i);
        let n = &mut self.nodes[i];
        n.decided = decided;
        if let Some(until) = grace
            && n.grace_until != grace
        {
            self.graces.push(Reverse((until, i)));
        }
        n.grace_until = grace;
        if n.state == state && n.roots == roots {
            return false;
        }
        let from = n.state;
        if from != state {
            n.since = Some(wall);
            n.changes += 1;
        }
        n.state = state;
        n.roots = roots.clone();
        changes.push(Change {
            target: i,
            from,
            to: state,
            root_causes: roots,
        });
        true
    }
}

/// The kind of a target's latest failure as a label value, or "" when it never failed.
pub fn failure_kind_label(f: Option<&ProbeFailure>) -> &'static str {
    f.map(|f| f.kind).map(FailureKind::as_str).unwrap_or("")
}
