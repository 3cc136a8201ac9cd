//! The policy as tables: entry forms, address readings, ports and ranges, deny wins, the
//! metadata default; then every prober through the dial path's seam, with a policy that records
//! the real verdict and refuses everything, so no packet ever leaves for the addresses judged.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::probe::prober::{ProbeContext, ProbeRequest};
use crate::probe::report::Report;
use crate::probe::resolve::Resolver;
use crate::probe::{ProbeSpec, dns, grpc, http, icmp, mqtt, postgres, redis, tcp};

/// The policy of a `probe_access:` section in YAML; `None` is no section.
fn policy(yaml: Option<&str>) -> Policy {
    let section: Option<Section> = yaml.map(|y| serde_norway::from_str(y).unwrap());
    Policy::build(section.as_ref()).unwrap()
}

#[test]
fn entries_parse_in_every_form() {
    let check = |text: &str, net: &str, prefix: u8, ports: Option<(u16, u16)>| {
        let rule = Rule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            (rule.net, rule.prefix, rule.ports),
            (net.parse::<IpAddr>().unwrap(), prefix, ports),
            "{text}"
        );
        assert_eq!(rule.to_string(), text.trim());
    };
    check("10.0.0.0/8", "10.0.0.0", 8, None);
    check("192.168.1.0/24", "192.168.1.0", 24, None);
    check("10.0.0.5", "10.0.0.5", 32, None);
    check("10.0.0.5/32", "10.0.0.5", 32, None);
    check("0.0.0.0/0", "0.0.0.0", 0, None);
    check("127.0.0.1/32:8080", "127.0.0.1", 32, Some((8080, 8080)));
    check("127.0.0.1:8080", "127.0.0.1", 32, Some((8080, 8080)));
    check("10.0.0.0/8:443", "10.0.0.0", 8, Some((443, 443)));
    check("10.0.0.0/8:8000-8999", "10.0.0.0", 8, Some((8000, 8999)));
    check("10.0.0.0/8:1-65535", "10.0.0.0", 8, Some((1, 65535)));
    check(" 10.0.0.0/8 ", "10.0.0.0", 8, None);
    check("::1", "::1", 128, None);
    check("fd00::/8", "fd00::", 8, None);
    check("fd00::/8:443", "fd00::", 8, Some((443, 443)));
    check("[::1]:8080", "::1", 128, Some((8080, 8080)));
    check("[fd00::]/8:8000-8999", "fd00::", 8, Some((8000, 8999)));
    check("[fd00::]/8", "fd00::", 8, None);
    check("[::1]", "::1", 128, None);
    // Without brackets a last group is part of the address, never a port.
    check("::1:8080", "::1:8080", 128, None);
    // A mapped network is the IPv4 network, as mapped addresses are judged as IPv4.
    check("::ffff:10.0.0.0/104", "10.0.0.0", 8, None);
    check("[::ffff:127.0.0.1]:80", "127.0.0.1", 32, Some((80, 80)));
}

#[test]
fn bad_entries_say_what_is_wrong() {
    let check = |text: &str, want: &str| {
        let err = Rule::parse(text).unwrap_err();
        assert_eq!(
            err,
            format!("invalid probe_access entry {text:?}: {want}"),
            "{text}"
        );
    };
    check("10.0.0.0/33", "prefix length \"33\" is not 0 to 32");
    check("fd00::/129", "prefix length \"129\" is not 0 to 128");
    check("10.0.0.0/x", "prefix length \"x\" is not 0 to 32");
    check(
        "10.0.0.5/8",
        "10.0.0.5 has bits set beyond its /8 prefix (the network is 10.0.0.0/8)",
    );
    check("10.0.0.0/8:0", "port \"0\" is not 1 to 65535");
    check("10.0.0.0/8:65536", "port \"65536\" is not 1 to 65535");
    check("10.0.0.0/8:http", "port \"http\" is not 1 to 65535");
    check(
        "10.0.0.0/8:9000-8000",
        "port range \"9000-8000\" ends before it starts",
    );
    check("10.0.0.0/8:80-", "port \"\" is not 1 to 65535");
    check("example.org/32", "\"example.org\" is not an IP address");
    check("0x7f.1/32", "\"0x7f.1\" is not an IP address");
    check("[::1", "missing ']'");
    check("[::1]x", "unexpected \"x\" after ']'");
    for form in ["example.org", "", "10.0.0.0:8080:1", "10.0.0.0 8"] {
        check(
            form,
            "expected CIDR, CIDR:PORT or CIDR:LOW-HIGH, such as 10.0.0.0/8:443 \
             (an IPv6 address with a port goes in brackets: [::1]:443)",
        );
    }
}

