//! Name resolution per module (issue 17): `dns_server:` over UDP, TCP, DNS over TLS and DNS over
//! HTTPS against the in-process hickory server, and `every_address:` probing each address a
//! name resolves to (loopback addresses 127.0.0.1–3, only some of them listening).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::support::certs::Ca;
use crate::support::dns_target;
use crate::support::http_target::{HttpTarget, Route};
use crate::support::lookout::Lookout;
use crate::support::samples::Samples;

/// A TCP listener on `ip:port` that accepts and drops every connection.
async fn listen(addr: SocketAddr) -> SocketAddr {
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    addr
}

#[tokio::test]
async fn dns_server_resolves_the_modules_names_over_each_transport() {
    let web = HttpTarget::new().route("/", Route::ok("up")).start().await;
    let ca = Ca::new("lookout test CA");
    let leaf = ca.leaf(&["dns.test"]).build();
    // The module's server knows the name; lookout's own resolver asks another that does not.
    let theirs = dns_target::start_with(
        Some(&leaf),
        &[("web.example.org.", Ipv4Addr::new(127, 0, 0, 1))],
    )
    .await;
    let ours = dns_target::start(None).await;
    let files = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(files.path());
    let tls = |transport: &str, addr: SocketAddr, extra: &str| {
        format!(
            "    dns_server:\n      address: {addr}\n      transport: {transport}\n      \
             server_name: dns.test\n      tls_config: {{ca_file: {}}}\n{extra}",
            ca_file.display()
        )
    };
    let modules = [
        ("system", String::new()),
        (
            "udp",
            format!("    dns_server: {{address: {}}}\n", theirs.udp),
        ),
        (
            "tcp",
            format!(
                "    dns_server: {{address: \"{}\", transport: tcp}}\n",
                theirs.tcp
            ),
        ),
        ("tls", tls("tls", theirs.tls.unwrap(), "")),
        ("https", tls("https", theirs.https.unwrap(), "")),
        (
            "https_other_path",
            tls("https", theirs.https.unwrap(), "      path: /other\n"),
        ),
        (
            "tls_untrusted",
            format!(
                "    dns_server: {{address: \"{}\", transport: tls, server_name: dns.test}}\n",
                theirs.tls.unwrap()
            ),
        ),
        (
            "tls_wrong_name",
            format!(
                "    dns_server: {{address: \"{}\", transport: tls, server_name: other.test, tls_config: {{ca_file: {}}}}}\n",
                theirs.tls.unwrap(),
                ca_file.display()
            ),
        ),
    ];
    let mut yaml = String::from("modules:\n");
    for (name, extra) in &modules {
        yaml.push_str(&format!(
            "  {name}:\n    prober: http\n    timeout: 5s\n{extra}"
        ));
    }
    let lk = Lookout::start_with_dns(&yaml, ours.udp).await;
    let target = web.url_with_host("web.example.org", "/");

    for module in ["udp", "tcp", "tls", "https"] {
        let s = lk.probe(module, &target).await;
        assert_eq!(
            s.value("probe_success"),
            1.0,
            "{module}: {}",
            lk.debug(module, &target).await
        );
        assert_eq!(s.value("probe_http_status_code"), 200.0, "{module}");
        assert_eq!(s.value("probe_ip_protocol"), 4.0, "{module}");
    }
    // The module without dns_server asks lookout's resolver, which has no such name.
    for module in [
        "system",
        "https_other_path",
        "tls_untrusted",
        "tls_wrong_name",
    ] {
        let s = lk.probe(module, &target).await;
        assert_eq!(s.value("probe_success"), 0.0, "{module}");
        let debug = lk.debug(module, &target).await;
        assert!(
            debug.contains("resolving web.example.org"),
            "{module}: {debug}"
        );
    }
}

#[tokio::test]
async fn a_bad_dns_server_is_a_config_error_naming_the_field() {
    for (section, field, message) in [
        (
            "{address: dns.example.org}",
            "dns_server.address",
            "is not an IP address or IP:port",
        ),
        (
            "{address: 127.0.0.1, server_name: dns.test}",
            "dns_server.server_name",
            "applies only to transport tls or https",
        ),
        (
            "{address: 127.0.0.1, transport: tls, path: /q}",
            "dns_server.path",
            "applies only to transport https",
        ),
        (
            "{address: 127.0.0.1, transport: https, path: q}",
            "dns_server.path",
            "must start with /",
        ),
        ("{transport: tcp}", "dns_server.address", "must be set"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lookout.yml");
        std::fs::write(
            &path,
            format!("modules:\n  m:\n    prober: tcp\n    dns_server: {section}\n"),
        )
        .unwrap();
        let err = lookout::config::load(&path)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(field) && err.contains(message) && err.contains(":4"),
            "{section}: {err}"
        );
    }
}

const EVERY: &str = "modules:
  tcp_one:
    prober: tcp
    timeout: 5s
  tcp_all:
    prober: tcp
    timeout: 5s
    every_address: {}
  tcp_any:
    prober: tcp
    timeout: 5s
    every_address: {success: any}
  tcp_two:
    prober: tcp
    timeout: 5s
    every_address: {max_addresses: 2}
  http_all:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
    every_address: {}
";

fn address_series(s: &Samples) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = s
        .series("probe_address_success")
        .iter()
        .map(|x| (x.labels["address"].clone(), x.value))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[tokio::test]
