//! `prober: dns`: one query to the target over UDP, TCP or DNS over TLS, checked the way
//! blackbox_exporter 0.23 checks it (rcode, then the answer, authority and additional records
//! against regular expressions).
//!
//! `wire` builds the query and decodes the response; `render` prints each record as Go's
//! miekg/dns does, because that text is what users' regular expressions were written against.

mod render;
mod wire;

/// Decodes a DNS reply as the prober does (the DNS reply fuzz target).
#[doc(hidden)]
pub fn decode_reply_for_fuzzing(msg: &[u8]) -> bool {
    wire::decode(msg).is_ok()
}

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;

use hickory_resolver::proto::rr::{DNSClass, RecordType};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::debug;

use crate::probe::net::{self, DialPolicy};
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober, Reason};
use crate::probe::report::Family;
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::probe::tls;
use crate::values::{FieldError, Regex};

use self::render::Record;
use self::wire::Response;

/// `probe_dns_duration_seconds{phase}`.
pub static PROBE_DNS_DURATION_SECONDS: Family = Family::gauge(
    "probe_dns_duration_seconds",
    "Duration of DNS request by phase",
);
/// `probe_dns_answer_rrs`.
pub static PROBE_DNS_ANSWER_RRS: Family = Family::gauge(
    "probe_dns_answer_rrs",
    "Returns number of entries in the answer resource record list",
);
/// `probe_dns_authority_rrs`.
pub static PROBE_DNS_AUTHORITY_RRS: Family = Family::gauge(
    "probe_dns_authority_rrs",
    "Returns number of entries in the authority resource record list",
);
/// `probe_dns_additional_rrs`.
pub static PROBE_DNS_ADDITIONAL_RRS: Family = Family::gauge(
    "probe_dns_additional_rrs",
    "Returns number of entries in the additional resource record list",
);
/// `probe_dns_query_succeeded`.
pub static PROBE_DNS_QUERY_SUCCEEDED: Family = Family::gauge(
    "probe_dns_query_succeeded",
    "Displays whether or not the query was executed successfully",
);
/// `probe_dns_serial`: present only when the query type is SOA and a response arrived.
pub static PROBE_DNS_SERIAL: Family =
    Family::gauge("probe_dns_serial", "Returns the serial number of the zone");

/// The UDP receive buffer. blackbox's client (miekg/dns) sends no EDNS and reads datagrams into
/// 512 bytes, the classic limit; a longer datagram is cut there and then fails to decode, as it
/// does in blackbox.
const UDP_BUFFER: usize = 512;

/// One `validate_*_rrs` block.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrValidator {
    /// Fail if any record matches any of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_matches_regexp: Vec<Regex>,
    /// Fail if all records match any of these (blackbox: fails when *not* all match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_all_match_regexp: Vec<Regex>,
    /// Fail if any record does not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_not_matches_regexp: Vec<Regex>,
    /// Fail if no record matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_none_matches_regexp: Vec<Regex>,
}

/// The `dns:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// ip4 or ip6 (default ip6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
    /// Whether the other protocol may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,
    /// DNS over TLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dns_over_tls: bool,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<tls::Section>,
    /// Source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip_address: Option<String>,
    /// udp (default) or tcp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_protocol: Option<String>,
    /// Query class (IN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_class: Option<String>,
    /// The name to query (required).
    #[serde(default)]
    pub query_name: String,
    /// Query type (ANY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_type: Option<String>,
    /// Set RD (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursion_desired: Option<bool>,
    /// Accepted response codes (NOERROR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_rcodes: Vec<String>,
    /// Answer section checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_answer_rrs: Option<RrValidator>,
    /// Authority section checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_authority_rrs: Option<RrValidator>,
    /// Additional section checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_additional_rrs: Option<RrValidator>,
}

