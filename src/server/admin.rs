//! `/metrics`, `/-/healthy`, `/-/reload`, `/config`, `/logs` and the `/` page.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::State as AppState;
use crate::metrics::{self, Format};

/// `GET /metrics`: lookout's own metrics and every scheduled target's latest result.
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    // Encoding 100k targets takes a while: keep it off the workers that run probes and the
    // scheduler, so a scrape never delays them (and never waits for a running probe).
    let body = tokio::task::spawn_blocking(move || encode_all(&state, format)).await;
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

fn encode_all(state: &AppState, format: Format) -> String {
    let own = state.metrics.snapshot();
    let scheduler = state.scheduler.self_metrics();
    let states = state.scheduler.states();
    // Each target's latest result and counters, labelled with its target, instance, module
    // and user labels; built from stored results.
    let targets: Vec<_> = states
        .iter()
        .map(|s| (s.target(), s.last(), s.counters()))
        .collect();
    let mut parts: Vec<(&[(String, String)], &crate::probe::report::Report)> =
        Vec::with_capacity(2 + 2 * targets.len());
    parts.push((&[], &own));
    parts.push((&[], &scheduler));
    for (target, last, counters) in &targets {
        if let Some(last) = last {
            parts.push((&target.labels, &last.report));
        }
        parts.push((&target.labels, counters));
    }
    metrics::encode(format, &parts)
}

/// `GET /-/healthy`.
pub async fn healthy() -> &'static str {
    "Healthy"
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

/// `GET /logs?id=N`: one recent probe's debug text.
pub async fn logs(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(id) = q.get("id").and_then(|i| i.parse::<u64>().ok()) else {
        return (StatusCode::BAD_REQUEST, "Invalid probe id\n").into_response();
    };
    match state.history.get(id) {
        Some(e) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            super::probe::debug_output(&e.logs, &e.exposition, &e.module_config),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "Probe id not found\n").into_response(),
    }
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
         <h2>Recent probes</h2><table><tr><th>Module</th><th>Target</th><th>Result</th><th>Debug</th></tr>",
        env!("CARGO_PKG_VERSION")
    );
    for e in state.history.list() {
        let (class, text) = if e.success {
            ("ok", "Success")
        } else {
            ("fail", "Failure")
        };
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{text}</td><td><a href=\"{p}/logs?id={}\">Logs</a></td></tr>",
            escape(&e.module),
            escape(&e.target),
            e.id
        );
    }
    page.push_str("</table></body></html>\n");
    Html(page)
}
