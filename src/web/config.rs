//! The web config file as written (exporter-toolkit's format, every field from the versions
//! blackbox_exporter 0.23 to 0.28 ship) and its validation into a [`WebConfig`].
//!
//! Parsing checks what the YAML alone can tell (field names, TLS versions, cipher and curve
//! names, client auth type, header names and values, durations), each error with its line.
//! What needs other files (certificates, keys, CAs) or costs time (bcrypt hashes) is checked by
//! [`super::Web::load`] at start-up, as exporter-toolkit does before it serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::config::ConfigError;
use crate::secret::Secret;
use crate::values::FieldError;

/// A parsed web config.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// TLS settings; `None` when the file sets none of the fields that turn TLS on (a
    /// certificate, a key, a client CA or a client auth type), as exporter-toolkit decides.
    pub tls: Option<TlsSettings>,
    /// `http_server_config.http2` (default true): whether HTTP/2 is offered over TLS.
    pub http2: bool,
    /// `http_server_config.headers`, set on every answer that passes the rate limit.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `basic_auth_users`: user name → bcrypt hash. Empty: no authentication.
    pub users: BTreeMap<String, Secret>,
    /// `rate_limit`, when its interval is positive.
    pub rate_limit: Option<RateLimit>,
}

/// `rate_limit`: a token bucket of `burst` tokens refilled one per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Time between two tokens.
    pub interval: Duration,
    /// Bucket size (and the initial fill); 0 refuses every request, as Go's limiter does.
    pub burst: u64,
}

/// Where a PEM comes from: a file (re-read on every handshake) or the config itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    /// A `_file` field, already joined with the config file's directory.
    File {
        /// The path.
        path: PathBuf,
        /// The field that named it (`cert_file`).
        field: &'static str,
    },
    /// An inline field (`cert`, `key`, `client_ca`).
    Inline {
        /// The PEM text.
        text: Secret,
        /// The field.
        field: &'static str,
    },
}

impl Pem {
    /// The field path, within `tls_server_config`.
    pub fn field(&self) -> String {
        let f = match self {
            Pem::File { field, .. } | Pem::Inline { field, .. } => field,
        };
        format!("tls_server_config.{f}")
    }

    /// Reads the PEM (the file, or the inline text).
    pub fn read(&self) -> Result<Vec<u8>, FieldError> {
        match self {
            Pem::File { path, .. } => std::fs::read(path).map_err(|e| {
                FieldError::new(self.field(), format!("cannot read {}: {e}", path.display()))
            }),
            Pem::Inline { text, .. } => Ok(text.expose().as_bytes().to_vec()),
        }
    }

    /// "file /x" or "the inline PEM", for messages.
    pub fn describe(&self) -> String {
        match self {
            Pem::File { path, .. } => path.display().to_string(),
            Pem::Inline { .. } => "the inline PEM".to_owned(),
        }
    }
}

/// Go's `tls.ClientAuthType`, by the names exporter-toolkit accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (or empty): no certificate is asked for.
    No,
    /// `RequestClientCert`: asked for, not required, not verified.
    Request,
    /// `RequireAnyClientCert` (or the older `RequireClientCert`): required, not verified.
    RequireAny,
    /// `VerifyClientCertIfGiven`: not required, verified when sent.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`: required and verified.
    RequireAndVerify,
}

impl ClientAuth {
    /// Whether a certificate the client sends is verified against the client CAs.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify
        )
    }

    /// Whether the client must send a certificate.
    pub fn mandatory(self) -> bool {
        matches!(self, ClientAuth::RequireAny | ClientAuth::RequireAndVerify)
    }
}

/// A TLS protocol version by exporter-toolkit's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `TLS10`.
    Tls10,
    /// `TLS11`.
    Tls11,
    /// `TLS12`.
    Tls12,
    /// `TLS13`.
    Tls13,
}

impl Version {
    /// exporter-toolkit's name.
    pub fn name(self) -> &'static str {
        match self {
            Version::Tls10 => "TLS10",
            Version::Tls11 => "TLS11",
            Version::Tls12 => "TLS12",
            Version::Tls13 => "TLS13",
        }
    }
}

