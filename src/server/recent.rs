//! Recent probes for the `/` page and `/logs?id=`: blackbox's `--history.limit` ring, kept as
//! data (a subscriber of the result bus). `/probe` requests and scheduled probes have a ring
//! each, so a thousand scheduled targets never push the probe a user just ran with
//! `debug=true` out of sight.
//!
//! Entries are the published results themselves; the debug text (log lines, exposition, module
//! YAML) is rendered only when `/logs` asks for one.

use std::collections::VecDeque;
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

/// The last `limit` `/probe` requests and the last `limit` scheduled probes.
#[derive(Debug)]
pub struct Recent {
    next_id: AtomicU64,
    probe: Ring,
    scheduled: Ring,
}

impl Recent {
    /// Rings of `limit` entries each (`--history.limit`).
    pub fn new(limit: usize) -> Recent {
        Recent {
            next_id: AtomicU64::new(0),
            probe: Ring::new(limit),
            scheduled: Ring::new(limit),
        }
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
        self.probe.get(id).or_else(|| self.scheduled.get(id))
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
        if result.scheduled.is_some() {
            self.scheduled.push(e);
        } else {
            self.probe.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::ProbeLog;
    use crate::probe::Outcome;
    use crate::probe::report::Report;

    fn result(target: &str) -> Arc<ProbeResult> {
        let module = crate::config::parse("modules:\n  m: {prober: tcp}\n", "t.yml".as_ref())
            .expect("config parses")
            .modules["m"]
            .clone();
        let outcome = Outcome {
            report: Report::new(),
            failure: None,
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
        let h = Recent::new(2);
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
}
