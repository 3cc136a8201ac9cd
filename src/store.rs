//! Recent probe results for the `/` page and `/logs?id=`: a bounded ring, as blackbox's
//! `--history.limit` history.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::Module;
use crate::logging::ProbeLog;

/// One finished probe, as the history page shows it.
///
/// The debug text is kept as its parts and rendered only when `/logs?id=` asks for it: building
/// it for every probe (the module's YAML above all) cost more than the rest of a plain HTTP
/// probe's bookkeeping, for a page that shows one entry in thousands.
#[derive(Debug)]
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
    /// The probe's captured log.
    pub logs: ProbeLog,
    /// The metrics as `/probe` answered them (text format).
    pub exposition: String,
    /// The module it ran with, for the configuration part of the debug text.
    pub module_config: Arc<Module>,
}

/// What `History::add` records about one probe.
#[derive(Debug)]
pub struct Record<'a> {
    /// The module's name.
    pub module: &'a str,
    /// The target.
    pub target: &'a str,
    /// Whether it succeeded.
    pub success: bool,
    /// The probe's captured log.
    pub logs: ProbeLog,
    /// The metrics as `/probe` answered them (text format).
    pub exposition: String,
    /// The module it ran with.
    pub module_config: Arc<Module>,
}

/// The last `limit` probes.
#[derive(Debug)]
pub struct History {
    limit: usize,
    inner: Mutex<(u64, VecDeque<Arc<Entry>>)>,
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
    pub fn add(&self, r: Record<'_>) {
        if self.limit == 0 {
            return;
        }
        // The encoder sizes its output generously; a hundred kept answers at that size were the
        // largest item on the heap under load.
        let mut exposition = r.exposition;
        exposition.shrink_to_fit();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let id = g.0;
        g.0 += 1;
        if g.1.len() >= self.limit {
            g.1.pop_front();
        }
        g.1.push_back(Arc::new(Entry {
            id,
            module: r.module.to_owned(),
            target: r.target.to_owned(),
            success: r.success,
            at: SystemTime::now(),
            logs: r.logs,
            exposition,
            module_config: r.module_config,
        }));
    }

    /// The entries, newest first.
    pub fn list(&self) -> Vec<Arc<Entry>> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.iter().rev().cloned().collect()
    }

    /// One entry by id.
    pub fn get(&self, id: u64) -> Option<Arc<Entry>> {
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
        let module = crate::config::parse(
            "modules:\n  m: {prober: tcp}\n",
            std::path::Path::new("t.yml"),
        )
        .expect("config parses")
        .modules["m"]
            .clone();
        for i in 0..3 {
            h.add(Record {
                module: "m",
                target: &format!("t{i}"),
                success: true,
                logs: ProbeLog::default(),
                exposition: String::new(),
                module_config: module.clone(),
            });
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
