//! `prober: http`: blackbox's HTTP prober — section, validated spec and probe.

mod body;
mod cel;
mod client;
mod h3;
mod oauth2;
mod redirect;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};

use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober, Reason};
use crate::probe::report::Family;
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::probe::tls;
use crate::secret::Secret;
use crate::values::{Choice, Conflict, FieldError, Regex, Size, value_or_file};

/// `probe_http_duration_seconds{phase}`.
pub static PROBE_HTTP_DURATION_SECONDS: Family = Family::gauge(
    "probe_http_duration_seconds",
    "Duration of http request by phase, summed over all redirects",
);
/// `probe_http_content_length`.
pub static PROBE_HTTP_CONTENT_LENGTH: Family = Family::gauge(
    "probe_http_content_length",
    "Length of http content response",
);
/// `probe_http_uncompressed_body_length`.
pub static PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH: Family = Family::gauge(
    "probe_http_uncompressed_body_length",
    "Length of uncompressed response body",
);
/// `probe_http_redirects`.
pub static PROBE_HTTP_REDIRECTS: Family =
    Family::gauge("probe_http_redirects", "The number of redirects");
/// `probe_http_ssl`.
pub static PROBE_HTTP_SSL: Family = Family::gauge(
    "probe_http_ssl",
    "Indicates if SSL was used for the final redirect",
);
/// `probe_http_status_code`.
pub static PROBE_HTTP_STATUS_CODE: Family =
    Family::gauge("probe_http_status_code", "Response HTTP status code");
/// `probe_http_version`.
pub static PROBE_HTTP_VERSION: Family = Family::gauge(
    "probe_http_version",
    "Returns the version of HTTP of the probe response",
);
/// `probe_http_last_modified_timestamp_seconds`.
pub static PROBE_HTTP_LAST_MODIFIED_TIMESTAMP_SECONDS: Family = Family::gauge(
    "probe_http_last_modified_timestamp_seconds",
    "Returns the Last-Modified HTTP response header in unixtime",
);

/// The body bytes kept in memory for regex matching when `body_size_limit` is not set. blackbox
/// buffers whole bodies without a bound; lookout fails such a probe instead (documented in the
/// README). Bodies are otherwise streamed and only counted.
pub const DEFAULT_MATCH_LIMIT: u64 = 16 << 20;

/// blackbox's redirect limit: the probe stops at the 11th redirect.
pub const MAX_REDIRECTS: usize = 10;

/// An accepted status code: an integer as blackbox writes it, or (a lookout extension) a class
/// such as `2xx` or a range `200-399`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusCode {
    /// One code.
    Code(u16),
    /// `2xx` or `200-299`.
    Pattern(String),
}

/// One `fail_if_header_matches` / `fail_if_header_not_matches` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// The header name (case-insensitive).
    pub header: String,
    /// The expression matched against each value.
    pub regexp: Regex,
    /// Whether a missing header is acceptable.
    #[serde(default)]
    pub allow_missing: bool,
}

/// `basic_auth`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// File holding the user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_file: Option<PathBuf>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// File holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// `authorization`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme (default `Bearer`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Secret>,
    /// File holding the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
}

/// `oauth2`: the client-credentials grant (`http/oauth2.rs`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    /// Client id.
    #[serde(default)]
    pub client_id: String,
    /// Client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// File holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Token URL.
    #[serde(default)]
    pub token_url: String,
    /// Extra parameters for the token request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoint_params: BTreeMap<String, String>,
    /// TLS for the token request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<tls::Section>,
    /// Proxy for the token request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
}

