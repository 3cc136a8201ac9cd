//! A simulation of sharded scheduling (issue 16): T targets over N replicas, each replica
//! probing the components `lookout::shard::Shard::owner` gives it under the `--shard.count` it
//! runs with, through membership events a StatefulSet goes through. For every target and every
//! planned slot (its phase plus k intervals) it counts the replicas that probe it then: none is a
//! gap, two or more a duplicate. It prints, per scenario, the targets whose owner changed
//! (moved), and gaps and duplicates per moved and per unmoved target.
//!
//! ```sh
//! cargo bench --bench shard-sim                 # 1,000,000 targets, 10 replicas, 60 s, 10 s restarts
//! cargo bench --bench shard-sim -- 100000 3 30 5  # targets replicas interval_s restart_s
//! ```
//!
//! The model: a replica probes a slot of a target when it is up at that instant and owns the
//! target's component under its own count; a restart takes `restart_s` (a pod down, then up and
//! probing); a StatefulSet rolls pods one at a time from the highest ordinal down, the next
//! starting once the previous is back. Components are 1 root + 9 dependents, as in
//! scripts/bench-scheduler --graph 9. Nothing here touches the network.
//!
//! Scenarios marked "peers" model `--shard.peers` with the defaults (a check every 5 s, down
//! after 3 misses): each replica acts on what it heard at its last check (their phases spread
//! over the 5 s), so a replica is taken for down by the others 15 s after it stopped and for up
//! again within 5 s of its return; each replica takes its share under the lowest
//! `--shard.count` among itself and the live peers it hears, and the live replicas own a down
//! one's components by `Shard::owner_among`.

use std::collections::BTreeSet;

use lookout::shard::Shard;

/// `--shard.peer-interval` × `--shard.peer-failures` (5 s × 3): how long a replica is gone before
/// the others take its share.
const DETECT: f64 = 15.0;
/// `--shard.peer-interval`: how old what a replica heard may be.
const CHECK: f64 = 5.0;
/// The resolution of the replicas' views of each other.
const STEP: f64 = 0.1;

/// One replica's life in a scenario: up intervals, with the count it runs with in each.
#[derive(Clone, Debug)]
struct Life {
    /// (from, until, count): up and probing under `count` from `from` (s) until `until` (s).
    spans: Vec<(f64, f64, u32)>,
}

impl Life {
    fn count_at(&self, t: f64) -> Option<u32> {
        self.spans
            .iter()
            .find(|(a, b, _)| *a <= t && t < *b)
            .map(|s| s.2)
    }

    /// Whether a peer checking at `t` takes this replica for down: gone for at least `DETECT`.
    fn seen_down(&self, t: f64) -> bool {
        if self.count_at(t).is_some() {
            return false;
        }
        // Gone since the end of the last span before `t` (or always, if none).
        let since = self
            .spans
            .iter()
            .filter(|s| s.1 <= t)
            .map(|s| s.1)
            .fold(-FOREVER, f64::max);
        since + DETECT <= t
    }

    /// The count it said at its last answer before `t`.
    fn last_count(&self, t: f64) -> Option<u32> {
        self.count_at(t).or_else(|| {
            self.spans
                .iter()
                .filter(|s| s.1 <= t)
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|s| s.2)
        })
    }
}

struct Scenario {
    name: String,
    /// Replicas, by ordinal.
    lives: Vec<Life>,
    /// The counts before and after (to find the moved targets).
    before: u32,
    after: u32,
    /// The window simulated.
    start: f64,
    end: f64,
    /// Whether replicas hear each other (`--shard.peers`).
    peers: bool,
}

const FOREVER: f64 = 1e12;

/// Replicas `0..n` up from the start under count `n`.
fn steady(n: u32) -> Vec<Life> {
    (0..n)
        .map(|_| Life {
            spans: vec![(-FOREVER, FOREVER, n)],
        })
        .collect()
}

/// A rolling restart of `lives` from the highest ordinal down, starting at `t`, each pod down
/// `restart` seconds and back under `count`; returns when the last one is back.
fn roll(
    lives: &mut [Life],
    ordinals: impl Iterator<Item = usize>,
    mut t: f64,
    restart: f64,
    count: u32,
) -> f64 {
    for k in ordinals {
        let life = &mut lives[k];
        for s in &mut life.spans {
            if s.0 <= t && t < s.1 {
                s.1 = t;
            }
        }
        life.spans.push((t + restart, FOREVER, count));
        t += restart;
    }
    t
}

