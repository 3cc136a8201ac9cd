//! The one way a prober reaches the network: resolve (through `resolve.rs`), ask the probe's
//! `DialPolicy`, then connect (TCP, optionally from a source address, optionally TLS), or bind a
//! UDP socket, or clear an ICMP destination. Nothing else in the crate opens a socket
//! (`clippy.toml` makes the socket constructors an error outside this file), so a policy sees
//! every address a probe uses, exactly as it is dialled.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::probe::prober::{Addressing, FailureKind, ProbeContext, ProbeFailure, Reason};
use crate::probe::report::Report;
use crate::probe::resolve::{IpPreference, Resolver};
use crate::probe::tls;
use crate::values::FieldError;

/// The transport of a dial, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP connection (TLS or not).
    Tcp,
    /// UDP datagrams (DNS over UDP).
    Udp,
    /// ICMP echo requests (the port is 0).
    Icmp,
}

/// Decides whether a probe may use an address. It is asked with the address about to be
/// dialled, after resolution, so a name cannot resolve one way for the check and another way
/// for the connection.
pub trait DialPolicy: fmt::Debug + Send + Sync {
    /// `Ok` to go on; the error (normally `FailureKind::Blocked`) fails the probe.
    fn check(&self, addr: SocketAddr, transport: Transport) -> Result<(), ProbeFailure>;

    /// The same for a unix socket, by its path (`prober: unix`); allowed unless the policy
    /// says otherwise.
    fn check_unix(&self, path: &std::path::Path) -> Result<(), ProbeFailure> {
        let _ = path;
        Ok(())
    }
}

/// Every address is allowed: the policy of scheduled probes, whose targets come from the config
/// file. `/probe` requests use the config's `probe_access` policy (`access::Policy`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl DialPolicy for AllowAll {
    fn check(&self, _: SocketAddr, _: Transport) -> Result<(), ProbeFailure> {
        Ok(())
    }
}

/// How a dial finds its address.
#[derive(Debug, Clone, Copy)]
pub enum Address<'s> {
    /// The probe's target name: resolved with blackbox's `chooseProtocol`, recording
    /// `probe_ip_protocol`, `probe_ip_addr_hash` and `probe_dns_lookup_time_seconds`.
    Target(&'s str),
    /// A name resolved without recording anything: redirect hops and proxies, which blackbox
    /// resolves inside its HTTP transport.
    Hop(&'s str),
    /// An address from an earlier `resolve`, for callers with work between resolving and
    /// dialling (HTTP puts the address into the URL, DNS builds its query).
    Resolved(IpAddr),
}

/// Where and how `dial` and `dial_plain` connect.
#[derive(Debug, Clone, Copy)]
pub struct Target<'s> {
    /// The address, or the name to resolve.
    pub address: Address<'s>,
    /// The TCP port.
    pub port: u16,
    /// `preferred_ip_protocol` and `ip_protocol_fallback`.
    pub ip: IpPreference,
    /// `source_ip_address`.
    pub source: Option<IpAddr>,
    /// Ends the connect and TLS steps early, with a `Timeout` failure naming the step; `None`
    /// leaves them to the probe's deadline. MQTT uses it to keep time back for its goodbye.
    pub bound: Option<Instant>,
}

impl<'s> Target<'s> {
    /// `address:port` with the section's preference, no source address and no bound.
    pub fn new(address: Address<'s>, port: u16, ip: IpPreference) -> Target<'s> {
        Target {
            address,
            port,
            ip,
            source: None,
            bound: None,
        }
    }
}

/// The TLS a dial does after connecting.
#[derive(Debug, Clone, Copy)]
pub struct Tls<'s> {
    /// The validated `tls_config`.
    pub spec: &'s tls::Spec,
    /// The name sent as SNI and verified.
    pub server_name: &'s str,
    /// ALPN protocols offered, in order.
    pub alpn: &'s [&'s [u8]],
}

