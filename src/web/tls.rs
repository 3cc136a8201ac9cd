//! `tls_server_config` → a rustls `ServerConfig`: the certificate and key, the versions, cipher
//! suites and curves rustls can honour, and a client certificate verifier for each of Go's
//! client auth types (plus `client_allowed_sans`).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoClientAuth, WebPkiClientVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use super::config::{ClientAuth, GO_CIPHER_SUITES, GO_CURVES, TlsSettings, Version};
use crate::values::FieldError;

/// The PEMs a `tls_server_config` names, as read for one handshake; equal material means the
/// previous `ServerConfig` can serve again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// Reads the certificate, key and client CA (files are read anew on every call).
pub fn read(t: &TlsSettings) -> Result<Material, FieldError> {
    Ok(Material {
        cert: t.cert.read()?,
        key: t.key.read()?,
        client_ca: t.client_ca.as_ref().map(|p| p.read()).transpose()?,
    })
}

/// A ready server configuration, and what of the settings rustls cannot honour (to log).
#[derive(Debug)]
pub struct Built {
    /// The configuration.
    pub config: Arc<ServerConfig>,
    /// One sentence per setting left out or narrowed.
    pub warnings: Vec<String>,
}

/// Builds the server configuration for `t` from `m`; ALPN offers `h2` when `http2`.
pub fn build(t: &TlsSettings, m: &Material, http2: bool) -> Result<Built, FieldError> {
    let mut warnings = Vec::new();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&m.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            FieldError::new(
                t.cert.field(),
                format!("{}: not a PEM certificate: {e}", t.cert.describe()),
            )
        })?;
    if certs.is_empty() {
        return Err(FieldError::new(
            t.cert.field(),
            format!("{} holds no PEM certificate", t.cert.describe()),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&m.key).map_err(|e| {
        FieldError::new(
            t.key.field(),
            format!("{}: no usable PEM private key: {e}", t.key.describe()),
        )
    })?;

    let mut provider: CryptoProvider = (*crate::probe::tls::provider()).clone();
    let tls12_allowed = t.min_version <= Version::Tls12;
    if t.min_version < Version::Tls12 {
        warnings.push(format!(
            "min_version {}: TLS 1.0 and 1.1 are not available (rustls), so clients need TLS \
             1.2 or newer",
            t.min_version.name()
        ));
    }
    // Go applies `cipher_suites` to TLS 1.2 and below only; TLS 1.3 always has all its suites.
    if let Some(names) = &t.cipher_suites {
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| GO_CIPHER_SUITES.iter().any(|(g, ok)| g == n && !ok))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            warnings.push(format!(
                "cipher_suites: rustls does not implement {}; left out",
                missing.join(", ")
            ));
        }
        provider.cipher_suites.retain(|s| {
            s.version() == &rustls::version::TLS13
                || names.iter().any(|n| *n == go_cipher_name(s.suite()))
        });
    }
    let tls12_suites = provider
        .cipher_suites
        .iter()
        .any(|s| s.version() == &rustls::version::TLS12);
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if tls12_allowed && tls12_suites {
        versions.push(&rustls::version::TLS12);
    }
    if t.max_version >= Version::Tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if tls12_allowed && !tls12_suites {
        if versions.is_empty() {
            return Err(FieldError::new(
                "tls_server_config.cipher_suites",
                "none of these TLS 1.2 cipher suites is implemented by rustls and max_version \
                 excludes TLS 1.3, so no client could connect",
            ));
        }
        warnings.push(
            "cipher_suites lists no TLS 1.2 suite rustls implements: only TLS 1.3 is served"
                .to_owned(),
        );
    }
    if let Some(names) = &t.curves {
        if names
            .iter()
            .any(|n| GO_CURVES.iter().any(|(g, ok)| g == n && !ok))
        {
            warnings.push("curve_preferences: CurveP521 is not available (ring); left out".into());
        }
        let all = std::mem::take(&mut provider.kx_groups);
        for n in names {
            let want = match n.as_str() {
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                "X25519" => rustls::NamedGroup::X25519,
                _ => continue,
            };
            if let Some(g) = all.iter().find(|g| g.name() == want)
                && !provider.kx_groups.iter().any(|k| k.name() == want)
            {
                provider.kx_groups.push(*g);
            }
        }
        if provider.kx_groups.is_empty() {
            return Err(FieldError::new(
                "tls_server_config.curve_preferences",
                "no curve lookout implements is left (CurveP256, CurveP384 and X25519 are)",
            ));
        }
    }
    let provider = Arc::new(provider);
    let verifier = client_verifier(t, m, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| FieldError::new("tls_server_config", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            let msg = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the private key in {} does not match the certificate in {}",
                    t.key.describe(),
                    t.cert.describe()
                ),
                e => format!("{}: {e}", t.key.describe()),
            };
            FieldError::new(t.key.field(), msg)
        })?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    // Go's server picks the suite by its own preference order, which `provider()` follows.
    config.ignore_client_order = true;
    Ok(Built {
        config: Arc::new(config),
        warnings,
    })
}

