//! The status page (`/status`, `/status/<page>`, `/status/target/<name>`), its SVG badges and
//! its JSON (`/api/v1/status`): what is up, what broke, since when and why, for people rather
//! than for Prometheus.
//!
//! Everything is rendered on the server from the scheduler's states and the history store's
//! rollups: plain HTML and inline SVG, light and dark by `prefers-color-scheme`, readable on a
//! phone, with no script at all (tooltips are SVG `<title>`s, refresh is a `<meta>` tag), and no
//! asset outside the binary.

pub mod render;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::Target;
use crate::health::State;
use crate::probe::report::Report;
use crate::schedule::TargetHealth;
use crate::values::{ConfigDuration, FieldError};

pub use render::{badge, page_html, target_html};

/// `status:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The title of the default page (default "Status").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A label whose value groups the rows (targets without it go in "Other"); by default all
    /// targets are one group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// How often the page reloads itself (default 30s; 0 for never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<ConfigDuration>,
    /// Rows per page of a status page (default 100); more rows go on further pages
    /// (`?p=2`, …), each read from the history store on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<usize>,
    /// More pages, each at `/status/<name>`, showing the targets their selector picks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<PageSection>,
}

/// One extra page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageSection {
    /// Its name: the path `/status/<name>`.
    pub name: String,
    /// Its title (default: the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Label equalities a target must all match (`target` is the name); empty: every target.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The grouping label for this page (default: the section's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// A page for the public: addresses and failure reasons are left out, and targets link to
    /// no detail page.
    #[serde(default)]
    pub public: bool,
}

/// One validated page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// `""` for the default page, else its name.
    pub name: String,
    /// Its title.
    pub title: String,
    /// Label equalities a target must match.
    pub selector: BTreeMap<String, String>,
    /// The grouping label.
    pub group_by: Option<String>,
    /// Whether addresses and reasons are hidden.
    pub public: bool,
}

/// The validated `status:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The default page and the extra ones.
    pub pages: Vec<Page>,
    /// The reload interval (`None`: never).
    pub refresh: Option<Duration>,
    /// Rows per page.
    pub page_size: usize,
}

/// Rows per page by default.
pub const PAGE_SIZE: usize = 100;

impl Default for Spec {
    fn default() -> Self {
        Spec::build(&Section::default()).unwrap_or(Spec {
            pages: Vec::new(),
            refresh: None,
            page_size: PAGE_SIZE,
        })
    }
}

impl Spec {
    /// Validates `section`; the error's path is relative to `status`.
    pub fn build(section: &Section) -> Result<Spec, FieldError> {
        let mut pages = vec![Page {
            name: String::new(),
            title: section.title.clone().unwrap_or_else(|| "Status".into()),
            selector: BTreeMap::new(),
            group_by: section.group_by.clone(),
            public: false,
        }];
        let mut seen = BTreeSet::new();
        for (i, p) in section.pages.iter().enumerate() {
            let valid = !p.name.is_empty()
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid || p.name == "target" {
                return Err(FieldError::new(
                    format!("pages[{i}].name"),
                    format!(
                        "invalid page name {:?} (letters, digits, - and _; not \"target\")",
                        p.name
                    ),
                ));
            }
            if !seen.insert(p.name.clone()) {
                return Err(FieldError::new(
                    format!("pages[{i}].name"),
                    format!("duplicate page name {:?}", p.name),
                ));
            }
            pages.push(Page {
                name: p.name.clone(),
                title: p.title.clone().unwrap_or_else(|| p.name.clone()),
                selector: p.selector.clone(),
                group_by: p.group_by.clone().or_else(|| section.group_by.clone()),
                public: p.public,
            });
        }
        let refresh = match section.refresh.map(|d| d.0) {
            None => Some(Duration::from_secs(30)),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        };
        let page_size = match section.page_size {
            None => PAGE_SIZE,
            Some(0) => {
                return Err(FieldError::new(
                    "page_size",
                    "page_size must be at least 1".to_owned(),
                ));
            }
            Some(n) => n,
        };
        Ok(Spec {
            pages,
            refresh,
            page_size,
        })
    }

