//! `prober: grpc`: the section and its validation. The probe itself comes with the gRPC issue;
//! until then a grpc module loads and its probes fail with a clear reason.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::probe::tls;

/// The `grpc:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The service name for grpc.health.v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Use TLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<tls::Section>,
    /// Whether the other protocol may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,
    /// ip4 or ip6 (default ip6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
}

/// The validated gRPC module.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Service name.
    pub service: String,
    /// Use TLS.
    pub tls: bool,
    /// TLS settings.
    pub tls_config: tls::Spec,
    /// Address preference.
    pub ip: IpPreference,
}

impl Spec {
    /// Validates `section`.
    pub fn build(section: &Section, base: &Path) -> Result<Spec, (String, String)> {
        Ok(Spec {
            service: section.service.clone().unwrap_or_default(),
            tls: section.tls,
            tls_config: tls::Spec::build(&section.tls_config.clone().unwrap_or_default(), base)
                .map_err(|e| ("tls_config".to_owned(), e))?,
            ip: IpPreference {
                preferred: section.preferred_ip_protocol.unwrap_or_default(),
                fallback: section.ip_protocol_fallback.unwrap_or(true),
            },
        })
    }
}

impl Prober for Spec {
    async fn probe(
        &self,
        _req: &ProbeRequest,
        _cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        Err(ProbeFailure::new(
            FailureKind::Unsupported,
            "the grpc prober is not implemented in this lookout version yet",
        ))
    }
}