/// Go's name of a rustls suite (`TLS13_AES_128_GCM_SHA256` is Go's `TLS_AES_128_GCM_SHA256`).
fn go_cipher_name(suite: rustls::CipherSuite) -> String {
    let name = format!("{suite:?}");
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// The system's roots, for verifying client certificates without a `client_ca_file` (Go then
/// verifies against the system pool too). Loaded once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            Arc::new(store)
        })
        .clone()
}

fn client_verifier(
    t: &TlsSettings,
    m: &Material,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, FieldError> {
    let roots = match (&t.client_ca, &m.client_ca) {
        (Some(pem), Some(bytes)) => {
            let mut store = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(bytes) {
                let c = c.map_err(|e| {
                    FieldError::new(
                        pem.field(),
                        format!("{}: not a PEM certificate: {e}", pem.describe()),
                    )
                })?;
                store.add(c).map_err(|e| {
                    FieldError::new(
                        pem.field(),
                        format!("{}: unusable CA certificate: {e}", pem.describe()),
                    )
                })?;
            }
            if store.is_empty() {
                return Err(FieldError::new(
                    pem.field(),
                    format!("{} holds no PEM certificate", pem.describe()),
                ));
            }
            Some(Arc::new(store))
        }
        _ => None,
    };
    let inner: Arc<dyn ClientCertVerifier> = match t.client_auth {
        ClientAuth::No => Arc::new(NoClientAuth),
        ClientAuth::Request | ClientAuth::RequireAny => Arc::new(AnyCertificate {
            mandatory: t.client_auth.mandatory(),
            hints: roots.as_ref().map(|r| r.subjects()).unwrap_or_default(),
            algs: provider.signature_verification_algorithms,
        }),
        ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify => {
            let field = t
                .client_ca
                .as_ref()
                .map_or("tls_server_config.client_auth_type".to_owned(), |p| {
                    p.field()
                });
            let roots = match roots {
                Some(r) => r,
                None => {
                    let r = system_roots();
                    if r.is_empty() {
                        return Err(FieldError::new(
                            field,
                            "client certificates are verified, no client_ca_file is set and the \
                             system has no root certificates",
                        ));
                    }
                    r
                }
            };
            let b = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let b = if t.client_auth.mandatory() {
                b
            } else {
                b.allow_unauthenticated()
            };
            b.build()
                .map_err(|e| FieldError::new(field, e.to_string()))?
        }
    };
    Ok(match &t.allowed_sans {
        Some(sans) if t.client_auth != ClientAuth::No => Arc::new(AllowedSans {
            inner,
            sans: sans.clone(),
        }),
        _ => inner,
    })
}

/// Go's `RequestClientCert` and `RequireAnyClientCert`: any well-formed certificate is taken
/// without checking who issued it; the handshake signature still proves the client holds its
/// key.
#[derive(Debug)]
struct AnyCertificate {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyCertificate {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        x509_parser::parse_x509_certificate(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// `client_allowed_sans`: after the inner verifier accepted the certificate, one of its DNS,
/// e-mail, IP or URI SANs must equal one of the listed strings exactly.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
}

/// A certificate's SANs as Go's `x509.Certificate` lists them: DNS names, e-mail addresses, IP
/// addresses (printed as Go prints them) and URIs.
pub fn san_strings(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                Some((*s).to_owned())
            }
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                16 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(b);
                    let v6 = std::net::Ipv6Addr::from(a);
                    // Go prints an IPv4-mapped address in its IPv4 form.
                    Some(match v6.to_ipv4_mapped() {
                        Some(v4) => v4.to_string(),
                        None => v6.to_string(),
                    })
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if san_strings(end_entity)
            .iter()
            .any(|s| self.sans.contains(s))
        {
            Ok(ok)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
