//! `--shard.peers`: the replicas of a sharded lookout hear each other, so the share of one that
//! is down is probed by the others until it is back.
//!
//! Every `--shard.peer-interval` this replica asks each peer's `GET /-/healthy`; any HTTP
//! answer (a 401 of a peer behind basic auth too) means the peer runs. A peer that did not
//! answer `--shard.peer-failures` times in a row is down: `Sources::peers_changed` takes this
//! replica's share again by rendezvous hashing over the live replicas, so only the down
//! replica's components move (each to its next choice) and they move back on its first answer.
//! Each replica decides alone; when two disagree (a partition) a target is probed by both for
//! a while, never by neither.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::probe::net;
use crate::probe::resolve::{IpPreference, Resolver};
use crate::shard::Shard;
use crate::sources::Sources;

/// One peer replica's address, from `--shard.peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its ordinal: its place in the list.
    pub index: u32,
    /// The host to resolve and send as `Host`.
    pub host: String,
    /// The port.
    pub port: u16,
}

/// How the peers are watched.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The other replicas.
    pub peers: Vec<Peer>,
    /// How often each is asked.
    pub interval: Duration,
    /// How many unanswered checks in a row make a peer down.
    pub failures: u32,
}

impl Watch {
    /// From the flags: `urls` lists every replica in ordinal order (this one included, so every
    /// replica gets the same list), `http://host:port` each.
    pub fn from_flags(
        urls: &[String],
        shard: Option<Shard>,
        interval: Duration,
        failures: u32,
    ) -> Result<Option<Watch>, String> {
        if urls.is_empty() {
            return Ok(None);
        }
        let Some(shard) = shard else {
            return Err("--shard.peers needs --shard.index and --shard.count".into());
        };
        if urls.len() != shard.count as usize {
            return Err(format!(
                "--shard.peers lists {} replicas but --shard.count is {}: list every replica, this one included, in ordinal order",
                urls.len(),
                shard.count
            ));
        }
        if interval.is_zero() {
            return Err("--shard.peer-interval must be more than 0".into());
        }
        if failures == 0 {
            return Err("--shard.peer-failures must be at least 1".into());
        }
        let mut peers = Vec::new();
        for (i, raw) in urls.iter().enumerate() {
            let url =
                url::Url::parse(raw).map_err(|e| format!("--shard.peers entry {raw:?}: {e}"))?;
            if url.scheme() != "http" {
                return Err(format!(
                    "--shard.peers entry {raw:?}: only http:// peers are checked (a peer serving TLS cannot be heard yet)"
                ));
            }
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| format!("--shard.peers entry {raw:?} has no host"))?;
            let port = url.port().unwrap_or(9115);
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            if index != shard.index {
                peers.push(Peer {
                    index,
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    port,
                });
            }
        }
        Ok(Some(Watch {
            peers,
            interval,
            failures,
        }))
    }
}

/// Asks every peer each interval and tells `sources` which are down, until `stop`.
pub async fn run(watch: Watch, sources: Arc<Sources>, resolver: Resolver, stop: CancellationToken) {
    let mut missed = vec![0u32; watch.peers.len()];
    let mut down: BTreeSet<u32> = BTreeSet::new();
    sources.peers_changed(down.clone());
    let limit = watch.interval.min(Duration::from_secs(2));
    let mut tick = tokio::time::interval(watch.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let checks = watch.peers.iter().map(|p| async {
            tokio::time::timeout(limit, check(p, &resolver))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
        });
        let answers = futures_util::future::join_all(checks).await;
        let mut now = down.clone();
        for ((peer, answer), missed) in watch.peers.iter().zip(answers).zip(&mut missed) {
            match answer {
                Ok(()) => {
                    *missed = 0;
                    if now.remove(&peer.index) {
                        tracing::info!(peer = peer.index, host = %peer.host, "Peer replica answers again; giving its share back");
                    }
                }
                Err(err) => {
                    *missed = missed.saturating_add(1);
                    if *missed >= watch.failures && now.insert(peer.index) {
                        tracing::warn!(peer = peer.index, host = %peer.host, err = %err, checks = *missed, "Peer replica does not answer; probing its share");
                    }
                }
            }
        }
        if now != down {
            down = now;
            sources.peers_changed(down.clone());
        }
    }
}

/// One `GET /-/healthy`: any HTTP answer is a running peer.
async fn check(peer: &Peer, resolver: &Resolver) -> Result<(), String> {
    let (ip, _) = resolver
        .lookup(&peer.host, IpPreference::default())
        .await
        .map_err(|f| f.message)?;
    let tcp = net::connect_service(SocketAddr::new(ip, peer.port))
        .await
        .map_err(|f| f.message)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let host = if peer.host.contains(':') {
        format!("[{}]:{}", peer.host, peer.port)
    } else {
        format!("{}:{}", peer.host, peer.port)
    };
    let req = http::Request::get("/-/healthy")
        .header(http::header::HOST, host)
        .header(
            http::header::USER_AGENT,
            concat!("lookout/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    // Read (a bounded amount of) the answer so the connection ends cleanly.
    let _ = http_body_util::Limited::new(resp.into_body(), 4096)
        .collect()
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_list_names_every_replica_in_order() {
        let shard = Some(Shard { index: 1, count: 3 });
        let urls = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let s = Duration::from_secs(5);
        let w = Watch::from_flags(
            &urls(&["http://a:9115", "http://b:9115", "http://[::1]:9"]),
            shard,
            s,
            3,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            w.peers,
            [
                Peer {
                    index: 0,
                    host: "a".into(),
                    port: 9115
                },
                Peer {
                    index: 2,
                    host: "::1".into(),
                    port: 9
                }
            ]
        );
        assert!(Watch::from_flags(&[], shard, s, 3).unwrap().is_none());
        for (list, shard, failures, msg) in [
            (&["http://a", "http://b"][..], shard, 3, "lists 2 replicas"),
            (
                &["http://a", "http://b", "http://c"][..],
                None,
                3,
                "needs --shard.index",
            ),
            (
                &["https://a", "http://b", "http://c"][..],
                shard,
                3,
                "only http://",
            ),
            (
                &["http://a", "http://b", "http://c"][..],
                shard,
                0,
                "at least 1",
            ),
        ] {
            let e = Watch::from_flags(&urls(list), shard, s, failures).unwrap_err();
            assert!(e.contains(msg), "{e}");
        }
    }
}
