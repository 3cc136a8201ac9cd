//! `probe_access:`, which addresses a `/probe` request may make lookout reach.
//!
//! Anyone who can reach `/probe` can make an exporter dial anything it can reach: the cloud
//! metadata service, the database next to it, an admin port. The section limits that:
//!
//! ```yaml
//! probe_access:
//!   default: deny                 # allow | deny: what happens to an address no entry names
//!   allow: ["127.0.0.1/32:8080", "10.0.0.0/8:443", "192.168.1.0/24"]
//!   deny: ["10.0.0.5/32"]         # deny wins over allow
//!   allow_metadata: false         # cloud metadata addresses stay refused unless true
//! ```
//!
//! The [`Policy`] is a [`DialPolicy`]: `probe/net.rs` asks it about every address a probe is
//! about to dial, after resolution, so it judges the address actually used (a name cannot
//! resolve one way for a check and another way for the connection), on every redirect hop and
//! proxy, for every prober. Before judging, an address is read every way the network could read
//! it ([`readings`]): an IPv4-mapped IPv6 address is its IPv4 address, an IPv4-compatible, NAT64
//! or 6to4 address is also the IPv4 address it embeds, and the unspecified address is also the
//! loopback address Linux connects it to. Spellings such as `0x7f.1` never get this far as
//! text: `resolve::parse_ip_literal` reads them as the address they denote.
//!
//! Only `/probe` requests go through the policy; scheduled targets come from the config file
//! and are trusted. Without the section every address is allowed, as in blackbox_exporter,
//! except the cloud metadata addresses ([`METADATA`]), which need `allow_metadata: true`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::probe::net::{DialPolicy, Transport};
use crate::probe::prober::{FailureKind, ProbeFailure};
use crate::values::FieldError;

#[cfg(test)]
mod tests;

/// The `probe_access:` section as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// What happens to an address that no `allow` or `deny` entry covers: `allow` or `deny`.
    pub default: Verdict,
    /// Addresses `/probe` may reach under `default: deny`: `CIDR`, `CIDR:PORT` or
    /// `CIDR:LOW-HIGH` (a bare address is a /32 or /128).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Rule>,
    /// Addresses `/probe` may never reach, in the same forms; a deny entry wins over any allow
    /// entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Rule>,
    /// Lets `/probe` reach the cloud metadata addresses (169.254.169.254 and the like), which
    /// are refused otherwise, even under `default: allow` or an allow entry that covers them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_metadata: bool,
    /// Unix sockets `/probe` may reach under `default: deny` (`prober: unix`): absolute paths,
    /// or a directory ending in `/` for the sockets directly in it. Paths are compared after
    /// symbolic links and `..` are resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_unix: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `default: allow` or `default: deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Addresses no entry names are allowed.
    Allow,
    /// Only addresses an `allow` entry names are allowed.
    Deny,
}

/// The cloud metadata and host-agent addresses refused without `allow_metadata: true`: they
/// hand out credentials to whoever asks from inside the machine.
pub const METADATA: &[(IpAddr, &str)] = &[
    (
        v4(169, 254, 169, 254),
        "AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean and others",
    ),
    (v4(169, 254, 170, 2), "AWS ECS task metadata"),
    (v4(169, 254, 170, 23), "AWS EKS Pod Identity"),
    (v4(169, 254, 42, 42), "Scaleway"),
    (v4(100, 100, 100, 200), "Alibaba Cloud"),
    (v4(168, 63, 129, 16), "Azure WireServer"),
    (v4(192, 0, 0, 192), "Oracle Cloud Classic"),
    (v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]), "AWS (IPv6)"),
    (
        v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23]),
        "AWS EKS Pod Identity (IPv6)",
    ),
    (v6([0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254]), "GCP (IPv6)"),
    (v6([0xfd00, 0x42, 0, 0, 0, 0, 0, 0x42]), "Scaleway (IPv6)"),
];

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const fn v6(s: [u16; 8]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
    ))
}

/// One `allow` or `deny` entry: a network, and the ports it covers (all when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    net: IpAddr,
    prefix: u8,
    ports: Option<(u16, u16)>,
    text: String,
}

