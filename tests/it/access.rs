//! `probe_access:` with the real binary against loopback servers: allowed addresses probe as
//! usual; refused ones answer 403 with the reason, are counted, and never reach their listener,
//! whether the address is written out, spelled another way, behind a redirect or behind a DNS
//! name. Each listener a probe must not reach is fenced: after the probe the test connects to it
//! itself, and since connections are accepted in order, the fence being the first connection
//! proves lookout never connected.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::dns_target;
use crate::support::http_target::{HttpTarget, RawListener, RawStep, Route};
use crate::support::lookout::{Answer, Lookout, q};
use crate::support::samples::Samples;

/// A listener on `ip` (loopback) that accepts, records what it receives and never answers.
fn listener_on(ip: [u8; 4]) -> RawListener {
    RawListener::script(SocketAddr::from((ip, 0)), vec![RawStep::Hold])
}

/// Fails unless nothing connected to `listener` before this call (see the module comment).
async fn assert_never_reached(listener: &RawListener) {
    let mut fence = tokio::net::TcpStream::connect(listener.addr).await.unwrap();
    fence.write_all(b"fence").await.unwrap();
    // Polls only until the fence arrives; 30 s is a guard against hangs, not a timing claim.
    for _ in 0..600 {
        let received = listener.received();
        if received.iter().any(|r| r.windows(5).any(|w| w == b"fence")) {
            assert_eq!(
                received.len(),
                1,
                "something reached {} before the fence: {received:?}",
                listener.addr
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the fence never reached {}", listener.addr);
}

async fn probe(lk: &Lookout, module: &str, target: &str) -> Answer {
    lk.get(&format!("/probe?module={}&target={}", q(module), q(target)))
        .await
}

/// Expects a 403 whose text is the refusal of `addr` with `why`.
#[track_caller]
fn assert_refused(answer: &Answer, addr: &str, why: &str) {
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.content_type, "text/plain; charset=utf-8");
    assert_eq!(
        answer.body,
        format!("Probe refused by probe_access: {addr} {why}\n")
    );
}

async fn refused_total(lk: &Lookout, reason: &str) -> f64 {
    let metrics = Samples::parse(&lk.get("/metrics").await.body);
    metrics
        .get_with("lookout_probe_access_refused_total", &[("reason", reason)])
        .unwrap_or_else(|| panic!("no lookout_probe_access_refused_total{{reason={reason:?}}}"))
}

const MODULES: &str = "modules:
  http_2xx: {prober: http, timeout: 5s, http: {preferred_ip_protocol: ip4}}
  tcp_connect: {prober: tcp, timeout: 5s, tcp: {preferred_ip_protocol: ip4}}
";

const NOT_ALLOWED: &str = "is not covered by any allow entry and the default is deny";

#[tokio::test]
async fn an_allowed_port_probes_and_a_denied_port_is_refused_before_connecting() {
    let web = HttpTarget::new().route("/", Route::ok("up")).start().await;
    let other = listener_on([127, 0, 0, 1]);
    let lk = Lookout::start(&format!(
        "{MODULES}probe_access:\n  default: deny\n  allow: [\"127.0.0.1/32:{}\"]\n",
        web.addr.port()
    ))
    .await;

    let samples = lk.probe("http_2xx", &web.url("/")).await;
    assert_eq!(samples.value("probe_success"), 1.0);
    assert_eq!(web.hits("/"), 1);

    let answer = probe(&lk, "tcp_connect", &other.host_port()).await;
    assert_refused(&answer, &other.addr.to_string(), NOT_ALLOWED);
    let answer = probe(&lk, "http_2xx", &other.url("/")).await;
    assert_refused(&answer, &other.addr.to_string(), NOT_ALLOWED);
    assert_never_reached(&other).await;

    assert_eq!(refused_total(&lk, "default_deny").await, 2.0);
    assert_eq!(refused_total(&lk, "deny_rule").await, 0.0);
    assert_eq!(refused_total(&lk, "metadata").await, 0.0);
    // The refused probes are failed probes too, with the blocked reason.
    let metrics = Samples::parse(&lk.get("/metrics").await.body);
    assert_eq!(
        metrics.get_with(
            "lookout_probe_failures_total",
            &[("module", "tcp_connect"), ("reason", "blocked")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_deny_entry_wins_over_allow_for_its_network_and_ports() {
    let web = HttpTarget::new().route("/", Route::ok("up")).start().await;
    let denied_host = listener_on([127, 0, 0, 2]);
    let denied_port = listener_on([127, 0, 0, 1]);
    let p = denied_port.addr.port();
    let range = format!("{}-{p}", p.saturating_sub(1).max(1));
    let lk = Lookout::start(&format!(
        "{MODULES}probe_access:\n  default: deny\n  allow: [127.0.0.0/8]\n  \
         deny: [127.0.0.2/32, \"127.0.0.1/32:{range}\"]\n"
    ))
    .await;

    let samples = lk.probe("http_2xx", &web.url("/")).await;
    assert_eq!(samples.value("probe_success"), 1.0);

    let denied = "is denied by entry \"127.0.0.2/32\"";
    let answer = probe(&lk, "tcp_connect", &denied_host.host_port()).await;
    assert_refused(&answer, &denied_host.addr.to_string(), denied);
    let by_port = format!("is denied by entry \"127.0.0.1/32:{range}\"");
    let answer = probe(&lk, "tcp_connect", &denied_port.host_port()).await;
    assert_refused(&answer, &denied_port.addr.to_string(), &by_port);
    assert_eq!(refused_total(&lk, "deny_rule").await, 2.0);
    assert_never_reached(&denied_host).await;
    assert_never_reached(&denied_port).await;
}

#[tokio::test]
async fn other_spellings_of_a_denied_address_are_refused_as_it() {
    let denied_host = listener_on([127, 0, 0, 2]);
    let local = listener_on([127, 0, 0, 1]);
    let (hp, lp) = (denied_host.addr.port(), local.addr.port());
    let lk = Lookout::start(&format!(
        "{MODULES}probe_access:\n  default: allow\n  deny: [127.0.0.2/32, \"127.0.0.1/32:{lp}\"]\n"
    ))
    .await;
    let denied = "is denied by entry \"127.0.0.2/32\"";
    for target in [
        format!("2130706434:{hp}"),
        format!("0x7f000002:{hp}"),
        format!("0177.0.0.2:{hp}"),
        format!("0x7f.0.0.02:{hp}"),
        format!("127.2:{hp}"),
        format!("127.0.2:{hp}"),
        format!("127.0.0.2.:{hp}"),
    ] {
        let answer = probe(&lk, "tcp_connect", &target).await;
        assert_refused(&answer, &format!("127.0.0.2:{hp}"), denied);
    }
    for target in [
        format!("http://2130706434:{hp}/"),
        format!("http://0x7f.2:{hp}/"),
        format!("http://0177.0.0.2:{hp}/"),
    ] {
        let answer = probe(&lk, "http_2xx", &target).await;
        assert_refused(&answer, &format!("127.0.0.2:{hp}"), denied);
    }
    // An IPv4-mapped IPv6 address is dialled as written and judged as the IPv4 address.
    let answer = probe(&lk, "tcp_connect", &format!("[::ffff:127.0.0.2]:{hp}")).await;
    assert_refused(
        &answer,
        &format!("[::ffff:127.0.0.2]:{hp} (read as 127.0.0.2)"),
        denied,
    );
    // 0.0.0.0 connects to the host itself: it is refused as loopback.
    let answer = probe(&lk, "tcp_connect", &format!("0.0.0.0:{lp}")).await;
    assert_refused(
        &answer,
        &format!("0.0.0.0:{lp} (read as 127.0.0.1)"),
        &format!("is denied by entry \"127.0.0.1/32:{lp}\""),
    );
    assert_never_reached(&denied_host).await;
    assert_never_reached(&local).await;
}

#[tokio::test]
async fn a_redirect_to_a_denied_port_is_refused_at_the_hop() {
    let secret = listener_on([127, 0, 0, 1]);
    let web = HttpTarget::new()
        .route("/", Route::redirect(302, &secret.url("/admin")))
        .start()
        .await;
    let lk = Lookout::start(&format!(
        "{MODULES}probe_access:\n  default: deny\n  allow: [\"127.0.0.1/32:{}\"]\n",
        web.addr.port()
    ))
    .await;

    let answer = probe(&lk, "http_2xx", &web.url("/")).await;
    assert_refused(&answer, &secret.addr.to_string(), NOT_ALLOWED);
    assert_eq!(web.hits("/"), 1, "the allowed first hop was probed");

    // debug=true shows the refusal and the probe's log, still as a 403.
    let path = format!(
        "/probe?module=http_2xx&target={}&debug=true",
        q(&web.url("/"))
    );
    let answer = lk.get(&path).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let first = answer.body.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "Probe refused by probe_access: {} {NOT_ALLOWED}",
            secret.addr
        )
    );
    assert!(
        answer.body.contains("Logs for the probe:"),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("Received redirect"), "{}", answer.body);
    assert!(answer.body.contains("probe_success 0"), "{}", answer.body);
    assert_eq!(web.hits("/"), 2);
    assert_never_reached(&secret).await;
}

#[tokio::test]
async fn a_name_resolving_to_a_denied_address_is_refused() {
    let web = HttpTarget::new().route("/", Route::ok("up")).start().await;
    let denied = listener_on([127, 0, 0, 3]);
    let dns = dns_target::start_with(
        None,
        &[
            ("allowed.example.org.", Ipv4Addr::new(127, 0, 0, 1)),
            ("denied.example.org.", Ipv4Addr::new(127, 0, 0, 3)),
        ],
    )
    .await;
    let lk = Lookout::start_with_dns(
        &format!(
            "{MODULES}probe_access:\n  default: deny\n  allow: [\"127.0.0.1/32:{}\"]\n  \
             deny: [127.0.0.3/32]\n",
            web.addr.port()
        ),
        dns.udp,
    )
    .await;

    // The name resolves through the test's server: the allowed one probes.
    let samples = lk
        .probe("http_2xx", &web.url_with_host("allowed.example.org", "/"))
        .await;
    assert_eq!(samples.value("probe_success"), 1.0);

    let port = denied.addr.port();
    let why = "is denied by entry \"127.0.0.3/32\"";
    let answer = probe(&lk, "tcp_connect", &format!("denied.example.org:{port}")).await;
    assert_refused(&answer, &denied.addr.to_string(), why);
    let answer = probe(
        &lk,
        "http_2xx",
        &format!("http://denied.example.org:{port}/"),
    )
    .await;
    assert_refused(&answer, &denied.addr.to_string(), why);
    assert_never_reached(&denied).await;
}

#[tokio::test]
async fn every_prober_is_refused_before_it_sends_anything() {
    let tcp = listener_on([127, 0, 0, 4]);
    // A UDP socket that records every datagram, for the DNS prober over UDP.
    let udp = tokio::net::UdpSocket::bind("127.0.0.4:0").await.unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let datagrams = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    {
        let datagrams = datagrams.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok(n) = udp.recv(&mut buf).await {
                datagrams.lock().unwrap().push(buf[..n].to_vec());
            }
        });
    }
    let lk = Lookout::start(
        "modules:
  http_2xx: {prober: http, timeout: 5s}
  tcp_connect: {prober: tcp, timeout: 5s}
  tls_connect: {prober: tcp, timeout: 5s, tcp: {tls: true}}
  grpc: {prober: grpc, timeout: 5s}
  redis: {prober: redis, timeout: 5s}
  postgres: {prober: postgres, timeout: 5s, postgres: {user: probe}}
  mqtt: {prober: mqtt, timeout: 5s}
  dns_tcp: {prober: dns, timeout: 5s, dns: {query_name: example.org, transport_protocol: tcp}}
  dns_udp: {prober: dns, timeout: 5s, dns: {query_name: example.org}}
  icmp: {prober: icmp, timeout: 5s}
  websocket: {prober: websocket, timeout: 5s}
probe_access:
  default: allow
  deny: [127.0.0.4/32]
",
    )
    .await;
    let why = "is denied by entry \"127.0.0.4/32\"";
    let at = tcp.addr.to_string();
    for (module, target) in [
        ("http_2xx", tcp.url("/")),
        ("http_2xx", format!("https://{at}/")),
        ("tcp_connect", at.clone()),
        ("tls_connect", at.clone()),
        ("grpc", at.clone()),
        ("redis", at.clone()),
        ("postgres", at.clone()),
        ("mqtt", at.clone()),
        ("dns_tcp", at.clone()),
        ("websocket", format!("ws://{at}/")),
    ] {
        let answer = probe(&lk, module, &target).await;
        assert_refused(&answer, &at, why);
    }
    let answer = probe(&lk, "dns_udp", &udp_addr.to_string()).await;
    assert_refused(&answer, &format!("UDP to {udp_addr}"), why);
    let answer = probe(&lk, "icmp", "127.0.0.4").await;
    assert_refused(&answer, "ICMP to 127.0.0.4", why);
    assert_eq!(refused_total(&lk, "deny_rule").await, 12.0);

    assert_never_reached(&tcp).await;
    // The same fence for UDP: datagrams from one sender arrive in order on loopback.
    let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sender.send_to(b"fence", udp_addr).await.unwrap();
    for _ in 0..600 {
        let got = datagrams.lock().unwrap().clone();
        if !got.is_empty() {
            assert_eq!(
                got,
                [b"fence".to_vec()],
                "a datagram arrived before the fence"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the fence datagram never arrived");
}

#[tokio::test]
async fn scheduled_targets_are_trusted() {
    let web = HttpTarget::new().route("/", Route::ok("up")).start().await;
    let lk = Lookout::start(&format!(
        "{MODULES}probe_access:\n  default: deny\n\
         targets:\n  - {{name: web, module: http_2xx, target: \"{}\", interval: 200ms}}\n",
        web.url("/")
    ))
    .await;
    let answer = probe(&lk, "http_2xx", &web.url("/")).await;
    assert_refused(&answer, &web.addr.to_string(), NOT_ALLOWED);
    // The scheduler probes the same address: the config file is trusted.
    for _ in 0..600 {
        if web.hits("/") > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the scheduled target was never probed");
}

#[tokio::test]
async fn without_the_section_loopback_probes_as_in_blackbox() {
    let web = HttpTarget::new().route("/", Route::ok("up")).start().await;
    let lk = Lookout::start(MODULES).await;
    let samples = lk.probe("http_2xx", &web.url("/")).await;
    assert_eq!(samples.value("probe_success"), 1.0);
    assert_eq!(refused_total(&lk, "metadata").await, 0.0);
}

#[tokio::test]
async fn the_fence_sees_an_earlier_connection() {
    // The harness's own check: a connection made before the fence must fail it.
    let listener = Arc::new(listener_on([127, 0, 0, 1]));
    let _early = tokio::net::TcpStream::connect(listener.addr).await.unwrap();
    let fenced = listener.clone();
    let outcome = tokio::spawn(async move { assert_never_reached(&fenced).await }).await;
    assert!(
        outcome.is_err_and(|e| e.is_panic()),
        "the fence missed a connection"
    );
}

#[tokio::test]
async fn a_refusal_is_logged_at_warn() {
    // The real binary, for its stderr.
    let other = listener_on([127, 0, 0, 1]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lookout.yml");
    std::fs::write(
        &config,
        format!("{MODULES}probe_access:\n  default: deny\n"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["--config.file", config.to_str().unwrap()])
        .args(["--web.listen-address", &addr.to_string()])
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start lookout");
    let mut up = false;
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "lookout exited ({status}) before listening:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "lookout did not start listening on {addr}");
    let path = format!("/probe?module=tcp_connect&target={}", q(&other.host_port()));
    let answer = crate::support::lookout::request(addr, "GET", &path, &[]).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("msg=\"Probe refused by probe_access\""))
        .unwrap_or_else(|| panic!("no refusal logged:\n{stderr}"));
    assert!(line.contains("level=warn"), "{line}");
    assert!(line.contains("reason=default_deny"), "{line}");
    assert!(line.contains(&format!("addr={}", other.addr)), "{line}");
    assert_never_reached(&other).await;
}
