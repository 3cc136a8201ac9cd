//! `--shard.index` / `--shard.count`: replicas with the same config split the scheduled targets,
//! each connected part of the dependency graph whole on one of them, each target on exactly one.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::lookout::Lookout;
use crate::support::samples::Samples;

fn config() -> String {
    let mut s = String::from("modules:\n  tcp_connect: {prober: tcp, timeout: 1s}\ntargets:\n");
    for i in 0..20 {
        s.push_str(&format!(
            "  - {{name: db{i}, module: tcp_connect, target: '127.0.0.1:9', interval: 1h}}\n  \
             - {{name: app{i}, module: tcp_connect, target: '127.0.0.1:9', interval: 1h, depends_on: [db{i}]}}\n"
        ));
    }
    s
}

async fn scheduled(lk: &Lookout) -> Vec<Value> {
    let v: Value = serde_json::from_str(&lk.get("/api/v1/targets").await.body).unwrap();
    v["targets"].as_array().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_split_the_targets_by_component_and_together_cover_them() {
    let mut seen: Vec<String> = Vec::new();
    let mut sizes = Vec::new();
    for (index, pod) in ["0", "lookout-1", "2"].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let lk = Lookout::start_with_flags(
            dir,
            &config(),
            &["--shard.index", pod, "--shard.count", "3"],
        )
        .await;
        let ts = scheduled(&lk).await;
        let names: BTreeSet<String> = ts
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        for t in &ts {
            for d in t["dependencies"].as_array().unwrap() {
                assert!(
                    names.contains(d.as_str().unwrap()),
                    "{} without its dependency {d}",
                    t["name"]
                );
            }
        }
        let m = Samples::parse(&lk.get("/metrics").await.body);
        assert_eq!(m.get("lookout_shard_targets"), Some(ts.len() as f64));
        assert_eq!(m.get("lookout_shard_targets_considered"), Some(40.0));
        assert_eq!(
            m.get_with(
                "lookout_shard_info",
                &[("index", &index.to_string()), ("count", "3")]
            ),
            Some(1.0)
        );
        // Only its own share is on /metrics.
        let exposed: BTreeSet<String> = m
            .series("lookout_probes_total")
            .iter()
            .filter_map(|s| s.labels.get("target").cloned())
            .collect();
        assert!(exposed.is_subset(&names), "{exposed:?} vs {names:?}");
        sizes.push(ts.len());
        seen.extend(names);
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        seen.len(),
        40,
        "each target on exactly one replica: {sizes:?}"
    );
    assert_eq!(unique.len(), 40);
    assert!(
        sizes.iter().all(|&n| n > 0),
        "every replica has a share: {sizes:?}"
    );
}

#[tokio::test]
async fn bad_shard_flags_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lookout.yml");
    std::fs::write(&path, config()).unwrap();
    for (flags, says) in [
        (
            vec!["--shard.index", "3", "--shard.count", "3"],
            "not below --shard.count 3",
        ),
        (
            vec!["--shard.index", "1"],
            "--shard.index needs --shard.count",
        ),
        (
            vec!["--shard.index", "lookout", "--shard.count", "2"],
            "neither a number",
        ),
    ] {
        let mut args = vec![
            "lookout",
            "--config.file",
            path.to_str().unwrap(),
            "--web.listen-address",
            "127.0.0.1:0",
        ];
        args.extend(flags);
        let cli = <lookout::cli::Cli as clap::Parser>::parse_from(args);
        let err = match lookout::App::start_with(&cli, None, std::future::pending()).await {
            Ok(_) => panic!("started with bad shard flags"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(says), "{err}");
    }
}