/// The validated DNS module.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Address preference.
    pub ip: IpPreference,
    /// Query name.
    pub query_name: String,
    /// Query type.
    pub query_type: RecordType,
    /// Query class.
    pub query_class: DNSClass,
    /// TCP instead of UDP.
    pub tcp: bool,
    /// DNS over TLS.
    pub dot: bool,
    /// Recursion desired.
    pub recursion_desired: bool,
    /// Accepted rcodes (upper-case names).
    pub valid_rcodes: Vec<String>,
    /// Source address.
    pub source_ip: Option<std::net::IpAddr>,
    /// TLS settings.
    pub tls_config: tls::Spec,
    /// The three validators.
    pub validators: [RrValidator; 3],
}

const RCODES: &[&str] = &[
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "BADSIG",
    "BADVERS",
    "BADKEY",
    "BADTIME",
    "BADMODE",
    "BADNAME",
    "BADALG",
    "BADTRUNC",
    "BADCOOKIE",
];

impl Spec {
    /// Validates `section` (blackbox's rules: query_name required, known type and class).
    pub fn build(section: &Section, base: &Path) -> Result<Spec, FieldError> {
        if section.query_name.is_empty() {
            return Err(FieldError::new(
                "query_name",
                "query name must be set for DNS module",
            ));
        }
        let query_type = match section.query_type.as_deref() {
            None | Some("") => RecordType::ANY,
            Some(t) => RecordType::from_str(t).map_err(|_| {
                FieldError::new("query_type", format!("query type '{t}' is not valid"))
            })?,
        };
        let query_class = match section.query_class.as_deref() {
            None | Some("") => DNSClass::IN,
            Some(c) => DNSClass::from_str(c).map_err(|_| {
                FieldError::new("query_class", format!("query class '{c}' is not valid"))
            })?,
        };
        let tcp = match section.transport_protocol.as_deref() {
            None | Some("") | Some("udp") => false,
            Some("tcp") => true,
            Some(o) => {
                return Err(FieldError::new(
                    "transport_protocol",
                    format!("invalid transport protocol {o:?} (use udp or tcp)"),
                ));
            }
        };
        for (i, r) in section.valid_rcodes.iter().enumerate() {
            if !RCODES.contains(&r.to_ascii_uppercase().as_str()) {
                return Err(FieldError::new(
                    format!("valid_rcodes[{i}]"),
                    format!("unknown response code {r:?}"),
                ));
            }
        }
        Ok(Spec {
            ip: IpPreference::from_config(
                section.preferred_ip_protocol,
                section.ip_protocol_fallback,
            ),
            query_name: section.query_name.clone(),
            query_type,
            query_class,
            tcp: tcp || section.dns_over_tls,
            dot: section.dns_over_tls,
            recursion_desired: section.recursion_desired.unwrap_or(true),
            valid_rcodes: if section.valid_rcodes.is_empty() {
                vec!["NOERROR".into()]
            } else {
                section
                    .valid_rcodes
                    .iter()
                    .map(|r| r.to_ascii_uppercase())
                    .collect()
            },
            source_ip: net::parse_source_ip(&section.source_ip_address)?,
            tls_config: tls::Spec::build(&section.tls_config.clone().unwrap_or_default(), base)
                .map_err(|e| e.within("tls_config"))?,
            validators: [
                section.validate_answer_rrs.clone().unwrap_or_default(),
                section.validate_authority_rrs.clone().unwrap_or_default(),
                section.validate_additional_rrs.clone().unwrap_or_default(),
            ],
        })
    }
}

/// The number of an rcode name (miekg's `StringToRcode`, plus BADVERS, which shares 16 with
/// BADSIG).
fn rcode_value(name: &str) -> Option<u16> {
    let value = match name {
        "NOERROR" => 0,
        "FORMERR" => 1,
        "SERVFAIL" => 2,
        "NXDOMAIN" => 3,
        "NOTIMP" => 4,
        "REFUSED" => 5,
        "YXDOMAIN" => 6,
        "YXRRSET" => 7,
        "NXRRSET" => 8,
        "NOTAUTH" => 9,
        "NOTZONE" => 10,
        "BADSIG" | "BADVERS" => 16,
        "BADKEY" => 17,
        "BADTIME" => 18,
        "BADMODE" => 19,
        "BADNAME" => 20,
        "BADALG" => 21,
        "BADTRUNC" => 22,
        "BADCOOKIE" => 23,
        _ => return None,
    };
    Some(value)
}

