//! The only path from a target name to an IP address, with blackbox's protocol preference,
//! fallback, lookup-time and address-hash metrics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::debug;

use crate::probe::hosts::HostsFile;
use crate::probe::prober::{FailureKind, ProbeFailure};
use crate::probe::report::{Family, Report};
use crate::probe::tls;
use crate::values::FieldError;

/// `probe_dns_lookup_time_seconds`.
pub static PROBE_DNS_LOOKUP_TIME_SECONDS: Family = Family::gauge(
    "probe_dns_lookup_time_seconds",
    "Returns the time taken for probe dns lookup in seconds",
);
/// `probe_ip_protocol`.
pub static PROBE_IP_PROTOCOL: Family = Family::gauge(
    "probe_ip_protocol",
    "Specifies whether probe ip protocol is IP4 or IP6",
);
/// `probe_ip_addr_hash`.
pub static PROBE_IP_ADDR_HASH: Family = Family::gauge(
    "probe_ip_addr_hash",
    "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
);

/// An IP protocol, as `preferred_ip_protocol` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
pub enum IpProtocol {
    /// IPv4.
    #[serde(rename = "ip4")]
    Ip4,
    /// IPv6 (blackbox's default).
    #[serde(rename = "ip6")]
    #[default]
    Ip6,
}

/// Which addresses a prober may use: blackbox's `preferred_ip_protocol` and
/// `ip_protocol_fallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPreference {
    /// The protocol tried first.
    pub preferred: IpProtocol,
    /// Whether the other protocol may be used when the preferred one has no address.
    pub fallback: bool,
}

impl IpPreference {
    /// From a section's `preferred_ip_protocol` and `ip_protocol_fallback` (blackbox's defaults:
    /// ip6, with fallback).
    pub fn from_config(preferred: Option<IpProtocol>, fallback: Option<bool>) -> IpPreference {
        IpPreference {
            preferred: preferred.unwrap_or_default(),
            fallback: fallback.unwrap_or(true),
        }
    }
}

impl Default for IpPreference {
    fn default() -> Self {
        IpPreference {
            preferred: IpProtocol::Ip6,
            fallback: true,
        }
    }
}

/// Resolves target names as Go's resolver does: the hosts file first (a name it lists gets its
/// addresses alone), then DNS. DNS answers are not cached between probes, as blackbox (Go's
/// resolver) does not cache either: every probe measures a real lookup.
#[derive(Clone)]
pub struct Resolver {
    hosts: Arc<HostsFile>,
    both: Option<TokioResolver>,
    v4: Option<TokioResolver>,
    v6: Option<TokioResolver>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("system", &self.both.is_some())
            .finish()
    }
}

/// Where a resolver sends its queries.
#[derive(Clone)]
enum Servers {
    /// `/etc/resolv.conf`.
    System,
    /// None: only the hosts file and IP literals resolve.
    None,
    /// One server, over UDP and TCP.
    One(SocketAddr),
    /// A module's `dns_server`: one server over the transport it names, with the TLS
    /// configuration of DNS over TLS and HTTPS.
    Module(Box<(NameServerConfig, Option<rustls::ClientConfig>)>),
}

fn build(strategy: LookupIpStrategy, servers: &Servers) -> Option<TokioResolver> {
    let config = |name_servers| {
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], name_servers),
            TokioRuntimeProvider::default(),
        )
    };
    let mut builder = match (servers, TokioResolver::builder_tokio()) {
        (Servers::System, Ok(b)) => b,
        // Without /etc/resolv.conf only the hosts file and IP literals resolve; never fall back
        // to a public resolver.
        (Servers::System | Servers::None, _) => config(vec![]),
        (Servers::One(addr), _) => {
            let connection = |mut c: ConnectionConfig| {
                c.port = addr.port();
                c
            };
            config(vec![NameServerConfig::new(
                addr.ip(),
                true,
                vec![
                    connection(ConnectionConfig::udp()),
                    connection(ConnectionConfig::tcp()),
                ],
            )])
        }
        (Servers::Module(server), _) => {
            let (server, tls) = &**server;
            let b = config(vec![server.clone()]);
            match tls {
                Some(tls) => b.with_tls_config(tls.clone()),
                None => b,
            }
        }
    };
    let opts = builder.options_mut();
    opts.ip_strategy = strategy;
    opts.cache_size = 0;
    // The hosts file is read by `HostsFile`, Go's way (hickory's merges per record type).
    opts.use_hosts_file = ResolveHosts::Never;
    match builder.build() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(err = %e, "cannot build the DNS resolver; only IP targets will resolve");
            None
        }
    }
}

