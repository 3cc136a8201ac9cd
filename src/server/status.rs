//! The status pages, their badges and JSON: the HTTP side of `crate::status`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::State as AppState;
use crate::status::{self as page, HistorySource, TargetView};

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
            slo: s
                .slo()
                .map(|(budget_remaining, burn_rate)| crate::history::SloStatus {
                    budget_remaining,
                    burn_rate,
                }),
        })
        .collect()
}

/// Runs `f` with the history on a blocking thread (store reads are short blocking reads).
async fn with_history<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&dyn HistorySource) -> T + Send + 'static,
) -> Result<T, Response> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || match &state.history {
        Some(store) => match store.snapshot() {
            Ok(snap) => f(&page::StoreHistory {
                snap,
                now: SystemTime::now(),
            }),
            Err(e) => {
                tracing::warn!(err = %e, "Cannot read the history store; the page shows none");
                f(&page::NoHistory)
            }
        },
        None => f(&page::NoHistory),
    })
    .await
    .map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering failed: {e}\n"),
        )
            .into_response()
    })
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("{what}\n")).into_response()
}

async fn render(state: &Arc<AppState>, name: &str, q: &HashMap<String, String>) -> Response {
    let config = state.config.load_full();
    let Some(p) = config.status.page(name).cloned() else {
        return not_found(&format!("no status page {name:?}"));
    };
    let slice = match page::Slice::from_query(q, config.status.page_size) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let views = views(state);
    let base = format!("{}/status", state.prefix);
    let refresh = config.status.refresh;
    match with_history(state, move |h| {
        page::render_page(&p, refresh, &views, h, &base, SystemTime::now(), &slice)
    })
    .await
    {
        Ok(html) => Html(html).into_response(),
        Err(r) => r,
    }
}

/// `GET /status[?group=G&state=failing&p=N]`.
pub async fn default_page(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    render(&state, "", &q).await
}

/// `GET /status/<page>[?group=G&state=failing&p=N]`.
pub async fn page(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    render(&state, &name, &q).await
}

/// `GET /status/target/<name>`: one target's page (not on public pages' links, but reachable:
/// it shows what `/api/v1/targets` shows).
pub async fn target(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let all = views(&state);
    let Some(i) = all.iter().position(|v| v.target.name == name) else {
        return not_found(&format!("no scheduled target {name:?}"));
    };
    let refresh = state.config.load().status.refresh;
    let base = format!("{}/status", state.prefix);
    match with_history(&state, move |h| {
        page::target_html(&base, &all[i], &all, h, refresh, SystemTime::now())
    })
    .await
    {
        Ok(html) => Html(html).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/v1/status?page=NAME[&group=G&state=failing&p=N]`: a page's model as JSON, every
/// row unless `p` asks for one page of them.
pub async fn api(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let config = state.config.load_full();
    let name = q.get("page").map(String::as_str).unwrap_or("");
    let Some(p) = config.status.page(name).cloned() else {
        return not_found(&format!("no status page {name:?}"));
    };
    let size = if q.contains_key("p") {
        config.status.page_size
    } else {
        usize::MAX
    };
    let slice = match page::Slice::from_query(&q, size) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let views = views(&state);
    match with_history(&state, move |h| {
        page::model_json(&page::model_slice(
            &p,
            None,
            &views,
            h,
            SystemTime::now(),
            &slice,
        ))
        .to_string()
    })
    .await
    {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(r) => r,
    }
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
            let target = name.clone();
            let ratio = match with_history(&state, move |h| h.uptime(&target, w)).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            match ratio {
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