/// The name of an rcode for messages, or its number when it has none.
fn rcode_name(rcode: u16) -> String {
    RCODES
        .iter()
        .find(|name| rcode_value(name) == Some(rcode))
        .map(|name| (*name).to_owned())
        .unwrap_or_else(|| rcode.to_string())
}

/// Splits a target as blackbox does: Go's `net.SplitHostPort`, and when that fails the whole
/// target is the host and the port is the default.
fn split_target(target: &str, default_port: u16) -> (String, String) {
    match split_host_port(target) {
        Some((host, port)) => (host.to_owned(), port.to_owned()),
        None => (target.to_owned(), default_port.to_string()),
    }
}

/// Go's `net.SplitHostPort`; `None` where Go returns an error.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    let colon = s.rfind(':')?;
    let (host, not_open, not_close) = if s.starts_with('[') {
        let end = s.find(']')?;
        if end + 1 != colon {
            return None;
        }
        (&s[1..end], 1, end + 1)
    } else {
        let host = &s[..colon];
        if host.contains(':') {
            return None;
        }
        (host, 0, 0)
    };
    if s[not_open..].contains('[') || s[not_close..].contains(']') {
        return None;
    }
    Some((host, &s[colon + 1..]))
}

/// Applies one `validate_*_rrs` block to a section, in blackbox's order; the error says why.
fn check_records(records: &[Record], v: &RrValidator) -> Result<(), String> {
    if records.is_empty() && !v.fail_if_not_matches_regexp.is_empty() {
        return Err("fail_if_not_matches_regexp specified but no RRs returned".to_owned());
    }
    if records.is_empty() && !v.fail_if_none_matches_regexp.is_empty() {
        return Err("fail_if_none_matches_regexp specified but no RRs returned".to_owned());
    }
    let matches = |re: &Regex, rr: &Record| re.bytes.is_match(rr.text.as_bytes());
    let mut all_match = true;
    let mut any_match = false;
    for rr in records {
        debug!(rr = %rr.text, "Validating RR");
        if let Some(re) = v.fail_if_matches_regexp.iter().find(|re| matches(re, rr)) {
            return Err(format!(
                "at least one RR matched regexp {:?}: {:?}",
                re.as_str(),
                rr.text
            ));
        }
        if v.fail_if_all_match_regexp.iter().any(|re| !matches(re, rr)) {
            all_match = false;
        }
        if let Some(re) = v
            .fail_if_not_matches_regexp
            .iter()
            .find(|re| !matches(re, rr))
        {
            return Err(format!(
                "at least one RR did not match regexp {:?}: {:?}",
                re.as_str(),
                rr.text
            ));
        }
        if v.fail_if_none_matches_regexp
            .iter()
            .any(|re| matches(re, rr))
        {
            any_match = true;
        }
    }
    // blackbox 0.23 fails fail_if_all_match_regexp when *not* all records match; kept for
    // compatibility.
    if !v.fail_if_all_match_regexp.is_empty() && !all_match {
        return Err("not all RRs matched fail_if_all_match_regexp".to_owned());
    }
    if !v.fail_if_none_matches_regexp.is_empty() && !any_match {
        return Err("none of the RRs matched fail_if_none_matches_regexp".to_owned());
    }
    Ok(())
}

fn io_failure(kind: FailureKind, what: &str, addr: SocketAddr, e: std::io::Error) -> ProbeFailure {
    ProbeFailure::new(kind, format!("{what} {addr}: {e}"))
}

