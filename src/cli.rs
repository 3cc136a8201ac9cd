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

    /// Serve on the listening sockets systemd passes (socket activation: `LISTEN_FDS`, for this
    /// process by `LISTEN_PID`) instead of --web.listen-address. TCP sockets only.
    #[arg(long = "web.systemd-socket")]
    pub systemd_socket: bool,

    /// exporter-toolkit's web config file: TLS (with client certificates), basic auth, response
    /// headers and a rate limit for every endpoint. Re-read on every request and TLS handshake.
    #[arg(long = "web.config.file", value_name = "PATH", default_value = "")]
    pub web_config_file: String,

    /// Path prefix for all HTTP endpoints (e.g. /blackbox). Defaults to the path of
    /// --web.external-url, else none.
    #[arg(long = "web.route-prefix", value_name = "PATH")]
    pub route_prefix: Option<String>,

    /// The URL under which lookout is reachable from outside (behind a reverse proxy): its
    /// path prefixes every endpoint unless --web.route-prefix says otherwise, and links lookout
    /// sends out (alerts' generatorURL) use it.
    #[arg(long = "web.external-url", value_name = "URL")]
    pub external_url: Option<String>,

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

    /// lookout: how many failures of each target the web page and /logs keep, beside the
    /// --history.limit ring (0 keeps none).
    #[arg(
        long = "history.failures-per-target",
        default_value_t = 10,
        value_name = "N"
    )]
    pub history_failures_per_target: usize,

    /// lookout: for how many targets failures are kept, for /probe and scheduled targets each;
    /// past it the target whose newest failure is the oldest is forgotten.
    #[arg(
        long = "history.failed-targets",
        default_value_t = 100,
        value_name = "N"
    )]
    pub history_failed_targets: usize,

    /// The directory of the history store (created if missing). Without the flag, ./data when
    /// the config schedules targets, and no store when it has none (a blackbox_exporter config
    /// never makes lookout write to disk); an empty value turns the store off.
    #[arg(long = "storage.path", value_name = "DIR")]
    pub storage_path: Option<String>,

    /// Only log messages with the given severity or above: debug, info, warn, error.
    #[arg(long = "log.level", default_value = "info", value_parser = ["debug", "info", "warn", "error"])]
    pub log_level: String,

    /// The level of probes' own log lines, on stderr and in `debug=true` output, apart from
    /// --log.level (blackbox 0.28's meaning). Without it, probe lines follow --log.level on
    /// stderr and debug output keeps every line, as blackbox 0.23 does.
    #[arg(long = "log.prober", value_parser = ["debug", "info", "warn", "error"], value_name = "LEVEL")]
    pub log_prober: Option<String>,

    /// Watch the config file and reload when it changes (`--config.watch=false` to turn off).
    #[arg(long = "config.watch", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub config_watch: bool,

    /// How often the config file is checked for changes.
    #[arg(long = "config.watch-interval", default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub config_watch_interval: std::time::Duration,

    /// blackbox 0.28's periodic reload: reload every --config.auto-reload-interval (skipped
    /// when neither the config nor a file it names changed). Independent of --config.watch.
    #[arg(long = "config.enable-auto-reload", num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub config_auto_reload: bool,

    /// The period of --config.enable-auto-reload: seconds, as blackbox takes it, or a duration.
    #[arg(long = "config.auto-reload-interval", default_value = "30", value_parser = parse_seconds_or_duration, value_name = "SECONDS")]
    pub config_auto_reload_interval: std::time::Duration,

    /// On SIGTERM/SIGINT, how long running probes may take to finish before lookout exits.
    #[arg(long = "shutdown.grace-period", default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace_period: std::time::Duration,

    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    pub log_format: LogFormat,

    /// Add `probe_failure_info{reason="…"}` to failed `/probe` answers (scheduled targets always
    /// have it); off by default, so `/probe` answers as blackbox_exporter does.
    #[arg(long = "probe.failure-info")]
    pub probe_failure_info: bool,

    /// This replica's ordinal among --shard.count replicas that split the scheduled targets: a
    /// number, or a name ending in -<number> (a StatefulSet pod's name).
    #[arg(long = "shard.index", value_name = "I")]
    pub shard_index: Option<String>,

    /// How many replicas split the scheduled targets (each connected part of the dependency
    /// graph goes whole to one of them).
    #[arg(long = "shard.count", value_name = "N")]
    pub shard_count: Option<u32>,

    /// Every replica's address (http://host:port), in ordinal order and this one included:
    /// each replica asks the others' /-/healthy and probes its part of the share of one that
    /// stopped answering, until it answers again. Comma-separated or repeated.
    #[arg(long = "shard.peers", value_name = "URL", value_delimiter = ',')]
    pub shard_peers: Vec<String>,

    /// How often each peer of --shard.peers is asked.
    #[arg(long = "shard.peer-interval", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub shard_peer_interval: std::time::Duration,

    /// How many checks in a row a peer must miss to be taken for down.
    #[arg(long = "shard.peer-failures", default_value_t = 3, value_name = "N")]
    pub shard_peer_failures: u32,
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

