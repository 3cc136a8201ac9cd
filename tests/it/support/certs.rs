//! Test certificates generated on the fly with rcgen.
//!
//! Validity windows are whole unix seconds chosen by the caller (or the
//! documented defaults), so a test can assert the exact expiry values a
//! prober reports. Keys are fresh ECDSA P-256 keys per certificate (rcgen's
//! default with the `ring` backend).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

/// Seconds in a day, for building validity windows.
pub const DAY: i64 = 86_400;

/// Organization (O) put in every CA subject this module creates.
pub const ORGANIZATION: &str = "lookout";

/// Common name conventionally used for the root test CA: `Ca::new(TEST_CA_NAME)`.
pub const TEST_CA_NAME: &str = "lookout test CA";

/// Default CA validity: `now - 1 day .. now + 365 days`.
const CA_LIFETIME: i64 = 365 * DAY;

/// Default leaf validity: `now - 1 day .. now + 30 days`.
const LEAF_LIFETIME: i64 = 30 * DAY;

/// Current time as whole unix seconds; the reference point for default validity windows.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs() as i64
}

/// Sets `not_before`/`not_after` on rcgen params from unix seconds.
///
/// rcgen takes `time::OffsetDateTime` but does not re-export `time`; building
/// the values from `rcgen::date_time_ymd` plus a std `Duration` lets type
/// inference name the type for us, so no extra dependency is needed.
fn set_validity(params: &mut CertificateParams, not_before: i64, not_after: i64) {
    assert!(
        not_before <= not_after,
        "not_before ({not_before}) must not be after not_after ({not_after})"
    );
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |unix: i64| {
        if unix >= 0 {
            epoch + Duration::from_secs(unix as u64)
        } else {
            epoch - Duration::from_secs(unix.unsigned_abs())
        }
    };
    params.not_before = at(not_before);
    params.not_after = at(not_after);
}

/// Returns a unique, filesystem-friendly file stem derived from `name`, so
/// several certificates can be written into the same directory.
fn file_stem(name: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{clean}-{n}")
}

/// A private certificate authority (root or intermediate) that can issue leaves.
///
/// Roots are self-signed with `BasicConstraints: CA, unconstrained`, CN = the
/// given name, O = [`ORGANIZATION`]. Give the root's PEM to the prober as its
/// `ca_file`; hand a server the [`Leaf::chain_pem`] of a leaf issued by an
/// intermediate so the intermediates travel in the handshake.
pub struct Ca {
    name: String,
    cert_pem: String,
    der: Vec<u8>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    not_before: i64,
    not_after: i64,
    /// Certificates a server must send after a leaf issued by this CA: this
    /// CA itself when it is an intermediate, then its parent intermediates.
    /// Empty for a root.
    chain_above: Vec<Vec<u8>>,
}

impl Ca {
    /// A self-signed root CA valid `now - 1 day .. now + 365 days`.
    pub fn new(name: &str) -> Ca {
        let now = now_unix();
        Ca::with_validity(name, now - DAY, now + CA_LIFETIME)
    }

    /// A self-signed root CA with an explicit validity window (unix seconds).
    pub fn with_validity(name: &str, not_before: i64, not_after: i64) -> Ca {
        let params = ca_params(name, not_before, not_after);
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca::assemble(name, params, key, cert, not_before, not_after, Vec::new())
    }

    /// An intermediate CA signed by this CA, valid `now - 1 day .. now + 365 days`.
    pub fn intermediate(&self, name: &str) -> Ca {
        let now = now_unix();
        self.intermediate_with_validity(name, now - DAY, now + CA_LIFETIME)
    }

    /// An intermediate CA signed by this CA with an explicit validity window
    /// (unix seconds), e.g. to test that chain expiry picks the earliest cert.
    pub fn intermediate_with_validity(&self, name: &str, not_before: i64, not_after: i64) -> Ca {
        let mut params = ca_params(name, not_before, not_after);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate intermediate key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign intermediate");
        let mut chain_above = vec![cert.der().to_vec()];
        chain_above.extend(self.chain_above.iter().cloned());
        Ca::assemble(name, params, key, cert, not_before, not_after, chain_above)
    }

