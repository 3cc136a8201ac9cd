//! Where the scheduler's targets come from: the config file's own (fixed), the candidates each
//! discovery source offers (Kubernetes), and, with `--shard.*`, this replica's share of them.
//! Any change (a reload, a source's new list) assembles the whole set again and sends it to
//! the scheduler, which keeps the phase, counters and state of every unchanged target, as on a
//! reload.
//!
//! Candidates are kept as written (`RawTarget`) and validated against the config of the moment,
//! so a reload that changes a module or `defaults:` applies to discovered targets too, and a
//! candidate the new config cannot take is rejected alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::targets::{RawTarget, validate_target};
use crate::config::{Config, Rejection, TargetSet, assemble};
use crate::probe::report::{Family, Report};
use crate::shard::Shard;

static SHARD_TARGETS: Family = Family::gauge(
    "lookout_shard_targets",
    "Scheduled targets in this replica's share.",
);
static SHARD_ALL_TARGETS: Family = Family::gauge(
    "lookout_shard_targets_considered",
    "Scheduled targets from every source before the share was taken.",
);
static SHARD_INFO: Family = Family::gauge(
    "lookout_shard_info",
    "This replica's --shard.index and --shard.count, as labels (always 1).",
);
static SHARD_PEER_UP: Family = Family::gauge(
    "lookout_shard_peer_up",
    "Whether this replica hears the peer replica of this ordinal (--shard.peers); 0 while this replica probes its share.",
);
static SHARD_COUNT_IN_EFFECT: Family = Family::gauge(
    "lookout_shard_count_in_effect",
    "The replica count the share is taken under: the lowest --shard.count among this replica and the peers it hears (--shard.peers).",
);
static SOURCE_TARGETS: Family = Family::gauge(
    "lookout_source_targets",
    "Targets each source offers (file: the config's targets:), before the share was taken.",
);
static SOURCE_REJECTED: Family = Family::gauge(
    "lookout_source_rejected_targets",
    "Candidates of each source left out of the set at its last assembly (invalid, duplicate name, unknown or cyclic depends_on).",
);

/// The targets' sources and the set made of them.
#[derive(Debug)]
pub struct Sources {
    inner: Mutex<Inner>,
    tx: watch::Sender<Arc<TargetSet>>,
    /// The config of the moment, for sources that derive their targets from it.
    config_tx: watch::Sender<Arc<Config>>,
    shard: Option<Shard>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<Config>,
    /// Each source's candidates, as written, with where each came from (for its rejection).
    offered: BTreeMap<&'static str, Vec<RawTarget>>,
    /// Rejected candidates per source at the last assembly.
    rejected: BTreeMap<&'static str, Vec<Rejection>>,
    /// How many targets before the share was taken.
    considered: usize,
    /// The peer replicas `--shard.peers` found down, whose share this one takes its part of.
    down: BTreeSet<u32>,
    /// The count the share is taken under: the lowest `--shard.count` among this replica and the
    /// live peers (`peers.rs`); `None` until peers are heard, then the flag's.
    count: Option<u32>,
    /// Whether peers are watched (`--shard.peers`), so their states are exposed.
    watching: bool,
    /// Every scheduled target before the share was taken: what a peer may ask this replica to
    /// confirm (`replicas_per_target`).
    full: Arc<TargetSet>,
}

impl Sources {
    /// The sources of `config`'s targets, this replica taking `shard`'s share; the receiver is
    /// the scheduler's.
    pub fn new(
        config: Arc<Config>,
        shard: Option<Shard>,
    ) -> (Sources, watch::Receiver<Arc<TargetSet>>) {
        let config_tx = watch::Sender::new(config.clone());
        let mut inner = Inner {
            config,
            offered: BTreeMap::new(),
            rejected: BTreeMap::new(),
            considered: 0,
            down: BTreeSet::new(),
            count: None,
            watching: false,
            full: Arc::default(),
        };
        let (set, _) = build(&mut inner, shard);
        let (tx, rx) = watch::channel(set);
        (
            Sources {
                inner: Mutex::new(inner),
                tx,
                config_tx,
                shard,
            },
            rx,
        )
    }

    /// The config of the moment, and every one a reload brings.
    pub fn configs(&self) -> watch::Receiver<Arc<Config>> {
        self.config_tx.subscribe()
    }

    /// A reload: the file's targets, modules and defaults are `config`'s from now on.
    pub fn config_changed(&self, config: Arc<Config>) {
        let mut inner = self.lock();
        inner.config = config.clone();
        self.config_tx.send_replace(config);
        let (set, rejected) = build(&mut inner, self.shard);
        self.tx.send_replace(set);
        // Each source reports its own refusals as they happen; a reload names them once more.
        for (source, r) in rejected
            .iter()
            .flat_map(|(s, rs)| rs.iter().map(move |r| (s, r)))
        {
            tracing::warn!(source, target = %r.name, err = %r.error, "Target rejected");
        }
    }

