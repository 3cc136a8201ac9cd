//! Recent probe results for the `/` page and `/logs?id=`: a bounded ring, as blackbox's
//! `--history.limit` history.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

/// One finished probe, as the history page shows it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// A number unique within this process.
    pub id: u64,
    /// The module.
    pub module: String,
    /// The target.
    pub target: String,
    /// Whether it succeeded.
    pub success: bool,
    /// When it finished.
    pub at: SystemTime,
    /// The debug text (log, metrics, module config).
    pub debug: String,
}

/// The last `limit` probes.
#[derive(Debug)]
pub struct History {
    limit: usize,
    inner: Mutex<(u64, VecDeque<Entry>)>,
}

impl History {
    /// A history keeping `limit` entries.
    pub fn new(limit: usize) -> History {
        History {
            limit,
            inner: Mutex::new((0, VecDeque::with_capacity(limit.min(1024)))),
        }
    }

    /// Adds an entry, dropping the oldest beyond the limit.
    pub fn add(&self, module: &str, target: &str, success: bool, debug: String) {
        if self.limit == 0 {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let id = g.0;
        g.0 += 1;
        if g.1.len() >= self.limit {
            g.1.pop_front();
        }
        g.1.push_back(Entry {
            id,
            module: module.to_owned(),
            target: target.to_owned(),
            success,
            at: SystemTime::now(),
            debug,
        });
    }

    /// The entries, newest first.
    pub fn list(&self) -> Vec<Entry> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.iter().rev().cloned().collect()
    }

    /// One entry by id.
    pub fn get(&self, id: u64) -> Option<Entry> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.iter().find(|e| e.id == id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries() {
        let h = History::new(2);
        for i in 0..3 {
            h.add("m", &format!("t{i}"), true, String::new());
        }
        let l = h.list();
        assert_eq!(
            l.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
            ["t2", "t1"]
        );
        assert!(h.get(0).is_none());
        assert_eq!(h.get(2).unwrap().target, "t2");
    }
}
