//! HTML and SVG for the status page: one string built per request, no template engine and no
//! script. Colours come in pairs per state, each with white text at a contrast of at least
//! 4.5:1, and the state is always also written out, so colour is never the only signal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::{DayView, HistorySource, Model, Overall, Row, SloView, TargetView, WINDOWS};
use crate::health::State;

/// HTML-escapes `s`.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment percent-encoded.
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The CSS custom property of a state's colour.
fn colour(state: State) -> &'static str {
    match state {
        State::Up => "var(--up)",
        State::Down => "var(--down)",
        State::Blocked => "var(--blocked)",
        State::Unknown => "var(--unknown)",
    }
}

const CSS: &str = "\
:root{--bg:#ffffff;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--card:#f6f8fa;\
--up:#1a7f37;--down:#cf222e;--blocked:#9a3412;--unknown:#59636e;--maint:#0969da;--nodata:#d1d9e0}\
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#3d444d;\
--card:#151b23;--nodata:#3d444d}}\
*{box-sizing:border-box}\
body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}\
main{max-width:1100px;margin:0 auto;padding:1rem}\
a{color:inherit}a:focus-visible,summary:focus-visible{outline:3px solid var(--maint);outline-offset:2px}\
h1{font-size:1.6rem;margin:.5rem 0 1rem}h2{font-size:1.2rem;margin:1.5rem 0 .5rem}\
.banner{border-radius:8px;padding:1rem 1.2rem;color:#fff;margin-bottom:1rem}\
.banner strong{font-size:1.25rem;display:block}\
.banner.operational{background:var(--up)}.banner.degraded{background:var(--blocked)}.banner.down{background:var(--down)}\
.cause{margin:.3rem 0 0}\
.pill{display:inline-block;border-radius:999px;padding:.05rem .6rem;color:#fff;font-size:.85rem;font-weight:600;white-space:nowrap}\
.up{background:var(--up)}.down{background:var(--down)}.blocked{background:var(--blocked)}.unknown{background:var(--unknown)}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.45rem .4rem;border-bottom:1px solid var(--line);vertical-align:middle}\
th{font-size:.8rem;color:var(--muted);font-weight:600}\
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}\
.muted{color:var(--muted);font-size:.85rem}\
.bars{width:100%;max-width:360px;height:28px;display:block}\
.spark{width:120px;height:24px}\
.graph{width:100%;height:auto;background:var(--card);border-radius:8px}\
.card{background:var(--card);border-radius:8px;padding:.8rem 1rem;margin:.5rem 0}\
footer{margin:2rem 0 1rem;color:var(--muted);font-size:.8rem}\
@media (max-width:700px){.wide{display:none}td,th{padding:.4rem .25rem}}\
";

/// "14:02 UTC" for today, else "2026-12-01 14:02 UTC".
pub(crate) fn clock(t: SystemTime, now: SystemTime) -> String {
    let s = crate::alerts::rfc3339(t);
    let same_day = s[..10] == crate::alerts::rfc3339(now)[..10];
    if same_day {
        format!("{} UTC", &s[11..16])
    } else {
        format!("{} {} UTC", &s[..10], &s[11..16])
    }
}

/// "45 s", "12 min", "3 h 4 min", "2 d 5 h".
pub(crate) fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

fn since(t: Option<SystemTime>, now: SystemTime) -> String {
    match t {
        Some(t) => format!(
            "since {}, {}",
            clock(t, now),
            span(now.duration_since(t).unwrap_or_default())
        ),
        None => String::new(),
    }
}

fn percent(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 0.99995 => "100%".into(),
        Some(r) => format!("{:.2}%", (r * 100.0).min(99.99)),
        None => "–".into(),
    }
}

fn head(out: &mut String, title: &str, refresh: Option<Duration>) {
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">"
    );
    if let Some(r) = refresh {
        let _ = write!(
            out,
            "<meta http-equiv=\"refresh\" content=\"{}\">",
            r.as_secs().max(1)
        );
    }
    let _ = write!(
        out,
        "<title>{}</title><style>{CSS}</style></head><body><main>",
        esc(title)
    );
}

/// HTML-escapes `s` onto `out`.
fn esc_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `YYYY-MM-DD` of `t` (UTC) onto `out`.
fn push_date(out: &mut String, t: SystemTime) {
    let days = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), as in
    // `logging::timestamp`, without building the whole timestamp for each of 90 bars a row.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(out, "{year:04}-{month:02}-{day:02}");
}