/// One length-prefixed exchange over a stream (TCP, or TLS over TCP). `sent` is when the query
/// went out: the start of blackbox's request phase.
async fn exchange_stream<S>(
    mut stream: S,
    addr: SocketAddr,
    query: &[u8],
    id: u16,
    sent: &mut Option<Instant>,
) -> Result<Response, ProbeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let len = u16::try_from(query.len()).map_err(|_| {
        ProbeFailure::new(
            FailureKind::Protocol,
            "the query is longer than 65535 bytes",
        )
    })?;
    let mut frame = Vec::with_capacity(query.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(query);
    *sent = Some(Instant::now());
    let written = async {
        stream.write_all(&frame).await?;
        stream.flush().await
    }
    .await;
    if let Err(e) = written {
        *sent = None;
        return Err(io_failure(
            FailureKind::Connect,
            "sending the query to",
            addr,
            e,
        ));
    }
    let read_failure = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProbeFailure::new(
                FailureKind::Protocol,
                format!("{addr} closed the connection before a complete response"),
            )
        } else {
            io_failure(FailureKind::Connect, "reading the response from", addr, e)
        }
    };
    // The length prefix bounds the read at 65535 bytes.
    let len = usize::from(stream.read_u16().await.map_err(read_failure)?);
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await.map_err(read_failure)?;
    let response = decode(&buf, addr)?;
    if response.id != id {
        return Err(ProbeFailure::new(
            FailureKind::Protocol,
            format!("response id {} does not match query id {id}", response.id),
        ));
    }
    Ok(response)
}

/// One exchange over UDP from a connected socket. Datagrams with another id are skipped (they
/// may answer an earlier query), as miekg does; the deadline bounds the wait.
async fn exchange_udp(
    policy: &dyn DialPolicy,
    addr: SocketAddr,
    source: Option<IpAddr>,
    query: &[u8],
    id: u16,
    sent: &mut Option<Instant>,
) -> Result<Response, ProbeFailure> {
    let socket = net::bind_udp(policy, addr, source).await?;
    *sent = Some(Instant::now());
    if let Err(e) = socket.send(query).await {
        *sent = None;
        return Err(io_failure(
            FailureKind::Connect,
            "sending the query to",
            addr,
            e,
        ));
    }
    let mut buf = [0u8; UDP_BUFFER];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| io_failure(FailureKind::Connect, "reading the response from", addr, e))?;
        let response = decode(&buf[..n], addr)?;
        if response.id == id {
            return Ok(response);
        }
        debug!(
            id = response.id,
            expected = id,
            "Ignoring a response with another id"
        );
    }
}

fn decode(buf: &[u8], addr: SocketAddr) -> Result<Response, ProbeFailure> {
    wire::decode(buf).map_err(|e| {
        ProbeFailure::new(
            FailureKind::Protocol,
            format!("invalid DNS response from {addr}: {e}"),
        )
    })
}

impl Spec {
    /// Dials `addr` (handshaking TLS for DoT, verified against `server_name`) and exchanges
    /// `query` for a response.
    async fn exchange(
        &self,
        cx: &mut ProbeContext<'_>,
        addr: SocketAddr,
        server_name: &str,
        query: &[u8],
        id: u16,
        sent: &mut Option<Instant>,
    ) -> Result<Response, ProbeFailure> {
        if !self.tcp {
            return exchange_udp(cx.dial_policy, addr, self.source_ip, query, id, sent).await;
        }
        let target = net::Target {
            source: self.source_ip,
            ..net::Target::new(net::Address::Resolved(addr.ip()), addr.port(), self.ip)
        };
        // blackbox records no TLS facts for DNS over TLS, so the handshake's are dropped.
        let tls = net::Tls {
            spec: &self.tls_config,
            server_name,
            alpn: &[],
        };
        let dialed = net::dial(cx, &target, self.dot.then_some(&tls), |_, _| {}).await?;
        exchange_stream(dialed.stream, addr, query, id, sent).await
    }
}

impl Prober for Spec {
    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        for phase in ["resolve", "connect", "request"] {
            cx.report
                .declare_labeled(&PROBE_DNS_DURATION_SECONDS, &[("phase", phase)]);
        }
        cx.report.declare(&PROBE_DNS_ANSWER_RRS);
        cx.report.declare(&PROBE_DNS_AUTHORITY_RRS);
        cx.report.declare(&PROBE_DNS_ADDITIONAL_RRS);
        cx.report.declare(&PROBE_DNS_QUERY_SUCCEEDED);

