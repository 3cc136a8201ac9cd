//! `/metrics`, `/-/healthy`, `/-/reload`, `/config`, `/logs` and the `/` page.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::State as AppState;
use super::recent::{Entry, TargetFailures};
use crate::metrics::{self, Format};

/// Confirmation probes a replica runs for its peers at once, at most: each is a whole probe,
/// asked for by a peer's failure, so a burst of failures cannot make it probe without bound.
const CONFIRMATIONS_IN_FLIGHT: usize = 64;
static CONFIRMATIONS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(CONFIRMATIONS_IN_FLIGHT);

/// `GET /api/v1/confirm?target=NAME`: a peer replica (`--shard.peers`) saw scheduled target
/// NAME fail and asks this one to probe it now (`replicas_per_target`). Any target of the
/// config or of discovery, in this replica's share or not; never an address of the request's
/// own. Answers `{"target", "success", "reason", "duration_seconds"}`; 404 for a name no source
/// has, 429 past `CONFIRMATIONS_IN_FLIGHT`.
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(name) = q.get("target") else {
        return (StatusCode::BAD_REQUEST, "target parameter is missing\n").into_response();
    };
    let Some(target) = state.sources.any_target(name) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no scheduled target named {name:?}\n"),
        )
            .into_response();
    };
    let Ok(_slot) = CONFIRMATIONS.try_acquire() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many confirmation probes in flight\n",
        )
            .into_response();
    };
    let started = std::time::SystemTime::now();
    let deadline = tokio::time::Instant::now() + target.timeout;
    let outcome = crate::schedule::probe_target(&target, deadline, state.resolver.clone()).await;
    let body = serde_json::json!({
        "target": target.name,
        "success": outcome.success(),
        "reason": outcome.failure.as_ref().map(|f| f.reason().as_str()),
        "duration_seconds": outcome.duration.as_secs_f64(),
    });
    // Counted and kept with the /probe results: this replica did probe it.
    state.results.publish(crate::results::ProbeResult::new(
        outcome,
        target.module.clone(),
        target.target.clone(),
        started,
    ));
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /metrics`: lookout's own metrics and every scheduled target's latest result.
///
/// The text format is streamed: a blocking thread (so a scrape never delays the workers that run
/// probes and the scheduler, and never waits for a running probe) encodes it in pieces of
/// `METRICS_CHUNK` bytes into a channel of `METRICS_CHUNKS_IN_FLIGHT`, and the answer is sent as
/// they come, so at 100k targets (~95 MiB of text) no more than about 1 MiB of it is held at once.
/// OpenMetrics (prometheus-client's encoder) is built whole.
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
        state.openmetrics,
    );
    let content_type = [(header::CONTENT_TYPE, format.content_type())];
    if format == Format::Text {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(METRICS_CHUNKS_IN_FLIGHT);
        tokio::task::spawn_blocking(move || {
            let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_parts(&state, |parts| {
                    metrics::encode_text_chunked(parts, METRICS_CHUNK, |piece| {
                        // An error means the client went away: stop encoding.
                        tx.blocking_send(Ok(Bytes::from(piece))).is_ok()
                    })
                })
            }));
            if encoded.is_err() {
                // Ends the answer with an error, so hyper breaks the connection rather than
                // finishing a truncated body as if it were whole.
                let _ = tx.blocking_send(Err(std::io::Error::other("encoding metrics failed")));
            }
        });
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|piece| (piece, rx))
        });
        return (content_type, Body::from_stream(body)).into_response();
    }
    let body = tokio::task::spawn_blocking(move || {
        with_parts(&state, |parts| metrics::encode(format, parts))
    })
    .await;
    match body {
        Ok(body) => (content_type, body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Size of one piece of a streamed `/metrics` answer, and how many may wait to be sent.
const METRICS_CHUNK: usize = 256 * 1024;
const METRICS_CHUNKS_IN_FLIGHT: usize = 4;

/// Calls `f` with everything `/metrics` shows: lookout's own metrics, the scheduler's, and each
/// target's latest result and counters, labelled with its target, instance, module and user
/// labels; built from stored results.
fn with_parts<T>(
    state: &AppState,
    f: impl FnOnce(&[(&[(String, String)], &crate::probe::report::Report)]) -> T,
) -> T {
    let own = state.metrics.snapshot(state.limiter.in_flight());
    let bus = state.results.metrics();
    let alerts = state.alerts.metrics();
    let scheduler = state.scheduler.self_metrics();
    let sources = state.sources.metrics();
    let kubernetes = state.kubernetes.metrics();
    let probe_cache = state.probe_cache.metrics();
    let states = state.scheduler.states();
    let targets: Vec<_> = states
        .iter()
        .map(|s| (s.target(), s.last(), s.counters()))
        .collect();
    let mut parts: Vec<(&[(String, String)], &crate::probe::report::Report)> =
        Vec::with_capacity(7 + 2 * targets.len());
    parts.push((&[], &own));
    parts.push((&[], &bus));
    parts.push((&[], &alerts));
    parts.push((&[], &scheduler));
    parts.push((&[], &sources));
    parts.push((&[], &kubernetes));
    parts.push((&[], &probe_cache));
    for (target, last, counters) in &targets {
        if let Some(last) = last {
            parts.push((&target.labels, &last.report));
        }
        parts.push((&target.labels, counters));
    }
    f(&parts)
}

/// `GET /api/v1/targets`: every scheduled target's state, since when, its root causes, its
/// latest failure, and its place in the dependency graph, as JSON.
pub async fn api_targets(State(state): State<Arc<AppState>>) -> Response {
    let states = state.scheduler.states();
    let targets: Vec<Arc<crate::config::Target>> = states.iter().map(|s| s.target()).collect();
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for t in &targets {
        for d in &t.depends_on {
            dependents
                .entry(d.as_str())
                .or_default()
                .push(t.name.as_str());
        }
    }
    let list: Vec<serde_json::Value> = states
        .iter()
        .zip(&targets)
        .map(|(s, t)| {
            let h = s.health();
            let last = s.last();
            serde_json::json!({
                "name": t.name,
                "target": t.target,
                "module": t.module_name,
                "labels": t.labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "state": h.state.as_str(),
                "since": h.since.map(crate::alerts::rfc3339),
                "root_causes": h.root_causes,
                "last_failure": h.last_failure.as_ref().map(|f| serde_json::json!({
                    "kind": f.kind.as_str(),
                    "reason": f.message,
                })),
                "last_probe": last.as_ref().map(|r| serde_json::json!({
                    "finished": crate::alerts::rfc3339(r.finished),
                    "success": r.success(),
                    "duration_seconds": r.duration.as_secs_f64(),
                })),
                "state_changes": h.changes,
                "dependencies": t.depends_on,
                "dependents": dependents.get(t.name.as_str()).cloned().unwrap_or_default(),
            })
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "targets": list }).to_string(),
    )
        .into_response()
}

/// `GET /-/healthy`.
pub async fn healthy(State(state): State<Arc<AppState>>) -> Response {
    match state.sources.shard() {
        // Sharded, it says its --shard.count, so peers agree on one count while a change of
        // it rolls out (`peers.rs`).
        Some(shard) => (
            [(crate::peers::COUNT_HEADER, shard.count.to_string())],
            "Healthy",
        )
            .into_response(),
        None => "Healthy".into_response(),
    }
}

/// `POST /-/reload`.
pub async fn reload(State(state): State<Arc<AppState>>) -> Response {
    match crate::reload::reload(&state) {
        Ok(()) => (StatusCode::OK, "OK\n").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}

/// `GET /-/reload`: blackbox answers 405 with this text.
pub async fn reload_needs_post() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        "This endpoint requires a POST request.\n",
    )
        .into_response()
}

/// `GET /config`: the loaded config, secrets shown as `<secret>`.
pub async fn config(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        state.config.load().to_yaml(),
    )
        .into_response()
}

/// Go's `http.Error`: the message as plain text.
fn go_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{message}\n"),
    )
        .into_response()
}

/// `GET /logs?id=N` or `/logs?target=T[&module=M]` (blackbox 0.25): one recent probe's debug
/// text, by id or the newest of a target (a `/probe` target or a scheduled target's address or
/// name), with blackbox's answers to a bad request.
pub async fn logs(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let id = q.get("id").and_then(|i| i.parse::<u64>().ok());
    let target = q
        .get("target")
        .map(String::as_str)
        .filter(|t| !t.is_empty());
    let module = q
        .get("module")
        .map(String::as_str)
        .filter(|m| !m.is_empty());
    let failures = q
        .get("failures")
        .is_some_and(|f| matches!(f.as_str(), "true" | "1"));
    if failures {
        let Some(t) = target else {
            return go_error(
                StatusCode::BAD_REQUEST,
                "Probe failures filter only works in conjunction with target parameter",
            );
        };
        return failures_of(&state, t, module);
    }
    let entry = match (id, target) {
        (Some(_), Some(_)) => {
            return go_error(
                StatusCode::BAD_REQUEST,
                "Probe id and target can't be defined at the same time",
            );
        }
        (None, None) => {
            return go_error(
                StatusCode::BAD_REQUEST,
                "Probe id or target must be defined as http query parameters",
            );
        }
        (Some(_), None) if module.is_some() => {
            return go_error(
                StatusCode::BAD_REQUEST,
                "Probe module filter only works in conjunction with target parameter",
            );
        }
        (Some(id), None) => match state.recent.get(id) {
            Some(e) => e,
            None => return go_error(StatusCode::NOT_FOUND, "Probe id not found"),
        },
        (None, Some(t)) => match state.recent.newest_of(t, module) {
            Some(e) => e,
            None => return go_error(StatusCode::NOT_FOUND, "Probe target not found"),
        },
    };
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        super::probe::debug_output(&entry.result),
    )
        .into_response()
}

/// `GET /logs?target=T[&module=M]&failures=true` (lookout): every kept failure of a target,
/// newest first, each with its time and debug text.
fn failures_of(state: &AppState, target: &str, module: Option<&str>) -> Response {
    let entries = state.recent.failures_of(target, module);
    if entries.is_empty() {
        return go_error(StatusCode::NOT_FOUND, "Probe target has no kept failures");
    }
    let mut out = String::new();
    for e in &entries {
        let r = &e.result;
        let (kind, message) = r
            .failure
            .as_ref()
            .map_or(("", ""), |f| (f.kind.as_str(), f.message.as_str()));
        let _ = writeln!(
            out,
            "=== Failure at {} (id {}): module {}, target {}: {kind}: {message}",
            crate::alerts::rfc3339(r.finished),
            e.id,
            r.module.name,
            r.target()
        );
        out.push_str(&super::probe::debug_output(r));
        out.push('\n');
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /`: recent probes with links to their debug output.
pub async fn index(State(state): State<Arc<AppState>>) -> Html<String> {
    let p = &state.prefix;
    let mut page = String::with_capacity(4096);
    let _ = write!(
        page,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>lookout</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em}}.ok{{color:#070}}.fail{{color:#b00}}</style></head><body>\
         <h1>lookout</h1><p>A blackbox_exporter-compatible prober, version {}.</p>\
         <form action=\"{p}/probe\">Target <input name=\"target\" size=\"40\"> Module <input name=\"module\" value=\"http_2xx\"> \
         <input type=\"hidden\" name=\"debug\" value=\"true\"><button>Probe with debug output</button></form>\
         <p><a href=\"{p}/metrics\">Metrics</a> · <a href=\"{p}/config\">Configuration</a></p>\
         <h2>Recent probes</h2>",
        env!("CARGO_PKG_VERSION")
    );
    recent_table(&mut page, p, &state.recent.probes(), false);
    page.push_str("<h2>Recent scheduled probes</h2>");
    recent_table(&mut page, p, &state.recent.scheduled(), true);
    page.push_str("<h2>Recent failures by target</h2>");
    failures_table(&mut page, p, &state.recent.probe_failures(), "/probe");
    failures_table(
        &mut page,
        p,
        &state.recent.scheduled_failures(),
        "scheduled",
    );
    page.push_str("</body></html>\n");
    Html(page)
}