/// The shapes every bar reuses (`<use>`), defined once a page in its first bars (ids are the
/// document's): a whole day up, and a day without data.
const BAR_DEFS: &str = "<defs><rect id=\"bar-up\" width=\"3\" height=\"28\" fill=\"var(--up)\"/><rect id=\"bar-none\" width=\"3\" height=\"28\" rx=\"1\" fill=\"var(--nodata)\"/></defs>";

/// The day bars of a row: 90 bars, the fill of each its day's up share, maintenance in its own
/// colour, and a tooltip with the day's incidents. Written straight into `out` (at 10,000 rows
/// this is 900,000 bars a page); a day all up and a day without data reuse a defined shape, so
/// the usual bar is about 57 bytes, not 97. `defs`: this is the page's first.
fn bars(out: &mut String, days: &[DayView], name: &str, defs: bool) {
    let n = super::DAYS;
    let _ = write!(
        out,
        "<svg class=\"bars\" viewBox=\"0 0 {w} 28\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{} : uptime of the last {n} days\">",
        esc(name),
        w = n * 4
    );
    if defs {
        out.push_str(BAR_DEFS);
    }
    let missing = n.saturating_sub(days.len());
    for i in 0..n {
        let x = i * 4;
        let Some(d) = i.checked_sub(missing).and_then(|k| days.get(k)) else {
            let _ = write!(
                out,
                "<use href=\"#bar-none\" x=\"{x}\"><title>no data</title></use>"
            );
            continue;
        };
        let m = (d.maintenance_ratio.clamp(0.0, 1.0) * 28.0).round() as u32;
        let whole = match d.up_ratio {
            None if m == 0 => Some("bar-none"),
            Some(r) if m == 0 && (r.clamp(0.0, 1.0) * 28.0).round() as u32 == 28 => Some("bar-up"),
            _ => None,
        };
        match whole {
            Some(id) => {
                let _ = write!(out, "<use href=\"#{id}\" x=\"{x}\"><title>");
            }
            None => out.push_str("<g><title>"),
        }
        push_date(out, d.start);
        match d.up_ratio {
            Some(r) => {
                out.push_str(": ");
                out.push_str(&percent(Some(r)));
                out.push_str(" up");
            }
            None => out.push_str(": no data"),
        }
        if d.maintenance_ratio > 0.0 {
            let _ = write!(out, ", {:.0}% maintenance", d.maintenance_ratio * 100.0);
        }
        for inc in &d.incidents {
            out.push('\n');
            esc_into(out, inc);
        }
        out.push_str("</title>");
        if whole.is_some() {
            out.push_str("</use>");
            continue;
        }
        // Heights in whole pixels.
        match d.up_ratio {
            None => {}
            Some(r) => {
                // Of the day's time outside maintenance: up from the bottom, down above it.
                let rest = 28 - m;
                let up = (r.clamp(0.0, 1.0) * f64::from(rest)).round() as u32;
                let down = rest - up;
                if down > 0 {
                    let _ = write!(
                        out,
                        "<rect x=\"{x}\" y=\"{m}\" width=\"3\" height=\"{down}\" fill=\"var(--down)\"/>"
                    );
                }
                if up > 0 {
                    let _ = write!(
                        out,
                        "<rect x=\"{x}\" y=\"{}\" width=\"3\" height=\"{up}\" fill=\"var(--up)\"/>",
                        m + down
                    );
                }
            }
        }
        if m > 0 {
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"0\" width=\"3\" height=\"{m}\" fill=\"var(--maint)\"/>"
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
}

/// A sparkline of response times.
fn sparkline(out: &mut String, values: &[f64], name: &str) {
    if values.len() < 2 {
        out.push_str("<span class=\"muted\">–</span>");
        return;
    }
    let max = values.iter().copied().fold(f64::MIN_POSITIVE, f64::max);
    let step = 120.0 / (values.len() - 1) as f64;
    let last = values.last().copied().unwrap_or_default();
    let _ = write!(
        out,
        "<svg class=\"spark\" viewBox=\"0 0 120 24\" role=\"img\" aria-label=\"{}: response time over 24 h, latest {:.0} ms\"><title>response time, last 24 h (max {:.0} ms)</title><polyline fill=\"none\" stroke=\"var(--maint)\" stroke-width=\"1.5\" points=\"",
        esc(name),
        last * 1000.0,
        max * 1000.0,
    );
    // Tenths of a pixel, written as integers ("12.3"): a row's points without float formatting.
    let tenths = |out: &mut String, v: f64| {
        let t = (v * 10.0).round().max(0.0) as u64;
        let _ = write!(out, "{}.{}", t / 10, t % 10);
    };
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        tenths(out, i as f64 * step);
        out.push(',');
        tenths(out, 22.0 - v / max * 20.0);
    }
    out.push_str("\"/></svg>");
}

/// The dependency graph: layers by depth (targets depending on nothing at the bottom), each
/// node in its state's colour, root causes ringed and labelled.
fn graph_svg(out: &mut String, nodes: &[(String, State, bool, Vec<String>)]) {
    if nodes.is_empty() {
        return;
    }
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.0.as_str(), i))
        .collect();
    // Depth: the longest chain of dependencies below a node (the config has no cycles).
    let mut depth = vec![None::<usize>; nodes.len()];
    fn depth_of(
        i: usize,
        nodes: &[(String, State, bool, Vec<String>)],
        index: &BTreeMap<&str, usize>,
        depth: &mut Vec<Option<usize>>,
        guard: usize,
    ) -> usize {
        if let Some(d) = depth[i] {
            return d;
        }
        let d = if guard > nodes.len() {
            0
        } else {
            nodes[i]
                .3
                .iter()
                .filter_map(|n| index.get(n.as_str()))
                .map(|&j| depth_of(j, nodes, index, depth, guard + 1) + 1)
                .max()
                .unwrap_or(0)
        };
        depth[i] = Some(d);
        d
    }
    for i in 0..nodes.len() {
        depth_of(i, nodes, &index, &mut depth, 0);
    }
    let depth: Vec<usize> = depth.into_iter().map(|d| d.unwrap_or(0)).collect();
    let layers = depth.iter().max().copied().unwrap_or(0) + 1;
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (i, d) in depth.iter().enumerate() {
        rows[*d].push(i);
    }
    let (w, h, gap_x, gap_y) = (150.0, 34.0, 18.0, 46.0);
    let widest = rows.iter().map(Vec::len).max().unwrap_or(1) as f64;
    let width = widest * (w + gap_x) + gap_x;
    let height = layers as f64 * (h + gap_y) + gap_y;
    let mut pos = vec![(0.0, 0.0); nodes.len()];
    for (d, row) in rows.iter().enumerate() {
        let y = height - (d as f64 + 1.0) * (h + gap_y);
        let offset = (width - row.len() as f64 * (w + gap_x) + gap_x) / 2.0;
        for (k, &i) in row.iter().enumerate() {
            pos[i] = (offset + k as f64 * (w + gap_x), y);
        }
    }
    let _ = write!(
        out,
        "<svg class=\"graph\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-labelledby=\"graph-title\"><title id=\"graph-title\">Dependency graph: each target above what it depends on; root causes ringed</title>"
    );
    for (i, n) in nodes.iter().enumerate() {
        for dep in &n.3 {
            if let Some(&j) = index.get(dep.as_str()) {
                let (x1, y1) = (pos[i].0 + w / 2.0, pos[i].1 + h);
                let (x2, y2) = (pos[j].0 + w / 2.0, pos[j].1);
                let _ = write!(
                    out,
                    "<line x1=\"{x1:.0}\" y1=\"{y1:.0}\" x2=\"{x2:.0}\" y2=\"{y2:.0}\" stroke=\"var(--muted)\" stroke-width=\"1.5\"/>"
                );
            }
        }
    }
    for (i, (name, state, root, _)) in nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let label: String = if name.chars().count() > 18 {
            name.chars().take(17).chain(std::iter::once('…')).collect()
        } else {
            name.clone()
        };
        let _ = write!(
            out,
            "<g class=\"node\"><title>{}: {}{}</title>",
            esc(name),
            state.as_str(),
            if *root { " (root cause)" } else { "" }
        );
        if *root {
            let _ = write!(
                out,
                "<rect x=\"{:.0}\" y=\"{:.0}\" width=\"{:.0}\" height=\"{:.0}\" rx=\"9\" fill=\"none\" stroke=\"var(--down)\" stroke-width=\"3\" stroke-dasharray=\"5 3\"/>",
                x - 4.0,
                y - 4.0,
                w + 8.0,
                h + 8.0
            );
        }
        let _ = write!(
            out,
            "<rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{w:.0}\" height=\"{h:.0}\" rx=\"6\" fill=\"{}\"/><text x=\"{:.0}\" y=\"{:.0}\" fill=\"#fff\" font-size=\"13\" text-anchor=\"middle\">{}</text><text x=\"{:.0}\" y=\"{:.0}\" fill=\"#fff\" font-size=\"10\" text-anchor=\"middle\">{}{}</text></g>",
            colour(*state),
            x + w / 2.0,
            y + 15.0,
            esc(&label),
            x + w / 2.0,
            y + 28.0,
            state.as_str(),
            if *root { " · root cause" } else { "" }
        );
    }
    out.push_str("</svg>");
}

