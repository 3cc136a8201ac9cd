//! `prober: grpc`: the standard grpc.health.v1 Health/Check call over a connection we make
//! ourselves (so TLS facts are recorded as in the other probers), through tonic.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::probe::net::{self, Stream};
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::report::Family;
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::probe::tls;
use crate::values::FieldError;

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
    /// Request metadata sent with the check (blackbox 0.28): each key with its values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Vec<String>>,
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
    /// Request metadata, validated.
    pub metadata: tonic::metadata::MetadataMap,
}

/// `metadata:` as tonic sends it: keys lower-cased as HTTP/2 requires (grpc-go's
/// `metadata.MD` sends them as written, which a server then sees lower-cased), a `-bin` key's
/// values as bytes (base64 on the wire, as grpc-go encodes them), the others as ASCII header
/// values; a key or value that cannot be sent is a config error.
fn build_metadata(
    section: &BTreeMap<String, Vec<String>>,
) -> Result<tonic::metadata::MetadataMap, FieldError> {
    use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue, MetadataKey};
    let mut map = tonic::metadata::MetadataMap::new();
    for (key, values) in section {
        let path = format!("metadata.{key}");
        let lower = key.to_ascii_lowercase();
        if lower.ends_with("-bin") {
            let k = MetadataKey::from_bytes(lower.as_bytes()).map_err(|e| {
                FieldError::new(&path, format!("invalid metadata key {key:?}: {e}"))
            })?;
            for v in values {
                map.append_bin(k.clone(), BinaryMetadataValue::from_bytes(v.as_bytes()));
            }
        } else {
            let k = MetadataKey::from_bytes(lower.as_bytes()).map_err(|e| {
                FieldError::new(&path, format!("invalid metadata key {key:?}: {e}"))
            })?;
            for v in values {
                let v = AsciiMetadataValue::try_from(v.as_str()).map_err(|e| {
                    FieldError::new(&path, format!("invalid metadata value {v:?}: {e}"))
                })?;
                map.append(k.clone(), v);
            }
        }
    }
    Ok(map)
}

impl Spec {
    /// Validates `section`.
    pub fn build(section: &Section, base: &Path) -> Result<Spec, FieldError> {
        Ok(Spec {
            service: section.service.clone().unwrap_or_default(),
            tls: section.tls,
            tls_config: tls::Spec::build(&section.tls_config.clone().unwrap_or_default(), base)
                .map_err(|e| e.within("tls_config"))?,
            ip: IpPreference::from_config(
                section.preferred_ip_protocol,
                section.ip_protocol_fallback,
            ),
            metadata: build_metadata(&section.metadata)?,
        })
    }
}

/// `probe_grpc_duration_seconds{phase}`.
pub static PROBE_GRPC_DURATION_SECONDS: Family = Family::gauge(
    "probe_grpc_duration_seconds",
    "Duration of gRPC request by phase",
);
/// `probe_grpc_ssl`.
pub static PROBE_GRPC_SSL: Family = Family::gauge(
    "probe_grpc_ssl",
    "Indicates if SSL was used for the connection",
);
/// `probe_grpc_status_code`.
pub static PROBE_GRPC_STATUS_CODE: Family =
    Family::gauge("probe_grpc_status_code", "Response gRPC status code");
/// `probe_grpc_healthcheck_response{serving_status}`.
pub static PROBE_GRPC_HEALTHCHECK_RESPONSE: Family = Family::gauge(
    "probe_grpc_healthcheck_response",
    "Response HealthCheck response",
);

/// The serving statuses of grpc.health.v1, as blackbox labels them.
const SERVING_STATUSES: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/// gRPC's UNAVAILABLE: what a client reports when it cannot connect.
const UNAVAILABLE: i32 = 14;

impl Spec {
    /// Connects (TCP, then TLS with ALPN h2 when configured) and records the TLS facts.
    async fn connect(
        &self,
        ip: IpAddr,
        port: u16,
        host: &str,
        cx: &mut ProbeContext<'_>,
    ) -> Result<Stream, ProbeFailure> {
        let name = self
            .tls_config
            .server_name
            .clone()
            .unwrap_or_else(|| host.to_owned());
        let tls = net::Tls {
            spec: &self.tls_config,
            server_name: &name,
            alpn: &[b"h2"],
        };
        let target = net::Target::new(net::Address::Resolved(ip), port, self.ip);
        let dialed = net::dial(cx, &target, self.tls.then_some(&tls), |_, _| {}).await?;
        if let Some(hs) = &dialed.handshake {
            cx.report.set(&PROBE_GRPC_SSL, 1.0);
            tls::record(cx.report, hs);
        }
        Ok(dialed.stream)
    }
}

