//! `prober: tcp`: connect (optionally over TLS), then blackbox's `query_response` dialogue with
//! STARTTLS, regex expectations with capture substitution, and byte expectations.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tracing::debug;

use crate::probe::expect::PROBE_FAILED_DUE_TO_REGEX;
use crate::probe::net::{self, Stream};
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober, Reason};
use crate::probe::query_response::LineReader;
use crate::probe::report::Family;
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::probe::tls;
use crate::values::{FieldError, Regex};

/// `probe_failed_due_to_bytes` (blackbox 0.28; only when a step uses `expect_bytes`).
pub static PROBE_FAILED_DUE_TO_BYTES: Family = Family::gauge(
    "probe_failed_due_to_bytes",
    "Indicates if probe failed due to bytes",
);
/// `probe_expect_info` (blackbox 0.28; only when a step has `labels`).
pub static PROBE_EXPECT_INFO: Family =
    Family::gauge("probe_expect_info", "Explicit content matched");

/// A label exported from a matched line (blackbox 0.28 `labels`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// The label name.
    pub name: String,
    /// The value, with `${1}`-style references to the expression's groups.
    pub value: String,
}

/// One `query_response` step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryResponse {
    /// Read lines until one matches this expression; fail when none does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Regex>,
    /// Read exactly these bytes (blackbox 0.28).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_bytes: Option<String>,
    /// Labels for `probe_expect_info`, from the matched line (blackbox 0.28).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<Label>,
    /// Send this line (a newline is added); `${1}` refers to the `expect` match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// Upgrade the connection to TLS after this step.
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

impl Spec {
    /// Validates `section`.
    pub fn build(section: &Section, base: &Path) -> Result<Spec, FieldError> {
        for (i, step) in section.query_response.iter().enumerate() {
            if !step.labels.is_empty() && step.expect.is_none() {
                return Err(FieldError::new(
                    format!("query_response[{i}].labels"),
                    "labels need an expect expression",
                ));
            }
            for (j, l) in step.labels.iter().enumerate() {
                let valid = !l.name.is_empty()
                    && !l.name.starts_with(|c: char| c.is_ascii_digit())
                    && l.name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(FieldError::new(
                        format!("query_response[{i}].labels[{j}].name"),
                        format!("invalid label name {:?}", l.name),
                    ));
                }
            }
        }
        Ok(Spec {
            ip: IpPreference::from_config(
                section.preferred_ip_protocol,
                section.ip_protocol_fallback,
            ),
            source_ip: net::parse_source_ip(&section.source_ip_address)?,
            query_response: section.query_response.clone(),
            tls: section.tls,
            tls_config: tls::Spec::build(&section.tls_config.clone().unwrap_or_default(), base)
                .map_err(|e| e.within("tls_config"))?,
        })
    }
}

impl Prober for Spec {
    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        cx.report.declare(&PROBE_FAILED_DUE_TO_REGEX);
        let uses_bytes = self.query_response.iter().any(|q| q.expect_bytes.is_some());
        if uses_bytes {
            cx.report.declare(&PROBE_FAILED_DUE_TO_BYTES);
        }
        let (host, port) = net::split_host_port(&req.target)?;
        let server_name = self
            .tls_config
            .server_name
            .clone()
            .unwrap_or_else(|| host.clone());
        let target = net::Target {
            source: self.source_ip,
            ..net::Target::new(net::Address::Target(&host), port, self.ip)
        };
        let tls = net::Tls {
            spec: &self.tls_config,
            server_name: &server_name,
            alpn: &[],
        };
        let dialed = net::dial(cx, &target, self.tls.then_some(&tls), |_, step| {
            if let net::Step::Connected { ok: true, .. } = step {
                debug!("Successfully dialed");
            }
        })
        .await?;
        if let Some(hs) = &dialed.handshake {
            tls::record(cx.report, hs);
        }
        dialogue(&self.query_response, dialed.stream, &tls, cx).await
    }
}