async fn names(lk: &Lookout) -> BTreeSet<String> {
    scheduled(lk)
        .await
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls (every 50 ms, 20 s at most: a guard against hangs, not a timing claim) until `ok`
/// holds for the shares of `lks`.
async fn shares_until(
    lks: &[&Lookout],
    what: &str,
    ok: impl Fn(&[BTreeSet<String>]) -> bool,
) -> Vec<BTreeSet<String>> {
    let mut shares = Vec::new();
    for _ in 0..400 {
        shares.clear();
        for lk in lks {
            shares.push(names(lk).await);
        }
        if ok(&shares) {
            return shares;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("never saw {what}: {shares:?}");
}

/// Each target in exactly one of `shares`, all 40 of them.
fn partition(shares: &[BTreeSet<String>]) -> bool {
    let total: usize = shares.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<&String> = shares.iter().flatten().collect();
    total == 40 && union.len() == 40
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_replicas_share_is_taken_over_and_given_back() {
    let ports = free_ports(3);
    let peers = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let start = |i: usize| {
        let peers = peers.clone();
        let listen = format!("127.0.0.1:{}", ports[i]);
        async move {
            let index = i.to_string();
            Lookout::start_with_flags(
                tempfile::tempdir().unwrap(),
                &config(),
                &[
                    "--shard.index",
                    &index,
                    "--shard.count",
                    "3",
                    "--shard.peers",
                    &peers,
                    "--shard.peer-interval",
                    "100ms",
                    "--shard.peer-failures",
                    "2",
                    "--web.listen-address",
                    &listen,
                ],
            )
            .await
        }
    };
    let (a, b) = (start(0).await, start(1).await);
    let c = start(2).await;
    let before = shares_until(&[&a, &b, &c], "the three shares", partition).await;
    assert!(before.iter().all(|s| !s.is_empty()), "{before:?}");
    let m = Samples::parse(&a.get("/metrics").await.body);
    assert_eq!(
        m.get_with("lookout_shard_peer_up", &[("peer", "2")]),
        Some(1.0)
    );

    // Replica 2 stops: 0 and 1 take its share between them and keep their own.
    drop(c);
    let during = shares_until(&[&a, &b], "replica 2's share taken over", partition).await;
    for i in 0..2 {
        assert!(
            during[i].is_superset(&before[i]),
            "replica {i} kept its own targets"
        );
    }
    let m = Samples::parse(&a.get("/metrics").await.body);
    assert_eq!(
        m.get_with("lookout_shard_peer_up", &[("peer", "2")]),
        Some(0.0)
    );
    assert_eq!(
        m.get_with("lookout_shard_peer_up", &[("peer", "1")]),
        Some(1.0)
    );

    // Back on its port: the shares are what they were.
    let c = start(2).await;
    shares_until(&[&a, &b, &c], "replica 2's share given back", |s| {
        s == before.as_slice()
    })
    .await;
}

#[tokio::test]
async fn bad_peer_flags_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lookout.yml");
    std::fs::write(&path, config()).unwrap();
    for (flags, says) in [
        (
            vec![
                "--shard.index",
                "0",
                "--shard.count",
                "3",
                "--shard.peers",
                "http://a:1,http://b:1",
            ],
            "lists 2 replicas but --shard.count is 3",
        ),
        (
            vec!["--shard.peers", "http://a:1"],
            "--shard.peers needs --shard.index",
        ),
    ] {
        let mut args = vec![
            "lookout",
            "--config.file",
            path.to_str().unwrap(),
            "--web.listen-address",
            "127.0.0.1:0",
        ];
        args.extend(flags);
        let cli = <lookout::cli::Cli as clap::Parser>::parse_from(args);
        let err = match lookout::App::start_with(&cli, None, std::future::pending()).await {
            Ok(_) => panic!("started with bad peer flags"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(says), "{err}");
    }
}

/// `n` free loopback ports, known before the replicas start since each lists all of them.
fn free_ports(n: usize) -> Vec<u16> {
    let holders: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    holders
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

async fn state_of(lk: &Lookout, name: &str) -> Option<String> {
    scheduled(lk)
        .await
        .iter()
        .find(|t| t["name"] == name)
        .map(|t| t["state"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_per_target_needs_every_replica_to_see_the_failure() {
    use crate::support::dns_target;
    use std::net::Ipv4Addr;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    // Two replicas as if on two nodes: one reaches svc (127.0.0.1), the other does not (its DNS
    // says 127.0.0.3, where nothing listens). Neither reaches gone.
    let ip = |n| Ipv4Addr::new(127, 0, 0, n);
    let reaches = dns_target::start_with(
        None,
        &[("svc.example.org.", ip(1)), ("gone.example.org.", ip(3))],
    )
    .await;
    let cut_off = dns_target::start_with(
        None,
        &[("svc.example.org.", ip(3)), ("gone.example.org.", ip(3))],
    )
    .await;
    let yaml = format!(
        "modules:\n  tcp_connect: {{prober: tcp, timeout: 1s}}\ndefaults:\n  interval: 1s\n  retries: 1\n  \
         retry_interval: 200ms\n  replicas_per_target: 2\ntargets:\n  - {{name: svc, module: tcp_connect, \
         target: 'svc.example.org:{port}'}}\n  - {{name: gone, module: tcp_connect, target: 'gone.example.org:{port}'}}\n"
    );
    let ports = free_ports(2);
    let peers = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    // The replica that owns svc is the one cut off from it.
    let owner = lookout::shard::Shard::owner("svc", 2) as usize;
    let mut replicas = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let dns = if i == owner { cut_off.udp } else { reaches.udp };
        let (index, listen) = (i.to_string(), format!("127.0.0.1:{port}"));
        let flags = [
            "--shard.index",
            index.as_str(),
            "--shard.count",
            "2",
            "--shard.peers",
            peers.as_str(),
            "--shard.peer-interval",
            "100ms",
            "--web.listen-address",
            listen.as_str(),
        ];
        replicas.push(Lookout::start_with_dns_and_flags(&yaml, dns, &flags).await);
    }
    let gone_owner = &replicas[lookout::shard::Shard::owner("gone", 2) as usize];
    let svc_owner = &replicas[owner];
    let other = 1 - owner;

    // gone fails on both replicas: down, its peer's confirmation says failed.
    let mut down = false;
    for _ in 0..400 {
        if state_of(gone_owner, "gone").await.as_deref() == Some("down") {
            down = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(down, "gone never went down");
    // By now svc has failed on its owner several times, each overruled by the peer that reaches it.
    let mut m = Samples::parse(&svc_owner.get("/metrics").await.body);
    for _ in 0..100 {
        if m.samples.iter().any(|s| {
            s.name == "lookout_probe_confirmations"
                && s.labels.get("target").map(String::as_str) == Some("svc")
        }) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        m = Samples::parse(&svc_owner.get("/metrics").await.body);
    }
    let svc_success: Vec<f64> = m
        .samples
        .iter()
        .filter(|s| s.name == "probe_success" && s.labels["target"] == "svc")
        .map(|s| s.value)
        .collect();
    assert_eq!(
        svc_success,
        [0.0],
        "the owner's own probe fails:\n{}",
        m.text
    );
    let confirmation: Vec<(String, String)> = m
        .samples
        .iter()
        .filter(|s| s.name == "lookout_probe_confirmations" && s.labels["target"] == "svc")
        .map(|s| (s.labels["replica"].clone(), s.labels["result"].clone()))
        .collect();
    assert_eq!(
        confirmation,
        [(other.to_string(), "succeeded".to_owned())],
        "{}",
        m.text
    );
    assert_eq!(
        state_of(svc_owner, "svc").await.as_deref(),
        Some("up"),
        "a failure one replica alone sees is not the target's"
    );
    let m = Samples::parse(&gone_owner.get("/metrics").await.body);
    assert!(
        m.samples
            .iter()
            .any(|s| s.name == "lookout_probe_confirmations"
                && s.labels["target"] == "gone"
                && s.labels["result"] == "failed"),
        "{}",
        m.text
    );
    // One replica exposes each target: the confirming one probes svc but does not expose it.
    let m = Samples::parse(&replicas[other].get("/metrics").await.body);
    assert!(
        !m.samples.iter().any(|s| s.name == "probe_success"
            && s.labels.get("target").map(String::as_str) == Some("svc")),
        "{}",
        m.text
    );
}

/// Starts replica `index` of `count`, listening on `ports[index]`, its peers `ports[..count]`,
/// once that port is free again (a stopped replica's listener closes as its task ends).
async fn replica(index: usize, count: usize, ports: &[u16]) -> Lookout {
    for _ in 0..200 {
        if std::net::TcpListener::bind(("127.0.0.1", ports[index])).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let peers = ports[..count]
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let (i, n, listen) = (
        index.to_string(),
        count.to_string(),
        format!("127.0.0.1:{}", ports[index]),
    );
    Lookout::start_with_flags(
        tempfile::tempdir().unwrap(),
        &config(),
        &[
            "--shard.index",
            &i,
            "--shard.count",
            &n,
            "--shard.peers",
            &peers,
            "--shard.peer-interval",
            "100ms",
            "--shard.peer-failures",
            "2",
            "--web.listen-address",
            &listen,
        ],
    )
    .await
}

fn all(r: &[Option<Lookout>]) -> Vec<&Lookout> {
    r.iter().flatten().collect()
}

async fn count_in_effect(lk: &Lookout) -> Option<f64> {
    Samples::parse(&lk.get("/metrics").await.body).get("lookout_shard_count_in_effect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_count_takes_effect_when_every_replica_runs_it() {
    let ports = free_ports(4);
    let mut r = Vec::new();
    for i in 0..3 {
        r.push(Some(replica(i, 3, &ports).await));
    }
    let three = shares_until(&all(&r), "three shares", partition).await;
    // Scaling to four: the new replica hears three replicas on count 3 and probes nothing yet.
    r.push(Some(replica(3, 4, &ports).await));
    let fourth = r[3].as_ref().unwrap();
    for _ in 0..400 {
        if count_in_effect(fourth).await == Some(3.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(count_in_effect(fourth).await, Some(3.0));
    assert!(names(fourth).await.is_empty());
    // Rolling the others to count 4 from the highest ordinal down: the old split holds while
    // any of them still runs count 3.
    for i in [2, 1] {
        drop(r[i].take());
        r[i] = Some(replica(i, 4, &ports).await);
        let now = shares_until(&all(&r), "the old split", |s| {
            partition(s) && s[3].is_empty()
        })
        .await;
        assert_eq!(&now[..3], &three[..], "after restarting replica {i}");
        assert_eq!(count_in_effect(r[i].as_ref().unwrap()).await, Some(3.0));
    }
    // The last one: all four switch to count 4, the new replica with a share of its own.
    drop(r[0].take());
    r[0] = Some(replica(0, 4, &ports).await);
    let four = shares_until(&all(&r), "the new split", |s| {
        partition(s) && !s[3].is_empty()
    })
    .await;
    for i in 0..3 {
        assert!(
            four[i].is_subset(&three[i]),
            "replica {i} only gave targets away"
        );
    }
    for lk in all(&r) {
        assert_eq!(count_in_effect(lk).await, Some(4.0));
    }
}
