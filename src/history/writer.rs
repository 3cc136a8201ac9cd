//! The history writer: turns scheduled results and state changes into rows, one transaction per
//! flush.
//!
//! `Writer` is synchronous and deterministic (tests drive it with hand-made events and clocks);
//! `run` is the task that feeds it from the result bus and the scheduler and flushes it every
//! `flush_interval` on a blocking thread.
//!
//! Time up and down is weighted by how long each state held: each target's current state and the
//! time accounted so far are kept in memory, and every change (and every minute's close) adds the
//! time since to the open minute's slot of that state, less the part inside a maintenance
//! window. A minute's slots are written when it closes, with a watermark (`rolled`) in the same
//! transaction; an hour's and a day's slots are summed from the tier below when they close.
//! After a crash, the open minutes are rebuilt from the raw results and state changes already
//! on disk, so nothing committed is lost and nothing is counted twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Block, HistoryError, Settings, Slot, Tier, state_code, state_of};
use crate::health::State;

const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 86_400_000;

/// What the writer records.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A scheduled probe finished.
    Result {
        /// The target's name.
        target: String,
        /// Its interval, ms (a target silent for three intervals and a minute is dropped from
        /// the time accounting: removed, or lookout stopped probing it).
        interval_ms: u64,
        /// Start, Unix ms.
        start_ms: u64,
        /// End, Unix ms (the minute it counts in).
        finished_ms: u64,
        /// How long it took, µs.
        duration_us: u64,
        /// Kind and reason when it failed.
        failure: Option<(String, String)>,
    },
    /// A target's state changed.
    Change {
        /// The target's name.
        target: String,
        /// From.
        from: State,
        /// To.
        to: State,
        /// When, Unix ms.
        at_ms: u64,
        /// Root causes after the change.
        root_causes: Vec<String>,
        /// The latest failure's kind and reason.
        failure: Option<(String, String)>,
    },
}

impl Event {
    fn time(&self) -> u64 {
        match self {
            Event::Result { finished_ms, .. } => *finished_ms,
            Event::Change { at_ms, .. } => *at_ms,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Cur {
    state: State,
    /// Time accounted up to, ms.
    at: u64,
    last_seen: u64,
    stale_ms: u64,
}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Events written.
    pub events: usize,
    /// Minutes closed.
    pub minutes: usize,
}

/// The synchronous writer: owns the write connection and the open minutes.
#[derive(Debug)]
pub struct Writer {
    conn: Connection,
    file: PathBuf,
    ids: HashMap<String, i64>,
    names: HashMap<i64, String>,
    open: BTreeMap<u64, HashMap<i64, Slot>>,
    cur: HashMap<i64, Cur>,
    /// The start of the first minute not rolled up (0: nothing written yet).
    rolled: u64,
    dirty_hours: BTreeMap<u64, HashSet<i64>>,
    dirty_days: BTreeMap<u64, HashSet<i64>>,
    open_incidents: HashMap<i64, i64>,
    /// What happened after the last closed minute, read back at start and replayed at the first
    /// flush (which knows the maintenance windows), with the time of the last flush before.
    replay: Option<(Vec<Event>, u64)>,
    /// Per tier, how many block starts were below the retention cutoff at the last expiry:
    /// until it changes there is nothing new to delete in that tier (an hour block goes once a
    /// day, a day block once in 32), so the delete is skipped.
    expired: [u64; 3],
}

/// Minute blocks keep their latency for the raw window, and at least this long (so an hour is
/// rolled up, also again after a restart, before its minutes lose what the hour sums).
const STRIP_AFTER_MIN: u64 = 2 * HOUR;

fn meta(c: &Connection, key: &str) -> rusqlite::Result<Option<u64>> {
    c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|v| v.map(|v| v.max(0) as u64))
}

fn failure_of(kind: Option<String>, reason: Option<String>) -> Option<(String, String)> {
    kind.map(|k| (k, reason.unwrap_or_default()))
}

impl Writer {
    /// Takes over the write connection and rebuilds the open minutes from what is on disk.
    pub(crate) fn new(conn: Connection, file: PathBuf) -> Result<Writer, HistoryError> {
        let mut w = Writer {
            conn,
            file,
            ids: HashMap::new(),
            names: HashMap::new(),
            open: BTreeMap::new(),
            cur: HashMap::new(),
            rolled: 0,
            dirty_hours: BTreeMap::new(),
            dirty_days: BTreeMap::new(),
            open_incidents: HashMap::new(),
            replay: None,
            expired: [0; 3],
        };
        w.recover().map_err(|e| HistoryError {
            file: w.file.clone(),
            message: format!("cannot read it back: {e}"),
        })?;
        Ok(w)
    }

