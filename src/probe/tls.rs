//! TLS for every prober: blackbox's `tls_config` section, built once at load into a rustls client
//! configuration, plus the certificate facts blackbox exposes (expiries, leaf info, version,
//! cipher) and their metric families.
//!
//! Certificate verification is done here, with rustls-webpki, rather than by rustls' stock
//! verifier, because blackbox's `probe_ssl_last_chain_expiry_timestamp_seconds` needs the chain
//! that verification built, which the stock verifier does not return. One verifier instance is
//! made per connection so concurrent probes never see each other's chains.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ProtocolVersion, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use crate::probe::prober::{FailureKind, ProbeFailure, Reason};
use crate::probe::report::{Family, Report};
use crate::secret::Secret;
use crate::values::{Choice, Conflict, FieldError, value_or_file};

/// `probe_ssl_earliest_cert_expiry`.
pub static PROBE_SSL_EARLIEST_CERT_EXPIRY: Family = Family::gauge(
    "probe_ssl_earliest_cert_expiry",
    "Returns last SSL chain expiry in unixtime",
);
/// `probe_ssl_last_chain_expiry_timestamp_seconds`.
pub static PROBE_SSL_LAST_CHAIN_EXPIRY_TIMESTAMP_SECONDS: Family = Family::gauge(
    "probe_ssl_last_chain_expiry_timestamp_seconds",
    "Returns last SSL chain expiry in timestamp",
);
/// `probe_ssl_last_chain_info`.
pub static PROBE_SSL_LAST_CHAIN_INFO: Family = Family::gauge(
    "probe_ssl_last_chain_info",
    "Contains SSL leaf certificate information",
);
/// `probe_tls_version_info`.
pub static PROBE_TLS_VERSION_INFO: Family = Family::gauge(
    "probe_tls_version_info",
    "Returns the TLS version used or NaN when unknown",
);
/// `probe_tls_cipher_info` (blackbox 0.26+).
pub static PROBE_TLS_CIPHER_INFO: Family = Family::gauge(
    "probe_tls_cipher_info",
    "Returns the TLS cipher negotiated during handshake",
);

/// Go's zero `time.Time` as a Unix timestamp: what blackbox reports as the last chain expiry when
/// no chain was verified (`insecure_skip_verify`).
pub const GO_ZERO_TIME: f64 = -62_135_596_800.0;

/// blackbox's (Prometheus common's) `tls_config` block, as written in the file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// CA certificate file (PEM) to verify the target with; system roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Inline CA certificate (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Client certificate file (PEM) for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Inline client certificate (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// Client key file (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Inline client key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// Name to verify the certificate against (and send as SNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Skip certificate verification.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// Minimum TLS version: TLS10, TLS11, TLS12, TLS13.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<TlsVersion>,
    /// Maximum TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<TlsVersion>,
}

/// A TLS protocol version as Prometheus' `tls_config` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
pub enum TlsVersion {
    /// TLS 1.0.
    TLS10,
    /// TLS 1.1.
    TLS11,
    /// TLS 1.2.
    TLS12,
    /// TLS 1.3.
    TLS13,
}

/// The rustls provider for the whole binary: ring (smaller and faster to build than aws-lc-rs;
/// handshake cost is comparable for the ECDHE and RSA/ECDSA verification a probe does).
///
/// Cipher suites are offered in Go's default order (AES-128-GCM before AES-256-GCM before
/// ChaCha20, on machines with AES instructions), not rustls' (AES-256 first): a server that
/// follows the client's preference then picks what blackbox_exporter gets from it, so
/// `probe_tls_cipher_info` agrees with blackbox on the same target.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| go_preference(s.suite()));
    Arc::new(p)
}