fn scenarios(n: u32, interval: f64, restart: f64) -> Vec<Scenario> {
    let mut out = Vec::new();
    // A replica killed, then re-created by the StatefulSet after `restart`.
    let mut lives = steady(n);
    let victim = (n / 2) as usize;
    lives[victim].spans = vec![(-FOREVER, 0.0, n), (restart, FOREVER, n)];
    out.push(Scenario {
        name: format!("replica {victim} killed, back after {restart} s"),
        lives,
        before: n,
        after: n,
        start: -interval,
        end: restart + 2.0 * interval,
        peers: false,
    });
    // A replica gone for longer (a drained node, a pod pending): without and with peers.
    for peers in [false, true] {
        let mut lives = steady(n);
        let away = 5.0 * interval;
        lives[victim].spans = vec![(-FOREVER, 0.0, n), (away, FOREVER, n)];
        out.push(Scenario {
            name: format!(
                "replica {victim} gone for {away} s{}",
                if peers { ", --shard.peers" } else { "" }
            ),
            lives,
            before: n,
            after: n,
            start: -interval,
            end: away + 2.0 * interval,
            peers,
        });
    }
    // Rolling update (a new image): every pod restarted in turn, the count unchanged.
    let mut lives = steady(n);
    let done = roll(&mut lives, (0..n as usize).rev(), 0.0, restart, n);
    out.push(Scenario {
        name: format!("rolling update of {n} pods, {restart} s each"),
        lives,
        before: n,
        after: n,
        start: -interval,
        end: done + 2.0 * interval,
        peers: false,
    });
    // Scale up by one: the new pod starts under n+1, then the others roll to n+1.
    for peers in [false, true] {
        let mut lives = steady(n);
        lives.push(Life {
            spans: vec![(restart, FOREVER, n + 1)],
        });
        let done = roll(&mut lives, (0..n as usize).rev(), restart, restart, n + 1);
        out.push(Scenario {
            name: format!(
                "scale {n} -> {} (new pod, then a rolling update){}",
                n + 1,
                if peers { ", --shard.peers" } else { "" }
            ),
            lives,
            before: n,
            after: n + 1,
            start: -interval,
            end: done + 2.0 * interval,
            peers,
        });
    }
    // Scale down by one: the last pod goes, then the others roll to n-1.
    for peers in [false, true] {
        if n < 2 {
            break;
        }
        let mut lives = steady(n);
        lives[n as usize - 1].spans = vec![(-FOREVER, 0.0, n)];
        let done = roll(&mut lives, (0..n as usize - 1).rev(), 0.0, restart, n - 1);
        out.push(Scenario {
            name: format!(
                "scale {n} -> {} (last pod removed, then a rolling update){}",
                n - 1,
                if peers { ", --shard.peers" } else { "" }
            ),
            lives,
            before: n,
            after: n - 1,
            start: -interval,
            end: done + 2.0 * interval,
            peers,
        });
    }
    out
}

/// A replica's view with `--shard.peers`: (the count it takes its share under, the peers it
/// takes for down), or `None` while it is not up.
type View = Option<(u32, BTreeSet<u32>)>;

/// What replica `r` acts on at `t` with `--shard.peers`: the count it takes its share under
/// and the peers it takes for down; `None` while it is not up.
fn view(lives: &[Life], r: usize, t: f64) -> View {
    let own = lives[r].count_at(t)?;
    // Its checks have their own phase: it acts on what it heard at its last one.
    let heard = t - CHECK * (r as f64 + 0.5) / lives.len() as f64;
    let mut count = own;
    let mut down = BTreeSet::new();
    for (p, life) in lives.iter().enumerate().take(own as usize) {
        if p == r {
            continue;
        }
        if life.seen_down(heard) {
            down.insert(p as u32);
        } else if let Some(c) = life.last_count(heard) {
            count = count.min(c);
        }
    }
    down.retain(|&d| d < count);
    Some((count, down))
}

/// FNV-1a, as the scheduler's phase hash: only to spread phases over the interval.
fn phase(name: &str, interval: f64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % 1_000_000) as f64 / 1_000_000.0 * interval
}

