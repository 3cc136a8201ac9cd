//! The HTTP endpoints: the only module that knows routing. `/probe` lives in `server/probe.rs`,
//! the rest in `server/admin.rs`.

mod admin;
mod probe;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::{get, post};

use crate::config::{Config, TargetSet};
use crate::metrics::process::SelfMetrics;
use crate::probe::resolve::Resolver;
use crate::store::History;

/// What every handler shares.
#[derive(Debug)]
pub struct State {
    /// The current config; replaced whole on reload.
    pub config: ArcSwap<Config>,
    /// Tells the scheduler about a new config's target set.
    pub config_tx: tokio::sync::watch::Sender<Arc<TargetSet>>,
    /// The scheduler's targets and results.
    pub scheduler: Arc<crate::schedule::Scheduler>,
    /// Name resolution for probes.
    pub resolver: Resolver,
    /// lookout's own metrics.
    pub metrics: SelfMetrics,
    /// Recent probes.
    pub history: History,
    /// `--timeout-offset` in seconds.
    pub timeout_offset: f64,
    /// `--web.route-prefix`, normalised to "" or "/prefix".
    pub prefix: String,
    /// `--web.enable-openmetrics`: answer OpenMetrics when the scrape asks for it.
    pub openmetrics: bool,
}

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
        .route("/", get(admin::index))
        .with_state(state.clone());
    if state.prefix.is_empty() {
        routes
    } else {
        Router::new().nest(&state.prefix, routes)
    }
}
