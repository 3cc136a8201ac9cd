//! Probing: one module per protocol behind the `Prober` trait, and `run`, the one entry point
//! that both `/probe` and the scheduler call.

pub mod dns;
pub mod every_address;
pub mod expect;
pub mod grpc;
pub mod hosts;
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
pub mod unix;
pub mod websocket;

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
/// `probe_failure_info{reason}`: why a probe failed, one label value from `Reason` (the shape
/// proposed upstream in blackbox_exporter PR #1334). Scheduled targets always have it; `/probe`
/// answers with `--probe.failure-info`.
pub static PROBE_FAILURE_INFO: Family = Family::gauge(
    "probe_failure_info",
    "Why the probe failed: 1 with the failure's reason as a label; absent when it succeeded.",
);

/// Adds `probe_failure_info{reason}` for `failure`, if the probe failed.
pub fn record_failure_info(report: &mut Report, failure: Option<&ProbeFailure>) {
    if let Some(f) = failure {
        report.set_labeled(&PROBE_FAILURE_INFO, &[("reason", f.reason().as_str())], 1.0);
    }
}

/// `probe_duration_seconds`.
pub static PROBE_DURATION_SECONDS: Family = Family::gauge(
    "probe_duration_seconds",
    "Returns how long the probe took to complete in seconds",
);

/// In unit tests, a probe of this target panics inside the prober's task: the only way to show
/// that a panic is caught and counted, since no real input makes a prober panic.
#[cfg(test)]
pub const PANIC_TARGET: &str = "lookout-test:panic";

/// The prober table: every `prober:` name with its `ProbeSpec` variant and the module (named as
/// the prober) that owns its `Section`, `Spec` and `impl Prober`, listed once. It calls
/// `$callback!` with the rows, so each place that must know every prober generates its part from
/// here: below, `ProbeSpec`, `prober_name`, the dispatch and [`PROBER_NAMES`]; in
/// `config/module.rs`, `RawModule`'s sections and the build `match`. Adding a prober is a new
/// file under `probe/` plus one row (and its name in `helm/lookout/values.schema.json`, which
/// tests/deploy checks against the binary).
macro_rules! probers {
    ($callback:ident) => {
        $callback! {
            http => Http, "HTTP";
            tcp => Tcp, "TCP";
            dns => Dns, "DNS";
            icmp => Icmp, "ICMP";
            grpc => Grpc, "gRPC";
            postgres => Postgres, "PostgreSQL (lookout)";
            mqtt => Mqtt, "MQTT (lookout)";
            redis => Redis, "Redis (lookout)";
            unix => Unix, "unix socket";
            websocket => Websocket, "WebSocket";
        }
    };
}
pub(crate) use probers;

/// Generates `ProbeSpec`, its `prober_name` and dispatch, and `PROBER_NAMES` from the table.
macro_rules! probe_spec {
    ($($name:ident => $variant:ident, $title:literal;)*) => {
        /// A module's validated probe settings: one variant per `prober:` value.
        ///
        /// Variants differ in size; specs live once per module behind an `Arc`, so boxing buys
        /// nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone)]
        pub enum ProbeSpec {
            $(
                #[doc = concat!("`prober: ", stringify!($name), "`: ", $title, ".")]
                $variant($name::Spec),
            )*
        }

        /// Every `prober:` name, in the table's order.
        pub const PROBER_NAMES: &[&str] = &[$(stringify!($name)),*];

        impl ProbeSpec {
            /// The `prober:` name.
            pub fn prober_name(&self) -> &'static str {
                match self {
                    $(ProbeSpec::$variant(_) => stringify!($name),)*
                }
            }

            /// Runs the prober of this spec (`run` wraps it with the deadline, the panic
            /// boundary and the common families).
            pub(crate) async fn probe(
                &self,
                req: &ProbeRequest,
                cx: &mut ProbeContext<'_>,
            ) -> Result<(), ProbeFailure> {
                match self {
                    $(ProbeSpec::$variant(s) => s.probe(req, cx).await,)*
                }
            }
        }
    };
}
probers!(probe_spec);

/// The prober names as a sentence's list: `http, tcp, … or redis`, for error messages.
pub fn prober_list() -> String {
    match PROBER_NAMES.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// What a module says about request-level overrides, so `/probe` asks the spec rather than
/// matching on protocols.
impl ProbeSpec {
    /// Whether `/probe?hostname=` applies to this prober (blackbox: HTTP only).
    pub fn takes_hostname(&self) -> bool {
        matches!(self, ProbeSpec::Http(_))
    }

    /// The Host header the module sets itself, which a `hostname=` parameter must not contradict.
    pub fn host_header(&self) -> Option<&str> {
        match self {
            ProbeSpec::Http(s) => s.host_header(),
            _ => None,
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
    /// Whether the probe panicked (a bug; `failure` is then `FailureKind::Internal`).
    pub panicked: bool,
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

/// Runs one probe of `spec` against `req`, ending by `deadline`, asking `dial_policy` before
/// every connection or datagram (`net::AllowAll` for scheduled targets, the `probe_access`
/// policy for `/probe`). Never fails: a failure is data in
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
    dial_policy: &dyn net::DialPolicy,
    every_address: Option<every_address::EveryAddress>,
) -> Outcome {
    // Every line the probe logs carries these, as blackbox's per-probe logger does.
    let scope = std::sync::Arc::from([
        ("module", module.to_owned()),
        ("target", req.target.clone()),
        ("prober", spec.prober_name().to_owned()),
    ]);
    let begun = Instant::now();
    let timeout = deadline.saturating_duration_since(begun);
    let task = std::panic::AssertUnwindSafe(async move {
        crate::logging::capture(scope, async move {
            debug!(timeout_seconds = timeout.as_secs_f64(), "Beginning probe");
            let start = Instant::now();
            let mut report = Report::new();
            report.declare(&PROBE_SUCCESS);
            report.declare(&PROBE_DURATION_SECONDS);
            let result = {
                #[cfg(test)]
                if req.target == PANIC_TARGET {
                    panic!("a test asked this probe to panic");
                }
                let probe = async {
                    match every_address {
                        None => {
                            let mut cx = ProbeContext {
                                deadline,
                                resolver: &resolver,
                                dial_policy,
                                report: &mut report,
                                addressing: crate::probe::prober::Addressing::One,
                            };
                            spec.probe(&req, &mut cx).await
                        }
                        Some(every) => {
                            every_address::probe(
                                &spec,
                                &req,
                                deadline,
                                &resolver,
                                dial_policy,
                                every,
                                &mut report,
                            )
                            .await
                        }
                    }
                };
                // Boxed: the future of the largest prober is several KiB, and unboxed it
                // would make every caller's future (and the task holding it) that big, moved
                // whole when spawned; boxed it is allocated once, when the probe starts.
                tokio::time::timeout_at(deadline, Box::pin(probe)).await
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
            panicked: false,
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
            let duration = begun.elapsed();
            let mut report = Report::new();
            report.set(&PROBE_SUCCESS, 0.0);
            report.set(&PROBE_DURATION_SECONDS, duration.as_secs_f64());
            Outcome {
                report,
                failure: Some(ProbeFailure::new(
                    FailureKind::Internal,
                    format!("probe panicked: {e}"),
                )),
                panicked: true,
                duration,
                logs: ProbeLog::default(),
            }
        }
    }
}