    /// The page at `/status/<name>` (`""`: `/status`).
    pub fn page(&self, name: &str) -> Option<&Page> {
        self.pages.iter().find(|p| p.name == name)
    }
}

/// One day of a target's history, for a bar.
#[derive(Debug, Clone, PartialEq)]
pub struct DayView {
    /// The day's start (UTC midnight).
    pub start: SystemTime,
    /// The share of the day's known, non-maintenance time the target was up; `None` without
    /// data.
    pub up_ratio: Option<f64>,
    /// The share of the day in maintenance.
    pub maintenance_ratio: f64,
    /// One line per incident that day.
    pub incidents: Vec<String>,
}

/// One incident, for the target's page.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentView {
    /// When it began.
    pub start: SystemTime,
    /// When it ended; `None` while it lasts.
    pub end: Option<SystemTime>,
    /// The failure's kind.
    pub kind: String,
    /// The failure's reason.
    pub reason: String,
    /// What explained it (itself when it was down in its own right).
    pub root_causes: Vec<String>,
}

/// A latency point over time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyPoint {
    /// The end of the point's interval.
    pub at: SystemTime,
    /// Median, seconds.
    pub p50: f64,
    /// 95th percentile, seconds.
    pub p95: f64,
    /// Maximum, seconds.
    pub max: f64,
}

/// What the page asks of the history store. `NoHistory` answers when there is none, so the page
/// still shows the live states.
pub trait HistorySource {
    /// The share of `window` (ending now) the target was up, maintenance excluded.
    fn uptime(&self, target: &str, window: Duration) -> Option<f64>;
    /// The last `n` days, oldest first.
    fn days(&self, target: &str, n: usize) -> Vec<DayView>;
    /// Latency over `window` (ending now) in about `points` points, oldest first.
    fn latency(&self, target: &str, window: Duration, points: usize) -> Vec<LatencyPoint>;
    /// The newest `limit` incidents, newest first.
    fn incidents(&self, target: &str, limit: usize) -> Vec<IncidentView>;
    /// What a row shows: uptime per `WINDOWS`, the last `DAYS` days, the response times of
    /// the last 24 hours. A store answers it in one read per target.
    fn row(&self, target: &str) -> RowHistory {
        RowHistory {
            uptime: WINDOWS
                .iter()
                .map(|(_, w)| self.uptime(target, *w))
                .collect(),
            days: self.days(target, DAYS),
            latency: self
                .latency(target, Duration::from_secs(86_400), 24)
                .iter()
                .map(|p| p.p50)
                .collect(),
        }
    }
}

/// A row's history (`HistorySource::row`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowHistory {
    /// Uptime per window of `WINDOWS`.
    pub uptime: Vec<Option<f64>>,
    /// The last days, oldest first.
    pub days: Vec<DayView>,
    /// Median response time per hour over the last 24 hours, seconds, oldest first.
    pub latency: Vec<f64>,
}

/// The history store as a page reads it: rollups, as of `now`, all from one snapshot (one read
/// transaction for the whole page).
#[derive(Debug)]
pub struct StoreHistory<'a> {
    /// The store's snapshot.
    pub snap: crate::history::Snapshot<'a>,
    /// The time the page is built for.
    pub now: SystemTime,
}

impl StoreHistory<'_> {
    fn day_views(
        &self,
        days: Vec<crate::history::Day>,
        incidents: &[crate::history::Incident],
    ) -> Vec<DayView> {
        days.into_iter()
            .map(|d| {
                let end = d.start + Duration::from_secs(86_400);
                DayView {
                    start: d.start,
                    up_ratio: d.up_ratio,
                    maintenance_ratio: d.maintenance_ratio,
                    incidents: incidents
                        .iter()
                        .filter(|i| i.start < end && i.end.is_none_or(|e| e >= d.start))
                        .map(|i| incident_line(i, self.now))
                        .collect(),
                }
            })
            .collect()
    }
}

