//! Alerts generated from the config: one per scheduled target that is `down` in its own right
//! (never for `blocked` ones), with the same labels on both paths — a Prometheus rule file
//! (`lookout rules`) and lookout's own posts to Alertmanager (`alerts`) — plus Alertmanager
//! `inhibit_rules` (`lookout rules --alertmanager`) that mute alerts users write themselves for a
//! dependent while its root cause fires.
//!
//! Confirmation already happened in lookout (`health`), so the rules carry no `for`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, Target};
use crate::health::State;

/// The alert's name on both paths.
pub const ALERT_NAME: &str = "LookoutTargetDown";

/// For each target (by name), every target that depends on it, directly or not, sorted.
pub fn transitive_dependents(targets: &[Arc<Target>]) -> BTreeMap<String, Vec<String>> {
    let mut direct: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in targets {
        for d in &t.depends_on {
            direct.entry(d.as_str()).or_default().push(t.name.as_str());
        }
    }
    let mut out = BTreeMap::new();
    for t in targets {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut stack: Vec<&str> = direct.get(t.name.as_str()).cloned().unwrap_or_default();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(direct.get(n).into_iter().flatten().copied());
            }
        }
        out.insert(
            t.name.clone(),
            seen.into_iter().map(str::to_owned).collect(),
        );
    }
    out
}

/// The labels of target `t`'s alert: `alertname`, `severity`, and the target's own series
/// labels (`target`, `instance`, `module`, user labels).
pub fn labels(t: &Target) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = t.labels.iter().cloned().collect();
    l.insert("alertname".into(), ALERT_NAME.into());
    l.insert("severity".into(), t.severity.clone());
    l
}

/// The annotations of target `t`'s alert; `dependents` are the targets that need it.
pub fn annotations(t: &Target, dependents: &[String]) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("summary".into(), format!("{} is down", t.name));
    let mut description = format!(
        "{} ({}) fails its {} probe, and none of its dependencies explains it.",
        t.name, t.target, t.module_name
    );
    if !dependents.is_empty() {
        description.push_str(&format!(
            " Depending on it (muted while it is down): {}.",
            dependents.join(", ")
        ));
    }
    a.insert("description".into(), description);
    if !dependents.is_empty() {
        a.insert("dependents".into(), dependents.join(", "));
    }
    if let Some(u) = &t.runbook_url {
        a.insert("runbook_url".into(), u.clone());
    }
    a
}

