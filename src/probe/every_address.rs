//! `every_address:` (a lookout extension): probe each address the target's name resolves to,
//! not only the one blackbox would pick, so one bad address behind a multi-address name (a load
//! balancer across zones) fails the probe instead of hiding behind the good ones.
//!
//! A first pass runs the prober with `Addressing::Collect`: it parses the target as usual and,
//! at the point where it would resolve the target's name, `net::resolve` looks up every address
//! and ends that pass. Then the prober runs once per address, concurrently and under the same
//! deadline, with `Addressing::Pinned`, so each pass is a whole probe of one address (the name
//! still goes in the Host header, the TLS server name and the certificate check). No prober
//! knows about the mode; a probe that never resolves its target (an HTTP proxy with
//! `skip_resolve_phase_with_proxy`) or fails before it is the first pass's, unchanged.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::debug;

use crate::probe::ProbeSpec;
use crate::probe::net::DialPolicy;
use crate::probe::prober::{Addressing, FailureKind, ProbeContext, ProbeFailure, ProbeRequest};
use crate::probe::report::{Family, Report};
use crate::probe::resolve::Resolver;
use crate::values::FieldError;

/// `probe_addresses`.
pub static PROBE_ADDRESSES: Family = Family::gauge(
    "probe_addresses",
    "How many addresses the target's name resolved to (every_address).",
);
/// `probe_address_success{address}`.
pub static PROBE_ADDRESS_SUCCESS: Family = Family::gauge(
    "probe_address_success",
    "Whether the probe of this one address succeeded (every_address).",
);
/// `probe_address_duration_seconds{address}`.
pub static PROBE_ADDRESS_DURATION_SECONDS: Family = Family::gauge(
    "probe_address_duration_seconds",
    "How long the probe of this one address took in seconds (every_address).",
);

/// The most addresses probed when `max_addresses` is not set.
pub const DEFAULT_MAX_ADDRESSES: usize = 16;
/// The most `max_addresses` may be: each address is a whole probe, all at once.
pub const MAX_ADDRESSES_LIMIT: usize = 256;

/// When the probe as a whole succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Success {
    /// Every address probed succeeded (the default: one bad address fails the probe).
    #[default]
    All,
    /// At least one address succeeded.
    Any,
}

/// `every_address:` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// `all` (the default) or `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<Success>,
    /// At most this many addresses are probed, the first ones in resolution order (16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_addresses: Option<usize>,
}

/// `every_address:`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EveryAddress {
    /// When the probe succeeds.
    pub success: Success,
    /// How many addresses are probed at most.
    pub max_addresses: usize,
}

impl EveryAddress {
    /// Validates the section for a module of `spec`; errors are relative to the section.
    pub fn build(section: &Section, spec: &ProbeSpec) -> Result<EveryAddress, FieldError> {
        if matches!(spec, ProbeSpec::Unix(_)) {
            return Err(FieldError::new(
                "",
                "every_address does not apply to prober unix (its target is a path, not a name)",
            ));
        }
        let max_addresses = section.max_addresses.unwrap_or(DEFAULT_MAX_ADDRESSES);
        if !(1..=MAX_ADDRESSES_LIMIT).contains(&max_addresses) {
            return Err(FieldError::new(
                "max_addresses",
                format!(
                    "max_addresses must be between 1 and {MAX_ADDRESSES_LIMIT}, not {max_addresses}"
                ),
            ));
        }
        Ok(EveryAddress {
            success: section.success.unwrap_or_default(),
            max_addresses,
        })
    }
}

/// One address's pass.
struct Pass {
    ip: IpAddr,
    report: Report,
    result: Result<(), ProbeFailure>,
    duration: Duration,
}

/// Runs `spec` once per address of the target's name into `report`: the families of the
/// address that decided the outcome (for `all` the first that failed, for `any` the first that
/// succeeded, else the first), one `probe_address_*` series per address and `probe_addresses`.
/// The failure, if any, is the deciding address's, its message naming the address.
pub(crate) async fn probe(
    spec: &ProbeSpec,
    req: &ProbeRequest,
    deadline: Instant,
    resolver: &Resolver,
    dial_policy: &dyn DialPolicy,
    every: EveryAddress,
    report: &mut Report,
) -> Result<(), ProbeFailure> {
    let mut collected = None;
    let mut first = Report::new();
    let result = {
        let mut cx = ProbeContext {
            deadline,
            resolver,
            dial_policy,
            report: &mut first,
            addressing: Addressing::Collect(&mut collected),
        };
        spec.probe(req, &mut cx).await
    };
    let Some((mut ips, lookup)) = collected else {
        // The pass ended before the target's name was resolved, or resolving it failed: that
        // is the probe.
        report.merge(first);
        return result;
    };
    let resolved = ips.len();
    if resolved > every.max_addresses {
        debug!(
            resolved,
            max_addresses = every.max_addresses,
            "Probing only the first max_addresses addresses"
        );
        ips.truncate(every.max_addresses);
    }
    let passes = ips.into_iter().map(|ip| async move {
        let start = Instant::now();
        let mut report = Report::new();
        let result = {
            let mut cx = ProbeContext {
                deadline,
                resolver,
                dial_policy,
                report: &mut report,
                addressing: Addressing::Pinned(ip, lookup),
            };
            match tokio::time::timeout_at(deadline, Box::pin(spec.probe(req, &mut cx))).await {
                Ok(r) => r,
                Err(_) => Err(ProbeFailure::new(
                    FailureKind::Timeout,
                    "probe timed out before this address answered",
                )),
            }
        };
        let duration = start.elapsed();
        debug!(address = %ip, success = result.is_ok(), duration_seconds = duration.as_secs_f64(), "Probed one address");
        Pass {
            ip,
            report,
            result,
            duration,
        }
    });
    let mut passes = futures_util::future::join_all(passes).await;
    let decider = match every.success {
        Success::All => passes.iter().position(|p| p.result.is_err()),
        Success::Any => passes.iter().position(|p| p.result.is_ok()),
    }
    .unwrap_or(0);
    let mut series = Vec::with_capacity(passes.len());
    for p in &passes {
        series.push((p.ip.to_string(), p.result.is_ok(), p.duration));
    }
    let chosen = passes.swap_remove(decider);
    report.merge(chosen.report);
    report.set(&PROBE_ADDRESSES, resolved as f64);
    for (address, ok, duration) in &series {
        let labels = [("address", address.as_str())];
        report.set_labeled(&PROBE_ADDRESS_SUCCESS, &labels, if *ok { 1.0 } else { 0.0 });
        report.set_labeled(
            &PROBE_ADDRESS_DURATION_SECONDS,
            &labels,
            duration.as_secs_f64(),
        );
    }
    let failed = series.iter().filter(|(_, ok, _)| !ok).count();
    match chosen.result {
        Ok(()) => Ok(()),
        Err(f) => {
            let what = match every.success {
                Success::All => format!(
                    "{failed} of {} addresses failed; address {}",
                    series.len(),
                    chosen.ip
                ),
                Success::Any => format!("every address failed; address {}", chosen.ip),
            };
            Err(f.within(&what))
        }
    }
}
