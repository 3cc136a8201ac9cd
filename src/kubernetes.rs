//! Targets from Kubernetes: the `kubernetes:` section, and the task that watches Ingresses,
//! Services and Gateway API HTTPRoutes through the API server (kube-rs's watcher: list, then
//! watch from the list's resource version with bookmarks, a new list after 410 Gone, back-off
//! on errors) and offers the targets of the objects that opt in to `Sources` as candidates.
//!
//! The watcher's own store is per kind and scope; an object's targets are derived again at
//! every offer from what was kept of it (`annotations::Object`), so a reload that changes a
//! module applies at once. A bad annotation refuses that object alone: logged once, counted,
//! and reported as a Kubernetes Event on the object. A lost API connection keeps the last
//! known objects until a new list replaces them.

pub mod annotations;
#[cfg(feature = "kubernetes")]
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::probe::report::{Family, Kind as ReportKind, Report};
use crate::sources::Sources;
use crate::values::FieldError;
pub use annotations::Kind;

/// The name discovery offers its targets under.
pub const SOURCE: &str = "kubernetes";

/// `kubernetes:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The API server's URL, without credentials (`kubectl proxy`'s, or a test's); without it
    /// the in-cluster service account, else `$KUBECONFIG` or `~/.kube/config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// Namespaces to watch; empty, all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Kinds to watch (default all: ingress, service, httproute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<String>>,
    /// A label selector the objects must match, as `kubectl -l` takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// The module of objects without `lookout.dev/module` (default `http_2xx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Report a refused object as a Warning Event on it (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<bool>,
}

/// `kubernetes:`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The API server's URL, if given.
    pub api_server: Option<http::Uri>,
    /// Namespaces to watch; empty, all.
    pub namespaces: Vec<String>,
    /// Kinds to watch.
    pub kinds: Vec<Kind>,
    /// The label selector, if any.
    pub label_selector: Option<String>,
    /// The default module.
    pub module: String,
    /// Whether refusals become Events.
    pub events: bool,
}

impl Spec {
    /// Validates the section against the config's modules.
    pub fn build(
        raw: &Section,
        modules: &BTreeMap<String, Arc<crate::config::module::Module>>,
    ) -> Result<Spec, FieldError> {
        if cfg!(not(feature = "kubernetes")) {
            return Err(FieldError::new(
                "",
                "this lookout was built without Kubernetes discovery (cargo feature \"kubernetes\")",
            ));
        }
        let api_server = match &raw.api_server {
            None => None,
            Some(s) => {
                let uri: http::Uri = s.parse().map_err(|e| {
                    FieldError::new("api_server", format!("{s:?} is not a URL: {e}"))
                })?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(FieldError::new(
                        "api_server",
                        format!("{s:?} is not an http:// or https:// URL"),
                    ));
                }
                Some(uri)
            }
        };
        let kinds = match &raw.kinds {
            None => Kind::ALL.to_vec(),
            Some(list) => {
                let mut kinds = Vec::with_capacity(list.len());
                for (i, k) in list.iter().enumerate() {
                    let kind = Kind::parse(k).ok_or_else(|| {
                        FieldError::new(
                            format!("kinds[{i}]"),
                            format!("unknown kind {k:?} (ingress, service or httproute)"),
                        )
                    })?;
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                if kinds.is_empty() {
                    return Err(FieldError::new("kinds", "no kind to watch"));
                }
                kinds
            }
        };
        for (i, ns) in raw.namespaces.iter().enumerate() {
            if ns.is_empty() {
                return Err(FieldError::new(
                    format!("namespaces[{i}]"),
                    "empty namespace",
                ));
            }
        }
        let module = raw.module.clone().unwrap_or_else(|| "http_2xx".into());
        if !modules.contains_key(&module) {
            return Err(FieldError::new(
                "module",
                format!("unknown module {module:?} for discovered targets"),
            ));
        }
        Ok(Spec {
            api_server,
            namespaces: raw.namespaces.clone(),
            kinds,
            label_selector: raw.label_selector.clone().filter(|s| !s.trim().is_empty()),
            module,
            events: raw.events.unwrap_or(true),
        })
    }
}