/// `http_headers` (blackbox 0.25+): values, secrets and files per header.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValues {
    /// Plain values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Secret values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    /// Files whose content is a value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<PathBuf>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The `http:` section of a module, as written (every field blackbox 0.23–0.28 documents).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// Accepted status codes; 2xx when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_status_codes: Vec<StatusCode>,
    /// Accepted HTTP versions (`HTTP/1.1`, `HTTP/2.0`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_http_versions: Vec<String>,
    /// The method (GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request headers; `Host` overrides the Host header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request headers with secret or file values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub http_headers: BTreeMap<String, HeaderValues>,
    /// The most decompressed body bytes read; 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size_limit: Option<Size>,
    /// Decompress the body with gzip, br, deflate or identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Follow redirects (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_redirects: Option<bool>,
    /// Deprecated inverse of `follow_redirects`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_follow_redirects: Option<bool>,
    /// Fail when the final response came over TLS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fail_if_ssl: bool,
    /// Fail when the final response did not come over TLS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fail_if_not_ssl: bool,
    /// Fail when this CEL expression is true of the JSON body (blackbox 0.26+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_if_body_json_matches_cel: Option<String>,
    /// Fail when this CEL expression is false of the JSON body (blackbox 0.26+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_if_body_json_not_matches_cel: Option<String>,
    /// Fail when the body matches any of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_body_matches_regexp: Vec<Regex>,
    /// Fail when the body does not match each of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_body_not_matches_regexp: Vec<Regex>,
    /// Fail when a header value matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_header_matches: Vec<HeaderMatch>,
    /// Fail when no value of a header matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_header_not_matches: Vec<HeaderMatch>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<tls::Section>,
    /// Basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Authorization header credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// File holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP proxy for the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// Hosts (comma separated names, domains, IPs or CIDRs) reached without the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<String>,
    /// Take the proxy from HTTP_PROXY / HTTPS_PROXY / NO_PROXY.
    #[serde(default, skip_serializing_if = "is_false")]
    pub proxy_from_environment: bool,
    /// Headers sent to the proxy on CONNECT.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_connect_header: BTreeMap<String, Vec<Secret>>,
    /// With a proxy, do not resolve the target (the proxy does).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_resolve_phase_with_proxy: bool,
    /// OAuth 2.0 client credentials (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2>,
    /// Offer HTTP/2 over TLS (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_http2: Option<bool>,
    /// HTTP/3 over QUIC (blackbox 0.28+).
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_http3: bool,
    /// ip4 or ip6 (default ip6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
    /// Whether the other protocol may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,
    /// The request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A file whose content is the request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_file: Option<PathBuf>,
}

/// A decompression algorithm for `compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip.
    Gzip,
    /// Brotli.
    Br,
    /// Raw deflate (as Go's `compress/flate`; zlib-wrapped bodies fail, as in blackbox).
    Deflate,
    /// No decompression.
    Identity,
}

/// A validated `fail_if_header_*` entry.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    name: HeaderName,
    regexp: Regex,
    allow_missing: bool,
}

/// A proxy to send requests through.
#[derive(Debug, Clone)]
pub struct Proxy {
    url: url::Url,
    connect_headers: Vec<(HeaderName, HeaderValue)>,
    no_proxy: Vec<String>,
}

/// The validated HTTP module: everything a probe reads, prepared at load.
#[derive(Debug, Clone)]
pub struct Spec {
    valid_status: Vec<(u16, u16)>,
    valid_http_versions: Vec<String>,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    host_header: Option<String>,
    authorization: Option<HeaderValue>,
    body: Option<Bytes>,
    compression: Option<Compression>,
    body_size_limit: Option<u64>,
    follow_redirects: bool,
    fail_if_ssl: bool,
    fail_if_not_ssl: bool,
    body_matches: Vec<Regex>,
    body_not_matches: Vec<Regex>,
    /// `fail_if_body_json_*_cel`.
    cel: Option<cel::Checks>,
    header_matches: Vec<HeaderMatcher>,
    header_not_matches: Vec<HeaderMatcher>,
    tls: tls::Spec,
    proxy: Option<Proxy>,
    /// `proxy_from_environment`: (http, https) proxies read from the environment at load.
    env_proxies: (Option<Proxy>, Option<Proxy>),
    skip_resolve_phase_with_proxy: bool,
    enable_http2: bool,
    /// `enable_http3`: every request over QUIC (`h3.rs`).
    enable_http3: bool,
    ip: IpPreference,
    unsupported: Option<String>,
    /// `oauth2`: where the probe's token comes from (shared by the module's probes).
    oauth2: Option<std::sync::Arc<oauth2::TokenSource>>,
}

