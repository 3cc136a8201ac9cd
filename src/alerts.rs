//! Alerts straight to Alertmanager, as Prometheus sends them: the `alerting:` section, and a
//! sender that posts the firing alerts to every configured Alertmanager's v2 API on each state
//! change and again every `resend_interval` (with `endsAt` ahead, so the alerts of a lookout
//! that died expire by themselves), and each resolved alert once with `endsAt` now.
//!
//! Each Alertmanager has a bounded queue of alerts and its own worker that posts them in
//! batches, retrying with exponential back-off; a full queue drops the oldest alerts (counted).
//! No scrape, rule evaluation or `for` sits on this path: the states it reads were already
//! confirmed by `health`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::probe::report::{Family, Kind, Report};
use crate::probe::resolve::{IpPreference, Resolver};
use crate::probe::{net, tls};
use crate::secret::Secret;
use crate::values::{Choice, ConfigDuration, Conflict, FieldError, value_or_file};

static SENT: Family = Family {
    name: "lookout_alerts_sent_total",
    help: "Alerts (firing and resolved) Alertmanager accepted, by Alertmanager.",
    kind: Kind::Counter,
};
static FAILED: Family = Family {
    name: "lookout_alerts_failed_total",
    help: "Alerts whose post to an Alertmanager failed (they are retried), by Alertmanager.",
    kind: Kind::Counter,
};
static DROPPED: Family = Family {
    name: "lookout_alerts_dropped_total",
    help: "Alerts dropped because an Alertmanager's queue was full, by Alertmanager.",
    kind: Kind::Counter,
};
static QUEUE: Family = Family::gauge(
    "lookout_alerts_queue_length",
    "Alerts waiting to be sent, by Alertmanager.",
);
static ACTIVE: Family = Family::gauge(
    "lookout_alerts_active",
    "Alerts lookout currently has firing.",
);

/// `alerting:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// Where to send alerts; every alert goes to each (an HA pair deduplicates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alertmanagers: Vec<AlertmanagerSection>,
    /// How often firing alerts are sent again (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_interval: Option<ConfigDuration>,
    /// Labels added to every alert (like Prometheus' `external_labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One `alertmanagers:` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSection {
    /// Its base URL (`http://host:9093`, or `https://…`); `/api/v2/alerts` is appended.
    pub url: String,
    /// Basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// TLS settings for an `https` URL (blackbox's `tls_config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<tls::Section>,
    /// How long one post may take (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ConfigDuration>,
}

/// Basic authentication towards Alertmanager.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    #[serde(default)]
    pub username: String,
    /// The password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password (relative to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<std::path::PathBuf>,
}

/// One validated Alertmanager.
#[derive(Debug, Clone)]
pub struct Alertmanager {
    /// The URL as written (the `alertmanager` label of the sender's metrics).
    pub url: String,
    host: String,
    port: u16,
    path: String,
    tls: Option<Arc<tls::Spec>>,
    authorization: Option<Secret>,
    timeout: Duration,
}

/// The validated `alerting:` section.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The Alertmanagers.
    pub alertmanagers: Vec<Alertmanager>,
    /// How often firing alerts are sent again.
    pub resend_interval: Duration,
    /// Labels added to every alert.
    pub labels: BTreeMap<String, String>,
}

/// The resend interval when none is set.
pub const DEFAULT_RESEND: Duration = Duration::from_secs(30);

impl Spec {
    /// Validates `section`; relative file names are read against `base`. The error's path is
    /// relative to `alerting`.
    pub fn build(section: &Section, base: &Path) -> Result<Spec, FieldError> {
        let mut alertmanagers = Vec::with_capacity(section.alertmanagers.len());
        for (i, am) in section.alertmanagers.iter().enumerate() {
            let at = |f: &str| format!("alertmanagers[{i}].{f}");
            let url = url::Url::parse(&am.url).map_err(|e| {
                FieldError::new(at("url"), format!("invalid URL {:?}: {e}", am.url))
            })?;
            let https = match url.scheme() {
                "http" => false,
                "https" => true,
                other => {
                    return Err(FieldError::new(
                        at("url"),
                        format!(
                            "unsupported scheme {other:?} in {:?} (use http or https)",
                            am.url
                        ),
                    ));
                }
            };
            let host = url
                .host_str()
                .ok_or_else(|| FieldError::new(at("url"), format!("no host in {:?}", am.url)))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = url.port_or_known_default().unwrap_or(9093);
            let path = format!("{}/api/v2/alerts", url.path().trim_end_matches('/'));
            let tls = if https {
                let s = tls::Spec::build(&am.tls_config.clone().unwrap_or_default(), base)
                    .map_err(|e| e.within(&at("tls_config")))?;
                Some(Arc::new(s))
            } else {
                None
            };
            let authorization = match &am.basic_auth {
                None => None,
                Some(b) => {
                    let password = value_or_file(
                        base,
                        b.password.clone(),
                        b.password_file.as_deref(),
                        Choice {
                            file_field: "password_file",
                            conflict: Some(Conflict {
                                field: "password",
                                message: "at most one of password and password_file must be configured",
                            }),
                        },
                    )
                    .map_err(|e| e.within(&at("basic_auth")))?
                    .map(|p: Secret| p.expose().to_owned())
                    .unwrap_or_default();
                    let token = base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{password}", b.username));
                    Some(Secret::new(format!("Basic {token}")))
                }
            };
            alertmanagers.push(Alertmanager {
                url: am.url.clone(),
                host,
                port,
                path,
                tls,
                authorization,
                timeout: am.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
            });
        }
        Ok(Spec {
            alertmanagers,
            resend_interval: section
                .resend_interval
                .map(|d| d.0)
                .unwrap_or(DEFAULT_RESEND),
            labels: section.labels.clone(),
        })
    }
}

