//! The ICMP prober against loopback, and against loopback inside network namespaces these tests
//! create themselves (to choose the socket kind, drop echo replies, shrink the MTU or withdraw
//! CAP_NET_RAW without touching the host). Namespace tests need root and `ip`; without them they
//! skip with a visible reason.

use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::lookout::Lookout;
use crate::support::samples::Samples;

const MODULES: &str = r#"
modules:
  icmp4:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
  icmp6:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip6
      ip_protocol_fallback: false
  icmp6_only_for_v4_target:
    prober: icmp
    icmp:
      preferred_ip_protocol: ip6
      ip_protocol_fallback: false
  ttl5:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
      ttl: 5
  ttl5_v6:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip6
      ttl: 5
  payload:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
      payload_size: 1000
  big:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
      payload_size: 3000
  big_df:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
      payload_size: 3000
      dont_fragment: true
  source_lo:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
      source_ip_address: 127.0.0.1
  source_absent:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
      source_ip_address: 192.0.2.1
  short:
    prober: icmp
    timeout: 1s
    icmp:
      preferred_ip_protocol: ip4
  short6:
    prober: icmp
    timeout: 1s
    icmp:
      preferred_ip_protocol: ip6
  five:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
      count: 5
      interval: 10ms
  six_any:
    prober: icmp
    timeout: 2s
    icmp:
      preferred_ip_protocol: ip4
      count: 6
      interval: 20ms
  six_loss_half:
    prober: icmp
    timeout: 2s
    icmp:
      preferred_ip_protocol: ip4
      count: 6
      interval: 20ms
      max_loss_ratio: 0.5
  six_loss_tenth:
    prober: icmp
    timeout: 2s
    icmp:
      preferred_ip_protocol: ip4
      count: 6
      interval: 20ms
      max_loss_ratio: 0.1
"#;

/// The families a probe with `count:` adds.
const ECHO_FAMILIES: [&str; 7] = [
    "probe_icmp_packets_sent",
    "probe_icmp_packets_received",
    "probe_icmp_packet_loss_ratio",
    "probe_icmp_rtt_min_seconds",
    "probe_icmp_rtt_avg_seconds",
    "probe_icmp_rtt_max_seconds",
    "probe_icmp_rtt_stddev_seconds",
];

/// Checks the RTT statistics of a probe with replies: ordered, and the rtt phase is the mean.
fn assert_rtt_stats(s: &Samples) {
    let min = s.get("probe_icmp_rtt_min_seconds").expect("min");
    let avg = s.get("probe_icmp_rtt_avg_seconds").expect("avg");
    let max = s.get("probe_icmp_rtt_max_seconds").expect("max");
    let stddev = s.get("probe_icmp_rtt_stddev_seconds").expect("stddev");
    assert!(0.0 < min && min <= avg && avg <= max, "{}", s.text);
    assert!(stddev >= 0.0 && stddev <= max - min, "{}", s.text);
    assert_eq!(
        s.get_with("probe_icmp_duration_seconds", &[("phase", "rtt")]),
        Some(avg),
        "{}",
        s.text
    );
}

const PHASES: [&str; 3] = ["resolve", "setup", "rtt"];

