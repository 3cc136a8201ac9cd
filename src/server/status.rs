//! The status pages, their badges and JSON: the HTTP side of `crate::status`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::State as AppState;
use crate::status::{self as page, HistorySource, NoHistory, TargetView};

/// The scheduled targets as the pages see them.
fn views(state: &AppState) -> Vec<TargetView> {
    state
        .scheduler
        .states()
        .iter()
        .map(|s| TargetView {
            target: s.target(),
            health: s.health(),
            last: s.last(),
        })
        .collect()
}

/// The history the pages read (none until a store is configured).
fn history(_state: &AppState) -> &'static dyn HistorySource {
    &NoHistory
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("{what}\n")).into_response()
}

fn render(state: &AppState, name: &str) -> Response {
    let config = state.config.load();
    let Some(p) = config.status.page(name) else {
        return not_found(&format!("no status page {name:?}"));
    };
    let m = page::model(
        p,
        config.status.refresh,
        &views(state),
        history(state),
        SystemTime::now(),
    );
    Html(page::page_html(&m, &format!("{}/status", state.prefix))).into_response()
}

/// `GET /status`.
pub async fn default_page(State(state): State<Arc<AppState>>) -> Response {
    render(&state, "")
}

/// `GET /status/<page>`.
pub async fn page(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    render(&state, &name)
}

/// `GET /status/target/<name>`: one target's page (not on public pages' links, but reachable:
/// it shows what `/api/v1/targets` shows).
pub async fn target(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let all = views(&state);
    let Some(v) = all.iter().find(|v| v.target.name == name) else {
        return not_found(&format!("no scheduled target {name:?}"));
    };
    let refresh = state.config.load().status.refresh;
    Html(page::target_html(
        &format!("{}/status", state.prefix),
        v,
        &all,
        history(&state),
        refresh,
        SystemTime::now(),
    ))
    .into_response()
}

/// `GET /api/v1/status?page=NAME`: a page's model as JSON.
pub async fn api(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let config = state.config.load();
    let name = q.get("page").map(String::as_str).unwrap_or("");
    let Some(p) = config.status.page(name) else {
        return not_found(&format!("no status page {name:?}"));
    };
    let m = page::model(p, None, &views(&state), history(&state), SystemTime::now());
    (
        [(header::CONTENT_TYPE, "application/json")],
        page::model_json(&m).to_string(),
    )
        .into_response()
}

/// Parses a badge window: `24h`, `7d`, `30d`, `90d` or any config duration.
fn window(q: &HashMap<String, String>) -> Option<(String, Duration)> {
    let w = q.get("window").map(String::as_str).unwrap_or("30d");
    crate::values::parse_duration(w)
        .ok()
        .map(|d| (w.to_owned(), d))
}

/// `GET /badge/<target>/<kind>.svg` with kind `state`, `uptime` (`?window=30d`) or `response`.
pub async fn badge(
    State(state): State<Arc<AppState>>,
    Path((name, kind)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let all = views(&state);
    let Some(v) = all.iter().find(|v| v.target.name == name) else {
        return not_found(&format!("no scheduled target {name:?}"));
    };
    let kind = kind.strip_suffix(".svg").unwrap_or(&kind);
    let svg = match kind {
        "state" => page::badge(
            &name,
            v.health.state.as_str(),
            page::render::badge_colour(v.health.state),
        ),
        "uptime" => {
            let Some((label, w)) = window(&q) else {
                return (StatusCode::BAD_REQUEST, "invalid window\n").into_response();
            };
            match history(&state).uptime(&name, w) {
                Some(r) => page::badge(
                    &format!("uptime {label}"),
                    &format!("{:.2}%", r * 100.0),
                    if r >= 0.999 {
                        "#1a7f37"
                    } else if r >= 0.99 {
                        "#9a3412"
                    } else {
                        "#cf222e"
                    },
                ),
                None => page::badge(&format!("uptime {label}"), "no data", "#59636e"),
            }
        }
        "response" => match &v.last {
            Some(r) => page::badge(
                "response",
                &format!("{:.0} ms", r.duration.as_secs_f64() * 1000.0),
                "#0969da",
            ),
            None => page::badge("response", "no data", "#59636e"),
        },
        _ => return not_found("badge kinds: state, uptime, response"),
    };
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=30"),
        ],
        svg,
    )
        .into_response()
}