/// Rank of a suite in Go's `crypto/tls` default preference (lower is preferred); the sort is
/// stable, so suites Go does not rank keep rustls' order after the ranked ones.
fn go_preference(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as C;
    match suite {
        C::TLS13_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384 => 1,
        C::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => 3,
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 4,
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => 5,
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 6,
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => 7,
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 8,
        _ => 9,
    }
}

/// Roots and verification settings shared by every connection of one module.
#[derive(Debug, Clone)]
struct Trust {
    anchors: Arc<[TrustAnchor<'static>]>,
    /// The root certificates behind `anchors`, to report their expiry in the verified chain.
    roots: Arc<[CertificateDer<'static>]>,
    algs: WebPkiSupportedAlgorithms,
    insecure: bool,
    /// Whether the certificate must be valid for the server name (false: the chain only).
    check_name: bool,
}

/// A validated `tls_config`: a ready rustls configuration and the settings probes read.
#[derive(Debug, Clone)]
pub struct Spec {
    base: Arc<ClientConfig>,
    /// For QUIC (`enable_http3`): TLS 1.3 with the one suite every TLS 1.3 server has, so the
    /// negotiated suite is known (quinn does not tell it); `None` when the config leaves out
    /// TLS 1.3.
    quic: Option<Arc<ClientConfig>>,
    trust: Arc<Trust>,
    /// `server_name` from the config, if any.
    pub server_name: Option<String>,
    /// Set when the config asks for something rustls cannot do (TLS below 1.2 only); probes using
    /// it fail with this reason.
    pub unsupported: Option<String>,
}

/// Trust anchors and the root certificates behind them, index for index.
type Roots = (Arc<[TrustAnchor<'static>]>, Arc<[CertificateDer<'static>]>);

/// Keeps the certificates webpki accepts as trust anchors; with `strict` (a configured CA) an
/// unusable one is an error, else it is skipped.
fn anchors(certs: Vec<CertificateDer<'static>>, strict: bool) -> Result<Roots, String> {
    let mut anchors = Vec::with_capacity(certs.len());
    let mut kept = Vec::with_capacity(certs.len());
    for der in certs {
        match webpki::anchor_from_trusted_cert(&der) {
            Ok(a) => {
                anchors.push(a.to_owned());
                kept.push(der);
            }
            Err(e) if strict => return Err(format!("unusable CA certificate: {e:?}")),
            Err(_) => {}
        }
    }
    Ok((anchors.into(), kept.into()))
}

/// The system's roots, loaded and turned into anchors once per process and shared by every
/// module without a CA of its own: a copy per module cost about 235 KiB of heap each (145
/// Debian roots), more than the rest of a module.
fn system_roots() -> Roots {
    static ROOTS: std::sync::OnceLock<Roots> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(err = %e, "while loading system root certificates");
            }
            // Cannot fail: unusable system roots are skipped, not errors.
            anchors(found.certs, false).unwrap_or_default()
        })
        .clone()
}