impl HistorySource for StoreHistory<'_> {
    fn uptime(&self, target: &str, window: Duration) -> Option<f64> {
        self.snap
            .uptime(target, self.now - window, self.now)
            .ok()?
            .ratio()
    }

    fn days(&self, target: &str, n: usize) -> Vec<DayView> {
        let incidents = self.snap.incidents(target, 200).unwrap_or_default();
        let days = self.snap.days(target, n, self.now).unwrap_or_default();
        self.day_views(days, &incidents)
    }

    fn latency(&self, target: &str, window: Duration, points: usize) -> Vec<LatencyPoint> {
        let step = window / points.max(1) as u32;
        self.snap
            .latency(target, self.now - window, self.now, step)
            .unwrap_or_default()
            .into_iter()
            .map(|p| LatencyPoint {
                at: p.at,
                p50: p.p50.as_secs_f64(),
                p95: p.p95.as_secs_f64(),
                max: p.max.as_secs_f64(),
            })
            .collect()
    }

    fn incidents(&self, target: &str, limit: usize) -> Vec<IncidentView> {
        self.snap
            .incidents(target, limit)
            .unwrap_or_default()
            .into_iter()
            .map(|i| IncidentView {
                start: i.start,
                end: i.end,
                kind: i.kind.unwrap_or_else(|| i.state.as_str().to_owned()),
                reason: i.reason.unwrap_or_default(),
                root_causes: i.root_causes,
            })
            .collect()
    }

    fn row(&self, target: &str) -> RowHistory {
        let windows: Vec<Duration> = WINDOWS.iter().map(|(_, w)| *w).collect();
        let Ok(s) = self.snap.summary(target, &windows, DAYS, 200, self.now) else {
            return RowHistory::default();
        };
        RowHistory {
            uptime: s.uptime.iter().map(crate::history::Uptime::ratio).collect(),
            days: self.day_views(s.days, &s.incidents),
            latency: s.hourly.iter().map(|p| p.p50.as_secs_f64()).collect(),
        }
    }
}

/// One line of a day bar's tooltip for an incident.
fn incident_line(i: &crate::history::Incident, now: SystemTime) -> String {
    let lasted = i
        .end
        .unwrap_or(now)
        .duration_since(i.start)
        .unwrap_or_default();
    let mut line = format!(
        "{} {}, {}",
        i.state.as_str(),
        render::clock(i.start, now),
        render::span(lasted)
    );
    if let Some(k) = &i.kind {
        line.push_str(": ");
        line.push_str(k);
    }
    if !i.root_causes.is_empty() {
        line.push_str(&format!(" (cause: {})", i.root_causes.join(", ")));
    }
    line
}

/// No history store: uptime and bars show "no data".
#[derive(Debug, Default)]
pub struct NoHistory;

impl HistorySource for NoHistory {
    fn uptime(&self, _: &str, _: Duration) -> Option<f64> {
        None
    }
    fn days(&self, _: &str, _: usize) -> Vec<DayView> {
        Vec::new()
    }
    fn latency(&self, _: &str, _: Duration, _: usize) -> Vec<LatencyPoint> {
        Vec::new()
    }
    fn incidents(&self, _: &str, _: usize) -> Vec<IncidentView> {
        Vec::new()
    }
}

/// The uptime windows of a row.
pub const WINDOWS: [(&str, Duration); 4] = [
    ("24h", Duration::from_secs(86_400)),
    ("7d", Duration::from_secs(7 * 86_400)),
    ("30d", Duration::from_secs(30 * 86_400)),
    ("90d", Duration::from_secs(90 * 86_400)),
];

/// One scheduled target as the page needs it.
#[derive(Debug, Clone)]
pub struct TargetView {
    /// The target.
    pub target: Arc<Target>,
    /// Its health.
    pub health: TargetHealth,
    /// Its latest result.
    pub last: Option<Arc<crate::schedule::LastResult>>,
    /// Its uptime objective's standing, once the history store computed it.
    pub slo: Option<crate::history::SloStatus>,
}

/// A target's uptime objective on the page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SloView {
    /// The objective (0.999 for `slo: 99.9`).
    pub objective: f64,
    /// Over how long.
    pub window: Duration,
    /// Error budget left and burn rate; `None` until the store computed them (after the first
    /// closed minute), or without a store.
    pub status: Option<crate::history::SloStatus>,
}

