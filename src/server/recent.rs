//! Recent probes for the `/` page and `/logs?id=`: blackbox's `--history.limit` ring, kept as
//! data (a subscriber of the result bus). `/probe` requests and scheduled probes have a ring
//! each, so a thousand scheduled targets never push the probe a user just ran with
//! `debug=true` out of sight.
//!
//! Beside the rings, failures are kept per target (`--history.failures-per-target` of each,
//! for at most `--history.failed-targets` targets per kind), so a target that fails on every
//! probe cannot push another target's rare failure out of sight: it only ever replaces its own.
//!
//! Entries are the published results themselves; the debug text (log lines, exposition, module
//! YAML) is rendered only when `/logs` asks for one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::results::{ProbeResult, Subscriber};

/// One kept probe and its id.
#[derive(Debug, Clone)]
pub struct Entry {
    /// A number unique within this process.
    pub id: u64,
    /// The probe.
    pub result: Arc<ProbeResult>,
}

#[derive(Debug)]
struct Ring {
    limit: usize,
    entries: Mutex<VecDeque<Entry>>,
}

impl Ring {
    fn new(limit: usize) -> Ring {
        Ring {
            limit,
            entries: Mutex::new(VecDeque::with_capacity(limit.min(1024))),
        }
    }

    fn push(&self, e: Entry) {
        if self.limit == 0 {
            return;
        }
        let mut g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= self.limit {
            g.pop_front();
        }
        g.push_back(e);
    }

    fn list(&self) -> Vec<Entry> {
        let g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        g.iter().rev().cloned().collect()
    }

    fn get(&self, id: u64) -> Option<Entry> {
        let g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        g.iter().find(|e| e.id == id).cloned()
    }
}

/// Which target a failure belongs to: a `/probe` target with its module, or a scheduled
/// target's name (names are unique; its module is part of it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FailureKey {
    module: String,
    target: String,
}

/// The kept failures of one target.
#[derive(Debug, Clone)]
pub struct TargetFailures {
    /// Its failures since the process started, kept or not.
    pub total: u64,
    /// The newest kept ones, oldest first.
    entries: VecDeque<Entry>,
}

impl TargetFailures {
    /// The kept failures, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().rev()
    }

    /// The newest kept failure.
    pub fn newest(&self) -> Option<&Entry> {
        self.entries.back()
    }
}

/// Failures per target, bounded both ways: `per_target` entries of each target and
/// `max_targets` targets. A new target past that bound takes the place of the target whose
/// newest failure is the oldest.
#[derive(Debug)]
struct FailureTable {
    per_target: usize,
    max_targets: usize,
    targets: Mutex<HashMap<FailureKey, TargetFailures>>,
}

impl FailureTable {
    fn new(per_target: usize, max_targets: usize) -> FailureTable {
        FailureTable {
            per_target,
            max_targets,
            targets: Mutex::default(),
        }
    }

    fn push(&self, key: FailureKey, e: Entry) {
        if self.per_target == 0 || self.max_targets == 0 {
            return;
        }
        let mut g = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if !g.contains_key(&key) && g.len() >= self.max_targets {
            let stalest = g
                .iter()
                .min_by_key(|(_, f)| f.newest().map_or(0, |n| n.id))
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                g.remove(&k);
            }
        }
        let f = g.entry(key).or_insert_with(|| TargetFailures {
            total: 0,
            entries: VecDeque::new(),
        });
        f.total += 1;
        if f.entries.len() >= self.per_target {
            f.entries.pop_front();
        }
        f.entries.push_back(e);
    }

    fn get(&self, id: u64) -> Option<Entry> {
        let g = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        g.values()
            .flat_map(|f| f.entries.iter())
            .find(|e| e.id == id)
            .cloned()
    }

    /// Every target with failures, the most recently failed first.
    fn list(&self) -> Vec<TargetFailures> {
        let g = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<TargetFailures> = g.values().cloned().collect();
        v.sort_by_key(|f| std::cmp::Reverse(f.newest().map_or(0, |n| n.id)));
        v
    }

    /// The failures of the targets `matches` picks.
    fn matching(&self, matches: impl Fn(&FailureKey) -> bool) -> Vec<Entry> {
        let g = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        g.iter()
            .filter(|(k, _)| matches(k))
            .flat_map(|(_, f)| f.entries.iter().cloned())
            .collect()
    }
}

