//! One scenario: a module, both exporters started on the same config, the same request sent
//! to both, and the answers compared. Any difference panics with the scenario's name, every
//! difference found and both full answers.

use std::path::Path;

use tempfile::TempDir;

use crate::diff::diff;
use crate::exporter::{Exporter, blackbox_binary, can_mount_hosts};
use crate::support::lookout::q;
use crate::support::samples::Samples;

/// The module name every scenario's config uses.
pub const MODULE: &str = "compat";

/// The scrape timeout sent with every probe unless a scenario overrides it.
pub const SCRAPE_TIMEOUT: &str = "5";

/// Set this environment variable to print both expositions of every scenario
/// (with `--nocapture`), also when they agree.
pub const DUMP_ENV: &str = "COMPAT_DUMP";

/// An http module: IPv4 first (targets are 127.0.0.1), a 5 s module timeout, plus `http_extra`
/// (YAML lines at the level of the `http:` section's keys, unindented).
pub fn http_module(http_extra: &str) -> String {
    let mut yaml = String::from("prober: http\ntimeout: 5s\nhttp:\n  preferred_ip_protocol: ip4\n");
    for line in http_extra.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// A scenario under construction.
pub struct Scenario {
    name: &'static str,
    module_yaml: String,
    dir: Option<TempDir>,
    scrape_timeout: Option<String>,
    expect_success: Option<bool>,
    extra_query: String,
    note: Option<&'static str>,
    hosts: Option<String>,
}

/// Both exporters, running on one scenario's config.
///
/// Fields drop in order: both processes are killed before their directory is removed.
struct Pair {
    lookout: Exporter,
    blackbox: Exporter,
    config: String,
    _dir: TempDir,
}

impl Scenario {
    /// A scenario named `name` (the test's name) whose config has one module, [`MODULE`],
    /// with the body `module_yaml` (unindented: `prober: http\nhttp: ...`).
    pub fn new(name: &'static str, module_yaml: impl Into<String>) -> Scenario {
        Scenario {
            name,
            module_yaml: module_yaml.into(),
            dir: None,
            scrape_timeout: Some(SCRAPE_TIMEOUT.to_owned()),
            expect_success: None,
            extra_query: String::new(),
            note: None,
            hosts: None,
        }
    }

    /// A hint printed with any difference, e.g. what the target's body depends on.
    pub fn note(mut self, note: &'static str) -> Scenario {
        self.note = Some(note);
        self
    }

    /// Adds `&name=value` to the `/probe` query (e.g. `hostname`).
    pub fn query(mut self, name: &str, value: &str) -> Scenario {
        self.extra_query
            .push_str(&format!("&{}={}", q(name), q(value)));
        self
    }

    /// Puts the config into `dir`, where the scenario already wrote files it names (CA files).
    pub fn dir(mut self, dir: TempDir) -> Scenario {
        self.dir = Some(dir);
        self
    }

    /// Sends this `X-Prometheus-Scrape-Timeout-Seconds` instead of [`SCRAPE_TIMEOUT`]
    /// (`None`: no header at all).
    pub fn scrape_timeout(mut self, value: Option<&str>) -> Scenario {
        self.scrape_timeout = value.map(str::to_owned);
        self
    }

    /// Asserts blackbox's own `probe_success`, so a scenario cannot silently stop testing the
    /// path it is named after (e.g. both sides failing on a setup mistake).
    pub fn expect_success(mut self, success: bool) -> Scenario {
        self.expect_success = Some(success);
        self
    }

    /// Runs both exporters with `contents` as their `/etc/hosts` (each in a mount namespace of
    /// its own; needs root, and is skipped visibly without it outside CI).
    pub fn hosts_file(mut self, contents: &str) -> Scenario {
        self.hosts = Some(contents.to_owned());
        self
    }

    /// Starts both exporters, or returns `None` when blackbox is missing (locally).
    async fn start(&mut self) -> Option<Pair> {
        let blackbox_bin = blackbox_binary(self.name)?;
        if self.hosts.is_some() && !can_mount_hosts(self.name) {
            return None;
        }
        let dir = match self.dir.take() {
            Some(dir) => dir,
            None => tempfile::tempdir().expect("temp dir"),
        };
        let mut config = format!("modules:\n  {MODULE}:\n");
        for line in self.module_yaml.lines() {
            config.push_str("    ");
            config.push_str(line);
            config.push('\n');
        }
        let path = dir.path().join("compat.yml");
        std::fs::write(&path, &config).expect("write config");
        let hosts = self.hosts.as_ref().map(|contents| {
            let p = dir.path().join("hosts");
            std::fs::write(&p, contents).expect("write hosts file");
            p
        });
        let lookout = Exporter::start(
            "lookout",
            Path::new(env!("CARGO_BIN_EXE_lookout")),
            &path,
            dir.path(),
            hosts.as_deref(),
        )
        .await;
        let blackbox = Exporter::start(
            "blackbox",
            &blackbox_bin,
            &path,
            dir.path(),
            hosts.as_deref(),
        )
        .await;
        Some(Pair {
            lookout,
            blackbox,
            config,
            _dir: dir,
        })
    }

    /// Probes `target` with [`MODULE`] through both exporters and compares the answers.
    pub async fn probe(mut self, target: &str) {
        let Some(pair) = self.start().await else {
            return;
        };
        let path = format!(
            "/probe?module={MODULE}&target={}{}",
            q(target),
            self.extra_query
        );
        let headers: Vec<(&str, &str)> = self
            .scrape_timeout
            .as_deref()
            .map(|t| ("X-Prometheus-Scrape-Timeout-Seconds", t))
            .into_iter()
            .collect();
        let (ours, theirs) = tokio::join!(
            pair.lookout.get(&path, &headers),
            pair.blackbox.get(&path, &headers)
        );

        let context = || {
            format!(
                "GET {path}, scrape timeout {:?}\n{}--- config ---\n{}",
                self.scrape_timeout,
                self.note
                    .map(|n| format!("note: {n}\n"))
                    .unwrap_or_default(),
                pair.config
            )
        };
        let (ours_ct, theirs_ct) = (ours.content_type.clone(), theirs.content_type.clone());
        let (ours, theirs) = match (ours.status, theirs.status) {
            (200, 200) => (Samples::parse(&ours.body), Samples::parse(&theirs.body)),
            _ => panic!(
                "compat scenario `{}`: /probe must answer 200 on both sides; \
                 lookout {} vs blackbox {}\n{}\n--- lookout answer ---\n{}\n--- blackbox answer ---\n{}\
                 \n--- lookout log ---\n{}\n--- blackbox log ---\n{}",
                self.name,
                ours.status,
                theirs.status,
                context(),
                ours.body,
                theirs.body,
                pair.lookout.log(),
                pair.blackbox.log(),
            ),
        };

        if std::env::var_os(DUMP_ENV).is_some() {
            eprintln!(
                "=== compat scenario `{}` ({}) ===\n--- blackbox ---\n{}--- lookout ---\n{}",
                self.name, target, theirs.text, ours.text
            );
        }
        let mut problems = Vec::new();
        if ours.text.is_empty() {
            problems.push("lookout answered an empty body".to_owned());
        }
        problems.extend(diff(&ours, &theirs));
        if let Some(want) = self.expect_success {
            let got = theirs.get("probe_success");
            if got != Some(f64::from(u8::from(want))) {
                problems.push(format!(
                    "scenario setup: blackbox's probe_success is {got:?}, the scenario expects {want} \
                     (fix the scenario, not lookout)"
                ));
            }
        }
        if ours_ct != theirs_ct {
            problems.push(format!(
                "content-type: lookout {ours_ct:?} vs blackbox {theirs_ct:?}"
            ));
        }
        if !problems.is_empty() {
            // The probe logs explain *why* each side got its result; blackbox only shows them
            // with debug=true, so probe once more that way (only on failure).
            let debug_path = format!("{path}&debug=true");
            let (our_debug, their_debug) = tokio::join!(
                pair.lookout.get(&debug_path, &headers),
                pair.blackbox.get(&debug_path, &headers)
            );
            panic!(
                "compat scenario `{}`: lookout differs from blackbox_exporter\n{}\n\
                 differences:\n  - {}\n--- blackbox exposition ---\n{}\n--- lookout exposition ---\n{}\
                 \n--- blackbox debug=true (a second probe) ---\n{}\n--- lookout debug=true (a second probe) ---\n{}",
                self.name,
                context(),
                problems.join("\n  - "),
                theirs.text,
                ours.text,
                their_debug.body,
                our_debug.body,
            );
        }
    }

    /// Sends `path_and_query` with `headers` to both exporters and compares the HTTP status,
    /// the content type and the body byte for byte (for requests `/probe` refuses).
    pub async fn request(mut self, path_and_query: &str, headers: &[(&str, &str)]) {
        let Some(pair) = self.start().await else {
            return;
        };
        let (ours, theirs) = tokio::join!(
            pair.lookout.get(path_and_query, headers),
            pair.blackbox.get(path_and_query, headers)
        );
        let mut problems = Vec::new();
        if ours.status != theirs.status {
            problems.push(format!(
                "status: lookout {} vs blackbox {}",
                ours.status, theirs.status
            ));
        }
        if ours.content_type != theirs.content_type {
            problems.push(format!(
                "content-type: lookout {:?} vs blackbox {:?}",
                ours.content_type, theirs.content_type
            ));
        }
        if ours.body != theirs.body {
            problems.push(format!(
                "body: lookout {:?} vs blackbox {:?}",
                ours.body, theirs.body
            ));
        }
        if !problems.is_empty() {
            panic!(
                "compat scenario `{}`: lookout differs from blackbox_exporter for GET {path_and_query} \
                 with headers {headers:?}\n--- config ---\n{}\ndifferences:\n  - {}",
                self.name,
                pair.config,
                problems.join("\n  - "),
            );
        }
    }
}

/// The note for scenarios whose target echoes the request: its body lists the request line and
/// headers, so a body-length difference means the two exporters sent different requests.
pub const ECHO_NOTE: &str = "the target echoes the request (request line, every header as \
`name: value`, blank line, body); a content or body length difference means the exporters \
sent different requests";
