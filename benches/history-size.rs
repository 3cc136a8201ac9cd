//! The history store's size and write load with generated results (docs/storage.md).
//!
//! `size`: one day of results for 50 targets at a 60 s and a 5 s interval through the real
//! writer (one flush per minute), then the day's real encoded rollup blocks copied into a fresh
//! store as a year at default retention holds them (7 days of minute blocks, the 5 past the raw
//! window without latency as the writer strips them, 90 of hour blocks, 400 days of day blocks:
//! the days of `Settings::default().retention`), and its file size divided by the targets; and
//! the same without the raw window's days: bytes per target-year outside the raw window.
//! `writes`: 10k and 100k targets at a 60 s interval, one flush per simulated second, over three
//! minutes that cross an hour (so a minute close and an hour roll-up are in it), after a warm-up
//! minute, in a store already holding a day of minute blocks and the hour leaving the raw window
//! then (whose latency the closing minutes strip); disk writes from /proc/self/io `write_bytes` per simulated second, and
//! the wall time of the flushes.
//!
//! Run: `cargo bench --profile dev --bench history-size [-- size|writes]`

use std::time::{Duration, Instant};

use lookout::health::State;
use lookout::history::settings::Settings;
use lookout::history::writer::{Event, Writer};
use lookout::history::{Block, Slot, Store};

const T0: u64 = 1_709_420_400_000; // 2024-03-02T23:00:00Z

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A latency around 20 ms with a long tail, in µs.
    fn latency(&mut self) -> u64 {
        let u = (self.next() % 10_000) as f64 / 10_000.0;
        (15_000.0 + 10_000.0 * u + if u > 0.98 { 200_000.0 * u } else { 0.0 }) as u64
    }
}

fn name(i: usize) -> String {
    format!("target-{i:06}")
}

/// Results of `targets` at `interval_ms` finishing in [from, to).
fn results(rng: &mut Rng, targets: usize, interval_ms: u64, from: u64, to: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for i in 0..targets {
        let phase = (i as u64 * 7919) % interval_ms;
        let mut t = from - from % interval_ms + phase;
        while t < to {
            if t >= from {
                let us = rng.latency();
                let failed = rng.next().is_multiple_of(1000);
                out.push(Event::Result {
                    target: name(i),
                    interval_ms,
                    start_ms: t - us / 1000,
                    finished_ms: t,
                    duration_us: us,
                    failure: failed.then(|| ("timeout".into(), "deadline exceeded".into())),
                });
            }
            t += interval_ms;
        }
    }
    out
}

fn ups(targets: usize, at: u64) -> Vec<Event> {
    (0..targets)
        .map(|i| Event::Change {
            target: name(i),
            from: State::Unknown,
            to: State::Up,
            at_ms: at,
            root_causes: vec![],
            failure: None,
        })
        .collect()
}

fn open(dir: &std::path::Path) -> (Store, Writer) {
    Store::open(dir).expect("open store")
}

