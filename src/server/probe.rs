//! `GET /probe`: blackbox's probe endpoint, with its statuses and messages for bad requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::State as AppState;
use crate::access;
use crate::config::module::Module;
use crate::metrics::{self, Format};
use crate::probe::prober::ProbeRequest;
use crate::probe::report::{Family, Kind, Report};
use crate::probe::{self as probe_mod};
use crate::results::ProbeResult;

/// `probe_cached`: on answers of modules with `cache:`, whether the answer is a kept result.
static PROBE_CACHED: Family = Family::gauge(
    "probe_cached",
    "Whether this answer is a result kept from an earlier probe (1) or a new probe (0); only for modules with cache.",
);
static CACHE_HITS: Family = Family {
    name: "lookout_probe_cache_answers_total",
    help: "/probe requests of modules with cache, by whether a kept result answered (hit) or a new probe ran (miss).",
    kind: Kind::Counter,
};

/// The most results kept for `cache:` modules. Past it the expired ones go first, and if none
/// has expired the whole cache is emptied: a request then probes afresh, nothing else changes.
pub const CACHE_ENTRIES: usize = 10_000;

/// Results kept for modules with `cache:`, by module, target and `hostname`. An entry answers
/// only for the very module it was probed with, so a reload (new modules) empties it in effect.
#[derive(Debug, Default)]
pub struct Cache {
    entries: std::sync::Mutex<HashMap<CacheKey, Kept>>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

/// Module name, target, `hostname`.
type CacheKey = (String, String, Option<String>);

#[derive(Debug)]
struct Kept {
    at: Instant,
    module: Arc<Module>,
    result: Arc<ProbeResult>,
}

impl Cache {
    fn get(
        &self,
        key: &CacheKey,
        module: &Arc<Module>,
        max_age: Duration,
    ) -> Option<Arc<ProbeResult>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let kept = entries.get(key)?;
        (Arc::ptr_eq(&kept.module, module) && kept.at.elapsed() <= max_age)
            .then(|| kept.result.clone())
    }

    fn put(&self, key: CacheKey, module: Arc<Module>, result: Arc<ProbeResult>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_ENTRIES && !entries.contains_key(&key) {
            entries.retain(|_, k| k.module.cache.is_some_and(|age| k.at.elapsed() <= age));
            if entries.len() >= CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Kept {
                at: Instant::now(),
                module,
                result,
            },
        );
    }

    /// The hit and miss counters, once a `cache:` module was asked for.
    pub fn metrics(&self) -> Report {
        use std::sync::atomic::Ordering::Relaxed;
        let (hits, misses) = (self.hits.load(Relaxed), self.misses.load(Relaxed));
        let mut r = Report::new();
        if hits + misses > 0 {
            r.set_labeled(&CACHE_HITS, &[("result", "hit")], hits as f64);
            r.set_labeled(&CACHE_HITS, &[("result", "miss")], misses as f64);
        }
        r
    }
}

/// The one-sample report of `probe_cached`.
fn cached_flag(cached: bool) -> Report {
    let mut r = Report::with_capacity(1);
    r.set(&PROBE_CACHED, if cached { 1.0 } else { 0.0 });
    r
}

/// Why a `/probe` request is refused, each with blackbox's status and text.
#[derive(Debug)]
pub enum ProbeRequestError {
    /// `target` missing or empty: 400.
    MissingTarget,
    /// No such module: 400.
    UnknownModule(String),
    /// The scrape-timeout header is not a number: 500, as blackbox.
    BadTimeoutHeader(String),
    /// `hostname` conflicts with the module's Host header: 400.
    HostnameConflict {
        configured: String,
        requested: String,
    },
    /// `probe_limits` turned the request away: 429 with `Retry-After`, before any probe work.
    Limited(crate::limits::Refusal),
    /// `probe_access` refused an address the probe was about to dial: 403, with the reason,
    /// and with `debug=true` the probe's debug text after it.
    Refused {
        reason: String,
        debug: Option<String>,
    },
}