    /// Source `source` now offers `candidates` (all of them: what it offered before is
    /// replaced). Returns those left out and why, for the source to report on its objects.
    /// An offer equal to the source's last one changes nothing and re-plans nothing (a watch
    /// reporting an object's status, say).
    pub fn offer(&self, source: &'static str, candidates: Vec<RawTarget>) -> Vec<Rejection> {
        let mut inner = self.lock();
        if inner.offered.get(source) == Some(&candidates) {
            return inner.rejected.get(source).cloned().unwrap_or_default();
        }
        inner.offered.insert(source, candidates);
        let (set, mut rejected) = build(&mut inner, self.shard);
        self.tx.send_replace(set);
        rejected.remove(source).unwrap_or_default()
    }

    /// The peer replicas now down (`--shard.peers`): this replica's share is taken again, with
    /// its part of theirs. Nothing is sent when the set did not change.
    pub fn peers_changed(&self, down: BTreeSet<u32>, count: u32) {
        let mut inner = self.lock();
        inner.watching = true;
        if inner.down == down && inner.count == Some(count) {
            return;
        }
        inner.down = down;
        inner.count = Some(count);
        let (set, _) = build(&mut inner, self.shard);
        self.tx.send_replace(set);
    }

    /// This replica's `--shard.*`, if sharded.
    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    /// A scheduled target by name from every source, in this replica's share or not: for a
    /// peer asking this replica to confirm a failure.
    pub fn any_target(&self, name: &str) -> Option<Arc<crate::config::Target>> {
        self.lock().full.get(name).cloned()
    }

    /// The peer replicas now taken for down.
    pub fn down(&self) -> BTreeSet<u32> {
        self.lock().down.clone()
    }