impl Rule {
    /// Parses an entry: `CIDR`, `CIDR:PORT` or `CIDR:LOW-HIGH`; a bare address is one host.
    /// IPv6 with a port needs brackets or a prefix (`[::1]:8080`, `::1/128:8080`). An IPv4-mapped
    /// IPv6 network is stored as the IPv4 network, since mapped addresses are judged as IPv4.
    pub fn parse(s: &str) -> Result<Rule, String> {
        let bad = |why: String| format!("invalid probe_access entry {s:?}: {why}");
        let t = s.trim();
        let (addr, prefix, ports) = if let Some(rest) = t.strip_prefix('[') {
            let (addr, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("missing ']'".into()))?;
            let (prefix, ports) = match after.strip_prefix('/') {
                Some(p) => match p.split_once(':') {
                    Some((len, ports)) => (Some(len), Some(ports)),
                    None => (Some(p), None),
                },
                None if after.is_empty() => (None, None),
                None => match after.strip_prefix(':') {
                    Some(ports) => (None, Some(ports)),
                    None => return Err(bad(format!("unexpected {after:?} after ']'"))),
                },
            };
            (addr, prefix, ports)
        } else if let Some((addr, after)) = t.split_once('/') {
            match after.split_once(':') {
                Some((len, ports)) => (addr, Some(len), Some(ports)),
                None => (addr, Some(after), None),
            }
        } else if t.parse::<IpAddr>().is_ok() {
            (t, None, None)
        } else {
            match t.rsplit_once(':') {
                Some((addr, ports)) if addr.parse::<Ipv4Addr>().is_ok() => {
                    (addr, None, Some(ports))
                }
                _ => {
                    return Err(bad(
                        "expected CIDR, CIDR:PORT or CIDR:LOW-HIGH, such as 10.0.0.0/8:443 \
                         (an IPv6 address with a port goes in brackets: [::1]:443)"
                            .into(),
                    ));
                }
            }
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| bad(format!("{addr:?} is not an IP address")))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(bad(format!("prefix length {p:?} is not 0 to {max}"))),
            },
        };
        if masked(net, prefix) != net {
            return Err(bad(format!(
                "{net} has bits set beyond its /{prefix} prefix (the network is {}/{prefix})",
                masked(net, prefix)
            )));
        }
        let ports = match ports {
            None => None,
            Some(p) => Some(parse_ports(p).map_err(bad)?),
        };
        // A mapped network is the IPv4 network it maps, as the addresses it covers are judged.
        let (net, prefix) = match net {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(mapped) => (IpAddr::V4(mapped), prefix - 96),
                None => (net, prefix),
            },
            _ => (net, prefix),
        };
        Ok(Rule {
            net,
            prefix,
            ports,
            text: t.to_owned(),
        })
    }

    /// Whether the entry covers `ip` on `port`; an entry with ports never covers ICMP.
    fn covers(&self, ip: IpAddr, port: u16, transport: Transport) -> bool {
        let port_ok = match self.ports {
            None => true,
            Some(_) if transport == Transport::Icmp => false,
            Some((low, high)) => (low..=high).contains(&port),
        };
        port_ok && ip.is_ipv4() == self.net.is_ipv4() && masked(ip, self.prefix) == self.net
    }
}

fn parse_ports(p: &str) -> Result<(u16, u16), String> {
    let port = |s: &str| match s.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("port {s:?} is not 1 to 65535")),
    };
    match p.split_once('-') {
        None => port(p).map(|n| (n, n)),
        Some((low, high)) => {
            let (low, high) = (port(low)?, port(high)?);
            if low > high {
                return Err(format!("port range {p:?} ends before it starts"));
            }
            Ok((low, high))
        }
    }
}