/// A step of a dial, reported to the caller's observer as it ends, so each prober times and logs
/// its own phases as it did when it dialled by itself.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// The address is known.
    Resolved {
        /// How long resolution took (zero for `Address::Resolved`).
        lookup: Duration,
    },
    /// The connect step ended: connected, refused by the policy, failed or timed out.
    Connected {
        /// From the policy check to the end of the attempt.
        elapsed: Duration,
        /// Whether a connection was made.
        ok: bool,
    },
    /// The TLS handshake ended.
    Handshaken {
        /// How long the handshake took.
        elapsed: Duration,
        /// Whether it succeeded.
        ok: bool,
    },
}

/// A connection made by `dial`.
#[derive(Debug)]
pub struct Dialed {
    /// Plain TCP, or TLS over TCP when `dial` was given a `Tls`.
    pub stream: Stream,
    /// The handshake's facts, for `tls::record`, when TLS was done.
    pub handshake: Option<tls::Handshake>,
}

/// Resolves `address` for a dial: the only way from a name to an address in the probers.
/// Returns the address and the lookup time as `Resolver::resolve` and `Resolver::lookup` do.
pub async fn resolve(
    cx: &mut ProbeContext<'_>,
    address: Address<'_>,
    ip: IpPreference,
) -> Result<(IpAddr, Duration), ProbeFailure> {
    match address {
        Address::Target(host) => match &mut cx.addressing {
            Addressing::One => cx.resolver.resolve(host, ip, cx.report).await,
            Addressing::Pinned(addr, lookup) => {
                Resolver::record_choice(cx.report, *addr, *lookup);
                Ok((*addr, *lookup))
            }
            Addressing::Collect(slot) => {
                **slot = Some(cx.resolver.resolve_every(host, ip).await?);
                Err(ProbeFailure::new(
                    FailureKind::Internal,
                    "every address collected; probing each",
                ))
            }
        },
        Address::Hop(host) => cx.resolver.lookup(host, ip).await,
        Address::Resolved(addr) => Ok((addr, Duration::ZERO)),
    }
}

/// Dials `target` for every TCP-based prober: resolve, policy check, TCP connect, then TLS when
/// `tls` is given. `observe` hears each step as it ends (with the report, to record phases).
pub async fn dial(
    cx: &mut ProbeContext<'_>,
    target: &Target<'_>,
    tls: Option<&Tls<'_>>,
    mut observe: impl FnMut(&mut Report, Step),
) -> Result<Dialed, ProbeFailure> {
    let tcp = dial_tcp(cx, target, &mut observe).await?;
    let Some(tls) = tls else {
        return Ok(Dialed {
            stream: Stream::Plain(tcp),
            handshake: None,
        });
    };
    let start = Instant::now();
    let handshake = bounded(
        target.bound,
        || "no TLS handshake".into(),
        upgrade(tcp, tls),
    )
    .await;
    observe(
        cx.report,
        Step::Handshaken {
            elapsed: start.elapsed(),
            ok: handshake.is_ok(),
        },
    );
    let (stream, hs) = handshake?;
    Ok(Dialed {
        stream,
        handshake: Some(hs),
    })
}