/// Reads HTTP_PROXY / HTTPS_PROXY / NO_PROXY (either case), as Go's `ProxyFromEnvironment`.
fn env_proxies() -> Result<(Option<Proxy>, Option<Proxy>), FieldError> {
    let var = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok())
            .filter(|v| !v.is_empty())
    };
    let no_proxy: Vec<String> = var(["NO_PROXY", "no_proxy"])
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let make = |v: Option<String>| -> Result<Option<Proxy>, FieldError> {
        let Some(v) = v else { return Ok(None) };
        let v = if v.contains("://") {
            v
        } else {
            format!("http://{v}")
        };
        let url = url::Url::parse(&v).map_err(|e| {
            FieldError::new(
                "proxy_from_environment",
                format!("invalid proxy URL {v:?} in environment: {e}"),
            )
        })?;
        Ok(Some(Proxy {
            url,
            connect_headers: Vec::new(),
            no_proxy: no_proxy.clone(),
        }))
    };
    Ok((
        make(var(["HTTP_PROXY", "http_proxy"]))?,
        make(var(["HTTPS_PROXY", "https_proxy"]))?,
    ))
}

/// Request headers in the order the config gives them (a name may repeat).
type HeaderList = Vec<(HeaderName, HeaderValue)>;

fn parse_status(s: &StatusCode) -> Result<(u16, u16), String> {
    match s {
        StatusCode::Code(c) => Ok((*c, *c)),
        StatusCode::Pattern(p) => {
            let p = p.trim();
            if p.len() == 3 && p.ends_with("xx") {
                let d = p[..1]
                    .parse::<u16>()
                    .map_err(|_| format!("invalid status code pattern {p:?}"))?;
                if (1..=5).contains(&d) {
                    return Ok((d * 100, d * 100 + 99));
                }
            }
            if let Some((a, b)) = p.split_once('-') {
                let a: u16 = a
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid status code range {p:?}"))?;
                let b: u16 = b
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid status code range {p:?}"))?;
                if a <= b {
                    return Ok((a, b));
                }
            }
            p.parse::<u16>().map(|c| (c, c)).map_err(|_| {
                format!("invalid status code {p:?}: expected a number, a class such as 2xx or a range such as 200-399")
            })
        }
    }
}

/// blackbox 0.28's rules for `enable_http3` with `valid_http_versions` and `enable_http2`.
fn check_http3(section: &Section) -> Result<(), FieldError> {
    let versions = &section.valid_http_versions;
    if !section.enable_http3 {
        if let Some(i) = versions.iter().position(|v| v == "HTTP/3.0") {
            return Err(FieldError::new(
                format!("valid_http_versions[{i}]"),
                "HTTP/3 cannot be used as a valid HTTP version when enable_http3 is false",
            ));
        }
        return Ok(());
    }
    if let Some(i) = versions
        .iter()
        .position(|v| v == "HTTP/2.0" || v == "HTTP/1.1")
    {
        return Err(FieldError::new(
            format!("valid_http_versions[{i}]"),
            "HTTP/3 and HTTP/2.0/1.1 cannot be used together - only HTTP/3.0 is allowed when enable_http3 is true",
        ));
    }
    // As Prometheus' HTTP client config, enable_http2 is on unless set to false.
    if section.enable_http2 != Some(false) {
        return Err(FieldError::new(
            "enable_http2",
            "when enable_http3 is true, enable_http2 must be set to false",
        ));
    }
    Ok(())
}

/// blackbox's check that `Accept-Encoding` allows the configured compression.
fn accept_encoding_allows(compression: &str, accept: &str) -> bool {
    if compression.is_empty() || accept.is_empty() {
        return true;
    }
    let mut entries: Vec<(String, f32)> = Vec::new();
    for part in accept.split(',') {
        match part.rsplit_once(';') {
            None => entries.push((part.trim().to_owned(), 1.0)),
            Some((enc, q)) => {
                let q = q.trim().trim_start_matches("q=");
                let q: f32 = q.parse().unwrap_or(0.0);
                entries.push((enc.trim().to_owned(), q));
            }
        }
    }
    // Highest quality first; the first entry naming the encoding (or `*`) decides.
    entries.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    entries
        .iter()
        .find(|(enc, _)| enc == compression || enc == "*")
        .is_some_and(|(_, q)| *q > 0.0)
}

