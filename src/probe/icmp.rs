//! `prober: icmp`: one echo request and its reply over IPv4 or IPv6, with blackbox's phases
//! (resolve, setup, rtt) and the reply's hop limit.
//!
//! Each probe opens its own socket (see `socket`): an unprivileged datagram socket where
//! `net.ipv4.ping_group_range` allows one, else a raw socket. With datagram sockets the kernel
//! picks a distinct identifier per socket and hands each socket only its own replies. Raw sockets
//! see every ICMP message on the host, so a probe accepts only an echo reply from its peer that
//! carries this process's identifier, its own sequence number (a process-wide counter) and its
//! payload; concurrent probes and other processes never take each other's replies.

mod packet;
mod socket;

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::path::Path;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU16, Ordering};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::debug;

use crate::probe::net;
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::report::Family;
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::values::FieldError;

use self::packet::Echo;
use self::socket::{EchoSocket, Kind, OpenError, Options};

/// `probe_icmp_duration_seconds{phase}`: resolve, setup (socket and packet), rtt.
pub static PROBE_ICMP_DURATION_SECONDS: Family = Family::gauge(
    "probe_icmp_duration_seconds",
    "Duration of icmp request by phase",
);
/// `probe_icmp_reply_hop_limit`: set only when the reply arrived and its hop limit is known.
pub static PROBE_ICMP_REPLY_HOP_LIMIT: Family = Family::gauge(
    "probe_icmp_reply_hop_limit",
    "Replied packet hop limit (TTL for ipv4)",
);

/// The longest IPv4 header (with options) a raw socket may hand back before the ICMP message.
const MAX_IPV4_HEADER: usize = 60;

/// Read errors tolerated while waiting for the reply (skipped, as blackbox skips them) before
/// the probe gives up, so an error the socket keeps returning cannot spin until the deadline.
const MAX_READ_ERRORS: u32 = 16;

/// The `icmp:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// ip4 or ip6 (default ip6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
    /// Whether the other protocol may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,
    /// The local address to send from (default: chosen by the kernel's routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip_address: Option<String>,
    /// Bytes of payload in each echo request (default, and 0: 28 bytes, blackbox's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u16>,
    /// Set the don't-fragment bit on IPv4 requests, so a request larger than the path MTU fails
    /// instead of being fragmented. Ignored for IPv6, whose routers never fragment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dont_fragment: bool,
    /// The TTL (IPv4) or hop limit (IPv6) of the request, 0 to 255 (default, and 0: 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

/// The validated ICMP module.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Address preference.
    pub ip: IpPreference,
    /// Source address.
    pub source_ip: Option<std::net::IpAddr>,
    /// Payload size.
    pub payload_size: u16,
    /// Don't fragment.
    pub dont_fragment: bool,
    /// TTL.
    pub ttl: u8,
}

impl Spec {
    /// Validates `section`.
    pub fn build(section: &Section, _base: &Path) -> Result<Spec, FieldError> {
        let ttl = section.ttl.unwrap_or(64);
        if ttl < 0 {
            return Err(FieldError::new("ttl", "\"ttl\" cannot be negative"));
        }
        if ttl > 255 {
            return Err(FieldError::new("ttl", "\"ttl\" cannot exceed 255"));
        }
        Ok(Spec {
            ip: IpPreference::from_config(
                section.preferred_ip_protocol,
                section.ip_protocol_fallback,
            ),
            source_ip: net::parse_source_ip(&section.source_ip_address)?,
            payload_size: section.payload_size.unwrap_or(0),
            dont_fragment: section.dont_fragment,
            ttl: if ttl == 0 { 64 } else { ttl as u8 },
        })
    }
}

impl Prober for Spec {
    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        for phase in ["resolve", "setup", "rtt"] {
            cx.report
                .declare_labeled(&PROBE_ICMP_DURATION_SECONDS, &[("phase", phase)]);
        }
        let (ip, lookup) = net::resolve(cx, net::Address::Target(&req.target), self.ip).await?;
        cx.report.add(
            &PROBE_ICMP_DURATION_SECONDS,
            &[("phase", "resolve")],
            lookup.as_secs_f64(),
        );
        // An IPv4-mapped IPv6 address is an IPv4 target, as for Go's To4.
        let peer = ip.to_canonical();
        net::permit_icmp(cx.dial_policy, peer)?;

