//! Names the hosts file maps one way only: both exporters run with the same file bind-mounted
//! over `/etc/hosts` (a mount namespace each), so Go's rule — a name the file lists gets the
//! file's addresses alone, DNS is not asked — is compared with lookout's, on real listeners.

use std::net::TcpListener;

use crate::runner::Scenario;

/// `localhost` on 127.0.0.1 only (as on machines without an IPv6 line for it), and one name
/// for each family alone.
const HOSTS: &str = "127.0.0.1 localhost lookout-v4.test\n::1 ip6-localhost lookout-v6.test\n";

/// A listener on `addr` that accepts and holds connections for the test's lifetime.
fn listener(addr: &str) -> (TcpListener, u16) {
    let l = TcpListener::bind(addr).expect("bind a loopback listener");
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// blackbox's defaults (ip6 preferred, fallback on) on `localhost`, which the file maps to
/// 127.0.0.1 alone: Go connects to 127.0.0.1 (probe_ip_protocol 4), never to a built-in ::1.
#[tokio::test]
async fn hosts_localhost_v4_only_with_default_preferences() {
    let (_l, port) = listener("127.0.0.1:0");
    Scenario::new(
        "hosts_localhost_v4_only_with_default_preferences",
        "prober: tcp\ntimeout: 5s\n",
    )
    .hosts_file(HOSTS)
    .expect_success(true)
    .probe(&format!("localhost:{port}"))
    .await;
}

/// ip4 preferred with fallback on a name the file maps to ::1 alone: the IPv6 address.
#[tokio::test]
async fn hosts_v6_only_name_with_ip4_preferred() {
    let (_l, port) = listener("[::1]:0");
    Scenario::new(
        "hosts_v6_only_name_with_ip4_preferred",
        "prober: tcp\ntimeout: 5s\ntcp:\n  preferred_ip_protocol: ip4\n",
    )
    .hosts_file(HOSTS)
    .expect_success(true)
    .probe(&format!("lookout-v6.test:{port}"))
    .await;
}

/// ip6 without fallback on a name the file maps to 127.0.0.1 alone: no DNS is asked, the
/// lookup fails on both sides.
#[tokio::test]
async fn hosts_v4_only_name_with_ip6_and_no_fallback() {
    let (_l, port) = listener("127.0.0.1:0");
    Scenario::new(
        "hosts_v4_only_name_with_ip6_and_no_fallback",
        "prober: tcp\ntimeout: 5s\ntcp:\n  preferred_ip_protocol: ip6\n  ip_protocol_fallback: false\n",
    )
    .hosts_file(HOSTS)
    .expect_success(false)
    .probe(&format!("lookout-v4.test:{port}"))
    .await;
}

/// The issue's own case: ICMP to `localhost` with blackbox's defaults goes to 127.0.0.1.
#[tokio::test]
async fn hosts_icmp_localhost_v4_only() {
    Scenario::new(
        "hosts_icmp_localhost_v4_only",
        "prober: icmp\ntimeout: 5s\n",
    )
    .hosts_file(HOSTS)
    .expect_success(true)
    .probe("localhost")
    .await;
}