        let (host, port) = split_target(&req.target, if self.dot { 853 } else { 53 });
        let (ip, lookup) = net::resolve(cx, net::Address::Target(&host), self.ip).await?;
        cx.report.add(
            &PROBE_DNS_DURATION_SECONDS,
            &[("phase", "resolve")],
            lookup.as_secs_f64(),
        );
        let port: u16 = port.parse().map_err(|_| {
            ProbeFailure::new(
                FailureKind::InvalidTarget,
                format!("invalid port {port:?} in target {:?}", req.target),
            )
        })?;
        let addr = SocketAddr::new(ip, port);
        let (id, query) = wire::query(
            &self.query_name,
            self.query_type,
            self.query_class,
            self.recursion_desired,
        )
        .map_err(|e| ProbeFailure::new(FailureKind::Protocol, e))?;
        let server_name = match self.tls_config.server_name.as_deref() {
            Some(name) if !name.is_empty() => name,
            _ => host.as_str(),
        };
        debug!(
            target_addr = %addr,
            transport = if self.dot { "tcp-tls" } else if self.tcp { "tcp" } else { "udp" },
            query = %self.query_name,
            r#type = %self.query_type,
            class = %self.query_class,
            "Making DNS query"
        );

        // Like blackbox: the request phase runs from sending the query to reading the response,
        // and the connect phase is the rest (dialling, and the TLS handshake for DoT). Both are
        // recorded even when the exchange fails, so the deadline is applied here, not only by
        // `probe::run`.
        let start = Instant::now();
        let mut sent = None;
        let result = tokio::time::timeout_at(
            cx.deadline,
            self.exchange(cx, addr, server_name, &query, id, &mut sent),
        )
        .await;
        let end = Instant::now();
        let request = sent.map(|t| end - t).unwrap_or_default();
        let connect = (end - start).saturating_sub(request);
        cx.report.set_labeled(
            &PROBE_DNS_DURATION_SECONDS,
            &[("phase", "connect")],
            connect.as_secs_f64(),
        );
        cx.report.set_labeled(
            &PROBE_DNS_DURATION_SECONDS,
            &[("phase", "request")],
            request.as_secs_f64(),
        );
        let response = match result {
            Ok(Ok(response)) => response,
            Ok(Err(failure)) => return Err(failure),
            Err(_) => {
                return Err(ProbeFailure::new(
                    FailureKind::Timeout,
                    format!("no DNS response from {addr} before the deadline"),
                ));
            }
        };
        debug!(
            rcode = %rcode_name(response.rcode),
            answer = response.answer.len(),
            authority = response.authority.len(),
            additional = response.additional.len(),
            "Got response"
        );

        cx.report
            .set(&PROBE_DNS_ANSWER_RRS, response.answer.len() as f64);
        cx.report
            .set(&PROBE_DNS_AUTHORITY_RRS, response.authority.len() as f64);
        cx.report
            .set(&PROBE_DNS_ADDITIONAL_RRS, response.additional.len() as f64);
        cx.report.set(&PROBE_DNS_QUERY_SUCCEEDED, 1.0);
        if self.query_type == RecordType::SOA {
            cx.report.declare(&PROBE_DNS_SERIAL);
            for serial in response.answer.iter().filter_map(|r| r.soa_serial) {
                cx.report.set(&PROBE_DNS_SERIAL, f64::from(serial));
            }
        }