#[derive(Serialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Serialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
struct Rule {
    alert: String,
    expr: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// A label value quoted for PromQL.
fn promql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `s` matched literally inside an RE2 regular expression.
fn regex_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The Prometheus rule file for `config`'s targets (empty groups when it has none).
pub fn prometheus_rules(config: &Config) -> String {
    let dependents = transitive_dependents(config.targets.targets());
    let rules = config
        .targets
        .targets()
        .iter()
        .map(|t| {
            let series = labels(t);
            // Aggregated to the target's own labels, so the alert's labels are exactly those
            // of the direct path (no `job`, no `state`) whichever scrape job carries it.
            let by: Vec<&str> = t.labels.iter().map(|(k, _)| k.as_str()).collect();
            Rule {
                alert: ALERT_NAME.into(),
                expr: format!(
                    "max by ({}) (lookout_target_state{{target={},state=\"down\"}}) == 1",
                    by.join(", "),
                    promql_string(&t.name)
                ),
                // `target` repeats the series' own value (so the alert's labels stay those of
                // the direct path); it makes each rule's labels unique, which promtool's
                // duplicate-rules lint requires of rules sharing one alert name.
                labels: series
                    .into_iter()
                    .filter(|(k, _)| k == "severity" || k == "target")
                    .collect(),
                annotations: annotations(t, &dependents[&t.name]),
            }
        })
        .collect();
    let file = RuleFile {
        groups: vec![Group {
            name: "lookout-targets".into(),
            rules,
        }],
    };
    let mut out = String::from(
        "# Generated by `lookout rules` from the targets of the config: one alert per target that\n\
         # is down in its own right (lookout already confirmed it, so no `for`).\n",
    );
    out.push_str(&serde_norway::to_string(&file).unwrap_or_default());
    out
}

#[derive(Serialize)]
struct Inhibit {
    source_matchers: Vec<String>,
    target_matchers: Vec<String>,
}

/// Alertmanager `inhibit_rules` (a YAML list): while a target's alert fires, alerts labelled
/// with one of its dependents' `target` are muted.
pub fn inhibit_rules(config: &Config) -> String {
    let dependents = transitive_dependents(config.targets.targets());
    let rules: Vec<Inhibit> = config
        .targets
        .targets()
        .iter()
        .filter(|t| !dependents[&t.name].is_empty())
        .map(|t| Inhibit {
            source_matchers: vec![
                format!("alertname={}", promql_string(ALERT_NAME)),
                format!("target={}", promql_string(&t.name)),
            ],
            target_matchers: vec![format!(
                "target=~{}",
                promql_string(
                    &dependents[&t.name]
                        .iter()
                        .map(|d| regex_literal(d))
                        .collect::<Vec<_>>()
                        .join("|")
                )
            )],
        })
        .collect();
    let mut out = String::from(
        "# Generated by `lookout rules --alertmanager`: paste under `inhibit_rules:` of\n\
         # alertmanager.yml. While a target's LookoutTargetDown fires, alerts for the targets\n\
         # that depend on it are muted.\n",
    );
    if rules.is_empty() {
        out.push_str("[]\n");
    } else {
        out.push_str(&serde_norway::to_string(&rules).unwrap_or_default());
    }
    out
}

/// The alerts that fire now, for the direct path: one per target down in its own right.
/// `state_of` gives a target's state and since when.
pub fn firing(
    targets: &[Arc<Target>],
    state_of: impl Fn(usize) -> (State, Option<std::time::SystemTime>, Option<String>),
) -> Vec<crate::alerts::Firing> {
    let mut dependents = None;
    let mut out = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let (state, since, reason) = state_of(i);
        if state != State::Down {
            continue;
        }
        let deps = dependents.get_or_insert_with(|| transitive_dependents(targets));
        let mut annotations = annotations(t, &deps[&t.name]);
        if let Some(r) = reason {
            annotations.insert("reason".into(), r);
        }
        out.push(crate::alerts::Firing {
            labels: labels(t),
            annotations,
            since: since.unwrap_or_else(std::time::SystemTime::now),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        crate::config::parse(yaml, "t.yml".as_ref()).unwrap()
    }

    const TESLAMATE: &str = "modules:\n  http: {prober: http}\n  tcp: {prober: tcp}\n\
        targets:\n\
        - {name: host, module: tcp, target: '10.0.0.2:22'}\n\
        - {name: db, module: tcp, target: '10.0.0.2:5432', depends_on: [host], runbook_url: 'https://wiki/db', labels: {team: data}}\n\
        - {name: mq, module: tcp, target: '10.0.0.2:1883', depends_on: [host], severity: warning}\n\
        - {name: teslamate, module: http, target: 'http://10.0.0.2:4000/', depends_on: [db, mq]}\n";

    #[test]
    fn dependents_are_transitive() {
        let c = config(TESLAMATE);
        let d = transitive_dependents(c.targets.targets());
        assert_eq!(d["host"], ["db", "mq", "teslamate"]);
        assert_eq!(d["db"], ["teslamate"]);
        assert!(d["teslamate"].is_empty());
    }

    #[test]
    fn one_rule_per_target_with_the_direct_paths_labels() {
        let c = config(TESLAMATE);
        let text = prometheus_rules(&c);
        let v: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        let rules = v["groups"][0]["rules"].as_sequence().unwrap();
        assert_eq!(rules.len(), 4);
        let db = &rules[1];
        assert_eq!(db["alert"].as_str(), Some(ALERT_NAME));
        assert_eq!(
            db["expr"].as_str(),
            Some(
                "max by (instance, module, target, team) (lookout_target_state{target=\"db\",state=\"down\"}) == 1"
            )
        );
        assert_eq!(db["labels"]["severity"].as_str(), Some("critical"));
        assert_eq!(db["labels"]["target"].as_str(), Some("db"));
        assert_eq!(
            db["annotations"]["runbook_url"].as_str(),
            Some("https://wiki/db")
        );
        assert_eq!(db["annotations"]["dependents"].as_str(), Some("teslamate"));
        assert_eq!(rules[2]["labels"]["severity"].as_str(), Some("warning"));
        // The series labels `by` keeps plus the rule's labels are the direct path's labels.
        let mut from_rule: Vec<String> = ["instance", "module", "target", "team"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        from_rule.extend(["alertname".to_owned(), "severity".to_owned()]);
        from_rule.sort();
        let direct: Vec<String> = labels(&c.targets.targets()[1]).into_keys().collect();
        assert_eq!(from_rule, direct);
    }

    #[test]
    fn inhibit_rules_mute_every_dependent_of_a_root() {
        let c = config(TESLAMATE);
        let text = inhibit_rules(&c);
        let v: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        let list = v.as_sequence().unwrap();
        assert_eq!(list.len(), 3, "{text}"); // host, db, mq have dependents
        assert_eq!(
            list[0]["source_matchers"][1].as_str(),
            Some("target=\"host\"")
        );
        assert_eq!(
            list[0]["target_matchers"][0].as_str(),
            Some("target=~\"db|mq|teslamate\"")
        );
    }

    #[test]
    fn regex_metacharacters_in_names_are_escaped() {
        assert_eq!(regex_literal("a.b+c"), "a\\.b\\+c");
        assert_eq!(promql_string("x\"y"), "\"x\\\"y\"");
    }
}