    /// The sources' and the share's figures for `/metrics`: the share's with `--shard.*`, the
    /// sources' once one offered targets (nothing for a config of file targets alone).
    pub fn metrics(&self) -> Report {
        let inner = self.lock();
        let mut r = Report::with_capacity(4 + 2 * inner.offered.len());
        if let Some(shard) = self.shard {
            r.set(&SHARD_TARGETS, self.tx.borrow().len() as f64);
            r.set(&SHARD_ALL_TARGETS, inner.considered as f64);
            r.set_labeled(
                &SHARD_INFO,
                &[
                    ("index", &shard.index.to_string()),
                    ("count", &shard.count.to_string()),
                ],
                1.0,
            );
            if let Some(count) = inner.count {
                r.set(&SHARD_COUNT_IN_EFFECT, f64::from(count));
            }
            if inner.watching {
                for peer in (0..shard.count).filter(|&p| p != shard.index) {
                    let up = if inner.down.contains(&peer) { 0.0 } else { 1.0 };
                    r.set_labeled(&SHARD_PEER_UP, &[("peer", &peer.to_string())], up);
                }
            }
        }
        if !inner.offered.is_empty() {
            r.set_labeled(
                &SOURCE_TARGETS,
                &[("source", "file")],
                inner.config.targets.len() as f64,
            );
        }
        for (source, offered) in &inner.offered {
            r.set_labeled(&SOURCE_TARGETS, &[("source", source)], offered.len() as f64);
            let rejected = inner.rejected.get(source).map_or(0, Vec::len);
            r.set_labeled(&SOURCE_REJECTED, &[("source", source)], rejected as f64);
        }
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The set of `inner`'s sources and this replica's share of it, with each source's rejected
/// candidates.
fn build(
    inner: &mut Inner,
    shard: Option<Shard>,
) -> (Arc<TargetSet>, BTreeMap<&'static str, Vec<Rejection>>) {
    let config = inner.config.clone();
    let mut rejected: BTreeMap<&'static str, Vec<Rejection>> = BTreeMap::new();
    let full = if inner.offered.values().all(Vec::is_empty) {
        config.targets.clone()
    } else {
        // Which source offered each accepted candidate, to hand its rejections back.
        let mut origin: BTreeMap<String, &'static str> = BTreeMap::new();
        let mut candidates = Vec::new();
        for (&source, offered) in &inner.offered {
            for raw in offered {
                match validate_target(raw, &config.defaults, &config.modules) {
                    Ok(t) => {
                        origin.entry(t.name.clone()).or_insert(source);
                        candidates.push(t);
                    }
                    Err(error) => {
                        rejected.entry(source).or_default().push(Rejection {
                            name: raw.name.clone(),
                            error,
                        });
                    }
                }
            }
        }
        let fixed = config.targets.iter().map(|t| (**t).clone()).collect();
        // The file's targets were assembled once already at load, so they cannot fail here.
        match assemble(fixed, candidates, config.targets.settings().clone()) {
            Ok(a) => {
                for r in a.rejected {
                    let source = origin.get(&r.name).copied().unwrap_or("unknown");
                    rejected.entry(source).or_default().push(r);
                }
                Arc::new(a.set)
            }
            Err(e) => {
                tracing::error!(err = %e.error, "The file's targets failed to assemble again; discovered targets left out");
                config.targets.clone()
            }
        }
    };
    inner.rejected = rejected.clone();
    inner.considered = full.len();
    inner.full = full.clone();
    let share = match shard {
        Some(s) if s.count > 1 => {
            // Under the count the live replicas agree on (the lowest they run with): while a
            // change of --shard.count rolls out, every replica keeps the old split until the
            // last one runs the new count, then all switch within one check.
            let count = inner.count.unwrap_or(s.count).min(s.count);
            let agreed = Shard { count, ..s };
            if s.index >= count {
                // Its ordinal is beyond the agreed count: nothing yet (the settings kept).
                Arc::new(full.components_where(|_| false))
            } else {
                let down = inner.down.iter().copied().filter(|&d| d < count).collect();
                Arc::new(agreed.share_among(&full, &down))
            }
        }
        _ => full,
    };
    (share, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(targets: &str) -> Arc<Config> {
        let text = format!(
            "modules:\n  tcp: {{prober: tcp}}\n  http: {{prober: http}}\ntargets:\n{targets}"
        );
        Arc::new(crate::config::parse(&text, "t.yml".as_ref()).expect("config parses"))
    }

    fn raw(name: &str, depends_on: &[&str]) -> RawTarget {
        RawTarget {
            name: name.into(),
            module: "tcp".into(),
            target: "127.0.0.1:1".into(),
            depends_on: depends_on.iter().map(|s| (*s).to_owned()).collect(),
            ..RawTarget::default()
        }
    }

    fn names(set: &TargetSet) -> Vec<&str> {
        set.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn candidates_join_the_file_targets_and_a_bad_one_is_rejected_alone() {
        let (sources, rx) = Sources::new(
            config("  - {name: db, module: tcp, target: '127.0.0.1:5'}\n"),
            None,
        );
        assert_eq!(names(&rx.borrow()), ["db"]);
        let mut bad = raw("wiki", &[]);
        bad.module = "nope".into();
        let rejected = sources.offer(
            "kubernetes",
            vec![
                raw("app", &["db"]),
                bad,
                raw("db", &[]),
                raw("x", &["ghost"]),
            ],
        );
        assert_eq!(names(&rx.borrow()), ["db", "app"]);
        let why: Vec<(&str, &str)> = rejected
            .iter()
            .map(|r| (r.name.as_str(), r.error.path.as_str()))
            .collect();
        assert_eq!(
            why,
            [("wiki", "module"), ("db", "name"), ("x", "depends_on[0]")]
        );
        let text = crate::metrics::encode_text(&[(&[], &sources.metrics())]);
        assert!(
            text.contains("lookout_source_targets{source=\"kubernetes\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("lookout_source_rejected_targets{source=\"kubernetes\"} 3"),
            "{text}"
        );
        // A reload keeps the discovered targets, validated against the new config: with the
        // file's db gone, the discovered db is no longer a duplicate, and app's edge finds it.
        sources.config_changed(config(
            "  - {name: db2, module: tcp, target: '127.0.0.1:5'}\n",
        ));
        assert_eq!(names(&rx.borrow()), ["db2", "app", "db"]);
        // The same offer again re-plans nothing: no new set is sent.
        let mut rx2 = rx.clone();
        rx2.mark_unchanged();
        let again = sources.offer(
            "kubernetes",
            vec![
                raw("app", &["db"]),
                {
                    let mut bad = raw("wiki", &[]);
                    bad.module = "nope".into();
                    bad
                },
                raw("db", &[]),
                raw("x", &["ghost"]),
            ],
        );
        assert!(!rx2.has_changed().unwrap(), "an equal offer sent a new set");
        assert_eq!(again.len(), 2, "{again:?}");
        // A source that offers nothing leaves the file's targets alone.
        sources.offer("kubernetes", Vec::new());
        assert_eq!(names(&rx.borrow()), ["db2"]);
    }

    #[test]
    fn shards_split_the_set_by_component_and_together_cover_it() {
        let mut lines = String::new();
        for i in 0..60 {
            lines.push_str(&format!(
                "  - {{name: root{i}, module: tcp, target: '127.0.0.1:1'}}\n  - {{name: app{i}, module: tcp, target: '127.0.0.1:1', depends_on: [root{i}]}}\n"
            ));
        }
        let cfg = config(&lines);
        let mut seen = Vec::new();
        for index in 0..3 {
            let shard = Shard { index, count: 3 };
            let (_, rx) = Sources::new(cfg.clone(), Some(shard));
            let set = rx.borrow().clone();
            assert!(
                !set.is_empty() && set.len() < 120,
                "shard {index}: {}",
                set.len()
            );
            for t in set.iter() {
                // Each app sits with its root.
                if let Some(root) = t.depends_on.first() {
                    assert!(set.get(root).is_some(), "{} without {root}", t.name);
                }
                seen.push(t.name.clone());
            }
        }
        seen.sort();
        let mut all: Vec<String> = cfg.targets.iter().map(|t| t.name.clone()).collect();
        all.sort();
        assert_eq!(seen, all, "every target in exactly one share");
    }
}