    fn recover(&mut self) -> rusqlite::Result<()> {
        {
            let mut st = self.conn.prepare("SELECT id, name FROM targets")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (id, name) = row?;
                self.ids.insert(name.clone(), id);
                self.names.insert(id, name);
            }
            let mut st = self
                .conn
                .prepare("SELECT target, id FROM incidents WHERE end IS NULL")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (t, id) = row?;
                self.open_incidents.insert(t, id);
            }
        }
        let (Some(rolled), Some(alive)) = (meta(&self.conn, "rolled")?, meta(&self.conn, "alive")?)
        else {
            return Ok(());
        };
        self.rolled = rolled;
        // The hour and day holding the last closed minute may still need rolling up.
        let all: HashSet<i64> = self.names.keys().copied().collect();
        if rolled > 0 {
            let last = rolled - MINUTE;
            self.dirty_hours.insert(last / HOUR * HOUR, all.clone());
            self.dirty_days.insert(last / DAY * DAY, all);
        }
        // Each target's state when the open minutes began.
        let mut events: Vec<Event> = Vec::new();
        {
            let mut st = self.conn.prepare(
                "SELECT c.target, c.to_state FROM changes c
                 JOIN (SELECT target, max(id) AS id FROM changes WHERE at < ?1 GROUP BY target) l
                 ON l.id = c.id",
            )?;
            let rows = st.query_map([rolled as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (id, code) = row?;
                self.cur.insert(
                    id,
                    Cur {
                        state: state_of(code),
                        at: rolled,
                        last_seen: rolled,
                        stale_ms: u64::MAX / 4,
                    },
                );
            }
            // What happened since, replayed in time order.
            let mut st = self.conn.prepare(
                "SELECT t.name, c.from_state, c.to_state, c.at, c.root_causes, c.kind, c.reason
                 FROM changes c JOIN targets t ON t.id = c.target WHERE c.at >= ?1 ORDER BY c.at, c.id",
            )?;
            let rows = st.query_map([rolled as i64], |r| {
                Ok(Event::Change {
                    target: r.get(0)?,
                    from: state_of(r.get(1)?),
                    to: state_of(r.get(2)?),
                    at_ms: r.get::<_, i64>(3)? as u64,
                    root_causes: super::split_names(&r.get::<_, String>(4)?),
                    failure: failure_of(r.get(5)?, r.get(6)?),
                })
            })?;
            for row in rows {
                events.push(row?);
            }
            let mut st = self.conn.prepare(
                "SELECT t.name, r.start, r.duration_us, r.kind, r.reason
                 FROM raw r JOIN targets t ON t.id = r.target WHERE r.start >= ?1",
            )?;
            let rows = st.query_map([rolled.saturating_sub(HOUR) as i64], |r| {
                let start = r.get::<_, i64>(1)? as u64;
                let duration_us = r.get::<_, i64>(2)? as u64;
                Ok(Event::Result {
                    target: r.get(0)?,
                    interval_ms: u64::MAX / 8,
                    start_ms: start,
                    finished_ms: start + duration_us / 1000,
                    duration_us,
                    failure: failure_of(r.get(3)?, r.get(4)?),
                })
            })?;
            for row in rows {
                let e = row?;
                if e.time() >= rolled {
                    events.push(e);
                }
            }
        }
        events.sort_by_key(Event::time);
        self.replay = Some((events, alive.max(rolled)));
        Ok(())
    }

    /// Replays what `recover` read back: up to the last flush the states held; after it lookout
    /// was not running, which is unknown time (no slot time at all).
    fn finish_recovery(&mut self, settings: &Settings) -> rusqlite::Result<()> {
        let Some((events, alive)) = self.replay.take() else {
            return Ok(());
        };
        for e in events {
            self.apply(e, None, settings)?;
        }
        for id in self.cur.keys().copied().collect::<Vec<_>>() {
            self.account(id, alive, settings);
        }
        self.cur.clear();
        Ok(())
    }

