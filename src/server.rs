//! The HTTP endpoints: the only module that knows routing. `/probe` lives in `server/probe.rs`,
//! the rest in `server/admin.rs`; `serve` is the accept loop.

mod admin;
mod probe;
pub mod recent;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::state::State;

/// The router with every endpoint, under `state.prefix`.
pub fn router(state: Arc<State>) -> Router {
    let routes = Router::new()
        .route("/probe", get(probe::handle))
        .route("/metrics", get(admin::metrics))
        .route("/-/healthy", get(admin::healthy))
        .route(
            "/-/reload",
            post(admin::reload).get(admin::reload_needs_post),
        )
        .route("/config", get(admin::config))
        .route("/logs", get(admin::logs))
        .route("/api/v1/targets", get(admin::api_targets))
        .route("/api/v1/status", get(status::api))
        .route("/status", get(status::default_page))
        .route("/status/", get(status::default_page))
        .route("/status/target/{name}", get(status::target))
        .route("/status/{page}", get(status::page))
        .route("/badge/{name}/{kind}", get(status::badge))
        .route("/", get(admin::index))
        .with_state(state.clone());
    if state.prefix.is_empty() {
        routes
    } else {
        // As blackbox (and Prometheus): `/` itself, outside the prefix, redirects to the
        // external URL (or the prefix when none is given); other paths outside it are 404.
        let to = state
            .external_url
            .clone()
            .unwrap_or_else(|| format!("{}/", state.prefix));
        Router::new().nest(&state.prefix, routes).route(
            "/",
            get(move || async move {
                (
                    axum::http::StatusCode::FOUND,
                    [(axum::http::header::LOCATION, to)],
                )
            }),
        )
    }
}

/// Serves the endpoints on `listener` until `shutdown` is cancelled; open requests (a `/probe`
/// still running) then get `grace` to finish before the connections are dropped.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let serve = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::select! {
        r = std::future::IntoFuture::into_future(serve) => r,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => Ok(()),
    }
}