/// `ip` with every bit past `prefix` cleared.
fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Rule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CIDR such as 10.0.0.0/8, 10.0.0.0/8:443 or 10.0.0.0/8:8000-8999")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Rule, E> {
                Rule::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Every way the network may read `ip`, the address itself first (IPv4 for an IPv4-mapped
/// address, which is IPv4 on the wire): plus the IPv4 address an IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address embeds, and the loopback address for
/// the unspecified address, which Linux connects to the host itself.
pub fn readings(ip: IpAddr) -> Vec<IpAddr> {
    let ip = ip.to_canonical();
    let mut out = Vec::with_capacity(3);
    out.push(ip);
    if let IpAddr::V6(a) = ip
        && let Some(embedded) = embedded_ipv4(a)
    {
        out.push(IpAddr::V4(embedded));
    }
    for i in 0..out.len() {
        let reading = out[i];
        match reading {
            IpAddr::V4(a) if a.is_unspecified() => out.push(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            IpAddr::V6(a) if a.is_unspecified() => out.push(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            _ => {}
        }
    }
    out
}

/// The IPv4 address an IPv6 address carries towards an IPv4 host: IPv4-compatible (deprecated,
/// but a kernel or a relay may still honour it), the NAT64 well-known prefix, 6to4.
fn embedded_ipv4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let low = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    let compatible = s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1);
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if compatible || nat64 {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    None
}

/// Why an address was refused, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A `deny` entry covers it.
    DenyRule,
    /// It is a cloud metadata address and `allow_metadata` is off.
    Metadata,
    /// No `allow` entry covers it and `default` is `deny`.
    DefaultDeny,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 3] = [Reason::DefaultDeny, Reason::DenyRule, Reason::Metadata];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DenyRule => "deny_rule",
            Reason::Metadata => "metadata",
            Reason::DefaultDeny => "default_deny",
        }
    }
}

/// A refused address, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The address the probe was about to dial (port 0 for ICMP).
    pub addr: SocketAddr,
    /// The reading of the address that was refused, when it is not the address itself (the
    /// IPv4 address inside a NAT64 address, loopback for 0.0.0.0).
    pub reading: Option<IpAddr>,
    /// Why.
    pub reason: Reason,
    /// The deny entry that covers it, for `Reason::DenyRule`.
    pub rule: Option<String>,
    /// The transport, for the message.
    pub transport: Transport,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transport {
            Transport::Icmp => write!(f, "ICMP to {}", self.addr.ip())?,
            Transport::Udp => write!(f, "UDP to {}", self.addr)?,
            Transport::Tcp => write!(f, "{}", self.addr)?,
        }
        if let Some(r) = self.reading {
            write!(f, " (read as {r})")?;
        }
        match (self.reason, &self.rule) {
            (Reason::DenyRule, Some(rule)) => write!(f, " is denied by entry {rule:?}"),
            (Reason::DenyRule, None) => f.write_str(" is denied"),
            (Reason::Metadata, _) => f.write_str(
                " is a cloud metadata address (probe_access.allow_metadata: true allows it)",
            ),
            (Reason::DefaultDeny, _) => {
                f.write_str(" is not covered by any allow entry and the default is deny")
            }
        }
    }
}

/// The validated section: what `/probe` probes may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    default: Verdict,
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    allow_metadata: bool,
    allow_unix: Vec<String>,
}

/// Without the section: everything but the metadata addresses, as blackbox_exporter allows
/// everything.
impl Default for Policy {
    fn default() -> Self {
        Policy {
            default: Verdict::Allow,
            allow: Vec::new(),
            deny: Vec::new(),
            allow_metadata: false,
            allow_unix: Vec::new(),
        }
    }
}

