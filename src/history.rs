//! The history store: what happened to each scheduled target, kept on disk in one SQLite file
//! (`--storage.path`/history.sqlite; docs/storage.md says why SQLite).
//!
//! Fed by a writer task (`writer`) from a queued subscription of the result bus and the
//! scheduler's state changes, in batches: one transaction and one fsync per
//! `history.flush_interval`, whatever the number of targets, so `kill -9` loses at most the batch
//! being gathered. It keeps raw results for `retention.raw`, rollups by minute, hour and day
//! (`codec::Slot`: counts, time up/down/maintenance/unknown weighted by how long each state held,
//! latency sum, max and a log-bucket sketch), incidents and every state change.
//!
//! The query API (`Store::uptime`, `days`, `latency`, `incidents`, `state_changes`, `slo`) is
//! plain data for the status page and JSON. Queries are short blocking reads; call them from a
//! blocking thread in async code. They see what has been rolled up: minutes up to the last closed
//! one (rollups lag the clock by at most a minute and a flush).
//!
//! The file is versioned (SQLite's `application_id` and `user_version`). A file that is not a
//! SQLite database, another program's database, a newer schema or a damaged file is refused with
//! the file's name and the reason, and never written to.

pub mod codec;
pub mod settings;
pub mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub use codec::{Block, Sketch, Slot};
pub use settings::{Section, Settings};

use crate::health::State;

/// The store's file inside `--storage.path`.
pub const FILE_NAME: &str = "history.sqlite";
/// SQLite `application_id` of lookout's history ("lkht").
pub const APPLICATION_ID: i32 = 0x6c6b_6874;
/// The schema version this build writes and reads (2: latency in 10 µs units; 1 kept µs). A file
/// of any other version is refused, not converted.
pub const SCHEMA_VERSION: i32 = 3;

/// Why the store cannot be opened or read.
#[derive(Debug)]
pub struct HistoryError {
    /// The file concerned.
    pub file: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for HistoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "history store {}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for HistoryError {}

/// A rollup tier: the period of one slot and of one block (a row) of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Minutes, in blocks of an hour.
    Minute = 0,
    /// Hours, in blocks of a day.
    Hour = 1,
    /// Days, in blocks of 32 days.
    Day = 2,
}

impl Tier {
    /// A slot's length in ms.
    pub fn slot_ms(self) -> u64 {
        match self {
            Tier::Minute => 60_000,
            Tier::Hour => 3_600_000,
            Tier::Day => 86_400_000,
        }
    }

    /// How many slots make a block.
    pub fn per_block(self) -> u64 {
        match self {
            Tier::Minute => 60,
            Tier::Hour => 24,
            Tier::Day => 32,
        }
    }

    /// A block's length in ms.
    pub fn block_ms(self) -> u64 {
        self.slot_ms() * self.per_block()
    }

    /// The start of the block holding the slot that starts at `at` (ms), and its index.
    pub fn locate(self, at: u64) -> (u64, u8) {
        let block = at / self.block_ms() * self.block_ms();
        (block, ((at - block) / self.slot_ms()) as u8)
    }
}

/// How long a target was up, down, in maintenance and unknown (not probed, lookout not running,
/// or not yet rolled up) in a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uptime {
    /// Up.
    pub up: Duration,
    /// Down or blocked (failing, whatever the cause).
    pub down: Duration,
    /// In a maintenance window, whatever the state.
    pub maintenance: Duration,
    /// The rest of the range.
    pub unknown: Duration,
}

impl Uptime {
    /// `up / (up + down)`: the share of the known time outside maintenance it was up; `None`
    /// when nothing is known.
    pub fn ratio(&self) -> Option<f64> {
        let known = (self.up + self.down).as_secs_f64();
        (known > 0.0).then(|| self.up.as_secs_f64() / known)
    }
}

/// One UTC day of a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    /// Its start (00:00 UTC).
    pub start: SystemTime,
    /// `Uptime::ratio` of the day; `None` when nothing is known.
    pub up_ratio: Option<f64>,
    /// The share of the day in maintenance.
    pub maintenance_ratio: f64,
    /// Incidents that overlap the day.
    pub incidents: u32,
}

/// Latency over one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The step's start.
    pub at: SystemTime,
    /// Median (a bucket bound of the sketch: within 19% above the truth).
    pub p50: Duration,
    /// 95th percentile (likewise).
    pub p95: Duration,
    /// The longest probe.
    pub max: Duration,
}

/// A time a target was failing: from its change to down or blocked until it was up again.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// When it started failing.
    pub start: SystemTime,
    /// When it was up again; `None` while open.
    pub end: Option<SystemTime>,
    /// Its state when it started (down or blocked).
    pub state: State,
    /// The failure's kind (`FailureKind::as_str`), if known.
    pub kind: Option<String>,
    /// The failure's reason.
    pub reason: Option<String>,
    /// Every root cause named during the incident.
    pub root_causes: Vec<String>,
}