fn size(interval_ms: u64) {
    let targets = 50;
    let dir = tempfile::tempdir().unwrap();
    let (_store, mut w) = open(dir.path());
    let settings = Settings::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let day = 86_400_000;
    let start = T0 + 3_600_000; // 00:00, a day boundary
    w.flush(ups(targets, start), start, &settings).unwrap();
    let mut t = start;
    while t < start + day {
        let ev = results(&mut rng, targets, interval_ms, t, t + 60_000);
        t += 60_000;
        w.flush(ev, t + 1, &settings).unwrap();
    }
    drop(w);
    // The day's real blocks, laid out as a year at default retention keeps them.
    let src = rusqlite::Connection::open(dir.path().join("history.sqlite")).unwrap();
    let mut blocks: Vec<(i64, i64, i64, Vec<u8>)> = Vec::new();
    {
        let mut st = src
            .prepare("SELECT tier, target, start, slots FROM rollup ORDER BY tier, start, target")
            .unwrap();
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap();
        for r in rows {
            blocks.push(r.unwrap());
        }
    }
    let by_tier = |tier: i64| -> Vec<&(i64, i64, i64, Vec<u8>)> {
        blocks.iter().filter(|b| b.0 == tier).collect()
    };
    let (minute, hour, daily) = (by_tier(0), by_tier(1), by_tier(2));
    let avg = |v: &[&(i64, i64, i64, Vec<u8>)]| {
        v.iter().map(|b| b.3.len()).sum::<usize>() as f64 / v.len().max(1) as f64
    };
    let keep = settings.retention;
    let days = |r: Duration| (r.as_secs() / 86_400) as i64;
    // Minute blocks past the raw window are stored without latency, as the writer strips them
    // (`Block::without_latency`).
    let bare: Vec<(i64, i64, i64, Vec<u8>)> = minute
        .iter()
        .map(|b| {
            let block = Block::decode(&b.3, 60_000).expect("a minute block");
            let bytes = block
                .clone()
                .without_latency()
                .unwrap_or(block)
                .encode(60_000);
            (b.0, b.1, b.2, bytes)
        })
        .collect();
    let raw_days = days(keep.raw);
    let year = lay_out(&minute, &bare, &hour, &daily, keep, 0);
    let outside = lay_out(&minute, &bare, &hour, &daily, keep, raw_days);
    let full_day_block = {
        // A day block with all 32 days: the one-day block's slot repeated.
        let one = daily.first().map(|b| b.3.len()).unwrap_or(0);
        one.saturating_sub(1) * 32 + 8
    };
    let kib = |bytes: u64| bytes as f64 / targets as f64 / 1024.0;
    println!(
        "interval {}s: minute block {:.0} B/hour ({:.0} B past the raw window), hour block \
         {:.0} B/day, day slot {} B; per target at default retention: {:.1} KiB outside the \
         raw window ({}d), {:.1} KiB for the whole year of rollups (files {} and {} KiB for \
         {targets} targets; full 32-day blocks would add {:.1} KiB per target)",
        interval_ms / 1000,
        avg(&minute),
        bare.iter().map(|b| b.3.len()).sum::<usize>() as f64 / bare.len().max(1) as f64,
        avg(&hour),
        daily.first().map(|b| b.3.len()).unwrap_or(0),
        kib(outside),
        raw_days,
        kib(year),
        outside / 1024,
        year / 1024,
        (full_day_block as f64 - avg(&daily)) * ((days(keep.day) + 31) / 32) as f64 / 1024.0,
    );
}

type Row = (i64, i64, i64, Vec<u8>);

