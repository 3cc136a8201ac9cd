//! lookout: a blackbox_exporter-compatible probing exporter.
//!
//! Module map (see ARCHITECTURE.md):
//! - `cli`: flags; `logging`: log lines and per-probe capture.
//! - `config`: the only reader of the config file; validates into plain structs.
//! - `access`: `probe_access`, the policy on what `/probe` requests may reach.
//! - `probe`: one module per protocol behind `Prober`; `probe::run` is the single entry point.
//! - `metrics`: the only module that knows exposition formats.
//! - `results`: every finished probe as a `ProbeResult`, published on the `ResultBus`.
//! - `schedule`: lookout's own scheduler; `state`: what the application shares.
//! - `server`: HTTP endpoints and the accept loop; `reload`: config reloads.
//! - `web`: `--web.config.file` (TLS, basic auth, headers, rate limit for lookout's endpoints).

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod access;
pub mod alerts;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod history;
pub mod kubernetes;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod peers;
pub mod probe;
pub mod reload;
pub mod results;
pub mod rules;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod shard;
pub mod sources;
pub mod state;
pub mod status;
pub mod values;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

use crate::cli::Cli;
use crate::config::ConfigSource;
use crate::metrics::process::SelfMetrics;
use crate::probe::resolve::Resolver;
use crate::results::ResultBus;
use crate::server::recent::Recent;
use crate::state::State;

/// A running lookout: its bound addresses and the task serving it.
#[derive(Debug)]
pub struct App {
    /// The address the web server listens on (the first `--web.listen-address`; tests bind
    /// port 0 and read it here).
    pub local_addr: SocketAddr,
    /// Every bound address, one per `--web.listen-address`.
    pub local_addrs: Vec<SocketAddr>,
    /// Whether the endpoints are served over TLS (`--web.config.file`).
    pub tls: bool,
    /// Shared state (config, metrics, scheduler).
    pub state: Arc<State>,
    /// Ends when the server has stopped and the scheduler has let its probes finish (up to the
    /// grace period) after `shutdown` resolved.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Parses `--web.listen-address`: `:9115` means every interface, as in Go.
pub fn listen_addrs(s: &str) -> Vec<String> {
    match s.strip_prefix(':') {
        Some(port) => vec![format!("[::]:{port}"), format!("0.0.0.0:{port}")],
        None => vec![s.to_owned()],
    }
}

fn normalise_prefix(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        String::new()
    } else if t.starts_with('/') {
        t.to_owned()
    } else {
        format!("/{t}")
    }
}