impl Spec {
    /// Builds the rustls configuration for `section`; relative file names are read relative to
    /// `base` (the config file's directory), as blackbox does. Errors name the field within
    /// `tls_config` (`ca_file`, `key`, …).
    pub fn build(section: &Section, base: &Path) -> Result<Spec, FieldError> {
        // Problems with the PEM are reported at the field it came from.
        let from = |file: &Option<PathBuf>, field: &'static str, file_field: &'static str| {
            if file.is_some() { file_field } else { field }
        };
        let ca_field = from(&section.ca_file, "ca", "ca_file");
        let ca_pem = value_or_file(
            base,
            section.ca.as_ref().map(|s| s.as_bytes().to_vec()),
            section.ca_file.as_deref(),
            Choice {
                file_field: "ca_file",
                conflict: Some(Conflict {
                    field: "ca_file",
                    message: "at most one of ca and ca_file must be configured",
                }),
            },
        )?;
        let (anchors, kept_roots) = match ca_pem {
            Some(pem) => {
                let mut roots: Vec<CertificateDer<'static>> = Vec::new();
                for c in CertificateDer::pem_slice_iter(&pem) {
                    roots.push(c.map_err(|e| {
                        FieldError::new(ca_field, format!("not a PEM certificate: {e}"))
                    })?);
                }
                if roots.is_empty() {
                    return Err(FieldError::new(ca_field, "no PEM certificate found"));
                }
                anchors(roots, true).map_err(|e| FieldError::new(ca_field, e))?
            }
            None => system_roots(),
        };

        let provider = provider();
        let mut unsupported = None;
        let min = section.min_version.unwrap_or(TlsVersion::TLS12);
        let max = section.max_version.unwrap_or(TlsVersion::TLS13);
        if min > max {
            return Err(FieldError::new(
                "min_version",
                "min_version must not be greater than max_version",
            ));
        }
        let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
        if min <= TlsVersion::TLS12 && max >= TlsVersion::TLS12 {
            versions.push(&rustls::version::TLS12);
        }
        if max >= TlsVersion::TLS13 {
            versions.push(&rustls::version::TLS13);
        }
        if versions.is_empty() {
            unsupported = Some(format!(
                "max_version {:?}: lookout speaks TLS 1.2 and 1.3 only (rustls has no TLS 1.0/1.1)",
                max
            ));
            versions.push(&rustls::version::TLS12);
        }
        let trust = Arc::new(Trust {
            anchors,
            roots: kept_roots,
            algs: provider.signature_verification_algorithms,
            insecure: section.insecure_skip_verify,
            check_name: true,
        });
        let builder =
            |provider: Arc<CryptoProvider>,
             versions: &[&'static rustls::SupportedProtocolVersion]| {
                ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(versions)
                    .map_err(|e| FieldError::new("", e.to_string()))
                    .map(|b| {
                        b.dangerous()
                            .with_custom_certificate_verifier(Arc::new(ChainVerifier {
                                trust: trust.clone(),
                                chain: Mutex::default(),
                            }))
                    })
            };
        let cert_field = from(&section.cert_file, "cert", "cert_file");
        let key_field = from(&section.key_file, "key", "key_file");
        let cert_pem = value_or_file(
            base,
            section.cert.as_ref().map(|s| s.as_bytes().to_vec()),
            section.cert_file.as_deref(),
            Choice {
                file_field: "cert_file",
                conflict: Some(Conflict {
                    field: "cert_file",
                    message: "at most one of cert and cert_file must be configured",
                }),
            },
        )?;
        let key_pem = value_or_file(
            base,
            section.key.as_ref().map(|s| s.expose().as_bytes().to_vec()),
            section.key_file.as_deref(),
            Choice {
                file_field: "key_file",
                conflict: Some(Conflict {
                    field: "key_file",
                    message: "at most one of key and key_file must be configured",
                }),
            },
        )?;
        let auth = match (cert_pem, key_pem) {
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        FieldError::new(cert_field, format!("not a PEM certificate: {e}"))
                    })?;
                if chain.is_empty() {
                    return Err(FieldError::new(cert_field, "no PEM certificate found"));
                }
                let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                    FieldError::new(key_field, format!("not a PEM private key: {e}"))
                })?;
                Some((chain, key))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(FieldError::new(
                    cert_field,
                    "client cert file specified without client key file",
                ));
            }
            (None, Some(_)) => {
                return Err(FieldError::new(
                    key_field,
                    "client key file specified without client cert file",
                ));
            }
        };
        let make = |provider: Arc<CryptoProvider>,
                    versions: &[&'static rustls::SupportedProtocolVersion]|
         -> Result<ClientConfig, FieldError> {
            let b = builder(provider, versions)?;
            let mut config = match &auth {
                Some((chain, key)) => b
                    .with_client_auth_cert(chain.clone(), key.clone_key())
                    .map_err(|e| FieldError::new(key_field, e.to_string()))?,
                None => b.with_no_client_auth(),
            };
            // Every probe is a full handshake, as blackbox's are: no session resumption.
            config.resumption = rustls::client::Resumption::disabled();
            Ok(config)
        };
        let config = make(provider.clone(), &versions)?;
        let quic = if max >= TlsVersion::TLS13 {
            let mut p = (*provider).clone();
            p.cipher_suites
                .retain(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
            Some(Arc::new(make(Arc::new(p), &[&rustls::version::TLS13])?))
        } else {
            None
        };
        if let Some(name) = &section.server_name {
            ServerName::try_from(name.clone()).map_err(|e| {
                FieldError::new("server_name", format!("server_name {name:?}: {e}"))
            })?;
        }
        Ok(Spec {
            base: Arc::new(config),
            quic,
            trust,
            server_name: section.server_name.clone(),
            unsupported,
        })
    }

    /// The rustls configuration itself, for a client that runs its own handshakes (a module's
    /// DNS-over-TLS or -HTTPS resolver): the same roots, client certificate, versions and
    /// verifier, no session resumption.
    pub fn client_config(&self) -> ClientConfig {
        (*self.base).clone()
    }

    /// This configuration verifying the certificate chain but not the server name (libpq's
    /// `sslmode=verify-ca`); the name is still sent as SNI.
    pub fn without_name_check(&self) -> Spec {
        let mut trust = (*self.trust).clone();
        trust.check_name = false;
        Spec {
            trust: Arc::new(trust),
            ..self.clone()
        }
    }

    /// Performs the TLS handshake over `stream`, verifying against `server_name`, offering `alpn`.
    pub async fn handshake<S>(
        &self,
        stream: S,
        server_name: &str,
        alpn: &[&[u8]],
    ) -> Result<(TlsStream<S>, Handshake), ProbeFailure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(reason) = &self.unsupported {
            return Err(ProbeFailure::new(FailureKind::Unsupported, reason.clone()));
        }
        let name = server_name.trim_start_matches('[').trim_end_matches(']');
        let name = match name.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(name.to_owned()).map_err(|e| {
                ProbeFailure::new(
                    FailureKind::Tls,
                    format!("invalid TLS server name {name:?}: {e}"),
                )
            })?,
        };
        let verifier = Arc::new(ChainVerifier {
            trust: self.trust.clone(),
            chain: Mutex::default(),
        });
        let mut config = (*self.base).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
            .dangerous()
            .set_certificate_verifier(verifier.clone());
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = connector.connect(name, stream).await.map_err(|e| {
            ProbeFailure::new(
                FailureKind::Tls,
                format!("TLS handshake: {}", tls_error_text(&e)),
            )
            .because(tls_reason(&e))
        })?;
        let (_, conn) = tls.get_ref();
        let peer: Vec<CertificateDer<'static>> = conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        let verified = verifier
            .chain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let handshake = Handshake {
            version: match conn.protocol_version() {
                Some(ProtocolVersion::TLSv1_2) => "TLS 1.2",
                Some(ProtocolVersion::TLSv1_3) => "TLS 1.3",
                _ => "unknown",
            },
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| cipher_name(s.suite()))
                .unwrap_or_else(|| "unknown".into()),
            alpn: conn.alpn_protocol().map(|p| p.to_vec()),
            peer,
            verified_chain: verified,
        };
        Ok((tls, handshake))
    }
}

