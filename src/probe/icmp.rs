//! `prober: icmp`: the section and its validation. The probe itself comes with the ICMP issue;
//! until then an icmp module loads and its probes fail with a clear reason.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::resolve::{IpPreference, IpProtocol};

/// The `icmp:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// ip4 or ip6 (default ip6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
    /// Whether the other protocol may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,
    /// Source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip_address: Option<String>,
    /// Payload size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u16>,
    /// Set the don't-fragment bit (IPv4).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dont_fragment: bool,
    /// IP TTL / hop limit (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

/// The validated ICMP module.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Address preference.
    pub ip: IpPreference,
    /// Source address.
    pub source_ip: Option<std::net::IpAddr>,
    /// Payload size.
    pub payload_size: u16,
    /// Don't fragment.
    pub dont_fragment: bool,
    /// TTL.
    pub ttl: u8,
}

impl Spec {
    /// Validates `section`.
    pub fn build(section: &Section, _base: &Path) -> Result<Spec, (String, String)> {
        let ttl = section.ttl.unwrap_or(64);
        if ttl < 0 {
            return Err(("ttl".into(), "\"ttl\" cannot be negative".into()));
        }
        if ttl > 255 {
            return Err(("ttl".into(), "\"ttl\" cannot exceed 255".into()));
        }
        Ok(Spec {
            ip: IpPreference {
                preferred: section.preferred_ip_protocol.unwrap_or_default(),
                fallback: section.ip_protocol_fallback.unwrap_or(true),
            },
            source_ip: super::tcp::parse_source_ip(&section.source_ip_address)?,
            payload_size: section.payload_size.unwrap_or(0),
            dont_fragment: section.dont_fragment,
            ttl: if ttl == 0 { 64 } else { ttl as u8 },
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
            "the icmp prober is not implemented in this lookout version yet",
        ))
    }
}