impl Spec {
    /// Validates `section`; `base` is the config file's directory for relative file names.
    /// The steps run in a fixed order, so a file with several mistakes reports the same one.
    pub fn build(section: &Section, base: &Path) -> Result<Spec, FieldError> {
        let valid_status = build_status_codes(section)?;
        let method = build_method(section)?;
        let compression = build_compression(section)?;
        let (headers, host_header) = build_headers(section, base)?;
        let authorization = build_authorization(section, base)?;
        let body = build_body(section, base)?;
        let (header_matches, header_not_matches) = build_header_matchers(section)?;
        let tls = tls::Spec::build(&section.tls_config.clone().unwrap_or_default(), base)
            .map_err(|e| e.within("tls_config"))?;
        let proxy = build_proxy(section)?;
        check_http3(section)?;
        // Why lookout cannot run this module, if it cannot.
        let unsupported = tls.unsupported.clone();
        let follow_redirects = match (section.follow_redirects, section.no_follow_redirects) {
            (Some(f), _) => f,
            (None, Some(n)) => !n,
            (None, None) => true,
        };
        Ok(Spec {
            valid_status,
            valid_http_versions: section.valid_http_versions.clone(),
            method,
            headers,
            host_header,
            authorization,
            body,
            compression,
            body_size_limit: section.body_size_limit.map(|s| s.0).filter(|n| *n > 0),
            follow_redirects,
            fail_if_ssl: section.fail_if_ssl,
            fail_if_not_ssl: section.fail_if_not_ssl,
            cel: cel::Checks::build(
                section.fail_if_body_json_matches_cel.as_deref(),
                section.fail_if_body_json_not_matches_cel.as_deref(),
            )?,
            body_matches: section.fail_if_body_matches_regexp.clone(),
            body_not_matches: section.fail_if_body_not_matches_regexp.clone(),
            header_matches,
            header_not_matches,
            tls,
            proxy,
            env_proxies: if section.proxy_from_environment {
                env_proxies()?
            } else {
                (None, None)
            },
            skip_resolve_phase_with_proxy: section.skip_resolve_phase_with_proxy,
            enable_http2: section.enable_http2.unwrap_or(true),
            enable_http3: section.enable_http3,
            ip: IpPreference::from_config(
                section.preferred_ip_protocol,
                section.ip_protocol_fallback,
            ),
            unsupported,
            oauth2: match &section.oauth2 {
                None => None,
                Some(o) => Some(std::sync::Arc::new(
                    oauth2::TokenSource::build(o, base).map_err(|e| e.within("oauth2"))?,
                )),
            },
        })
    }

    /// Evaluates the `fail_if_header_*` and `fail_if_body_*` expressions on a final response's
    /// headers and body, in blackbox's order, as a probe does after the status check; the error
    /// names the expression that failed. Public for the micro-benchmarks (`benches/checks.rs`).
    pub fn check_response(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<(), ProbeFailure> {
        client::check_headers(self, headers)?;
        body::match_regexes(self, body).map_err(regex_failure)
    }

    fn status_ok(&self, code: u16) -> bool {
        if self.valid_status.is_empty() {
            (200..300).contains(&code)
        } else {
            self.valid_status
                .iter()
                .any(|(a, b)| (*a..=*b).contains(&code))
        }
    }
}

/// `valid_status_codes`: codes, classes (`2xx`) and ranges as `(low, high)` pairs.
fn build_status_codes(section: &Section) -> Result<Vec<(u16, u16)>, FieldError> {
    section
        .valid_status_codes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            parse_status(s).map_err(|e| FieldError::new(format!("valid_status_codes[{i}]"), e))
        })
        .collect::<Result<Vec<_>, _>>()
}