/// What a QUIC connection needs of a module's TLS settings, and what it learns back.
#[derive(Debug)]
pub struct Quic {
    /// The client configuration (TLS 1.3, `alpn` offered, the chain recorded).
    pub config: Arc<ClientConfig>,
    verifier: Arc<ChainVerifier>,
}

impl Spec {
    /// The TLS configuration of a QUIC connection offering `alpn`; fails when the module's
    /// `tls_config` leaves out TLS 1.3 (QUIC has no other).
    pub fn quic(&self, alpn: &[&[u8]]) -> Result<Quic, ProbeFailure> {
        if let Some(reason) = &self.unsupported {
            return Err(ProbeFailure::new(FailureKind::Unsupported, reason.clone()));
        }
        let Some(base) = &self.quic else {
            return Err(ProbeFailure::new(
                FailureKind::Tls,
                "HTTP/3 needs TLS 1.3, which tls_config.max_version leaves out",
            ));
        };
        let verifier = Arc::new(ChainVerifier {
            trust: self.trust.clone(),
            chain: Mutex::default(),
        });
        let mut config = (**base).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
            .dangerous()
            .set_certificate_verifier(verifier.clone());
        Ok(Quic {
            config: Arc::new(config),
            verifier,
        })
    }
}

impl Quic {
    /// The handshake's facts once QUIC connected: the certificates the server sent, the chain
    /// verified, TLS 1.3 and the one suite offered.
    pub fn handshake(
        &self,
        peer: Vec<CertificateDer<'static>>,
        alpn: Option<Vec<u8>>,
    ) -> Handshake {
        Handshake {
            version: "TLS 1.3",
            cipher: cipher_name(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
            alpn,
            peer,
            verified_chain: self
                .verifier
                .chain
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        }
    }
}

/// The finer reason of a failed handshake: the certificate's problem when rustls names one.
pub(crate) fn tls_reason(e: &std::io::Error) -> Reason {
    use rustls::CertificateError as C;
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => Reason::CertificateExpired,
            C::UnknownIssuer | C::BadSignature | C::UnhandledCriticalExtension => {
                Reason::CertificateUntrusted
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => Reason::CertificateWrongHost,
            _ => Reason::TlsHandshake,
        },
        _ => Reason::TlsHandshake,
    }
}