/// A whole number of seconds (blackbox's `Uint` flags), or a duration such as `30s`.
fn parse_seconds_or_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = match s.parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => crate::values::parse_duration(s)?,
    };
    if d.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(d)
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
        level_filter(&self.log_level)
    }

    /// `--log.prober` as a tracing filter, when given.
    pub fn prober_level(&self) -> Option<tracing_subscriber::filter::LevelFilter> {
        self.log_prober.as_deref().map(level_filter)
    }

    /// The route prefix: --web.route-prefix, else the path of --web.external-url, else none.
    pub fn route_prefix(&self) -> String {
        if let Some(p) = &self.route_prefix {
            return p.clone();
        }
        self.external_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.path().to_owned())
            .unwrap_or_else(|| "/".to_owned())
    }

    /// --web.external-url without a trailing slash, checked to be an absolute URL.
    pub fn external_url(&self) -> Result<Option<String>, String> {
        let Some(u) = &self.external_url else {
            return Ok(None);
        };
        if u.starts_with(['"', '\'']) || u.ends_with(['"', '\'']) {
            return Err("--web.external-url must not begin or end with quotes".to_owned());
        }
        let parsed = url::Url::parse(u).map_err(|e| format!("--web.external-url {u:?}: {e}"))?;
        Ok(Some(parsed.as_str().trim_end_matches('/').to_owned()))
    }
}

fn level_filter(s: &str) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match s {
        "debug" => LevelFilter::DEBUG,
        "warn" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
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
    fn blackbox_028_flags_parse_with_its_meaning() {
        let c = cli(&[
            "--config.enable-auto-reload",
            "--config.auto-reload-interval",
            "45",
        ]);
        assert!(c.config_auto_reload);
        assert_eq!(
            c.config_auto_reload_interval,
            std::time::Duration::from_secs(45)
        );
        let c = cli(&[
            "--config.enable-auto-reload=false",
            "--config.auto-reload-interval=2s",
        ]);
        assert!(!c.config_auto_reload);
        assert_eq!(
            c.config_auto_reload_interval,
            std::time::Duration::from_secs(2)
        );
        assert!(!cli(&[]).config_auto_reload);
        assert_eq!(
            cli(&[]).config_auto_reload_interval,
            std::time::Duration::from_secs(30)
        );

        assert_eq!(cli(&[]).route_prefix(), "/");
        let c = cli(&["--web.external-url", "https://example.test/blackbox/"]);
        assert_eq!(c.route_prefix(), "/blackbox/");
        assert_eq!(
            c.external_url().unwrap().as_deref(),
            Some("https://example.test/blackbox")
        );
        let c = cli(&[
            "--web.external-url",
            "https://example.test/bb",
            "--web.route-prefix",
            "/",
        ]);
        assert_eq!(c.route_prefix(), "/");
        assert!(
            cli(&["--web.external-url", "\"http://x/\""])
                .external_url()
                .is_err()
        );
        assert!(
            cli(&["--web.external-url", "not a url"])
                .external_url()
                .is_err()
        );

        assert_eq!(cli(&[]).prober_level(), None);
        assert_eq!(
            cli(&["--log.prober", "debug"]).prober_level(),
            Some(tracing_subscriber::filter::LevelFilter::DEBUG)
        );
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