/// How a module's `dns_server` is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DnsTransport {
    /// UDP, retried over TCP when the answer is truncated (port 53).
    #[default]
    Udp,
    /// TCP only (port 53).
    Tcp,
    /// DNS over TLS, RFC 7858 (port 853).
    Tls,
    /// DNS over HTTPS, RFC 8484, over HTTP/2 (port 443).
    Https,
}

impl DnsTransport {
    fn default_port(self) -> u16 {
        match self {
            DnsTransport::Udp | DnsTransport::Tcp => 53,
            DnsTransport::Tls => 853,
            DnsTransport::Https => 443,
        }
    }
}

/// A module's `dns_server:` as written (a lookout extension): the server that resolves the
/// names of that module's targets, proxies and redirects instead of `/etc/resolv.conf`'s.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsServerSection {
    /// `IP` or `IP:port` (`[IPv6]:port`); the port defaults by transport.
    #[serde(default)]
    pub address: String,
    /// `udp` (the default), `tcp`, `tls` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<DnsTransport>,
    /// `tls`/`https`: the name the server's certificate must carry (the address by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// `https`: the query path (`/dns-query` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `tls`/`https`: the CA and client certificate, as a prober's `tls_config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<tls::Section>,
}

/// `IP`, `IP:port` or `[IPv6]:port`.
fn server_address(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}

/// FNV-1a (32 bit) over the address bytes (4 for IPv4, 16 for IPv6): blackbox's `ipHash`, so the
/// values equal blackbox's.
pub fn ip_hash(ip: IpAddr) -> f64 {
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets().to_vec(),
        },
    };
    let mut h: u32 = 0x811c9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    f64::from(h)
}

/// `probe_ip_protocol` and `probe_ip_addr_hash` of the address chosen.
fn record_address(report: &mut Report, ip: IpAddr) {
    let proto = if protocol_of(ip) == IpProtocol::Ip4 {
        4.0
    } else {
        6.0
    };
    report.set(&PROBE_IP_PROTOCOL, proto);
    report.set(&PROBE_IP_ADDR_HASH, ip_hash(ip));
}

fn protocol_of(ip: IpAddr) -> IpProtocol {
    match ip {
        IpAddr::V4(_) => IpProtocol::Ip4,
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => IpProtocol::Ip4,
        IpAddr::V6(_) => IpProtocol::Ip6,
    }
}

impl Resolver {
    /// A resolver on the system configuration (`/etc/resolv.conf`, `/etc/hosts`).
    pub fn system() -> Resolver {
        Resolver::with_hosts(HostsFile::system())
    }