fn tls_error_text(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(c)) => format!("invalid certificate: {c:?}"),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// Go's name for a cipher suite (`tls.CipherSuiteName`): rustls' names with `TLS13_` as `TLS_`.
fn cipher_name(suite: rustls::CipherSuite) -> String {
    let name = format!("{suite:?}");
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// What a completed handshake established.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// "TLS 1.2" or "TLS 1.3", as blackbox labels it.
    pub version: &'static str,
    /// The negotiated cipher suite, by Go's name.
    pub cipher: String,
    /// The ALPN protocol agreed on, if any.
    pub alpn: Option<Vec<u8>>,
    /// The certificates the server sent, leaf first.
    pub peer: Vec<CertificateDer<'static>>,
    /// The chain verification built (leaf, intermediates, root); `None` when not verified.
    pub verified_chain: Option<Vec<CertificateDer<'static>>>,
}

/// Records the TLS families of a completed handshake, as blackbox does when a probe's final
/// connection used TLS.
pub fn record(report: &mut Report, hs: &Handshake) {
    // Only the leaf's facts are exposed; of the other certificates only the expiry, and each
    // distinct certificate is parsed once although the verified chain repeats the leaf and the
    // intermediates the server sent (this halved the cost of recording a three-certificate
    // chain, `benches/checks.rs`).
    let leaf_der: Option<&[u8]> = hs.peer.first().map(|d| d.as_ref());
    let leaf = leaf_der.and_then(CertFacts::parse);
    let mut expiries: Vec<(&[u8], Option<i64>)> = Vec::with_capacity(4);
    for der in hs.peer.iter().chain(hs.verified_chain.iter().flatten()) {
        let der: &[u8] = der.as_ref();
        if expiries.iter().any(|(d, _)| *d == der) {
            continue;
        }
        let t = if Some(der) == leaf_der {
            leaf.as_ref().map(|l| l.not_after)
        } else {
            not_after(der)
        };
        expiries.push((der, t));
    }
    let expiry = |der: &CertificateDer<'static>| {
        expiries
            .iter()
            .find(|(d, _)| *d == der.as_ref())
            .and_then(|(_, t)| *t)
    };
    let earliest = hs.peer.iter().filter_map(expiry).min();
    report.set(
        &PROBE_SSL_EARLIEST_CERT_EXPIRY,
        earliest.map(|t| t as f64).unwrap_or(GO_ZERO_TIME),
    );
    let last_chain = hs
        .verified_chain
        .as_ref()
        .and_then(|chain| chain.iter().filter_map(expiry).min());
    report.set(
        &PROBE_SSL_LAST_CHAIN_EXPIRY_TIMESTAMP_SECONDS,
        last_chain.map(|t| t as f64).unwrap_or(GO_ZERO_TIME),
    );
    if let Some(leaf) = &leaf {
        report.set_labeled(
            &PROBE_SSL_LAST_CHAIN_INFO,
            &[
                ("fingerprint_sha256", &leaf.fingerprint_sha256),
                ("subject", &leaf.subject),
                ("issuer", &leaf.issuer),
                ("subjectalternative", &leaf.dns_names),
                ("serialnumber", &leaf.serial),
            ],
            1.0,
        );
    }
    report.set_labeled(&PROBE_TLS_VERSION_INFO, &[("version", hs.version)], 1.0);
    report.set_labeled(&PROBE_TLS_CIPHER_INFO, &[("cipher", &hs.cipher)], 1.0);
}

