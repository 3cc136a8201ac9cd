//! What the whole application shares: the current config, the scheduler, the result bus and
//! its subscribers, lookout's own metrics. The server, reloads and the scheduler read it; none
//! of them owns it, so none imports another for it.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::process::SelfMetrics;
use crate::probe::resolve::Resolver;
use crate::results::ResultBus;
use crate::schedule::Scheduler;
use crate::server::recent::Recent;

/// The application's shared state.
#[derive(Debug)]
pub struct State {
    /// The current config; replaced whole on reload.
    pub config: ArcSwap<Config>,
    /// Where the scheduler's targets come from (the file, discovery, this replica's share).
    pub sources: Arc<crate::sources::Sources>,
    /// Kubernetes discovery's counters.
    pub kubernetes: Arc<crate::kubernetes::Stats>,
    /// The scheduler's targets and their latest results.
    pub scheduler: Arc<Scheduler>,
    /// Name resolution for probes.
    pub resolver: Resolver,
    /// lookout's own metrics (also a result subscriber).
    pub metrics: Arc<SelfMetrics>,
    /// Where every finished probe is published.
    pub results: Arc<ResultBus>,
    /// Recent probes for `/` and `/logs` (a result subscriber).
    pub recent: Arc<Recent>,
    /// Sends alerts to Alertmanager (when `alerting:` names any).
    pub alerts: Arc<crate::alerts::Sender>,
    /// The history store (queries for the status page and the JSON API).
    pub history: Option<Arc<crate::history::Store>>,
    /// `--timeout-offset` in seconds.
    pub timeout_offset: f64,
    /// `--probe.failure-info`: `/probe` answers carry `probe_failure_info{reason}` too.
    pub failure_info: bool,
    /// Results kept for `/probe` of modules with `cache:`.
    pub probe_cache: Arc<crate::server::ProbeCache>,
    /// `--web.route-prefix`, normalised to "" or "/prefix".
    pub prefix: String,
    /// `--web.external-url`, without a trailing slash: where `/` under a prefix redirects, and
    /// the base of links lookout sends out.
    pub external_url: Option<String>,
    /// `--web.enable-openmetrics`: answer OpenMetrics when the scrape asks for it.
    pub openmetrics: bool,
    /// The counters behind `probe_limits`.
    pub limiter: Arc<crate::limits::Limiter>,
}