/// "99.9% over 30 d".
fn objective(s: &SloView) -> String {
    let p = format!("{:.3}", s.objective * 100.0);
    let p = p.trim_end_matches('0').trim_end_matches('.');
    format!("{p}% over {}", span(s.window).trim_end_matches(" 0 h"))
}

/// The share of the error budget left, "62%" (below 0: overspent).
fn budget(b: f64) -> String {
    if b < 0.0 {
        format!("overspent ({:.0}%)", b * 100.0)
    } else {
        format!("{:.0}% left", (b * 100.0).min(100.0))
    }
}

/// The error budget cell of a row.
fn slo_cell(out: &mut String, s: Option<&SloView>) {
    out.push_str("<td class=\"num wide\">");
    match s {
        None => out.push('–'),
        Some(s) => match s.status {
            Some(st) => {
                let _ = write!(
                    out,
                    "{}<div class=\"muted\">burn {:.1}× · {}</div>",
                    budget(st.budget_remaining),
                    st.burn_rate,
                    esc(&objective(s))
                );
            }
            None => {
                let _ = write!(out, "–<div class=\"muted\">{}</div>", esc(&objective(s)));
            }
        },
    }
    out.push_str("</td>");
}

fn pill(state: State) -> String {
    format!("<span class=\"pill {0}\">{0}</span>", state.as_str())
}