/// `method` (GET when empty).
fn build_method(section: &Section) -> Result<Method, FieldError> {
    let method = match &section.method {
        None => Method::GET,
        Some(m) if m.is_empty() => Method::GET,
        Some(m) => Method::from_bytes(m.as_bytes())
            .map_err(|_| FieldError::new("method", format!("invalid HTTP method {m:?}")))?,
    };
    Ok(method)
}

/// `compression`, which must be one blackbox knows.
fn build_compression(section: &Section) -> Result<Option<Compression>, FieldError> {
    let compression = match section
        .compression
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") => None,
        Some("gzip") => Some(Compression::Gzip),
        Some("br") => Some(Compression::Br),
        Some("deflate") => Some(Compression::Deflate),
        Some("identity") => Some(Compression::Identity),
        Some(other) => {
            return Err(FieldError::new(
                "compression",
                format!(
                    "unsupported compression algorithm {other:?} (use gzip, br, deflate or identity)"
                ),
            ));
        }
    };
    Ok(compression)
}

/// `headers` and `http_headers` (values, secrets and files, in that order); a `Host` entry
/// becomes the Host override, and `Accept-Encoding` must allow the configured compression.
fn build_headers(
    section: &Section,
    base: &Path,
) -> Result<(HeaderList, Option<String>), FieldError> {
    let mut headers = Vec::new();
    let mut host_header = None;
    for (k, v) in &section.headers {
        if k.eq_ignore_ascii_case("host") {
            host_header = Some(v.clone());
            continue;
        }
        if k.eq_ignore_ascii_case("accept-encoding")
            && !accept_encoding_allows(section.compression.as_deref().unwrap_or(""), v)
        {
            return Err(FieldError::new(
                format!("headers.{k}"),
                format!(
                    "invalid configuration \"{k}: {v}\", \"compression: {}\": the Accept-Encoding header must allow the configured compression",
                    section.compression.as_deref().unwrap_or("")
                ),
            ));
        }
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            FieldError::new(format!("headers.{k}"), format!("invalid header name {k:?}"))
        })?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            FieldError::new(
                format!("headers.{k}"),
                format!("invalid header value {v:?}"),
            )
        })?;
        headers.push((name, value));
    }
    for (k, hv) in &section.http_headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            FieldError::new(
                format!("http_headers.{k}"),
                format!("invalid header name {k:?}"),
            )
        })?;
        let mut values: Vec<String> = hv.values.clone();
        values.extend(hv.secrets.iter().map(|s| s.expose().to_owned()));
        let file_field = format!("http_headers.{k}.files");
        for f in &hv.files {
            let choice = Choice {
                file_field: &file_field,
                conflict: None,
            };
            values.extend(value_or_file::<String>(base, None, Some(f), choice)?);
        }
        for v in values {
            let value = HeaderValue::from_str(&v).map_err(|_| {
                FieldError::new(format!("http_headers.{k}"), "invalid header value")
            })?;
            headers.push((name.clone(), value));
        }
    }
    Ok((headers, host_header))
}