/// One recorded change of a target's state.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    /// When.
    pub at: SystemTime,
    /// From.
    pub from: State,
    /// To.
    pub to: State,
    /// The root causes after the change.
    pub root_causes: Vec<String>,
    /// The latest failure's kind at the change.
    pub kind: Option<String>,
    /// And its reason.
    pub reason: Option<String>,
}

/// An uptime objective's standing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SloStatus {
    /// The share of the error budget (`1 - objective` of the window's known time) not spent:
    /// 1 untouched, 0 spent, below 0 overspent.
    pub budget_remaining: f64,
    /// How fast the budget burns over the last hour: the hour's failing share over
    /// `1 - objective` (1 spends exactly the budget over the window).
    pub burn_rate: f64,
}

/// Error budget left and burn rate for `objective` (0.999 for 99.9%) from the window's uptime
/// and the last hour's.
pub fn slo_status(objective: f64, window: &Uptime, last_hour: &Uptime) -> SloStatus {
    let allowed = (1.0 - objective).max(f64::EPSILON);
    let failing = |u: &Uptime| 1.0 - u.ratio().unwrap_or(1.0);
    SloStatus {
        budget_remaining: 1.0 - failing(window) / allowed,
        burn_rate: failing(last_hour) / allowed,
    }
}

pub(crate) fn state_code(s: State) -> i64 {
    match s {
        State::Unknown => 0,
        State::Up => 1,
        State::Down => 2,
        State::Blocked => 3,
    }
}

pub(crate) fn state_of(code: i64) -> State {
    match code {
        1 => State::Up,
        2 => State::Down,
        3 => State::Blocked,
        _ => State::Unknown,
    }
}