fn main() {
    // A simulation, not a test: a test runner listing the tests of every target
    // (`cargo nextest run --all-targets` runs each binary with `--list`) finds none here.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes `--bench`; the numbers are ours.
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let targets = args.first().copied().unwrap_or(1_000_000.0) as usize;
    let n = args.get(1).copied().unwrap_or(10.0) as u32;
    let interval = args.get(2).copied().unwrap_or(60.0);
    let restart = args.get(3).copied().unwrap_or(10.0);
    const COMPONENT: usize = 10;
    let components = targets.div_ceil(COMPONENT);
    println!(
        "shard-sim: {targets} targets in {components} components of {COMPONENT}, {n} replicas, interval {interval} s, restart {restart} s"
    );
    // A component's key is its lowest target name, as `TargetSet::components_where` gives it.
    let keys: Vec<String> = (0..components).map(|c| format!("root-{c:07}")).collect();
    println!();
    println!(
        "| scenario | moved targets | moved share (goal ≤ 1/N + 5%) | gaps per moved target (mean / max) | duplicates per moved target (mean / max) | gaps per unmoved target (mean / max) | duplicates per unmoved target (max) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for s in scenarios(n, interval, restart) {
        let counts: Vec<u32> = {
            let mut c: Vec<u32> = s
                .lives
                .iter()
                .flat_map(|l| l.spans.iter().map(|x| x.2))
                .collect();
            c.push(s.before);
            c.push(s.after);
            c.sort_unstable();
            c.dedup();
            c
        };
        // With peers, each replica's view at every STEP of the window.
        let steps = ((s.end - s.start) / STEP).ceil() as usize + 1;
        let views: Vec<Vec<View>> = if s.peers {
            (0..s.lives.len())
                .map(|r| {
                    (0..steps)
                        .map(|i| view(&s.lives, r, s.start + i as f64 * STEP))
                        .collect()
                })
                .collect()
        } else {
            Vec::new()
        };
        let (mut moved, mut total) = (0usize, 0usize);
        let (mut gaps_m, mut dups_m, mut max_gap_m, mut max_dup_m) = (0u64, 0u64, 0u64, 0u64);
        let (mut gaps_u, mut max_gap_u, mut max_dup_u) = (0u64, 0u64, 0u64);
        for (c, key) in keys.iter().enumerate() {
            // The owner of this component under each count in play.
            let owner: Vec<(u32, u32)> =
                counts.iter().map(|&k| (k, Shard::owner(key, k))).collect();
            let owner_of = |count: u32| owner.iter().find(|o| o.0 == count).map(|o| o.1);
            let has_moved = owner_of(s.before) != owner_of(s.after);
            let size = COMPONENT.min(targets - c * COMPONENT);
            for m in 0..size {
                let name = if m == 0 {
                    key.clone()
                } else {
                    format!("app-{c:07}-{m}")
                };
                let p = phase(&name, interval);
                let (mut gaps, mut dups) = (0u64, 0u64);
                let mut k = ((s.start - p) / interval).ceil();
                loop {
                    let t = p + k * interval;
                    if t >= s.end {
                        break;
                    }
                    let step = (((t - s.start) / STEP) as usize).min(steps - 1);
                    let probes = s
                        .lives
                        .iter()
                        .enumerate()
                        .filter(|(r, l)| {
                            let r32 = *r as u32;
                            if !s.peers {
                                return l
                                    .count_at(t)
                                    .is_some_and(|count| owner_of(count) == Some(r32));
                            }
                            views[*r][step].as_ref().is_some_and(|(count, down)| {
                                let owner = if down.is_empty() {
                                    owner_of(*count)
                                } else {
                                    Shard::owner_among(key, *count, down)
                                };
                                owner == Some(r32)
                            })
                        })
                        .count() as u64;
                    match probes {
                        0 => gaps += 1,
                        1 => {}
                        p => dups += p - 1,
                    }
                    k += 1.0;
                }
                total += 1;
                if has_moved {
                    moved += 1;
                    gaps_m += gaps;
                    dups_m += dups;
                    max_gap_m = max_gap_m.max(gaps);
                    max_dup_m = max_dup_m.max(dups);
                } else {
                    gaps_u += gaps;
                    max_gap_u = max_gap_u.max(gaps);
                    max_dup_u = max_dup_u.max(dups);
                }
            }
        }
        let mean = |sum: u64, n: usize| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
        let ideal = if s.before == s.after {
            0.0
        } else {
            1.0 / f64::from(s.before.max(s.after))
        };
        println!(
            "| {} | {moved} | {:.2}% (1/N {:.2}%) | {:.2} / {max_gap_m} | {:.2} / {max_dup_m} | {:.2} / {max_gap_u} | {max_dup_u} |",
            s.name,
            100.0 * moved as f64 / total as f64,
            100.0 * ideal,
            mean(gaps_m, moved),
            mean(dups_m, moved),
            mean(gaps_u, total - moved),
        );
    }
}