/// How many failures are kept per target, and for how many targets.
#[derive(Debug, Clone, Copy)]
pub struct FailureLimits {
    /// Kept failures of one target (`--history.failures-per-target`; 0 keeps none).
    pub per_target: usize,
    /// Targets with kept failures, for `/probe` and for scheduled targets each
    /// (`--history.failed-targets`).
    pub targets: usize,
}

/// The last `limit` `/probe` requests and the last `limit` scheduled probes, and the last
/// failures of each target.
#[derive(Debug)]
pub struct Recent {
    next_id: AtomicU64,
    probe: Ring,
    scheduled: Ring,
    probe_failures: FailureTable,
    scheduled_failures: FailureTable,
}

impl Recent {
    /// Rings of `limit` entries each (`--history.limit`), failures as `failures` says.
    pub fn new(limit: usize, failures: FailureLimits) -> Recent {
        Recent {
            next_id: AtomicU64::new(0),
            probe: Ring::new(limit),
            scheduled: Ring::new(limit),
            probe_failures: FailureTable::new(failures.per_target, failures.targets),
            scheduled_failures: FailureTable::new(failures.per_target, failures.targets),
        }
    }

    /// The `/probe` targets with kept failures, the most recently failed first.
    pub fn probe_failures(&self) -> Vec<TargetFailures> {
        self.probe_failures.list()
    }

    /// The scheduled targets with kept failures, the most recently failed first.
    pub fn scheduled_failures(&self) -> Vec<TargetFailures> {
        self.scheduled_failures.list()
    }

    /// The kept failures of `target` (a `/probe` target, or a scheduled target's address or
    /// name), of `module` when one is given, newest first (`/logs?target=&failures=true`).
    pub fn failures_of(&self, target: &str, module: Option<&str>) -> Vec<Entry> {
        let by_module = |k: &FailureKey| module.is_none_or(|m| k.module == m);
        let mut v = self
            .probe_failures
            .matching(|k| k.target == target && by_module(k));
        v.extend(
            self.scheduled_failures
                .matching(|k| by_module(k))
                .into_iter()
                .filter(|e| {
                    let r = &e.result;
                    r.target() == target || r.scheduled.as_ref().is_some_and(|t| t.name == target)
                }),
        );
        v.sort_by_key(|e| std::cmp::Reverse(e.id));
        v
    }

    /// The `/probe` requests, newest first.
    pub fn probes(&self) -> Vec<Entry> {
        self.probe.list()
    }

    /// The scheduled probes, newest first.
    pub fn scheduled(&self) -> Vec<Entry> {
        self.scheduled.list()
    }

    /// One entry by id.
    pub fn get(&self, id: u64) -> Option<Entry> {
        self.probe
            .get(id)
            .or_else(|| self.scheduled.get(id))
            .or_else(|| self.probe_failures.get(id))
            .or_else(|| self.scheduled_failures.get(id))
    }