impl SloView {
    pub(crate) fn of(v: &TargetView) -> Option<SloView> {
        v.target.slo.map(|s| SloView {
            objective: s.objective,
            window: s.window,
            status: v.slo,
        })
    }
}

/// The overall verdict of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overall {
    /// Nothing fails.
    Operational,
    /// Some targets fail.
    Degraded,
    /// Every probed target fails.
    Down,
}

impl Overall {
    /// The label shown and used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Overall::Operational => "operational",
            Overall::Degraded => "degraded",
            Overall::Down => "down",
        }
    }
}

/// One root cause and what it takes down with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// The down target.
    pub name: String,
    /// Since when.
    pub since: Option<SystemTime>,
    /// The targets blocked by it, on this page.
    pub affected: Vec<String>,
}

/// One row of the page.
#[derive(Debug, Clone)]
pub struct Row {
    /// The target's name.
    pub name: String,
    /// Its address (`None` on a public page).
    pub address: Option<String>,
    /// Its state.
    pub state: State,
    /// Since when.
    pub since: Option<SystemTime>,
    /// Its root causes (when blocked or down).
    pub root_causes: Vec<String>,
    /// Its latest failure's reason (`None` on a public page or when it never failed).
    pub reason: Option<String>,
    /// Uptime per window of `WINDOWS`.
    pub uptime: Vec<Option<f64>>,
    /// The last 90 days, oldest first (fewer, or none, without history).
    pub days: Vec<DayView>,
    /// Recent response times in seconds, oldest first.
    pub latency: Vec<f64>,
    /// Days until the earliest certificate of its last probe expires, if it used TLS.
    pub cert_days: Option<f64>,
    /// Its latest probe's duration.
    pub last_duration: Option<Duration>,
    /// Its uptime objective, if it has one.
    pub slo: Option<SloView>,
}

/// A group of rows.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's name (the label value, or "Other").
    pub name: String,
    /// Its rows, by name.
    pub rows: Vec<Row>,
}

/// Everything one page shows.
#[derive(Debug, Clone)]
pub struct Model {
    /// The page.
    pub page: Page,
    /// When it was built.
    pub now: SystemTime,
    /// The verdict.
    pub overall: Overall,
    /// The root causes with what they affect.
    pub causes: Vec<Cause>,
    /// How many of the page's targets are down or blocked.
    pub failing: usize,
    /// Every group of the page with its counts.
    pub summaries: Vec<GroupSummary>,
    /// The rows asked for (the page index clamped to the last page).
    pub slice: Slice,
    /// The rows shown, `[first, last)` of `total` rows matching the slice's group and state.
    pub shown: (usize, usize, usize),
    /// Pages of rows matching the slice's group and state.
    pub pages: usize,
    /// The rows shown, grouped.
    pub groups: Vec<Group>,
    /// The dependency graph drawn: (name, state, is a root cause, dependencies); all of the
    /// page's targets, or its failing part (`graph_note` says which) when over `GRAPH_MAX`.
    pub graph: Vec<(String, State, bool, Vec<String>)>,
    /// Why the graph is cut or left out.
    pub graph_note: Option<String>,
    /// Reload interval.
    pub refresh: Option<Duration>,
}

/// The number of day bars per row.
pub const DAYS: usize = 90;

