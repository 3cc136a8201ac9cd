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
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::debug;

use crate::probe::net;
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober, Reason};
use crate::probe::report::{Family, Report};
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::values::{ConfigDuration, FieldError};

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

/// `probe_icmp_packets_sent` (with `count:`): echo requests sent.
pub static PROBE_ICMP_PACKETS_SENT: Family =
    Family::gauge("probe_icmp_packets_sent", "Echo requests sent by the probe");
/// `probe_icmp_packets_received` (with `count:`): distinct echo replies received in time.
pub static PROBE_ICMP_PACKETS_RECEIVED: Family = Family::gauge(
    "probe_icmp_packets_received",
    "Echo replies received by the probe",
);
/// `probe_icmp_packet_loss_ratio` (with `count:`): the share of requests left unanswered.
pub static PROBE_ICMP_PACKET_LOSS_RATIO: Family = Family::gauge(
    "probe_icmp_packet_loss_ratio",
    "Share of echo requests without a reply, 0 to 1",
);
/// `probe_icmp_rtt_min_seconds` (with `count:`, at least one reply).
pub static PROBE_ICMP_RTT_MIN_SECONDS: Family = Family::gauge(
    "probe_icmp_rtt_min_seconds",
    "Shortest round trip time of the echo replies",
);
/// `probe_icmp_rtt_avg_seconds` (with `count:`, at least one reply).
pub static PROBE_ICMP_RTT_AVG_SECONDS: Family = Family::gauge(
    "probe_icmp_rtt_avg_seconds",
    "Mean round trip time of the echo replies",
);
/// `probe_icmp_rtt_max_seconds` (with `count:`, at least one reply).
pub static PROBE_ICMP_RTT_MAX_SECONDS: Family = Family::gauge(
    "probe_icmp_rtt_max_seconds",
    "Longest round trip time of the echo replies",
);
/// `probe_icmp_rtt_stddev_seconds` (with `count:`, at least one reply): the population
/// standard deviation of the round trip times, ping's `mdev`, a measure of jitter.
pub static PROBE_ICMP_RTT_STDDEV_SECONDS: Family = Family::gauge(
    "probe_icmp_rtt_stddev_seconds",
    "Standard deviation of the round trip times of the echo replies",
);

/// The most echoes one probe may send (`count:`).
pub const MAX_COUNT: u16 = 1000;

/// The gap between echoes when `count:` is set without `interval:`, as ping's.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

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
    /// lookout: echoes per probe (1 to 1000). Set, the probe reports packets sent and
    /// received, the loss ratio and RTT statistics; absent, it sends one echo as blackbox does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u16>,
    /// lookout: the gap between two echoes of one probe (default 1s); needs `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<ConfigDuration>,
    /// lookout: the probe fails when more than this share of its echoes (0 to 1) got no reply;
    /// absent, one reply is enough. Needs `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_loss_ratio: Option<f64>,
}

/// Several echoes per probe (`count:`), and what makes such a probe succeed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Echoes {
    /// How many requests to send.
    pub count: u16,
    /// The gap between two requests.
    pub interval: Duration,
    /// The largest loss ratio that still succeeds; `None`: any reply succeeds.
    pub max_loss_ratio: Option<f64>,
}

impl Echoes {
    fn build(section: &Section) -> Result<Option<Echoes>, FieldError> {
        let Some(count) = section.count else {
            for (set, field) in [
                (section.interval.is_some(), "interval"),
                (section.max_loss_ratio.is_some(), "max_loss_ratio"),
            ] {
                if set {
                    return Err(FieldError::new(
                        field,
                        format!("\"{field}\" needs \"count\" (the echoes per probe)"),
                    ));
                }
            }
            return Ok(None);
        };
        if count == 0 || count > MAX_COUNT {
            return Err(FieldError::new(
                "count",
                format!("\"count\" must be between 1 and {MAX_COUNT}, got {count}"),
            ));
        }
        let interval = section.interval.map_or(DEFAULT_INTERVAL, |d| d.0);
        if interval.is_zero() && count > 1 {
            return Err(FieldError::new(
                "interval",
                "\"interval\" must be more than 0 when \"count\" is more than 1",
            ));
        }
        if let Some(r) = section.max_loss_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(FieldError::new(
                "max_loss_ratio",
                format!("\"max_loss_ratio\" must be between 0 and 1, got {r}"),
            ));
        }
        Ok(Some(Echoes {
            count,
            interval,
            max_loss_ratio: section.max_loss_ratio,
        }))
    }

    /// How long sending every request takes: the gaps between them.
    pub fn sending_time(&self) -> Duration {
        self.interval * u32::from(self.count.saturating_sub(1))
    }
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
    /// Several echoes per probe; `None`: one, as blackbox.
    pub echoes: Option<Echoes>,
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
            echoes: Echoes::build(section)?,
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
            seq: next_sequences(self.echoes.map_or(1, |e| e.count)),
            count: self.echoes.map_or(1, |e| e.count),
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

        if let Some(echoes) = self.echoes {
            return exchange_many(&sock, &echo, echoes, cx).await;
        }

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
    let mut buf = reply_buffer(echo);
    let mut errors = 0;
    loop {
        let (index, hop_limit) = next_reply(sock, echo, &mut buf, &mut errors).await?;
        if index == 0 {
            return Ok(hop_limit);
        }
    }
}

