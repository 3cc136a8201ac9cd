//! The state machine as tables: results in, states and root causes out.

use super::*;

/// A machine over named targets on a fake clock (seconds since `t0`).
struct Sim {
    m: Machine,
    names: Vec<&'static str>,
    t0: Instant,
    wall0: SystemTime,
    changes: Vec<(f64, &'static str, State, State, Vec<&'static str>)>,
    requests: Vec<(f64, Request)>,
}

fn policy(retries: u32, grace_s: u64) -> Policy {
    Policy {
        retries,
        retry_interval: Duration::from_secs(1),
        recovery_grace: Duration::from_secs(grace_s),
    }
}

/// `targets`: each name with the names it depends on.
fn sim(targets: &[(&'static str, &[&'static str])], p: Policy) -> Sim {
    let names: Vec<&'static str> = targets.iter().map(|(n, _)| *n).collect();
    let deps = targets
        .iter()
        .map(|(_, ds)| {
            ds.iter()
                .map(|d| names.iter().position(|n| n == d).unwrap())
                .collect()
        })
        .collect();
    Sim {
        m: Machine::new(vec![p; names.len()], Edges::from_dependencies(deps)),
        names,
        t0: Instant::now(),
        wall0: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        changes: Vec::new(),
        requests: Vec::new(),
    }
}

impl Sim {
    fn idx(&self, name: &str) -> usize {
        self.names.iter().position(|n| *n == name).unwrap()
    }

    /// The instant of `t` seconds (which may be a little negative: the clock starts at -100).
    fn at(&self, t: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(t + 100.0)
    }

    /// A probe of `name` that ran from `t - 0.05` to `t`.
    fn probe(&mut self, t: f64, name: &str, ok: bool) -> Vec<Request> {
        let i = self.idx(name);
        let obs = Observation {
            started: self.at(t - 0.05),
            finished: self.at(t),
            finished_wall: self.wall0 + Duration::from_secs_f64(t + 100.0),
            failure: (!ok).then(|| ProbeFailure::new(FailureKind::Connect, "refused")),
        };
        let mut changes = Vec::new();
        let req = self.m.observe(i, &obs, self.at(t), &mut changes);
        self.record(t, changes);
        for r in &req {
            self.requests.push((t, *r));
        }
        req
    }

    fn ok(&mut self, t: f64, name: &str) -> Vec<Request> {
        self.probe(t, name, true)
    }

    fn fail(&mut self, t: f64, name: &str) -> Vec<Request> {
        self.probe(t, name, false)
    }

    fn tick(&mut self, t: f64) {
        let mut changes = Vec::new();
        self.m.tick(
            self.at(t),
            self.wall0 + Duration::from_secs_f64(t + 100.0),
            &mut changes,
        );
        self.record(t, changes);
    }

    fn record(&mut self, t: f64, changes: Vec<Change>) {
        for c in changes {
            let roots = c.root_causes.iter().map(|&r| self.names[r]).collect();
            self.changes
                .push((t, self.names[c.target], c.from, c.to, roots));
        }
    }

    fn state(&self, name: &str) -> State {
        self.m.state(self.idx(name))
    }

    fn roots(&self, name: &str) -> Vec<&'static str> {
        self.m
            .root_causes(self.idx(name))
            .iter()
            .map(|&r| self.names[r])
            .collect()
    }

    /// Asserts each `(name, state, roots)`.
    fn expect(&self, rows: &[(&str, State, &[&str])]) {
        for (name, state, roots) in rows {
            assert_eq!(
                (self.state(name), self.roots(name).as_slice()),
                (*state, *roots),
                "{name}; changes so far: {:#?}",
                self.changes
            );
        }
    }

    /// Every time `name` became `state`.
    fn became(&self, name: &str, state: State) -> Vec<f64> {
        self.changes
            .iter()
            .filter(|c| c.1 == name && c.3 == state && c.2 != state)
            .map(|c| c.0)
            .collect()
    }
}

use State::{Blocked, Down, Unknown, Up};

const CHAIN: &[(&str, &[&str])] = &[("host", &[]), ("db", &["host"]), ("app", &["db"])];

#[test]
fn unprobed_targets_are_unknown_and_a_success_makes_them_up() {
    let mut s = sim(CHAIN, policy(2, 10));
    s.expect(&[("host", Unknown, &[]), ("db", Unknown, &[])]);
    s.ok(0.0, "host");
    s.expect(&[("host", Up, &[]), ("db", Unknown, &[])]);
}

#[test]
fn a_chain_names_the_bottom_as_root_cause_transitively() {
    let mut s = sim(CHAIN, policy(0, 10));
    for n in ["host", "db", "app"] {
        s.ok(0.0, n);
    }
    s.fail(1.0, "host");
    s.fail(1.0, "db");
    s.fail(1.0, "app");
    s.expect(&[
        ("host", Down, &["host"]),
        ("db", Blocked, &["host"]),
        ("app", Blocked, &["host"]),
    ]);
    // Only the root is ever down.
    assert!(s.became("app", Down).is_empty() && s.became("db", Down).is_empty());
}