        let setup_start = Instant::now();
        let opts = Options {
            source: self.source_ip,
            hop_limit: self.ttl,
            dont_fragment: self.dont_fragment,
        };
        let sock = EchoSocket::open(peer, opts).map_err(|e| open_failure(e, peer))?;
        let echo = Echo {
            peer,
            id: echo_id(),
            match_id: sock.kind() == Kind::Raw,
            seq: next_sequence(),
            payload: packet::payload(self.payload_size),
        };
        let request = echo.request();
        debug!(
            seq = echo.seq,
            id = match sock.kind() {
                Kind::Datagram => sock.kernel_id().unwrap_or(echo.id),
                Kind::Raw => echo.id,
            },
            payload_size = echo.payload.len(),
            "Created ICMP packet"
        );
        cx.report.add(
            &PROBE_ICMP_DURATION_SECONDS,
            &[("phase", "setup")],
            setup_start.elapsed().as_secs_f64(),
        );

        let rtt_start = Instant::now();
        debug!("Writing out packet");
        let exchange = async {
            sock.send(&request, peer).await.map_err(|e| {
                ProbeFailure::new(
                    FailureKind::Connect,
                    format!("sending the echo request to {peer}: {e}"),
                )
            })?;
            debug!("Waiting for reply packets");
            await_reply(&sock, &echo).await
        };
        let hop_limit = match tokio::time::timeout_at(cx.deadline, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ProbeFailure::new(
                    FailureKind::Timeout,
                    format!("no echo reply from {peer} before the deadline"),
                ));
            }
        };
        cx.report.add(
            &PROBE_ICMP_DURATION_SECONDS,
            &[("phase", "rtt")],
            rtt_start.elapsed().as_secs_f64(),
        );
        match hop_limit {
            Some(h) => cx.report.set(&PROBE_ICMP_REPLY_HOP_LIMIT, f64::from(h)),
            None => debug!(
                "Cannot get the hop limit of the reply; probe_icmp_reply_hop_limit will be missing"
            ),
        }
        debug!("Found matching reply packet");
        Ok(())
    }
}

/// Reads until the reply to `echo` arrives; returns its hop limit when known. Other packets,
/// garbage and oversized datagrams are skipped.
async fn await_reply(sock: &EchoSocket, echo: &Echo) -> Result<Option<u8>, ProbeFailure> {
    // One byte more than the largest reply we accept, so a longer datagram shows as truncated.
    let mut buf = vec![0u8; MAX_IPV4_HEADER + echo.reply_len() + 1];
    let mut errors = 0;
    loop {
        let got = match sock.recv(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                errors += 1;
                debug!(err = %e, "Error reading from socket");
                if errors >= MAX_READ_ERRORS {
                    return Err(ProbeFailure::new(
                        FailureKind::Connect,
                        format!("reading the echo reply from {}: {e}", echo.peer),
                    ));
                }
                continue;
            }
        };
        let Some(from) = got.from else { continue };
        if got.truncated {
            continue;
        }
        let datagram = &buf[..got.len];
        let (msg, header_ttl) = if sock.includes_ip_header() {
            match packet::split_ipv4(datagram) {
                Some((msg, ttl)) => (msg, Some(ttl)),
                None => continue,
            }
        } else {
            (datagram, None)
        };
        if echo.is_reply(from.to_canonical(), msg) {
            return Ok(got.hop_limit.or(header_ttl));
        }
    }
}

/// This process's echo identifier: the low 16 bits of its pid, or a random value when the pid
/// is 1 (a container), so exporters in different containers on one host differ.
fn echo_id() -> u16 {
    static ID: LazyLock<u16> = LazyLock::new(|| match std::process::id() {
        1 => random_u16(),
        pid => (pid & 0xffff) as u16,
    });
    *ID
}

/// The next sequence number; the counter starts at a random value, so exporters restarted
/// together do not send the same sequence numbers.
fn next_sequence() -> u16 {
    static SEQUENCE: LazyLock<AtomicU16> = LazyLock::new(|| AtomicU16::new(random_u16()));
    SEQUENCE.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
}

/// A random value from the standard library's randomly keyed hasher (no RNG crate needed).
fn random_u16() -> u16 {
    (RandomState::new().hash_one(std::process::id()) & 0xffff) as u16
}

fn open_failure(e: OpenError, peer: IpAddr) -> ProbeFailure {
    match e {
        OpenError::NotPermitted(datagram, raw) => ProbeFailure::new(
            FailureKind::Connect,
            format!(
                "cannot open an ICMP socket for {peer}: an unprivileged datagram socket was refused \
                 ({datagram}; allow this process's group in the sysctl net.ipv4.ping_group_range) \
                 and a raw socket was refused ({raw}; it needs CAP_NET_RAW)"
            ),
        ),
        OpenError::Bind(source, e) => ProbeFailure::new(
            FailureKind::Connect,
            format!("binding the ICMP socket to source_ip_address {source}: {e}"),
        ),
        OpenError::Option(name, e) => ProbeFailure::new(
            FailureKind::Connect,
            format!("setting {name} on the ICMP socket: {e}"),
        ),
    }
}
