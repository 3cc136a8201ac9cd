//! Reloading the config: SIGHUP and `POST /-/reload` both land here. A bad file keeps the old
//! config serving and sets the reload-success gauges to 0.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{self, Config, ConfigError};
use crate::metrics::process::SelfMetrics;

/// Loads the config file again and swaps it in, or keeps the old one and reports why.
pub fn reload(current: &ArcSwap<Config>, metrics: &SelfMetrics) -> Result<(), ConfigError> {
    let path = current.load().file.clone();
    let source = if path.as_os_str() == config::EMBEDDED_NAME {
        crate::cli::ConfigSource::Embedded
    } else {
        crate::cli::ConfigSource::File(path.clone())
    };
    match config::load_source(&source) {
        Ok(new) => {
            let modules = new.modules.len();
            current.store(Arc::new(new));
            metrics.record_reload(true);
            tracing::info!(file = %path.display(), modules, "Loaded config file");
            Ok(())
        }
        Err(e) => {
            metrics.record_reload(false);
            tracing::error!(err = %e, "Error reloading config; keeping the previous one");
            Err(e)
        }
    }
}