fn record_statuses(cx: &mut ProbeContext<'_>, serving: Option<&str>) {
    for s in SERVING_STATUSES {
        cx.report.set_labeled(
            &PROBE_GRPC_HEALTHCHECK_RESPONSE,
            &[("serving_status", s)],
            0.0,
        );
    }
    if let Some(s) = serving {
        cx.report.set_labeled(
            &PROBE_GRPC_HEALTHCHECK_RESPONSE,
            &[("serving_status", s)],
            1.0,
        );
    }
}

impl Prober for Spec {
    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        cx.report
            .declare_labeled(&PROBE_GRPC_DURATION_SECONDS, &[("phase", "resolve")]);
        cx.report.declare(&PROBE_GRPC_SSL);
        cx.report.declare(&PROBE_GRPC_STATUS_CODE);
        let target = if req.target.starts_with("http://") || req.target.starts_with("https://") {
            req.target.clone()
        } else {
            format!("http://{}", req.target)
        };
        let url = url::Url::parse(&target).map_err(|e| {
            ProbeFailure::new(
                FailureKind::InvalidTarget,
                format!("could not parse target URL {target:?}: {e}"),
            )
        })?;
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => {
                return Err(ProbeFailure::new(
                    FailureKind::InvalidTarget,
                    format!("target {target:?} has no host"),
                ));
            }
        };
        let port = url.port().unwrap_or(if self.tls { 443 } else { 80 });
        let (ip, lookup) = net::resolve(cx, net::Address::Target(&host), self.ip).await?;
        cx.report.add(
            &PROBE_GRPC_DURATION_SECONDS,
            &[("phase", "resolve")],
            lookup.as_secs_f64(),
        );

        let check_start = Instant::now();
        let result = self.check(ip, port, &host, cx).await;
        cx.report.add(
            &PROBE_GRPC_DURATION_SECONDS,
            &[("phase", "check")],
            check_start.elapsed().as_secs_f64(),
        );
        match result {
            Ok(serving) => {
                cx.report.set(&PROBE_GRPC_STATUS_CODE, 0.0);
                record_statuses(cx, Some(serving));
                if serving == "SERVING" {
                    Ok(())
                } else {
                    Err(ProbeFailure::new(
                        FailureKind::Assertion,
                        format!("service {:?} is {serving}", self.service),
                    ))
                }
            }
            Err((code, failure)) => {
                cx.report.set(&PROBE_GRPC_STATUS_CODE, f64::from(code));
                record_statuses(cx, None);
                Err(failure)
            }
        }
    }
}

impl Spec {
    /// One grpc.health.v1 Check over a connection we made; the gRPC status code on failure.
    async fn check(
        &self,
        ip: IpAddr,
        port: u16,
        host: &str,
        cx: &mut ProbeContext<'_>,
    ) -> Result<&'static str, (i32, ProbeFailure)> {
        let stream = self
            .connect(ip, port, host, cx)
            .await
            .map_err(|f| (UNAVAILABLE, f))?;
        let slot = Arc::new(Mutex::new(Some(stream)));
        let connector = tower::service_fn(move |_: http::Uri| {
            let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            async move {
                taken
                    .map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the probe's connection was already used"))
            }
        });
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| {
                (
                    UNAVAILABLE,
                    ProbeFailure::new(
                        FailureKind::InvalidTarget,
                        format!("invalid gRPC authority {authority:?}: {e}"),
                    ),
                )
            })?;
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| {
                (
                    UNAVAILABLE,
                    ProbeFailure::new(FailureKind::Protocol, format!("gRPC connection: {e}")),
                )
            })?;
        let mut client = HealthClient::new(channel);
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.service.clone(),
        });
        *request.metadata_mut() = self.metadata.clone();
        match client.check(request).await {
            Ok(resp) => {
                let status = resp.into_inner().status;
                Ok(match ServingStatus::try_from(status) {
                    Ok(ServingStatus::Serving) => "SERVING",
                    Ok(ServingStatus::NotServing) => "NOT_SERVING",
                    Ok(ServingStatus::ServiceUnknown) => "SERVICE_UNKNOWN",
                    _ => "UNKNOWN",
                })
            }
            Err(status) => Err((
                status.code() as i32,
                ProbeFailure::new(
                    FailureKind::Protocol,
                    format!(
                        "health check failed: {:?}: {}",
                        status.code(),
                        status.message()
                    ),
                ),
            )),
        }
    }
}