#[test]
fn readings_normalise_what_the_network_would() {
    let check = |ip: &str, want: &[&str]| {
        let want: Vec<IpAddr> = want.iter().map(|w| w.parse().unwrap()).collect();
        assert_eq!(readings(ip.parse().unwrap()), want, "{ip}");
    };
    check("10.0.0.5", &["10.0.0.5"]);
    check("2001:db8::1", &["2001:db8::1"]);
    check("::1", &["::1"]);
    check("::ffff:10.0.0.5", &["10.0.0.5"]);
    check("::10.0.0.5", &["::10.0.0.5", "10.0.0.5"]);
    check("64:ff9b::10.0.0.5", &["64:ff9b::a00:5", "10.0.0.5"]);
    check("2002:a00:5::1", &["2002:a00:5::1", "10.0.0.5"]);
    check("0.0.0.0", &["0.0.0.0", "127.0.0.1"]);
    check("::", &["::", "::1"]);
    check("::ffff:0.0.0.0", &["0.0.0.0", "127.0.0.1"]);
}

/// Expects `policy` to answer `want` (`None`: allowed) for `addr` over `transport`.
#[track_caller]
fn expect(policy: &Policy, addr: &str, transport: Transport, want: Option<Reason>) {
    let sock: SocketAddr = addr.parse().unwrap();
    let got = policy.decide(sock, transport).err().map(|r| r.reason);
    assert_eq!(got, want, "{addr} over {transport:?}");
}

use Reason::{DefaultDeny, DenyRule, Metadata};
use Transport::{Icmp, Tcp, Udp};

#[test]
fn without_the_section_all_but_metadata_is_allowed() {
    let p = policy(None);
    for addr in [
        "127.0.0.1:80",
        "10.0.0.5:5432",
        "[::1]:80",
        "[2001:db8::1]:443",
        "169.254.169.253:53",
    ] {
        expect(&p, addr, Tcp, None);
    }
    for addr in [
        "169.254.169.254:80",
        "169.254.170.2:80",
        "169.254.170.23:80",
        "169.254.42.42:80",
        "100.100.100.200:80",
        "168.63.129.16:80",
        "192.0.0.192:80",
        "[fd00:ec2::254]:80",
        "[fd00:ec2::23]:80",
        "[fd20:ce::254]:80",
        "[fd00:42::42]:80",
        // The same addresses in the forms the network reads as them.
        "[::ffff:169.254.169.254]:80",
        "[::ffff:a9fe:a9fe]:80",
        "[::169.254.169.254]:80",
        "[64:ff9b::169.254.169.254]:80",
        "[64:ff9b::6464:64c8]:80",
        "[2002:a9fe:a9fe::1]:80",
    ] {
        expect(&p, addr, Tcp, Some(Metadata));
    }
    expect(&p, "169.254.169.254:53", Udp, Some(Metadata));
    expect(&p, "169.254.169.254:0", Icmp, Some(Metadata));
}

#[test]
fn the_metadata_switch_allows_them() {
    let p = policy(Some("{default: allow, allow_metadata: true}"));
    expect(&p, "169.254.169.254:80", Tcp, None);
    expect(&p, "[fd00:ec2::254]:80", Tcp, None);
    expect(&p, "[::ffff:100.100.100.200]:80", Tcp, None);
    // A deny entry still wins.
    let p = policy(Some(
        "{default: allow, allow_metadata: true, deny: [169.254.169.254]}",
    ));
    expect(&p, "169.254.169.254:80", Tcp, Some(DenyRule));
    expect(&p, "169.254.170.2:80", Tcp, None);
}

