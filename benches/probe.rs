//! What `every_address:` costs on the probe path: one TCP probe of a loopback listener through
//! `probe::run` as blackbox does it (one address), and with `every_address` over a name with one
//! address (the extra pass that stops at the lookup) and with two (two probes at once).
//!
//! Run with `cargo bench --bench probe`; figures are quoted in docs/benchmarks.md.

// Benchmarks are clients and servers of their own: clippy.toml's socket rule does not apply.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use divan::Bencher;
use lookout::probe::every_address::{EveryAddress, Success};
use lookout::probe::hosts::HostsFile;
use lookout::probe::net::AllowAll;
use lookout::probe::prober::ProbeRequest;
use lookout::probe::resolve::Resolver;
use lookout::probe::{self, ProbeSpec};

fn main() {
    divan::main();
}

/// A runtime, a listener on 127.0.0.1 and 127.0.0.2 (one port) accepting and closing, and a
/// resolver whose hosts file maps `one.test` to the first and `two.test` to both.
struct Setup {
    rt: tokio::runtime::Runtime,
    port: u16,
    resolver: Resolver,
    spec: Arc<ProbeSpec>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = rt.block_on(async {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let second = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 2], port)))
            .await
            .unwrap();
        for l in [first, second] {
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    drop(s);
                }
            });
        }
        port
    });
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 one.test two.test\n127.0.0.2 two.test\n").unwrap();
    let section = serde_norway::from_str("preferred_ip_protocol: ip4").unwrap();
    let spec = ProbeSpec::Tcp(probe::tcp::Spec::build(&section, Path::new(".")).unwrap());
    Setup {
        rt,
        port,
        resolver: Resolver::with_hosts(HostsFile::new(&hosts)),
        spec: Arc::new(spec),
        _dir: dir,
    }
}

fn run(bencher: Bencher, name: &str, every: Option<EveryAddress>) {
    let s = setup();
    let target = format!("{name}:{}", s.port);
    bencher.bench_local(|| {
        s.rt.block_on(async {
            let outcome = probe::run(
                s.spec.clone(),
                "bench",
                ProbeRequest {
                    target: target.clone(),
                    hostname: None,
                },
                tokio::time::Instant::now() + Duration::from_secs(5),
                s.resolver.clone(),
                &AllowAll,
                every,
            )
            .await;
            assert!(outcome.success(), "{:?}", outcome.failure);
        })
    });
}

const EVERY: EveryAddress = EveryAddress {
    success: Success::All,
    max_addresses: 16,
};

/// blackbox's way: one address.
#[divan::bench]
fn one_address(bencher: Bencher) {
    run(bencher, "one.test", None);
}

/// `every_address` on a name with one address: the lookup pass, then one probe.
#[divan::bench]
fn every_address_of_one(bencher: Bencher) {
    run(bencher, "one.test", Some(EVERY));
}

/// `every_address` on a name with two addresses: the lookup pass, then two probes at once.
#[divan::bench]
fn every_address_of_two(bencher: Bencher) {
    run(bencher, "two.test", Some(EVERY));
}
