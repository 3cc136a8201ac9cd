//! The page's model and markup from fixed states and a fixed history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::probe::prober::{FailureKind, ProbeFailure};

const DAY: Duration = Duration::from_secs(86_400);

/// A history where every target was up 99.5% of each day, with one incident yesterday.
struct Fixed(SystemTime);

impl HistorySource for Fixed {
    fn uptime(&self, _: &str, w: Duration) -> Option<f64> {
        Some(if w <= DAY { 0.98 } else { 0.995 })
    }
    fn days(&self, _: &str, n: usize) -> Vec<DayView> {
        (0..n)
            .map(|i| DayView {
                start: self.0 - DAY * (n - i) as u32,
                up_ratio: Some(0.995),
                maintenance_ratio: if i == 10 { 0.25 } else { 0.0 },
                incidents: if i == n - 1 {
                    vec!["14:02 UTC, 12 min: connect: refused".into()]
                } else {
                    Vec::new()
                },
            })
            .collect()
    }
    fn latency(&self, _: &str, _: Duration, points: usize) -> Vec<LatencyPoint> {
        (0..points)
            .map(|i| LatencyPoint {
                at: self.0,
                p50: 0.01 + i as f64 * 0.001,
                p95: 0.02,
                max: 0.05,
            })
            .collect()
    }
    fn incidents(&self, _: &str, _: usize) -> Vec<IncidentView> {
        vec![IncidentView {
            start: self.0 - Duration::from_secs(720),
            end: None,
            kind: "connect".into(),
            reason: "connection refused".into(),
            root_causes: vec!["postgres".into()],
        }]
    }
}

fn targets(now: SystemTime) -> Vec<TargetView> {
    let config = crate::config::parse(
        "modules:\n  tcp: {prober: tcp}\n\
         targets:\n\
         - {name: postgres, module: tcp, target: 'db.lan:5432', labels: {group: data}}\n\
         - {name: teslamate, module: tcp, target: 'tm.lan:4000', depends_on: [postgres], labels: {group: apps, public: 'yes'}}\n\
         - {name: grafana, module: tcp, target: 'grafana.lan:3000', depends_on: [postgres], labels: {group: apps, public: 'yes'}}\n\
         - {name: wiki, module: tcp, target: 'wiki.lan:443', labels: {public: 'yes'}, slo: 99.9}\n",
        "t.yml".as_ref(),
    )
    .unwrap();
    let since = now - Duration::from_secs(720);
    let health = |state, roots: &[&str], failure: Option<&str>| crate::schedule::TargetHealth {
        state,
        since: Some(since),
        root_causes: roots.iter().map(|s| (*s).to_owned()).collect(),
        last_failure: failure.map(|m| ProbeFailure::new(FailureKind::Connect, m)),
        changes: 2,
    };
    let t = config.targets.targets();
    vec![
        TargetView {
            target: t[0].clone(),
            health: health(
                State::Down,
                &["postgres"],
                Some("connecting to 10.0.0.2:5432: refused"),
            ),
            last: None,
            slo: None,
        },
        TargetView {
            target: t[1].clone(),
            health: health(State::Blocked, &["postgres"], Some("status 502")),
            last: None,
            slo: None,
        },
        TargetView {
            target: t[2].clone(),
            health: health(State::Blocked, &["postgres"], Some("status 502")),
            last: None,
            slo: None,
        },
        TargetView {
            target: t[3].clone(),
            health: health(State::Up, &[], None),
            last: None,
            slo: Some(crate::history::SloStatus {
                budget_remaining: 0.62,
                burn_rate: 0.4,
            }),
        },
    ]
}

fn spec(yaml: &str) -> Spec {
    let section: Section = serde_norway::from_str(yaml).unwrap();
    Spec::build(&section).unwrap()
}

