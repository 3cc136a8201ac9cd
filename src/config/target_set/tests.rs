use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::config::Module;
use crate::config::targets::{Defaults, RawTarget, validate_target};

fn modules() -> BTreeMap<String, Arc<Module>> {
    crate::config::parse("modules:\n  m:\n    prober: tcp\n", Path::new("t.yml"))
        .unwrap()
        .modules
}

fn target(name: &str, deps: &[&str]) -> Target {
    let raw = RawTarget {
        name: name.into(),
        module: "m".into(),
        target: "127.0.0.1:1".into(),
        depends_on: deps.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    validate_target(&raw, &Defaults::default(), &modules()).unwrap()
}

fn set(fixed: &[(&str, &[&str])], candidates: &[(&str, &[&str])]) -> Assembled {
    let build = |v: &[(&str, &[&str])]| v.iter().map(|(n, d)| target(n, d)).collect();
    assemble(
        build(fixed),
        build(candidates),
        SchedulerSettings::default(),
    )
    .unwrap()
}

fn fixed_error(fixed: &[(&str, &[&str])]) -> TargetError {
    let targets = fixed.iter().map(|(n, d)| target(n, d)).collect();
    assemble(targets, Vec::new(), SchedulerSettings::default()).unwrap_err()
}

fn names(set: &TargetSet, nodes: &[usize]) -> Vec<String> {
    nodes
        .iter()
        .map(|&i| set.targets()[i].name.clone())
        .collect()
}

#[test]
fn the_graph_has_edges_both_ways_an_order_and_components() {
    let a = set(
        &[
            ("app", &["db", "mq", "db"]),
            ("db", &["disk"]),
            ("mq", &[]),
            ("disk", &[]),
            ("lonely", &[]),
        ],
        &[],
    );
    assert!(a.rejected.is_empty());
    let (s, g) = (&a.set, a.set.graph());
    let app = g.index_of("app").unwrap();
    assert_eq!(
        names(s, g.dependencies(app)),
        ["db", "mq"],
        "in order, once"
    );
    assert_eq!(names(s, g.dependents(g.index_of("db").unwrap())), ["app"]);
    assert_eq!(
        names(s, g.topological()),
        ["mq", "disk", "lonely", "db", "app"]
    );
    assert_eq!(g.components(), 2);
    assert_eq!(g.component(app), 0);
    assert_eq!(g.component(g.index_of("disk").unwrap()), 0);
    assert_eq!(g.component(g.index_of("lonely").unwrap()), 1);
    assert_eq!(s.get("mq").unwrap().name, "mq");
    assert!(g.index_of("nosuch").is_none());
}

#[test]
fn a_file_target_problem_fails_the_set_as_before() {
    let e = fixed_error(&[
        ("app", &["db"]),
        ("db", &["disk"]),
        ("disk", &["app"]),
        ("x", &[]),
    ]);
    assert_eq!(e.index, 0);
    assert_eq!(e.error.path, "depends_on");
    assert_eq!(
        e.error.message,
        "dependency cycle: app -> db -> disk -> app"
    );
    let e = fixed_error(&[("app", &[]), ("db", &["app", "nosuch"])]);
    assert_eq!((e.index, e.error.path.as_str()), (1, "depends_on[1]"));
    assert_eq!(
        e.error.message,
        "target \"db\" depends on unknown target \"nosuch\""
    );
    let e = fixed_error(&[("app", &["app"])]);
    assert_eq!(e.error.message, "target \"app\" depends on itself");
    let e = fixed_error(&[("a", &[]), ("a", &[])]);
    assert_eq!(e.index, 1);
    assert_eq!(
        e.error.message,
        "duplicate target name \"a\" (first used by targets[0])"
    );
}

#[test]
fn a_bad_target_from_another_source_is_rejected_alone() {
    let a = set(
        &[("db", &[]), ("app", &["db"])],
        &[
            ("web", &["app"]),      // fine: depends on a file target
            ("ghost", &["nosuch"]), // unknown edge
            ("orphan", &["ghost"]), // depends on a rejected candidate
            ("db", &[]),            // duplicate of a file target
            ("ping", &["pong"]),    // a cycle of candidates
            ("pong", &["ping"]),
            ("cache", &["web", "db"]), // fine: candidate and file dependencies
        ],
    );
    let kept: Vec<&str> = a.set.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(kept, ["db", "app", "web", "cache"]);
    let rejected: Vec<(&str, &str)> = a
        .rejected
        .iter()
        .map(|r| (r.name.as_str(), r.error.path.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [
            ("db", "name"),
            ("ghost", "depends_on[0]"),
            ("orphan", "depends_on[0]"),
            ("ping", "depends_on"),
            ("pong", "depends_on"),
        ]
    );
    assert_eq!(
        a.rejected[3].error.message,
        "dependency cycle: ping -> pong -> ping"
    );
    let g = a.set.graph();
    let cache = g.index_of("cache").unwrap();
    assert_eq!(names(&a.set, g.dependencies(cache)), ["web", "db"]);
    assert_eq!(
        names(&a.set, g.topological()),
        ["db", "app", "web", "cache"]
    );
    assert_eq!(g.components(), 1);
}
