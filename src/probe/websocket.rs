//! `prober: websocket` (blackbox's main branch since 2026-03, #1278, not yet released): an HTTP
//! upgrade to WebSocket on a connection made by `net.rs` (TLS for `wss://`), then the
//! `query_response` steps over messages: `expect` reads the next message and matches it,
//! `send` sends a text message (with `${1}` from the match).

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest as _};
use tracing::debug;

use crate::probe::http::HeaderValues;
use crate::probe::net;
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::report::Family;
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::probe::tcp::QueryResponse;
use crate::values::FieldError;

/// `probe_websocket_status_code`.
pub static PROBE_WEBSOCKET_STATUS_CODE: Family =
    Family::gauge("probe_websocket_status_code", "Response HTTP status code");
/// `probe_websocket_connection_upgraded`.
pub static PROBE_WEBSOCKET_CONNECTION_UPGRADED: Family = Family::gauge(
    "probe_websocket_connection_upgraded",
    "Indicates if the websocket connection was successfully upgraded",
);
/// `probe_websocket_failed_due_to_regex`.
pub static PROBE_WEBSOCKET_FAILED_DUE_TO_REGEX: Family = Family::gauge(
    "probe_websocket_failed_due_to_regex",
    "Indicates if probe failed due to regex",
);
/// `probe_websocket_duration_seconds{phase}`.
pub static PROBE_WEBSOCKET_DURATION_SECONDS: Family = Family::gauge(
    "probe_websocket_duration_seconds",
    "Duration of websocket request by phase",
);

/// A header as the websocket section writes it: a plain value, or values, secrets and files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Header {
    /// One value.
    Plain(String),
    /// Values, secrets and files, as `http_headers`.
    Values(HeaderValues),
}

/// The `websocket:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The HTTP client settings of the upgrade request: `basic_auth`, `authorization`,
    /// `bearer_token(_file)` and `tls_config` are used (validated as the HTTP prober's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_config: Option<crate::probe::http::Section>,
    /// Headers of the upgrade request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Header>,
    /// The dialogue, one message per `expect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_response: Vec<QueryResponse>,
    /// ip4 or ip6 (default ip6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
    /// Whether the other protocol may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,
}

/// The validated websocket module.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Headers and credentials of the upgrade request, and its TLS, as an HTTP module's.
    http: crate::probe::http::Spec,
    query_response: Vec<QueryResponse>,
    ip: IpPreference,
}

impl Spec {
    /// Validates `section`.
    pub fn build(section: &Section, base: &Path) -> Result<Spec, FieldError> {
        let mut http = section.http_config.clone().unwrap_or_default();
        for (name, h) in &section.headers {
            let values = match h {
                Header::Plain(v) => HeaderValues {
                    values: vec![v.clone()],
                    ..HeaderValues::default()
                },
                Header::Values(v) => v.clone(),
            };
            http.http_headers.insert(name.clone(), values);
        }
        let http = crate::probe::http::Spec::build(&http, base).map_err(|e| {
            if e.path.starts_with("http_headers") {
                FieldError::new(e.path.replacen("http_headers", "headers", 1), e.message)
            } else {
                e.within("http_config")
            }
        })?;
        for (i, q) in section.query_response.iter().enumerate() {
            if q.starttls || q.expect_bytes.is_some() || !q.labels.is_empty() {
                return Err(FieldError::new(
                    format!("query_response[{i}]"),
                    "a websocket step has only expect and send",
                ));
            }
        }
        Ok(Spec {
            http,
            query_response: section.query_response.clone(),
            ip: IpPreference::from_config(
                section.preferred_ip_protocol,
                section.ip_protocol_fallback,
            ),
        })
    }
}

fn phase(cx: &mut ProbeContext<'_>, name: &str, secs: f64) {
    cx.report
        .add(&PROBE_WEBSOCKET_DURATION_SECONDS, &[("phase", name)], secs);
}