impl Policy {
    /// Validates the section (`None`: not written, the default policy). Allow entries under
    /// `default: allow` are an error: deny wins, so they could never change an answer, and a
    /// reader would take them for a restriction.
    pub fn build(section: Option<&Section>) -> Result<Policy, FieldError> {
        let Some(s) = section else {
            return Ok(Policy::default());
        };
        if s.default == Verdict::Allow && !s.allow.is_empty() {
            return Err(FieldError::new(
                "allow",
                "allow entries have no effect under default: allow (deny entries win over \
                 them); use default: deny to allow only the listed addresses",
            ));
        }
        if s.default == Verdict::Allow && !s.allow_unix.is_empty() {
            return Err(FieldError::new(
                "allow_unix",
                "allow_unix entries have no effect under default: allow (every unix socket is \
                 allowed); use default: deny to allow only the listed sockets",
            ));
        }
        for (i, p) in s.allow_unix.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(FieldError::new(
                    format!("allow_unix[{i}]"),
                    format!("{p:?} is not an absolute path"),
                ));
            }
        }
        Ok(Policy {
            default: s.default,
            allow: s.allow.clone(),
            deny: s.deny.clone(),
            allow_metadata: s.allow_metadata,
            allow_unix: s.allow_unix.clone(),
        })
    }

    /// Judges the unix socket at `path` (already resolved: no symbolic link, no `..`): allowed
    /// under `default: allow`, else when an `allow_unix` entry names it or its directory.
    pub fn decide_unix(&self, path: &std::path::Path) -> Result<(), String> {
        if self.default == Verdict::Allow {
            return Ok(());
        }
        let covered = self
            .allow_unix
            .iter()
            .any(|entry| match entry.strip_suffix('/') {
                Some(dir) => {
                    path.parent()
                        == Some(std::path::Path::new(if dir.is_empty() { "/" } else { dir }))
                }
                None => path == std::path::Path::new(entry),
            });
        if covered {
            Ok(())
        } else {
            Err(format!(
                "unix socket {} is not covered by any allow_unix entry and the default is deny",
                path.display()
            ))
        }
    }

    /// Judges `addr` for `transport`: refused when any reading of it is covered by a deny
    /// entry or is a metadata address (unless allowed); else allowed when any reading is
    /// covered by an allow entry; else the default.
    pub fn decide(&self, addr: SocketAddr, transport: Transport) -> Result<(), Refusal> {
        let port = addr.port();
        let readings = readings(addr.ip());
        let refusal = |reading: IpAddr, reason: Reason, rule: Option<&Rule>| Refusal {
            addr,
            reading: (reading != addr.ip()).then_some(reading),
            reason,
            rule: rule.map(|r| r.text.clone()),
            transport,
        };
        for &ip in &readings {
            if let Some(rule) = self.deny.iter().find(|r| r.covers(ip, port, transport)) {
                return Err(refusal(ip, Reason::DenyRule, Some(rule)));
            }
            if !self.allow_metadata && METADATA.iter().any(|(m, _)| *m == ip) {
                return Err(refusal(ip, Reason::Metadata, None));
            }
        }
        let allowed = readings
            .iter()
            .any(|&ip| self.allow.iter().any(|r| r.covers(ip, port, transport)));
        match (allowed, self.default) {
            (true, _) | (false, Verdict::Allow) => Ok(()),
            (false, Verdict::Deny) => Err(refusal(readings[0], Reason::DefaultDeny, None)),
        }
    }
}

/// Refuses with `FailureKind::Blocked`, naming the address and the reason.
fn blocked(refusal: &Refusal) -> ProbeFailure {
    ProbeFailure::new(
        FailureKind::Blocked,
        format!("refused by probe_access: {refusal}"),
    )
}

impl DialPolicy for Policy {
    fn check(&self, addr: SocketAddr, transport: Transport) -> Result<(), ProbeFailure> {
        self.decide(addr, transport).map_err(|r| blocked(&r))
    }

    fn check_unix(&self, path: &std::path::Path) -> Result<(), ProbeFailure> {
        self.decide_unix(path).map_err(|m| {
            ProbeFailure::new(
                FailureKind::Blocked,
                format!("refused by probe_access: {m}"),
            )
        })
    }
}

/// The policy of one `/probe` request: asks the `Policy` and keeps the first refusal, so the
/// request can answer with its reason whatever the prober made of the failure.
#[derive(Debug)]
pub struct Gate<'p> {
    policy: &'p Policy,
    refusal: OnceLock<Refusal>,
    unix_refusal: OnceLock<String>,
}

impl<'p> Gate<'p> {
    /// A gate for one request under `policy`.
    pub fn new(policy: &'p Policy) -> Gate<'p> {
        Gate {
            policy,
            refusal: OnceLock::new(),
            unix_refusal: OnceLock::new(),
        }
    }

    /// The first refusal, if any address was refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.get()
    }

    /// Why a unix socket was refused, if one was.
    pub fn unix_refusal(&self) -> Option<&str> {
        self.unix_refusal.get().map(String::as_str)
    }
}

impl DialPolicy for Gate<'_> {
    fn check(&self, addr: SocketAddr, transport: Transport) -> Result<(), ProbeFailure> {
        self.policy.decide(addr, transport).map_err(|r| {
            tracing::debug!(addr = %addr, reason = r.reason.as_str(), "Address refused by probe_access");
            let failure = blocked(&r);
            let _ = self.refusal.set(r);
            failure
        })
    }

    fn check_unix(&self, path: &std::path::Path) -> Result<(), ProbeFailure> {
        self.policy.decide_unix(path).map_err(|m| {
            let failure = ProbeFailure::new(
                FailureKind::Blocked,
                format!("refused by probe_access: {m}"),
            );
            let _ = self.unix_refusal.set(m);
            failure
        })
    }
}
