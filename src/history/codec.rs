//! The rollup record and its compact encoding.
//!
//! A rollup `Slot` holds one period of one target (a minute, an hour or a day). Slots are stored
//! in blocks, one row per target and block (a minute block is an hour, an hour block a day, a day
//! block 32 days), so the engine's per-row overhead is paid once per block instead of once per
//! minute. A block is a varint bitmap of the slots present followed by each present slot: a tag
//! byte saying which fields are not zero (an all-up slot and a one-sample latency cost no bytes
//! of their own), then those fields as LEB128 varints. Latency sums and maxima are stored in
//! units of 10 µs (`LATENCY_UNIT_US`, rounded to the nearest): a probe's latency is
//! 20 ms, not 20.003 ms, for the page and for percentiles (whose buckets are ±9% wide anyway), and
//! at 60 s a minute costs 4 bytes instead of 5 (schema version 2; version 1 kept µs).

/// Latency buckets: bucket `i` holds latencies up to `64 µs · 2^(i/4)` (±9%), the last one
/// everything longer (up to ~15 minutes before it saturates).
pub const BUCKETS: usize = 96;

/// The bucket of a latency in microseconds.
pub fn bucket(us: u64) -> u8 {
    if us <= 64 {
        return 0;
    }
    let i = (4.0 * (us as f64 / 64.0).log2()).ceil();
    (i as usize).min(BUCKETS - 1) as u8
}

/// The upper bound of bucket `i`, in microseconds.
pub fn bucket_bound(i: u8) -> f64 {
    64.0 * 2f64.powf(f64::from(i) / 4.0)
}

/// A small mergeable latency sketch: counts per bucket, sparse and sorted by bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch(pub Vec<(u8, u32)>);

impl Sketch {
    /// Counts one latency.
    pub fn add(&mut self, us: u64) {
        self.add_n(bucket(us), 1);
    }

    fn add_n(&mut self, b: u8, n: u32) {
        match self.0.binary_search_by_key(&b, |e| e.0) {
            Ok(i) => self.0[i].1 += n,
            Err(i) => self.0.insert(i, (b, n)),
        }
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Sketch) {
        for &(b, n) in &other.0 {
            self.add_n(b, n);
        }
    }

    /// The `q` quantile's bucket bound in microseconds (`None` when empty).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.0.iter().map(|e| u64::from(e.1)).sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for &(b, n) in &self.0 {
            seen += u64::from(n);
            if seen >= rank {
                return Some(bucket_bound(b));
            }
        }
        self.0.last().map(|e| bucket_bound(e.0))
    }
}

/// One period of one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slot {
    /// Successful probes that finished in the period.
    pub successes: u32,
    /// Failed probes that finished in the period.
    pub failures: u32,
    /// Time up, in ms.
    pub up_ms: u64,
    /// Time down or blocked, in ms.
    pub down_ms: u64,
    /// Time in a maintenance window, in ms (whatever the state).
    pub maintenance_ms: u64,
    /// Time known to lookout with the state unknown, in ms.
    pub unknown_ms: u64,
    /// Sum of successful probes' durations, µs.
    pub latency_sum_us: u64,
    /// The longest successful probe, µs.
    pub latency_max_us: u64,
    /// Successful probes' durations.
    pub sketch: Sketch,
}

impl Slot {
    /// Adds `other` (a shorter period inside this one).
    pub fn merge(&mut self, o: &Slot) {
        self.successes += o.successes;
        self.failures += o.failures;
        self.up_ms += o.up_ms;
        self.down_ms += o.down_ms;
        self.maintenance_ms += o.maintenance_ms;
        self.unknown_ms += o.unknown_ms;
        self.latency_sum_us += o.latency_sum_us;
        self.latency_max_us = self.latency_max_us.max(o.latency_max_us);
        self.sketch.merge(&o.sketch);
    }

    /// Whether it holds latency (a sum, a max or a sketch).
    pub fn has_latency(&self) -> bool {
        self.latency_sum_us != 0 || self.latency_max_us != 0 || !self.sketch.0.is_empty()
    }

    /// Drops the latency, keeping counts and times (a minute past the raw window).
    pub fn drop_latency(&mut self) {
        self.latency_sum_us = 0;
        self.latency_max_us = 0;
        self.sketch.0.clear();
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        *self == Slot::default()
    }
}

/// The unit of stored latency sums and maxima, µs.
pub const LATENCY_UNIT_US: u64 = 10;