/// One alert as Alertmanager's v2 API takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Its identity.
    pub labels: BTreeMap<String, String>,
    /// Its description.
    pub annotations: BTreeMap<String, String>,
    /// When it began firing (RFC 3339).
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// When it ends: ahead while firing, now when resolved (RFC 3339).
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    /// A link back to lookout.
    #[serde(rename = "generatorURL", skip_serializing_if = "String::is_empty")]
    pub generator_url: String,
}

/// A firing alert as the sender's source reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    /// Its labels (without the `alerting:` labels, which the sender adds).
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// Since when it fires.
    pub since: SystemTime,
}

/// `t` in RFC 3339 with milliseconds, UTC, as Alertmanager reads it (the log lines' format).
pub fn rfc3339(t: SystemTime) -> String {
    crate::logging::timestamp(t)
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    queued: AtomicU64,
}

/// The most alerts one Alertmanager's queue holds, and the most one post carries.
const QUEUE_CAPACITY: usize = 10_000;
const BATCH: usize = 64;

#[derive(Debug)]
struct Queue {
    am: Alertmanager,
    alerts: Mutex<VecDeque<Alert>>,
    wake: Notify,
    counters: Counters,
}

impl Queue {
    fn push(&self, batch: &[Alert]) {
        let mut q = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        for a in batch {
            if q.len() >= QUEUE_CAPACITY {
                q.pop_front();
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(a.clone());
        }
        self.counters
            .queued
            .store(q.len() as u64, Ordering::Relaxed);
        drop(q);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<Alert> {
        let mut q = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len().min(BATCH);
        let batch: Vec<Alert> = q.drain(..n).collect();
        self.counters
            .queued
            .store(q.len() as u64, Ordering::Relaxed);
        batch
    }

    /// Puts a batch that could not be sent back in front, unless newer alerts filled the queue.
    fn put_back(&self, batch: Vec<Alert>) {
        let mut q = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        for a in batch.into_iter().rev() {
            if q.len() >= QUEUE_CAPACITY {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            q.push_front(a);
        }
        self.counters
            .queued
            .store(q.len() as u64, Ordering::Relaxed);
    }
}

/// Sends lookout's alerts to the configured Alertmanagers.
#[derive(Debug, Default)]
pub struct Sender {
    queues: Mutex<Vec<Arc<Queue>>>,
    active: AtomicU64,
}

impl Sender {
    /// The sender's metrics.
    pub fn metrics(&self) -> Report {
        let mut r = Report::new();
        r.set(&ACTIVE, self.active.load(Ordering::Relaxed) as f64);
        for q in self.queues.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let l = [("alertmanager", q.am.url.as_str())];
            r.set_labeled(&SENT, &l, q.counters.sent.load(Ordering::Relaxed) as f64);
            r.set_labeled(
                &FAILED,
                &l,
                q.counters.failed.load(Ordering::Relaxed) as f64,
            );
            r.set_labeled(
                &DROPPED,
                &l,
                q.counters.dropped.load(Ordering::Relaxed) as f64,
            );
            r.set_labeled(&QUEUE, &l, q.counters.queued.load(Ordering::Relaxed) as f64);
        }
        r
    }

    /// Runs until `stop`: whenever `changed` is notified and every resend interval, asks
    /// `firing` for the alerts that fire now and queues them (and those that stopped firing, as
    /// resolved) for every Alertmanager of `spec` (re-read on each round, so a reload applies).
    pub async fn run(
        self: Arc<Self>,
        spec: impl Fn() -> Arc<Spec> + Send + 'static,
        firing: impl Fn() -> Vec<Firing> + Send + 'static,
        changed: Arc<Notify>,
        resolver: Resolver,
        generator_url: String,
        stop: CancellationToken,
    ) {
        let mut last: BTreeMap<Vec<(String, String)>, Firing> = BTreeMap::new();
        let mut workers: BTreeMap<String, (Arc<Queue>, CancellationToken)> = BTreeMap::new();
        loop {
            let spec = spec();
            self.sync_workers(&spec, &mut workers, &resolver, &stop);
            let now = SystemTime::now();
            let ends = now + spec.resend_interval * 4;
            let mut batch = Vec::new();
            let mut current = BTreeMap::new();
            // With no Alertmanager to tell, do not walk every target's health.
            let firing_now = if spec.alertmanagers.is_empty() {
                Vec::new()
            } else {
                firing()
            };
            for mut f in firing_now {
                for (k, v) in &spec.labels {
                    f.labels.entry(k.clone()).or_insert_with(|| v.clone());
                }
                let key: Vec<(String, String)> = f
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                batch.push(Alert {
                    labels: f.labels.clone(),
                    annotations: f.annotations.clone(),
                    starts_at: rfc3339(f.since),
                    ends_at: rfc3339(ends),
                    generator_url: generator_url.clone(),
                });
                current.insert(key, f);
            }
            for (key, f) in &last {
                if !current.contains_key(key) {
                    batch.push(Alert {
                        labels: f.labels.clone(),
                        annotations: f.annotations.clone(),
                        starts_at: rfc3339(f.since),
                        ends_at: rfc3339(now),
                        generator_url: generator_url.clone(),
                    });
                }
            }
            self.active.store(current.len() as u64, Ordering::Relaxed);
            last = current;
            if !batch.is_empty() {
                for (q, _) in workers.values() {
                    q.push(&batch);
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = changed.notified() => {}
                _ = tokio::time::sleep(spec.resend_interval) => {}
            }
        }
        for (_, (_, w)) in workers {
            w.cancel();
        }
    }

    /// Starts a worker for each new Alertmanager and stops those no longer configured.
    fn sync_workers(
        &self,
        spec: &Spec,
        workers: &mut BTreeMap<String, (Arc<Queue>, CancellationToken)>,
        resolver: &Resolver,
        stop: &CancellationToken,
    ) {
        let wanted: BTreeMap<&str, &Alertmanager> = spec
            .alertmanagers
            .iter()
            .map(|a| (a.url.as_str(), a))
            .collect();
        workers.retain(|url, (_, token)| {
            let keep = wanted.contains_key(url.as_str());
            if !keep {
                token.cancel();
            }
            keep
        });
        for (url, am) in wanted {
            if workers.contains_key(url) {
                continue;
            }
            let q = Arc::new(Queue {
                am: am.clone(),
                alerts: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                counters: Counters::default(),
            });
            let token = stop.child_token();
            tokio::spawn(worker(q.clone(), resolver.clone(), token.clone()));
            workers.insert(url.to_owned(), (q, token));
        }
        *self.queues.lock().unwrap_or_else(|e| e.into_inner()) =
            workers.values().map(|(q, _)| q.clone()).collect();
    }
}

/// Posts one Alertmanager's queue in batches, backing off (1 s doubling to 30 s) after a
/// failure.
async fn worker(q: Arc<Queue>, resolver: Resolver, stop: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let batch = q.take();
        if batch.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = q.wake.notified() => continue,
            }
        }
        let n = batch.len() as u64;
        let result = tokio::time::timeout(q.am.timeout, post(&q.am, &batch, &resolver)).await;
        match result {
            Ok(Ok(())) => {
                q.counters.sent.fetch_add(n, Ordering::Relaxed);
                backoff = Duration::from_secs(1);
            }
            failure => {
                let err = match failure {
                    Ok(Err(e)) => e,
                    _ => format!("no answer within {:?}", q.am.timeout),
                };
                tracing::warn!(alertmanager = %q.am.url, err = %err, alerts = n, "Error sending alerts; retrying");
                q.counters.failed.fetch_add(n, Ordering::Relaxed);
                q.put_back(batch);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// One `POST /api/v2/alerts`.
async fn post(am: &Alertmanager, batch: &[Alert], resolver: &Resolver) -> Result<(), String> {
    let body = serde_json::to_vec(batch).map_err(|e| e.to_string())?;
    let (ip, _) = resolver
        .lookup(&am.host, IpPreference::default())
        .await
        .map_err(|f| f.message)?;
    let tcp = net::connect_service(SocketAddr::new(ip, am.port))
        .await
        .map_err(|f| f.message)?;
    let mut req = http::Request::post(am.path.as_str())
        .header(http::header::HOST, host_header(&am.host, am.port))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("lookout/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(a) = &am.authorization {
        req = req.header(http::header::AUTHORIZATION, a.expose());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let status = match &am.tls {
        None => send(TokioIo::new(tcp), req).await?,
        Some(tls) => {
            let (stream, _) = tls
                .handshake(tcp, &am.host, &[b"http/1.1"])
                .await
                .map_err(|f| f.message)?;
            send(TokioIo::new(stream), req).await?
        }
    };
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("Alertmanager answered {status}"))
    }
}

fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn send<S>(
    io: TokioIo<S>,
    req: http::Request<Full<Bytes>>,
) -> Result<http::StatusCode, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    // Read (a bounded amount of) the answer so the connection ends cleanly.
    let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_763_200_123);
        assert_eq!(rfc3339(t), "2025-12-03T12:00:00.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