#[test]
fn the_banner_names_the_root_cause_and_what_it_affects() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_300_000);
    let s = spec("{group_by: group}");
    let m = model(
        s.page("").unwrap(),
        s.refresh,
        &targets(now),
        &Fixed(now),
        now,
    );
    assert_eq!(m.overall, Overall::Degraded);
    assert_eq!(
        m.causes,
        [Cause {
            name: "postgres".into(),
            since: Some(now - Duration::from_secs(720)),
            affected: vec!["grafana".into(), "teslamate".into()],
        }]
    );
    let html = page_html(&m, "/status");
    assert!(
        html.contains("grafana, teslamate affected — cause: postgres down since "),
        "{html}"
    );
    assert!(html.contains(", 12 min</p>"), "{html}");
    // Groups by the label, "Other" last.
    let order: Vec<&str> = m.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(order, ["apps", "data", "Other"]);
    // 90 bars a row, each with a tooltip; one row per target.
    assert_eq!(html.matches("class=\"bars\"").count(), 4);
    for bars in html.split("class=\"bars\"").skip(1) {
        let bars = &bars[..bars.find("</svg>").unwrap()];
        assert_eq!(bars.matches("<title>").count(), DAYS, "{bars}");
    }
    // A day all up reuses the page's one bar shape, defined once.
    assert_eq!(html.matches("<rect id=\"bar-up\"").count(), 1);
    assert_eq!(
        html.matches("<use href=\"#bar-up\"").count(),
        4 * (DAYS - 1)
    );
    assert!(
        html.contains("14:02 UTC, 12 min: connect: refused"),
        "{html}"
    );
    assert!(
        html.contains("fill=\"var(--maint)\""),
        "maintenance has its own colour"
    );
    // The graph: four nodes, the root cause ringed and labelled.
    assert_eq!(html.matches("<g class=\"node\">").count(), 4);
    assert!(html.contains("postgres: down (root cause)"), "{html}");
    assert!(html.contains("down · root cause"), "{html}");
    // Addresses and reasons on a private page, with links to each target's page.
    assert!(html.contains("db.lan:5432"));
    assert!(html.contains("connecting to 10.0.0.2:5432: refused"));
    assert!(html.contains("href=\"/status/target/teslamate\""));
    // No script at all; refresh by meta.
    assert!(!html.contains("<script"));
    assert!(html.contains("http-equiv=\"refresh\" content=\"30\""));
}

#[test]
fn a_public_page_shows_its_selection_without_addresses_or_reasons() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_300_000);
    let s = spec("{pages: [{name: home, title: Home, selector: {public: 'yes'}, public: true}]}");
    let p = s.page("home").unwrap();
    let m = model(p, s.refresh, &targets(now), &Fixed(now), now);
    let names: Vec<&str> = m
        .groups
        .iter()
        .flat_map(|g| g.rows.iter().map(|r| r.name.as_str()))
        .collect();
    assert_eq!(names, ["grafana", "teslamate", "wiki"]);
    let html = page_html(&m, "/status");
    for secret in [
        "tm.lan",
        "wiki.lan",
        "status 502",
        "db.lan",
        "/status/target/",
    ] {
        assert!(!html.contains(secret), "{secret} leaked: {html}");
    }
    // postgres is not on this page, so it is no cause here, but the blocked rows say by what.
    assert!(m.causes.is_empty());
    assert!(html.contains("by postgres"));
    let json = model_json(&m);
    assert_eq!(
        json["groups"][0]["targets"][0]["address"],
        serde_json::Value::Null
    );
    assert_eq!(
        json["groups"][0]["targets"][0]["reason"],
        serde_json::Value::Null
    );
}

#[test]
fn all_up_is_operational_and_all_failing_is_down() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_300_000);
    let s = Spec::default();
    let mut t = targets(now);
    for v in &mut t {
        v.health.state = State::Up;
    }
    assert_eq!(
        model(&s.pages[0], None, &t, &NoHistory, now).overall,
        Overall::Operational
    );
    for v in &mut t {
        v.health.state = State::Down;
    }
    assert_eq!(
        model(&s.pages[0], None, &t, &NoHistory, now).overall,
        Overall::Down
    );
}

#[test]
fn without_history_rows_show_no_data() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_300_000);
    let s = Spec::default();
    let m = model(&s.pages[0], None, &targets(now), &NoHistory, now);
    let html = page_html(&m, "/lookout/status");
    assert_eq!(html.matches("<title>no data</title>").count(), 4 * DAYS);
    assert!(html.contains("href=\"/lookout/api/v1/status\""), "{html}");
}

#[test]
fn the_target_page_has_its_incidents_latency_and_neighbours() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_300_000);
    let all = targets(now);
    let html = target_html("/status", &all[0], &all, &Fixed(now), None, now);
    assert!(html.contains("connection refused"), "{html}");
    assert!(html.contains("ongoing, 12 min"), "{html}");
    assert!(html.contains("p50 solid"), "{html}");
    assert!(html.contains("Needed by: <a href=\"/status/target/teslamate\">teslamate</a>, <a href=\"/status/target/grafana\">grafana</a>"), "{html}");
}