/// One table of recent probes: module, target, result (with the failure reason), when, and a
/// link to the debug text; scheduled probes also show the target's name.
fn recent_table(page: &mut String, prefix: &str, entries: &[Entry], scheduled: bool) {
    if entries.is_empty() {
        page.push_str("<p>None yet.</p>");
        return;
    }
    page.push_str("<table><tr>");
    if scheduled {
        page.push_str("<th>Name</th>");
    }
    page.push_str(
        "<th>Module</th><th>Target</th><th>Result</th><th>Finished</th><th>Debug</th></tr>",
    );
    for e in entries {
        let r = &e.result;
        page.push_str("<tr>");
        if let Some(t) = &r.scheduled {
            let _ = write!(page, "<td>{}</td>", escape(&t.name));
        }
        let (class, text) = match &r.failure {
            None => ("ok", "Success".to_owned()),
            Some(f) => (
                "fail",
                format!("Failure ({}: {})", f.kind.as_str(), f.message),
            ),
        };
        let finished = httpdate::fmt_http_date(r.finished);
        let _ = write!(
            page,
            "<td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{finished}</td><td><a href=\"{prefix}/logs?id={}\">Logs</a></td></tr>",
            escape(&r.module.name),
            escape(r.target()),
            escape(&text),
            e.id
        );
    }
    page.push_str("</table>");
}