/// `us` in stored units, rounded to the nearest.
fn to_units(us: u64) -> u64 {
    us.saturating_add(LATENCY_UNIT_US / 2) / LATENCY_UNIT_US
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn get(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

const SUCC: u8 = 1;
const FAIL: u8 = 2;
const UP_FULL: u8 = 4;
const UP: u8 = 8;
const DOWN: u8 = 16;
const MAINT: u8 = 32;
const UNKNOWN: u8 = 64;
const LATENCY: u8 = 128;

fn encode_slot(out: &mut Vec<u8>, s: &Slot, len_ms: u64) {
    let mut tag = 0;
    let flag = |c: bool, f: u8| if c { f } else { 0 };
    tag |= flag(s.successes > 0, SUCC) | flag(s.failures > 0, FAIL);
    tag |= if s.up_ms == len_ms {
        UP_FULL
    } else {
        flag(s.up_ms > 0, UP)
    };
    tag |= flag(s.down_ms > 0, DOWN) | flag(s.maintenance_ms > 0, MAINT);
    tag |= flag(s.unknown_ms > 0, UNKNOWN) | flag(!s.sketch.0.is_empty(), LATENCY);
    out.push(tag);
    for (f, v) in [
        (SUCC, u64::from(s.successes)),
        (FAIL, u64::from(s.failures)),
        (UP, s.up_ms),
        (DOWN, s.down_ms),
        (MAINT, s.maintenance_ms),
        (UNKNOWN, s.unknown_ms),
    ] {
        if tag & f != 0 {
            put(out, v);
        }
    }
    if tag & LATENCY != 0 {
        put(out, to_units(s.latency_max_us));
        // Latency is of successful probes only, so one success is one sample: its sum and its
        // bucket follow from the max.
        if s.successes != 1 {
            put(out, to_units(s.latency_sum_us));
            put(out, s.sketch.0.len() as u64);
            let mut prev = 0u8;
            for &(b, n) in &s.sketch.0 {
                put(out, u64::from(b - prev));
                put(out, u64::from(n));
                prev = b;
            }
        }
    }
}

fn decode_slot(b: &[u8], at: &mut usize, len_ms: u64) -> Option<Slot> {
    let tag = *b.get(*at)?;
    *at += 1;
    let mut s = Slot::default();
    let mut field = |f: u8| -> Option<u64> { if tag & f != 0 { get(b, at) } else { Some(0) } };
    s.successes = u32::try_from(field(SUCC)?).ok()?;
    s.failures = u32::try_from(field(FAIL)?).ok()?;
    s.up_ms = field(UP)?;
    s.down_ms = field(DOWN)?;
    s.maintenance_ms = field(MAINT)?;
    s.unknown_ms = field(UNKNOWN)?;
    if tag & UP_FULL != 0 {
        s.up_ms = len_ms;
    }
    if tag & LATENCY != 0 {
        s.latency_max_us = get(b, at)?.saturating_mul(LATENCY_UNIT_US);
        if s.successes == 1 {
            s.latency_sum_us = s.latency_max_us;
            s.sketch.0.push((bucket(s.latency_max_us), 1));
        } else {
            s.latency_sum_us = get(b, at)?.saturating_mul(LATENCY_UNIT_US);
            let n = get(b, at)?;
            let mut prev = 0u64;
            for _ in 0..n.min(BUCKETS as u64) {
                prev += get(b, at)?;
                let count = u32::try_from(get(b, at)?).ok()?;
                s.sketch.0.push((u8::try_from(prev).ok()?, count));
            }
        }
    }
    Some(s)
}

/// A slot's times in ms: up, down, maintenance (all that uptime sums).
pub type Times = [u64; 3];

/// Reads one encoded slot's times and steps over the rest of it.
fn decode_times(b: &[u8], at: &mut usize, len_ms: u64) -> Option<Times> {
    let tag = *b.get(*at)?;
    *at += 1;
    let mut field = |f: u8| -> Option<u64> { if tag & f != 0 { get(b, at) } else { Some(0) } };
    let successes = field(SUCC)?;
    field(FAIL)?;
    let mut up = field(UP)?;
    let down = field(DOWN)?;
    let maintenance = field(MAINT)?;
    field(UNKNOWN)?;
    if tag & UP_FULL != 0 {
        up = len_ms;
    }
    if tag & LATENCY != 0 {
        get(b, at)?;
        if successes != 1 {
            get(b, at)?;
            let n = get(b, at)?;
            for _ in 0..n.min(BUCKETS as u64) {
                get(b, at)?;
                get(b, at)?;
            }
        }
    }
    Some([up, down, maintenance])
}

/// A block of up to 64 slots of `len_ms` each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Block(pub Vec<(u8, Slot)>);

impl Block {
    /// Sets slot `i`, replacing what was there.
    pub fn set(&mut self, i: u8, s: Slot) {
        match self.0.binary_search_by_key(&i, |e| e.0) {
            Ok(k) => self.0[k].1 = s,
            Err(k) => self.0.insert(k, (i, s)),
        }
    }

    /// The encoded block.
    pub fn encode(&self, len_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 6 * self.0.len());
        let bits = self.0.iter().fold(0u64, |m, (i, _)| m | (1 << i));
        put(&mut out, bits);
        for (_, s) in &self.0 {
            encode_slot(&mut out, s, len_ms);
        }
        out
    }

    /// The block without latency in any slot (`None` when none had any: nothing to rewrite).
    pub fn without_latency(mut self) -> Option<Block> {
        if !self.0.iter().any(|(_, s)| s.has_latency()) {
            return None;
        }
        for (_, s) in &mut self.0 {
            s.drop_latency();
        }
        Some(self)
    }

    /// Decodes only each slot's times, stepping over latency, without allocating per slot
    /// (uptime reads nothing else); `None` when it is malformed.
    pub fn decode_times(b: &[u8], len_ms: u64) -> Option<Vec<(u8, Times)>> {
        let mut at = 0;
        let bits = get(b, &mut at)?;
        let mut out = Vec::with_capacity(bits.count_ones() as usize);
        for i in 0..64u8 {
            if bits & (1 << i) != 0 {
                out.push((i, decode_times(b, &mut at, len_ms)?));
            }
        }
        Some(out)
    }

    /// Decodes a block; `None` when it is malformed.
    pub fn decode(b: &[u8], len_ms: u64) -> Option<Block> {
        let mut at = 0;
        let bits = get(b, &mut at)?;
        let mut out = Vec::with_capacity(bits.count_ones() as usize);
        for i in 0..64u8 {
            if bits & (1 << i) != 0 {
                out.push((i, decode_slot(b, &mut at, len_ms)?));
            }
        }
        Some(Block(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_a_quiet_minute_is_small() {
        let mut one = Slot {
            successes: 1,
            up_ms: 60_000,
            latency_sum_us: 23_450,
            latency_max_us: 23_450,
            ..Default::default()
        };
        one.sketch.add(23_450);
        let mut many = Slot {
            successes: 11,
            failures: 1,
            up_ms: 50_000,
            down_ms: 7_000,
            maintenance_ms: 3_000,
            latency_max_us: 90_000,
            ..Default::default()
        };
        for us in [
            100,
            2_000,
            2_100,
            90_000,
            10,
            10,
            20,
            30,
            1_000_000_000,
            40,
            50,
        ] {
            many.sketch.add(us);
            many.latency_sum_us += us;
        }
        let mut b = Block::default();
        b.set(5, many.clone());
        b.set(0, one.clone());
        let bytes = b.encode(60_000);
        assert_eq!(Block::decode(&bytes, 60_000).unwrap(), b);
        let times: Vec<(u8, Times)> =
            b.0.iter()
                .map(|(i, s)| (*i, [s.up_ms, s.down_ms, s.maintenance_ms]))
                .collect();
        assert_eq!(Block::decode_times(&bytes, 60_000).unwrap(), times);
        let mut quiet = Block::default();
        quiet.set(0, one);
        // Bitmap (1) + tag (1) + successes (1) + max (2: 2,345 units of 10 µs).
        assert_eq!(quiet.encode(60_000).len(), 5);
        assert_eq!(Block::decode(&[0xff], 60_000), None);

        // Past the raw window: counts and times stay, latency goes, and a minute of twelve
        // successes all up is two bytes (tag, successes).
        let bare = b.clone().without_latency().unwrap();
        assert_eq!(bare.0.len(), 2);
        for ((i, s), (j, t)) in bare.0.iter().zip(&b.0) {
            assert_eq!(i, j);
            assert_eq!((s.successes, s.failures), (t.successes, t.failures));
            assert_eq!(
                [s.up_ms, s.down_ms, s.maintenance_ms, s.unknown_ms],
                [t.up_ms, t.down_ms, t.maintenance_ms, t.unknown_ms]
            );
            assert!(!s.has_latency());
        }
        let bytes = bare.encode(60_000);
        assert_eq!(Block::decode(&bytes, 60_000).unwrap(), bare);
        assert_eq!(bare.without_latency(), None, "nothing left to drop");
        let mut twelve = Slot {
            successes: 12,
            up_ms: 60_000,
            ..Default::default()
        };
        twelve.drop_latency();
        let mut one_minute = Block::default();
        one_minute.set(0, twelve);
        assert_eq!(one_minute.encode(60_000).len(), 1 + 2);
    }

    #[test]
    fn latency_is_kept_to_the_nearest_10_us() {
        let mut s = Slot {
            successes: 2,
            latency_sum_us: 40_014,
            latency_max_us: 20_006,
            ..Default::default()
        };
        s.sketch.add(20_006);
        s.sketch.add(20_008);
        let mut b = Block::default();
        b.set(3, s);
        let back = Block::decode(&b.encode(60_000), 60_000).unwrap();
        assert_eq!(back.0[0].1.latency_sum_us, 40_010);
        assert_eq!(back.0[0].1.latency_max_us, 20_010);
        // The sketch's buckets are stored as they are.
        assert_eq!(back.0[0].1.sketch, b.0[0].1.sketch);
    }

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let mut s = Sketch::default();
        for us in 1..=100u64 {
            s.add(us * 1000);
        }
        let p50 = s.quantile(0.5).unwrap();
        assert!((50_000.0..=50_000.0 * 1.2).contains(&p50), "{p50}");
        let p95 = s.quantile(0.95).unwrap();
        assert!((95_000.0..=95_000.0 * 1.2).contains(&p95), "{p95}");
    }
}