#[test]
fn an_objective_shows_its_budget_and_burn_rate_on_the_row_the_target_page_and_in_json() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_300_000);
    let s = Spec::default();
    let mut all = targets(now);
    let m = model(&s.pages[0], None, &all, &Fixed(now), now);
    let html = page_html(&m, "/status");
    assert!(html.contains(">Error budget</th>"), "{html}");
    assert!(
        html.contains("62% left<div class=\"muted\">burn 0.4× · 99.9% over 30 d</div>"),
        "{html}"
    );
    // Rows without an objective show none; the reason row spans the extra column.
    assert_eq!(
        html.matches("<td class=\"num wide\">–</td></tr>").count(),
        3,
        "{html}"
    );
    assert!(html.contains("colspan=\"9\""), "{html}");
    let wiki = &model_json(&m)["groups"][0]["targets"][3];
    assert_eq!(wiki["name"], "wiki");
    assert_eq!(wiki["slo"]["objective"], 0.999);
    assert_eq!(wiki["slo"]["window_seconds"], 30 * 86_400);
    assert_eq!(wiki["slo"]["budget_remaining"], 0.62);
    assert_eq!(wiki["slo"]["burn_rate"], 0.4);
    assert_eq!(
        model_json(&m)["groups"][0]["targets"][0]["slo"],
        serde_json::Value::Null
    );
    let page = target_html("/status", &all[3], &all, &Fixed(now), None, now);
    assert!(
        page.contains("<strong>Objective</strong> 99.9% over 30 d: error budget 62% left, burning at 0.40× over the last hour."),
        "{page}"
    );
    // Overspent, and not computed yet.
    all[3].slo = Some(crate::history::SloStatus {
        budget_remaining: -1.5,
        burn_rate: 12.0,
    });
    let html = page_html(&model(&s.pages[0], None, &all, &Fixed(now), now), "/status");
    assert!(
        html.contains("overspent (-150%)<div class=\"muted\">burn 12.0×"),
        "{html}"
    );
    all[3].slo = None;
    let m = model(&s.pages[0], None, &all, &Fixed(now), now);
    assert!(page_html(&m, "/status").contains("–<div class=\"muted\">99.9% over 30 d</div>"));
    assert_eq!(
        model_json(&m)["groups"][0]["targets"][3]["slo"]["budget_remaining"],
        serde_json::Value::Null
    );
    let page = target_html("/status", &all[3], &all, &Fixed(now), None, now);
    assert!(page.contains("error budget not computed yet"), "{page}");
}

#[test]
fn badges_carry_their_text_for_screen_readers() {
    let svg = badge("wiki", "up", render::badge_colour(State::Up));
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.contains("aria-label=\"wiki: up\""));
    assert!(svg.contains("#1a7f37"));
}

#[test]
fn page_names_are_validated() {
    for bad in [
        "{pages: [{name: target}]}",
        "{pages: [{name: 'a b'}]}",
        "{pages: [{name: x}, {name: x}]}",
    ] {
        let section: Section = serde_norway::from_str(bad).unwrap();
        assert!(Spec::build(&section).is_err(), "{bad}");
    }
    let _ = BTreeMap::<String, String>::new();
    let _ = Arc::new(());
}

#[test]
fn a_page_larger_than_its_page_size_is_sliced_and_links_its_other_pages() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_300_000);
    let s = spec("{group_by: group, page_size: 2}");
    assert_eq!(s.page_size, 2);
    let all = targets(now);
    let q = |pairs: &[(&str, &str)]| {
        let q: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Slice::from_query(&q, s.page_size)
    };
    // Order: apps (grafana, teslamate), data (postgres), Other (wiki).
    let m = model_slice(&s.pages[0], None, &all, &Fixed(now), now, &q(&[]).unwrap());
    assert_eq!((m.shown, m.pages), ((0, 2, 4), 2));
    let names: Vec<&str> = m
        .groups
        .iter()
        .flat_map(|g| g.rows.iter().map(|r| r.name.as_str()))
        .collect();
    assert_eq!(names, ["grafana", "teslamate"]);
    // The banner and the group counts still cover every target.
    assert_eq!(m.failing, 3);
    assert_eq!(m.causes[0].affected, ["grafana", "teslamate"]);
    let counts: Vec<(&str, [usize; 4])> = m
        .summaries
        .iter()
        .map(|g| (g.name.as_str(), g.counts))
        .collect();
    assert_eq!(
        counts,
        [
            ("apps", [0, 0, 2, 0]),
            ("data", [0, 1, 0, 0]),
            ("Other", [1, 0, 0, 0])
        ]
    );
    let html = page_html(&m, "/status");
    assert!(
        html.contains(
            "Rows 1–2 of 4 · page 1 of 2 · <a href=\"/status?p=2\" rel=\"next\">Next ›</a>"
        ),
        "{html}"
    );
    assert!(
        html.contains("<a href=\"/status?state=failing\">Show the 3 failing targets</a>"),
        "{html}"
    );
    assert!(
        html.contains("<a href=\"/status?group=Other\">Other</a>"),
        "{html}"
    );
    assert!(
        html.contains("<h2>apps <span class=\"muted\">2 targets: 2 blocked</span></h2>"),
        "{html}"
    );
    assert_eq!(html.matches("class=\"bars\"").count(), 2);

    // The last page; a page past the end shows the last one.
    for p in ["2", "9"] {
        let m = model_slice(
            &s.pages[0],
            None,
            &all,
            &Fixed(now),
            now,
            &q(&[("p", p)]).unwrap(),
        );
        assert_eq!((m.shown, m.slice.index), ((2, 4, 4), 1), "p={p}");
        let html = page_html(&m, "/status");
        assert!(
            html.contains("<a href=\"/status\" rel=\"prev\">‹ Previous</a>"),
            "{html}"
        );
        assert!(!html.contains("rel=\"next\""), "{html}");
    }

    // Filters: one group, and only the failing targets.
    let m = model_slice(
        &s.pages[0],
        None,
        &all,
        &Fixed(now),
        now,
        &q(&[("group", "Other")]).unwrap(),
    );
    assert_eq!((m.shown, m.pages), ((0, 1, 1), 1));
    assert_eq!(m.groups[0].rows[0].name, "wiki");
    assert!(page_html(&m, "/status").contains("<a href=\"/status\">All 4 targets</a>"));
    let m = model_slice(
        &s.pages[0],
        None,
        &all,
        &Fixed(now),
        now,
        &q(&[("state", "failing"), ("p", "2")]).unwrap(),
    );
    assert_eq!(m.shown, (2, 3, 3));
    assert_eq!(m.groups[0].rows[0].name, "postgres");
    let html = page_html(&m, "/status");
    assert!(
        html.contains("<a href=\"/status?state=failing\" rel=\"prev\">"),
        "{html}"
    );
    assert_eq!(model_json(&m)["rows"]["total"], 3);

    // Bad parameters are refused with the reason.
    assert!(q(&[("p", "0")]).unwrap_err().contains("p=\"0\""));
    assert!(q(&[("p", "x")]).is_err());
    assert!(q(&[("state", "up")]).unwrap_err().contains("state=\"up\""));
    let section: Section = serde_norway::from_str("{page_size: 0}").unwrap();
    assert_eq!(Spec::build(&section).unwrap_err().path, "page_size");

    // Within the page size, one page and no pager.
    let m = model(
        &spec("{group_by: group}").pages[0],
        None,
        &all,
        &Fixed(now),
        now,
    );
    assert_eq!((m.shown, m.pages), ((0, 4, 4), 1));
    assert!(!page_html(&m, "/status").contains("Rows 1–"));
}