#[test]
fn an_allow_entry_does_not_open_metadata() {
    let p = policy(Some(
        "{default: deny, allow: [0.0.0.0/0, 169.254.0.0/16, '::/0']}",
    ));
    expect(&p, "169.254.1.1:80", Tcp, None);
    expect(&p, "169.254.169.254:80", Tcp, Some(Metadata));
    expect(&p, "[fd00:ec2::254]:80", Tcp, Some(Metadata));
    let p = policy(Some(
        "{default: deny, allow: [169.254.0.0/16], allow_metadata: true}",
    ));
    expect(&p, "169.254.169.254:80", Tcp, None);
}

#[test]
fn default_deny_allows_only_what_is_listed() {
    let p = policy(Some(
        "{default: deny, allow: ['127.0.0.1/32:8080', '10.0.0.0/8:443', 192.168.1.0/24, \
         '10.1.0.0/16:8000-8999', '[::1]:9090']}",
    ));
    for (addr, want) in [
        ("127.0.0.1:8080", None),
        ("127.0.0.1:8081", Some(DefaultDeny)),
        ("127.0.0.2:8080", Some(DefaultDeny)),
        ("10.200.3.4:443", None),
        ("10.200.3.4:80", Some(DefaultDeny)),
        ("11.0.0.1:443", Some(DefaultDeny)),
        ("192.168.1.7:22", None),
        ("192.168.1.255:1", None),
        ("192.168.2.1:22", Some(DefaultDeny)),
        ("10.1.2.3:7999", Some(DefaultDeny)),
        ("10.1.2.3:8000", None),
        ("10.1.2.3:8999", None),
        ("10.1.2.3:9000", Some(DefaultDeny)),
        ("[::1]:9090", None),
        ("[::1]:9091", Some(DefaultDeny)),
        // IPv4-mapped addresses are the IPv4 addresses they map.
        ("[::ffff:127.0.0.1]:8080", None),
        ("[::ffff:127.0.0.2]:8080", Some(DefaultDeny)),
        // NAT64 and 6to4 reach the embedded IPv4 address: allowed as it is.
        ("[64:ff9b::10.0.0.1]:443", None),
        ("[2002:c0a8:107::1]:22", None),
        // 0.0.0.0 connects to the host itself.
        ("0.0.0.0:8080", None),
        ("0.0.0.0:8081", Some(DefaultDeny)),
        ("[::1]:8080", Some(DefaultDeny)),
    ] {
        expect(&p, addr, Tcp, want);
    }
    expect(&p, "127.0.0.1:8080", Udp, None);
    // An entry with ports never covers ICMP, which has none; one without ports does.
    expect(&p, "127.0.0.1:0", Icmp, Some(DefaultDeny));
    expect(&p, "192.168.1.7:0", Icmp, None);
}

#[test]
fn deny_wins_over_allow_on_every_reading() {
    let p = policy(Some(
        "{default: deny, allow: [10.0.0.0/8, '127.0.0.0/8', '::/0'], \
         deny: [10.0.0.5/32, '127.0.0.1/32:6379', '127.0.0.1/32:5000-5999', '::1/128:22']}",
    ));
    for (addr, want) in [
        ("10.0.0.5:443", Some(DenyRule)),
        ("10.0.0.6:443", None),
        ("[::ffff:10.0.0.5]:443", Some(DenyRule)),
        ("[::10.0.0.5]:443", Some(DenyRule)),
        ("[64:ff9b::10.0.0.5]:443", Some(DenyRule)),
        ("[64:ff9b::a00:5]:443", Some(DenyRule)),
        ("[2002:a00:5::1]:443", Some(DenyRule)),
        ("127.0.0.1:6379", Some(DenyRule)),
        ("127.0.0.1:6380", None),
        ("127.0.0.2:6379", None),
        ("127.0.0.1:4999", None),
        ("127.0.0.1:5000", Some(DenyRule)),
        ("127.0.0.1:5999", Some(DenyRule)),
        ("127.0.0.1:6000", None),
        ("0.0.0.0:6379", Some(DenyRule)),
        ("[::ffff:0.0.0.0]:6379", Some(DenyRule)),
        ("[::1]:22", Some(DenyRule)),
        ("[::]:22", Some(DenyRule)),
        ("[::1]:23", None),
    ] {
        expect(&p, addr, Tcp, want);
    }
    let p = policy(Some("{default: allow, deny: [127.0.0.0/8]}"));
    expect(&p, "127.0.0.1:80", Tcp, Some(DenyRule));
    expect(&p, "127.255.255.254:80", Tcp, Some(DenyRule));
    expect(&p, "127.0.0.1:0", Icmp, Some(DenyRule));
    expect(&p, "127.0.0.1:53", Udp, Some(DenyRule));
    expect(&p, "0.0.0.0:80", Tcp, Some(DenyRule));
    expect(&p, "128.0.0.1:80", Tcp, None);
    expect(&p, "[::1]:80", Tcp, None);
}