async fn every_address_probes_each_address_the_name_resolves_to() {
    // 127.0.0.1 and 127.0.0.2 listen on one port; 127.0.0.3 does not.
    let one = listen(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let port = one.port();
    listen(SocketAddr::from(([127, 0, 0, 2], port))).await;
    let web1 = HttpTarget::new().route("/", Route::ok("up")).start().await;
    let web_port = web1.addr.port();
    let _web2 = HttpTarget::new()
        .route("/", Route::ok("up"))
        .start_on(SocketAddr::from(([127, 0, 0, 2], web_port)))
        .await;
    let ip = |n| Ipv4Addr::new(127, 0, 0, n);
    let dns = dns_target::start_with(
        None,
        &[
            ("multi.example.org.", ip(1)),
            ("multi.example.org.", ip(2)),
            ("multi.example.org.", ip(3)),
            ("pair.example.org.", ip(1)),
            ("pair.example.org.", ip(2)),
        ],
    )
    .await;
    let yaml = format!(
        "{EVERY}targets:\n  - name: multi\n    module: tcp_all\n    target: multi.example.org:{port}\n    interval: 1s\n"
    );
    let lk = Lookout::start_with_dns(&yaml, dns.udp).await;
    let multi = format!("multi.example.org:{port}");
    let pair = format!("pair.example.org:{port}");

    // all: one address down fails the probe, and the series say which.
    let s = lk.probe("tcp_all", &multi).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert_eq!(s.value("probe_addresses"), 3.0);
    assert_eq!(
        address_series(&s),
        [
            ("127.0.0.1".to_owned(), 1.0),
            ("127.0.0.2".to_owned(), 1.0),
            ("127.0.0.3".to_owned(), 0.0)
        ]
    );
    assert_eq!(s.series("probe_address_duration_seconds").len(), 3);
    // The other families are the failing address's.
    assert_eq!(
        s.value("probe_ip_addr_hash"),
        ip_hash([127, 0, 0, 3]),
        "{}",
        s.text
    );
    let debug = lk.debug("tcp_all", &multi).await;
    assert!(
        debug.contains("1 of 3 addresses failed; address 127.0.0.3"),
        "{debug}"
    );
    // any: one answering address is enough.
    let s = lk.probe("tcp_any", &multi).await;
    assert_eq!(s.value("probe_success"), 1.0);
    assert_eq!(address_series(&s).len(), 3);
    // Every address up: success, one series each.
    let s = lk.probe("tcp_all", &pair).await;
    assert_eq!(s.value("probe_success"), 1.0);
    assert_eq!(
        address_series(&s),
        [("127.0.0.1".to_owned(), 1.0), ("127.0.0.2".to_owned(), 1.0)]
    );
    // max_addresses: the first two probed, the count still says three.
    let s = lk.probe("tcp_two", &multi).await;
    assert_eq!(s.value("probe_addresses"), 3.0);
    let two = address_series(&s);
    assert_eq!(two.len(), 2, "{}", s.text);
    let all_up = two.iter().all(|(_, v)| *v == 1.0);
    assert_eq!(s.value("probe_success"), if all_up { 1.0 } else { 0.0 });
    // Without the section: blackbox's shape, one address, no per-address families.
    let s = lk.probe("tcp_one", &multi).await;
    assert!(s.series("probe_address_success").is_empty(), "{}", s.text);
    assert!(s.get("probe_addresses").is_none());
    // A name that does not resolve, and a target that does not parse: one plain failure.
    for target in [format!("nx.example.org:{port}"), "no-port".to_owned()] {
        let s = lk.probe("tcp_all", &target).await;
        assert_eq!(s.value("probe_success"), 0.0, "{target}");
        assert!(s.series("probe_address_success").is_empty(), "{target}");
    }
    // HTTP: each address gets the name in its Host header and answers 200.
    let url = format!("http://pair.example.org:{web_port}/");
    let s = lk.probe("http_all", &url).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_http_status_code"), 200.0);
    assert_eq!(
        address_series(&s),
        [("127.0.0.1".to_owned(), 1.0), ("127.0.0.2".to_owned(), 1.0)]
    );

    // The scheduled target shows the same series on /metrics, with its labels.
    let mut seen = None;
    for _ in 0..200 {
        let m = Samples::parse(&lk.get("/metrics").await.body);
        let per: Vec<(String, f64)> = m
            .series("probe_address_success")
            .iter()
            .filter(|x| x.labels.get("target").map(String::as_str) == Some("multi"))
            .map(|x| (x.labels["address"].clone(), x.value))
            .collect();
        if per.len() == 3 {
            seen = Some(per);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut per = seen.expect("the scheduled target's per-address series on /metrics");
    per.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        per.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        [1.0, 1.0, 0.0]
    );
}

/// blackbox's `probe_ip_addr_hash`: FNV-1a over the IPv4 address's bytes.
fn ip_hash(bytes: [u8; 4]) -> f64 {
    let mut h: u32 = 0x811c9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    f64::from(h)
}

#[tokio::test]
async fn a_target_label_named_address_is_refused_with_every_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lookout.yml");
    let yaml = |every: &str| {
        format!(
            "modules:\n  m:\n    prober: tcp\n{every}targets:\n  - name: t\n    module: m\n    target: 127.0.0.1:1\n    labels: {{address: rack-3}}\n"
        )
    };
    std::fs::write(&path, yaml("    every_address: {}\n")).unwrap();
    let err = lookout::config::load(&path)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("labels.address") && err.contains("taken by the probe_address_* series"),
        "{err}"
    );
    // Without every_address the label is the user's.
    std::fs::write(&path, yaml("")).unwrap();
    lookout::config::load(&path).unwrap();
}
