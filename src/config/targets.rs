//! lookout's own `targets:` (plus `defaults:` and `scheduler:`): what the scheduler probes by
//! itself. An extension: every blackbox file stays valid, since all three are optional.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Module;
use crate::values::ConfigDuration;

/// The interval when neither the target nor `defaults:` sets one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// Re-probes confirming a change when neither the target nor `defaults:` sets `retries`.
pub const DEFAULT_RETRIES: u32 = 2;
/// Their spacing when none is set.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// The recovery grace, in intervals of the target, when none is set.
pub const DEFAULT_RECOVERY_GRACE_INTERVALS: u32 = 3;

/// Labels lookout sets itself on scheduled series; user labels may not use them.
pub const RESERVED_LABELS: [&str; 5] = ["target", "instance", "module", "job", "result"];

/// `defaults:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Interval for targets that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<ConfigDuration>,
    /// Timeout for targets that set none (capped by each interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ConfigDuration>,
    /// Labels added to every target (a target's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Re-probes that must agree before a failure (or a recovery) is believed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The spacing of those re-probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<ConfigDuration>,
    /// How long a dependent still failing after its root cause recovered stays blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_grace: Option<ConfigDuration>,
    /// The `severity` label of the target's alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

/// `scheduler:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScheduler {
    /// The most probes running at once (default: 256 per CPU core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
}

/// One `targets:` entry as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// Unique name, used as the `target` label.
    #[serde(default)]
    pub name: String,
    /// The module to probe with.
    #[serde(default)]
    pub module: String,
    /// What to probe: the string `/probe?target=` takes.
    #[serde(default)]
    pub target: String,
    /// How often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<ConfigDuration>,
    /// The probe deadline (capped by the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ConfigDuration>,
    /// Labels added to every series of this target.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Names of targets this one depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Re-probes that must agree before a failure (or a recovery) is believed (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The spacing of those re-probes (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<ConfigDuration>,
    /// How long this target, still failing after its root cause recovered, stays blocked
    /// (default three intervals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_grace: Option<ConfigDuration>,
    /// The `severity` label of its alert (default `critical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// A link for whoever gets its alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
}

/// A validated scheduled target.
#[derive(Debug, Clone)]
pub struct Target {
    /// Unique name.
    pub name: String,
    /// The module's name.
    pub module_name: String,
    /// The module.
    pub module: Arc<Module>,
    /// The target string.
    pub target: String,
    /// How often.
    pub interval: Duration,
    /// The probe deadline, at most `interval`.
    pub timeout: Duration,
    /// All labels of its series (`target`, `instance`, `module` and user labels), sorted by
    /// name.
    pub labels: Vec<(String, String)>,
    /// Names of targets it depends on.
    pub depends_on: Vec<String>,
    /// How its failures and recoveries are confirmed.
    pub health: crate::health::Policy,
    /// The `severity` label of its alert.
    pub severity: String,
    /// A link for whoever gets its alert.
    pub runbook_url: Option<String>,
}

impl Target {
    /// Whether `other` is the same scheduled target (so its phase and counters carry over a
    /// reload); the module's own settings may change without resetting them.
    pub fn same_schedule(&self, other: &Target) -> bool {
        self.name == other.name
            && self.module_name == other.module_name
            && self.target == other.target
            && self.interval == other.interval
            && self.timeout == other.timeout
            && self.labels == other.labels
    }
}

/// Scheduler-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// The most probes running at once.
    pub max_concurrency: usize,
}

impl SchedulerSettings {
    /// Validates `raw`.
    pub fn build(raw: &RawScheduler) -> Result<SchedulerSettings, (String, String)> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let max_concurrency = raw.max_concurrency.unwrap_or(256 * cores);
        if max_concurrency == 0 {
            return Err((
                "scheduler.max_concurrency".into(),
                "must be at least 1".into(),
            ));
        }
        Ok(SchedulerSettings { max_concurrency })
    }
}

fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && !s.starts_with("__")
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Validates `targets:` against the modules; errors are `(index, field, message)` with the
/// index of the offending entry.
pub fn build(
    raw: &[RawTarget],
    defaults: &RawDefaults,
    modules: &BTreeMap<String, Arc<Module>>,
) -> Result<Vec<Arc<Target>>, (Option<usize>, String, String)> {
    for k in defaults.labels.keys() {
        if !valid_label_name(k) || RESERVED_LABELS.contains(&k.as_str()) {
            return Err((
                None,
                format!("defaults.labels.{k}"),
                format!("invalid or reserved label name {k:?}"),
            ));
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, t) in raw.iter().enumerate() {
        let err = |field: &str, msg: String| (Some(i), field.to_owned(), msg);
        if t.name.is_empty() {
            return Err(err("name", "a target needs a name".into()));
        }
        if let Some(first) = seen.insert(t.name.as_str(), i) {
            return Err(err(
                "name",
                format!(
                    "duplicate target name {:?} (first used by targets[{first}])",
                    t.name
                ),
            ));
        }
        if t.target.is_empty() {
            return Err(err(
                "target",
                format!("target {:?} has no target to probe", t.name),
            ));
        }
        let module = modules.get(&t.module).ok_or_else(|| {
            err(
                "module",
                if t.module.is_empty() {
                    format!("target {:?} names no module", t.name)
                } else {
                    format!("target {:?} uses unknown module {:?}", t.name, t.module)
                },
            )
        })?;
        let interval = t
            .interval
            .or(defaults.interval)
            .map(|d| d.0)
            .unwrap_or(DEFAULT_INTERVAL);
        if interval < Duration::from_millis(100) {
            return Err(err(
                "interval",
                format!("interval {interval:?} is too short (at least 100ms)"),
            ));
        }
        let timeout = t
            .timeout
            .or(defaults.timeout)
            .map(|d| d.0)
            .or(module.timeout)
            .unwrap_or(interval)
            .min(interval);
        if timeout.is_zero() {
            return Err(err("timeout", "timeout must be greater than 0".into()));
        }
        let mut user: BTreeMap<&str, &str> = defaults
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (k, v) in &t.labels {
            if !valid_label_name(k) {
                return Err(err(
                    &format!("labels.{k}"),
                    format!("invalid label name {k:?}"),
                ));
            }
            if RESERVED_LABELS.contains(&k.as_str()) {
                return Err(err(
                    &format!("labels.{k}"),
                    format!("label name {k:?} is reserved"),
                ));
            }
            user.insert(k, v);
        }
        let mut labels = vec![
            ("target".to_owned(), t.name.clone()),
            ("instance".to_owned(), t.target.clone()),
            ("module".to_owned(), t.module.clone()),
        ];
        labels.extend(user.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
        // Sorted by name once here, so exposition can merge without sorting per scrape.
        labels.sort();
        let retry_interval = t
            .retry_interval
            .or(defaults.retry_interval)
            .map(|d| d.0)
            .unwrap_or(DEFAULT_RETRY_INTERVAL);
        if retry_interval < Duration::from_millis(10) {
            return Err(err(
                "retry_interval",
                format!("retry_interval {retry_interval:?} is too short (at least 10ms)"),
            ));
        }
        let health = crate::health::Policy {
            retries: t.retries.or(defaults.retries).unwrap_or(DEFAULT_RETRIES),
            retry_interval,
            recovery_grace: t
                .recovery_grace
                .or(defaults.recovery_grace)
                .map(|d| d.0)
                .unwrap_or(interval * DEFAULT_RECOVERY_GRACE_INTERVALS),
        };
        let severity = t
            .severity
            .clone()
            .or_else(|| defaults.severity.clone())
            .unwrap_or_else(|| "critical".to_owned());
        if severity.is_empty() {
            return Err(err("severity", "severity must not be empty".into()));
        }
        out.push(Arc::new(Target {
            name: t.name.clone(),
            module_name: t.module.clone(),
            module: module.clone(),
            target: t.target.clone(),
            interval,
            timeout,
            labels,
            depends_on: t.depends_on.clone(),
            health,
            severity,
            runbook_url: t.runbook_url.clone(),
        }));
    }
    // depends_on: every name exists, and the graph has no cycle.
    let index: HashMap<&str, usize> = raw
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    for (i, t) in raw.iter().enumerate() {
        for (j, d) in t.depends_on.iter().enumerate() {
            if !index.contains_key(d.as_str()) {
                return Err((
                    Some(i),
                    format!("depends_on[{j}]"),
                    format!("target {:?} depends on unknown target {d:?}", t.name),
                ));
            }
            if d == &t.name {
                return Err((
                    Some(i),
                    format!("depends_on[{j}]"),
                    format!("target {:?} depends on itself", t.name),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(raw, &index) {
        let first = index[cycle[0].as_str()];
        return Err((
            Some(first),
            "depends_on".into(),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(out)
}

/// A cycle in `depends_on`, as the names along it (first name repeated at the end).
fn find_cycle(raw: &[RawTarget], index: &HashMap<&str, usize>) -> Option<Vec<String>> {
    // Iterative depth-first search with colours: 0 unvisited, 1 on the stack, 2 done.
    let mut colour = vec![0u8; raw.len()];
    for start in 0..raw.len() {
        if colour[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(dep) = raw[node].depends_on.get(*next) {
                *next += 1;
                let Some(&d) = index.get(dep.as_str()) else {
                    continue;
                };
                match colour[d] {
                    0 => {
                        colour[d] = 1;
                        stack.push((d, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(n, _)| *n == d).unwrap_or(0);
                        let mut names: Vec<String> = stack[from..]
                            .iter()
                            .map(|(n, _)| raw[*n].name.clone())
                            .collect();
                        names.push(raw[d].name.clone());
                        return Some(names);
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, deps: &[&str]) -> RawTarget {
        RawTarget {
            name: name.into(),
            depends_on: deps.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        let raw = vec![
            t("app", &["db"]),
            t("db", &["disk"]),
            t("disk", &["app"]),
            t("other", &[]),
        ];
        let index: HashMap<&str, usize> = raw
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        assert_eq!(
            find_cycle(&raw, &index).unwrap(),
            ["app", "db", "disk", "app"]
        );
        let raw = vec![t("app", &["db", "mq"]), t("db", &[]), t("mq", &["db"])];
        let index: HashMap<&str, usize> = raw
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        assert!(find_cycle(&raw, &index).is_none());
    }
}