/// Targets with kept failures: how many they had, the newest with its time and reason, and a
/// link to all kept ones.
fn failures_table(page: &mut String, prefix: &str, targets: &[TargetFailures], what: &str) {
    let _ = write!(page, "<h3>{what}</h3>");
    if targets.is_empty() {
        page.push_str("<p>No failures.</p>");
        return;
    }
    page.push_str(
        "<table><tr><th>Target</th><th>Module</th><th>Failures</th><th>Last failure</th><th>Reason</th><th>Kept</th></tr>",
    );
    for f in targets {
        let Some(newest) = f.newest() else { continue };
        let r = &newest.result;
        let name = r.scheduled.as_ref().map_or(r.target(), |t| t.name.as_str());
        let reason = r
            .failure
            .as_ref()
            .map(|f| format!("{}: {}", f.kind.as_str(), f.message))
            .unwrap_or_default();
        let link = format!(
            "{prefix}/logs?target={}&amp;module={}&amp;failures=true",
            query_escape(name),
            query_escape(&r.module.name)
        );
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"fail\">{}</td><td><a href=\"{link}\">{} kept</a></td></tr>",
            escape(name),
            escape(&r.module.name),
            f.total,
            crate::alerts::rfc3339(r.finished),
            escape(&reason),
            f.newest_first().count()
        );
    }
    page.push_str("</table>");
}

fn query_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