    fn intern(&mut self, tx: Option<&Transaction<'_>>, name: &str) -> rusqlite::Result<i64> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        let Some(tx) = tx else {
            return Err(rusqlite::Error::QueryReturnedNoRows);
        };
        tx.execute("INSERT INTO targets (name) VALUES (?1)", [name])?;
        let id = tx.last_insert_rowid();
        self.ids.insert(name.to_owned(), id);
        self.names.insert(id, name.to_owned());
        Ok(id)
    }

    /// Adds the time from `id`'s accounted point to `upto` to its state (less maintenance) in
    /// the open minutes.
    fn account(&mut self, id: i64, upto: u64, settings: &Settings) {
        let Some(c) = self.cur.get_mut(&id) else {
            return;
        };
        let mut a = c.at.max(self.rolled);
        let state = c.state;
        c.at = c.at.max(upto);
        let name = self.names.get(&id).map(String::as_str).unwrap_or("");
        while a < upto {
            let m = a / MINUTE * MINUTE;
            let b = upto.min(m + MINUTE);
            let maint = settings.maintenance_ms(name, a, b);
            let rest = (b - a).saturating_sub(maint);
            let slot = self.open.entry(m).or_default().entry(id).or_default();
            slot.maintenance_ms += maint;
            match state {
                State::Up => slot.up_ms += rest,
                State::Down | State::Blocked => slot.down_ms += rest,
                State::Unknown => slot.unknown_ms += rest,
            }
            a = b;
        }
    }

    /// Takes note of one event; writes its rows when `tx` is given (not on replay).
    fn apply(
        &mut self,
        e: Event,
        tx: Option<&Transaction<'_>>,
        settings: &Settings,
    ) -> rusqlite::Result<()> {
        match e {
            Event::Result {
                target,
                interval_ms,
                start_ms,
                finished_ms,
                duration_us,
                failure,
            } => {
                let id = self.intern(tx, &target)?;
                let m = finished_ms.max(self.rolled) / MINUTE * MINUTE;
                let slot = self.open.entry(m).or_default().entry(id).or_default();
                if failure.is_none() {
                    slot.successes += 1;
                    slot.latency_sum_us += duration_us;
                    slot.latency_max_us = slot.latency_max_us.max(duration_us);
                    slot.sketch.add(duration_us);
                } else {
                    slot.failures += 1;
                }
                if let Some(c) = self.cur.get_mut(&id) {
                    c.last_seen = c.last_seen.max(finished_ms);
                    c.stale_ms = interval_ms.saturating_mul(3).saturating_add(MINUTE);
                }
                if let Some(tx) = tx {
                    let (kind, reason) = failure.unzip();
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO raw (start, target, duration_us, kind, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute((start_ms as i64, id, duration_us as i64, kind, reason))?;
                }
            }
            Event::Change {
                target,
                from,
                to,
                at_ms,
                root_causes,
                failure,
            } => {
                let id = self.intern(tx, &target)?;
                let at = at_ms.max(self.rolled);
                self.account(id, at, settings);
                let c = self.cur.entry(id).or_insert(Cur {
                    state: to,
                    at,
                    last_seen: at,
                    stale_ms: u64::MAX / 4,
                });
                c.state = to;
                c.at = c.at.max(at);
                c.last_seen = c.last_seen.max(at);
                if let Some(tx) = tx {
                    let roots = root_causes.join("\n");
                    let (kind, reason) = failure.unzip();
                    tx.prepare_cached(
                        "INSERT INTO changes (target, at, from_state, to_state, root_causes, kind, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute((id, at_ms as i64, state_code(from), state_code(to), &roots, &kind, &reason))?;
                    let failing = matches!(to, State::Down | State::Blocked);
                    match self.open_incidents.get(&id).copied() {
                        None if failing => {
                            tx.prepare_cached(
                                "INSERT INTO incidents (target, start, state, kind, reason, root_causes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            )?
                            .execute((id, at_ms as i64, state_code(to), &kind, &reason, &roots))?;
                            self.open_incidents.insert(id, tx.last_insert_rowid());
                        }
                        Some(inc) if failing => {
                            // Root causes named later in the incident are added to it.
                            let old: String = tx.query_row(
                                "SELECT root_causes FROM incidents WHERE id = ?1",
                                [inc],
                                |r| r.get(0),
                            )?;
                            let mut all = super::split_names(&old);
                            for r in root_causes {
                                if !all.contains(&r) {
                                    all.push(r);
                                }
                            }
                            tx.execute(
                                "UPDATE incidents SET root_causes = ?1 WHERE id = ?2",
                                (all.join("\n"), inc),
                            )?;
                        }
                        // Up ends it; unknown (a restart, a reload) does not.
                        Some(inc) if to == State::Up => {
                            tx.execute(
                                "UPDATE incidents SET end = ?1 WHERE id = ?2",
                                (at_ms as i64, inc),
                            )?;
                            self.open_incidents.remove(&id);
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `events` and closes every minute that ended by `now_ms`, in one transaction.
    pub fn flush(
        &mut self,
        events: Vec<Event>,
        now_ms: u64,
        settings: &Settings,
    ) -> Result<Flushed, HistoryError> {
        let file = self.file.clone();
        self.flush_inner(events, now_ms, settings)
            .map_err(|e| HistoryError {
                file,
                message: format!("write failed: {e}"),
            })
    }

    fn flush_inner(
        &mut self,
        events: Vec<Event>,
        now_ms: u64,
        settings: &Settings,
    ) -> rusqlite::Result<Flushed> {
        let mut conn = std::mem::replace(&mut self.conn, Connection::open_in_memory()?);
        let result = (|| {
            let tx = conn.transaction()?;
            let out = self.flush_tx(&tx, events, now_ms, settings)?;
            tx.commit()?;
            Ok(out)
        })();
        self.conn = conn;
        result
    }

    fn flush_tx(
        &mut self,
        tx: &Transaction<'_>,
        events: Vec<Event>,
        now_ms: u64,
        settings: &Settings,
    ) -> rusqlite::Result<Flushed> {
        let mut out = Flushed {
            events: events.len(),
            minutes: 0,
        };
        self.finish_recovery(settings)?;
        if self.rolled == 0 {
            let first = events.iter().map(Event::time).min().unwrap_or(now_ms);
            self.rolled = first.min(now_ms) / MINUTE * MINUTE;
        }
        for e in events {
            self.apply(e, Some(tx), settings)?;
        }
        let now_floor = now_ms / MINUTE * MINUTE;
        let mut rolled_hour = false;
        while self.rolled < now_floor {
            if self.open.is_empty() && self.cur.is_empty() {
                // Nothing to account: jump over the silence.
                self.rolled = now_floor;
                break;
            }
            self.close_minute(tx, self.rolled, settings)?;
            out.minutes += 1;
            self.rolled += MINUTE;
            self.strip_minutes(tx, self.rolled, settings.retention.raw)?;
            if self.rolled.is_multiple_of(HOUR) {
                rolled_hour = true;
            }
        }
        rolled_hour |= self.roll_up(tx)?;
        if rolled_hour {
            self.expire(tx, now_ms, settings)?;
        }
        let mut st =
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
        st.execute(("rolled", self.rolled as i64))?;
        st.execute(("alive", now_ms as i64))?;
        Ok(out)
    }

    fn close_minute(
        &mut self,
        tx: &Transaction<'_>,
        m: u64,
        settings: &Settings,
    ) -> rusqlite::Result<()> {
        let end = m + MINUTE;
        for id in self.cur.keys().copied().collect::<Vec<_>>() {
            let c = self.cur[&id];
            let stale_at = c.last_seen.saturating_add(c.stale_ms);
            if stale_at < end {
                self.account(id, stale_at.max(c.at), settings);
                self.cur.remove(&id);
            } else {
                self.account(id, end, settings);
            }
        }
        let slots = self.open.remove(&m).unwrap_or_default();
        let hour = m / HOUR * HOUR;
        for (id, slot) in slots {
            write_slot(tx, Tier::Minute, id, m, slot)?;
            self.dirty_hours.entry(hour).or_default().insert(id);
        }
        Ok(())
    }

    /// Sums closed hours from their minutes and closed days from their hours.
    fn roll_up(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<bool> {
        let mut any = false;
        while let Some((&h, _)) = self.dirty_hours.first_key_value() {
            if h + HOUR > self.rolled {
                break;
            }
            let ids = self.dirty_hours.remove(&h).unwrap_or_default();
            for id in ids {
                let mut sum = Slot::default();
                for (_, s) in super::slots_by_id(tx, Tier::Minute, id, h, h + HOUR)? {
                    sum.merge(&s);
                }
                if !sum.is_empty() {
                    write_slot(tx, Tier::Hour, id, h, sum)?;
                    self.dirty_days.entry(h / DAY * DAY).or_default().insert(id);
                }
            }
            any = true;
        }
        while let Some((&d, _)) = self.dirty_days.first_key_value() {
            if d + DAY > self.rolled {
                break;
            }
            let ids = self.dirty_days.remove(&d).unwrap_or_default();
            for id in ids {
                let mut sum = Slot::default();
                for (_, s) in super::slots_by_id(tx, Tier::Hour, id, d, d + DAY)? {
                    sum.merge(&s);
                }
                if !sum.is_empty() {
                    write_slot(tx, Tier::Day, id, d, sum)?;
                }
            }
        }
        Ok(any)
    }

    /// Deletes what is past its tier's retention.
    fn expire(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        settings: &Settings,
    ) -> rusqlite::Result<()> {
        let r = settings.retention;
        let cutoff = |d: Duration| now_ms.saturating_sub(d.as_millis() as u64) as i64;
        tx.execute("DELETE FROM raw WHERE start < ?1", [cutoff(r.raw)])?;
        let mut st = tx.prepare_cached("DELETE FROM rollup WHERE tier = ?1 AND start < ?2")?;
        for (tier, keep) in [
            (Tier::Minute, r.minute),
            (Tier::Hour, r.hour),
            (Tier::Day, r.day),
        ] {
            // A block goes when its last slot is past retention.
            let before = cutoff(keep) - tier.block_ms() as i64;
            let below = (before.max(0) as u64).div_ceil(tier.block_ms());
            if below == self.expired[tier as usize] {
                continue;
            }
            st.execute((tier as i64, before))?;
            // (Noted before the commit: a failed flush leaves these blocks to the next change.)
            self.expired[tier as usize] = below;
        }
        tx.execute("DELETE FROM changes WHERE at < ?1", [cutoff(r.day)])?;
        tx.execute(
            "DELETE FROM incidents WHERE end IS NOT NULL AND end < ?1",
            [cutoff(r.day)],
        )?;
        Ok(())
    }

    /// Drops the latency from the minute blocks whose hour ended before the raw window (at
    /// least `STRIP_AFTER_MIN` ago): past it a minute keeps its counts and times, which uptime
    /// and the windows' edges read, and latency lives on in the hour that summed it (a minute of
    /// 5 s probes goes from about 16 bytes to 2). Called as each minute closes (`now_ms`, its
    /// end), for a sixtieth of the targets, so each is done once in the hour after its block
    /// left the window and no flush carries them all. Blocks that left it while lookout was not
    /// running keep their latency until retention deletes them.
    fn strip_minutes(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        raw: Duration,
    ) -> rusqlite::Result<()> {
        let horizon = now_ms.saturating_sub((raw.as_millis() as u64).max(STRIP_AFTER_MIN));
        // The newest block whose whole hour is past the horizon.
        let Some(block) = (horizon / HOUR).checked_sub(1).map(|h| (h * HOUR) as i64) else {
            return Ok(());
        };
        let turn = ((now_ms / MINUTE) % 60) as i64;
        let mut read = tx.prepare_cached(super::BLOCK_QUERY)?;
        let mut write = tx.prepare_cached(
            "UPDATE rollup SET slots = ?4 WHERE tier = ?1 AND target = ?2 AND start = ?3",
        )?;
        let len = Tier::Minute.slot_ms();
        for &id in self.names.keys().filter(|&&id| id.rem_euclid(60) == turn) {
            let key = (Tier::Minute as i64, id, block);
            let Some(old) = read.query_row(key, |r| r.get::<_, Vec<u8>>(0)).optional()? else {
                continue;
            };
            if let Some(bare) = Block::decode(&old, len).and_then(Block::without_latency) {
                write.execute((key.0, key.1, key.2, bare.encode(len)))?;
            }
        }
        Ok(())
    }

    /// Uptime objectives of `targets` (name, objective, window) at `now_ms`.
    pub fn slo_all(
        &self,
        targets: &[(String, f64, Duration)],
        now_ms: u64,
    ) -> Vec<(String, super::SloStatus)> {
        let now = super::at(now_ms as i64);
        targets
            .iter()
            .filter_map(|(name, objective, window)| {
                super::slo(&self.conn, name, *objective, *window, now)
                    .ok()
                    .map(|s| (name.clone(), s))
            })
            .collect()
    }
}

fn write_slot(
    tx: &Transaction<'_>,
    tier: Tier,
    id: i64,
    start: u64,
    slot: Slot,
) -> rusqlite::Result<()> {
    let (block_start, i) = tier.locate(start);
    let old: Option<Vec<u8>> = tx
        .prepare_cached(super::BLOCK_QUERY)?
        .query_row((tier as i64, id, block_start as i64), |r| r.get(0))
        .optional()?;
    let mut block = old
        .and_then(|b| Block::decode(&b, tier.slot_ms()))
        .unwrap_or_default();
    block.set(i, slot);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO rollup (tier, target, start, slots) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((
        tier as i64,
        id,
        block_start as i64,
        block.encode(tier.slot_ms()),
    ))?;
    Ok(())
}

/// The queue of results the writer subscribes with: a flush interval's worth at 100k targets
/// probed every 5 s, with room to spare.
pub const QUEUE: usize = 65_536;

/// Feeds `writer` from the result bus and the scheduler's state changes until `stop`, flushing
/// every `flush_interval` (read from the current config each time) and once more at the end;
/// the uptime objectives are recomputed after each closed minute and handed to `on_slo`.
pub async fn run(
    mut writer: Writer,
    mut results: mpsc::Receiver<Arc<crate::results::ProbeResult>>,
    mut changes: mpsc::Receiver<crate::schedule::ChangeEvent>,
    config: impl Fn() -> Arc<crate::config::Config> + Send + 'static,
    on_slo: impl Fn(Vec<(String, super::SloStatus)>) + Send + 'static,
    stop: CancellationToken,
) {
    let mut batch: Vec<Event> = Vec::new();
    let mut next = tokio::time::Instant::now() + config().history.flush_interval;
    loop {
        let last = tokio::select! {
            Some(r) = results.recv() => {
                if let Some(e) = result_event(&r) {
                    batch.push(e);
                }
                continue;
            }
            Some(c) = changes.recv() => {
                batch.push(change_event(c));
                continue;
            }
            _ = tokio::time::sleep_until(next) => false,
            _ = stop.cancelled() => true,
        };
        let cfg = config();
        next = tokio::time::Instant::now() + cfg.history.flush_interval;
        let events = std::mem::take(&mut batch);
        let slo_targets: Vec<(String, f64, Duration)> = cfg
            .targets
            .targets()
            .iter()
            .filter_map(|t| t.slo.map(|s| (t.name.clone(), s.objective, s.window)))
            .collect();
        let settings = cfg.history.clone();
        let now = super::ms(std::time::SystemTime::now());
        let done = tokio::task::spawn_blocking(move || {
            let flushed = writer.flush(events, now, &settings);
            let slo = match &flushed {
                Ok(f) if f.minutes > 0 && !slo_targets.is_empty() => {
                    Some(writer.slo_all(&slo_targets, now))
                }
                _ => None,
            };
            (writer, flushed, slo)
        })
        .await;
        let Ok((w, flushed, slo)) = done else {
            tracing::error!("History writer panicked; history is no longer recorded");
            return;
        };
        writer = w;
        if let Err(e) = flushed {
            tracing::error!(err = %e, "Cannot write history; this batch is lost");
        }
        if let Some(slo) = slo {
            on_slo(slo);
        }
        if last {
            return;
        }
    }
}

fn failure(f: &crate::probe::prober::ProbeFailure) -> (String, String) {
    (f.kind.as_str().to_owned(), f.message.clone())
}

fn result_event(r: &crate::results::ProbeResult) -> Option<Event> {
    let t = r.scheduled.as_ref()?;
    Some(Event::Result {
        target: t.name.clone(),
        interval_ms: t.interval.as_millis() as u64,
        start_ms: super::ms(r.started),
        finished_ms: super::ms(r.finished),
        duration_us: r.duration.as_micros() as u64,
        failure: r.failure.as_ref().map(failure),
    })
}

fn change_event(c: crate::schedule::ChangeEvent) -> Event {
    Event::Change {
        target: c.target,
        from: c.from,
        to: c.to,
        at_ms: super::ms(c.at),
        root_causes: c.root_causes,
        failure: c.failure.as_ref().map(failure),
    }
}

/// The config `run` reads: the state's current one.
pub fn current_config(
    state: Arc<crate::state::State>,
) -> impl Fn() -> Arc<crate::config::Config> + Send + 'static {
    move || state.config.load_full()
}

/// Where `run` puts the uptime objectives: each target's state, for `/metrics`.
pub fn publish_slo(
    scheduler: Arc<crate::schedule::Scheduler>,
) -> impl Fn(Vec<(String, super::SloStatus)>) + Send + 'static {
    move |slo| {
        let by_name: HashMap<String, super::SloStatus> = slo.into_iter().collect();
        for s in scheduler.states().iter() {
            if let Some(v) = by_name.get(&s.target().name) {
                s.set_slo(v.budget_remaining, v.burn_rate);
            }
        }
    }
}
