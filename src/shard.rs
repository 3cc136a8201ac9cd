//! Sharding: `--shard.index I --shard.count N` makes this lookout one of N replicas that split
//! the scheduled targets between them. Each connected component of the dependency graph goes
//! whole to one replica (so a root cause and everything it blocks are judged in one place), the
//! replica chosen by rendezvous hashing of the component's key: every replica computes the same
//! owner from the key and N alone, with no coordination, and a change of N moves only the
//! components whose highest-scoring replica changed (about 1/N of them).

use std::collections::BTreeSet;

use crate::config::TargetSet;

/// This replica's place among its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Its ordinal, from 0.
    pub index: u32,
    /// How many replicas split the targets.
    pub count: u32,
}

/// Why the shard flags were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardError(String);

impl std::fmt::Display for ShardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShardError {}

impl Shard {
    /// The shard of `--shard.index` and `--shard.count`: both or neither. The index is a number
    /// or a name ending in `-<number>` (a StatefulSet pod's name, `lookout-2`), so a chart can
    /// pass `$(POD_NAME)`.
    pub fn from_flags(
        index: Option<&str>,
        count: Option<u32>,
    ) -> Result<Option<Shard>, ShardError> {
        let (index, count) = match (index, count) {
            (None, None) => return Ok(None),
            (Some(i), Some(c)) => (i, c),
            (Some(_), None) => {
                return Err(ShardError("--shard.index needs --shard.count".into()));
            }
            (None, Some(_)) => {
                return Err(ShardError("--shard.count needs --shard.index".into()));
            }
        };
        if count == 0 {
            return Err(ShardError("--shard.count must be at least 1".into()));
        }
        let digits = index.rsplit('-').next().unwrap_or(index);
        let parsed: u32 = digits.parse().map_err(|_| {
            ShardError(format!(
                "--shard.index {index:?} is neither a number nor a name ending in -<number>"
            ))
        })?;
        if parsed >= count {
            return Err(ShardError(format!(
                "--shard.index {parsed} is not below --shard.count {count}"
            )));
        }
        Ok(Some(Shard {
            index: parsed,
            count,
        }))
    }

    /// The replica that owns the component with key `key` among `count` replicas: the one with
    /// the highest score (ties to the lower ordinal, which 64-bit scores all but never need).
    pub fn owner(key: &str, count: u32) -> u32 {
        let base = fnv1a(key);
        (0..count)
            .max_by_key(|&r| (score(base, r), std::cmp::Reverse(r)))
            .unwrap_or(0)
    }

    /// The owner of `key` among the replicas not in `down`: the highest-scoring live one, so
    /// the components of a replica that went down move to their second choice and nothing
    /// else moves (`--shard.peers`). `None` only when every replica is down.
    pub fn owner_among(key: &str, count: u32, down: &BTreeSet<u32>) -> Option<u32> {
        let base = fnv1a(key);
        (0..count)
            .filter(|r| !down.contains(r))
            .max_by_key(|&r| (score(base, r), std::cmp::Reverse(r)))
    }

    /// Every replica ordered by its score for `key`, highest first: the owner, then the next
    /// choices (`replicas_per_target`'s confirming replicas are taken from here).
    pub fn ranked(key: &str, count: u32) -> Vec<u32> {
        let base = fnv1a(key);
        let mut all: Vec<u32> = (0..count).collect();
        all.sort_by_key(|&r| (std::cmp::Reverse(score(base, r)), r));
        all
    }

    /// Whether this replica owns the component with key `key`.
    pub fn owns(&self, key: &str) -> bool {
        Shard::owner(key, self.count) == self.index
    }

    /// This replica's share of `set`.
    pub fn share(&self, set: &TargetSet) -> TargetSet {
        set.components_where(|key| self.owns(key))
    }

    /// This replica's share of `set` while the replicas in `down` are down: its own share plus
    /// the components of the down replicas whose next choice it is. This replica is never
    /// counted as down.
    pub fn share_among(&self, set: &TargetSet, down: &BTreeSet<u32>) -> TargetSet {
        if down.is_empty() {
            return self.share(set);
        }
        let mut down = down.clone();
        down.remove(&self.index);
        set.components_where(|key| Shard::owner_among(key, self.count, &down) == Some(self.index))
    }
}