#[test]
fn refusals_name_the_address_and_the_reason() {
    let p = policy(Some(
        "{default: deny, allow: [10.0.0.0/8], deny: ['10.0.0.5/32:443']}",
    ));
    let message = |addr: &str, transport| {
        p.decide(addr.parse().unwrap(), transport)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        message("10.0.0.5:443", Tcp),
        "10.0.0.5:443 is denied by entry \"10.0.0.5/32:443\""
    );
    assert_eq!(
        message("[64:ff9b::a00:5]:443", Tcp),
        "[64:ff9b::a00:5]:443 (read as 10.0.0.5) is denied by entry \"10.0.0.5/32:443\""
    );
    assert_eq!(
        message("192.0.2.1:53", Udp),
        "UDP to 192.0.2.1:53 is not covered by any allow entry and the default is deny"
    );
    assert_eq!(
        message("169.254.169.254:0", Icmp),
        "ICMP to 169.254.169.254 is a cloud metadata address \
         (probe_access.allow_metadata: true allows it)"
    );
}

#[test]
fn allow_entries_under_default_allow_are_an_error() {
    let section: Section = serde_norway::from_str("{default: allow, allow: [10.0.0.0/8]}").unwrap();
    let e = Policy::build(Some(&section)).unwrap_err();
    assert_eq!(e.path, "allow");
    assert!(e.message.contains("no effect under default: allow"), "{e}");
}

/// Asks the real policy, remembers its verdict, and refuses every address whatever the
/// verdict: the dial path's seam, so a wrong verdict still sends nothing.
#[derive(Debug)]
struct Recorder<'p> {
    policy: &'p Policy,
    seen: Mutex<Vec<(SocketAddr, Transport, Option<Reason>)>>,
}

impl DialPolicy for Recorder<'_> {
    fn check(&self, addr: SocketAddr, transport: Transport) -> Result<(), ProbeFailure> {
        let verdict = self.policy.decide(addr, transport).err().map(|r| r.reason);
        self.seen.lock().unwrap().push((addr, transport, verdict));
        Err(ProbeFailure::new(
            FailureKind::Blocked,
            "the recorder refuses",
        ))
    }
}

