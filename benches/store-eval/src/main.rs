//! Measures the three candidate engines for lookout's history store (docs/storage.md):
//! redb, SQLite (rusqlite, WAL, synchronous=FULL) and fjall, each with its durable setting.
//!
//! 1. Write cost of one batch (1,000 and 10,000 raw rows in one transaction, one fsync).
//! 2. File size of a year's rollups at steady state (minute 14d, hour 90d, day 400d) per target,
//!    after a day of churn (old rows deleted, new ones written) so free-space reuse shows.
//! 3. Range-scan latency: 90 day rows of one target, 1,440 minute rows (24 h) of one target.
//!
//! Run: `cargo run --release --manifest-path benches/store-eval/Cargo.toml -- [--targets N]`
//! (default 20 targets for the size test; about a minute in all on 2 cores).

use std::path::Path;
use std::time::{Duration, Instant};

const MINUTE_ROWS: u64 = 14 * 1440;
const HOUR_ROWS: u64 = 90 * 24;
const DAY_ROWS: u64 = 400;

/// A raw result: key (start ms, target) and a 12-byte value (duration µs, kind, reason len).
fn raw_row(i: u64) -> ([u8; 12], [u8; 12]) {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&(1_700_000_000_000 + i * 7).to_be_bytes());
    k[8..].copy_from_slice(&((i % 10_000) as u32).to_be_bytes());
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&(12_345 + (i % 1000) as u32).to_le_bytes());
    v[4] = (i % 3) as u8;
    (k, v)
}

/// A rollup row as a plain fixed record would be: counts, times up/down/maintenance/unknown,
/// latency sum and max, and 8 sketch bytes: 40 bytes.
fn rollup_value(i: u64) -> [u8; 40] {
    let mut v = [0u8; 40];
    v[0..4].copy_from_slice(&1u32.to_le_bytes());
    v[8..12].copy_from_slice(&60_000u32.to_le_bytes());
    v[24..28].copy_from_slice(&(20_000 + (i % 5000) as u32).to_le_bytes());
    v[28..32].copy_from_slice(&(20_000 + (i % 5000) as u32).to_le_bytes());
    v[32] = (i % 40) as u8;
    v
}

/// Rollup key: tier, target, period start (seconds).
fn rollup_key(tier: u8, target: u32, start: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = tier;
    k[1..5].copy_from_slice(&target.to_be_bytes());
    k[5..].copy_from_slice(&start.to_be_bytes());
    k
}

fn tier_rows() -> [(u8, u64, u64); 3] {
    [(0, 60, MINUTE_ROWS), (1, 3600, HOUR_ROWS), (2, 86_400, DAY_ROWS)]
}

trait Engine {
    fn name(&self) -> &'static str;
    /// Writes rows in one durable transaction.
    fn put_batch(&mut self, rows: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>);
    /// Deletes keys in [from, to) in one durable transaction.
    fn delete_range(&mut self, from: &[u8], to: &[u8]);
    /// Counts rows in [from, to).
    fn scan(&self, from: &[u8], to: &[u8]) -> usize;
    /// Bytes on disk.
    fn size(&self) -> u64;
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() { dir_size(&e.path()) } else { m.len() };
        }
    }
    n
}

