//! `prober: dns`: the section and its validation. The probe itself comes with the DNS issue;
//! until then a dns module loads and its probes fail with a clear reason.

use std::path::Path;
use std::str::FromStr;

use hickory_resolver::proto::rr::{DNSClass, RecordType};
use serde::{Deserialize, Serialize};

use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::probe::tls;
use crate::values::Regex;

/// One `validate_*_rrs` block.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrValidator {
    /// Fail if any record matches any of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_matches_regexp: Vec<Regex>,
    /// Fail if all records match any of these (blackbox: fails when *not* all match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_all_match_regexp: Vec<Regex>,
    /// Fail if any record does not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_not_matches_regexp: Vec<Regex>,
    /// Fail if no record matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_none_matches_regexp: Vec<Regex>,
}

/// The `dns:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// ip4 or ip6 (default ip6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
    /// Whether the other protocol may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,
    /// DNS over TLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dns_over_tls: bool,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<tls::Section>,
    /// Source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip_address: Option<String>,
    /// udp (default) or tcp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_protocol: Option<String>,
    /// Query class (IN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_class: Option<String>,
    /// The name to query (required).
    #[serde(default)]
    pub query_name: String,
    /// Query type (ANY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_type: Option<String>,
    /// Set RD (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursion_desired: Option<bool>,
    /// Accepted response codes (NOERROR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_rcodes: Vec<String>,
    /// Answer section checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_answer_rrs: Option<RrValidator>,
    /// Authority section checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_authority_rrs: Option<RrValidator>,
    /// Additional section checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_additional_rrs: Option<RrValidator>,
}

/// The validated DNS module.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Address preference.
    pub ip: IpPreference,
    /// Query name.
    pub query_name: String,
    /// Query type.
    pub query_type: RecordType,
    /// Query class.
    pub query_class: DNSClass,
    /// TCP instead of UDP.
    pub tcp: bool,
    /// DNS over TLS.
    pub dot: bool,
    /// Recursion desired.
    pub recursion_desired: bool,
    /// Accepted rcodes (upper-case names).
    pub valid_rcodes: Vec<String>,
    /// Source address.
    pub source_ip: Option<std::net::IpAddr>,
    /// TLS settings.
    pub tls_config: tls::Spec,
    /// The three validators.
    pub validators: [RrValidator; 3],
}

const RCODES: &[&str] = &[
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "BADSIG",
    "BADVERS",
    "BADKEY",
    "BADTIME",
    "BADMODE",
    "BADNAME",
    "BADALG",
    "BADTRUNC",
    "BADCOOKIE",
];

impl Spec {
    /// Validates `section` (blackbox's rules: query_name required, known type and class).
    pub fn build(section: &Section, base: &Path) -> Result<Spec, (String, String)> {
        if section.query_name.is_empty() {
            return Err((
                "query_name".into(),
                "query name must be set for DNS module".into(),
            ));
        }
        let query_type = match section.query_type.as_deref() {
            None | Some("") => RecordType::ANY,
            Some(t) => RecordType::from_str(t).map_err(|_| {
                (
                    "query_type".to_owned(),
                    format!("query type '{t}' is not valid"),
                )
            })?,
        };
        let query_class = match section.query_class.as_deref() {
            None | Some("") => DNSClass::IN,
            Some(c) => DNSClass::from_str(c).map_err(|_| {
                (
                    "query_class".to_owned(),
                    format!("query class '{c}' is not valid"),
                )
            })?,
        };
        let tcp = match section.transport_protocol.as_deref() {
            None | Some("") | Some("udp") => false,
            Some("tcp") => true,
            Some(o) => {
                return Err((
                    "transport_protocol".into(),
                    format!("invalid transport protocol {o:?} (use udp or tcp)"),
                ));
            }
        };
        for (i, r) in section.valid_rcodes.iter().enumerate() {
            if !RCODES.contains(&r.to_ascii_uppercase().as_str()) {
                return Err((
                    format!("valid_rcodes[{i}]"),
                    format!("unknown response code {r:?}"),
                ));
            }
        }
        Ok(Spec {
            ip: IpPreference {
                preferred: section.preferred_ip_protocol.unwrap_or_default(),
                fallback: section.ip_protocol_fallback.unwrap_or(true),
            },
            query_name: section.query_name.clone(),
            query_type,
            query_class,
            tcp: tcp || section.dns_over_tls,
            dot: section.dns_over_tls,
            recursion_desired: section.recursion_desired.unwrap_or(true),
            valid_rcodes: if section.valid_rcodes.is_empty() {
                vec!["NOERROR".into()]
            } else {
                section
                    .valid_rcodes
                    .iter()
                    .map(|r| r.to_ascii_uppercase())
                    .collect()
            },
            source_ip: super::tcp::parse_source_ip(&section.source_ip_address)?,
            tls_config: tls::Spec::build(&section.tls_config.clone().unwrap_or_default(), base)
                .map_err(|e| ("tls_config".to_owned(), e))?,
            validators: [
                section.validate_answer_rrs.clone().unwrap_or_default(),
                section.validate_authority_rrs.clone().unwrap_or_default(),
                section.validate_additional_rrs.clone().unwrap_or_default(),
            ],
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
            "the dns prober is not implemented in this lookout version yet",
        ))
    }
}