fn row_html(out: &mut String, r: &Row, m: &Model, base: &str, slo_column: bool, first: bool) {
    let name = if m.page.public {
        esc(&r.name)
    } else {
        format!(
            "<a href=\"{base}/target/{}\">{}</a>",
            seg(&r.name),
            esc(&r.name)
        )
    };
    let _ = write!(out, "<tr><td>{name}");
    if let Some(a) = &r.address {
        let _ = write!(out, "<div class=\"muted\">{}</div>", esc(a));
    }
    let _ = write!(out, "</td><td>{}", pill(r.state));
    if matches!(r.state, State::Blocked) && !r.root_causes.is_empty() {
        let _ = write!(
            out,
            "<div class=\"muted\">by {}</div>",
            esc(&r.root_causes.join(", "))
        );
    }
    let _ = write!(
        out,
        "<div class=\"muted\">{}</div></td>",
        esc(&since(r.since, m.now))
    );
    for u in &r.uptime {
        let _ = write!(out, "<td class=\"num wide\">{}</td>", percent(*u));
    }
    out.push_str("<td>");
    bars(out, &r.days, &r.name, first);
    out.push_str("</td><td class=\"wide\">");
    sparkline(out, &r.latency, &r.name);
    out.push_str("</td><td class=\"num wide\">");
    match r.cert_days {
        Some(d) if d < 0.0 => out.push_str("<strong>expired</strong>"),
        Some(d) => {
            let _ = write!(out, "{:.0} d", d.floor());
        }
        None => out.push('–'),
    }
    out.push_str("</td>");
    if slo_column {
        slo_cell(out, r.slo.as_ref());
    }
    out.push_str("</tr>");
    if let Some(reason) = &r.reason
        && r.state != State::Up
    {
        let _ = write!(
            out,
            "<tr><td></td><td colspan=\"{}\" class=\"muted\">{}</td></tr>",
            8 + usize::from(slo_column),
            esc(reason)
        );
    }
}