fn selected(page: &Page, t: &Target) -> bool {
    page.selector
        .iter()
        .all(|(k, v)| t.labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

/// `probe_ssl_earliest_cert_expiry` of a report, in days from `now`.
fn cert_days(report: &Report, now: SystemTime) -> Option<f64> {
    let expiry = report
        .samples()
        .iter()
        .find(|s| s.family.name == "probe_ssl_earliest_cert_expiry")?
        .value;
    let now = crate::results::unix_seconds(now);
    Some((expiry - now) / 86_400.0)
}

/// Which rows of a page one request shows: a group, only the failing targets, and one page of
/// `page_size` rows. Only the rows shown are read from the history store, so a page's cost
/// follows the page size rather than the number of targets; the banner, the group summaries
/// and the counts still cover every target the page selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// Only this group (`?group=`).
    pub group: Option<String>,
    /// Only targets that are down or blocked (`?state=failing`).
    pub failing: bool,
    /// The page of rows, from 0 (`?p=1` is the first).
    pub index: usize,
    /// Rows per page.
    pub page_size: usize,
}

impl Slice {
    /// Every row on one page (the JSON API, tests).
    pub fn all() -> Slice {
        Slice {
            group: None,
            failing: false,
            index: 0,
            page_size: usize::MAX,
        }
    }

    /// The slice a query string asks for (`group`, `state=failing`, `p`), with `page_size`
    /// rows per page; the error says which parameter is wrong.
    pub fn from_query(
        q: &std::collections::HashMap<String, String>,
        page_size: usize,
    ) -> Result<Slice, String> {
        let index = match q.get("p") {
            None => 0,
            Some(p) => match p.parse::<usize>() {
                Ok(n) if n >= 1 => n - 1,
                _ => return Err(format!("invalid page number p={p:?} (1, 2, …)")),
            },
        };
        let failing = match q.get("state").map(String::as_str) {
            None | Some("") | Some("all") => false,
            Some("failing") => true,
            Some(other) => return Err(format!("invalid state={other:?} (all or failing)")),
        };
        Ok(Slice {
            group: q.get("group").cloned(),
            failing,
            index,
            page_size: page_size.max(1),
        })
    }
}

/// A group's counts, over every target of the page (not only the rows shown).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSummary {
    /// The group's name.
    pub name: String,
    /// Targets per state: up, down, blocked, unknown.
    pub counts: [usize; 4],
}

impl GroupSummary {
    /// All its targets.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }
}

fn state_index(s: State) -> usize {
    match s {
        State::Up => 0,
        State::Down => 1,
        State::Blocked => 2,
        State::Unknown => 3,
    }
}

/// The most nodes the dependency graph draws; a larger graph is cut to the failing targets and
/// what they depend on, or left out when even that is larger.
pub const GRAPH_MAX: usize = 150;

/// Builds the model of `page` with every row (`model_slice` with `Slice::all()`).
pub fn model(
    page: &Page,
    refresh: Option<Duration>,
    targets: &[TargetView],
    history: &dyn HistorySource,
    now: SystemTime,
) -> Model {
    model_slice(page, refresh, targets, history, now, &Slice::all())
}

/// The group a target falls in on `page`.
fn group_of(page: &Page, t: &Target) -> String {
    match &page.group_by {
        None => String::new(),
        Some(label) => t
            .labels
            .iter()
            .find(|(k, _)| k == label)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "Other".into()),
    }
}