fn spec(prober: &str, yaml: &str) -> ProbeSpec {
    let base = Path::new(".");
    macro_rules! build {
        ($m:ident, $v:ident) => {
            ProbeSpec::$v($m::Spec::build(&serde_norway::from_str(yaml).unwrap(), base).unwrap())
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

/// Runs `prober` against `target` through the recorder over the default policy; returns what
/// the recorder was asked and the real policy's verdicts.
async fn dialled(
    prober: &str,
    yaml: &str,
    target: &str,
) -> Vec<(SocketAddr, Transport, Option<Reason>)> {
    let policy = Policy::default();
    let recorder = Recorder {
        policy: &policy,
        seen: Mutex::default(),
    };
    let resolver = Resolver::system();
    let mut report = Report::new();
    let mut cx = ProbeContext {
        deadline: Instant::now() + Duration::from_secs(5),
        resolver: &resolver,
        dial_policy: &recorder,
        report: &mut report,
        addressing: crate::probe::prober::Addressing::One,
    };
    let req = ProbeRequest {
        target: target.to_owned(),
        hostname: None,
    };
    let failure = spec(prober, yaml).probe(&req, &mut cx).await.unwrap_err();
    assert_eq!(
        failure.kind,
        FailureKind::Blocked,
        "{prober} {target}: {failure}"
    );
    recorder.seen.into_inner().unwrap()
}

#[tokio::test]
async fn every_prober_asks_about_metadata_addresses_and_they_are_refused() {
    let imds = "169.254.169.254".parse::<IpAddr>().unwrap();
    let at = |port| SocketAddr::new(imds, port);
    let cases: &[(&str, &str, &str, SocketAddr, Transport)] = &[
        (
            "http",
            "{}",
            "http://169.254.169.254/latest/meta-data/",
            at(80),
            Tcp,
        ),
        ("http", "{}", "https://169.254.169.254/", at(443), Tcp),
        // URL parsing reads these spellings as the address, as resolve.rs does for the rest.
        ("http", "{}", "http://0xa9fea9fe/", at(80), Tcp),
        ("http", "{}", "http://2852039166/", at(80), Tcp),
        ("http", "{}", "http://0251.0376.0251.0376/", at(80), Tcp),
        ("http", "{}", "http://169.16689662/", at(80), Tcp),
        ("tcp", "{}", "169.254.169.254:80", at(80), Tcp),
        ("tcp", "{}", "2852039166:80", at(80), Tcp),
        ("tcp", "{}", "0xa9fea9fe:80", at(80), Tcp),
        ("tcp", "{}", "0251.0376.0251.0376:80", at(80), Tcp),
        ("tcp", "{}", "169.254.43518:80", at(80), Tcp),
        ("tcp", "{tls: true}", "169.254.169.254:443", at(443), Tcp),
        ("grpc", "{}", "169.254.169.254:80", at(80), Tcp),
        ("redis", "{}", "169.254.169.254", at(6379), Tcp),
        (
            "postgres",
            "{user: probe}",
            "169.254.169.254",
            at(5432),
            Tcp,
        ),
        ("mqtt", "{}", "169.254.169.254", at(1883), Tcp),
        (
            "dns",
            "{query_name: example.org}",
            "169.254.169.254",
            at(53),
            Udp,
        ),
        (
            "dns",
            "{query_name: example.org, transport_protocol: tcp}",
            "169.254.169.254",
            at(53),
            Tcp,
        ),
        ("icmp", "{}", "169.254.169.254", at(0), Icmp),
        ("icmp", "{}", "0xa9fea9fe", at(0), Icmp),
    ];
    for (prober, yaml, target, addr, transport) in cases {
        let seen = dialled(prober, yaml, target).await;
        assert_eq!(
            seen,
            [(*addr, *transport, Some(Metadata))],
            "{prober} {target}"
        );
    }
    // IPv6 and IPv4-in-IPv6 forms: the address dialled is the one written, and the policy
    // reads the metadata address in it.
    for target in [
        "[fd00:ec2::254]:80",
        "[::ffff:169.254.169.254]:80",
        "[64:ff9b::a9fe:a9fe]:80",
        "[fd00:ec2::254%eth0]:80",
    ] {
        let seen = dialled("tcp", "{}", target).await;
        assert_eq!(seen.len(), 1, "{target}: {seen:?}");
        assert_eq!(seen[0].2, Some(Metadata), "{target}: {seen:?}");
    }
    let seen = dialled("http", "{}", "http://[::ffff:a9fe:a9fe]/").await;
    assert_eq!(seen[0].2, Some(Metadata), "{seen:?}");
}

#[tokio::test]
async fn a_proxy_is_no_way_around_the_policy() {
    // The proxy itself is asked about (and refused by the recorder) before anything is sent.
    let http = "{proxy_url: 'http://127.0.0.1:3128'}";
    let seen = dialled("http", http, "http://169.254.169.254/").await;
    assert_eq!(
        seen,
        [("169.254.169.254:80".parse().unwrap(), Tcp, Some(Metadata))],
        "the address behind the proxy is judged first"
    );
}

#[tokio::test]
async fn the_gate_keeps_the_first_refusal() {
    let p = policy(Some("{default: deny, allow: ['127.0.0.1/32:9']}"));
    let gate = Gate::new(&p);
    assert!(gate.check("127.0.0.1:9".parse().unwrap(), Tcp).is_ok());
    assert!(gate.refusal().is_none());
    let failure = gate
        .check("127.0.0.1:10".parse().unwrap(), Tcp)
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Blocked);
    assert_eq!(
        failure.message,
        "refused by probe_access: 127.0.0.1:10 is not covered by any allow entry and the default is deny"
    );
    let _ = gate.check("169.254.169.254:80".parse().unwrap(), Tcp);
    let r = gate.refusal().unwrap();
    assert_eq!(
        (r.addr, r.reason),
        ("127.0.0.1:10".parse().unwrap(), DefaultDeny)
    );
}