/// Dials the unix socket at `path` (`prober: unix`): policy check, connect, then TLS when `tls`
/// is given. Connection failures name the path; a permission error says so, as blackbox does.
// The one place unix sockets are connected; `clippy.toml` forbids it elsewhere.
#[allow(clippy::disallowed_methods)]
pub async fn dial_unix(
    cx: &mut ProbeContext<'_>,
    path: &std::path::Path,
    tls: Option<&Tls<'_>>,
) -> Result<Dialed, ProbeFailure> {
    // The policy judges, and the connection goes to, the path with its links and `..`
    // resolved, so a link cannot lead a check of one path to a connection to another.
    let resolved = tokio::fs::canonicalize(path).await.map_err(|e| {
        ProbeFailure::new(
            FailureKind::Connect,
            format!("connecting to unix socket {}: {e}", path.display()),
        )
    })?;
    cx.dial_policy.check_unix(&resolved)?;
    let unix = tokio::net::UnixStream::connect(&resolved)
        .await
        .map_err(|e| {
            let what = if matches!(e.kind(), io::ErrorKind::PermissionDenied) {
                "permission denied connecting to unix socket"
            } else {
                "connecting to unix socket"
            };
            ProbeFailure::new(
                FailureKind::Connect,
                format!("{what} {}: {e}", path.display()),
            )
        })?;
    let Some(tls) = tls else {
        return Ok(Dialed {
            stream: Stream::Unix(unix),
            handshake: None,
        });
    };
    let (stream, hs) = tls.spec.handshake(unix, tls.server_name, tls.alpn).await?;
    Ok(Dialed {
        stream: Stream::UnixTls(Box::new(stream)),
        handshake: Some(hs),
    })
}

/// STARTTLS on an open stream: TLS over the plain TCP or unix connection.
pub async fn upgrade_stream(
    stream: Stream,
    tls: &Tls<'_>,
) -> Result<(Stream, tls::Handshake), ProbeFailure> {
    match stream {
        Stream::Plain(tcp) => upgrade(tcp, tls).await,
        Stream::Unix(unix) => {
            let (s, hs) = tls.spec.handshake(unix, tls.server_name, tls.alpn).await?;
            Ok((Stream::UnixTls(Box::new(s)), hs))
        }
        Stream::Tls(_) | Stream::UnixTls(_) => Err(ProbeFailure::new(
            FailureKind::Protocol,
            "starttls on a connection that is already TLS",
        )),
    }
}

/// `dial` without TLS, for protocols that speak in plain text before upgrading with `upgrade`
/// (PostgreSQL's SSLRequest, an HTTP proxy's CONNECT) and for TCP's STARTTLS.
pub async fn dial_plain(
    cx: &mut ProbeContext<'_>,
    target: &Target<'_>,
    mut observe: impl FnMut(&mut Report, Step),
) -> Result<TcpStream, ProbeFailure> {
    dial_tcp(cx, target, &mut observe).await
}

/// Resolve, check, connect: the steps every TCP dial shares.
async fn dial_tcp(
    cx: &mut ProbeContext<'_>,
    target: &Target<'_>,
    observe: &mut impl FnMut(&mut Report, Step),
) -> Result<TcpStream, ProbeFailure> {
    let (ip, lookup) = resolve(cx, target.address, target.ip).await?;
    observe(cx.report, Step::Resolved { lookup });
    let addr = SocketAddr::new(ip, target.port);
    let start = Instant::now();
    let tcp = match cx.dial_policy.check(addr, Transport::Tcp) {
        Ok(()) => {
            bounded(
                target.bound,
                || format!("no TCP connection to {addr}"),
                connect(addr, target.source),
            )
            .await
        }
        Err(refused) => Err(refused),
    };
    observe(
        cx.report,
        Step::Connected {
            elapsed: start.elapsed(),
            ok: tcp.is_ok(),
        },
    );
    tcp
}

/// Shakes hands over `tcp`: the TLS of `dial`, and the later upgrade of `dial_plain`'s callers.
pub async fn upgrade(
    tcp: TcpStream,
    tls: &Tls<'_>,
) -> Result<(Stream, tls::Handshake), ProbeFailure> {
    let (stream, hs) = tls.spec.handshake(tcp, tls.server_name, tls.alpn).await?;
    Ok((Stream::Tls(Box::new(stream)), hs))
}

/// Awaits `fut`, failing with `Timeout` ("`what` before the deadline") at `bound`.
async fn bounded<T>(
    bound: Option<Instant>,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T, ProbeFailure>>,
) -> Result<T, ProbeFailure> {
    let Some(bound) = bound else {
        return fut.await;
    };
    tokio::time::timeout_at(bound, fut)
        .await
        .unwrap_or_else(|_| {
            Err(ProbeFailure::new(
                FailureKind::Timeout,
                format!("{} before the deadline", what()),
            ))
        })
}