struct Redb(redb::Database, std::path::PathBuf);
const RT: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");
impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn put_batch(&mut self, rows: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) {
        let tx = self.0.begin_write().unwrap();
        {
            let mut t = tx.open_table(RT).unwrap();
            for (k, v) in rows {
                t.insert(k.as_slice(), v.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn delete_range(&mut self, from: &[u8], to: &[u8]) {
        let tx = self.0.begin_write().unwrap();
        {
            let mut t = tx.open_table(RT).unwrap();
            t.retain_in(from..to, |_, _| false).unwrap();
        }
        tx.commit().unwrap();
    }
    fn scan(&self, from: &[u8], to: &[u8]) -> usize {
        use redb::ReadableDatabase;
        let tx = self.0.begin_read().unwrap();
        let t = tx.open_table(RT).unwrap();
        t.range(from..to).unwrap().map(|r| r.unwrap().1.value().len()).count()
    }
    fn size(&self) -> u64 {
        std::fs::metadata(&self.1).unwrap().len()
    }
}

struct Sqlite(rusqlite::Connection, std::path::PathBuf);
impl Sqlite {
    fn open(dir: &Path) -> Sqlite {
        let p = dir.join("eval.sqlite");
        let c = rusqlite::Connection::open(&p).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        // FULL: the WAL is fsynced at every commit (NORMAL may lose the last commits on power loss).
        c.pragma_update(None, "synchronous", "FULL").unwrap();
        c.execute_batch("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;")
            .unwrap();
        Sqlite(c, dir.to_path_buf())
    }
}
impl Engine for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn put_batch(&mut self, rows: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) {
        let tx = self.0.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT OR REPLACE INTO t (k, v) VALUES (?1, ?2)")
                .unwrap();
            for (k, v) in rows {
                st.execute((k, v)).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn delete_range(&mut self, from: &[u8], to: &[u8]) {
        self.0
            .execute("DELETE FROM t WHERE k >= ?1 AND k < ?2", (from, to))
            .unwrap();
    }
    fn scan(&self, from: &[u8], to: &[u8]) -> usize {
        let mut st = self
            .0
            .prepare_cached("SELECT v FROM t WHERE k >= ?1 AND k < ?2 ORDER BY k")
            .unwrap();
        let rows = st
            .query_map((from, to), |r| r.get::<_, Vec<u8>>(0))
            .unwrap();
        rows.map(|r| r.unwrap().len()).count()
    }
    fn size(&self) -> u64 {
        // Checkpoint first, so the WAL's pages count where they end up.
        self.0
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        dir_size(&self.1)
    }
}

struct Fjall(fjall::Keyspace, fjall::PartitionHandle, std::path::PathBuf);
impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn put_batch(&mut self, rows: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) {
        let mut b = self.0.batch();
        for (k, v) in rows {
            b.insert(&self.1, k, v);
        }
        b.commit().unwrap();
        self.0.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn delete_range(&mut self, from: &[u8], to: &[u8]) {
        let keys: Vec<_> = self
            .1
            .range(from.to_vec()..to.to_vec())
            .map(|kv| kv.unwrap().0)
            .collect();
        let mut b = self.0.batch();
        for k in keys {
            b.remove(&self.1, k);
        }
        b.commit().unwrap();
        self.0.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn scan(&self, from: &[u8], to: &[u8]) -> usize {
        self.1
            .range(from.to_vec()..to.to_vec())
            .map(|kv| kv.unwrap().1.len())
            .count()
    }
    fn size(&self) -> u64 {
        self.0.persist(fjall::PersistMode::SyncAll).unwrap();
        dir_size(&self.2)
    }
}

fn open(which: &str, dir: &Path) -> Box<dyn Engine> {
    match which {
        "redb" => {
            let p = dir.join("eval.redb");
            Box::new(Redb(redb::Database::create(&p).unwrap(), p))
        }
        "sqlite" => Box::new(Sqlite::open(dir)),
        _ => {
            let ks = fjall::Config::new(dir.join("fjall")).open().unwrap();
            let p = ks
                .open_partition("t", fjall::PartitionCreateOptions::default())
                .unwrap();
            Box::new(Fjall(ks, p, dir.join("fjall")))
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut targets = 20u32;
    let mut engines = vec!["redb", "sqlite", "fjall"];
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--targets" => {
                targets = args[i + 1].parse().unwrap();
                i += 1;
            }
            "--engines" => {
                engines = args[i + 1].split(',').map(|s| &*s.to_owned().leak()).collect();
                i += 1;
            }
            _ => panic!("usage: store-eval [--targets N] [--engines redb,sqlite,fjall]"),
        }
        i += 1;
    }
    let base = std::env::var_os("STORE_EVAL_DIR").map(std::path::PathBuf::from);
    println!(
        "engine | batch 1k (ms) | batch 10k (ms) | rollups/target (KiB) | per row (B) | scan 90 days (µs) | scan 1440 minutes (µs)"
    );
    for which in engines {
        let dir = match &base {
            Some(b) => tempfile::tempdir_in(b).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let mut e = open(which, dir.path());
        // 1. Batch writes: 20 batches of each size, median.
        let mut next = 0u64;
        let mut batch = |e: &mut Box<dyn Engine>, n: u64| {
            let mut times = Vec::new();
            for _ in 0..20 {
                let from = next;
                next += n;
                let mut rows = (from..from + n).map(|i| {
                    let (k, v) = raw_row(i);
                    (k.to_vec(), v.to_vec())
                });
                let t = Instant::now();
                e.put_batch(&mut rows);
                times.push(t.elapsed());
            }
            median(times)
        };
        let b1k = batch(&mut e, 1000);
        let b10k = batch(&mut e, 10_000);
        // A separate store for the rollups, so the raw rows above do not count.
        drop(e);
        let dir2 = match &base {
            Some(b) => tempfile::tempdir_in(b).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let mut e = open(which, dir2.path());
        // 2. Steady-state rollups: each tier's retained rows, written as the writer would (one
        // transaction per period boundary is too slow to simulate a year; batches of a tier's
        // rows for all targets instead), then one day of churn: 1,440 new minutes per target
        // written and the oldest 1,440 deleted.
        let t0 = 1_700_000_000u64 / 86_400 * 86_400;
        for (tier, step, rows) in tier_rows() {
            for chunk in (0..rows).collect::<Vec<_>>().chunks(1440) {
                let mut it = chunk.iter().flat_map(|&r| {
                    (0..targets).map(move |t| {
                        (
                            rollup_key(tier, t, t0 + r * step).to_vec(),
                            rollup_value(r).to_vec(),
                        )
                    })
                });
                e.put_batch(&mut it);
            }
        }
        for hour in 0..24u64 {
            let mut it = (0..60u64).flat_map(|m| {
                let r = MINUTE_ROWS + hour * 60 + m;
                (0..targets).map(move |t| {
                    (
                        rollup_key(0, t, t0 + r * 60).to_vec(),
                        rollup_value(r).to_vec(),
                    )
                })
            });
            e.put_batch(&mut it);
            for t in 0..targets {
                e.delete_range(
                    &rollup_key(0, t, t0 + hour * 3600),
                    &rollup_key(0, t, t0 + (hour + 1) * 3600),
                );
            }
        }
        let size = e.size();
        let rows_per_target = MINUTE_ROWS + HOUR_ROWS + DAY_ROWS;
        let per_target = size as f64 / f64::from(targets);
        // 3. Range scans of target 7, 200 times each, median.
        let scan = |e: &Box<dyn Engine>, tier: u8, from: u64, n: u64, step: u64| {
            let mut times = Vec::new();
            for _ in 0..200 {
                let t = Instant::now();
                let got = e.scan(
                    &rollup_key(tier, 7, from),
                    &rollup_key(tier, 7, from + n * step),
                );
                times.push(t.elapsed());
                assert_eq!(got as u64, n);
            }
            median(times)
        };
        let days = scan(&e, 2, t0 + 300 * 86_400, 90, 86_400);
        let minutes = scan(&e, 0, t0 + 5 * 86_400, 1440, 60);
        println!(
            "{which} | {:.2} | {:.2} | {:.0} | {:.1} | {} | {}",
            b1k.as_secs_f64() * 1e3,
            b10k.as_secs_f64() * 1e3,
            per_target / 1024.0,
            per_target / rows_per_target as f64,
            days.as_micros(),
            minutes.as_micros(),
        );
        let _ = e.name();
    }
}