/// Builds the model of `page` from the targets' live views and the history, with the rows of
/// `slice`.
pub fn model_slice(
    page: &Page,
    refresh: Option<Duration>,
    targets: &[TargetView],
    history: &dyn HistorySource,
    now: SystemTime,
    slice: &Slice,
) -> Model {
    let views: Vec<&TargetView> = targets
        .iter()
        .filter(|v| selected(page, &v.target))
        .collect();
    let names: BTreeSet<&str> = views.iter().map(|v| v.target.name.as_str()).collect();
    // Every target with its group, in page order: groups by name with "Other" last, rows by name.
    let mut placed: Vec<(String, &TargetView)> = views
        .iter()
        .map(|v| (group_of(page, &v.target), *v))
        .collect();
    placed.sort_by(|a, b| {
        (a.0 == "Other", &a.0, &a.1.target.name).cmp(&(b.0 == "Other", &b.0, &b.1.target.name))
    });
    let mut summaries: Vec<GroupSummary> = Vec::new();
    for (g, v) in &placed {
        if summaries.last().is_none_or(|s| &s.name != g) {
            summaries.push(GroupSummary {
                name: g.clone(),
                counts: [0; 4],
            });
        }
        if let Some(s) = summaries.last_mut() {
            s.counts[state_index(v.health.state)] += 1;
        }
    }
    let matching: Vec<&(String, &TargetView)> = placed
        .iter()
        .filter(|(g, v)| {
            slice.group.as_ref().is_none_or(|want| want == g)
                && (!slice.failing || matches!(v.health.state, State::Down | State::Blocked))
        })
        .collect();
    let size = slice.page_size.max(1);
    let pages = matching.len().div_ceil(size).max(1);
    let index = slice.index.min(pages - 1);
    let first = index.saturating_mul(size).min(matching.len());
    let last = first.saturating_add(size).min(matching.len());
    let mut groups: Vec<Group> = Vec::new();
    for (group, v) in &matching[first..last] {
        let t = &v.target;
        let h = history.row(&t.name);
        let row = Row {
            name: t.name.clone(),
            address: (!page.public).then(|| t.target.clone()),
            state: v.health.state,
            since: v.health.since,
            root_causes: v.health.root_causes.clone(),
            reason: if page.public {
                None
            } else {
                v.health.last_failure.as_ref().map(|f| f.to_string())
            },
            uptime: h.uptime,
            days: h.days,
            latency: h.latency,
            cert_days: v.last.as_ref().and_then(|r| cert_days(&r.report, now)),
            last_duration: v.last.as_ref().map(|r| r.duration),
            slo: SloView::of(v),
        };
        match groups.last_mut() {
            Some(g) if &g.name == group => g.rows.push(row),
            _ => groups.push(Group {
                name: group.clone(),
                rows: vec![row],
            }),
        }
    }

    let failing = views
        .iter()
        .filter(|v| matches!(v.health.state, State::Down | State::Blocked))
        .count();
    let probed = views
        .iter()
        .filter(|v| v.health.state != State::Unknown)
        .count();
    let overall = if failing == 0 {
        Overall::Operational
    } else if failing == probed {
        Overall::Down
    } else {
        Overall::Degraded
    };
    let mut causes: Vec<Cause> = views
        .iter()
        .filter(|v| v.health.state == State::Down)
        .map(|v| Cause {
            name: v.target.name.clone(),
            since: v.health.since,
            affected: Vec::new(),
        })
        .collect();
    causes.sort_by(|a, b| a.name.cmp(&b.name));
    for v in &views {
        if v.health.state != State::Blocked {
            continue;
        }
        for r in &v.health.root_causes {
            if let Ok(i) = causes.binary_search_by(|c| c.name.as_str().cmp(r)) {
                causes[i].affected.push(v.target.name.clone());
            }
        }
    }
    for c in &mut causes {
        c.affected.sort();
    }
    let (graph, graph_note) = graph_of(&views, &names);
    Model {
        page: page.clone(),
        now,
        overall,
        causes,
        failing,
        summaries,
        slice: Slice {
            index,
            page_size: size,
            ..slice.clone()
        },
        shown: (first, last, matching.len()),
        pages,
        groups,
        graph,
        graph_note,
        refresh,
    }
}

type Node = (String, State, bool, Vec<String>);

/// The graph of the page's targets, at most `GRAPH_MAX` nodes: all of them, else the failing
/// ones with what they depend on, else none with a note saying why.
fn graph_of(views: &[&TargetView], names: &BTreeSet<&str>) -> (Vec<Node>, Option<String>) {
    let node = |v: &TargetView| -> Node {
        (
            v.target.name.clone(),
            v.health.state,
            v.health.state == State::Down,
            v.target
                .depends_on
                .iter()
                .filter(|d| names.contains(d.as_str()))
                .cloned()
                .collect(),
        )
    };
    if views.len() <= GRAPH_MAX {
        return (views.iter().map(|v| node(v)).collect(), None);
    }
    let edges = views
        .iter()
        .filter(|v| {
            v.target
                .depends_on
                .iter()
                .any(|d| names.contains(d.as_str()))
        })
        .count();
    if edges == 0 {
        return (Vec::new(), None);
    }
    // The failing targets and, transitively, what they depend on.
    let by_name: BTreeMap<&str, &TargetView> =
        views.iter().map(|v| (v.target.name.as_str(), *v)).collect();
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = views
        .iter()
        .filter(|v| matches!(v.health.state, State::Down | State::Blocked))
        .map(|v| v.target.name.as_str())
        .collect();
    while let Some(n) = todo.pop() {
        if keep.len() > GRAPH_MAX {
            break;
        }
        if !keep.insert(n) {
            continue;
        }
        if let Some(v) = by_name.get(n) {
            todo.extend(
                v.target
                    .depends_on
                    .iter()
                    .map(String::as_str)
                    .filter(|d| by_name.contains_key(d)),
            );
        }
    }
    let total = views.len();
    if keep.is_empty() {
        return (
            Vec::new(),
            Some(format!(
                "The graph of {total} targets is too large to draw; nothing fails, and each target's page shows its dependencies."
            )),
        );
    }
    if keep.len() > GRAPH_MAX {
        return (
            Vec::new(),
            Some(format!(
                "The graph of {total} targets is too large to draw, and so is its failing part (over {GRAPH_MAX} targets); each target's page shows its dependencies."
            )),
        );
    }
    let nodes: Vec<Node> = keep
        .iter()
        .filter_map(|n| by_name.get(n))
        .map(|v| node(v))
        .collect();
    let shown = nodes.len();
    (
        nodes,
        Some(format!(
            "The failing part of the graph: {shown} of {total} targets."
        )),
    )
}