/// The Authorization header from `basic_auth`, `bearer_token(_file)` or `authorization`, at
/// most one of them (oauth2 counts too); marked sensitive so it is never logged.
fn build_authorization(section: &Section, base: &Path) -> Result<Option<HeaderValue>, FieldError> {
    let mut auth_kinds = 0;
    let mut authorization = None;
    if let Some(b) = &section.basic_auth {
        auth_kinds += 1;
        let user = value_or_file(
            base,
            Some(b.username.clone()),
            b.username_file.as_deref(),
            Choice {
                file_field: "basic_auth.username_file",
                conflict: None,
            },
        )?
        .unwrap_or_default();
        let password = value_or_file(
            base,
            b.password.clone(),
            b.password_file.as_deref(),
            Choice {
                file_field: "basic_auth.password_file",
                conflict: Some(Conflict {
                    field: "basic_auth",
                    message: "at most one of basic_auth password & password_file must be configured",
                }),
            },
        )?;
        let password = password.as_ref().map_or("", Secret::expose);
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        authorization = Some(format!("Basic {token}"));
    }
    let bearer = value_or_file(
        base,
        section.bearer_token.clone(),
        section.bearer_token_file.as_deref(),
        Choice {
            file_field: "bearer_token_file",
            conflict: Some(Conflict {
                field: "bearer_token",
                message: "at most one of bearer_token & bearer_token_file must be configured",
            }),
        },
    )?;
    if let Some(t) = bearer {
        auth_kinds += 1;
        authorization = Some(format!("Bearer {}", t.expose()));
    }
    if let Some(a) = &section.authorization {
        auth_kinds += 1;
        let kind = a.kind.clone().unwrap_or_else(|| "Bearer".into());
        if kind.eq_ignore_ascii_case("basic") {
            return Err(FieldError::new(
                "authorization.type",
                "authorization type cannot be set to \"basic\", use \"basic_auth\" instead",
            ));
        }
        let creds = value_or_file(
            base,
            a.credentials.clone(),
            a.credentials_file.as_deref(),
            Choice {
                file_field: "authorization.credentials_file",
                conflict: Some(Conflict {
                    field: "authorization",
                    message: "at most one of authorization credentials & credentials_file must be configured",
                }),
            },
        )?;
        let creds = creds.as_ref().map_or("", Secret::expose);
        authorization = Some(format!("{kind} {creds}"));
    }
    if section.oauth2.is_some() {
        auth_kinds += 1;
    }
    if auth_kinds > 1 {
        return Err(FieldError::new(
            "basic_auth",
            "at most one of basic_auth, oauth2, bearer_token & bearer_token_file, authorization must be configured",
        ));
    }
    let authorization = authorization
        .map(|a| {
            HeaderValue::from_str(&a)
                .map_err(|_| FieldError::new("basic_auth", "invalid credentials"))
        })
        .transpose()?
        .map(|mut v| {
            v.set_sensitive(true);
            v
        });
    Ok(authorization)
}

/// `body` or `body_file` (read once, at load).
fn build_body(section: &Section, base: &Path) -> Result<Option<Bytes>, FieldError> {
    let body = value_or_file(
        base,
        section.body.clone().map(String::into_bytes),
        section.body_file.as_deref(),
        Choice {
            file_field: "body_file",
            conflict: Some(Conflict {
                field: "body",
                message: "at most one of body and body_file must be configured",
            }),
        },
    )?
    // An empty inline body is no body; an empty file is an empty one.
    .filter(|b| !b.is_empty() || section.body_file.is_some())
    .map(Bytes::from);
    Ok(body)
}

/// `fail_if_header_matches` and `fail_if_header_not_matches`.
fn build_header_matchers(
    section: &Section,
) -> Result<(Vec<HeaderMatcher>, Vec<HeaderMatcher>), FieldError> {
    let mut header_matches = Vec::new();
    let mut header_not_matches = Vec::new();
    for (field, list, out) in [
        (
            "fail_if_header_matches",
            &section.fail_if_header_matches,
            &mut header_matches,
        ),
        (
            "fail_if_header_not_matches",
            &section.fail_if_header_not_matches,
            &mut header_not_matches,
        ),
    ] {
        for (i, m) in list.iter().enumerate() {
            if m.header.is_empty() {
                return Err(FieldError::new(
                    format!("{field}[{i}].header"),
                    "header name must be set for HTTP header matchers",
                ));
            }
            if m.regexp.as_str().is_empty() {
                return Err(FieldError::new(
                    format!("{field}[{i}].regexp"),
                    "regexp must be set for HTTP header matchers",
                ));
            }
            let name = HeaderName::from_bytes(m.header.as_bytes()).map_err(|_| {
                FieldError::new(
                    format!("{field}[{i}].header"),
                    format!("invalid header name {:?}", m.header),
                )
            })?;
            out.push(HeaderMatcher {
                name,
                regexp: m.regexp.clone(),
                allow_missing: m.allow_missing,
            });
        }
    }
    Ok((header_matches, header_not_matches))
}