#[test]
fn a_dependent_failing_first_waits_for_its_dependency_to_be_confirmed() {
    // app fails at 0 and is confirmed failing at 2 (2 retries, 1 s apart); the broker's own
    // failure is confirmed only at 2.5. app must never be named the root cause meanwhile.
    let mut s = sim(&[("mq", &[]), ("app", &["mq"])], policy(2, 10));
    s.ok(-5.0, "mq");
    s.ok(-5.0, "app");
    let req = s.fail(0.0, "app");
    let mq = s.idx("mq");
    let app = s.idx("app");
    assert!(req.contains(&Request::Dependency(mq)), "{req:?}");
    assert!(req.contains(&Request::Confirm(app, s.at(1.0))), "{req:?}");
    s.fail(0.5, "mq");
    s.fail(1.0, "app");
    s.fail(1.5, "mq");
    s.fail(2.0, "app");
    // app is failing for sure now, but mq is not confirmed yet: app keeps its state.
    s.expect(&[("app", Up, &[]), ("mq", Up, &[])]);
    s.fail(2.5, "mq");
    s.expect(&[("mq", Down, &["mq"]), ("app", Blocked, &["mq"])]);
    assert!(s.became("app", Down).is_empty(), "{:#?}", s.changes);
}

#[test]
fn a_dependent_failing_with_healthy_dependencies_is_down_in_its_own_right() {
    let mut s = sim(&[("db", &[]), ("app", &["db"])], policy(0, 10));
    s.ok(0.0, "db");
    s.fail(1.0, "app");
    // db's last success started before app's failure: not proof yet.
    s.expect(&[("app", Unknown, &[])]);
    s.ok(1.2, "db");
    s.expect(&[("app", Down, &["app"]), ("db", Up, &[])]);
}

#[test]
fn a_suspect_dependency_holds_the_decision() {
    let mut s = sim(&[("db", &[]), ("app", &["db"])], policy(1, 10));
    s.ok(0.0, "db");
    s.ok(0.0, "app");
    s.fail(1.0, "app");
    s.fail(1.1, "db"); // db's streak starts: suspect
    s.fail(2.0, "app"); // app confirmed failing
    s.expect(&[("app", Up, &[]), ("db", Up, &[])]);
    s.ok(2.1, "db"); // db's blip is absorbed: healthy and fresh
    s.expect(&[("app", Down, &["app"]), ("db", Up, &[])]);
}

#[test]
fn diamonds_name_the_shared_root_once() {
    let mut s = sim(
        &[
            ("host", &[]),
            ("db", &["host"]),
            ("mq", &["host"]),
            ("app", &["db", "mq"]),
        ],
        policy(0, 10),
    );
    for n in ["host", "db", "mq", "app"] {
        s.ok(0.0, n);
    }
    s.fail(1.0, "app");
    s.fail(1.0, "mq");
    s.fail(1.0, "db");
    s.fail(1.0, "host");
    s.expect(&[
        ("host", Down, &["host"]),
        ("db", Blocked, &["host"]),
        ("mq", Blocked, &["host"]),
        ("app", Blocked, &["host"]),
    ]);
}

#[test]
fn two_failing_roots_are_both_named() {
    let mut s = sim(
        &[("db", &[]), ("mq", &[]), ("app", &["db", "mq"])],
        policy(0, 10),
    );
    for n in ["db", "mq", "app"] {
        s.ok(0.0, n);
    }
    s.fail(1.0, "db");
    s.fail(1.0, "app");
    s.expect(&[("app", Blocked, &["db"])]);
    s.fail(1.5, "mq");
    s.expect(&[
        ("app", Blocked, &["db", "mq"]),
        ("db", Down, &["db"]),
        ("mq", Down, &["mq"]),
    ]);
}

#[test]
fn flapping_within_the_retries_never_changes_state() {
    let mut s = sim(&[("web", &[])], policy(2, 10));
    s.ok(0.0, "web");
    for k in 1..20 {
        s.probe(f64::from(k), "web", k % 2 == 0);
    }
    s.expect(&[("web", Up, &[])]);
    assert_eq!(s.changes.len(), 1, "{:#?}", s.changes); // unknown -> up only
}

#[test]
fn flapping_without_retries_changes_state_every_time() {
    let mut s = sim(&[("web", &[])], policy(0, 10));
    for k in 0..6 {
        s.probe(f64::from(k), "web", k % 2 == 0);
    }
    assert_eq!(s.became("web", Down), [1.0, 3.0, 5.0]);
    assert_eq!(s.m.view(0).changes, 6);
}