/// NotAfter of one DER certificate as a Unix timestamp; `None` when it is not a certificate.
fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The facts of one certificate that blackbox exposes, formatted as Go formats them.
#[derive(Debug, Clone, PartialEq)]
pub struct CertFacts {
    /// NotAfter as a Unix timestamp.
    pub not_after: i64,
    /// Hex SHA-256 of the DER.
    pub fingerprint_sha256: String,
    /// Subject as Go's `pkix.Name.String()`.
    pub subject: String,
    /// Issuer as Go's `pkix.Name.String()`.
    pub issuer: String,
    /// DNS SANs joined by commas.
    pub dns_names: String,
    /// Serial number as lower-case hex of its minimal big-endian bytes.
    pub serial: String,
}

impl CertFacts {
    /// Parses one DER certificate; `None` when it is not a certificate.
    pub fn parse(der: &[u8]) -> Option<CertFacts> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(n) => Some(*n),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(","),
            _ => String::new(),
        };
        let serial_bytes = cert.raw_serial();
        let first_nonzero = serial_bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(serial_bytes.len());
        let serial: String = serial_bytes[first_nonzero..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(CertFacts {
            not_after: cert.validity().not_after.timestamp(),
            fingerprint_sha256: Sha256::digest(der)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            subject: go_name(cert.subject()),
            issuer: go_name(cert.issuer()),
            dns_names,
            serial,
        })
    }
}