    /// The newest kept probe of `target` (its address, or a scheduled target's name), of
    /// `module` when one is given (`/logs?target=&module=`).
    pub fn newest_of(&self, target: &str, module: Option<&str>) -> Option<Entry> {
        let matches = |e: &&Entry| {
            let r = &e.result;
            (r.target() == target || r.scheduled.as_ref().is_some_and(|t| t.name == target))
                && module.is_none_or(|m| r.module.name == m)
        };
        let newest = |ring: &Ring| {
            let g = ring.entries.lock().unwrap_or_else(|e| e.into_inner());
            g.iter().rev().find(matches).cloned()
        };
        match (newest(&self.probe), newest(&self.scheduled)) {
            (Some(a), Some(b)) => Some(if a.id > b.id { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

impl Subscriber for Recent {
    fn deliver(&self, result: &Arc<ProbeResult>) {
        let e = Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            result: result.clone(),
        };
        let (ring, failures) = match &result.scheduled {
            Some(_) => (&self.scheduled, &self.scheduled_failures),
            None => (&self.probe, &self.probe_failures),
        };
        if !result.success() {
            // A scheduled target by its name (unique), a `/probe` target by what was asked.
            let target = match &result.scheduled {
                Some(t) => t.name.clone(),
                None => result.target().to_owned(),
            };
            let key = FailureKey {
                module: result.module.name.clone(),
                target,
            };
            failures.push(key, e.clone());
        }
        ring.push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::ProbeLog;
    use crate::probe::Outcome;
    use crate::probe::prober::{FailureKind, ProbeFailure};
    use crate::probe::report::Report;

    fn failed(target: &str) -> Arc<ProbeResult> {
        probe(
            target,
            Some(ProbeFailure::new(FailureKind::Timeout, "no answer")),
        )
    }

    fn result(target: &str) -> Arc<ProbeResult> {
        probe(target, None)
    }

    const NO_FAILURES: FailureLimits = FailureLimits {
        per_target: 0,
        targets: 0,
    };

    fn probe(target: &str, failure: Option<ProbeFailure>) -> Arc<ProbeResult> {
        let module = crate::config::parse("modules:\n  m: {prober: tcp}\n", "t.yml".as_ref())
            .expect("config parses")
            .modules["m"]
            .clone();
        let outcome = Outcome {
            report: Report::new(),
            failure,
            panicked: false,
            duration: std::time::Duration::ZERO,
            logs: ProbeLog::default(),
        };
        Arc::new(ProbeResult::new(
            outcome,
            module,
            target.into(),
            std::time::SystemTime::now(),
        ))
    }

    #[test]
    fn keeps_the_newest_entries() {
        let h = Recent::new(2, NO_FAILURES);
        for i in 0..3 {
            h.deliver(&result(&format!("t{i}")));
        }
        let l = h.probes();
        assert_eq!(
            l.iter().map(|e| e.result.target()).collect::<Vec<_>>(),
            ["t2", "t1"]
        );
        assert!(h.get(0).is_none());
        assert_eq!(h.get(2).unwrap().result.target(), "t2");
        assert!(h.scheduled().is_empty());
    }

    #[test]
    fn a_target_failing_every_time_keeps_only_its_own_last_failures() {
        let h = Recent::new(
            2,
            FailureLimits {
                per_target: 3,
                targets: 10,
            },
        );
        h.deliver(&failed("rare"));
        for _ in 0..50 {
            h.deliver(&failed("flaky"));
        }
        h.deliver(&result("rare"));
        // The ring has long forgotten the rare failure; the table has not.
        assert!(h.probes().iter().all(|e| e.id != 0));
        let rare = h.failures_of("rare", Some("m"));
        assert_eq!(rare.len(), 1);
        assert_eq!(rare[0].id, 0);
        assert_eq!(
            h.get(0).map(|e| e.id),
            Some(0),
            "its /logs?id= link still works"
        );
        let flaky = h.failures_of("flaky", None);
        assert_eq!(
            flaky.iter().map(|e| e.id).collect::<Vec<_>>(),
            [50, 49, 48],
            "the newest three, newest first"
        );
        let list = h.probe_failures();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0].total, 50,
            "the most recently failed first, with its total"
        );
        assert_eq!(list[1].total, 1);
        assert!(h.failures_of("rare", Some("other")).is_empty());
        assert!(h.scheduled_failures().is_empty());
    }

    #[test]
    fn past_the_target_bound_the_stalest_target_goes() {
        let h = Recent::new(
            0,
            FailureLimits {
                per_target: 2,
                targets: 2,
            },
        );
        h.deliver(&failed("a"));
        h.deliver(&failed("b"));
        h.deliver(&failed("a"));
        h.deliver(&failed("c"));
        let names: Vec<String> = h
            .probe_failures()
            .iter()
            .map(|f| f.newest().unwrap().result.target().to_owned())
            .collect();
        assert_eq!(names, ["c", "a"], "b failed longest ago");
        assert!(h.failures_of("b", None).is_empty());
    }

    #[test]
    fn zero_per_target_keeps_no_failures() {
        let h = Recent::new(5, NO_FAILURES);
        h.deliver(&failed("a"));
        assert!(h.probe_failures().is_empty());
        assert_eq!(h.probes().len(), 1);
    }
}