impl IntoResponse for ProbeRequestError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            ProbeRequestError::Limited(r) => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [
                        (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
                        (header::RETRY_AFTER, r.retry_after.to_string()),
                    ],
                    format!("Probe refused by probe_limits: {r}\n"),
                )
                    .into_response();
            }
            ProbeRequestError::Refused { reason, debug } => (
                StatusCode::FORBIDDEN,
                match debug {
                    None => format!("Probe refused by probe_access: {reason}"),
                    Some(d) => format!("Probe refused by probe_access: {reason}\n\n{d}"),
                },
            ),
            ProbeRequestError::MissingTarget => (
                StatusCode::BAD_REQUEST,
                "Target parameter is missing".to_owned(),
            ),
            ProbeRequestError::UnknownModule(m) => {
                (StatusCode::BAD_REQUEST, format!("Unknown module {m:?}"))
            }
            ProbeRequestError::BadTimeoutHeader(v) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "Failed to parse timeout from Prometheus header: strconv.ParseFloat: parsing {v:?}: invalid syntax"
                ),
            ),
            ProbeRequestError::HostnameConflict {
                configured,
                requested,
            } => (
                StatusCode::BAD_REQUEST,
                format!(
                    "host header defined both in module configuration ({configured}) and with URL-parameter 'hostname' ({requested})"
                ),
            ),
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{text}\n"),
        )
            .into_response()
    }
}

/// blackbox's `getTimeout`: the scrape timeout header (120 s when absent or 0) minus the offset,
/// capped by the module timeout; the module timeout also applies when the result is negative.
pub fn probe_timeout(
    header: Option<&str>,
    module_timeout: Option<Duration>,
    offset: f64,
) -> Result<f64, String> {
    let mut seconds = match header {
        Some(v) if !v.is_empty() => v.trim().parse::<f64>().map_err(|_| v.to_owned())?,
        _ => 0.0,
    };
    if seconds == 0.0 {
        seconds = 120.0;
    }
    let max = seconds - offset;
    let module = module_timeout.map(|d| d.as_secs_f64()).unwrap_or(0.0);
    Ok(if (module > 0.0 && module < max) || max < 0.0 {
        module
    } else {
        max
    })
}