/// `tls_server_config`, validated as far as the file alone allows.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The certificate chain.
    pub cert: Pem,
    /// The private key.
    pub key: Pem,
    /// The CAs client certificates are verified against (`None`: the system's, as Go does).
    pub client_ca: Option<Pem>,
    /// `client_auth_type`.
    pub client_auth: ClientAuth,
    /// `min_version` (default TLS12).
    pub min_version: Version,
    /// `max_version` (default TLS13).
    pub max_version: Version,
    /// `cipher_suites` by Go's names (`None`: the defaults).
    pub cipher_suites: Option<Vec<String>>,
    /// `curve_preferences` by Go's names, in order (`None`: the defaults).
    pub curves: Option<Vec<String>>,
    /// `client_allowed_sans`: a client certificate must carry one of these SANs.
    pub allowed_sans: Option<Vec<String>>,
}

/// The cipher suite names exporter-toolkit accepts (Go's `tls.CipherSuites()`, over the Go
/// versions blackbox 0.23 to 0.28 were built with), and whether lookout (rustls with ring)
/// implements each.
pub const GO_CIPHER_SUITES: [(&str, bool); 19] = [
    ("TLS_AES_128_GCM_SHA256", true),
    ("TLS_AES_256_GCM_SHA384", true),
    ("TLS_CHACHA20_POLY1305_SHA256", true),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", true),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", true),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", true),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", true),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", true),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", true),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", false),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", false),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", false),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", false),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", false),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", false),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", false),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", false),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", false),
    ("TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", false),
];

/// The curve names exporter-toolkit accepts, and whether lookout implements each.
pub const GO_CURVES: [(&str, bool); 4] = [
    ("CurveP256", true),
    ("CurveP384", true),
    ("CurveP521", false),
    ("X25519", true),
];

/// The response headers exporter-toolkit lets a config set, with the only values allowed for
/// each (empty: any value).
const HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

// ------------------------------------------------------------------ the file as written -------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default, deserialize_with = "null_default")]
    tls_server_config: RawTls,
    #[serde(default, deserialize_with = "null_default")]
    http_server_config: RawHttp,
    #[serde(default, deserialize_with = "null_default")]
    rate_limit: RawRateLimit,
    #[serde(default, deserialize_with = "null_default")]
    basic_auth_users: BTreeMap<Text, Option<Secret>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    cert: Option<Secret>,
    #[serde(default)]
    key: Option<Secret>,
    #[serde(default)]
    client_ca: Option<Secret>,
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    client_auth_type: Option<RawClientAuth>,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    cipher_suites: Option<Vec<Named<Cipher>>>,
    #[serde(default)]
    curve_preferences: Option<Vec<Named<Curve>>>,
    #[serde(default)]
    min_version: Option<RawVersion>,
    #[serde(default)]
    max_version: Option<RawVersion>,
    /// Accepted and ignored: Go has ignored `PreferServerCipherSuites` since 1.18, so no
    /// blackbox release honours it either.
    #[serde(default)]
    #[allow(dead_code)]
    prefer_server_cipher_suites: Option<GoBool>,
    #[serde(default)]
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    http2: Option<GoBool>,
    #[serde(default, deserialize_with = "null_default")]
    headers: BTreeMap<String, Option<Text>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    interval: Option<GoDuration>,
    #[serde(default)]
    burst: Option<i64>,
}

/// A null section or map is the same as an absent one (Go's YAML decoder leaves the zero value).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A scalar read as a string, as Go's YAML decoder does for a string field (`X-XSS-Protection: 1`
/// is a number to YAML, and a header value to exporter-toolkit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a string and checks it with `check` inside the deserializer, so an error carries the
/// value's own line and column (serde_norway marks an error with the node being read).
fn checked_str<'de, D, T>(
    d: D,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<F>(F);
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V(check))
}

/// A boolean as Go's YAML 1.1 decoder reads one: `true`/`false`, and also `yes`/`no`, `on`/`off`,
/// `y`/`n` in their usual capitalisations.
#[derive(Debug, Clone, Copy)]
struct GoBool(bool);