/// A buffer one byte longer than the largest reply accepted, so a longer datagram shows as
/// truncated.
fn reply_buffer(echo: &Echo) -> Vec<u8> {
    vec![0u8; MAX_IPV4_HEADER + echo.reply_len() + 1]
}

/// Reads until a reply to one of `echo`'s requests arrives; returns that request's index and
/// the reply's hop limit when known. Other packets, garbage and oversized datagrams are skipped;
/// after `MAX_READ_ERRORS` read errors in all (counted in `errors`) the probe fails.
async fn next_reply(
    sock: &EchoSocket,
    echo: &Echo,
    buf: &mut [u8],
    errors: &mut u32,
) -> Result<(u16, Option<u8>), ProbeFailure> {
    loop {
        let got = match sock.recv(buf).await {
            Ok(got) => got,
            Err(e) => {
                *errors += 1;
                debug!(err = %e, "Error reading from socket");
                if *errors >= MAX_READ_ERRORS {
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
        if let Some(index) = echo.reply_index(from.to_canonical(), msg) {
            return Ok((index, got.hop_limit.or(header_ttl)));
        }
    }
}

/// With `count:`: sends the echoes `interval` apart while collecting their replies, until every
/// request sent has its reply or the probe's time is up, then reports the packets, the loss and
/// the RTT statistics.
///
/// The probe stops waiting shortly before its deadline (a tenth of the time left, at most
/// 100 ms, is kept to report), so a lost echo makes the probe last nearly its whole timeout.
/// Echoes whose turn would come after that point are not sent and not counted as sent.
async fn exchange_many(
    sock: &EchoSocket,
    echo: &Echo,
    echoes: Echoes,
    cx: &mut ProbeContext<'_>,
) -> Result<(), ProbeFailure> {
    let peer = echo.peer;
    let start = Instant::now();
    let left = cx.deadline.saturating_duration_since(start);
    let stop = start + left - (left / 10).min(Duration::from_millis(100));
    let count = usize::from(echo.count);
    let mut sent_at: Vec<Option<Instant>> = vec![None; count];
    let mut rtts: Vec<Option<Duration>> = vec![None; count];
    let (mut sent, mut received) = (0usize, 0usize);
    let mut hop_limit = None;
    let mut buf = reply_buffer(echo);
    let mut errors = 0;
    let mut next_send = start;
    debug!(
        count,
        interval = ?echoes.interval,
        "Sending echo requests"
    );
    loop {
        let sending = sent < count && next_send < stop;
        if !sending && received == sent {
            break;
        }
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(next_send), if sending => {
                // `sent` is below `count`, which is a u16, so the index fits.
                let index = sent as u16;
                sock.send(&echo.request_numbered(index), peer).await.map_err(|e| {
                    ProbeFailure::new(
                        FailureKind::Connect,
                        format!("sending echo request {} to {peer}: {e}", sent + 1),
                    )
                })?;
                sent_at[sent] = Some(Instant::now());
                sent += 1;
                next_send += echoes.interval;
            }
            reply = next_reply(sock, echo, &mut buf, &mut errors) => {
                let (index, hops) = reply?;
                let index = usize::from(index);
                // A reply to a request not sent yet cannot be ours; a second reply to one
                // request (a duplicate) counts once.
                if let (Some(at), None) = (sent_at[index], rtts[index]) {
                    rtts[index] = Some(at.elapsed());
                    received += 1;
                    hop_limit = hops.or(hop_limit);
                }
            }
            () = tokio::time::sleep_until(stop) => break,
        }
    }
    if sent < count {
        debug!(
            sent,
            count, "The probe's time ran out before every echo request could be sent"
        );
    }
    let stats = RttStats::of(rtts.iter().flatten().copied());
    report_echoes(cx.report, sent, received, stats.as_ref());
    if let Some(h) = hop_limit {
        cx.report.set(&PROBE_ICMP_REPLY_HOP_LIMIT, f64::from(h));
    }
    debug!(sent, received, "Echo replies collected");
    let loss = loss_ratio(sent, received);
    if received == 0 {
        return Err(ProbeFailure::new(
            FailureKind::Timeout,
            format!("no echo reply from {peer} to any of {sent} requests"),
        ));
    }
    match echoes.max_loss_ratio {
        Some(max) if loss > max => Err(ProbeFailure::new(
            FailureKind::Assertion,
            format!(
                "{received} of {sent} echo requests to {peer} answered: loss ratio {loss:.3} is over max_loss_ratio {max}"
            ),
        )
        .because(Reason::PacketLoss)),
        _ => Ok(()),
    }
}

/// The share of `sent` requests without a reply (0 when nothing was sent).
fn loss_ratio(sent: usize, received: usize) -> f64 {
    if sent == 0 {
        0.0
    } else {
        (sent - received) as f64 / sent as f64
    }
}

/// Writes the families of a probe with `count:`. `rtt` is the mean round trip time, so
/// blackbox's `probe_icmp_duration_seconds{phase="rtt"}` keeps its meaning for one echo.
fn report_echoes(report: &mut Report, sent: usize, received: usize, stats: Option<&RttStats>) {
    report.set(&PROBE_ICMP_PACKETS_SENT, sent as f64);
    report.set(&PROBE_ICMP_PACKETS_RECEIVED, received as f64);
    report.set(&PROBE_ICMP_PACKET_LOSS_RATIO, loss_ratio(sent, received));
    if let Some(s) = stats {
        report.add(&PROBE_ICMP_DURATION_SECONDS, &[("phase", "rtt")], s.avg);
        report.set(&PROBE_ICMP_RTT_MIN_SECONDS, s.min);
        report.set(&PROBE_ICMP_RTT_AVG_SECONDS, s.avg);
        report.set(&PROBE_ICMP_RTT_MAX_SECONDS, s.max);
        report.set(&PROBE_ICMP_RTT_STDDEV_SECONDS, s.stddev);
    }
}

/// Minimum, mean, maximum and population standard deviation of round trip times, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RttStats {
    min: f64,
    avg: f64,
    max: f64,
    stddev: f64,
}

impl RttStats {
    /// The statistics of `rtts`; `None` when there are none.
    fn of(rtts: impl Iterator<Item = Duration>) -> Option<RttStats> {
        let (mut n, mut sum, mut min, mut max) = (0u32, 0.0, f64::INFINITY, 0.0f64);
        let mut values = Vec::new();
        for d in rtts {
            let v = d.as_secs_f64();
            n += 1;
            sum += v;
            min = min.min(v);
            max = max.max(v);
            values.push(v);
        }
        if n == 0 {
            return None;
        }
        let avg = sum / f64::from(n);
        let variance = values.iter().map(|v| (v - avg).powi(2)).sum::<f64>() / f64::from(n);
        Some(RttStats {
            min,
            avg,
            max,
            stddev: variance.sqrt(),
        })
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

/// The first of `n` consecutive sequence numbers reserved for one probe; the counter starts at
/// a random value, so exporters restarted together do not send the same sequence numbers.
fn next_sequences(n: u16) -> u16 {
    static SEQUENCE: LazyLock<AtomicU16> = LazyLock::new(|| AtomicU16::new(random_u16()));
    SEQUENCE.fetch_add(n, Ordering::Relaxed).wrapping_add(1)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> Section {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn echoes_are_off_without_count_and_need_it_for_their_fields() {
        assert_eq!(Echoes::build(&section("{}")).unwrap(), None);
        for (yaml, field) in [
            ("{interval: 1s}", "interval"),
            ("{max_loss_ratio: 0.5}", "max_loss_ratio"),
        ] {
            let e = Echoes::build(&section(yaml)).unwrap_err();
            assert_eq!(e.path, field);
            assert!(e.message.contains("needs \"count\""), "{}", e.message);
        }
    }

    #[test]
    fn echoes_validate_count_interval_and_loss() {
        let e = Echoes::build(&section("{count: 5}")).unwrap().unwrap();
        assert_eq!(e.interval, DEFAULT_INTERVAL);
        assert_eq!(e.sending_time(), Duration::from_secs(4));
        assert_eq!(e.max_loss_ratio, None);
        let e = Echoes::build(&section("{count: 1, interval: 0s}"))
            .unwrap()
            .unwrap();
        assert_eq!(e.sending_time(), Duration::ZERO);
        for (yaml, field) in [
            ("{count: 0}", "count"),
            ("{count: 1001}", "count"),
            ("{count: 3, interval: 0s}", "interval"),
            ("{count: 3, max_loss_ratio: 1.5}", "max_loss_ratio"),
            ("{count: 3, max_loss_ratio: -0.1}", "max_loss_ratio"),
        ] {
            assert_eq!(
                Echoes::build(&section(yaml)).unwrap_err().path,
                field,
                "{yaml}"
            );
        }
    }

    #[test]
    fn rtt_statistics_are_ping_s() {
        assert_eq!(RttStats::of(std::iter::empty()), None);
        let ms = |v: u64| Duration::from_millis(v);
        let s = RttStats::of([ms(10), ms(20), ms(30), ms(40)].into_iter()).unwrap();
        assert!((s.min - 0.010).abs() < 1e-12);
        assert!((s.avg - 0.025).abs() < 1e-12);
        assert!((s.max - 0.040).abs() < 1e-12);
        // Population standard deviation: sqrt(((15² + 5² + 5² + 15²) / 4) ms²) = 11.18 ms.
        assert!((s.stddev - 0.011_180_34).abs() < 1e-8, "{}", s.stddev);
        let one = RttStats::of([ms(7)].into_iter()).unwrap();
        assert_eq!(one.stddev, 0.0);
        assert_eq!(loss_ratio(0, 0), 0.0);
        assert_eq!(loss_ratio(4, 3), 0.25);
    }
}