        let valid = self
            .valid_rcodes
            .iter()
            .any(|name| rcode_value(name) == Some(response.rcode));
        if !valid {
            return Err(ProbeFailure::new(
                FailureKind::Assertion,
                format!(
                    "rcode {} is not one of the valid rcodes [{}]",
                    rcode_name(response.rcode),
                    self.valid_rcodes.join(", ")
                ),
            )
            .because(Reason::DnsRcode));
        }
        debug!(rcode = %rcode_name(response.rcode), "Rcode is valid");
        let sections = [
            ("Answer", &response.answer),
            ("Authority", &response.authority),
            ("Additional", &response.additional),
        ];
        for ((section, records), validator) in sections.into_iter().zip(&self.validators) {
            debug!("Validating {section} RRs");
            check_records(records, validator).map_err(|why| {
                ProbeFailure::new(
                    FailureKind::Assertion,
                    format!("{section} RRs validation failed: {why}"),
                )
                .because(Reason::DnsValidation)
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr(text: &str) -> Record {
        Record {
            rtype: 1,
            ttl: 0,
            text: text.to_owned(),
            soa_serial: None,
        }
    }

    fn re(s: &str) -> Vec<Regex> {
        vec![Regex::new(s).unwrap()]
    }

    const A1: &str = "example.org.\t3600\tIN\tA\t192.0.2.1";
    const A2: &str = "example.org.\t3600\tIN\tA\t192.0.2.2";

    #[test]
    fn validators_follow_blackbox() {
        let both = [rr(A1), rr(A2)];
        let v = |f: fn(&mut RrValidator)| {
            let mut v = RrValidator::default();
            f(&mut v);
            v
        };
        assert!(check_records(&both, &RrValidator::default()).is_ok());
        assert!(check_records(&[], &RrValidator::default()).is_ok());

        let matches = v(|v| v.fail_if_matches_regexp = re(r"192\.0\.2\.2"));
        assert!(check_records(&both, &matches).is_err());
        assert!(check_records(&both[..1], &matches).is_ok());

        // 0.23 quirk: fails when not every record matches, passes when all do.
        let all = v(|v| v.fail_if_all_match_regexp = re(r"192\.0\.2\.1"));
        assert!(check_records(&both, &all).is_err());
        assert!(check_records(&both[..1], &all).is_ok());
        assert!(check_records(&[], &all).is_ok());

        let not = v(|v| v.fail_if_not_matches_regexp = re(r"\tA\t192\.0\.2\.1$"));
        assert!(check_records(&both, &not).is_err());
        assert!(check_records(&both[..1], &not).is_ok());
        assert!(check_records(&[], &not).is_err());

        let none = v(|v| v.fail_if_none_matches_regexp = re(r"192\.0\.2\.2"));
        assert!(check_records(&both, &none).is_ok());
        assert!(check_records(&both[..1], &none).is_err());
        assert!(check_records(&[], &none).is_err());
    }

    #[test]
    fn targets_split_like_go() {
        let s = |t: &str, d: u16| split_target(t, d);
        assert_eq!(s("127.0.0.1", 53), ("127.0.0.1".into(), "53".into()));
        assert_eq!(s("127.0.0.1:5353", 53), ("127.0.0.1".into(), "5353".into()));
        assert_eq!(s("dns.example", 853), ("dns.example".into(), "853".into()));
        assert_eq!(
            s("dns.example:53", 853),
            ("dns.example".into(), "53".into())
        );
        assert_eq!(s("[::1]:5353", 53), ("::1".into(), "5353".into()));
        assert_eq!(s("::1", 53), ("::1".into(), "53".into()));
        assert_eq!(s("2001:db8::1", 53), ("2001:db8::1".into(), "53".into()));
        assert_eq!(s("host:abc", 53), ("host".into(), "abc".into()));
        assert_eq!(s("[::1]", 53), ("[::1]".into(), "53".into()));
        assert_eq!(s("[::1]x:53", 53), ("[::1]x:53".into(), "53".into()));
        assert_eq!(s("a]:53", 53), ("a]:53".into(), "53".into()));
    }

    #[test]
    fn rcode_names_round_trip() {
        for name in RCODES {
            let value = rcode_value(name).unwrap();
            if *name != "BADVERS" {
                assert_eq!(rcode_name(value), *name);
            }
        }
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(16), "BADSIG");
        assert_eq!(rcode_name(4000), "4000");
    }
}
