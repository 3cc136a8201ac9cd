//! Command-line flags, with blackbox_exporter's names where they exist.

use std::path::PathBuf;

use clap::Parser;

use crate::config::ConfigSource;
use crate::logging::LogFormat;

/// A blackbox_exporter-compatible prober: point Prometheus at /probe?target=…&module=…
#[derive(Debug, Clone, Parser)]
#[command(name = "lookout", version, about, long_about = None)]
pub struct Cli {
    /// The config file (blackbox_exporter's format). Without it, ./lookout.yml is used when it
    /// exists, else the built-in default (config/lookout.yml of the source tree).
    #[arg(long = "config.file", value_name = "PATH", global = true)]
    pub config_file: Option<PathBuf>,

    /// Instead of serving, do one thing and exit.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Validate the config file, print the result and exit (0 valid, 1 invalid).
    #[arg(long = "config.check")]
    pub config_check: bool,

    /// Address to listen on for the web interface, /probe and /metrics. Repeat the flag to
    /// listen on several addresses (`:9115` or `[::1]:9115`).
    #[arg(
        long = "web.listen-address",
        default_value = ":9115",
        value_name = "ADDR",
        action = clap::ArgAction::Append
    )]
    pub listen_address: Vec<String>,

    /// exporter-toolkit's web config file: TLS (with client certificates), basic auth, response
    /// headers and a rate limit for every endpoint. Re-read on every request and TLS handshake.
    #[arg(long = "web.config.file", value_name = "PATH", default_value = "")]
    pub web_config_file: String,

    /// Path prefix for all HTTP endpoints (e.g. /blackbox).
    #[arg(long = "web.route-prefix", default_value = "/", value_name = "PATH")]
    pub route_prefix: String,

    /// Answer OpenMetrics on /probe and /metrics when the scrape's Accept header asks for it.
    /// Off by default: blackbox_exporter always answers the text format 0.0.4, and Prometheus
    /// asks for OpenMetrics first, so turning this on changes what every scrape gets.
    #[arg(long = "web.enable-openmetrics")]
    pub enable_openmetrics: bool,

    /// Seconds subtracted from Prometheus' scrape timeout to get the probe deadline.
    #[arg(long = "timeout-offset", default_value_t = 0.5, value_name = "SECONDS")]
    pub timeout_offset: f64,

    /// How many recent probes the web page and /logs keep.
    #[arg(long = "history.limit", default_value_t = 100, value_name = "N")]
    pub history_limit: usize,

    /// The directory of the history store (created if missing). Without the flag, ./data when
    /// the config schedules targets, and no store when it has none (a blackbox_exporter config
    /// never makes lookout write to disk); an empty value turns the store off.
    #[arg(long = "storage.path", value_name = "DIR")]
    pub storage_path: Option<String>,

    /// Only log messages with the given severity or above: debug, info, warn, error.
    #[arg(long = "log.level", default_value = "info", value_parser = ["debug", "info", "warn", "error"])]
    pub log_level: String,

    /// Watch the config file and reload when it changes (`--config.watch=false` to turn off).
    #[arg(long = "config.watch", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub config_watch: bool,

    /// How often the config file is checked for changes.
    #[arg(long = "config.watch-interval", default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub config_watch_interval: std::time::Duration,

    /// On SIGTERM/SIGINT, how long running probes may take to finish before lookout exits.
    #[arg(long = "shutdown.grace-period", default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace_period: std::time::Duration,

    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    pub log_format: LogFormat,
}

/// What lookout can do besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print a Prometheus rule file with one alert per scheduled target that is down in its
    /// own right (or, with --alertmanager, Alertmanager inhibit_rules for alerts of dependents).
    Rules {
        /// Print Alertmanager `inhibit_rules` (a YAML list) instead of Prometheus rules.
        #[arg(long)]
        alertmanager: bool,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::values::parse_duration(s)
}

impl Cli {
    /// Where the history store lives, if anywhere, for a config with `scheduled` targets.
    pub fn storage(&self, scheduled: bool) -> Option<PathBuf> {
        match &self.storage_path {
            Some(p) if p.is_empty() => None,
            Some(p) => Some(PathBuf::from(p)),
            None if scheduled => Some(PathBuf::from("data")),
            None => None,
        }
    }

    /// `--web.config.file`, when given (an empty value is none, as in exporter-toolkit).
    pub fn web_config(&self) -> Option<&std::path::Path> {
        Some(self.web_config_file.as_str())
            .filter(|p| !p.is_empty())
            .map(std::path::Path::new)
    }

    /// The config source: the flag, else ./lookout.yml, else the built-in default.
    pub fn config_source(&self) -> ConfigSource {
        ConfigSource::choose(self.config_file.as_deref())
    }

    /// The log level as a tracing filter.
    pub fn level(&self) -> tracing_subscriber::filter::LevelFilter {
        use tracing_subscriber::filter::LevelFilter;
        match self.log_level.as_str() {
            "debug" => LevelFilter::DEBUG,
            "warn" => LevelFilter::WARN,
            "error" => LevelFilter::ERROR,
            _ => LevelFilter::INFO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("lookout").chain(args.iter().copied()))
    }

    #[test]
    fn the_history_store_is_where_the_flag_says_or_nowhere() {
        assert_eq!(cli(&[]).storage(true), Some(PathBuf::from("data")));
        assert_eq!(
            cli(&[]).storage(false),
            None,
            "a blackbox config writes nothing"
        );
        assert_eq!(
            cli(&["--storage.path", "/var/lib/lookout"]).storage(false),
            Some(PathBuf::from("/var/lib/lookout"))
        );
        assert_eq!(cli(&["--storage.path="]).storage(true), None);
    }

    #[test]
    fn listen_addresses_repeat_and_replace_the_default() {
        assert_eq!(cli(&[]).listen_address, [":9115"]);
        let c = cli(&[
            "--web.listen-address",
            "127.0.0.1:9115",
            "--web.listen-address=[::1]:9115",
        ]);
        assert_eq!(c.listen_address, ["127.0.0.1:9115", "[::1]:9115"]);
        assert_eq!(cli(&[]).web_config(), None);
        assert_eq!(cli(&["--web.config.file="]).web_config(), None);
        assert_eq!(
            cli(&["--web.config.file", "web.yml"]).web_config(),
            Some(std::path::Path::new("web.yml"))
        );
    }
}