impl Prober for Spec {
    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        for f in [
            &PROBE_WEBSOCKET_CONNECTION_UPGRADED,
            &PROBE_WEBSOCKET_STATUS_CODE,
            &PROBE_WEBSOCKET_FAILED_DUE_TO_REGEX,
        ] {
            cx.report.declare(f);
        }
        let url = url::Url::parse(&req.target)
            .ok()
            .filter(|u| matches!(u.scheme(), "ws" | "wss") && u.host_str().is_some())
            .ok_or_else(|| {
                ProbeFailure::new(
                    FailureKind::InvalidTarget,
                    format!("malformed ws or wss URL {:?}", req.target),
                )
            })?;
        let secure = url.scheme() == "wss";
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port().unwrap_or(if secure { 443 } else { 80 });
        let server_name = self
            .http
            .tls()
            .server_name
            .clone()
            .unwrap_or_else(|| host.clone());
        let tls = net::Tls {
            spec: self.http.tls(),
            server_name: &server_name,
            alpn: &[b"http/1.1"],
        };
        let target = net::Target::new(net::Address::Target(&host), port, self.ip);
        let started = Instant::now();
        let mut connect = 0.0;
        let dialed = net::dial(
            cx,
            &target,
            secure.then_some(&tls),
            |report, step| match step {
                net::Step::Resolved { lookup } => report.add(
                    &PROBE_WEBSOCKET_DURATION_SECONDS,
                    &[("phase", "resolve")],
                    lookup.as_secs_f64(),
                ),
                net::Step::Connected { elapsed, ok: true } => {
                    connect = elapsed.as_secs_f64();
                    report.add(
                        &PROBE_WEBSOCKET_DURATION_SECONDS,
                        &[("phase", "connect")],
                        connect,
                    );
                }
                _ => {}
            },
        )
        .await?;
        if let Some(hs) = &dialed.handshake {
            crate::probe::tls::record(cx.report, hs);
        }
        let mut request = url.as_str().into_client_request().map_err(|e| {
            ProbeFailure::new(
                FailureKind::InvalidTarget,
                format!("the upgrade request: {e}"),
            )
        })?;
        let (headers, authorization) = self.http.request_headers();
        for (k, v) in headers {
            request.headers_mut().append(k.clone(), v.clone());
        }
        if let Some(a) = authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, a.clone());
        }
        let upgraded = tokio_tungstenite::client_async(request, dialed.stream).await;
        // blackbox: the dial's whole time less the connect.
        let processing = (started.elapsed().as_secs_f64() - connect).max(0.0);
        phase(cx, "processing", processing);
        let mut ws = match upgraded {
            Ok((ws, response)) => {
                cx.report.set(
                    &PROBE_WEBSOCKET_STATUS_CODE,
                    f64::from(response.status().as_u16()),
                );
                ws
            }
            Err(e) => {
                if let tungstenite::Error::Http(response) = &e {
                    cx.report.set(
                        &PROBE_WEBSOCKET_STATUS_CODE,
                        f64::from(response.status().as_u16()),
                    );
                }
                return Err(ProbeFailure::new(
                    FailureKind::Protocol,
                    format!("websocket upgrade: {e}"),
                ));
            }
        };
        cx.report.set(&PROBE_WEBSOCKET_CONNECTION_UPGRADED, 1.0);
        debug!("Websocket connection upgraded");
        if self.query_response.is_empty() {
            let _ = ws.close(None).await;
            return Ok(());
        }
        let transfer = Instant::now();
        let result = self.dialogue(&mut ws).await;
        phase(cx, "transfer", transfer.elapsed().as_secs_f64());
        cx.report.set(
            &PROBE_WEBSOCKET_FAILED_DUE_TO_REGEX,
            if result.is_ok() { 0.0 } else { 1.0 },
        );
        let _ = ws.close(None).await;
        result
    }
}

impl Spec {
    async fn dialogue<S>(
        &self,
        ws: &mut tokio_tungstenite::WebSocketStream<S>,
    ) -> Result<(), ProbeFailure>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        for (i, step) in self.query_response.iter().enumerate() {
            let mut send = step.send.clone().map(String::into_bytes);
            if let Some(re) = &step.expect {
                // The next data message (control frames are answered by the library).
                let message = loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => break t.as_bytes().to_vec(),
                        Some(Ok(Message::Binary(b))) => break b.to_vec(),
                        Some(Ok(Message::Close(_))) | None => {
                            return Err(ProbeFailure::new(
                                FailureKind::Protocol,
                                format!("the connection closed before a message (step {i})"),
                            ));
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            return Err(ProbeFailure::new(
                                FailureKind::Protocol,
                                format!("error reading message: {e}"),
                            ));
                        }
                    }
                };
                debug!(message = %String::from_utf8_lossy(&message), "Read message");
                let Some(caps) = re.bytes.captures(&message) else {
                    return Err(ProbeFailure::new(
                        FailureKind::Assertion,
                        format!(
                            "regexp {:?} did not match the message (step {i})",
                            re.as_str()
                        ),
                    ));
                };
                if let Some(s) = &step.send {
                    let mut expanded = Vec::new();
                    caps.expand(s.as_bytes(), &mut expanded);
                    send = Some(expanded);
                }
            }
            if let Some(data) = send.filter(|d| !d.is_empty()) {
                let text = String::from_utf8_lossy(&data).into_owned();
                debug!(message = %text, "Sending message");
                ws.send(Message::text(text)).await.map_err(|e| {
                    ProbeFailure::new(FailureKind::Connect, format!("failed to send: {e}"))
                })?;
            }
        }
        Ok(())
    }
}