    /// A resolver on the system's DNS configuration with `hosts` as its hosts file.
    pub fn with_hosts(hosts: HostsFile) -> Resolver {
        let system = match TokioResolver::builder_tokio() {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(err = %e, "cannot read the system resolver configuration; only /etc/hosts names will resolve");
                false
            }
        };
        let servers = if system {
            Servers::System
        } else {
            Servers::None
        };
        Resolver::with(hosts, servers)
    }

    /// A resolver that asks only the DNS server at `server` (after the system's hosts file): for
    /// embedding lookout where the system configuration is not the one to use, and for tests,
    /// which run their own server on loopback.
    pub fn with_server(server: SocketAddr) -> Resolver {
        Resolver::with(HostsFile::system(), Servers::One(server))
    }

    /// The resolver of a module with `dns_server:`: the system's hosts file first, as Go's
    /// resolver with a custom dialer reads it, then only that server. Errors name the field
    /// within `dns_server`.
    pub fn for_module(section: &DnsServerSection, base: &Path) -> Result<Resolver, FieldError> {
        let transport = section.transport.unwrap_or_default();
        if section.address.is_empty() {
            return Err(FieldError::new(
                "address",
                "address must be set (IP or IP:port)",
            ));
        }
        let addr = server_address(&section.address, transport.default_port()).ok_or_else(|| {
            FieldError::new(
                "address",
                format!(
                    "{:?} is not an IP address or IP:port (a name would need a resolver of its own)",
                    section.address
                ),
            )
        })?;
        let encrypted = matches!(transport, DnsTransport::Tls | DnsTransport::Https);
        for (set, field) in [
            (section.server_name.is_some(), "server_name"),
            (section.tls_config.is_some(), "tls_config"),
        ] {
            if set && !encrypted {
                return Err(FieldError::new(
                    field,
                    format!("{field} applies only to transport tls or https"),
                ));
            }
        }
        if let Some(path) = &section.path {
            if transport != DnsTransport::Https {
                return Err(FieldError::new(
                    "path",
                    "path applies only to transport https",
                ));
            }
            if !path.starts_with('/') {
                return Err(FieldError::new(
                    "path",
                    format!("path {path:?} must start with /"),
                ));
            }
        }
        let name: Arc<str> = Arc::from(
            section
                .server_name
                .clone()
                .unwrap_or_else(|| addr.ip().to_string()),
        );
        if encrypted {
            rustls_pki_types::ServerName::try_from(name.to_string()).map_err(|e| {
                FieldError::new("server_name", format!("server_name {name:?}: {e}"))
            })?;
        }
        let mut connection = match transport {
            DnsTransport::Udp => ConnectionConfig::udp(),
            DnsTransport::Tcp => ConnectionConfig::tcp(),
            DnsTransport::Tls => ConnectionConfig::tls(name),
            DnsTransport::Https => {
                ConnectionConfig::https(name, section.path.as_deref().map(Arc::from))
            }
        };
        connection.port = addr.port();
        let mut connections = vec![connection];
        if transport == DnsTransport::Udp {
            // A truncated UDP answer is asked again over TCP, as every stub resolver does.
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            connections.push(tcp);
        }
        let tls = if encrypted {
            let spec = tls::Spec::build(&section.tls_config.clone().unwrap_or_default(), base)
                .map_err(|e| e.within("tls_config"))?;
            if let Some(reason) = &spec.unsupported {
                return Err(FieldError::new("tls_config", reason.clone()));
            }
            Some(spec.client_config())
        } else {
            None
        };
        let server = NameServerConfig::new(addr.ip(), true, connections);
        Ok(Resolver::with(
            HostsFile::system(),
            Servers::Module(Box::new((server, tls))),
        ))
    }

    fn with(hosts: HostsFile, servers: Servers) -> Resolver {
        Resolver {
            hosts: Arc::new(hosts),
            both: build(LookupIpStrategy::Ipv4AndIpv6, &servers),
            v4: build(LookupIpStrategy::Ipv4Only, &servers),
            v6: build(LookupIpStrategy::Ipv6Only, &servers),
        }
    }

    /// Resolves `host` the way blackbox's `chooseProtocol` does and records
    /// `probe_ip_protocol`, `probe_ip_addr_hash` and `probe_dns_lookup_time_seconds`. Returns the
    /// address and the lookup time (zero on failure, as blackbox reports it to the HTTP phases).
    pub async fn resolve(
        &self,
        host: &str,
        pref: IpPreference,
        report: &mut Report,
    ) -> Result<(IpAddr, Duration), ProbeFailure> {
        report.declare(&PROBE_IP_PROTOCOL);
        report.declare(&PROBE_DNS_LOOKUP_TIME_SECONDS);
        report.declare(&PROBE_IP_ADDR_HASH);
        debug!(target_host = host, ip_protocol = ?pref.preferred, "Resolving target address");
        let start = Instant::now();
        let result = self.lookup_all(host, pref).await;
        let elapsed = start.elapsed();
        report.add(&PROBE_DNS_LOOKUP_TIME_SECONDS, &[], elapsed.as_secs_f64());
        let ips = match result {
            Ok(ips) => ips,
            Err(e) => {
                return Err(ProbeFailure::new(
                    FailureKind::Resolve,
                    format!("resolving {host}: {e}"),
                ));
            }
        };
        let chosen = ips
            .iter()
            .copied()
            .find(|ip| protocol_of(*ip) == pref.preferred)
            .or_else(|| {
                if pref.fallback {
                    ips.first().copied()
                } else {
                    None
                }
            });
        match chosen {
            Some(ip) => {
                record_address(report, ip);
                debug!(ip = %ip, "Resolved target address");
                Ok((ip, elapsed))
            }
            None => Err(ProbeFailure::new(
                FailureKind::Resolve,
                format!(
                    "resolving {host}: no {:?} address and ip_protocol_fallback is off",
                    pref.preferred
                ),
            )),
        }
    }

    /// Records what `resolve` records, for an address `resolve_every` found in `lookup`: each
    /// of `every_address`'s passes reports the one lookup made for all of them.
    pub fn record_choice(report: &mut Report, ip: IpAddr, lookup: Duration) {
        report.declare(&PROBE_IP_PROTOCOL);
        report.declare(&PROBE_DNS_LOOKUP_TIME_SECONDS);
        report.declare(&PROBE_IP_ADDR_HASH);
        report.add(&PROBE_DNS_LOOKUP_TIME_SECONDS, &[], lookup.as_secs_f64());
        record_address(report, ip);
    }

    /// Every address of `host` the preference allows, for `every_address`: with
    /// `ip_protocol_fallback` (the default) those of both protocols, the preferred one's first;
    /// without it the preferred protocol's only. Duplicates are dropped, the resolver's order is
    /// kept otherwise. Records nothing; returns the lookup time with them.
    pub async fn resolve_every(
        &self,
        host: &str,
        pref: IpPreference,
    ) -> Result<(Vec<IpAddr>, Duration), ProbeFailure> {
        debug!(target_host = host, ip_protocol = ?pref.preferred, "Resolving every target address");
        let start = Instant::now();
        let mut ips = self.lookup_all(host, pref).await.map_err(|e| {
            ProbeFailure::new(FailureKind::Resolve, format!("resolving {host}: {e}"))
        })?;
        let elapsed = start.elapsed();
        let mut seen = std::collections::HashSet::new();
        ips.retain(|ip| seen.insert(*ip));
        ips.retain(|ip| pref.fallback || protocol_of(*ip) == pref.preferred);
        // Stable: the preferred protocol's addresses first, each protocol in the resolver's order.
        ips.sort_by_key(|ip| protocol_of(*ip) != pref.preferred);
        if ips.is_empty() {
            return Err(ProbeFailure::new(
                FailureKind::Resolve,
                format!(
                    "resolving {host}: no {:?} address and ip_protocol_fallback is off",
                    pref.preferred
                ),
            ));
        }
        Ok((ips, elapsed))
    }

    /// Resolves `host` with the same preference rules but records nothing: for redirect hops and
    /// proxies, which blackbox resolves inside its HTTP transport.
    pub async fn lookup(
        &self,
        host: &str,
        pref: IpPreference,
    ) -> Result<(IpAddr, Duration), ProbeFailure> {
        let start = Instant::now();
        let ips = self.lookup_all(host, pref).await.map_err(|e| {
            ProbeFailure::new(FailureKind::Resolve, format!("resolving {host}: {e}"))
        })?;
        ips.iter()
            .copied()
            .find(|ip| protocol_of(*ip) == pref.preferred)
            .or_else(|| {
                if pref.fallback {
                    ips.first().copied()
                } else {
                    None
                }
            })
            .map(|ip| (ip, start.elapsed()))
            .ok_or_else(|| {
                ProbeFailure::new(
                    FailureKind::Resolve,
                    format!("resolving {host}: no usable address"),
                )
            })
    }

    async fn lookup_all(&self, host: &str, pref: IpPreference) -> Result<Vec<IpAddr>, String> {
        if let Some(ip) = parse_ip_literal(host) {
            return Ok(vec![ip]);
        }
        if host.is_empty() {
            return Err("empty host name".to_owned());
        }
        if let Some(listed) = self.hosts.lookup(host) {
            // Go's "ip4"/"ip6" lookups filter the file's addresses and never ask DNS then.
            let ips: Vec<IpAddr> = listed
                .into_iter()
                .filter(|ip| pref.fallback || protocol_of(*ip) == pref.preferred)
                .collect();
            return if ips.is_empty() {
                Err("no suitable address found".to_owned())
            } else {
                Ok(ips)
            };
        }
        let resolver = match (pref.fallback, pref.preferred) {
            (true, _) => &self.both,
            (false, IpProtocol::Ip4) => &self.v4,
            (false, IpProtocol::Ip6) => &self.v6,
        };
        let Some(resolver) = resolver else {
            return Err("no DNS resolver is available".to_owned());
        };
        match resolver.lookup_ip(host).await {
            Ok(lookup) => {
                let ips: Vec<IpAddr> = lookup.iter().collect();
                if ips.is_empty() {
                    Err("no addresses".to_owned())
                } else {
                    Ok(ips)
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The address an IP literal in a target denotes, or `None` for a name. Besides the standard
/// forms (brackets allowed), it reads an IPv6 address with a zone (`fe80::1%eth0`, the zone
/// dropped: lookout dials no link-local address by interface) and every IPv4 spelling that
/// `inet_aton` and URL parsers accept — decimal `2130706433`, hex `0x7f000001`, octal
/// `0177.0.0.1`, short `127.1`, a trailing dot — so an address reaches the dial path (and its
/// `DialPolicy`) as the address it is, never as a name that some resolver reads differently.
/// The `url` crate already reads HTTP and gRPC targets this way; Go's resolver would look
/// these up as names instead.
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some((addr, zone)) = bare.split_once('%')
        && !zone.is_empty()
        && let Ok(v6) = addr.parse::<Ipv6Addr>()
    {
        return Some(IpAddr::V6(v6));
    }
    loose_ipv4(bare).map(IpAddr::V4)
}

/// An IPv4 address in `inet_aton`'s forms: one to four dot-separated parts, each decimal, hex
/// (`0x`) or octal (a leading `0`); the last part fills the bytes the others leave.
fn loose_ipv4(s: &str) -> Option<Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.split('.').count() > 4 {
        return None;
    }
    let parts = s.split('.').map(ipv4_part).collect::<Option<Vec<u64>>>()?;
    let (last, init) = parts.split_last()?;
    if init.iter().any(|&p| p > 255) || *last >= 1u64 << (8 * (5 - parts.len())) {
        return None;
    }
    let mut value = *last;
    for (i, p) in init.iter().enumerate() {
        value |= p << (24 - 8 * i);
    }
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn ipv4_part(p: &str) -> Option<u64> {
    let (digits, radix) = if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        // A bare "0x" is zero, as URL parsers read it.
        if hex.is_empty() {
            return Some(0);
        }
        (hex, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .filter(|&n| n <= u64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_are_read_in_every_spelling() {
        let check = |host: &str, want: Option<&str>| {
            let want = want.map(|w| w.parse::<IpAddr>().unwrap());
            assert_eq!(parse_ip_literal(host), want, "{host}");
        };
        for (host, want) in [
            ("127.0.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("0X7F000001", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0177.0000.0.01", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
            ("127.0.0.1.", "127.0.0.1"),
            ("2852039166", "169.254.169.254"),
            ("0xa9fea9fe", "169.254.169.254"),
            ("0251.0376.0251.0376", "169.254.169.254"),
            ("169.16689662", "169.254.169.254"),
            ("169.254.43518", "169.254.169.254"),
            ("1.2.65535", "1.2.255.255"),
            ("0", "0.0.0.0"),
            ("0x", "0.0.0.0"),
            ("[::1]", "::1"),
            ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
            ("[::ffff:169.254.169.254]", "::ffff:169.254.169.254"),
            ("fe80::1%eth0", "fe80::1"),
            ("[fd00:ec2::254%25eth0]", "fd00:ec2::254"),
        ] {
            check(host, Some(want));
        }
        for host in [
            "example.org",
            "localhost",
            "",
            ".",
            "1.2.3.4.5",
            "256.0.0.1",
            "1.256.0.1",
            "1.2.65536",
            "4294967296",
            "08.0.0.1",
            "0x1g",
            "1..2",
            "1.2.3.4:80",
            "::1%",
            "127.0.0.1%eth0",
            "99999999999999999999999",
        ] {
            check(host, None);
        }
    }

    #[test]
    fn ip_hash_is_fnv1a_over_the_address_bytes() {
        // Values of Go's hash/fnv New32a over To4() / To16(), as blackbox computes them.
        assert_eq!(ip_hash("127.0.0.1".parse().unwrap()), 3_668_918_509.0);
        assert_eq!(ip_hash("::1".parse().unwrap()), 1_751_717_746.0);
        assert_eq!(
            ip_hash("::ffff:127.0.0.1".parse().unwrap()),
            3_668_918_509.0
        );
    }

    #[tokio::test]
    async fn a_name_the_hosts_file_lists_gets_the_files_addresses_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(
            &path,
            "127.0.0.1 localhost v4only.test\n::1 v6only.test\n::1 both.test\n127.0.0.1 both.test\n",
        )
        .unwrap();
        let r = Resolver::with_hosts(HostsFile::new(&path));
        let pref = |preferred, fallback| IpPreference {
            preferred,
            fallback,
        };
        use IpProtocol::{Ip4, Ip6};
        // (name, preference, the address chosen, or None for a resolve failure)
        let cases: &[(&str, IpPreference, Option<&str>)] = &[
            // blackbox's default (ip6 preferred, fallback on) on a hosts file that maps
            // localhost to 127.0.0.1 only: 127.0.0.1, never a built-in ::1.
            ("localhost", pref(Ip6, true), Some("127.0.0.1")),
            ("localhost", pref(Ip6, false), None),
            ("LocalHost.", pref(Ip4, false), Some("127.0.0.1")),
            ("v4only.test", pref(Ip6, true), Some("127.0.0.1")),
            ("v6only.test", pref(Ip4, true), Some("::1")),
            ("v6only.test", pref(Ip4, false), None),
            ("both.test", pref(Ip4, true), Some("127.0.0.1")),
            ("both.test", pref(Ip6, true), Some("::1")),
        ];
        for (name, p, want) in cases {
            let mut report = Report::new();
            let got = r
                .resolve(name, *p, &mut report)
                .await
                .ok()
                .map(|(ip, _)| ip);
            assert_eq!(got, want.map(|w| w.parse().unwrap()), "{name} {p:?}");
        }
    }
}
