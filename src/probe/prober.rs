//! The contract between `probe::run` and the protocol modules.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::probe::net::DialPolicy;
use crate::probe::report::Report;
use crate::probe::resolve::Resolver;

/// Why a probe failed: a small closed set, usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The target string could not be parsed.
    InvalidTarget,
    /// The target name did not resolve to a usable address.
    Resolve,
    /// The TCP connection could not be made.
    Connect,
    /// The probe's `DialPolicy` refused the address.
    Blocked,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// The probe did not finish before its deadline.
    Timeout,
    /// The peer spoke, but not the protocol expected (or broke a size limit).
    Protocol,
    /// The peer answered, but a configured expectation (status, regex, version…) failed.
    Assertion,
    /// The module uses something lookout does not implement yet.
    Unsupported,
    /// A bug in lookout (the probe panicked).
    Internal,
}

impl FailureKind {
    /// The label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::InvalidTarget => "invalid_target",
            FailureKind::Resolve => "resolve",
            FailureKind::Connect => "connect",
            FailureKind::Blocked => "blocked",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Protocol => "protocol",
            FailureKind::Assertion => "assertion",
            FailureKind::Unsupported => "unsupported",
            FailureKind::Internal => "internal",
        }
    }
}

/// The finer reason of a failure, one closed set for `probe_failure_info{reason}`: what an
/// operator acts on (a refused port, an expired certificate, a 404), never free text. A failure
/// whose site names no finer reason has its kind's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The target string could not be parsed.
    InvalidTarget,
    /// The name did not resolve.
    Resolve,
    /// The address refused the connection.
    ConnectRefused,
    /// The connection attempt timed out (the kernel's timeout, not the probe's).
    ConnectTimeout,
    /// The connection failed otherwise (unreachable, reset, …).
    Connect,
    /// `probe_access` refused the address.
    Blocked,
    /// The TLS handshake failed (other than a certificate below).
    TlsHandshake,
    /// The certificate has expired or is not valid yet.
    CertificateExpired,
    /// The certificate's issuer is not trusted.
    CertificateUntrusted,
    /// The certificate does not name the host.
    CertificateWrongHost,
    /// The probe ran out of time.
    Timeout,
    /// The peer broke the protocol.
    Protocol,
    /// An answer was over the configured size limit.
    BodyTooLarge,
    /// The HTTP status code was not a valid one.
    StatusCode,
    /// A `fail_if_*_matches` / `fail_if_*_not_matches` regular expression decided.
    Regex,
    /// A CEL expression decided.
    Cel,
    /// The HTTP version was not a valid one.
    HttpVersion,
    /// `fail_if_ssl` / `fail_if_not_ssl`.
    Ssl,
    /// The DNS answer's rcode was not a valid one.
    DnsRcode,
    /// The DNS answer failed a `validate_*_rrs` check.
    DnsValidation,
    /// More ICMP echoes went unanswered than `max_loss_ratio` allows.
    PacketLoss,
    /// Another configured expectation failed.
    Assertion,
    /// The module uses something lookout does not implement.
    Unsupported,
    /// A bug in lookout.
    Internal,
}

impl Reason {
    /// Every reason, for documentation and tests.
    pub const ALL: [Reason; 24] = [
        Reason::InvalidTarget,
        Reason::Resolve,
        Reason::ConnectRefused,
        Reason::ConnectTimeout,
        Reason::Connect,
        Reason::Blocked,
        Reason::TlsHandshake,
        Reason::CertificateExpired,
        Reason::CertificateUntrusted,
        Reason::CertificateWrongHost,
        Reason::Timeout,
        Reason::Protocol,
        Reason::BodyTooLarge,
        Reason::StatusCode,
        Reason::Regex,
        Reason::Cel,
        Reason::HttpVersion,
        Reason::Ssl,
        Reason::DnsRcode,
        Reason::DnsValidation,
        Reason::PacketLoss,
        Reason::Assertion,
        Reason::Unsupported,
        Reason::Internal,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidTarget => "invalid_target",
            Reason::Resolve => "resolve",
            Reason::ConnectRefused => "connect_refused",
            Reason::ConnectTimeout => "connect_timeout",
            Reason::Connect => "connect",
            Reason::Blocked => "blocked",
            Reason::TlsHandshake => "tls_handshake",
            Reason::CertificateExpired => "certificate_expired",
            Reason::CertificateUntrusted => "certificate_untrusted",
            Reason::CertificateWrongHost => "certificate_wrong_host",
            Reason::Timeout => "timeout",
            Reason::Protocol => "protocol",
            Reason::BodyTooLarge => "body_too_large",
            Reason::StatusCode => "status_code",
            Reason::Regex => "regex",
            Reason::Cel => "cel",
            Reason::HttpVersion => "http_version",
            Reason::Ssl => "ssl",
            Reason::DnsRcode => "dns_rcode",
            Reason::DnsValidation => "dns_validation",
            Reason::PacketLoss => "packet_loss",
            Reason::Assertion => "assertion",
            Reason::Unsupported => "unsupported",
            Reason::Internal => "internal",
        }
    }

    /// The reason of a failure of `kind` whose site names none finer.
    pub fn of_kind(kind: FailureKind) -> Reason {
        match kind {
            FailureKind::InvalidTarget => Reason::InvalidTarget,
            FailureKind::Resolve => Reason::Resolve,
            FailureKind::Connect => Reason::Connect,
            FailureKind::Blocked => Reason::Blocked,
            FailureKind::Tls => Reason::TlsHandshake,
            FailureKind::Timeout => Reason::Timeout,
            FailureKind::Protocol => Reason::Protocol,
            FailureKind::Assertion => Reason::Assertion,
            FailureKind::Unsupported => Reason::Unsupported,
            FailureKind::Internal => Reason::Internal,
        }
    }
}