/// FNV-1a, 64 bit: stable across builds and machines (replicas of different versions during a
/// rolling update must agree), unlike std's hasher.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The score of replica `r` for a key hashing to `base`: splitmix64's finaliser over both, so
/// the scores of one key are independent across replicas (FNV alone mixes too little for
/// rendezvous hashing to spread evenly).
fn score(base: u64, r: u32) -> u64 {
    let mut z = base ^ (u64::from(r) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_a_number_or_a_pod_name() {
        let s = |i: &str, c| Shard::from_flags(Some(i), Some(c));
        assert_eq!(s("2", 3), Ok(Some(Shard { index: 2, count: 3 })));
        assert_eq!(s("lookout-1", 3), Ok(Some(Shard { index: 1, count: 3 })));
        assert_eq!(s("my-lookout-0", 1), Ok(Some(Shard { index: 0, count: 1 })));
        assert_eq!(Shard::from_flags(None, None), Ok(None));
        for (i, c, msg) in [
            ("3", 3, "--shard.index 3 is not below --shard.count 3"),
            (
                "lookout",
                3,
                "neither a number nor a name ending in -<number>",
            ),
            ("1", 0, "--shard.count must be at least 1"),
        ] {
            let e = s(i, c).unwrap_err().to_string();
            assert!(e.contains(msg), "{e}");
        }
        assert!(Shard::from_flags(Some("1"), None).is_err());
        assert!(Shard::from_flags(None, Some(2)).is_err());
    }

    #[test]
    fn every_key_has_one_owner_and_the_split_is_even() {
        let keys: Vec<String> = (0..30_000).map(|i| format!("target-{i}")).collect();
        let mut per = [0usize; 10];
        for k in &keys {
            let owners: Vec<u32> = (0..10)
                .filter(|&i| {
                    Shard {
                        index: i,
                        count: 10,
                    }
                    .owns(k)
                })
                .collect();
            assert_eq!(owners.len(), 1, "{k}");
            per[owners[0] as usize] += 1;
        }
        // 3,000 expected each; a binomial spread stays well within ±10%.
        for n in per {
            assert!((2_700..=3_300).contains(&n), "{per:?}");
        }
    }

    #[test]
    fn a_down_replicas_keys_move_to_their_next_choice_and_no_other_key_moves() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
        let down: BTreeSet<u32> = [3].into();
        let mut moved = 0;
        for k in &keys {
            let before = Shard::owner(k, 10);
            let after = Shard::owner_among(k, 10, &down).unwrap();
            assert_ne!(after, 3, "{k}");
            if before == 3 {
                moved += 1;
            } else {
                assert_eq!(before, after, "a key of a live replica moved: {k}");
            }
        }
        // About 1/10 of them, spread over the nine others.
        assert!((1_700..=2_300).contains(&moved), "{moved}");
        let all: BTreeSet<u32> = (0..10).collect();
        assert_eq!(Shard::owner_among("k", 10, &all), None);
        assert_eq!(
            Shard::owner_among("k", 10, &BTreeSet::new()),
            Some(Shard::owner("k", 10))
        );
    }

    #[test]
    fn the_ranking_starts_with_the_owner_and_names_each_replica_once() {
        for k in ["a", "db", "wiki-42"] {
            let r = Shard::ranked(k, 7);
            assert_eq!(r[0], Shard::owner(k, 7));
            let mut sorted = r.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..7).collect::<Vec<_>>());
            // With the owner down, the next one owns it.
            let down: BTreeSet<u32> = [r[0]].into();
            assert_eq!(Shard::owner_among(k, 7, &down), Some(r[1]));
        }
    }

    #[test]
    fn adding_a_replica_moves_only_keys_to_the_new_one() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
        let mut moved = 0;
        for k in &keys {
            let (before, after) = (Shard::owner(k, 10), Shard::owner(k, 11));
            if before != after {
                assert_eq!(after, 10, "a key moved between old replicas: {k}");
                moved += 1;
            }
        }
        // About 1/11 of them (1,818).
        assert!((1_500..=2_150).contains(&moved), "{moved}");
    }
}
