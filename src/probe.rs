//! Probing: one module per protocol behind the `Prober` trait, and `run`, the one entry point
//! that both `/probe` and (later) the scheduler call.

pub mod dns;
pub mod expect;
pub mod grpc;
pub mod http;
pub mod icmp;
pub mod mqtt;
pub mod net;
pub mod postgres;
pub mod prober;
pub mod query_response;
pub mod redis;
pub mod report;
pub mod resolve;
pub mod tcp;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::logging::ProbeLog;
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::report::{Family, Report};
use crate::probe::resolve::Resolver;

/// `probe_success`.
pub static PROBE_SUCCESS: Family = Family::gauge(
    "probe_success",
    "Displays whether or not the probe was a success",
);
/// `probe_duration_seconds`.
pub static PROBE_DURATION_SECONDS: Family = Family::gauge(
    "probe_duration_seconds",
    "Returns how long the probe took to complete in seconds",
);

/// A module's validated probe settings: one variant per `prober:` value.
///
/// Variants differ in size; specs live once per module behind an `Arc`, so boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ProbeSpec {
    /// `prober: http`.
    Http(http::Spec),
    /// `prober: tcp`.
    Tcp(tcp::Spec),
    /// `prober: dns`.
    Dns(dns::Spec),
    /// `prober: icmp`.
    Icmp(icmp::Spec),
    /// `prober: grpc`.
    Grpc(grpc::Spec),
    /// `prober: postgres` (lookout).
    Postgres(postgres::Spec),
    /// `prober: mqtt` (lookout).
    Mqtt(mqtt::Spec),
    /// `prober: redis` (lookout).
    Redis(redis::Spec),
}

impl ProbeSpec {
    /// The `prober:` name.
    pub fn prober_name(&self) -> &'static str {
        match self {
            ProbeSpec::Http(_) => "http",
            ProbeSpec::Tcp(_) => "tcp",
            ProbeSpec::Dns(_) => "dns",
            ProbeSpec::Icmp(_) => "icmp",
            ProbeSpec::Grpc(_) => "grpc",
            ProbeSpec::Postgres(_) => "postgres",
            ProbeSpec::Mqtt(_) => "mqtt",
            ProbeSpec::Redis(_) => "redis",
        }
    }

    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        match self {
            ProbeSpec::Http(s) => s.probe(req, cx).await,
            ProbeSpec::Tcp(s) => s.probe(req, cx).await,
            ProbeSpec::Dns(s) => s.probe(req, cx).await,
            ProbeSpec::Icmp(s) => s.probe(req, cx).await,
            ProbeSpec::Grpc(s) => s.probe(req, cx).await,
            ProbeSpec::Postgres(s) => s.probe(req, cx).await,
            ProbeSpec::Mqtt(s) => s.probe(req, cx).await,
            ProbeSpec::Redis(s) => s.probe(req, cx).await,
        }
    }
}

/// The result of one probe, as plain data.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The samples, including `probe_success` and `probe_duration_seconds`.
    pub report: Report,
    /// Why it failed; `None` on success.
    pub failure: Option<ProbeFailure>,
    /// How long it took.
    pub duration: Duration,
    /// The probe's captured log (formatted when read).
    pub logs: ProbeLog,
}

impl Outcome {
    /// Whether the probe succeeded.
    pub fn success(&self) -> bool {
        self.failure.is_none()
    }
}

/// Runs one probe of `spec` against `req`, ending by `deadline`. Never fails: a failure is data in
/// the `Outcome`, and a panic is caught and becomes a failed probe, not a dead process.
///
/// It runs in the caller's task rather than a spawned one: dropping this future (a `/probe`
/// client that hangs up) cancels the probe and closes its sockets at once, as blackbox's request
/// context does, and a probe's wakeups stay on one worker thread (about 3% less CPU per probe
/// under load than a spawned task, benches/vs-blackbox).
pub async fn run(
    spec: Arc<ProbeSpec>,
    module: &str,
    req: ProbeRequest,
    deadline: Instant,
    resolver: Resolver,
) -> Outcome {
    // Every line the probe logs carries these, as blackbox's per-probe logger does.
    let scope = vec![
        ("module", module.to_owned()),
        ("target", req.target.clone()),
        ("prober", spec.prober_name().to_owned()),
    ];
    let timeout = deadline.saturating_duration_since(Instant::now());
    let task = std::panic::AssertUnwindSafe(async move {
        crate::logging::capture(scope, async move {
            debug!(timeout_seconds = timeout.as_secs_f64(), "Beginning probe");
            let start = Instant::now();
            let mut report = Report::new();
            report.declare(&PROBE_SUCCESS);
            report.declare(&PROBE_DURATION_SECONDS);
            let result = {
                let mut cx = ProbeContext {
                    deadline,
                    resolver: &resolver,
                    dial_policy: &net::AllowAll,
                    report: &mut report,
                };
                // Boxed: the future of the largest prober is several KiB, and unboxed it
                // would make every caller's future (and the task holding it) that big, moved
                // whole when spawned; boxed it is allocated once, when the probe starts.
                tokio::time::timeout_at(deadline, Box::pin(spec.probe(&req, &mut cx))).await
            };
            let failure = match result {
                Ok(Ok(())) => None,
                Ok(Err(f)) => Some(f),
                Err(_) => Some(ProbeFailure::new(
                    FailureKind::Timeout,
                    format!("probe timed out after {:.3}s", timeout.as_secs_f64()),
                )),
            };
            let duration = start.elapsed();
            report.set(&PROBE_DURATION_SECONDS, duration.as_secs_f64());
            report.set(&PROBE_SUCCESS, if failure.is_none() { 1.0 } else { 0.0 });
            match &failure {
                None => debug!(duration_seconds = duration.as_secs_f64(), "Probe succeeded"),
                Some(f) => debug!(
                    reason = f.kind.as_str(),
                    err = %f.message,
                    duration_seconds = duration.as_secs_f64(),
                    "Probe failed"
                ),
            }
            (report, failure, duration)
        })
        .await
    });
    match futures_util::FutureExt::catch_unwind(task).await {
        Ok(((report, failure, duration), logs)) => Outcome {
            report,
            failure,
            duration,
            logs,
        },
        Err(e) => {
            let e = e
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| e.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(module = module, err = %e, "probe panicked");
            let mut report = Report::new();
            report.set(&PROBE_SUCCESS, 0.0);
            report.set(&PROBE_DURATION_SECONDS, 0.0);
            Outcome {
                report,
                failure: Some(ProbeFailure::new(
                    FailureKind::Internal,
                    format!("probe panicked: {e}"),
                )),
                duration: Duration::ZERO,
                logs: ProbeLog::default(),
            }
        }
    }
}