#[test]
fn a_graph_over_its_limit_is_cut_to_what_fails() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_300_000);
    let mut yaml = String::from("modules:\n  tcp: {prober: tcp}\ntargets:\n");
    for i in 0..GRAPH_MAX + 50 {
        yaml.push_str(&format!(
            "- {{name: t{i}, module: tcp, target: 'h:{}'",
            1000 + i
        ));
        if i >= 10 {
            yaml.push_str(&format!(", depends_on: [t{}]", i % 10));
        }
        yaml.push_str("}\n");
    }
    let config = crate::config::parse(&yaml, "g.yml".as_ref()).unwrap();
    let mut views: Vec<TargetView> = config
        .targets
        .targets()
        .iter()
        .map(|t| TargetView {
            target: t.clone(),
            health: crate::schedule::TargetHealth {
                state: State::Up,
                since: Some(now),
                root_causes: Vec::new(),
                last_failure: None,
                changes: 1,
            },
            last: None,
            slo: None,
        })
        .collect();
    let page = &Spec::default().pages[0];
    let m = model(page, None, &views, &NoHistory, now);
    assert!(m.graph.is_empty());
    assert!(
        m.graph_note.as_deref().unwrap().contains("nothing fails"),
        "{:?}",
        m.graph_note
    );
    assert!(page_html(&m, "/status").contains("too large to draw"));
    // t3 down, t13 and t23 blocked by it: those three are drawn, t13's edge to t3 with them.
    for (i, v) in views.iter_mut().enumerate() {
        if i == 3 {
            v.health.state = State::Down;
        } else if i == 13 || i == 23 {
            v.health.state = State::Blocked;
            v.health.root_causes = vec!["t3".into()];
        }
    }
    let m = model(page, None, &views, &NoHistory, now);
    let mut drawn: Vec<&str> = m.graph.iter().map(|n| n.0.as_str()).collect();
    drawn.sort();
    assert_eq!(drawn, ["t13", "t23", "t3"]);
    assert_eq!(
        m.graph_note.as_deref(),
        Some("The failing part of the graph: 3 of 200 targets.")
    );
    assert!(page_html(&m, "/status").contains("<title>t3: down (root cause)</title>"));
    // Too many failing: nothing drawn, and the note says so.
    for v in views.iter_mut().skip(10) {
        v.health.state = State::Blocked;
    }
    let m = model(page, None, &views, &NoHistory, now);
    assert!(m.graph.is_empty());
    assert!(
        m.graph_note
            .as_deref()
            .unwrap()
            .contains("so is its failing part")
    );
}