#[test]
fn recovery_is_confirmed_like_failure() {
    let mut s = sim(&[("db", &[])], policy(1, 10));
    s.ok(0.0, "db");
    s.fail(1.0, "db");
    s.fail(2.0, "db");
    s.expect(&[("db", Down, &["db"])]);
    let req = s.ok(3.0, "db");
    assert_eq!(req, [Request::Confirm(0, s.at(4.0))]);
    s.expect(&[("db", Down, &["db"])]);
    s.ok(4.0, "db");
    s.expect(&[("db", Up, &[])]);
}

#[test]
fn a_dependent_still_failing_after_its_root_recovers_stays_blocked_for_the_grace() {
    let mut s = sim(&[("mq", &[]), ("app", &["mq"])], policy(0, 15));
    s.ok(0.0, "mq");
    s.ok(0.0, "app");
    s.fail(1.0, "mq");
    s.fail(1.0, "app");
    s.expect(&[("app", Blocked, &["mq"])]);
    s.ok(10.0, "mq");
    // The app reconnects with back-off: still failing, still blamed on mq.
    s.fail(10.5, "app");
    s.tick(20.0);
    s.expect(&[("mq", Up, &[]), ("app", Blocked, &["mq"])]);
    s.tick(25.0);
    s.expect(&[("app", Down, &["app"])]);
    assert_eq!(s.became("app", Down), [25.0]);
}

#[test]
fn a_dependent_recovering_within_the_grace_never_goes_down() {
    let mut s = sim(&[("mq", &[]), ("app", &["mq"])], policy(0, 15));
    s.ok(0.0, "mq");
    s.ok(0.0, "app");
    s.fail(1.0, "mq");
    s.fail(1.0, "app");
    s.ok(10.0, "mq");
    s.ok(14.0, "app");
    s.tick(30.0);
    s.expect(&[("app", Up, &[])]);
    assert!(s.became("app", Down).is_empty());
    assert_eq!(s.m.nodes[1].grace_until, None);
}

#[test]
fn an_unconfirmed_first_failure_is_unknown() {
    let mut s = sim(&[("db", &[])], policy(2, 10));
    s.fail(0.0, "db");
    s.fail(1.0, "db");
    s.expect(&[("db", Unknown, &[])]);
    s.fail(2.0, "db");
    s.expect(&[("db", Down, &["db"])]);
}

#[test]
fn a_reload_carries_states_over_by_name() {
    let mut s = sim(CHAIN, policy(0, 10));
    for n in ["host", "db", "app"] {
        s.ok(0.0, n);
    }
    s.fail(1.0, "host");
    s.fail(1.0, "db");
    // New set: app removed, a new target in front; host and db swap places.
    let names = ["new", "db", "host"];
    let previous = vec![None, Some(1), Some(0)];
    let edges = Edges::from_dependencies(vec![vec![], vec![2], vec![]]);
    let m = Machine::carry_over(&s.m, &previous, vec![policy(0, 10); 3], edges, s.at(2.0));
    let roots: Vec<&str> = m.root_causes(1).iter().map(|&r| names[r]).collect();
    assert_eq!((m.state(1), roots.as_slice()), (Blocked, &["host"][..]));
    assert_eq!(m.state(2), Down);
    assert_eq!(m.state(0), Unknown);
}

#[test]
fn only_steadily_up_targets_without_unsettled_dependents_may_have_successes_batched() {
    let mut s = sim(
        &[("db", &[]), ("app", &["db"]), ("web", &[])],
        policy(1, 10),
    );
    let wants = |s: &Sim, n: &str| s.m.wants_results(s.idx(n));
    // Unprobed: every result matters.
    assert!(wants(&s, "db") && wants(&s, "app") && wants(&s, "web"));
    s.ok(0.0, "db");
    // db is up, but its dependent app is still unknown.
    assert!(wants(&s, "db"));
    s.ok(0.0, "app");
    s.ok(0.0, "web");
    assert!(!wants(&s, "db") && !wants(&s, "app") && !wants(&s, "web"));
    // app's streak starts: app and the dependency it waits for are watched, web is not.
    s.fail(1.0, "app");
    assert!(wants(&s, "app") && wants(&s, "db") && !wants(&s, "web"));
    s.fail(2.0, "app");
    // app is failing and waits for a fresh result of db.
    assert!(wants(&s, "db"));
    s.ok(2.1, "db");
    s.expect(&[("app", Down, &["app"])]);
    assert!(wants(&s, "app") && wants(&s, "db"));
    s.ok(3.0, "app");
    s.ok(4.0, "app");
    s.expect(&[("app", Up, &[])]);
    assert!(!wants(&s, "app") && !wants(&s, "db"));
    // A suspect root is watched itself.
    s.fail(5.0, "web");
    assert!(wants(&s, "web"));
}