/// Handles `GET /probe`.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    peer: Option<axum::Extension<super::Peer>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ProbeRequestError> {
    let config = state.config.load_full();
    let module_name = params
        .get("module")
        .filter(|m| !m.is_empty())
        .cloned()
        .unwrap_or_else(|| "http_2xx".into());
    let Some(module) = config.modules.get(&module_name).cloned() else {
        tracing::debug!(module = %module_name, "Unknown module");
        state.metrics.record_unknown_module();
        return Err(ProbeRequestError::UnknownModule(module_name));
    };
    let header_value = headers
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .and_then(|v| v.to_str().ok());
    let timeout = probe_timeout(header_value, module.timeout, state.timeout_offset)
        .map_err(ProbeRequestError::BadTimeoutHeader)?;
    let target = params
        .get("target")
        .filter(|t| !t.is_empty())
        .cloned()
        .ok_or(ProbeRequestError::MissingTarget)?;
    let mut hostname = None;
    if let Some(h) = params.get("hostname").filter(|h| !h.is_empty())
        && module.spec.takes_hostname()
    {
        if let Some(configured) = module.spec.host_header()
            && configured != h
        {
            return Err(ProbeRequestError::HostnameConflict {
                configured: configured.to_owned(),
                requested: h.clone(),
            });
        }
        hostname = Some(h.clone());
    }

    // Limits last among the checks, so a bad request still gets its 400, and before anything
    // is resolved or dialled. The permit is held until the answer is built.
    let _permit = state
        .limiter
        .acquire(
            &config.probe_limits,
            peer.map(|p| p.0.0.ip()),
            std::time::Instant::now(),
        )
        .map_err(|r| {
            state.metrics.record_limited(r.reason);
            tracing::debug!(module = %module_name, target = %target, reason = r.reason.as_str(), "Probe refused by probe_limits");
            ProbeRequestError::Limited(r)
        })?;
    let debug = params.get("debug").map(String::as_str) == Some("true");
    // `cache:`: a result young enough answers instead of a new probe (never for debug=true,
    // which asks for a probe's log).
    // The key is only made for such modules: the other requests copy nothing for it.
    let cache_key = module
        .cache
        .map(|_| (module_name.clone(), target.clone(), hostname.clone()));
    if let (Some(max_age), Some(key)) = (module.cache.filter(|_| !debug), &cache_key) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(kept) = state.probe_cache.get(key, &module, max_age) {
            state.probe_cache.hits.fetch_add(1, Relaxed);
            let format = Format::negotiate(
                headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
                state.openmetrics,
            );
            let flag = cached_flag(true);
            let body = metrics::encode(format, &[(&[], &kept.report), (&[], &flag)]);
            return Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response());
        }
        state.probe_cache.misses.fetch_add(1, Relaxed);
    }
    let deadline =
        Instant::now() + Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::ZERO);
    let req = ProbeRequest {
        target: target.clone(),
        hostname,
    };
    let started = SystemTime::now();
    let gate = access::Gate::new(&config.probe_access);
    let outcome = probe_mod::run(
        module.spec.clone(),
        &module_name,
        req,
        deadline,
        module
            .resolver
            .clone()
            .unwrap_or_else(|| state.resolver.clone()),
        &gate,
        module.every_address,
    )
    .await;
    let mut outcome = outcome;
    if state.failure_info {
        probe_mod::record_failure_info(&mut outcome.report, outcome.failure.as_ref());
    }
    // Published first: the counters, the recent-probes ring and every later subscriber see
    // the probe even if encoding the answer fails.
    let result = state
        .results
        .publish(ProbeResult::new(outcome, module.clone(), target, started));
    if let Some(refusal) = gate.refusal() {
        state.metrics.record_access_refusal(refusal.reason);
        tracing::warn!(
            module = %module_name,
            target = %result.target(),
            addr = %refusal.addr,
            reason = refusal.reason.as_str(),
            err = %refusal,
            "Probe refused by probe_access"
        );
        return Err(ProbeRequestError::Refused {
            reason: refusal.to_string(),
            debug: debug.then(|| debug_output(&result)),
        });
    }
    if let Some(reason) = gate.unix_refusal() {
        state
            .metrics
            .record_access_refusal(access::Reason::DefaultDeny);
        tracing::warn!(
            module = %module_name,
            target = %result.target(),
            reason = access::Reason::DefaultDeny.as_str(),
            err = %reason,
            "Probe refused by probe_access"
        );
        return Err(ProbeRequestError::Refused {
            reason: reason.to_owned(),
            debug: debug.then(|| debug_output(&result)),
        });
    }
    let response = if debug {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            debug_output(&result),
        )
            .into_response()
    } else {
        let format = Format::negotiate(
            headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
            state.openmetrics,
        );
        let body = match cache_key {
            None => metrics::encode(format, &[(&[], &result.report)]),
            Some(key) => {
                state.probe_cache.put(key, module.clone(), result.clone());
                metrics::encode(format, &[(&[], &result.report), (&[], &cached_flag(false))])
            }
        };
        ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
    };
    Ok(response)
}

/// blackbox's debug text: the probe's log, the metrics, the module's config (secrets hidden).
pub fn debug_output(result: &ProbeResult) -> String {
    let exposition = metrics::encode_text(&[(&[], &result.report)]);
    let mut out = String::with_capacity(exposition.len() + 1024);
    out.push_str("Logs for the probe:\n");
    for l in result.logs.lines() {
        out.push_str(&l);
        out.push('\n');
    }
    out.push_str("\n\n\nMetrics that would have been returned:\n");
    out.push_str(&exposition);
    out.push_str("\n\n\nModule configuration:\n");
    out.push_str(&serde_norway::to_string(&result.module.raw).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_follows_blackbox() {
        let s = |v: f64| Some(Duration::from_secs_f64(v));
        assert_eq!(probe_timeout(None, None, 0.5).unwrap(), 119.5);
        assert_eq!(probe_timeout(Some("10"), None, 0.5).unwrap(), 9.5);
        assert_eq!(probe_timeout(Some("10"), s(5.0), 0.5).unwrap(), 5.0);
        assert_eq!(probe_timeout(Some("3"), s(5.0), 0.5).unwrap(), 2.5);
        assert_eq!(probe_timeout(Some("0.2"), s(5.0), 0.5).unwrap(), 5.0);
        assert!(probe_timeout(Some("abc"), None, 0.5).is_err());
    }
}