/// blackbox's `query_response` dialogue over `stream` (TCP or a unix socket, TLS or not):
/// each step's `expect` (lines until one matches, with `labels` into `probe_expect_info`),
/// `expect_bytes`, `send` (with `${1}` from the match) and `starttls` (with `tls`).
pub(crate) async fn dialogue(
    steps: &[QueryResponse],
    mut stream: Stream,
    tls: &net::Tls<'_>,
    cx: &mut ProbeContext<'_>,
) -> Result<(), ProbeFailure> {
    let mut lines = LineReader::default();
    for (i, step) in steps.iter().enumerate() {
        debug!(entry_number = i, "Processing query response entry");
        let mut send: Option<Vec<u8>> = step.send.as_ref().map(|s| s.as_bytes().to_vec());
        if let Some(re) = &step.expect {
            let mut matched = None;
            loop {
                match lines.next_line(&mut stream).await {
                    Ok(Some(line)) => {
                        debug!(line = %String::from_utf8_lossy(&line), "Read line");
                        if let Some(caps) = re.bytes.captures(&line) {
                            let mut expanded = Vec::new();
                            if let Some(s) = &step.send {
                                caps.expand(s.as_bytes(), &mut expanded);
                                send = Some(expanded);
                            }
                            if !step.labels.is_empty() {
                                let labels = step
                                    .labels
                                    .iter()
                                    .map(|l| {
                                        let mut v = Vec::new();
                                        caps.expand(l.value.as_bytes(), &mut v);
                                        (l.name.clone(), String::from_utf8_lossy(&v).into_owned())
                                    })
                                    .collect();
                                cx.report.set_owned_labels(&PROBE_EXPECT_INFO, labels, 1.0);
                            }
                            matched = Some(());
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(ProbeFailure::new(
                            FailureKind::Protocol,
                            format!("error reading from connection: {e}"),
                        ));
                    }
                }
            }
            if matched.is_none() {
                cx.report.set(&PROBE_FAILED_DUE_TO_REGEX, 1.0);
                return Err(ProbeFailure::new(
                    FailureKind::Assertion,
                    format!("regexp {:?} did not match any line (step {i})", re.as_str()),
                )
                .because(Reason::Regex));
            }
            cx.report.set(&PROBE_FAILED_DUE_TO_REGEX, 0.0);
        }
        if let Some(expect) = &step.expect_bytes {
            let want = expect.as_bytes();
            let got = lines
                .read_bytes(&mut stream, want.len())
                .await
                .map_err(|e| {
                    ProbeFailure::new(
                        FailureKind::Protocol,
                        format!("error reading from connection: {e}"),
                    )
                })?;
            if got.len() < want.len() {
                return Err(ProbeFailure::new(
                    FailureKind::Protocol,
                    format!(
                        "read {} bytes, expected {} (step {i})",
                        got.len(),
                        want.len()
                    ),
                ));
            }
            if got != want {
                cx.report.set(&PROBE_FAILED_DUE_TO_BYTES, 1.0);
                return Err(ProbeFailure::new(
                    FailureKind::Assertion,
                    format!("bytes did not match (step {i})"),
                ));
            }
            cx.report.set(&PROBE_FAILED_DUE_TO_BYTES, 0.0);
        }
        if let Some(mut data) = send.filter(|d| !d.is_empty()) {
            debug!(line = %String::from_utf8_lossy(&data), "Sending line");
            data.push(b'\n');
            stream.write_all(&data).await.map_err(|e| {
                ProbeFailure::new(FailureKind::Connect, format!("failed to send: {e}"))
            })?;
            let _ = stream.flush().await;
        }
        if step.starttls {
            let (upgraded, hs) = net::upgrade_stream(stream, tls).await?;
            debug!("TLS Handshake (client) succeeded");
            tls::record(cx.report, &hs);
            stream = upgraded;
            lines.reset();
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}