/// The page; `base` is the status pages' path (`/status`, under any route prefix).
pub fn page_html(m: &Model, base: &str) -> String {
    let mut out = String::with_capacity(
        16 * 1024 + m.groups.iter().map(|g| g.rows.len()).sum::<usize>() * 3000,
    );
    head(&mut out, &m.page.title, m.refresh);
    let _ = write!(out, "<h1>{}</h1>", esc(&m.page.title));
    let verdict = match m.overall {
        Overall::Operational => "All systems operational",
        Overall::Degraded => "Degraded",
        Overall::Down => "Down",
    };
    let _ = write!(
        out,
        "<section class=\"banner {}\" role=\"status\" aria-live=\"polite\"><strong>{verdict}</strong>",
        m.overall.as_str()
    );
    for c in &m.causes {
        let affected = match c.affected.len() {
            0 => String::new(),
            n if n <= AFFECTED_NAMED => format!("{} affected — ", c.affected.join(", ")),
            n => format!(
                "{} and {} more affected — ",
                c.affected[..AFFECTED_NAMED].join(", "),
                n - AFFECTED_NAMED
            ),
        };
        let _ = write!(
            out,
            "<p class=\"cause\">{}cause: {} down {}</p>",
            esc(&affected),
            esc(&c.name),
            esc(&since(c.since, m.now))
        );
    }
    let here = if m.page.name.is_empty() {
        base.to_owned()
    } else {
        format!("{base}/{}", seg(&m.page.name))
    };
    let whole = m
        .summaries
        .iter()
        .map(super::GroupSummary::total)
        .sum::<usize>();
    // Down or blocked among the rows the filter covers (the page's, or the group's).
    let failing = match &m.slice.group {
        None => m.failing,
        Some(g) => m
            .summaries
            .iter()
            .find(|s| &s.name == g)
            .map_or(0, |s| s.counts[1] + s.counts[2]),
    };
    if failing > 0 && !m.slice.failing && m.shown.2 > m.shown.1 - m.shown.0 {
        let _ = write!(
            out,
            "<p class=\"cause\"><a href=\"{}\">Show the {failing} failing target{}</a></p>",
            esc(&query(&here, m.slice.group.as_deref(), true, 0)),
            if failing == 1 { "" } else { "s" }
        );
    }
    out.push_str("</section>");
    let sliced = m.pages > 1 || m.slice.group.is_some() || m.slice.failing;
    if sliced {
        pager(&mut out, m, &here, whole);
        if m.summaries.len() > 1 {
            groups_table(&mut out, m, &here);
        }
    }
    let slo_column = m
        .groups
        .iter()
        .any(|g| g.rows.iter().any(|r| r.slo.is_some()));
    let mut first = true;
    for g in &m.groups {
        if !g.name.is_empty() {
            let _ = write!(out, "<h2>{}", esc(&g.name));
            if sliced && let Some(s) = m.summaries.iter().find(|s| s.name == g.name) {
                let _ = write!(out, " <span class=\"muted\">{}</span>", esc(&counts(s)));
            }
            out.push_str("</h2>");
        }
        out.push_str("<table><thead><tr><th scope=\"col\">Target</th><th scope=\"col\">State</th>");
        for (w, _) in WINDOWS {
            let _ = write!(out, "<th scope=\"col\" class=\"wide\">{w}</th>");
        }
        out.push_str("<th scope=\"col\">Last 90 days</th><th scope=\"col\" class=\"wide\">Response</th><th scope=\"col\" class=\"wide\">Certificate</th>");
        if slo_column {
            out.push_str("<th scope=\"col\" class=\"wide\">Error budget</th>");
        }
        out.push_str("</tr></thead><tbody>");
        for r in &g.rows {
            row_html(&mut out, r, m, base, slo_column, first);
            first = false;
        }
        out.push_str("</tbody></table>");
    }
    if sliced && m.pages > 1 {
        pager(&mut out, m, &here, whole);
    }
    if m.graph.iter().any(|n| !n.3.is_empty()) || m.graph_note.is_some() {
        out.push_str("<h2>Dependencies</h2>");
        if let Some(note) = &m.graph_note {
            let _ = write!(out, "<p class=\"muted\">{}</p>", esc(note));
        }
        graph_svg(&mut out, &m.graph);
    }
    let _ = writeln!(
        out,
        "<footer>Updated {} · <a href=\"{}\">JSON</a> · lookout {}</footer></main></body></html>",
        clock(m.now, m.now),
        if m.page.name.is_empty() {
            format!("{}/api/v1/status", base.trim_end_matches("/status"))
        } else {
            format!(
                "{}/api/v1/status?page={}",
                base.trim_end_matches("/status"),
                seg(&m.page.name)
            )
        },
        env!("CARGO_PKG_VERSION")
    );
    out
}