static OBJECTS: Family = Family::gauge(
    "lookout_kubernetes_objects",
    "Objects of each kind that opt in to probing, as last listed and watched.",
);
static WATCH_ERRORS: Family = Family {
    name: "lookout_kubernetes_watch_errors_total",
    help: "Errors of the list and watch requests of each kind (each followed by a retry with back-off).",
    kind: ReportKind::Counter,
};
static REFUSED: Family = Family {
    name: "lookout_kubernetes_refused_objects_total",
    help: "Times an object's annotations or its targets were refused (each new reason once).",
    kind: ReportKind::Counter,
};
static EVENTS: Family = Family {
    name: "lookout_kubernetes_events_total",
    help: "Kubernetes Events posted about refused objects, by result.",
    kind: ReportKind::Counter,
};
static UP: Family = Family::gauge(
    "lookout_kubernetes_watch_up",
    "Whether each kind's watch is listed and running (0 after an error, until the next list).",
);

/// Discovery's counters, shown on `/metrics` once discovery runs.
#[derive(Debug, Default)]
pub struct Stats {
    running: std::sync::atomic::AtomicBool,
    objects: [AtomicU64; 3],
    errors: [AtomicU64; 3],
    up: [std::sync::atomic::AtomicBool; 3],
    refused: AtomicU64,
    events_sent: AtomicU64,
    events_failed: AtomicU64,
}

fn slot(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl Stats {
    /// The counters for `/metrics`; empty until discovery has run.
    pub fn metrics(&self) -> Report {
        let mut r = Report::new();
        if !self.running.load(Ordering::Relaxed) {
            return r;
        }
        for kind in Kind::ALL {
            let i = slot(kind);
            let l = [("kind", kind.as_str())];
            r.set_labeled(&OBJECTS, &l, self.objects[i].load(Ordering::Relaxed) as f64);
            r.set_labeled(
                &WATCH_ERRORS,
                &l,
                self.errors[i].load(Ordering::Relaxed) as f64,
            );
            r.set_labeled(
                &UP,
                &l,
                f64::from(u8::from(self.up[i].load(Ordering::Relaxed))),
            );
        }
        r.set(&REFUSED, self.refused.load(Ordering::Relaxed) as f64);
        r.set_labeled(
            &EVENTS,
            &[("result", "sent")],
            self.events_sent.load(Ordering::Relaxed) as f64,
        );
        r.set_labeled(
            &EVENTS,
            &[("result", "failed")],
            self.events_failed.load(Ordering::Relaxed) as f64,
        );
        r
    }
}

/// Runs discovery until `stop`: follows `config`'s `kubernetes:` section (restarting the
/// watches when a reload changes it) and offers what it finds to `sources`.
#[cfg_attr(not(feature = "kubernetes"), allow(unused_variables))]
pub async fn run(
    mut config: tokio::sync::watch::Receiver<Arc<Config>>,
    sources: Arc<Sources>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    loop {
        let spec = config.borrow_and_update().kubernetes.clone();
        let followed = config.clone();
        let session = async {
            match spec {
                #[cfg(feature = "kubernetes")]
                Some(spec) => watch::watch(spec, &followed, &sources, &stats).await,
                // `Spec::build` refuses the section in a build without discovery.
                #[cfg(not(feature = "kubernetes"))]
                Some(_) => std::future::pending().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            // The watches ended (they retry on their own, so only if every stream closed):
            // watch again, keeping what they offered until the new lists replace it.
            () = session => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            changed = changed_section(&mut config) => {
                if !changed {
                    return;
                }
            }
        }
        // The section changed: what the old one found goes until the new one offers.
        tracing::info!("Kubernetes discovery settings changed; watching again");
        sources.offer(SOURCE, Vec::new());
    }
}

/// Waits for a config whose `kubernetes:` section differs from the current one; false when the
/// sender is gone.
async fn changed_section(config: &mut tokio::sync::watch::Receiver<Arc<Config>>) -> bool {
    let current = config.borrow().kubernetes.clone();
    loop {
        if config.changed().await.is_err() {
            return false;
        }
        if config.borrow().kubernetes != current {
            return true;
        }
    }
}
