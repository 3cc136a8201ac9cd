//! `prober: tcp`: the section and its validation. The probe itself comes with the TCP issue;
//! until then a tcp module loads and its probes fail with a clear reason.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::probe::tls;
use crate::values::Regex;

/// One `query_response` step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryResponse {
    /// Expect a line matching this expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Regex>,
    /// Send this (with `${1}` capture substitution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// Upgrade the connection to TLS here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starttls: bool,
}

/// The `tcp:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// ip4 or ip6 (default ip6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
    /// Whether the other protocol may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,
    /// Source address for the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip_address: Option<String>,
    /// The dialogue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_response: Vec<QueryResponse>,
    /// TLS from the start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<tls::Section>,
}

/// The validated TCP module.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Address preference.
    pub ip: IpPreference,
    /// Source address.
    pub source_ip: Option<std::net::IpAddr>,
    /// The dialogue.
    pub query_response: Vec<QueryResponse>,
    /// TLS from the start.
    pub tls: bool,
    /// TLS settings.
    pub tls_config: tls::Spec,
}

/// Validates a source address field.
pub fn parse_source_ip(s: &Option<String>) -> Result<Option<std::net::IpAddr>, (String, String)> {
    match s.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            (
                "source_ip_address".to_owned(),
                format!("invalid IP address {v:?}"),
            )
        }),
    }
}

impl Spec {
    /// Validates `section`.
    pub fn build(section: &Section, base: &Path) -> Result<Spec, (String, String)> {
        Ok(Spec {
            ip: IpPreference {
                preferred: section.preferred_ip_protocol.unwrap_or_default(),
                fallback: section.ip_protocol_fallback.unwrap_or(true),
            },
            source_ip: parse_source_ip(&section.source_ip_address)?,
            query_response: section.query_response.clone(),
            tls: section.tls,
            tls_config: tls::Spec::build(&section.tls_config.clone().unwrap_or_default(), base)
                .map_err(|e| ("tls_config".to_owned(), e))?,
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
            "the tcp prober is not implemented in this lookout version yet",
        ))
    }
}