    fn assemble(
        name: &str,
        params: CertificateParams,
        key: KeyPair,
        cert: rcgen::Certificate,
        not_before: i64,
        not_after: i64,
        chain_above: Vec<Vec<u8>>,
    ) -> Ca {
        Ca {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            not_before,
            not_after,
            chain_above,
        }
    }

    /// The common name this CA was created with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This CA's own certificate in PEM (what goes into a `ca_file`).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// This CA's own certificate in DER, e.g. for a `rustls::RootCertStore`.
    pub fn der(&self) -> Vec<u8> {
        self.der.clone()
    }

    /// This CA's private key (PKCS#8 PEM); rarely needed.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// Start of validity, unix seconds.
    pub fn not_before_unix(&self) -> i64 {
        self.not_before
    }

    /// End of validity, unix seconds (exactly what an expiry metric should report).
    pub fn not_after_unix(&self) -> i64 {
        self.not_after
    }

    /// True for a CA made by [`Ca::intermediate`].
    pub fn is_intermediate(&self) -> bool {
        !self.chain_above.is_empty()
    }

    /// Writes this CA's certificate as PEM into `dir` (unique file name) and
    /// returns the path, for a tls_config `ca_file`.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}-ca.pem", file_stem(&self.name)));
        fs::write(&path, &self.cert_pem).expect("write CA PEM");
        path
    }

    /// Starts a server-auth leaf issued by this CA. Entries that parse as IP
    /// addresses become IP SANs, the rest DNS SANs; CN = first entry.
    pub fn leaf(&self, names: &[&str]) -> LeafBuilder<'_> {
        LeafBuilder::new(Some(self), names)
    }

    /// Starts a client-auth leaf (EKU clientAuth) issued by this CA, for
    /// mutual TLS: CN = `name`, also a DNS SAN when it is a valid DNS name.
    pub fn client_leaf(&self, name: &str) -> LeafBuilder<'_> {
        LeafBuilder::new(Some(self), &[name]).client_auth()
    }
}

/// rcgen parameters shared by roots and intermediates.
fn ca_params(name: &str, not_before: i64, not_after: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORGANIZATION);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, not_before, not_after);
    params
}

/// Starts a self-signed (non-CA) server leaf; see [`self_signed`].
pub fn self_signed_builder(names: &[&str]) -> LeafBuilder<'static> {
    LeafBuilder::new(None, names)
}

/// A self-signed server leaf (not a CA) valid `now - 1 day .. now + 30 days`,
/// for "unknown authority" failures and `insecure_skip_verify` tests.
pub fn self_signed(names: &[&str]) -> Leaf {
    self_signed_builder(names).build()
}

/// Builder for an end-entity certificate; created by [`Ca::leaf`],
/// [`Ca::client_leaf`] or [`self_signed_builder`].
pub struct LeafBuilder<'a> {
    issuer: Option<&'a Ca>,
    names: Vec<String>,
    common_name: Option<String>,
    organization: Option<String>,
    not_before: i64,
    not_after: i64,
    client: bool,
    serial: Option<u64>,
}