pub(crate) fn at(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

pub(crate) fn ms(t: SystemTime) -> u64 {
    settings::unix_ms(t)
}

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE targets (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE raw (
    start INTEGER NOT NULL, target INTEGER NOT NULL, duration_us INTEGER NOT NULL,
    kind TEXT, reason TEXT, PRIMARY KEY (start, target)) WITHOUT ROWID;
CREATE TABLE rollup (
    tier INTEGER NOT NULL, target INTEGER NOT NULL, start INTEGER NOT NULL, slots BLOB NOT NULL,
    PRIMARY KEY (tier, start, target)) WITHOUT ROWID;
CREATE TABLE changes (
    id INTEGER PRIMARY KEY, target INTEGER NOT NULL, at INTEGER NOT NULL,
    from_state INTEGER NOT NULL, to_state INTEGER NOT NULL, root_causes TEXT NOT NULL,
    kind TEXT, reason TEXT);
CREATE INDEX changes_by_target ON changes (target, at);
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY, target INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER,
    state INTEGER NOT NULL, kind TEXT, reason TEXT, root_causes TEXT NOT NULL);
CREATE INDEX incidents_by_target ON incidents (target, start);
";

/// Opens (or creates) the store's file in `dir`, creating `dir` when missing, and checks that it
/// is lookout's history of a version this build reads, before anything writes to it. Returns a
/// connection ready to write.
pub(crate) fn open_file(dir: &Path) -> Result<(PathBuf, Connection), HistoryError> {
    let file = dir.join(FILE_NAME);
    let err = |message: String| HistoryError {
        file: file.clone(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create its directory: {e}")))?;
    let exists = std::fs::metadata(&file)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    if exists {
        check_existing(&file).map_err(err)?;
    }
    let conn = Connection::open(&file).map_err(|e| err(format!("cannot open: {e}")))?;
    let setup = || -> rusqlite::Result<Option<String>> {
        if exists {
            // The header again, through the connection that sees the WAL too (a newer lookout's
            // upgrade may sit there, not yet checkpointed into the file).
            let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
            let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if app == APPLICATION_ID && version == 2 {
                upgrade_from_2(&conn)?;
            } else if app != APPLICATION_ID || version != SCHEMA_VERSION {
                return Ok(Some(format!(
                    "written by another lookout version or another program (application_id {app:#x}, schema version {version}, this build reads version {SCHEMA_VERSION}); refusing to touch it"
                )));
            }
        } else {
            // Created in rollback-journal mode, so the header's application_id and version are
            // in the file itself, not only in the WAL, before anything else is written.
            // 16 KiB pages: a block of up to ~4 KiB stays inside its B-tree page (with 4 KiB
            // pages a WITHOUT ROWID row over ~1 KiB spills to an overflow page of its own).
            conn.pragma_update(None, "page_size", 16_384)?;
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        // WAL with synchronous=FULL: a commit is durable when it returns (the WAL is fsynced),
        // and a crash at any point leaves the last committed transaction.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // 64 MiB of page cache for the writer (SQLite's default is 2 MiB): each minute's close
        // reads and rewrites a block per target, and an hour's roll-up one more.
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(None)
    };
    if let Some(refusal) = setup().map_err(|e| err(format!("cannot set up: {e}")))? {
        return Err(err(refusal));
    }
    Ok((file, conn))
}

/// Schema version 2 to 3, in one transaction (a crash leaves version 2 whole): rollup rows
/// keyed by (tier, start, target) instead of (tier, target, start), so a minute's close, which
/// rewrites every target's block of the same hour, dirties pages holding only those blocks, not
/// a page per target (version 2 wrote a 16 KiB page per target a minute once a store held a day).
fn upgrade_from_2(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(
        "CREATE TABLE rollup_3 (
            tier INTEGER NOT NULL, target INTEGER NOT NULL, start INTEGER NOT NULL,
            slots BLOB NOT NULL, PRIMARY KEY (tier, start, target)) WITHOUT ROWID;
         INSERT INTO rollup_3 (tier, target, start, slots)
             SELECT tier, target, start, slots FROM rollup ORDER BY tier, start, target;
         DROP TABLE rollup;
         ALTER TABLE rollup_3 RENAME TO rollup;",
    )?;
    tx.pragma_update(None, "user_version", 3)?;
    tx.commit()?;
    tracing::info!("History store converted from schema version 2 to 3");
    Ok(())
}

/// Reads an existing file's header read-only: its SQLite magic, `application_id`,
/// `user_version`, and the schema's tables. An error says what is wrong; nothing is written.
fn check_existing(file: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut head = [0u8; 100];
    let n = std::fs::File::open(file)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("cannot read: {e}"))?;
    if n < 100 || &head[..16] != b"SQLite format 3\0" {
        return Err("not a lookout history store: not an SQLite database (refusing to touch it; move it away or point --storage.path elsewhere)".into());
    }
    let app = i32::from_be_bytes([head[68], head[69], head[70], head[71]]);
    let version = i32::from_be_bytes([head[60], head[61], head[62], head[63]]);
    if app != APPLICATION_ID {
        return Err(format!(
            "not a lookout history store: an SQLite database of another program (application_id {app:#x}, expected {APPLICATION_ID:#x}); refusing to touch it"
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(format!(
            "written by a newer lookout (schema version {version}, this build reads up to {SCHEMA_VERSION}); refusing to touch it"
        ));
    }
    if version < 1 {
        return Err(format!(
            "schema version {version} is not one lookout wrote; refusing to touch it"
        ));
    }
    if version < 2 {
        return Err(format!(
            "written by an older lookout (schema version {version}, this build reads version {SCHEMA_VERSION} and converts only from version 2); refusing to touch it: move it away or point --storage.path elsewhere"
        ));
    }
    // Read-only and immutable (no locks, no WAL or shared-memory files created), so even a
    // damaged file is not changed by the check. A WAL left by a crash is not read here; the
    // main file is consistent at its last checkpoint, and the writer's connection replays it.
    let uri = url::Url::from_file_path(std::path::absolute(file).map_err(|e| e.to_string())?)
        .map_err(|()| "cannot name it as a URI".to_owned())?;
    let conn = Connection::open_with_flags(
        format!("{uri}?immutable=1"),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| format!("cannot open: {e}"))?;
    let check = || -> rusqlite::Result<String> {
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('meta', 'targets', 'raw', 'rollup', 'changes', 'incidents')",
            [],
            |r| r.get(0),
        )?;
        if tables != 6 {
            return Ok(format!("damaged: {tables} of its 6 tables found"));
        }
        conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
    };
    match check() {
        Ok(s) if s == "ok" => Ok(()),
        Ok(s) => Err(format!("damaged ({s}); refusing to touch it")),
        Err(e) => Err(format!("damaged ({e}); refusing to touch it")),
    }
}

/// The store: opened once at start; the writer task writes it, anyone may query it.
#[derive(Debug)]
pub struct Store {
    file: PathBuf,
    read: Mutex<Connection>,
    finals: Mutex<Finals>,
}

/// The times of rollup blocks that can no longer change (every slot of the block ended before
/// the roll-up watermark), kept across snapshots: a status page reads the same closed days and
/// hours of every target on every render. Emptied when the watermark's UTC day changes (the
/// minute tier's entries when its hour does), so it holds about one day's worth of what pages
/// asked for: about 5 KiB a target of a page (its closed day and hour blocks, two minute blocks).
#[derive(Debug, Default)]
struct Finals {
    /// The watermark's day and hour (ms) the entries were taken under.
    day: u64,
    hour: u64,
    map: std::collections::HashMap<(Tier, i64, u64), Option<FinalTimes>>,
}

/// A final block's slots' times (up, down, maintenance ms; a slot is at most a day, so u32).
type FinalTimes = std::sync::Arc<[(u8, [u32; 3])]>;

/// More entries than this (about 20 per target of the pages read) and the cache starts over.
const FINALS_MAX: usize = 400_000;

impl Store {
    /// Opens the store in `dir` (see `open_file`), returning it and the connection its writer
    /// gets.
    pub fn open(dir: &Path) -> Result<(Store, writer::Writer), HistoryError> {
        let (file, conn) = open_file(dir)?;
        let read = Connection::open_with_flags(
            &file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| HistoryError {
            file: file.clone(),
            message: format!("cannot open for reading: {e}"),
        })?;
        // The query planner's stability guarantee: plans never depend on bound values, so a
        // cached statement is not prepared again whenever a value the planner looked at (the
        // incidents' `LIMIT ?`) is bound anew, as it was once a row of every page (9% of it).
        read.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(|e| HistoryError {
            file: file.clone(),
            message: format!("cannot configure reading: {e}"),
        })?;
        // Reads map the file instead of copying each 16 KiB page out of the OS cache (pread
        // was the largest cost of a page at 1,000 targets, 11%). The mapped pages a page touches
        // count in lookout's RSS as file pages the kernel can drop. The writer never shrinks the
        // file (no VACUUM, no auto_vacuum), which is what makes a mapping unsafe.
        read.pragma_update(None, "mmap_size", 1i64 << 32)
            .map_err(|e| HistoryError {
                file: file.clone(),
                message: format!("cannot configure reading: {e}"),
            })?;
        let w = writer::Writer::new(conn, file.clone())?;
        Ok((
            Store {
                file,
                read: Mutex::new(read),
                finals: Mutex::new(Finals::default()),
            },
            w,
        ))
    }

    /// The file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// A consistent view for a run of queries (see `Snapshot`).
    pub fn snapshot(&self) -> Result<Snapshot<'_>, HistoryError> {
        let conn = self.read.lock().unwrap_or_else(|e| e.into_inner());
        // Deferred: the read transaction starts at the first query.
        conn.execute_batch("BEGIN").map_err(|e| HistoryError {
            file: self.file.clone(),
            message: format!("cannot begin reading: {e}"),
        })?;
        // The roll-up watermark as this snapshot sees it: blocks that ended before it are final.
        let rolled = conn
            .query_row("SELECT value FROM meta WHERE key = 'rolled'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(|e| HistoryError {
                file: self.file.clone(),
                message: format!("query failed: {e}"),
            })?
            .unwrap_or(0)
            .max(0) as u64;
        {
            let mut f = self.finals.lock().unwrap_or_else(|e| e.into_inner());
            let (day, hour) = (rolled / 86_400_000, rolled / 3_600_000);
            if f.day != day || f.map.len() > FINALS_MAX {
                f.map.clear();
            } else if f.hour != hour {
                f.map.retain(|k, _| k.0 != Tier::Minute);
            }
            (f.day, f.hour) = (day, hour);
        }
        Ok(Snapshot {
            file: &self.file,
            conn,
            finals: &self.finals,
            rolled,
        })
    }

    /// `Snapshot::uptime` in a snapshot of its own.
    pub fn uptime(
        &self,
        target: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Uptime, HistoryError> {
        self.snapshot()?.uptime(target, from, to)
    }

    /// `Snapshot::days` in a snapshot of its own.
    pub fn days(&self, target: &str, n: usize, now: SystemTime) -> Result<Vec<Day>, HistoryError> {
        self.snapshot()?.days(target, n, now)
    }

    /// `Snapshot::summary` in a snapshot of its own.
    pub fn summary(
        &self,
        target: &str,
        windows: &[Duration],
        n_days: usize,
        n_incidents: usize,
        now: SystemTime,
    ) -> Result<Summary, HistoryError> {
        self.snapshot()?
            .summary(target, windows, n_days, n_incidents, now)
    }

    /// `Snapshot::latency` in a snapshot of its own.
    pub fn latency(
        &self,
        target: &str,
        from: SystemTime,
        to: SystemTime,
        step: Duration,
    ) -> Result<Vec<Point>, HistoryError> {
        self.snapshot()?.latency(target, from, to, step)
    }

    /// `Snapshot::incidents` in a snapshot of its own.
    pub fn incidents(&self, target: &str, limit: usize) -> Result<Vec<Incident>, HistoryError> {
        self.snapshot()?.incidents(target, limit)
    }

    /// `Snapshot::state_changes` in a snapshot of its own.
    pub fn state_changes(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<StateChange>, HistoryError> {
        self.snapshot()?.state_changes(target, limit)
    }

    /// `Snapshot::slo` in a snapshot of its own.
    pub fn slo(
        &self,
        target: &str,
        objective: f64,
        window: Duration,
        now: SystemTime,
    ) -> Result<SloStatus, HistoryError> {
        self.snapshot()?.slo(target, objective, window, now)
    }
}

/// A consistent view of the store for a run of queries, such as one page: a single read
/// transaction, so SQLite takes its shared lock and reads the WAL index once instead of once a
/// query, and every query sees the same flush. Holds the store's read connection until dropped.
#[derive(Debug)]
pub struct Snapshot<'a> {
    file: &'a Path,
    conn: std::sync::MutexGuard<'a, Connection>,
    finals: &'a Mutex<Finals>,
    rolled: u64,
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        // A read transaction: nothing to keep or lose; this only releases the snapshot.
        let _ = self.conn.execute_batch("COMMIT");
    }
}

impl Snapshot<'_> {
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, HistoryError> {
        f(&self.conn).map_err(|e| HistoryError {
            file: self.file.to_owned(),
            message: format!("query failed: {e}"),
        })
    }

    /// How long `target` was up, down, in maintenance and unknown in `[from, to)` (rounded to
    /// whole minutes).
    pub fn uptime(
        &self,
        target: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Uptime, HistoryError> {
        self.with(|c| uptime(c, target, ms(from), ms(to)))
    }

    /// The last `n` UTC days of `target`, oldest first, today (so far) last.
    pub fn days(&self, target: &str, n: usize, now: SystemTime) -> Result<Vec<Day>, HistoryError> {
        self.with(|c| {
            let incidents = incidents(c, target, 10_000)?;
            days(&mut Reader::new(c, target)?, &incidents, n, ms(now))
        })
    }

    /// What a status page row shows of `target` at `now`, read in one go (each rollup block
    /// once): uptime over each of `windows` ending now, the last `n_days` days, latency per hour
    /// over the last 24 hours (the hour under way from its minutes), and the newest
    /// `n_incidents` incidents.
    pub fn summary(
        &self,
        target: &str,
        windows: &[Duration],
        n_days: usize,
        n_incidents: usize,
        now: SystemTime,
    ) -> Result<Summary, HistoryError> {
        self.with(|c| {
            let now = ms(now);
            let mut r = Reader::new(c, target)?;
            if r.id.is_none() {
                return Ok(Summary::default());
            }
            r.finals = Some((self.finals, self.rolled));
            let incidents = incidents(c, target, n_incidents)?;
            // The day blocks under the bars and the windows' whole days, and the hour blocks of
            // yesterday and today, in two range queries instead of about six point reads.
            let today = now / 86_400_000 * 86_400_000;
            let oldest = windows
                .iter()
                .map(|w| w.as_millis() as u64)
                .max()
                .unwrap_or(0)
                .max(n_days as u64 * 86_400_000);
            // Final day blocks come from `Finals`; the range reads the rest.
            r.prefetch(
                Tier::Day,
                now.saturating_sub(oldest).max(self.rolled),
                today + 1,
            )?;
            r.prefetch(Tier::Hour, today.saturating_sub(86_400_000), today + 1)?;
            let mut uptime = Vec::with_capacity(windows.len());
            for w in windows {
                uptime.push(r.uptime(now.saturating_sub(w.as_millis() as u64), now)?);
            }
            let days = days(&mut r, &incidents, n_days, now)?;
            let this_hour = now / 3_600_000 * 3_600_000;
            let mut hourly = Vec::with_capacity(25);
            for k in (0..24u64).rev() {
                let Some(h) = this_hour.checked_sub(k * 3_600_000) else {
                    continue;
                };
                let mut slot = Slot::default();
                // An hour is in the hour tier once rolled up; until then, and for the hour
                // under way, its minutes.
                if !r.fold(Tier::Hour, h, h + 3_600_000, &mut |s| slot.merge(s))? {
                    r.fold(Tier::Minute, h, (h + 3_600_000).min(now), &mut |s| {
                        slot.merge(s)
                    })?;
                }
                if let Some(p) = point(h, &slot) {
                    hourly.push(p);
                }
            }
            Ok(Summary {
                uptime,
                days,
                hourly,
                incidents,
            })
        })
    }

    /// Latency of `target`'s successful probes in `[from, to)`, one point per `step` with
    /// probes (from minute rollups for steps under an hour, else hour or day rollups). Minutes
    /// keep their latency only for the raw window (at least two hours): older steps under an
    /// hour have no points.
    pub fn latency(
        &self,
        target: &str,
        from: SystemTime,
        to: SystemTime,
        step: Duration,
    ) -> Result<Vec<Point>, HistoryError> {
        self.with(|c| {
            let step_ms = (step.as_millis() as u64).max(60_000);
            let tier = if step_ms >= 86_400_000 {
                Tier::Day
            } else if step_ms >= 3_600_000 {
                Tier::Hour
            } else {
                Tier::Minute
            };
            let (from, to) = (ms(from), ms(to));
            let mut points: Vec<(u64, Slot)> = Vec::new();
            for (start, slot) in slots(c, tier, target, from, to)? {
                let k = from + (start - from.min(start)) / step_ms * step_ms;
                match points.last_mut() {
                    Some((pk, acc)) if *pk == k => acc.merge(&slot),
                    _ => points.push((k, slot)),
                }
            }
            Ok(points
                .into_iter()
                .filter_map(|(k, s)| point(k, &s))
                .collect())
        })
    }

    /// `target`'s latest `limit` incidents, newest first.
    pub fn incidents(&self, target: &str, limit: usize) -> Result<Vec<Incident>, HistoryError> {
        self.with(|c| incidents(c, target, limit))
    }

    /// `target`'s latest `limit` state changes, newest first.
    pub fn state_changes(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<StateChange>, HistoryError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT c.at, c.from_state, c.to_state, c.root_causes, c.kind, c.reason
                 FROM changes c JOIN targets t ON t.id = c.target
                 WHERE t.name = ?1 ORDER BY c.at DESC, c.id DESC LIMIT ?2",
            )?;
            let rows = st.query_map((target, limit as i64), |r| {
                Ok(StateChange {
                    at: at(r.get(0)?),
                    from: state_of(r.get(1)?),
                    to: state_of(r.get(2)?),
                    root_causes: split_names(&r.get::<_, String>(3)?),
                    kind: r.get(4)?,
                    reason: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The standing of an uptime objective (0.999 for 99.9%) over `window` ending at `now`.
    pub fn slo(
        &self,
        target: &str,
        objective: f64,
        window: Duration,
        now: SystemTime,
    ) -> Result<SloStatus, HistoryError> {
        self.with(|c| slo(c, target, objective, window, now))
    }
}

pub(crate) fn slo(
    c: &Connection,
    target: &str,
    objective: f64,
    window: Duration,
    now: SystemTime,
) -> rusqlite::Result<SloStatus> {
    let now = ms(now);
    let mut r = Reader::new(c, target)?;
    let w = r.uptime(now.saturating_sub(window.as_millis() as u64), now)?;
    let h = r.uptime(now.saturating_sub(3_600_000), now)?;
    Ok(slo_status(objective, &w, &h))
}

/// What `Store::summary` reads for a status page row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Uptime per window asked for.
    pub uptime: Vec<Uptime>,
    /// The days asked for, oldest first.
    pub days: Vec<Day>,
    /// Latency per hour of the last 24 hours with probes, oldest first.
    pub hourly: Vec<Point>,
    /// The newest incidents, newest first.
    pub incidents: Vec<Incident>,
}

/// The latency point of `slot` at `at_ms`; `None` without successful probes.
fn point(at_ms: u64, s: &Slot) -> Option<Point> {
    let us = |q: f64| {
        Duration::from_micros(
            s.sketch
                .quantile(q)
                .unwrap_or(0.0)
                .min(s.latency_max_us as f64) as u64,
        )
    };
    (!s.sketch.0.is_empty()).then(|| Point {
        at: at(at_ms as i64),
        p50: us(0.5),
        p95: us(0.95),
        max: Duration::from_micros(s.latency_max_us),
    })
}

/// The last `n` UTC days before `now` ms through `r`, with the incidents that overlap each.
fn days(
    r: &mut Reader<'_>,
    incidents: &[Incident],
    n: usize,
    now: u64,
) -> rusqlite::Result<Vec<Day>> {
    let today = now / 86_400_000 * 86_400_000;
    let mut out = Vec::with_capacity(n);
    for k in (0..n as u64).rev() {
        let Some(start) = today.checked_sub(k * 86_400_000) else {
            continue;
        };
        // Today ends now: its closed hours are in the hour tier, not yet in the day tier.
        let end = (start + 86_400_000).min(now.max(start));
        let u = r.uptime(start, end)?;
        let s = at(start as i64);
        out.push(Day {
            start: s,
            up_ratio: u.ratio(),
            maintenance_ratio: u.maintenance.as_secs_f64() / 86_400.0,
            incidents: incidents
                .iter()
                .filter(|i| {
                    i.start < at((start + 86_400_000) as i64) && i.end.is_none_or(|x| x > s)
                })
                .count() as u32,
        });
    }
    Ok(out)
}

pub(crate) fn split_names(s: &str) -> Vec<String> {
    s.split('\n')
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn incidents(c: &Connection, target: &str, limit: usize) -> rusqlite::Result<Vec<Incident>> {
    let mut st = c.prepare_cached(
        "SELECT i.start, i.end, i.state, i.kind, i.reason, i.root_causes
         FROM incidents i JOIN targets t ON t.id = i.target
         WHERE t.name = ?1 ORDER BY i.start DESC, i.id DESC LIMIT ?2",
    )?;
    let rows = st.query_map((target, limit as i64), |r| {
        Ok(Incident {
            start: at(r.get(0)?),
            end: r.get::<_, Option<i64>>(1)?.map(at),
            state: state_of(r.get(2)?),
            kind: r.get(3)?,
            reason: r.get(4)?,
            root_causes: split_names(&r.get::<_, String>(5)?),
        })
    })?;
    rows.collect()
}

fn target_id(c: &Connection, target: &str) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT id FROM targets WHERE name = ?1")?
        .query_row([target], |r| r.get(0))
        .optional()
}

/// The slots of `tier` for `target` that start in `[from, to)`, in time order.
/// One rollup block: tier, target, block start.
pub(crate) const BLOCK_QUERY: &str =
    "SELECT slots FROM rollup WHERE tier = ?1 AND target = ?2 AND start = ?3";

pub(crate) fn slots(
    c: &Connection,
    tier: Tier,
    target: &str,
    from: u64,
    to: u64,
) -> rusqlite::Result<Vec<(u64, Slot)>> {
    let Some(id) = target_id(c, target)? else {
        return Ok(Vec::new());
    };
    slots_by_id(c, tier, id, from, to)
}

pub(crate) fn slots_by_id(
    c: &Connection,
    tier: Tier,
    id: i64,
    from: u64,
    to: u64,
) -> rusqlite::Result<Vec<(u64, Slot)>> {
    let mut out = Vec::new();
    if to <= from {
        return Ok(out);
    }
    // One point read per block: rows are keyed by (tier, start, target), so a range of starts
    // for one target is not contiguous.
    let mut st = c.prepare_cached(BLOCK_QUERY)?;
    let mut start = tier.locate(from).0;
    while start < to {
        let this = start;
        start += tier.block_ms();
        let Some(bytes) = st
            .query_row((tier as i64, id, this as i64), |r| r.get::<_, Vec<u8>>(0))
            .optional()?
        else {
            continue;
        };
        let start = this;
        let Some(block) = Block::decode(&bytes, tier.slot_ms()) else {
            return Err(rusqlite::Error::InvalidColumnType(
                1,
                "slots (malformed block)".into(),
                rusqlite::types::Type::Blob,
            ));
        };
        for (i, s) in block.0 {
            let t = start + u64::from(i) * tier.slot_ms();
            if t >= from && t < to {
                out.push((t, s));
            }
        }
    }
    Ok(out)
}

/// Uptime of `target` in `[from, to)` ms: whole days from day rollups, whole hours from hour
/// rollups, the minutes at either end from minute rollups.
fn uptime(c: &Connection, target: &str, from: u64, to: u64) -> rusqlite::Result<Uptime> {
    Reader::new(c, target)?.uptime(from, to)
}

/// One target's rollups as one query answers them: each block is read and decoded at most once
/// (the 90 day bars of a row need 4 day blocks, not 90 range queries), so a page's row costs a
/// dozen point reads.
pub(crate) struct Reader<'c> {
    c: &'c Connection,
    id: Option<i64>,
    /// The blocks read so far (a dozen a row: a list beats hashing).
    blocks: Vec<((Tier, u64), Option<Entry>)>,
    /// The store's cache of final blocks and the snapshot's watermark, when uptime may use
    /// them.
    finals: Option<(&'c Mutex<Finals>, u64)>,
    /// The final blocks this reader took from `finals` (the 90 day bars ask for the same four
    /// ninety times: once each from the store's lock and hash map).
    seen: Vec<((Tier, u64), Option<FinalTimes>)>,
}

/// A block as read: its bytes, its slots' times, and the whole block once a query needs its
/// latency.
struct Entry {
    bytes: Vec<u8>,
    times: Vec<(u8, codec::Times)>,
    full: Option<Block>,
}

fn malformed() -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(
        0,
        "slots (malformed block)".into(),
        rusqlite::types::Type::Blob,
    )
}

impl<'c> Reader<'c> {
    pub(crate) fn new(c: &'c Connection, target: &str) -> rusqlite::Result<Reader<'c>> {
        Ok(Reader {
            c,
            id: target_id(c, target)?,
            blocks: Vec::new(),
            finals: None,
            seen: Vec::new(),
        })
    }

    /// The block of `tier` starting at `start`, read once.
    fn entry(&mut self, tier: Tier, start: u64) -> rusqlite::Result<Option<&mut Entry>> {
        let Some(id) = self.id else {
            return Ok(None);
        };
        let key = (tier, start);
        let k = match self.blocks.iter().position(|(k, _)| *k == key) {
            Some(k) => k,
            None => {
                let bytes: Option<Vec<u8>> = self
                    .c
                    .prepare_cached(BLOCK_QUERY)?
                    .query_row((tier as i64, id, start as i64), |r| r.get(0))
                    .optional()?;
                let entry = match bytes {
                    None => None,
                    Some(bytes) => Some(Entry {
                        times: Block::decode_times(&bytes, tier.slot_ms()).ok_or_else(malformed)?,
                        bytes,
                        full: None,
                    }),
                };
                self.blocks.push((key, entry));
                self.blocks.len() - 1
            }
        };
        Ok(self.blocks[k].1.as_mut())
    }

    /// Reads every block of `tier` that starts in `[from, to)` (the block holding `from`
    /// included), one point read each (rows are keyed by tier and start first), so later folds
    /// find them (or their absence) read.
    fn prefetch(&mut self, tier: Tier, from: u64, to: u64) -> rusqlite::Result<()> {
        let mut b = tier.locate(from).0;
        while b < to {
            self.entry(tier, b)?;
            b += tier.block_ms();
        }
        Ok(())
    }

    /// Calls `f` with each slot of `tier` that starts in `[from, to)`; whether there were any.
    pub(crate) fn fold(
        &mut self,
        tier: Tier,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(&Slot),
    ) -> rusqlite::Result<bool> {
        let mut any = false;
        if to <= from {
            return Ok(any);
        }
        let mut b = tier.locate(from).0;
        while b < to {
            if let Some(e) = self.entry(tier, b)? {
                if e.full.is_none() {
                    e.full = Some(Block::decode(&e.bytes, tier.slot_ms()).ok_or_else(malformed)?);
                }
                for (i, s) in e.full.iter().flat_map(|x| &x.0) {
                    let t = b + u64::from(*i) * tier.slot_ms();
                    if t >= from && t < to {
                        f(s);
                        any = true;
                    }
                }
            }
            b += tier.block_ms();
        }
        Ok(any)
    }

    /// Adds the times of the slots of `tier` that start in `[from, to)` to `sum`.
    fn fold_times(
        &mut self,
        tier: Tier,
        from: u64,
        to: u64,
        sum: &mut codec::Times,
    ) -> rusqlite::Result<()> {
        if to <= from {
            return Ok(());
        }
        let mut b = tier.locate(from).0;
        while b < to {
            let in_range = |i: u8| {
                let t = b + u64::from(i) * tier.slot_ms();
                t >= from && t < to
            };
            match self.final_times(tier, b)? {
                Some(Some(times)) => {
                    for (i, t3) in times.iter() {
                        if in_range(*i) {
                            for k in 0..3 {
                                sum[k] += u64::from(t3[k]);
                            }
                        }
                    }
                }
                Some(None) => {}
                None => {
                    if let Some(e) = self.entry(tier, b)? {
                        for (i, t3) in &e.times {
                            if in_range(*i) {
                                for k in 0..3 {
                                    sum[k] += t3[k];
                                }
                            }
                        }
                    }
                }
            }
            b += tier.block_ms();
        }
        Ok(())
    }

    /// The times of the block of `tier` at `start` from the store's cache of final blocks,
    /// read and kept there on a miss: `None` when there is no cache or the block may still
    /// change, `Some(None)` when the block does not exist.
    fn final_times(
        &mut self,
        tier: Tier,
        start: u64,
    ) -> rusqlite::Result<Option<Option<FinalTimes>>> {
        let (Some((finals, rolled)), Some(id)) = (self.finals, self.id) else {
            return Ok(None);
        };
        if start + tier.block_ms() > rolled {
            return Ok(None);
        }
        if let Some((_, v)) = self.seen.iter().find(|(k, _)| *k == (tier, start)) {
            return Ok(Some(v.clone()));
        }
        let key = (tier, id, start);
        if let Some(v) = finals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .get(&key)
        {
            let v = v.clone();
            self.seen.push(((tier, start), v.clone()));
            return Ok(Some(v));
        }
        let times: Option<FinalTimes> = self.entry(tier, start)?.map(|e| {
            e.times
                .iter()
                .map(|(i, t)| (*i, t.map(|v| u32::try_from(v).unwrap_or(u32::MAX))))
                .collect()
        });
        finals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .insert(key, times.clone());
        self.seen.push(((tier, start), times.clone()));
        Ok(Some(times))
    }

    /// Uptime in `[from, to)` ms rounded out to whole minutes: whole days from the day tier,
    /// whole hours from the hour tier, the minutes at either end from the minute tier.
    pub(crate) fn uptime(&mut self, from: u64, to: u64) -> rusqlite::Result<Uptime> {
        let (from, to) = (from / 60_000 * 60_000, to.div_ceil(60_000) * 60_000);
        let mut sum: codec::Times = [0; 3];
        if to > from && self.id.is_some() {
            let add = &mut sum;
            let h0 = from.div_ceil(3_600_000) * 3_600_000;
            let h1 = to / 3_600_000 * 3_600_000;
            if h0 >= h1 {
                self.fold_times(Tier::Minute, from, to, add)?;
            } else {
                let d0 = h0.div_ceil(86_400_000) * 86_400_000;
                let d1 = h1 / 86_400_000 * 86_400_000;
                self.fold_times(Tier::Minute, from, h0, add)?;
                if d0 >= d1 {
                    self.fold_times(Tier::Hour, h0, h1, add)?;
                } else {
                    self.fold_times(Tier::Hour, h0, d0, add)?;
                    self.fold_times(Tier::Day, d0, d1, add)?;
                    self.fold_times(Tier::Hour, d1, h1, add)?;
                }
                self.fold_times(Tier::Minute, h1, to, add)?;
            }
        }
        let [up, down, maintenance] = sum;
        let d = Duration::from_millis;
        Ok(Uptime {
            up: d(up),
            down: d(down),
            maintenance: d(maintenance),
            unknown: d((to - from.min(to)).saturating_sub(up + down + maintenance)),
        })
    }
}