/// An objective as JSON: `budget_remaining` and `burn_rate` are null until computed.
pub fn slo_json(s: SloView) -> serde_json::Value {
    serde_json::json!({
        // 99.9 / 100 is 0.9990000000000001 in binary; six places are plenty.
        "objective": (s.objective * 1e6).round() / 1e6,
        "window_seconds": s.window.as_secs(),
        "budget_remaining": s.status.map(|x| x.budget_remaining),
        "burn_rate": s.status.map(|x| x.burn_rate),
    })
}

/// The page `page` as HTML: its model from the live `targets` and `history`, rendered; what
/// `GET /status` runs on a blocking thread (`base` is the status pages' path).
pub fn render_page(
    page: &Page,
    refresh: Option<Duration>,
    targets: &[TargetView],
    history: &dyn HistorySource,
    base: &str,
    now: SystemTime,
    slice: &Slice,
) -> String {
    page_html(
        &model_slice(page, refresh, targets, history, now, slice),
        base,
    )
}

/// The page's model as JSON (`/api/v1/status`).
pub fn model_json(m: &Model) -> serde_json::Value {
    let time = |t: Option<SystemTime>| t.map(crate::alerts::rfc3339);
    serde_json::json!({
        "page": m.page.name,
        "title": m.page.title,
        "generated": crate::alerts::rfc3339(m.now),
        "overall": m.overall.as_str(),
        "failing": m.failing,
        "rows": {
            "first": m.shown.0,
            "last": m.shown.1,
            "total": m.shown.2,
            "page": m.slice.index + 1,
            "pages": m.pages,
        },
        "group_counts": m.summaries.iter().map(|s| serde_json::json!({
            "name": s.name,
            "up": s.counts[0],
            "down": s.counts[1],
            "blocked": s.counts[2],
            "unknown": s.counts[3],
        })).collect::<Vec<_>>(),
        "causes": m.causes.iter().map(|c| serde_json::json!({
            "target": c.name,
            "since": time(c.since),
            "affected": c.affected,
        })).collect::<Vec<_>>(),
        "groups": m.groups.iter().map(|g| serde_json::json!({
            "name": g.name,
            "targets": g.rows.iter().map(|r| serde_json::json!({
                "name": r.name,
                "address": r.address,
                "state": r.state.as_str(),
                "since": time(r.since),
                "root_causes": r.root_causes,
                "reason": r.reason,
                "uptime": WINDOWS.iter().zip(&r.uptime).map(|((w, _), u)| ((*w).to_owned(), *u)).collect::<BTreeMap<_, _>>(),
                "days": r.days.iter().map(|d| serde_json::json!({
                    "start": crate::alerts::rfc3339(d.start),
                    "up_ratio": d.up_ratio,
                    "maintenance_ratio": d.maintenance_ratio,
                    "incidents": d.incidents,
                })).collect::<Vec<_>>(),
                "cert_days": r.cert_days,
                "last_duration_seconds": r.last_duration.map(|d| d.as_secs_f64()),
                "slo": r.slo.map(slo_json),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