impl<'de> Deserialize<'de> for GoBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoBool;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<GoBool, E> {
                Ok(GoBool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoBool, E> {
                match v {
                    "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(GoBool(true)),
                    "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(GoBool(false)),
                    _ => Err(E::custom(format!("{v:?} is not a boolean (true or false)"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A name checked against a fixed list while the YAML is read, so a bad one has its line.
trait NameList {
    const WHAT: &'static str;
    const NAMES: &'static [(&'static str, bool)];
}

#[derive(Debug)]
struct Cipher;
impl NameList for Cipher {
    const WHAT: &'static str = "cipher suite";
    const NAMES: &'static [(&'static str, bool)] = &GO_CIPHER_SUITES;
}

#[derive(Debug)]
struct Curve;
impl NameList for Curve {
    const WHAT: &'static str = "curve";
    const NAMES: &'static [(&'static str, bool)] = &GO_CURVES;
}

#[derive(Debug)]
struct Named<L>(String, std::marker::PhantomData<L>);

impl<'de, L: NameList> Deserialize<'de> for Named<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |s| {
            if L::NAMES.iter().any(|(n, _)| *n == s) {
                Ok(Named(s.to_owned(), std::marker::PhantomData))
            } else {
                let names: Vec<&str> = L::NAMES.iter().map(|(n, _)| *n).collect();
                Err(format!(
                    "unknown {} {s:?}, expected one of {}",
                    L::WHAT,
                    names.join(", ")
                ))
            }
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct RawClientAuth(ClientAuth);

impl<'de> Deserialize<'de> for RawClientAuth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |s| {
            Ok(RawClientAuth(match s {
                "" | "NoClientCert" => ClientAuth::No,
                "RequestClientCert" => ClientAuth::Request,
                "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAny,
                "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
                "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
                _ => {
                    return Err(format!(
                        "unknown client_auth_type {s:?}, expected one of NoClientCert, \
                         RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, \
                         RequireAndVerifyClientCert"
                    ));
                }
            }))
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct RawVersion(Version);

impl<'de> Deserialize<'de> for RawVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |s| {
            Ok(RawVersion(match s {
                "TLS10" => Version::Tls10,
                "TLS11" => Version::Tls11,
                "TLS12" => Version::Tls12,
                "TLS13" => Version::Tls13,
                _ => {
                    return Err(format!(
                        "unknown TLS version {s:?}, expected one of TLS10, TLS11, TLS12, TLS13"
                    ));
                }
            }))
        })
    }
}

/// A Go `time.Duration` as Go's YAML decoder reads one: a `time.ParseDuration` string
/// (`1s`, `1.5m`, `1h30m`, `250ms`) or an integer of nanoseconds.
#[derive(Debug, Clone, Copy)]
struct GoDuration(i128);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as 1s or 500ms")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                parse_go_duration(v).map(GoDuration).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
                Ok(GoDuration(i128::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
                Ok(GoDuration(i128::from(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Go's `time.ParseDuration`, in nanoseconds: an optional sign, then one or more decimal
/// numbers each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is allowed.
pub fn parse_go_duration(s: &str) -> Result<i128, String> {
    let bad = || format!("invalid duration {s:?} (Go's form, e.g. 1s, 500ms, 1m30s)");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = next;
    }
    if total > i64::MAX as f64 {
        return Err(format!("duration {s:?} is too long"));
    }
    let ns = total as i128;
    Ok(if neg { -ns } else { ns })
}

// ------------------------------------------------------------------ validation ----------------

/// Parses web config `text` read from `path`: syntax, field names and every value the file
/// alone decides. Relative file names are joined with `path`'s directory, as exporter-toolkit
/// does.
pub fn parse(text: &str, path: &Path) -> Result<WebConfig, ConfigError> {
    let error =
        |line: Option<usize>, column: Option<usize>, field: String, message: String| ConfigError {
            file: path.to_path_buf(),
            line,
            column,
            field,
            message,
        };
    // An empty file (or one with only comments) is a config with nothing set, as in Go.
    let raw: Raw = if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        Raw::default()
    } else {
        let de = serde_norway::Deserializer::from_str(text);
        match serde_path_to_error::deserialize(de) {
            Ok(raw) => raw,
            Err(e) => {
                let field = e
                    .path()
                    .to_string()
                    .split('.')
                    .take_while(|p| *p != "?")
                    .collect::<Vec<_>>()
                    .join(".");
                let inner = e.into_inner();
                let (line, column) = match inner.location() {
                    Some(l) => (Some(l.line()), Some(l.column())),
                    None => (None, None),
                };
                let message = inner.to_string();
                let message = match message.find(" at line ") {
                    Some(i) => message[..i].to_owned(),
                    None => message,
                };
                // serde_norway puts the path in front ("tls_server_config: unknown field …");
                // the path is reported separately.
                let message = match message.split_once(": ") {
                    Some((head, tail)) if !head.contains(' ') => tail.to_owned(),
                    _ => message,
                };
                let field = if field == "." { String::new() } else { field };
                return Err(error(line, column, field, message));
            }
        }
    };
    let base = path.parent().unwrap_or(Path::new(""));
    validate(raw, base).map_err(|e| error(locate(text, &e.path), None, e.path, e.message))
}

fn validate(raw: Raw, base: &Path) -> Result<WebConfig, FieldError> {
    let mut headers = Vec::new();
    for (name, value) in raw.http_server_config.headers {
        let field = format!("http_server_config.headers.{name}");
        let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(FieldError::new(
                field,
                format!(
                    "header {name:?} cannot be configured, only {}",
                    names.join(", ")
                ),
            ));
        };
        let value = value.map(|t| t.0).unwrap_or_default();
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(FieldError::new(
                field,
                format!(
                    "invalid value {value:?} for {name}, expected one of {}",
                    allowed.join(", ")
                ),
            ));
        }
        if value.is_empty() {
            continue; // blank: unset, as exporter-toolkit documents
        }
        let v = HeaderValue::from_str(&value).map_err(|_| {
            FieldError::new(&field, format!("{value:?} is not a valid header value"))
        })?;
        // Cannot fail: the name is one of HEADERS, all valid header names.
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| FieldError::new(&field, "not a valid header name"))?;
        headers.push((n, v));
    }

    let mut users = BTreeMap::new();
    for (user, hash) in raw.basic_auth_users {
        users.insert(user.0, hash.unwrap_or_default());
    }

    let rate_limit = match raw.rate_limit.interval {
        Some(GoDuration(ns)) if ns > 0 => Some(RateLimit {
            interval: Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)),
            burst: u64::try_from(raw.rate_limit.burst.unwrap_or(0)).unwrap_or(0),
        }),
        // Zero (or absent) turns the limiter off; so does a negative interval, which Go's
        // `rate.Every` makes an infinite rate.
        _ => None,
    };

    Ok(WebConfig {
        tls: tls_settings(raw.tls_server_config, base)?,
        http2: raw.http_server_config.http2.is_none_or(|b| b.0),
        headers,
        users,
        rate_limit,
    })
}