/// How many of a root cause's blocked targets the banner names.
const AFFECTED_NAMED: usize = 10;

/// The page at `here` with a group, the failing filter and a page index (0-based).
fn query(here: &str, group: Option<&str>, failing: bool, index: usize) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if let Some(g) = group {
        q.append_pair("group", g);
    }
    if failing {
        q.append_pair("state", "failing");
    }
    if index > 0 {
        q.append_pair("p", &(index + 1).to_string());
    }
    let q = q.finish();
    if q.is_empty() {
        here.to_owned()
    } else {
        format!("{here}?{q}")
    }
}

/// "500 targets: 480 up, 12 down, 8 blocked".
fn counts(s: &super::GroupSummary) -> String {
    let mut out = format!(
        "{} target{}",
        s.total(),
        if s.total() == 1 { "" } else { "s" }
    );
    let parts: Vec<String> = [State::Up, State::Down, State::Blocked, State::Unknown]
        .iter()
        .zip(s.counts)
        .filter(|(_, n)| *n > 0)
        .map(|(st, n)| format!("{n} {}", st.as_str()))
        .collect();
    if !parts.is_empty() {
        out.push_str(": ");
        out.push_str(&parts.join(", "));
    }
    out
}

/// "Rows 101–200 of 10000 · failing only · ‹ Previous · Page 2 of 100 · Next › · All targets".
fn pager(out: &mut String, m: &Model, here: &str, whole: usize) {
    let (first, last, total) = m.shown;
    let group = m.slice.group.as_deref();
    out.push_str("<nav class=\"card\" aria-label=\"Pages of rows\">");
    if total == 0 {
        out.push_str("No targets match");
    } else {
        let _ = write!(out, "Rows {}–{last} of {total}", first + 1);
    }
    if let Some(g) = group {
        let _ = write!(
            out,
            " in {}",
            esc(if g.is_empty() { "(no group)" } else { g })
        );
    }
    if m.slice.failing {
        out.push_str(", down or blocked");
    }
    if m.slice.index > 0 {
        let _ = write!(
            out,
            " · <a href=\"{}\" rel=\"prev\">‹ Previous</a>",
            esc(&query(here, group, m.slice.failing, m.slice.index - 1))
        );
    }
    if m.pages > 1 {
        let _ = write!(out, " · page {} of {}", m.slice.index + 1, m.pages);
    }
    if m.slice.index + 1 < m.pages {
        let _ = write!(
            out,
            " · <a href=\"{}\" rel=\"next\">Next ›</a>",
            esc(&query(here, group, m.slice.failing, m.slice.index + 1))
        );
    }
    if group.is_some() || m.slice.failing {
        let _ = write!(out, " · <a href=\"{}\">All {whole} targets</a>", esc(here));
    }
    out.push_str("</nav>");
}

/// The groups with their counts, each linking to its rows.
fn groups_table(out: &mut String, m: &Model, here: &str) {
    out.push_str("<h2>Groups</h2><table><thead><tr><th scope=\"col\">Group</th><th scope=\"col\">Targets</th></tr></thead><tbody>");
    for s in &m.summaries {
        let worst = if s.counts[1] > 0 {
            State::Down
        } else if s.counts[2] > 0 {
            State::Blocked
        } else if s.counts[0] > 0 {
            State::Up
        } else {
            State::Unknown
        };
        let _ = write!(
            out,
            "<tr><td><a href=\"{}\">{}</a></td><td>{} <span class=\"muted\">{}</span></td></tr>",
            esc(&query(here, Some(&s.name), false, 0)),
            esc(if s.name.is_empty() {
                "(no group)"
            } else {
                &s.name
            }),
            pill(worst),
            esc(&counts(s))
        );
    }
    out.push_str("</tbody></table>");
}

