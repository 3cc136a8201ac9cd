//! One `modules:` entry: its raw form as written and its validated form. This file holds the one
//! `match` on the `prober:` name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::probe::{ProbeSpec, dns, grpc, http, icmp, mqtt, postgres, redis, tcp};
use crate::values::{ConfigDuration, FieldError};

/// A module as written in the file (blackbox's format, unknown fields rejected).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModule {
    /// http, tcp, dns, icmp, grpc (blackbox's), postgres, mqtt or redis (lookout's).
    pub prober: String,
    /// The longest a probe may take; the scrape timeout caps it further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ConfigDuration>,
    /// HTTP settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<http::Section>,
    /// TCP settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<tcp::Section>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<dns::Section>,
    /// ICMP settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<icmp::Section>,
    /// gRPC settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<grpc::Section>,
    /// PostgreSQL settings (lookout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<postgres::Section>,
    /// MQTT settings (lookout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<mqtt::Section>,
    /// Redis settings (lookout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<redis::Section>,
}

/// A validated module: what `/probe` and the scheduler use.
#[derive(Debug, Clone)]
pub struct Module {
    /// Its name (the key under `modules:`).
    pub name: String,
    /// The module timeout; `None` when not set (the scrape timeout alone applies).
    pub timeout: Option<Duration>,
    /// The validated probe settings.
    pub spec: Arc<ProbeSpec>,
    /// The module as written, for `/config` and debug output (secrets print as `<secret>`).
    pub raw: RawModule,
}

/// Validates one module; the error's path is relative to the module.
pub fn build(name: &str, raw: RawModule, base: &Path) -> Result<Module, FieldError> {
    fn sub<T>(section: &str, r: Result<T, FieldError>) -> Result<T, FieldError> {
        r.map_err(|e| e.within(section))
    }
    let spec = match raw.prober.as_str() {
        "http" => ProbeSpec::Http(sub(
            "http",
            http::Spec::build(&raw.http.clone().unwrap_or_default(), base),
        )?),
        "tcp" => ProbeSpec::Tcp(sub(
            "tcp",
            tcp::Spec::build(&raw.tcp.clone().unwrap_or_default(), base),
        )?),
        "dns" => match &raw.dns {
            Some(d) => ProbeSpec::Dns(sub("dns", dns::Spec::build(d, base))?),
            None => {
                return Err(FieldError::new(
                    "dns.query_name",
                    "query name must be set for DNS module",
                ));
            }
        },
        "icmp" => ProbeSpec::Icmp(sub(
            "icmp",
            icmp::Spec::build(&raw.icmp.clone().unwrap_or_default(), base),
        )?),
        "grpc" => ProbeSpec::Grpc(sub(
            "grpc",
            grpc::Spec::build(&raw.grpc.clone().unwrap_or_default(), base),
        )?),
        "postgres" => ProbeSpec::Postgres(sub(
            "postgres",
            postgres::Spec::build(&raw.postgres.clone().unwrap_or_default(), base),
        )?),
        "mqtt" => ProbeSpec::Mqtt(sub(
            "mqtt",
            mqtt::Spec::build(&raw.mqtt.clone().unwrap_or_default(), base),
        )?),
        "redis" => ProbeSpec::Redis(sub(
            "redis",
            redis::Spec::build(&raw.redis.clone().unwrap_or_default(), base),
        )?),
        "" => {
            return Err(FieldError::new(
                "prober",
                "prober must be set (http, tcp, dns, icmp, grpc, postgres, mqtt or redis)",
            ));
        }
        other => {
            return Err(FieldError::new(
                "prober",
                format!(
                    "unknown prober {other:?} (expected http, tcp, dns, icmp, grpc, postgres, mqtt or redis)"
                ),
            ));
        }
    };
    let timeout = raw.timeout.map(|d| d.0).filter(|d| !d.is_zero());
    Ok(Module {
        name: name.to_owned(),
        timeout,
        spec: Arc::new(spec),
        raw,
    })
}
