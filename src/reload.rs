//! Reloading the config: SIGHUP, `POST /-/reload` and the file watch all land here. A bad file
//! keeps the old config serving and sets the reload-success gauges to 0.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigError, ConfigSource};
use crate::state::State;

fn source_of(state: &State) -> ConfigSource {
    ConfigSource::of(&state.config.load())
}

/// Loads the config again and swaps it in (and hands it to the scheduler), or keeps the old one
/// and reports why. As blackbox 0.28, a reload that finds nothing changed is skipped and counts
/// as a successful one; "nothing" here covers the files the config names too (a rotated
/// password or certificate file is a change), not only the config file.
pub fn reload(state: &State) -> Result<(), ConfigError> {
    let source = source_of(state);
    if crate::values::inputs_unchanged(&state.config.load().inputs) {
        state.metrics.record_reload(true);
        tracing::info!(file = %state.config.load().file.display(), "Config and the files it names unchanged; nothing to reload");
        return Ok(());
    }
    match config::load_source(&source) {
        Ok(new) => {
            let new = Arc::new(new);
            let (modules, targets) = (new.modules.len(), new.targets.len());
            state.config.store(new.clone());
            state.sources.config_changed(new.clone());
            state.metrics.record_reload(true);
            tracing::info!(file = %state.config.load().file.display(), modules, targets, "Loaded config file");
            Ok(())
        }
        Err(e) => {
            state.metrics.record_reload(false);
            tracing::error!(err = %e, "Error reloading config; keeping the previous one");
            Err(e)
        }
    }
}

/// Reloads on every SIGHUP, for the life of the process.
pub async fn on_sighup(state: Arc<State>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /-/reload");
        return;
    };
    while hup.recv().await.is_some() {
        let _ = reload(&state);
    }
}

/// blackbox 0.28's `--config.enable-auto-reload`: reloads every `every`, whatever the file
/// watch does (an unchanged config is skipped by `reload`).
pub async fn auto_reload(state: Arc<State>, stop: CancellationToken, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let _ = reload(&state);
    }
}

/// Watches the config file and reloads when its content changes: polls every `every` (a read of
/// a small file), which also sees editors' atomic renames and Kubernetes ConfigMap symlink swaps
/// that inotify-based watches miss.
pub async fn watch(state: Arc<State>, stop: CancellationToken, every: Duration) {
    let ConfigSource::File(path) = source_of(&state) else {
        return;
    };
    let mut last = tokio::fs::read(&path).await.ok();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = tokio::fs::read(&path).await.ok();
        if now.is_some() && now != last {
            last = now;
            tracing::info!(file = %path.display(), "Config file changed; reloading");
            let _ = reload(&state);
        }
    }
}