/// A latency chart (p50, p95, max) over time.
fn latency_chart(out: &mut String, points: &[super::LatencyPoint]) {
    if points.len() < 2 {
        out.push_str("<p class=\"muted\">No latency history yet.</p>");
        return;
    }
    let max = points
        .iter()
        .map(|p| p.max)
        .fold(f64::MIN_POSITIVE, f64::max);
    let (w, h) = (600.0, 160.0);
    let step = w / (points.len() - 1) as f64;
    let line = |f: &dyn Fn(&super::LatencyPoint) -> f64| -> String {
        points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "{:.1},{:.1}",
                    i as f64 * step,
                    h - 4.0 - f(p) / max * (h - 10.0)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = write!(
        out,
        "<svg class=\"graph\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"response time percentiles over 24 hours, up to {:.0} ms\"><title>p50 (solid), p95 (dashed), max (dotted); top: {:.0} ms</title>\
         <polyline fill=\"none\" stroke=\"var(--maint)\" stroke-width=\"2\" points=\"{}\"/>\
         <polyline fill=\"none\" stroke=\"var(--blocked)\" stroke-width=\"1.5\" stroke-dasharray=\"6 3\" points=\"{}\"/>\
         <polyline fill=\"none\" stroke=\"var(--muted)\" stroke-width=\"1\" stroke-dasharray=\"2 3\" points=\"{}\"/></svg>\
         <p class=\"muted\">p50 solid, p95 dashed, max dotted; top of the chart {:.0} ms.</p>",
        max * 1000.0,
        max * 1000.0,
        line(&|p| p.p50),
        line(&|p| p.p95),
        line(&|p| p.max),
        max * 1000.0
    );
}

/// The page of one target: its state, why, its latency, incidents, last probe's phases and its
/// place in the graph.
pub fn target_html(
    base: &str,
    v: &TargetView,
    all: &[TargetView],
    history: &dyn HistorySource,
    refresh: Option<Duration>,
    now: SystemTime,
) -> String {
    let t = &v.target;
    let mut out = String::with_capacity(32 * 1024);
    head(&mut out, &t.name, refresh);
    let _ = write!(
        out,
        "<p><a href=\"{base}\">← all targets</a></p><h1>{} {}</h1><p class=\"muted\">{} · module {} · every {} {}</p>",
        esc(&t.name),
        pill(v.health.state),
        esc(&t.target),
        esc(&t.module_name),
        span(t.interval),
        esc(&since(v.health.since, now))
    );
    if !v.health.root_causes.is_empty() && v.health.state == State::Blocked {
        let _ = write!(
            out,
            "<div class=\"card\">Blocked by {}</div>",
            v.health
                .root_causes
                .iter()
                .map(|r| format!("<a href=\"{base}/target/{0}\">{1}</a>", seg(r), esc(r)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(f) = &v.health.last_failure {
        let _ = write!(
            out,
            "<div class=\"card\"><strong>Last failure</strong> ({}): {}</div>",
            esc(f.kind.as_str()),
            esc(&f.message)
        );
    }
    if let Some(s) = SloView::of(v) {
        let _ = write!(
            out,
            "<div class=\"card\"><strong>Objective</strong> {}: ",
            esc(&objective(&s))
        );
        match s.status {
            Some(st) => {
                let _ = write!(
                    out,
                    "error budget {}, burning at {:.2}× over the last hour.",
                    budget(st.budget_remaining),
                    st.burn_rate
                );
            }
            None => out.push_str("error budget not computed yet (after the first closed minute)."),
        }
        out.push_str("</div>");
    }
    out.push_str("<h2>Uptime</h2><table><tr>");
    for (w, d) in WINDOWS {
        let _ = write!(out, "<th scope=\"col\">{w}</th>");
        let _ = d;
    }
    out.push_str("</tr><tr>");
    for (_, d) in WINDOWS {
        let _ = write!(
            out,
            "<td class=\"num\">{}</td>",
            percent(history.uptime(&t.name, d))
        );
    }
    out.push_str("</tr></table>");
    bars(&mut out, &history.days(&t.name, super::DAYS), &t.name, true);
    out.push_str("<h2>Response time, last 24 hours</h2>");
    latency_chart(
        &mut out,
        &history.latency(&t.name, Duration::from_secs(86_400), 96),
    );
    out.push_str("<h2>Last probe</h2>");
    match &v.last {
        None => out.push_str("<p class=\"muted\">Not probed yet.</p>"),
        Some(r) => {
            let _ = write!(
                out,
                "<p>{} at {}, took {:.1} ms.</p>",
                if r.success() { "Succeeded" } else { "Failed" },
                clock(r.finished, now),
                r.duration.as_secs_f64() * 1000.0
            );
            let phases: Vec<(String, f64)> = r
                .report
                .samples()
                .iter()
                .filter(|s| s.family.name.ends_with("_duration_seconds"))
                .filter_map(|s| {
                    s.labels
                        .iter()
                        .find(|(k, _)| k == "phase")
                        .map(|(_, p)| (p.clone(), s.value))
                })
                .collect();
            if !phases.is_empty() {
                out.push_str("<table><thead><tr><th scope=\"col\">Phase</th><th scope=\"col\">Duration</th></tr></thead><tbody>");
                for (p, d) in phases {
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td class=\"num\">{:.2} ms</td></tr>",
                        esc(&p),
                        d * 1000.0
                    );
                }
                out.push_str("</tbody></table>");
            }
        }
    }
    out.push_str("<h2>Incidents</h2>");
    let incidents = history.incidents(&t.name, 50);
    if incidents.is_empty() {
        out.push_str("<p class=\"muted\">None recorded.</p>");
    } else {
        out.push_str("<table><thead><tr><th scope=\"col\">Began</th><th scope=\"col\">Lasted</th><th scope=\"col\">Why</th><th scope=\"col\">Root cause</th></tr></thead><tbody>");
        for i in incidents {
            let lasted = match i.end {
                Some(e) => span(e.duration_since(i.start).unwrap_or_default()),
                None => format!(
                    "ongoing, {}",
                    span(now.duration_since(i.start).unwrap_or_default())
                ),
            };
            let _ = write!(
                out,
                "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}: {}</td><td>{}</td></tr>",
                clock(i.start, now),
                lasted,
                esc(&i.kind),
                esc(&i.reason),
                esc(&i.root_causes.join(", "))
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("<h2>Dependencies</h2>");
    let dependents: Vec<&str> = all
        .iter()
        .filter(|o| o.target.depends_on.contains(&t.name))
        .map(|o| o.target.name.as_str())
        .collect();
    let list = |names: &[&str]| -> String {
        if names.is_empty() {
            "none".into()
        } else {
            names
                .iter()
                .map(|n| format!("<a href=\"{base}/target/{}\">{}</a>", seg(n), esc(n)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let deps: Vec<&str> = t.depends_on.iter().map(String::as_str).collect();
    let _ = write!(
        out,
        "<p>Depends on: {}</p><p>Needed by: {}</p>",
        list(&deps),
        list(&dependents)
    );
    let _ = writeln!(
        out,
        "<footer>Updated {} · lookout {}</footer></main></body></html>",
        clock(now, now),
        env!("CARGO_PKG_VERSION")
    );
    out
}

/// A flat SVG badge: `label | message`, the message on `colour`.
pub fn badge(label: &str, message: &str, colour: &str) -> String {
    // Approximate text widths (Verdana 11px averages ~6.5 px a character).
    let lw = 10.0 + label.chars().count() as f64 * 6.5;
    let mw = 10.0 + message.chars().count() as f64 * 6.5;
    let w = lw + mw;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"20\" role=\"img\" aria-label=\"{l}: {m}\"><title>{l}: {m}</title>\
         <rect width=\"{lw:.0}\" height=\"20\" fill=\"#555\"/><rect x=\"{lw:.0}\" width=\"{mw:.0}\" height=\"20\" fill=\"{colour}\"/>\
         <g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\">\
         <text x=\"{:.0}\" y=\"14\">{l}</text><text x=\"{:.0}\" y=\"14\">{m}</text></g></svg>",
        lw / 2.0,
        lw + mw / 2.0,
        l = esc(label),
        m = esc(message),
    )
}

/// The fixed colour of a state for badges (no CSS variables outside the page).
pub fn badge_colour(state: State) -> &'static str {
    match state {
        State::Up => "#1a7f37",
        State::Down => "#cf222e",
        State::Blocked => "#9a3412",
        State::Unknown => "#59636e",
    }
}