impl App {
    /// Loads the config, binds the listener, starts the scheduler and serves until `shutdown`
    /// resolves.
    pub async fn start(
        cli: &Cli,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<App> {
        App::start_with(cli, None, shutdown).await
    }

    /// `start`, resolving target names with `resolver` instead of the system's configuration
    /// when one is given (an embedding program's choice; tests use their own DNS server).
    pub async fn start_with(
        cli: &Cli,
        resolver: Option<Resolver>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<App> {
        logging::ensure_capture();
        let external_url = cli.external_url().map_err(anyhow::Error::msg)?;
        let metrics = Arc::new(SelfMetrics::default());
        let source = cli.config_source();
        let config = match config::load_source(&source) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!(err = %e, "Error loading config");
                return Err(anyhow::Error::new(e).context("error loading config"));
            }
        };
        metrics.record_reload(true);
        tracing::info!(
            file = %config.file.display(),
            modules = config.modules.len(),
            targets = config.targets.len(),
            "Loaded config file"
        );
        let store = match cli.storage(!config.targets.is_empty()) {
            None => None,
            Some(dir) => Some(history::Store::open(&dir).map_err(|e| {
                tracing::error!(err = %e, "Cannot open the history store");
                anyhow::Error::new(e).context("cannot open the history store (--storage.path)")
            })?),
        };
        let (history, history_writer) = match store {
            Some((s, w)) => (Some(Arc::new(s)), Some(w)),
            None => {
                tracing::info!("No history store: the status page shows live states only");
                (None, None)
            }
        };
        let shard = shard::Shard::from_flags(cli.shard_index.as_deref(), cli.shard_count)?;
        let peer_watch = peers::Watch::from_flags(
            &cli.shard_peers,
            shard,
            cli.shard_peer_interval,
            cli.shard_peer_failures,
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let (sources, config_rx) = sources::Sources::new(config.clone(), shard);
        if let Some(s) = shard {
            tracing::info!(
                index = s.index,
                count = s.count,
                targets = config_rx.borrow().len(),
                "Scheduling this replica's share of the targets"
            );
        }
        let resolver = resolver.unwrap_or_else(Resolver::system);
        let results = Arc::new(ResultBus::default());
        let recent = Arc::new(Recent::new(
            cli.history_limit,
            server::recent::FailureLimits {
                per_target: cli.history_failures_per_target,
                targets: cli.history_failed_targets,
            },
        ));
        results.attach(metrics.clone());
        results.attach(recent.clone());
        let state = Arc::new(State {
            config: ArcSwap::new(config),
            sources: Arc::new(sources),
            kubernetes: Arc::default(),
            resolver: resolver.clone(),
            metrics,
            scheduler: Arc::new(schedule::Scheduler::new(results.clone())),
            results,
            recent,
            alerts: Arc::new(alerts::Sender::default()),
            history,
            timeout_offset: cli.timeout_offset,
            failure_info: cli.probe_failure_info,
            probe_cache: Arc::default(),
            prefix: normalise_prefix(&cli.route_prefix()),
            external_url: external_url.clone(),
            openmetrics: cli.enable_openmetrics,
            limiter: Arc::default(),
        });
        let web = match cli.web_config() {
            None => None,
            Some(path) => Some(Arc::new(web::Web::load(path).map_err(|e| {
                tracing::error!(err = %e, "Error loading web config");
                anyhow::Error::new(e).context("error loading the web config (--web.config.file)")
            })?)),
        };
        let tls = web.as_ref().is_some_and(|w| w.tls());
        let mut listeners = Vec::new();
        let mut local_addrs = Vec::new();
        if cli.systemd_socket {
            tracing::info!("Listening on systemd activated listeners instead of port listeners.");
            for l in systemd_listeners()? {
                let addr = l.local_addr().context("reading the bound address")?;
                tracing::info!(address = %addr, "Listening on address");
                local_addrs.push(addr);
                listeners.push(l);
            }
        }
        let flags: &[String] = if cli.systemd_socket {
            &[]
        } else {
            &cli.listen_address
        };
        for flag in flags {
            let mut last_err = None;
            let mut listener = None;
            for addr in listen_addrs(flag) {
                match TcpListener::bind(&addr).await {
                    Ok(l) => {
                        listener = Some(l);
                        break;
                    }
                    Err(e) => {
                        last_err =
                            Some(anyhow::Error::new(e).context(format!("cannot listen on {addr}")))
                    }
                }
            }
            let listener = match listener {
                Some(l) => l,
                None => {
                    return Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no listen address")));
                }
            };
            let addr = listener.local_addr().context("reading the bound address")?;
            tracing::info!(address = %addr, "Listening on address");
            local_addrs.push(addr);
            listeners.push(listener);
        }
        let Some(&local_addr) = local_addrs.first() else {
            return Err(anyhow::anyhow!("no --web.listen-address"));
        };

        let stop = CancellationToken::new();
        {
            let stop = stop.clone();
            tokio::spawn(async move {
                shutdown.await;
                stop.cancel();
            });
        }
        let history_task = history_writer.map(|writer| {
            tokio::spawn(history::writer::run(
                writer,
                state.results.subscribe_to(
                    "history",
                    history::writer::QUEUE,
                    results::Only::Scheduled,
                ),
                state.scheduler.subscribe_changes(history::writer::QUEUE),
                history::writer::current_config(state.clone()),
                history::writer::publish_slo(state.scheduler.clone()),
                stop.clone(),
            ))
        });
        if peer_watch.is_none()
            && let Some(t) = config_rx
                .borrow()
                .iter()
                .find(|t| t.replicas_per_target > 1)
        {
            tracing::warn!(target = %t.name, replicas_per_target = t.replicas_per_target, "replicas_per_target needs --shard.peers to ask other replicas; this replica's verdict is the only one");
        }
        // --shard.peers: the others' health decides this replica's part of a down one's share.
        if let Some(watch) = peer_watch {
            if let Some(shard) = shard {
                state
                    .scheduler
                    .set_confirmer(Arc::new(peers::Confirmer::new(
                        &watch,
                        shard,
                        state.sources.clone(),
                        state.resolver.clone(),
                    )));
            }
            tokio::spawn(peers::run(
                watch,
                state.sources.clone(),
                state.resolver.clone(),
                stop.clone(),
            ));
        }
        let scheduler = tokio::spawn(state.scheduler.clone().run(
            config_rx,
            schedule::probe_runner(resolver),
            stop.clone(),
            cli.shutdown_grace_period,
        ));
        // Kubernetes discovery: idle until a config has a `kubernetes:` section.
        tokio::spawn(kubernetes::run(
            state.sources.configs(),
            state.sources.clone(),
            state.kubernetes.clone(),
            stop.clone(),
        ));
        if cli.config_auto_reload && matches!(source, ConfigSource::File(_)) {
            tokio::spawn(reload::auto_reload(
                state.clone(),
                stop.clone(),
                cli.config_auto_reload_interval,
            ));
        }
        if cli.config_watch && matches!(source, ConfigSource::File(_)) {
            tokio::spawn(reload::watch(
                state.clone(),
                stop.clone(),
                cli.config_watch_interval,
            ));
        }
        {
            // Alerts straight to Alertmanager, when the config names any (re-read every round).
            let sender = state.alerts.clone();
            let (spec_state, firing_state) = (state.clone(), state.clone());
            tokio::spawn(sender.run(
                move || spec_state.config.load().alerting.clone(),
                move || {
                    let states = firing_state.scheduler.states();
                    let targets: Vec<_> = states.iter().map(|s| s.target()).collect();
                    rules::firing(&targets, |i| {
                        let h = states[i].health();
                        (h.state, h.since, h.last_failure.map(|f| f.to_string()))
                    })
                },
                state.scheduler.health_changed.clone(),
                state.resolver.clone(),
                match &external_url {
                    Some(base) => format!("{base}/api/v1/targets"),
                    None => format!(
                        "{}://{local_addr}{}/api/v1/targets",
                        if tls { "https" } else { "http" },
                        state.prefix
                    ),
                },
                stop.clone(),
            ));
        }
        let server_stop = stop.clone();
        let grace = cli.shutdown_grace_period;
        let serve_state = state.clone();
        let task = tokio::spawn(async move {
            let served = server::serve(listeners, serve_state, web, server_stop, grace).await;
            let _ = scheduler.await;
            if let Some(t) = history_task {
                let _ = t.await;
            }
            served
        });
        Ok(App {
            local_addr,
            local_addrs,
            tls,
            state,
            task,
        })
    }
}
/// Runs lookout until SIGTERM or SIGINT; SIGHUP reloads the config.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(cli::Command::Rules { alertmanager }) = &cli.command {
        let config = config::load_source(&cli.config_source()).map_err(anyhow::Error::new)?;
        print!(
            "{}",
            if *alertmanager {
                rules::inhibit_rules(&config)
            } else {
                rules::prometheus_rules(&config)
            }
        );
        return Ok(());
    }
    if cli.config_check {
        let c = config::load_source(&cli.config_source()).map_err(anyhow::Error::new)?;
        println!(
            "Config file is ok: {} ({} modules)",
            c.file.display(),
            c.modules.len()
        );
        // With --web.config.file, that file is checked as start-up would check it.
        if let Some(path) = cli.web_config() {
            let w = web::check(path).map_err(anyhow::Error::new)?;
            println!(
                "Web config file is ok: {} (TLS {}, {} basic auth users)",
                path.display(),
                if w.tls.is_some() { "on" } else { "off" },
                w.users.len()
            );
        }
        return Ok(());
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "Starting lookout");
    let app = App::start(&cli, shutdown_signal()).await?;
    tokio::spawn(reload::on_sighup(app.state.clone()));
    app.task
        .await
        .context("server task")?
        .context("serving HTTP")?;
    tracing::info!("Shut down");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("Received shutdown signal; stopping");
}

/// `--web.systemd-socket`: the listening TCP sockets systemd passed to this process, in order
/// (as exporter-toolkit's `activation.Listeners`: `LISTEN_PID` must be this process, and
/// `LISTEN_FDS` says how many, from descriptor 3).
fn systemd_listeners() -> anyhow::Result<Vec<TcpListener>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let mut fds = if ours {
        listenfd::ListenFd::from_env()
    } else {
        listenfd::ListenFd::empty()
    };
    let mut out = Vec::new();
    for i in 0..fds.len() {
        let l = fds
            .take_tcp_listener(i)
            .with_context(|| {
                format!(
                    "socket-activated descriptor {} is not a TCP listener",
                    i + 3
                )
            })?
            .with_context(|| format!("socket-activated descriptor {} is gone", i + 3))?;
        l.set_nonblocking(true)
            .context("making a socket-activated listener non-blocking")?;
        out.push(TcpListener::from_std(l).context("registering a socket-activated listener")?);
    }
    if out.is_empty() {
        anyhow::bail!("no socket activation file descriptors found");
    }
    Ok(out)
}