impl<'a> LeafBuilder<'a> {
    fn new(issuer: Option<&'a Ca>, names: &[&str]) -> LeafBuilder<'a> {
        assert!(!names.is_empty(), "a leaf needs at least one name");
        let now = now_unix();
        LeafBuilder {
            issuer,
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            common_name: None,
            organization: None,
            not_before: now - DAY,
            not_after: now + LEAF_LIFETIME,
            client: false,
            serial: None,
        }
    }

    /// Start of validity, unix seconds (default `now - 1 day`).
    pub fn not_before(mut self, unix: i64) -> Self {
        self.not_before = unix;
        self
    }

    /// End of validity, unix seconds (default `now + 30 days`). Put it in the
    /// past for an expired certificate.
    pub fn not_after(mut self, unix: i64) -> Self {
        self.not_after = unix;
        self
    }

    /// Overrides the subject CN (default: the first name).
    pub fn common_name(mut self, cn: &str) -> Self {
        self.common_name = Some(cn.to_owned());
        self
    }

    /// Adds an O= attribute to the subject (none by default).
    pub fn organization(mut self, o: &str) -> Self {
        self.organization = Some(o.to_owned());
        self
    }

    /// Fixes the serial number (default: derived by rcgen from the public key).
    pub fn serial(mut self, serial: u64) -> Self {
        self.serial = Some(serial);
        self
    }

    /// Makes this a client certificate (EKU clientAuth instead of serverAuth).
    pub fn client_auth(mut self) -> Self {
        self.client = true;
        self
    }

    /// Generates the key and certificate.
    pub fn build(self) -> Leaf {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cn = self
            .common_name
            .clone()
            .unwrap_or_else(|| self.names[0].clone());
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(o) = &self.organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, o.as_str());
        }
        params.subject_alt_names = self
            .names
            .iter()
            .filter_map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(SanType::IpAddress(ip)),
                // A client CN like "lookout client" is not a DNS name; skip it as a SAN.
                Err(_) if is_dns_name(name) => name.clone().try_into().ok().map(SanType::DnsName),
                Err(_) => None,
            })
            .collect();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if self.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if let Some(serial) = self.serial {
            params.serial_number = Some(SerialNumber::from(serial));
        }
        set_validity(&mut params, self.not_before, self.not_after);

        let key = KeyPair::generate().expect("generate leaf key");
        let (cert, chain_above) = match self.issuer {
            Some(ca) => {
                params.use_authority_key_identifier_extension = true;
                let cert = params.signed_by(&key, &ca.issuer).expect("sign leaf");
                (cert, ca.chain_above.clone())
            }
            None => (
                params.self_signed(&key).expect("self-sign leaf"),
                Vec::new(),
            ),
        };

        let der = cert.der().to_vec();
        let cert_pem = cert.pem();
        let mut chain_ders = vec![der.clone()];
        chain_ders.extend(chain_above);
        let chain_pem = chain_ders.iter().map(|d| der_to_pem(d)).collect::<String>();
        Leaf {
            names: self.names,
            cert_pem,
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            chain_pem,
            der,
            chain_ders,
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

/// PEM-encodes one DER certificate (64-column base64, trailing newline).
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// True when `name` looks like a DNS name (or wildcard) worth a DNS SAN.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '_'))
}

/// An issued end-entity certificate with its key and the chain a server sends.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The names the leaf was built with (SANs; first is the CN).
    pub names: Vec<String>,
    /// The leaf certificate alone, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    /// The private key, PKCS#8 DER, for building rustls configs.
    pub key_der: Vec<u8>,
    /// Leaf followed by every intermediate up to (not including) the root, PEM;
    /// what a server presents and what a tls_config `cert_file` should hold.
    pub chain_pem: String,
    /// The leaf certificate alone, DER (e.g. to compute a SHA-256 fingerprint).
    pub der: Vec<u8>,
    /// Same order as `chain_pem`, DER.
    pub chain_ders: Vec<Vec<u8>>,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
}

impl Leaf {
    /// What a rustls server presents: the chain (leaf first) and the private key.
    pub fn rustls_identity(
        &self,
    ) -> (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let chain = self
            .chain_ders
            .iter()
            .map(|d| CertificateDer::from(d.clone()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        (chain, key)
    }

    /// Writes `chain_pem` and `key_pem` into `dir` (unique file names) and
    /// returns `(cert_path, key_path)` for a tls_config `cert_file`/`key_file`.
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let stem = file_stem(&self.names[0]);
        let cert = dir.join(format!("{stem}-cert.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        fs::write(&cert, &self.chain_pem).expect("write cert PEM");
        fs::write(&key, &self.key_pem).expect("write key PEM");
        (cert, key)
    }
}