fn tls_settings(t: RawTls, base: &Path) -> Result<Option<TlsSettings>, FieldError> {
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let nonempty_secret = |s: Option<Secret>| s.filter(|s| !s.expose().is_empty());
    let join = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let (cert_file, key_file, ca_file) = (
        nonempty(t.cert_file),
        nonempty(t.key_file),
        nonempty(t.client_ca_file),
    );
    let (cert, key, ca) = (
        nonempty_secret(t.cert),
        nonempty_secret(t.key),
        nonempty_secret(t.client_ca),
    );
    let auth = t.client_auth_type.map(|a| a.0);
    let enabled = cert_file.is_some()
        || key_file.is_some()
        || ca_file.is_some()
        || cert.is_some()
        || key.is_some()
        || ca.is_some()
        || auth.is_some();
    if !enabled {
        return Ok(None);
    }
    // A file wins over inline text, as in exporter-toolkit.
    let pem = |file: Option<String>,
               file_field: &'static str,
               text: Option<Secret>,
               field: &'static str| {
        match (file, text) {
            (Some(p), _) => Some(Pem::File {
                path: join(p),
                field: file_field,
            }),
            (None, Some(text)) => Some(Pem::Inline { text, field }),
            (None, None) => None,
        }
    };
    let cert = pem(cert_file, "cert_file", cert, "cert").ok_or_else(|| {
        FieldError::new("tls_server_config", "missing cert_file (or an inline cert)")
    })?;
    let key = pem(key_file, "key_file", key, "key").ok_or_else(|| {
        FieldError::new("tls_server_config", "missing key_file (or an inline key)")
    })?;
    let client_ca = pem(ca_file, "client_ca_file", ca, "client_ca");
    let client_auth = auth.unwrap_or(ClientAuth::No);
    if let Some(ca) = &client_ca
        && client_auth == ClientAuth::No
    {
        return Err(FieldError::new(
            ca.field(),
            "a client CA is configured but client_auth_type is NoClientCert; set \
             client_auth_type (RequireAndVerifyClientCert to require verified client certificates)",
        ));
    }
    let min_version = t.min_version.map_or(Version::Tls12, |v| v.0);
    let max_version = t.max_version.map_or(Version::Tls13, |v| v.0);
    if max_version < Version::Tls12 {
        return Err(FieldError::new(
            "tls_server_config.max_version",
            format!(
                "max_version {}: lookout serves TLS 1.2 and 1.3 only (rustls has no TLS 1.0 or \
                 1.1), so this range leaves no version to serve",
                max_version.name()
            ),
        ));
    }
    if min_version > max_version {
        return Err(FieldError::new(
            "tls_server_config.min_version",
            format!(
                "min_version {} is above max_version {}",
                min_version.name(),
                max_version.name()
            ),
        ));
    }
    Ok(Some(TlsSettings {
        cert,
        key,
        client_ca,
        client_auth,
        min_version,
        max_version,
        cipher_suites: t
            .cipher_suites
            .map(|v| v.into_iter().map(|n| n.0).collect()),
        curves: t
            .curve_preferences
            .map(|v| v.into_iter().map(|n| n.0).collect()),
        allowed_sans: t.client_allowed_sans,
    }))
}

