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
//!
//! A sharded replica's `/-/healthy` also says its `--shard.count` (header
//! `x-lookout-shard-count`), and each replica takes its share under the lowest count among itself
//! and the live peers it hears: while a change of the count rolls out pod by pod, every replica
//! keeps the old split (a new replica beyond it probes nothing yet) until the last one on the
//! old count restarts, and then all switch within one check, instead of each switching as it
//! restarts.

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

/// The header of a sharded replica's `/-/healthy` answer naming its `--shard.count`.
pub const COUNT_HEADER: &str = "x-lookout-shard-count";

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
    let own = sources.shard().map_or(1, |s| s.count);
    let mut missed = vec![0u32; watch.peers.len()];
    // Each peer's --shard.count as it last said it (None: not heard yet, or not sharded).
    let mut counts: Vec<Option<u32>> = vec![None; watch.peers.len()];
    let mut down: BTreeSet<u32> = BTreeSet::new();
    let mut agreed = own;
    sources.peers_changed(down.clone(), agreed);
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
        for (((peer, answer), missed), count) in watch
            .peers
            .iter()
            .zip(answers)
            .zip(&mut missed)
            .zip(&mut counts)
        {
            match answer {
                Ok(heard) => {
                    *missed = 0;
                    *count = heard;
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
        // The lowest count among this replica and the live peers: a rollout of a new count
        // switches everyone at once, when the last replica on the old one is gone.
        let lowest = watch
            .peers
            .iter()
            .zip(&counts)
            .filter(|(p, _)| !now.contains(&p.index))
            .filter_map(|(_, c)| *c)
            .fold(own, u32::min)
            .max(1);
        if lowest != agreed {
            tracing::info!(
                count = lowest,
                flag = own,
                "Taking the share under the count every live replica runs with"
            );
        }
        if now != down || lowest != agreed {
            down = now;
            agreed = lowest;
            sources.peers_changed(down.clone(), agreed);
        }
    }
}

/// One `GET /-/healthy`: any HTTP answer is a running peer; returns the `--shard.count` it
/// says it runs with, if it says one.
async fn check(peer: &Peer, resolver: &Resolver) -> Result<Option<u32>, String> {
    get(peer, "/-/healthy", resolver, 4096)
        .await
        .map(|(_, headers, _)| {
            headers
                .get(COUNT_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        })
}

/// What a peer answered when asked to confirm a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Its probe succeeded: the failure is this replica's alone.
    Succeeded,
    /// Its probe failed too, for this reason.
    Failed(String),
    /// It could not be asked (down, or no answer in time), or answered no verdict.
    Unreachable(String),
}

impl Verdict {
    /// The `result` label of `lookout_probe_confirmations`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::Failed(_) => "failed",
            Verdict::Unreachable(_) => "unreachable",
        }
    }
}

/// Asks peers to probe a target this replica saw fail (`replicas_per_target`): the k − 1 live
/// replicas ranked next for the target's name, each through `GET /api/v1/confirm`.
#[derive(Debug)]
pub struct Confirmer {
    peers: Vec<Peer>,
    shard: Shard,
    sources: Arc<Sources>,
    resolver: Resolver,
}

impl Confirmer {
    /// The confirmer of the replicas `watch` hears.
    pub fn new(watch: &Watch, shard: Shard, sources: Arc<Sources>, resolver: Resolver) -> Self {
        Confirmer {
            peers: watch.peers.clone(),
            shard,
            sources,
            resolver,
        }
    }

    /// The peers that confirm `target`'s failures: the next live replicas in its ranking, at
    /// most `replicas_per_target − 1` of them.
    pub fn confirmers(&self, target: &crate::config::Target) -> Vec<&Peer> {
        let want = target.replicas_per_target.saturating_sub(1) as usize;
        let down = self.sources.down();
        Shard::ranked(&target.name, self.shard.count)
            .into_iter()
            .filter(|r| *r != self.shard.index && !down.contains(r))
            .filter_map(|r| self.peers.iter().find(|p| p.index == r))
            .take(want)
            .collect()
    }

    /// Asks each confirming peer to probe `target` now; each answers within the target's
    /// timeout plus 2 s or counts as unreachable.
    pub async fn confirm(&self, target: &crate::config::Target) -> Vec<(u32, Verdict)> {
        let path = format!(
            "/api/v1/confirm?target={}",
            url::form_urlencoded::byte_serialize(target.name.as_bytes()).collect::<String>()
        );
        let limit = target.timeout + Duration::from_secs(2);
        let asks = self.confirmers(target).into_iter().map(|peer| {
            let path = path.clone();
            async move {
                let answer =
                    tokio::time::timeout(limit, get(peer, &path, &self.resolver, 16 * 1024)).await;
                let verdict = match answer {
                    Err(_) => Verdict::Unreachable(format!("no answer within {limit:?}")),
                    Ok(Err(e)) => Verdict::Unreachable(e),
                    Ok(Ok((status, _, _))) if status != http::StatusCode::OK => {
                        Verdict::Unreachable(format!("answered {status}"))
                    }
                    Ok(Ok((_, _, body))) => read_verdict(&body),
                };
                (peer.index, verdict)
            }
        });
        futures_util::future::join_all(asks).await
    }
}

/// A confirmation answer: `{"success": true}` or `{"success": false, "reason": "…"}`.
fn read_verdict(body: &[u8]) -> Verdict {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Verdict::Unreachable(format!("unreadable answer: {e}")),
    };
    match v.get("success").and_then(serde_json::Value::as_bool) {
        Some(true) => Verdict::Succeeded,
        Some(false) => Verdict::Failed(
            v.get("reason")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
        ),
        None => Verdict::Unreachable("an answer without success".into()),
    }
}

/// One `GET path` of a peer: its status, headers and (at most `limit` bytes of) its body.
async fn get(
    peer: &Peer,
    path: &str,
    resolver: &Resolver,
    limit: usize,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String> {
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
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(
            http::header::USER_AGENT,
            concat!("lookout/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = http_body_util::Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((status, headers, body))
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