/// Formats an X.509 name as Go's `pkix.Name.String()` does: the well-known attributes grouped
/// by type in Go's fixed order and printed last-to-first (`CN=…,O=…,C=…`), other attributes at
/// the end as `OID=#hex`, with RFC 2253 escaping.
pub fn go_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    // Go's ToRDNSequence order; printing reverses it.
    const ORDER: [(&str, &str); 9] = [
        ("2.5.4.6", "C"),
        ("2.5.4.8", "ST"),
        ("2.5.4.7", "L"),
        ("2.5.4.9", "STREET"),
        ("2.5.4.17", "POSTALCODE"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("2.5.4.3", "CN"),
        ("2.5.4.5", "SERIALNUMBER"),
    ];
    let mut known: Vec<Vec<String>> = vec![Vec::new(); ORDER.len()];
    let mut other: Vec<String> = Vec::new();
    for atv in name.iter_attributes() {
        let oid = atv.attr_type().to_id_string();
        let value = atv.as_str().map(str::to_owned);
        match ORDER.iter().position(|(o, _)| *o == oid) {
            // Go keeps only the last CN and SERIALNUMBER, and every value of the others.
            Some(i) => {
                let v = value.unwrap_or_default();
                if ORDER[i].1 == "CN" || ORDER[i].1 == "SERIALNUMBER" {
                    known[i] = vec![v];
                } else {
                    known[i].push(v);
                }
            }
            None => {
                let v = value.unwrap_or_default();
                let printable = v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b));
                let tag: u8 = if printable { 0x13 } else { 0x0c };
                let mut der = vec![tag];
                let len = v.len();
                if len < 128 {
                    der.push(len as u8);
                } else {
                    let bytes = (len as u32).to_be_bytes();
                    let skip = bytes.iter().position(|b| *b != 0).unwrap_or(3);
                    der.push(0x80 | (4 - skip) as u8);
                    der.extend_from_slice(&bytes[skip..]);
                }
                der.extend_from_slice(v.as_bytes());
                let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
                other.push(format!("{oid}=#{hex}"));
            }
        }
    }
    let mut rdns: Vec<String> = other;
    for (i, values) in known.iter().enumerate() {
        if values.iter().all(|v| v.is_empty()) {
            continue;
        }
        let (_, short) = ORDER[i];
        rdns.push(
            values
                .iter()
                .map(|v| format!("{short}={}", escape_dn(v)))
                .collect::<Vec<_>>()
                .join("+"),
        );
    }
    rdns.reverse();
    rdns.join(",")
}

fn escape_dn(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (k, c) in chars.iter().enumerate() {
        let escape = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => k == 0 || k == chars.len() - 1,
            '#' => k == 0,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(*c);
    }
    out
}

/// Verifies server certificates with webpki and keeps the chain it built.
#[derive(Debug)]
struct ChainVerifier {
    trust: Arc<Trust>,
    chain: Mutex<Option<Vec<CertificateDer<'static>>>>,
}

fn pki_error(e: webpki::Error) -> rustls::Error {
    use rustls::CertificateError as C;
    let c = match e {
        webpki::Error::CertExpired { .. } => C::Expired,
        webpki::Error::CertNotValidYet { .. } => C::NotValidYet,
        webpki::Error::UnknownIssuer => C::UnknownIssuer,
        webpki::Error::CertNotValidForName(_) => C::NotValidForName,
        webpki::Error::CertRevoked => C::Revoked,
        webpki::Error::InvalidSignatureForPublicKey => C::BadSignature,
        other => C::Other(rustls::OtherError(Arc::new(PkiError(format!("{other:?}"))))),
    };
    rustls::Error::InvalidCertificate(c)
}

#[derive(Debug)]
struct PkiError(String);
impl std::fmt::Display for PkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PkiError {}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.trust.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        let path = cert
            .verify_for_usage(
                self.trust.algs.all,
                &self.trust.anchors,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map_err(pki_error)?;
        if self.trust.check_name {
            cert.verify_is_valid_for_subject_name(server_name)
                .map_err(pki_error)?;
        }
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(
            path.intermediate_certificates()
                .map(|c| c.der().into_owned()),
        );
        let anchor = path.anchor();
        if let Some(i) = self.trust.anchors.iter().position(|a| {
            a.subject == anchor.subject
                && a.subject_public_key_info == anchor.subject_public_key_info
        }) {
            chain.push(self.trust.roots[i].clone());
        }
        *self.chain.lock().unwrap_or_else(|e| e.into_inner()) = Some(chain);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.trust.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.trust.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_escaping_follows_go() {
        assert_eq!(escape_dn("a,b"), "a\\,b");
        assert_eq!(escape_dn(" lead"), "\\ lead");
        assert_eq!(escape_dn("#x#"), "\\#x#");
        assert_eq!(escape_dn("plain name"), "plain name");
    }

    #[test]
    fn cipher_names_are_gos() {
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
            "TLS_AES_128_GCM_SHA256"
        );
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        );
    }
}