/// `proxy_url` with its `proxy_connect_header` and `no_proxy`; `no_proxy` alone is an error
/// unless the proxy comes from the environment.
fn build_proxy(section: &Section) -> Result<Option<Proxy>, FieldError> {
    let no_proxy: Vec<String> = section
        .no_proxy
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let proxy = match &section.proxy_url {
        Some(u) if !u.is_empty() => {
            if section.proxy_from_environment {
                return Err(FieldError::new(
                    "proxy_url",
                    "if proxy_from_environment is configured, proxy_url must not be configured",
                ));
            }
            let url = url::Url::parse(u)
                .map_err(|e| FieldError::new("proxy_url", format!("invalid URL {u:?}: {e}")))?;
            if url.scheme() != "http" {
                return Err(FieldError::new(
                    "proxy_url",
                    format!(
                        "unsupported proxy scheme {:?}: lookout supports http:// proxies",
                        url.scheme()
                    ),
                ));
            }
            let mut connect_headers = Vec::new();
            for (k, vs) in &section.proxy_connect_header {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                    FieldError::new(format!("proxy_connect_header.{k}"), "invalid header name")
                })?;
                for v in vs {
                    let value = HeaderValue::from_str(v.expose()).map_err(|_| {
                        FieldError::new(format!("proxy_connect_header.{k}"), "invalid header value")
                    })?;
                    connect_headers.push((name.clone(), value));
                }
            }
            Some(Proxy {
                url,
                connect_headers,
                no_proxy: no_proxy.clone(),
            })
        }
        _ => {
            if !no_proxy.is_empty() && !section.proxy_from_environment {
                return Err(FieldError::new(
                    "no_proxy",
                    "if no_proxy is configured, proxy_url must also be configured",
                ));
            }
            None
        }
    };
    Ok(proxy)
}

impl Spec {
    /// The configured request headers and `Authorization` (for `prober: websocket`, whose
    /// `http_config` and `headers` are validated as the HTTP prober's).
    pub(crate) fn request_headers(&self) -> (&[(HeaderName, HeaderValue)], Option<&HeaderValue>) {
        (&self.headers, self.authorization.as_ref())
    }

    /// The TLS settings.
    pub(crate) fn tls(&self) -> &tls::Spec {
        &self.tls
    }

    /// The Host header the module sets itself, if any (a `/probe?hostname=` must agree with it).
    pub fn host_header(&self) -> Option<&str> {
        self.host_header.as_deref()
    }
}

impl Prober for Spec {
    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        client::probe(self, req, cx).await
    }
}

/// Whether a failed header or body expectation is the reason (sets `probe_failed_due_to_regex`).
fn regex_failure(message: String) -> ProbeFailure {
    ProbeFailure::new(FailureKind::Assertion, message).because(Reason::Regex)
}

/// Reads `chunks` as a response body under `spec` (decompression, limits, regexes) and returns
/// whether the body passed and the uncompressed length counted: the HTTP body fuzz target.
#[doc(hidden)]
pub async fn read_body_for_fuzzing(spec: &Spec, chunks: Vec<Bytes>) -> (bool, f64) {
    let mut report = crate::probe::report::Report::new();
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<Bytes, std::io::Error>));
    let match_body = !spec.body_matches.is_empty() || !spec.body_not_matches.is_empty();
    let out = body::read_stream(spec, stream, match_body, &mut report).await;
    let passed = out.error.is_none() && out.matched.is_none_or(|m| m.is_ok());
    (
        passed,
        report
            .get(&PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH, &[])
            .unwrap_or(0.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_patterns() {
        assert_eq!(parse_status(&StatusCode::Code(204)).unwrap(), (204, 204));
        assert_eq!(
            parse_status(&StatusCode::Pattern("3xx".into())).unwrap(),
            (300, 399)
        );
        assert_eq!(
            parse_status(&StatusCode::Pattern("200-299".into())).unwrap(),
            (200, 299)
        );
        assert!(parse_status(&StatusCode::Pattern("abc".into())).is_err());
    }

    #[test]
    fn accept_encoding_rules_follow_blackbox() {
        assert!(accept_encoding_allows("gzip", "br, gzip"));
        assert!(accept_encoding_allows("gzip", "br;q=1.0, gzip;q=0.9"));
        assert!(!accept_encoding_allows("gzip", "br, identity"));
        assert!(!accept_encoding_allows("gzip", "gzip;q=0"));
        assert!(accept_encoding_allows("gzip", "*"));
    }
}