/// A sysctl's value in the current network namespace, if readable.
fn sysctl(path: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The hop limit a loopback echo reply carries: the replying kernel's default.
fn loopback_reply_hop_limit(v6: bool) -> f64 {
    let h = if v6 {
        sysctl("net/ipv6/conf/lo/hop_limit")
    } else {
        sysctl("net/ipv4/ip_default_ttl")
    };
    f64::from(h.unwrap_or(64))
}

/// Whether this process may open some ICMP socket (datagram or raw) for the family.
fn icmp_allowed(v6: bool) -> bool {
    use rustix::net::{AddressFamily, SocketType, ipproto, socket};
    let (family, proto) = if v6 {
        (AddressFamily::INET6, ipproto::ICMPV6)
    } else {
        (AddressFamily::INET, ipproto::ICMP)
    };
    socket(family, SocketType::DGRAM, Some(proto)).is_ok()
        || socket(family, SocketType::RAW, Some(proto)).is_ok()
}

/// Whether `::1` can be used here.
fn ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

fn assert_success(s: &Samples, protocol: f64, hop_limit: f64) {
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    for phase in PHASES {
        assert!(
            s.get_with("probe_icmp_duration_seconds", &[("phase", phase)])
                .is_some(),
            "no {phase} phase in:\n{}",
            s.text
        );
    }
    assert_eq!(s.value("probe_ip_protocol"), protocol, "{}", s.text);
    assert_eq!(
        s.value("probe_icmp_reply_hop_limit"),
        hop_limit,
        "{}",
        s.text
    );
    assert!(s.get("probe_ip_addr_hash").is_some(), "{}", s.text);
    assert!(
        s.get("probe_dns_lookup_time_seconds").is_some(),
        "{}",
        s.text
    );
}

/// A failed probe still shows the three phases blackbox registers up front, but no reply hop
/// limit, which blackbox registers only with a matching reply.
fn assert_failure(s: &Samples) {
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    for phase in PHASES {
        assert!(
            s.get_with("probe_icmp_duration_seconds", &[("phase", phase)])
                .is_some(),
            "no {phase} phase in:\n{}",
            s.text
        );
    }
    assert_eq!(s.get("probe_icmp_reply_hop_limit"), None, "{}", s.text);
}

#[tokio::test]
async fn icmp_ipv4_loopback_succeeds_with_phases_and_reply_hop_limit() {
    if !icmp_allowed(false) {
        eprintln!("SKIP: no ICMP socket may be opened here (ping_group_range, CAP_NET_RAW)");
        return;
    }
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("icmp4", "127.0.0.1").await;
    assert_success(&s, 4.0, loopback_reply_hop_limit(false));
    assert_eq!(
        s.helps["probe_icmp_duration_seconds"],
        "Duration of icmp request by phase"
    );
    assert_eq!(
        s.helps["probe_icmp_reply_hop_limit"],
        "Replied packet hop limit (TTL for ipv4)"
    );
    assert_eq!(
        s.series("probe_icmp_duration_seconds").len(),
        3,
        "{}",
        s.text
    );
}

#[tokio::test]
async fn icmp_ipv6_loopback_succeeds_with_phases_and_reply_hop_limit() {
    if !ipv6_loopback() {
        eprintln!("SKIP: IPv6 loopback ::1 is not available here");
        return;
    }
    if !icmp_allowed(true) {
        eprintln!("SKIP: no ICMPv6 socket may be opened here (ping_group_range, CAP_NET_RAW)");
        return;
    }
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("icmp6", "::1").await;
    assert_success(&s, 6.0, loopback_reply_hop_limit(true));
}

#[tokio::test]
async fn icmp_resolve_failure_keeps_the_up_front_phases() {
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("icmp6_only_for_v4_target", "127.0.0.1").await;
    assert_failure(&s);
    assert_eq!(
        s.get_with("probe_icmp_duration_seconds", &[("phase", "resolve")]),
        Some(0.0)
    );
    assert_eq!(s.value("probe_ip_protocol"), 0.0, "{}", s.text);
}

#[tokio::test]
async fn icmp_ttl_option_sets_the_request_hop_limit() {
    if !icmp_allowed(false) {
        eprintln!("SKIP: no ICMP socket may be opened here (ping_group_range, CAP_NET_RAW)");
        return;
    }
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("ttl5", "127.0.0.1").await;
    // The reply's hop limit is the replying kernel's choice, not ours.
    assert_success(&s, 4.0, loopback_reply_hop_limit(false));
    let debug = lk.debug("ttl5", "127.0.0.1").await;
    assert!(debug.contains("ttl=5"), "{debug}");
    let debug = lk.debug("icmp4", "127.0.0.1").await;
    assert!(debug.contains("ttl=64"), "{debug}");
    if ipv6_loopback() && icmp_allowed(true) {
        let debug = lk.debug("ttl5_v6", "::1").await;
        assert!(debug.contains("ttl=5"), "{debug}");
        assert!(debug.contains("probe_success 1"), "{debug}");
    } else {
        eprintln!("SKIP (IPv6 part): ::1 or ICMPv6 sockets are not available here");
    }
}

#[tokio::test]
async fn icmp_payload_size_is_sent_and_echoed() {
    if !icmp_allowed(false) {
        eprintln!("SKIP: no ICMP socket may be opened here (ping_group_range, CAP_NET_RAW)");
        return;
    }
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("payload", "127.0.0.1").await;
    assert_success(&s, 4.0, loopback_reply_hop_limit(false));
    let debug = lk.debug("payload", "127.0.0.1").await;
    assert!(debug.contains("payload_size=1000"), "{debug}");
    let debug = lk.debug("icmp4", "127.0.0.1").await;
    assert!(debug.contains("payload_size=28"), "{debug}");
}

#[tokio::test]
async fn icmp_source_ip_address_binds_the_socket() {
    if !icmp_allowed(false) {
        eprintln!("SKIP: no ICMP socket may be opened here (ping_group_range, CAP_NET_RAW)");
        return;
    }
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("source_lo", "127.0.0.1").await;
    assert_success(&s, 4.0, loopback_reply_hop_limit(false));
    // 192.0.2.1 (TEST-NET-1) is on no interface, so binding to it fails before anything is sent.
    let s = lk.probe("source_absent", "127.0.0.1").await;
    assert_failure(&s);
    let debug = lk.debug("source_absent", "127.0.0.1").await;
    assert!(debug.contains("192.0.2.1"), "{debug}");
}

#[tokio::test]
async fn icmp_concurrent_probes_each_get_their_own_reply() {
    if !icmp_allowed(false) {
        eprintln!("SKIP: no ICMP socket may be opened here (ping_group_range, CAP_NET_RAW)");
        return;
    }
    let lk = Lookout::start(MODULES).await;
    let mut targets = vec![("icmp4", "127.0.0.1"); 16];
    if ipv6_loopback() && icmp_allowed(true) {
        targets.extend([("icmp6", "::1"); 8]);
    }
    let probes = targets.iter().map(|(m, t)| lk.probe(m, t));
    for s in futures_util::future::join_all(probes).await {
        assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
        assert!(s.get("probe_icmp_reply_hop_limit").is_some(), "{}", s.text);
    }
}

// ---- Inside network namespaces made by the tests ----

#[tokio::test]
async fn icmp_count_sends_several_echoes_and_reports_loss_and_rtt_statistics() {
    if !icmp_allowed(false) {
        eprintln!("SKIP: no ICMP socket may be opened here (ping_group_range, CAP_NET_RAW)");
        return;
    }
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("five", "127.0.0.1").await;
    assert_eq!(s.get("probe_success"), Some(1.0), "{}", s.text);
    assert_eq!(s.get("probe_icmp_packets_sent"), Some(5.0), "{}", s.text);
    assert_eq!(
        s.get("probe_icmp_packets_received"),
        Some(5.0),
        "{}",
        s.text
    );
    assert_eq!(
        s.get("probe_icmp_packet_loss_ratio"),
        Some(0.0),
        "{}",
        s.text
    );
    assert_rtt_stats(&s);
    assert_eq!(
        s.get("probe_icmp_reply_hop_limit"),
        Some(loopback_reply_hop_limit(false))
    );
    // Without `count:` a module answers as blackbox does: none of the new families.
    let s = lk.probe("icmp4", "127.0.0.1").await;
    for family in ECHO_FAMILIES {
        assert!(s.series(family).is_empty(), "{family}: {}", s.text);
    }
}

/// A network namespace that exists until dropped, with `lo` up.
struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and writes `sysctls` (paths under /proc/sys) inside it; `Err` says
    /// why that is impossible here.
    fn create(sysctls: &[(&str, &str)]) -> Result<Netns, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "lookout-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name])?;
        // From here on the namespace exists, so the guard removes it whatever fails next.
        let ns = Netns { name };
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
        for (path, value) in sysctls {
            ns.exec_sh(&format!("echo '{value}' > /proc/sys/{path}"))?;
        }
        Ok(ns)
    }

    fn exec_sh(&self, script: &str) -> Result<(), String> {
        run(&["ip", "netns", "exec", &self.name, "sh", "-c", script])
    }

    /// Runs `f` (which starts its own lookout) on a thread that has entered this namespace, on a
    /// current-thread runtime so every socket lookout opens is opened inside it. With
    /// `without_net_raw`, that thread also gives up CAP_NET_RAW first.
    fn run<F, Fut, T>(&self, without_net_raw: bool, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use rustix::thread::{
                CapabilitySet, LinkNameSpaceType, capabilities, move_into_link_name_space,
                set_capabilities,
            };
            use std::os::fd::AsFd;
            let file = std::fs::File::open(&path).expect("open the namespace");
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
                .expect("enter the namespace");
            if without_net_raw {
                // Capabilities belong to the thread, so only this thread loses CAP_NET_RAW.
                let mut caps = capabilities(None).expect("read capabilities");
                caps.effective.remove(CapabilitySet::NET_RAW);
                caps.permitted.remove(CapabilitySet::NET_RAW);
                set_capabilities(None, caps).expect("drop CAP_NET_RAW");
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(60), f())
                    .await
                    .expect("namespace test finished within 60s")
            })
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run(&["ip", "netns", "del", &self.name]) {
            eprintln!("could not remove network namespace {}: {e}", self.name);
        }
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} exited {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `Netns::create`, or a visible skip.
fn netns_or_skip(test: &str, sysctls: &[(&str, &str)]) -> Option<Netns> {
    match Netns::create(sysctls) {
        Ok(ns) => Some(ns),
        Err(e) => {
            eprintln!("SKIP {test}: cannot set up a network namespace (needs root and `ip`): {e}");
            None
        }
    }
}

const PING_GROUPS_NONE: (&str, &str) = ("net/ipv4/ping_group_range", "1 0");
const PING_GROUPS_ALL: (&str, &str) = ("net/ipv4/ping_group_range", "0 2147483647");

#[test]
fn icmp_uses_a_raw_socket_when_datagram_sockets_are_not_allowed() {
    let Some(ns) = netns_or_skip("raw socket", &[PING_GROUPS_NONE]) else {
        return;
    };
    ns.run(false, move || async move {
        let v6 = ipv6_loopback();
        let lk = Lookout::start(MODULES).await;
        let s = lk.probe("icmp4", "127.0.0.1").await;
        assert_success(&s, 4.0, 64.0);
        let debug = lk.debug("icmp4", "127.0.0.1").await;
        assert!(debug.contains("kind=raw"), "{debug}");
        if v6 {
            let s = lk.probe("icmp6", "::1").await;
            assert_success(&s, 6.0, 64.0);
        }
    });
}

#[test]
fn icmp_uses_a_datagram_socket_when_ping_group_range_allows_it() {
    let Some(ns) = netns_or_skip("datagram socket", &[PING_GROUPS_ALL]) else {
        return;
    };
    ns.run(false, move || async move {
        let v6 = ipv6_loopback();
        let lk = Lookout::start(MODULES).await;
        let s = lk.probe("icmp4", "127.0.0.1").await;
        assert_success(&s, 4.0, 64.0);
        let debug = lk.debug("icmp4", "127.0.0.1").await;
        assert!(debug.contains("kind=datagram"), "{debug}");
        if v6 {
            let s = lk.probe("icmp6", "::1").await;
            assert_success(&s, 6.0, 64.0);
            let debug = lk.debug("icmp6", "::1").await;
            assert!(debug.contains("kind=datagram"), "{debug}");
        }
        let probes = (0..16).map(|_| lk.probe("icmp4", "127.0.0.1"));
        for s in futures_util::future::join_all(probes).await {
            assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
        }
    });
}

#[test]
fn icmp_without_a_reply_fails_at_the_deadline() {
    let Some(ns) = netns_or_skip("no reply", &[("net/ipv4/icmp_echo_ignore_all", "1")]) else {
        return;
    };
    // Older kernels have no IPv6 switch; then only the IPv4 half runs.
    let v6_silenced = ns
        .exec_sh("echo 1 > /proc/sys/net/ipv6/icmp/echo_ignore_all")
        .map_err(|e| eprintln!("SKIP (IPv6 part): cannot silence ICMPv6 echo: {e}"))
        .is_ok();
    ns.run(false, move || async move {
        let v6 = v6_silenced && ipv6_loopback();
        let lk = Lookout::start(MODULES).await;
        let s = lk.probe("short", "127.0.0.1").await;
        assert_failure(&s);
        let debug = lk.debug("short", "127.0.0.1").await;
        assert!(debug.contains("no echo reply from 127.0.0.1"), "{debug}");
        if v6 {
            let s = lk.probe("short6", "::1").await;
            assert_failure(&s);
        }
    });
}

#[test]
fn icmp_dont_fragment_refuses_a_payload_larger_than_the_mtu() {
    let Some(ns) = netns_or_skip("dont_fragment", &[]) else {
        return;
    };
    if let Err(e) = run(&["ip", "-n", &ns.name, "link", "set", "lo", "mtu", "1500"]) {
        eprintln!("SKIP dont_fragment: cannot set the namespace's loopback MTU: {e}");
        return;
    }
    ns.run(false, move || async move {
        let lk = Lookout::start(MODULES).await;
        // 3000 bytes do not fit a 1500-byte MTU: fragmented, they arrive and come back…
        let s = lk.probe("big", "127.0.0.1").await;
        assert_success(&s, 4.0, 64.0);
        // …but with the don't-fragment bit the request cannot leave.
        let s = lk.probe("big_df", "127.0.0.1").await;
        assert_failure(&s);
        let debug = lk.debug("big_df", "127.0.0.1").await;
        assert!(debug.contains("sending the echo request"), "{debug}");
    });
}

#[test]
fn icmp_without_permission_names_the_sysctl_and_cap_net_raw() {
    let Some(ns) = netns_or_skip("no permission", &[PING_GROUPS_NONE]) else {
        return;
    };
    ns.run(true, move || async move {
        let lk = Lookout::start(MODULES).await;
        let s = lk.probe("icmp4", "127.0.0.1").await;
        assert_failure(&s);
        let debug = lk.debug("icmp4", "127.0.0.1").await;
        assert!(debug.contains("net.ipv4.ping_group_range"), "{debug}");
        assert!(debug.contains("CAP_NET_RAW"), "{debug}");
    });
}

#[test]
fn icmp_count_measures_loss_and_max_loss_ratio_decides_success() {
    let Some(ns) = netns_or_skip("packet loss", &[]) else {
        return;
    };
    // Every second echo reply is dropped on its way in: 3 of each 6 come back. The rule's
    // counter is the namespace's own, and nothing else in it sends echo replies.
    ns.exec_sh(
        "iptables -A INPUT -p icmp --icmp-type echo-reply \
         -m statistic --mode nth --every 2 --packet 0 -j DROP",
    )
    .expect("iptables in the test's namespace (scripts/test installs the iptables package)");
    ns.run(false, move || async move {
        let lk = Lookout::start(MODULES).await;
        for (module, success) in [
            ("six_any", 1.0),
            ("six_loss_half", 1.0),
            ("six_loss_tenth", 0.0),
        ] {
            let s = lk.probe(module, "127.0.0.1").await;
            assert_eq!(
                s.get("probe_success"),
                Some(success),
                "{module}: {}",
                s.text
            );
            assert_eq!(s.get("probe_icmp_packets_sent"), Some(6.0), "{module}");
            assert_eq!(s.get("probe_icmp_packets_received"), Some(3.0), "{module}");
            assert_eq!(s.get("probe_icmp_packet_loss_ratio"), Some(0.5), "{module}");
            assert_rtt_stats(&s);
        }
        let debug = lk.debug("six_loss_tenth", "127.0.0.1").await;
        assert!(
            debug.contains("3 of 6 echo requests to 127.0.0.1 answered"),
            "{debug}"
        );
    });
}

#[test]
fn icmp_count_without_any_reply_fails_with_what_was_sent() {
    let Some(ns) = netns_or_skip(
        "no reply to echoes",
        &[("net/ipv4/icmp_echo_ignore_all", "1")],
    ) else {
        return;
    };
    ns.run(false, move || async move {
        let lk = Lookout::start(MODULES).await;
        let s = lk.probe("six_any", "127.0.0.1").await;
        assert_eq!(s.get("probe_success"), Some(0.0), "{}", s.text);
        assert_eq!(s.get("probe_icmp_packets_sent"), Some(6.0), "{}", s.text);
        assert_eq!(
            s.get("probe_icmp_packets_received"),
            Some(0.0),
            "{}",
            s.text
        );
        assert_eq!(
            s.get("probe_icmp_packet_loss_ratio"),
            Some(1.0),
            "{}",
            s.text
        );
        assert_eq!(s.get("probe_icmp_rtt_avg_seconds"), None, "{}", s.text);
        let debug = lk.debug("six_any", "127.0.0.1").await;
        assert!(
            debug.contains("no echo reply from 127.0.0.1 to any of 6 requests"),
            "{debug}"
        );
    });
}
