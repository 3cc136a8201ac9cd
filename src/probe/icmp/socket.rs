//! One probe's ICMP socket: an unprivileged datagram socket where the kernel allows one, else a
//! raw socket; its options (hop limit, don't-fragment, source address, receiving the reply's hop
//! limit) and non-blocking send and receive on tokio's reactor.
//!
//! `nix` gives safe `recvmsg` with parsed control messages (the reply's TTL or hop limit) and
//! the `IP_RECVTTL`/`IPV6_RECVHOPLIMIT` options; `rustix` gives `IP_MTU_DISCOVER`, which sets the
//! don't-fragment bit on either kind of socket, so the crate stays free of `unsafe`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrStorage, sockopt,
};
use tokio::io::unix::AsyncFd;
use tracing::debug;

/// How the socket talks ICMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SOCK_DGRAM`/`IPPROTO_ICMP` (Linux "ping" sockets), allowed for the groups in the sysctl
    /// `net.ipv4.ping_group_range`. The kernel sets the identifier and delivers each socket
    /// only its own replies, without the IP header.
    Datagram,
    /// `SOCK_RAW`, which needs `CAP_NET_RAW`. Every raw ICMP socket receives a copy of every
    /// ICMP message; IPv4 ones arrive with their IP header.
    Raw,
}

impl Kind {
    /// The name used in log events.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Datagram => "datagram",
            Kind::Raw => "raw",
        }
    }
}

/// The options a probe asks for.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Bind to this address first.
    pub source: Option<IpAddr>,
    /// The TTL (IPv4) or unicast hop limit (IPv6) of the request.
    pub hop_limit: u8,
    /// Forbid fragmentation (IPv4 only; IPv6 routers never fragment).
    pub dont_fragment: bool,
}

/// Why the socket could not be made ready; the probe maps these to failures.
#[derive(Debug)]
pub enum OpenError {
    /// Neither socket kind may be opened: the datagram and the raw socket's errors.
    NotPermitted(Errno, Errno),
    /// Binding to the source address failed.
    Bind(IpAddr, Errno),
    /// An option could not be set: the option's name and the error.
    Option(&'static str, io::Error),
}

/// One datagram read from the socket.
#[derive(Debug)]
pub struct Received {
    /// How many bytes of the buffer were filled.
    pub len: usize,
    /// The message was longer than the buffer, so it cannot be a reply of the expected size.
    pub truncated: bool,
    /// The sender, if the kernel said.
    pub from: Option<IpAddr>,
    /// The TTL or hop limit of the received packet, when asked for and given.
    pub hop_limit: Option<u8>,
}

/// An open, configured ICMP socket registered with tokio's reactor.
#[derive(Debug)]
pub struct EchoSocket {
    fd: AsyncFd<OwnedFd>,
    kind: Kind,
    ipv4: bool,
}

impl EchoSocket {
    /// Opens a socket for echo requests to `peer`'s address family, trying a datagram socket
    /// first and a raw one second, and applies `opts`.
    pub fn open(peer: IpAddr, opts: Options) -> Result<EchoSocket, OpenError> {
        let ipv4 = peer.is_ipv4();
        let (family, protocol) = if ipv4 {
            (AddressFamily::Inet, SockProtocol::Icmp)
        } else {
            (AddressFamily::Inet6, SockProtocol::IcmpV6)
        };
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let (fd, kind) = match socket::socket(family, SockType::Datagram, flags, protocol) {
            Ok(fd) => (fd, Kind::Datagram),
            Err(datagram) => {
                debug!(err = %datagram, "Unable to open an unprivileged ICMP socket, trying a raw one");
                match socket::socket(family, SockType::Raw, flags, protocol) {
                    Ok(fd) => (fd, Kind::Raw),
                    Err(raw) => return Err(OpenError::NotPermitted(datagram, raw)),
                }
            }
        };
        debug!(kind = kind.as_str(), "Created socket");

        if let Some(source) = opts.source {
            let addr = SockaddrStorage::from(SocketAddr::new(source, 0));
            socket::bind(fd.as_raw_fd(), &addr).map_err(|e| OpenError::Bind(source, e))?;
            debug!(src_ip = %source, "Bound to source address");
        }

        let option = |name: &'static str| move |e: Errno| OpenError::Option(name, e.into());
        let hop_limit = i32::from(opts.hop_limit);
        let effective = if ipv4 {
            socket::setsockopt(&fd, sockopt::Ipv4Ttl, &hop_limit).map_err(option("ttl"))?;
            socket::getsockopt(&fd, sockopt::Ipv4Ttl).map_err(option("ttl"))?
        } else {
            socket::setsockopt(&fd, sockopt::Ipv6Ttl, &hop_limit).map_err(option("ttl"))?;
            socket::getsockopt(&fd, sockopt::Ipv6Ttl).map_err(option("ttl"))?
        };
        debug!(ttl = effective, "Set TTL");

        if ipv4 && opts.dont_fragment {
            use rustix::net::sockopt::{Ipv4PathMtuDiscovery, set_ip_mtu_discover};
            set_ip_mtu_discover(&fd, Ipv4PathMtuDiscovery::DO)
                .map_err(|e| OpenError::Option("dont_fragment", e.into()))?;
            debug!("Set the don't-fragment bit");
        }

        // Without these the reply's hop limit stays unknown and its family is left out, as
        // blackbox does when it cannot enable the control message.
        let recv = if ipv4 {
            socket::setsockopt(&fd, sockopt::Ipv4RecvTtl, &true)
        } else {
            socket::setsockopt(&fd, sockopt::Ipv6RecvHopLimit, &true)
        };
        if let Err(e) = recv {
            debug!(err = %e, "Cannot ask for the reply's hop limit; probe_icmp_reply_hop_limit will be missing");
        }

        Ok(EchoSocket {
            fd: register(fd)?,
            kind,
            ipv4,
        })
    }