/// A failed connection attempt, refused and timed out told apart for `probe_failure_info`.
fn connect_failure(message: String, e: &io::Error) -> ProbeFailure {
    let f = ProbeFailure::new(FailureKind::Connect, message);
    match e.kind() {
        io::ErrorKind::ConnectionRefused => f.because(Reason::ConnectRefused),
        io::ErrorKind::TimedOut => f.because(Reason::ConnectTimeout),
        _ => f,
    }
}

/// Connects to `addr`, from `source` when given (blackbox's `source_ip_address`).
// The one place TCP connections are opened; `clippy.toml` forbids it elsewhere.
#[allow(clippy::disallowed_methods)]
async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, ProbeFailure> {
    let fail = |e: io::Error| connect_failure(format!("connecting to {addr}: {e}"), &e);
    let stream = match source {
        None => TcpStream::connect(addr).await.map_err(fail)?,
        Some(src) => {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(fail)?;
            socket.bind(SocketAddr::new(src, 0)).map_err(|e| {
                ProbeFailure::new(
                    FailureKind::Connect,
                    format!("binding source address {src}: {e}"),
                )
            })?;
            socket.connect(addr).await.map_err(fail)?
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A UDP socket connected to `peer` once the policy allows it, bound to `source` or to the
/// unspecified address of `peer`'s family.
// The one place UDP sockets are opened; `clippy.toml` forbids it elsewhere.
#[allow(clippy::disallowed_methods)]
pub async fn bind_udp(
    policy: &dyn DialPolicy,
    peer: SocketAddr,
    source: Option<IpAddr>,
) -> Result<UdpSocket, ProbeFailure> {
    policy.check(peer, Transport::Udp)?;
    let ip = source.unwrap_or(match peer {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let bind = SocketAddr::new(ip, 0);
    let socket = UdpSocket::bind(bind).await.map_err(|e| {
        ProbeFailure::new(
            FailureKind::Connect,
            format!("binding a UDP socket to {bind}: {e}"),
        )
    })?;
    socket.connect(peer).await.map_err(|e| {
        ProbeFailure::new(FailureKind::Connect, format!("connecting to {peer}: {e}"))
    })?;
    Ok(socket)
}

/// A UDP socket for talking to `peer` once the policy allows it, bound to the unspecified address
/// of `peer`'s family but not connected: QUIC (quinn) takes it so, and a refusal (ICMP port
/// unreachable) then reads as silence, the probe failing at its deadline as blackbox's does,
/// instead of ending quinn's endpoint.
// The one other place UDP sockets are opened; `clippy.toml` forbids it elsewhere.
#[allow(clippy::disallowed_methods)]
pub fn bind_udp_unconnected(
    policy: &dyn DialPolicy,
    peer: SocketAddr,
) -> Result<std::net::UdpSocket, ProbeFailure> {
    policy.check(peer, Transport::Udp)?;
    let bind = SocketAddr::new(
        match peer {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        },
        0,
    );
    std::net::UdpSocket::bind(bind).map_err(|e| {
        ProbeFailure::new(
            FailureKind::Connect,
            format!("binding a UDP socket to {bind}: {e}"),
        )
    })
}

/// Asks the policy about an ICMP destination; the ICMP prober opens its own (datagram or raw)
/// socket, so this is its only gate.
pub fn permit_icmp(policy: &dyn DialPolicy, peer: IpAddr) -> Result<(), ProbeFailure> {
    policy.check(SocketAddr::new(peer, 0), Transport::Icmp)
}

/// Asks the policy about the address an HTTP proxy will connect to on the probe's behalf (the
/// hop's address when lookout resolved it, or an IP literal in its URL), so a proxy is no way
/// around the policy. A name left to the proxy to resolve cannot be judged here: the proxy's own
/// rules decide it.
pub fn permit_via_proxy(policy: &dyn DialPolicy, addr: SocketAddr) -> Result<(), ProbeFailure> {
    policy.check(addr, Transport::Tcp)
}

/// Validates a `source_ip_address` field (tcp, dns, icmp).
pub fn parse_source_ip(s: &Option<String>) -> Result<Option<IpAddr>, FieldError> {
    match s.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| FieldError::new("source_ip_address", format!("invalid IP address {v:?}"))),
    }
}

/// Connects to a service of lookout's own (an Alertmanager of the `alerting:` section), not
/// a probe target: no probe context and no dial policy, since the address comes from the
/// config, never from a `/probe` request.
pub async fn connect_service(addr: SocketAddr) -> Result<TcpStream, ProbeFailure> {
    connect(addr, None).await
}

/// A connected stream: plain TCP or TLS over TCP, or a unix socket with or without TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A unix socket (`prober: unix`).
    Unix(tokio::net::UnixStream),
    /// TLS over a unix socket.
    UnixTls(Box<tokio_rustls::client::TlsStream<tokio::net::UnixStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::UnixTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::UnixTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::UnixTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::UnixTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Splits `host:port` as Go's `net.SplitHostPort` does (`[v6]:port` included); the port is
/// required.
pub fn split_host_port(target: &str) -> Result<(String, u16), ProbeFailure> {
    let bad = |why: &str| {
        ProbeFailure::new(
            FailureKind::InvalidTarget,
            format!("address {target:?}: {why}"),
        )
    };
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| bad("missing ']' in address"))?;
        let p = p
            .strip_prefix(':')
            .ok_or_else(|| bad("missing port in address"))?;
        (h, p)
    } else {
        let (h, p) = target
            .rsplit_once(':')
            .ok_or_else(|| bad("missing port in address"))?;
        if h.contains(':') {
            return Err(bad("too many colons in address"));
        }
        (h, p)
    };
    let port = port.parse::<u16>().map_err(|_| bad("invalid port"))?;
    Ok((host.to_owned(), port))
}

/// Like `split_host_port`, with `default` when the target has no port.
pub fn split_host_default_port(target: &str, default: u16) -> Result<(String, u16), ProbeFailure> {
    let bare_v6 =
        target.contains(':') && !target.starts_with('[') && target.parse::<IpAddr>().is_ok();
    if bare_v6 {
        return Ok((target.to_owned(), default));
    }
    let has_port = if target.starts_with('[') {
        target.contains("]:")
    } else {
        target.contains(':')
    };
    if has_port {
        split_host_port(target)
    } else {
        Ok((
            target
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            default,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;
    use std::sync::Mutex;

    use crate::probe::prober::ProbeRequest;
    use crate::probe::resolve::Resolver;
    use crate::probe::{ProbeSpec, dns, grpc, http, icmp, mqtt, postgres, redis, tcp};

    /// Refuses every address and remembers what it was asked.
    #[derive(Debug, Default)]
    struct RefuseAll(Mutex<Vec<(SocketAddr, Transport)>>);

    impl DialPolicy for RefuseAll {
        fn check(&self, addr: SocketAddr, transport: Transport) -> Result<(), ProbeFailure> {
            self.0.lock().unwrap().push((addr, transport));
            Err(ProbeFailure::new(
                FailureKind::Blocked,
                format!("{addr} is not allowed"),
            ))
        }
    }

    fn spec(prober: &str, yaml: &str) -> ProbeSpec {
        let base = Path::new(".");
        macro_rules! build {
            ($m:ident, $v:ident) => {
                ProbeSpec::$v(
                    $m::Spec::build(&serde_norway::from_str(yaml).unwrap(), base).unwrap(),
                )
            };
        }
        match prober {
            "tcp" => build!(tcp, Tcp),
            "http" => build!(http, Http),
            "grpc" => build!(grpc, Grpc),
            "redis" => build!(redis, Redis),
            "postgres" => build!(postgres, Postgres),
            "mqtt" => build!(mqtt, Mqtt),
            "dns" => build!(dns, Dns),
            "icmp" => build!(icmp, Icmp),
            _ => unreachable!("{prober}"),
        }
    }

    /// Runs `spec` against `target` under `policy`; returns why it failed.
    async fn probe_under(spec: &ProbeSpec, target: String, policy: &RefuseAll) -> ProbeFailure {
        let resolver = Resolver::system();
        let mut report = Report::new();
        let mut cx = ProbeContext {
            deadline: Instant::now() + Duration::from_secs(5),
            resolver: &resolver,
            dial_policy: policy,
            report: &mut report,
            addressing: Addressing::One,
        };
        let req = ProbeRequest {
            target,
            hostname: None,
        };
        spec.probe(&req, &mut cx).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_refused_address_is_never_dialled() {
        // A real listener: had any prober connected, the connection would wait in its backlog.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let cases = [
            ("tcp", "{}", addr.to_string()),
            ("tcp", "{tls: true}", addr.to_string()),
            ("http", "{}", format!("http://{addr}/")),
            ("http", "{}", format!("https://{addr}/")),
            ("grpc", "{}", addr.to_string()),
            ("redis", "{}", addr.to_string()),
            ("postgres", "{user: probe}", addr.to_string()),
            ("mqtt", "{}", addr.to_string()),
            (
                "dns",
                "{query_name: example.org, transport_protocol: tcp}",
                addr.to_string(),
            ),
        ];
        for (prober, yaml, target) in cases {
            let policy = RefuseAll::default();
            let failure = probe_under(&spec(prober, yaml), target, &policy).await;
            assert_eq!(failure.kind, FailureKind::Blocked, "{prober}: {failure}");
            assert_eq!(failure.message, format!("{addr} is not allowed"));
            assert_eq!(
                *policy.0.lock().unwrap(),
                [(addr, Transport::Tcp)],
                "{prober}"
            );
            let accepted = listener.accept();
            assert!(
                matches!(&accepted, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
                "{prober} reached the listener: {accepted:?}"
            );
        }
    }

    #[tokio::test]
    // The test's own loopback server, not a probe's socket.
    #[allow(clippy::disallowed_methods)]
    async fn a_refused_datagram_is_never_sent() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let addr = server.local_addr().unwrap();
        let policy = RefuseAll::default();
        let dns = spec("dns", "{query_name: example.org}");
        let failure = probe_under(&dns, addr.to_string(), &policy).await;
        assert_eq!(failure.kind, FailureKind::Blocked, "{failure}");
        assert_eq!(*policy.0.lock().unwrap(), [(addr, Transport::Udp)]);
        let mut buf = [0u8; 512];
        let got = server.recv(&mut buf);
        assert!(
            matches!(&got, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "a datagram arrived: {got:?}"
        );

        let policy = RefuseAll::default();
        let failure = probe_under(&spec("icmp", "{}"), "127.0.0.1".into(), &policy).await;
        assert_eq!(failure.kind, FailureKind::Blocked, "{failure}");
        let peer = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0);
        assert_eq!(*policy.0.lock().unwrap(), [(peer, Transport::Icmp)]);
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("example.org:25").unwrap(),
            ("example.org".into(), 25)
        );
        assert_eq!(split_host_port("[::1]:53").unwrap(), ("::1".into(), 53));
        assert!(split_host_port("example.org").is_err());
        assert!(split_host_port("::1:53").is_err());
        assert_eq!(
            split_host_default_port("example.org", 53).unwrap(),
            ("example.org".into(), 53)
        );
        assert_eq!(
            split_host_default_port("::1", 53).unwrap(),
            ("::1".into(), 53)
        );
        assert_eq!(
            split_host_default_port("[::1]", 853).unwrap(),
            ("::1".into(), 853)
        );
        assert_eq!(
            split_host_default_port("127.0.0.1:5353", 53).unwrap(),
            ("127.0.0.1".into(), 5353)
        );
    }
}
