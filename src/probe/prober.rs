//! The contract between `probe::run` and the protocol modules.

use std::fmt;

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

/// Why one probe failed, as data. It never travels past `probe::run` as a Rust error.
#[derive(Debug, Clone)]
pub struct ProbeFailure {
    /// The class of failure.
    pub kind: FailureKind,
    /// A human-readable reason naming the offending value.
    pub message: String,
}

impl ProbeFailure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> ProbeFailure {
        ProbeFailure {
            kind,
            message: message.into(),
        }
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