    /// The kind of socket that was opened.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether received packets start with an IPv4 header (raw IPv4 sockets).
    pub fn includes_ip_header(&self) -> bool {
        self.kind == Kind::Raw && self.ipv4
    }

    /// The identifier the kernel gave a datagram socket (its local "port"), for the logs.
    pub fn kernel_id(&self) -> Option<u16> {
        let addr: SockaddrStorage = socket::getsockname(self.fd.as_raw_fd()).ok()?;
        addr.as_sockaddr_in()
            .map(|a| a.port())
            .or_else(|| addr.as_sockaddr_in6().map(|a| a.port()))
            .filter(|id| *id != 0)
    }

    /// Sends `msg` (an ICMP message) to `to`.
    pub async fn send(&self, msg: &[u8], to: IpAddr) -> io::Result<()> {
        let addr = SockaddrStorage::from(SocketAddr::new(to, 0));
        loop {
            let mut guard = self.fd.writable().await?;
            let sent = guard.try_io(|fd| {
                socket::sendto(fd.as_raw_fd(), msg, &addr, MsgFlags::empty())
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(result) => return result.map(drop),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one datagram into `buf` (never more than its length).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_now(fd.as_raw_fd(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Registers `fd` with tokio's reactor.
///
/// tokio 1.54 deprecated `AsyncFd::new` because a generic `AsRawFd` value may close or swap its
/// descriptor while registered; its replacement, `AsyncFd::register`, is `unsafe`, which this
/// crate forbids. An `OwnedFd` moved into the `AsyncFd` keeps its descriptor open and unchanged
/// until the `AsyncFd` drops, which is exactly `register`'s contract, so `new` is sound here.
#[allow(deprecated)]
fn register(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>, OpenError> {
    AsyncFd::new(fd).map_err(|e| OpenError::Option("registering with the reactor", e))
}

fn recv_now(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // Room for the one control message asked for, and one more should the kernel add any.
    let mut control = nix::cmsg_space!(i32, i32);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg =
        socket::recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut control), MsgFlags::empty())
            .map_err(io::Error::from)?;
    let from = msg.address.and_then(|a| {
        a.as_sockaddr_in()
            .map(|v4| IpAddr::V4(v4.ip()))
            .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
    });
    // A truncated control buffer only loses the hop limit; the message itself is still good.
    let hop_limit = msg.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|c| match c {
            ControlMessageOwned::Ipv4Ttl(v) | ControlMessageOwned::Ipv6HopLimit(v) => {
                u8::try_from(v).ok()
            }
            _ => None,
        })
    });
    Ok(Received {
        len: msg.bytes,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        from,
        hop_limit,
    })
}