/// The line of a dotted field path (`tls_server_config.cert_file`, `basic_auth_users.alice`)
/// in block-style YAML; the deepest segment found wins, `None` when not even the first is.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found: Option<(usize, usize)> = None; // (line index, indent)
    for seg in path.split('.') {
        let seg = seg.split('[').next().unwrap_or(seg);
        let from = found.map_or(0, |(i, _)| i + 1);
        let mut hit = None;
        for (i, l) in lines.iter().enumerate().skip(from) {
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let indent = l.len() - t.len();
            if let Some((_, parent)) = found
                && indent <= parent
            {
                break; // left the parent's block
            }
            let key = t.trim_start_matches("- ");
            let unquoted = key.trim_start_matches(['"', '\'']);
            if let Some(r) = unquoted.strip_prefix(seg)
                && r.trim_start_matches(['"', '\'']).starts_with(':')
            {
                hit = Some((i, indent));
                break;
            }
        }
        match hit {
            Some(h) => found = Some(h),
            None => break,
        }
    }
    found.map(|(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> ConfigError {
        parse(yaml, Path::new("/etc/lookout/web.yml")).unwrap_err()
    }

    fn ok(yaml: &str) -> WebConfig {
        parse(yaml, Path::new("/etc/lookout/web.yml")).unwrap()
    }

    #[test]
    fn an_empty_file_turns_nothing_on() {
        for text in [
            "",
            "# nothing\n",
            "---\n",
            "tls_server_config:\nbasic_auth_users:\n",
        ] {
            let c = ok(text);
            assert!(c.tls.is_none() && c.users.is_empty() && c.rate_limit.is_none());
            assert!(c.http2 && c.headers.is_empty());
        }
    }

    #[test]
    fn relative_files_are_read_beside_the_web_config() {
        let c = ok("tls_server_config:\n  cert_file: tls.crt\n  key_file: /abs/tls.key\n");
        let t = c.tls.unwrap();
        assert_eq!(
            t.cert,
            Pem::File {
                path: "/etc/lookout/tls.crt".into(),
                field: "cert_file"
            }
        );
        assert_eq!(
            t.key,
            Pem::File {
                path: "/abs/tls.key".into(),
                field: "key_file"
            }
        );
        assert_eq!(
            (t.min_version, t.max_version),
            (Version::Tls12, Version::Tls13)
        );
        assert_eq!(t.client_auth, ClientAuth::No);
    }

    #[test]
    fn unknown_fields_name_their_line_and_path() {
        let e = err("tls_server_config:\n  cert_file: a\n  cert_filse: b\n");
        assert_eq!(
            (e.line, e.field.as_str()),
            (Some(3), "tls_server_config.cert_filse"),
            "{e}"
        );
        assert!(e.message.contains("unknown field `cert_filse`"), "{e}");
        let e = err("basic_auth_users:\n  alice: x\nrate_limits: {}\n");
        assert_eq!(e.line, Some(3), "{e}");
    }

    #[test]
    fn bad_names_are_reported_where_they_are() {
        let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS111\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert_eq!(e.field, "tls_server_config.min_version");
        assert!(e.message.contains("unknown TLS version \"TLS111\""), "{e}");
        let e = err(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites:\n    - TLS_AES_128_GCM_SHA256\n    - TLS_INVENTED\n",
        );
        assert_eq!(e.line, Some(6), "{e}");
        assert_eq!(e.field, "tls_server_config.cipher_suites[1]");
        let e = err(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [CurveP999]\n",
        );
        assert!(e.message.contains("unknown curve \"CurveP999\""), "{e}");
        let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: x\n");
        assert!(e.message.contains("unknown client_auth_type \"x\""), "{e}");
    }

    #[test]
    fn tls_needs_a_certificate_and_a_key() {
        let e = err("tls_server_config:\n  key_file: b\n");
        assert_eq!((e.line, e.field.as_str()), (Some(1), "tls_server_config"));
        assert!(e.message.contains("missing cert_file"), "{e}");
        let e = err("tls_server_config:\n  cert_file: a\n");
        assert!(e.message.contains("missing key_file"), "{e}");
        // Empty strings are unset, as in Go; a client auth type alone still turns TLS on.
        let e = err(
            "tls_server_config:\n  cert_file: \"\"\n  key_file: \"\"\n  client_auth_type: RequireAndVerifyClientCert\n",
        );
        assert!(e.message.contains("missing cert_file"), "{e}");
        assert!(
            ok("tls_server_config:\n  min_version: TLS13\n")
                .tls
                .is_none()
        );
    }

    #[test]
    fn a_client_ca_needs_a_client_auth_type() {
        let e =
            err("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: ca.pem\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert_eq!(e.field, "tls_server_config.client_ca_file");
    }

    #[test]
    fn versions_outside_what_rustls_serves_are_refused() {
        let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  max_version: TLS11\n");
        assert_eq!(
            (e.line, e.field.as_str()),
            (Some(4), "tls_server_config.max_version")
        );
        let e = err(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
        );
        assert_eq!(e.field, "tls_server_config.min_version");
        let t = ok("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n")
            .tls
            .unwrap();
        assert_eq!(t.min_version, Version::Tls10);
    }

    #[test]
    fn headers_are_exporter_toolkits_five() {
        let c = ok(
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-XSS-Protection: 1\n    Content-Security-Policy: \"\"\n",
        );
        let got: Vec<(String, String)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            got,
            [
                ("x-frame-options".to_owned(), "deny".to_owned()),
                ("x-xss-protection".to_owned(), "1".to_owned())
            ]
        );
        let e = err(
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Powered-By: lookout\n",
        );
        assert_eq!(
            (e.line, e.field.as_str()),
            (Some(4), "http_server_config.headers.X-Powered-By")
        );
        let e = err("http_server_config:\n  headers:\n    X-Frame-Options: allow\n");
        assert!(
            e.message.contains("expected one of deny, sameorigin"),
            "{e}"
        );
        let e = err("http_server_config:\n  headers:\n    x-frame-options: deny\n");
        assert!(e.message.contains("cannot be configured"), "{e}");
        assert!(!ok("http_server_config: {http2: false}\n").http2);
        assert!(
            !ok("http_server_config: {http2: no}\n").http2,
            "YAML 1.1, as Go reads it"
        );
        let e = err("http_server_config:\n  http2: maybe\n");
        assert_eq!(
            (e.line, e.field.as_str()),
            (Some(2), "http_server_config.http2"),
            "{e}"
        );
    }

    #[test]
    fn rate_limits_read_go_durations() {
        let c = ok("rate_limit:\n  interval: 1m30s\n  burst: 20\n");
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                interval: Duration::from_secs(90),
                burst: 20
            })
        );
        assert_eq!(ok("rate_limit: {interval: 0, burst: 0}\n").rate_limit, None);
        assert_eq!(
            ok("rate_limit: {interval: -1s, burst: 3}\n").rate_limit,
            None
        );
        assert_eq!(
            ok("rate_limit: {interval: 1000000}\n").rate_limit,
            Some(RateLimit {
                interval: Duration::from_millis(1),
                burst: 0
            })
        );
        let e = err("rate_limit:\n  interval: 1d\n");
        assert_eq!((e.line, e.field.as_str()), (Some(2), "rate_limit.interval"));
    }

    #[test]
    fn go_durations() {
        for (s, ns) in [
            ("0", 0),
            ("1s", 1_000_000_000),
            ("1.5s", 1_500_000_000),
            ("1h2m3s", 3_723_000_000_000),
            ("250ms", 250_000_000),
            ("10us", 10_000),
            ("10µs", 10_000),
            ("-2m", -120_000_000_000),
            ("+3ns", 3),
        ] {
            assert_eq!(parse_go_duration(s), Ok(ns), "{s}");
        }
        for s in ["", "1", "1d", "s", ".s", "1..2s", "1s2", "-"] {
            assert!(parse_go_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn locate_follows_the_block_structure() {
        let text = "basic_auth_users:\n  bob: x\ntls_server_config:\n  # c\n  cert_file: a\n  key_file: b\n";
        assert_eq!(locate(text, "tls_server_config.key_file"), Some(6));
        assert_eq!(locate(text, "basic_auth_users.bob"), Some(2));
        assert_eq!(locate(text, "tls_server_config.client_ca_file"), Some(3));
        assert_eq!(locate(text, "rate_limit"), None);
    }
}
