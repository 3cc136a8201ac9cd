//! lookout's own `targets:` (plus `defaults:` and `scheduler:`): what the scheduler probes by
//! itself. An extension: every blackbox file stays valid, since all three are optional.
//! Each target is validated alone here (`validate_target`); `target_set` puts the validated
//! targets together with their `depends_on` graph.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Module;
use crate::values::{ConfigDuration, FieldError};

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
    /// Uptime objective in percent (`99.9`) for targets that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<f64>,
    /// The window the objective is measured over (default 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_window: Option<ConfigDuration>,
    /// How many replicas must see a failure for targets that set none (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_per_target: Option<u32>,
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
    /// Uptime objective in percent (`99.9`): its error budget and burn rate go to `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<f64>,
    /// The window the objective is measured over (default 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_window: Option<ConfigDuration>,
    /// How many replicas (this one and k − 1 peers of `--shard.peers`) must see a failure
    /// before it counts (default 1: this one alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_per_target: Option<u32>,
}

/// The most `replicas_per_target` may be.
pub const MAX_REPLICAS_PER_TARGET: u32 = 16;

/// An uptime objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// The share of time up it aims for (0.999 for `slo: 99.9`).
    pub objective: f64,
    /// Over how long.
    pub window: Duration,
}

/// The objective's window when neither the target nor `defaults:` sets one.
pub const DEFAULT_SLO_WINDOW: Duration = Duration::from_secs(30 * 86_400);

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
    /// Its uptime objective, if any.
    pub slo: Option<Slo>,
    /// How many replicas must see a failure for it to count (1: this one alone).
    pub replicas_per_target: u32,
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

impl Default for SchedulerSettings {
    /// What a config without targets runs with (`Config::default`).
    fn default() -> Self {
        SchedulerSettings {
            max_concurrency: 256,
        }
    }
}

impl SchedulerSettings {
    /// Validates `raw`; the error's path is relative to `scheduler:`.
    pub fn build(raw: &RawScheduler) -> Result<SchedulerSettings, FieldError> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let max_concurrency = raw.max_concurrency.unwrap_or(256 * cores);
        if max_concurrency == 0 {
            return Err(FieldError::new("max_concurrency", "must be at least 1"));
        }
        Ok(SchedulerSettings { max_concurrency })
    }
}

/// `defaults:`, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    /// Interval for targets that set none.
    pub interval: Option<Duration>,
    /// Timeout for targets that set none.
    pub timeout: Option<Duration>,
    /// Labels added to every target.
    pub labels: BTreeMap<String, String>,
    /// Confirmation re-probes for targets that set none.
    pub retries: Option<u32>,
    /// Their spacing for targets that set none.
    pub retry_interval: Option<Duration>,
    /// The recovery grace for targets that set none.
    pub recovery_grace: Option<Duration>,
    /// The alert severity for targets that set none.
    pub severity: Option<String>,
    /// The uptime objective (percent) for targets that set none.
    pub slo: Option<f64>,
    /// Its window for targets that set none.
    pub slo_window: Option<Duration>,
    /// `replicas_per_target` for targets that set none.
    pub replicas_per_target: Option<u32>,
}

impl Defaults {
    /// Validates `raw`; the error's path is relative to `defaults:`.
    pub fn build(raw: &RawDefaults) -> Result<Defaults, FieldError> {
        for k in raw.labels.keys() {
            if !valid_label_name(k) || RESERVED_LABELS.contains(&k.as_str()) {
                return Err(FieldError::new(
                    format!("labels.{k}"),
                    format!("invalid or reserved label name {k:?}"),
                ));
            }
        }
        Ok(Defaults {
            interval: raw.interval.map(|d| d.0),
            timeout: raw.timeout.map(|d| d.0),
            labels: raw.labels.clone(),
            retries: raw.retries,
            retry_interval: raw.retry_interval.map(|d| d.0),
            recovery_grace: raw.recovery_grace.map(|d| d.0),
            severity: raw.severity.clone(),
            slo: raw.slo,
            slo_window: raw.slo_window.map(|d| d.0),
            replicas_per_target: raw.replicas_per_target,
        })
    }
}

fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && !s.starts_with("__")
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Validates one target against the modules, whatever its source (the file's `targets:`, and
/// later discovery): everything that can be checked on the target alone. Its name's uniqueness
/// and its `depends_on` edges need the whole set, so `target_set::assemble` checks those. The
/// error's path is relative to the target (`module`, `labels.team`).
pub fn validate_target(
    raw: &RawTarget,
    defaults: &Defaults,
    modules: &BTreeMap<String, Arc<Module>>,
) -> Result<Target, FieldError> {
    if raw.name.is_empty() {
        return Err(FieldError::new("name", "a target needs a name"));
    }
    if raw.target.is_empty() {
        return Err(FieldError::new(
            "target",
            format!("target {:?} has no target to probe", raw.name),
        ));
    }
    let module = modules.get(&raw.module).ok_or_else(|| {
        FieldError::new(
            "module",
            if raw.module.is_empty() {
                format!("target {:?} names no module", raw.name)
            } else {
                format!("target {:?} uses unknown module {:?}", raw.name, raw.module)
            },
        )
    })?;
    let interval = raw
        .interval
        .map(|d| d.0)
        .or(defaults.interval)
        .unwrap_or(DEFAULT_INTERVAL);
    if interval < Duration::from_millis(100) {
        return Err(FieldError::new(
            "interval",
            format!("interval {interval:?} is too short (at least 100ms)"),
        ));
    }
    let timeout = raw
        .timeout
        .map(|d| d.0)
        .or(defaults.timeout)
        .or(module.timeout)
        .unwrap_or(interval)
        .min(interval);
    if timeout.is_zero() {
        return Err(FieldError::new("timeout", "timeout must be greater than 0"));
    }
    let mut user: BTreeMap<&str, &str> = defaults
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (k, v) in &raw.labels {
        if !valid_label_name(k) {
            return Err(FieldError::new(
                format!("labels.{k}"),
                format!("invalid label name {k:?}"),
            ));
        }
        if RESERVED_LABELS.contains(&k.as_str()) {
            return Err(FieldError::new(
                format!("labels.{k}"),
                format!("label name {k:?} is reserved"),
            ));
        }
        user.insert(k, v);
    }
    if module.every_address.is_some() && user.contains_key("address") {
        return Err(FieldError::new(
            "labels.address",
            format!(
                "label name \"address\" is taken by the probe_address_* series of module {:?} (every_address)",
                raw.module
            ),
        ));
    }
    let mut labels = vec![
        ("target".to_owned(), raw.name.clone()),
        ("instance".to_owned(), raw.target.clone()),
        ("module".to_owned(), raw.module.clone()),
    ];
    labels.extend(user.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
    // Sorted by name once here, so exposition can merge without sorting per scrape.
    labels.sort();
    let retry_interval = raw
        .retry_interval
        .map(|d| d.0)
        .or(defaults.retry_interval)
        .unwrap_or(DEFAULT_RETRY_INTERVAL);
    if retry_interval < Duration::from_millis(10) {
        return Err(FieldError::new(
            "retry_interval",
            format!("retry_interval {retry_interval:?} is too short (at least 10ms)"),
        ));
    }
    let health = crate::health::Policy {
        retries: raw.retries.or(defaults.retries).unwrap_or(DEFAULT_RETRIES),
        retry_interval,
        recovery_grace: raw
            .recovery_grace
            .map(|d| d.0)
            .or(defaults.recovery_grace)
            .unwrap_or(interval * DEFAULT_RECOVERY_GRACE_INTERVALS),
    };
    let severity = raw
        .severity
        .clone()
        .or_else(|| defaults.severity.clone())
        .unwrap_or_else(|| "critical".to_owned());
    if severity.is_empty() {
        return Err(FieldError::new("severity", "severity must not be empty"));
    }
    let slo = match raw.slo.or(defaults.slo) {
        None => None,
        Some(p) if !(p > 0.0 && p < 100.0) => {
            return Err(FieldError::new(
                "slo",
                format!("slo {p} must be a percentage above 0 and below 100"),
            ));
        }
        Some(p) => Some(Slo {
            objective: p / 100.0,
            window: raw
                .slo_window
                .map(|d| d.0)
                .or(defaults.slo_window)
                .unwrap_or(DEFAULT_SLO_WINDOW),
        }),
    };
    if slo.is_some_and(|s| s.window < Duration::from_secs(3600)) {
        return Err(FieldError::new(
            "slo_window",
            "slo_window must be at least 1h",
        ));
    }
    let replicas_per_target = raw
        .replicas_per_target
        .or(defaults.replicas_per_target)
        .unwrap_or(1);
    if !(1..=MAX_REPLICAS_PER_TARGET).contains(&replicas_per_target) {
        return Err(FieldError::new(
            "replicas_per_target",
            format!(
                "replicas_per_target must be between 1 and {MAX_REPLICAS_PER_TARGET}, not {replicas_per_target}"
            ),
        ));
    }
    Ok(Target {
        slo,
        replicas_per_target,
        name: raw.name.clone(),
        module_name: raw.module.clone(),
        module: module.clone(),
        target: raw.target.clone(),
        interval,
        timeout,
        labels,
        depends_on: raw.depends_on.clone(),
        health,
        severity,
        runbook_url: raw.runbook_url.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules() -> BTreeMap<String, Arc<Module>> {
        crate::config::parse(
            "modules:\n  m:\n    prober: tcp\n",
            std::path::Path::new("t.yml"),
        )
        .unwrap()
        .modules
    }

    fn raw(name: &str, module: &str) -> RawTarget {
        RawTarget {
            name: name.into(),
            module: module.into(),
            target: "127.0.0.1:1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn errors_are_relative_to_the_target() {
        let (d, m) = (Defaults::default(), modules());
        let e = validate_target(&raw("db", "nosuch"), &d, &m).unwrap_err();
        assert_eq!(e.path, "module");
        assert_eq!(e.message, "target \"db\" uses unknown module \"nosuch\"");
        let mut t = raw("db", "m");
        t.labels.insert("job".into(), "x".into());
        assert_eq!(validate_target(&t, &d, &m).unwrap_err().path, "labels.job");
        let t = validate_target(&raw("db", "m"), &d, &m).unwrap();
        assert_eq!(t.interval, DEFAULT_INTERVAL);
        assert_eq!(
            t.labels[0],
            ("instance".to_owned(), "127.0.0.1:1".to_owned())
        );
    }
}