/// Why one probe failed, as data. It never travels past `probe::run` as a Rust error.
#[derive(Debug, Clone)]
pub struct ProbeFailure {
    /// The class of failure.
    pub kind: FailureKind,
    /// A human-readable reason naming the offending value.
    pub message: String,
    /// The finer reason, where the failing site knows one.
    finer: Option<Reason>,
}

impl ProbeFailure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> ProbeFailure {
        ProbeFailure {
            kind,
            message: message.into(),
            finer: None,
        }
    }

    /// The same failure with a finer reason than its kind's.
    pub fn because(mut self, reason: Reason) -> ProbeFailure {
        self.finer = Some(reason);
        self
    }

    /// The same failure with `context` before its message (`address 10.0.0.2: …`).
    pub fn within(mut self, context: &str) -> ProbeFailure {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Its reason: the finer one, else its kind's.
    pub fn reason(&self) -> Reason {
        self.finer.unwrap_or(Reason::of_kind(self.kind))
    }
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// What to probe: the target exactly as given, plus request-level overrides.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    /// The target string (`/probe?target=` or a scheduled target's `target`).
    pub target: String,
    /// `/probe?hostname=`: the Host header (and TLS server name) for HTTP probes.
    pub hostname: Option<String>,
}

/// What a prober gets besides its spec and request.
#[derive(Debug)]
pub struct ProbeContext<'a> {
    /// The instant by which the probe must end; `probe::run` enforces it, probers pass it to
    /// libraries that need an explicit limit.
    pub deadline: Instant,
    /// The only way from a name to an address.
    pub resolver: &'a Resolver,
    /// Asked before every connection or datagram, with the address dialled (`net.rs`).
    pub dial_policy: &'a dyn DialPolicy,
    /// Where measurements go as they are made.
    pub report: &'a mut Report,
    /// How the target's own name becomes an address: blackbox's one, or `every_address`'s.
    pub addressing: Addressing<'a>,
}

/// How `net::resolve` treats the target's own name (redirect hops, proxies and token
/// endpoints always resolve as usual).
#[derive(Debug)]
pub enum Addressing<'a> {
    /// One address, chosen as blackbox chooses it.
    One,
    /// `every_address`'s first pass: resolve every usable address into the slot and end the
    /// probe there, before anything is dialled.
    Collect(&'a mut Option<(Vec<IpAddr>, Duration)>),
    /// `every_address`'s passes per address: the target's name stands for this address, found
    /// by a lookup that took this long.
    Pinned(IpAddr, Duration),
}

/// One protocol's probe behaviour; implemented by each protocol's validated `Spec`.
pub(crate) trait Prober {
    /// Runs one probe against `req`, recording measurements into `cx.report`; returns why it
    /// failed, if it did.
    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_and_all_documented() {
        let readme = include_str!("../../README.md");
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "{} twice", r.as_str());
            assert!(
                readme.contains(&format!("`{}`", r.as_str())),
                "README.md does not list reason {}",
                r.as_str()
            );
        }
        // Every kind's own reason is one of them.
        for k in [
            FailureKind::InvalidTarget,
            FailureKind::Resolve,
            FailureKind::Connect,
            FailureKind::Blocked,
            FailureKind::Tls,
            FailureKind::Timeout,
            FailureKind::Protocol,
            FailureKind::Assertion,
            FailureKind::Unsupported,
            FailureKind::Internal,
        ] {
            assert!(Reason::ALL.contains(&Reason::of_kind(k)));
            assert_eq!(ProbeFailure::new(k, "x").reason(), Reason::of_kind(k));
        }
        let f = ProbeFailure::new(FailureKind::Connect, "x").because(Reason::ConnectRefused);
        assert_eq!(f.reason().as_str(), "connect_refused");
    }
}
