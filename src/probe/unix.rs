//! `prober: unix` (blackbox 0.28): connect to a unix socket by its path (the target),
//! optionally over TLS, then the same `query_response` dialogue as `prober: tcp`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::probe::expect::PROBE_FAILED_DUE_TO_REGEX;
use crate::probe::net;
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::tcp::{PROBE_FAILED_DUE_TO_BYTES, QueryResponse};
use crate::probe::tls;
use crate::values::FieldError;

/// The `unix:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
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

/// The validated unix module.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The dialogue.
    pub query_response: Vec<QueryResponse>,
    /// TLS from the start.
    pub tls: bool,
    /// TLS settings.
    pub tls_config: tls::Spec,
}

impl Spec {
    /// Validates `section` (its `query_response` as `prober: tcp` validates one).
    pub fn build(section: &Section, base: &Path) -> Result<Spec, FieldError> {
        let tcp = crate::probe::tcp::Spec::build(
            &crate::probe::tcp::Section {
                query_response: section.query_response.clone(),
                tls: section.tls,
                tls_config: section.tls_config.clone(),
                ..Default::default()
            },
            base,
        )?;
        Ok(Spec {
            query_response: tcp.query_response,
            tls: tcp.tls,
            tls_config: tcp.tls_config,
        })
    }
}

impl Prober for Spec {
    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        // blackbox's dialogue registers both for every unix probe.
        cx.report.declare(&PROBE_FAILED_DUE_TO_REGEX);
        cx.report.declare(&PROBE_FAILED_DUE_TO_BYTES);
        if req.target.is_empty() {
            return Err(ProbeFailure::new(
                FailureKind::InvalidTarget,
                "the target of a unix probe is the socket's path",
            ));
        }
        let path = Path::new(&req.target);
        // As Go's tls.Dial: the server name defaults to the address, here the path; a path is
        // no host name, so without `server_name` the certificate is checked for "localhost".
        let server_name = self.tls_config.server_name.clone().unwrap_or_else(|| {
            if req.target.contains('/') {
                "localhost".to_owned()
            } else {
                req.target.clone()
            }
        });
        let tls = net::Tls {
            spec: &self.tls_config,
            server_name: &server_name,
            alpn: &[],
        };
        let dialed = net::dial_unix(cx, path, self.tls.then_some(&tls)).await?;
        debug!("Successfully dialed");
        if let Some(hs) = &dialed.handshake {
            tls::record(cx.report, hs);
        }
        crate::probe::tcp::dialogue(&self.query_response, dialed.stream, &tls, cx).await
    }
}