/// A fresh store holding the day's blocks laid out as `keep` holds them, less the newest `skip`
/// days of minutes and hours (those in the raw window), vacuumed and checkpointed; its size.
fn lay_out(
    minute: &[&Row],
    bare: &[Row],
    hour: &[&Row],
    daily: &[&Row],
    keep: lookout::history::settings::Retention,
    skip: i64,
) -> u64 {
    let days = |r: Duration| (r.as_secs() / 86_400) as i64;
    let raw_days = days(keep.raw);
    let out = tempfile::tempdir().unwrap();
    drop(open(out.path()));
    let mut dst = rusqlite::Connection::open(out.path().join("history.sqlite")).unwrap();
    let tx = dst.transaction().unwrap();
    {
        let mut ins = tx
            .prepare("INSERT OR REPLACE INTO rollup (tier, target, start, slots) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        // Day k back from now (k = 0 the newest).
        let d = 86_400_000i64;
        for k in skip..days(keep.minute) {
            if k < raw_days {
                for b in minute {
                    ins.execute((0, b.1, b.2 - k * d, &b.3)).unwrap();
                }
            } else {
                for b in bare {
                    ins.execute((0, b.1, b.2 - k * d, &b.3)).unwrap();
                }
            }
        }
        for k in skip..days(keep.hour) {
            for b in hour {
                ins.execute((1, b.1, b.2 - k * d, &b.3)).unwrap();
            }
        }
        // A day block holds 32 days; the day's block stands for each of them (full blocks: an
        // upper bound). All of them, also outside the raw window: its two days are in the newest.
        for k in 0..(days(keep.day) + 31) / 32 {
            for b in daily {
                ins.execute((2, b.1, b.2 - k * 32 * d, &b.3)).unwrap();
            }
        }
    }
    tx.commit().unwrap();
    dst.execute_batch("VACUUM").unwrap();
    // Everything into the file itself, so its size is the store's.
    dst.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    std::fs::metadata(out.path().join("history.sqlite"))
        .unwrap()
        .len()
}

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn writes(targets: usize) {
    let interval_ms = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let (_store, mut w) = open(dir.path());
    let settings = Settings::default();
    let mut rng = Rng(42);
    // Warm-up: every target known and up, one minute of results, ending 00:58:00.
    let start = T0 + 3_600_000 - 3 * 60_000;
    let mut ev = ups(targets, start - 60_000);
    ev.extend(results(
        &mut rng,
        targets,
        interval_ms,
        start - 60_000,
        start,
    ));
    w.flush(ev, start, &settings).unwrap();
    // A store that already holds a day of minutes, as one in use does (each target's blocks
    // then span pages; a fresh store packs every target's one block into a few), written before
    // the count starts: the day before the run, and the hour that passes out of the raw window
    // (48h) as the run crosses an hour, whose latency the closing minutes strip.
    {
        let c = rusqlite::Connection::open(dir.path().join("history.sqlite")).unwrap();
        let mut block = Block::default();
        for i in 0..60u8 {
            let mut s = Slot {
                successes: 1,
                up_ms: 60_000,
                latency_sum_us: 20_000,
                latency_max_us: 20_000,
                ..Default::default()
            };
            s.sketch.add(20_000);
            block.set(i, s);
        }
        let bytes = block.encode(60_000);
        let run_hour = (start / 3_600_000 + 1) * 3_600_000;
        let hours: Vec<u64> = std::iter::once(run_hour - 49 * 3_600_000)
            .chain((1..=24).map(|k| run_hour - k * 3_600_000))
            .collect();
        let ids: Vec<i64> = c
            .prepare("SELECT id FROM targets")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let tx = c.unchecked_transaction().unwrap();
        for id in ids {
            for &hour in &hours {
                tx.execute(
                    "INSERT OR IGNORE INTO rollup (tier, target, start, slots) VALUES (0, ?1, ?2, ?3)",
                    (id, hour as i64, &bytes),
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
        // Into the file before the count starts: the run's writes are the writer's.
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let before = write_bytes();
    let wall = Instant::now();
    let mut slowest = Duration::ZERO;
    let seconds = 180;
    for s in 0..seconds {
        let t = start + s * 1000;
        let ev = results(&mut rng, targets, interval_ms, t, t + 1000);
        let f = Instant::now();
        w.flush(ev, t + 1000, &settings).unwrap();
        slowest = slowest.max(f.elapsed());
    }
    let written = write_bytes() - before;
    let db = dir.path().join("history.sqlite");
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    println!(
        "{targets} targets at 60s: {:.0} KiB/s written ({} MiB over {seconds} simulated s, \
         which closed 3 minutes and rolled 1 hour); flushes took {:.1} s of wall time, the \
         slowest {:.0} ms; file {} MiB",
        written as f64 / seconds as f64 / 1024.0,
        written / (1 << 20),
        wall.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
        size >> 20,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; the first other argument picks the part.
    let what = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    if what.is_empty() || what == "size" {
        size(60_000);
        size(5_000);
    }
    if what.is_empty() || what == "writes" {
        writes(10_000);
        writes(100_000);
    }
}
