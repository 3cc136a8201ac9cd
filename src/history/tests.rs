//! The store against hand-computed series: time weighting, maintenance, a day boundary, a
//! restart; and the files it refuses.

use std::time::{Duration, SystemTime};

use super::settings::{RawWindow, Section, parse_rfc3339};
use super::writer::Event;
use super::*;

fn t(ms: u64) -> SystemTime {
    at(ms as i64)
}

fn change(target: &str, from: State, to: State, at_ms: u64) -> Event {
    Event::Change {
        target: target.into(),
        from,
        to,
        at_ms,
        root_causes: if matches!(to, State::Down) {
            vec![target.into()]
        } else {
            vec![]
        },
        failure: matches!(to, State::Down)
            .then(|| ("connect".to_owned(), "connection refused".to_owned())),
    }
}

fn result(target: &str, finished_ms: u64, ms: u64, ok: bool) -> Event {
    Event::Result {
        target: target.into(),
        interval_ms: 10_000,
        start_ms: finished_ms - ms,
        finished_ms,
        duration_us: ms * 1000,
        failure: (!ok).then(|| ("connect".to_owned(), "connection refused".to_owned())),
    }
}

#[test]
fn rollups_are_time_weighted_across_a_day_boundary_maintenance_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // 2024-03-02T23:58:00Z, two minutes before a UTC day boundary.
    let t0 = parse_rfc3339("2024-03-02T23:58:00Z").unwrap();
    let settings = Settings::build(&Section {
        maintenance: vec![RawWindow {
            targets: vec!["web".into()],
            start: Some("2024-03-03T00:01:00Z".into()),
            end: Some("2024-03-03T00:02:00Z".into()),
            ..Default::default()
        }],
        ..Default::default()
    })
    .unwrap();
    let s = |x: u64| t0 + x * 1000;
    {
        let (_store, mut w) = Store::open(dir.path()).unwrap();
        let events = vec![
            change("web", State::Unknown, State::Up, s(30)),
            result("web", s(40), 10, true),
            result("web", s(100), 20, true),
            change("web", State::Up, State::Down, s(150)),
            result("web", s(190), 5, false),
        ];
        let f = w.flush(events, s(200), &settings).unwrap();
        // 23:58, 23:59 and 00:00 closed; 00:01 open.
        assert_eq!(f.minutes, 3);
        // Dropped without closing 00:01: as a kill -9 after this batch.
    }
    let (store, mut w) = Store::open(dir.path()).unwrap();
    let events = vec![
        change("web", State::Unknown, State::Up, s(260)),
        result("web", s(270), 30, true),
    ];
    w.flush(events, s(400), &settings).unwrap();

    let minutes = slots(&store.read.lock().unwrap(), Tier::Minute, "web", t0, s(360)).unwrap();
    let by_minute: Vec<(u64, u64, u64, u32, u32)> = minutes
        .iter()
        .map(|(at, x)| {
            (
                (at - t0) / 1000,
                x.up_ms / 1000,
                x.down_ms / 1000,
                x.successes,
                x.failures,
            )
        })
        .collect();
    assert_eq!(
        by_minute,
        [
            (0, 30, 0, 1, 0),    // 23:58: up from :30
            (60, 60, 0, 1, 0),   // 23:59: up throughout
            (120, 30, 30, 0, 0), // 00:00: down from :30
            (180, 0, 0, 0, 1),   // 00:01: maintenance; lookout stopped at :20
            (240, 40, 0, 1, 0),  // 00:02: unknown until :20 (restart), then up
            (300, 60, 0, 0, 0),  // 00:03
        ]
    );
    assert_eq!(minutes[3].1.maintenance_ms, 20_000);
    let u = store.uptime("web", t(t0), t(s(360))).unwrap();
    assert_eq!(
        u,
        Uptime {
            up: Duration::from_secs(220),
            down: Duration::from_secs(30),
            maintenance: Duration::from_secs(20),
            unknown: Duration::from_secs(90),
        }
    );
    assert_eq!(u.ratio(), Some(220.0 / 250.0));
    // The closed day comes from the day tier, today from minutes.
    let day1 = parse_rfc3339("2024-03-02T00:00:00Z").unwrap();
    let days = store.days("web", 2, t(s(420))).unwrap();
    assert_eq!(days.len(), 2);
    assert_eq!(days[0].start, t(day1));
    assert_eq!(days[0].up_ratio, Some(1.0));
    assert_eq!(days[0].incidents, 0);
    assert_eq!(days[1].up_ratio, Some(130.0 / 160.0));
    assert_eq!(days[1].incidents, 1);
    assert!((days[1].maintenance_ratio - 20.0 / 86_400.0).abs() < 1e-12);
    // A status page row's summary reads the same, in one go.
    let windows = [Duration::from_secs(360), Duration::from_secs(2 * 86_400)];
    let sum = store.summary("web", &windows, 2, 10, t(s(420))).unwrap();
    assert_eq!(sum.days, days);
    for (w, u) in windows.iter().zip(&sum.uptime) {
        assert_eq!(*u, store.uptime("web", t(s(420)) - *w, t(s(420))).unwrap());
    }
    assert_eq!(sum.incidents, store.incidents("web", 10).unwrap());
    // Again, with the final blocks (the closed day's) from the store's cache.
    assert!(!store.finals.lock().unwrap().map.is_empty());
    assert_eq!(
        store.summary("web", &windows, 2, 10, t(s(420))).unwrap(),
        sum
    );
    // Hourly latency: the hour under way from its minutes (10, 20 and 30 ms probes).
    assert_eq!(sum.hourly.len(), 2);
    assert_eq!(sum.hourly[1].max, Duration::from_millis(30));
    let day_slots = slots(
        &store.read.lock().unwrap(),
        Tier::Day,
        "web",
        day1,
        day1 + 86_400_000,
    )
    .unwrap();
    assert_eq!(day_slots.len(), 1);
    assert_eq!(day_slots[0].1.up_ms, 90_000);
    assert_eq!(day_slots[0].1.successes, 2);
    assert_eq!(day_slots[0].1.latency_max_us, 20_000);
    // Latency per minute: one probe each, so p50 = p95 = max.
    let lat = store
        .latency("web", t(t0), t(s(360)), Duration::from_secs(60))
        .unwrap();
    let ms: Vec<_> = lat
        .iter()
        .map(|p| ((ms(p.at) - t0) / 1000, p.p50.as_millis(), p.max.as_millis()))
        .collect();
    assert_eq!(ms, [(0, 10, 10), (60, 20, 20), (240, 30, 30)]);
    // The incident: down at 00:00:30, up again after the restart.
    let inc = store.incidents("web", 10).unwrap();
    assert_eq!(inc.len(), 1);
    assert_eq!(inc[0].start, t(s(150)));
    assert_eq!(inc[0].end, Some(t(s(260))));
    assert_eq!(inc[0].kind.as_deref(), Some("connect"));
    assert_eq!(inc[0].root_causes, ["web"]);
    let changes = store.state_changes("web", 10).unwrap();
    let seq: Vec<_> = changes.iter().map(|c| (c.from, c.to)).collect();
    assert_eq!(
        seq,
        [
            (State::Unknown, State::Up),
            (State::Up, State::Down),
            (State::Unknown, State::Up)
        ]
    );
}

#[test]
fn slo_budget_and_burn_rate() {
    let window = Uptime {
        up: Duration::from_secs(995),
        down: Duration::from_secs(5),
        ..Default::default()
    };
    let hour = Uptime {
        up: Duration::from_secs(98),
        down: Duration::from_secs(2),
        ..Default::default()
    };
    let s = slo_status(0.99, &window, &hour);
    assert!((s.budget_remaining - 0.5).abs() < 1e-9, "{s:?}");
    assert!((s.burn_rate - 2.0).abs() < 1e-9, "{s:?}");
}

/// Opening `bytes` as the store fails naming the file and `why`, and leaves it as it was.
fn refused(bytes: &[u8], why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    std::fs::write(&file, bytes).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains(why), "{text}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "the file was changed");
    assert!(!dir.path().join(format!("{FILE_NAME}-wal")).exists());
}

fn sqlite_file(app: i32, version: i32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.sqlite");
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch("CREATE TABLE notes (x TEXT);").unwrap();
    c.pragma_update(None, "application_id", app).unwrap();
    c.pragma_update(None, "user_version", version).unwrap();
    drop(c);
    std::fs::read(&p).unwrap()
}

#[test]
fn foreign_newer_and_damaged_files_are_refused_and_left_alone() {
    refused(
        b"just some notes, not a database\n",
        "not an SQLite database",
    );
    refused(&sqlite_file(0, 0), "another program");
    refused(
        &sqlite_file(APPLICATION_ID, SCHEMA_VERSION + 1),
        "newer lookout",
    );
    // Version 1 stored latency in µs; this build does not convert it, and says so.
    refused(
        &sqlite_file(APPLICATION_ID, 1),
        "older lookout (schema version 1",
    );
    // Version 2 is converted (below); version 0 was never written.
    refused(&sqlite_file(APPLICATION_ID, 0), "not one lookout wrote");
    // A real store with its pages overwritten past the header.
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let mut bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
    for b in bytes.iter_mut().skip(100) {
        *b = 0x5a;
    }
    refused(&bytes, "damaged");
}

#[test]
fn minutes_past_the_raw_window_keep_counts_and_times_and_lose_latency() {
    let dir = tempfile::tempdir().unwrap();
    // Raw results kept a minute: minutes keep their latency the least it can be, two hours.
    let settings = Settings::build(&Section {
        retention: settings::RawRetention {
            raw: Some(crate::values::ConfigDuration(Duration::from_secs(60))),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let t0 = parse_rfc3339("2024-03-03T00:00:00Z").unwrap();
    let hour = 3_600_000;
    let (store, mut w) = Store::open(dir.path()).unwrap();
    w.flush(
        vec![change("web", State::Unknown, State::Up, t0)],
        t0,
        &settings,
    )
    .unwrap();
    // A result every 10 s for four hours and five minutes (20 ms each), flushed every minute:
    // each closed minute strips the blocks of a sixtieth of the targets.
    let mut at = t0;
    while at < t0 + 4 * hour + 5 * 60_000 {
        let events = (0..6)
            .map(|k| result("web", at + k * 10_000 + 1, 20, true))
            .collect();
        at += 60_000;
        w.flush(events, at + 1, &settings).unwrap();
    }
    let read = |from: u64, to: u64| {
        slots(&store.read.lock().unwrap(), Tier::Minute, "web", from, to).unwrap()
    };
    // Hours 0 and 1 ended more than two hours ago: their minutes are bare.
    for (from, bare) in [(t0, true), (t0 + hour, true), (t0 + 3 * hour, false)] {
        let minutes = read(from, from + hour);
        assert_eq!(minutes.len(), 60, "a slot for each minute");
        for (_, m) in &minutes {
            assert_eq!((m.successes, m.failures, m.up_ms), (6, 0, 60_000));
            assert_eq!(m.has_latency(), !bare, "{m:?}");
        }
    }
    // The hours still hold what their minutes summed; uptime is unchanged.
    let hours = slots(
        &store.read.lock().unwrap(),
        Tier::Hour,
        "web",
        t0,
        t0 + 3 * hour,
    )
    .unwrap();
    assert_eq!(hours.len(), 3);
    for (_, h) in &hours {
        assert_eq!((h.successes, h.up_ms), (360, hour));
        assert_eq!(h.latency_max_us, 20_000);
        assert_eq!(h.sketch.0.iter().map(|e| e.1).sum::<u32>(), 360);
    }
    let u = store.uptime("web", t(t0), t(t0 + 4 * hour)).unwrap();
    assert_eq!(u.up, Duration::from_secs(4 * 3600));
    // Latency at minute steps reaches back as far as minutes keep it; hourly steps further.
    let minute = Duration::from_secs(60);
    assert!(
        store
            .latency("web", t(t0), t(t0 + hour), minute)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .latency("web", t(t0 + 3 * hour), t(t0 + 4 * hour), minute)
            .unwrap()
            .len(),
        60
    );
    let hourly = store
        .latency("web", t(t0), t(t0 + 3 * hour), Duration::from_secs(3600))
        .unwrap();
    assert_eq!(hourly.len(), 3);
}

#[test]
fn a_version_2_store_is_converted_with_its_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = parse_rfc3339("2024-03-03T00:00:00Z").unwrap();
    let settings = Settings::default();
    let (expected, uptime) = {
        let (store, mut w) = Store::open(dir.path()).unwrap();
        let mut events = vec![change("web", State::Unknown, State::Up, t0)];
        events.extend((0..30).map(|k| result("web", t0 + k * 10_000 + 1, 20, true)));
        w.flush(events, t0 + 301_000, &settings).unwrap();
        drop(w);
        let minutes = slots(
            &store.read.lock().unwrap(),
            Tier::Minute,
            "web",
            t0,
            t0 + 300_000,
        )
        .unwrap();
        let u = store.uptime("web", t(t0), t(t0 + 300_000)).unwrap();
        (minutes, u)
    };
    assert_eq!(expected.len(), 5);
    // The same rows in version 2's layout: keyed by (tier, target, start).
    {
        let c = rusqlite::Connection::open(dir.path().join(FILE_NAME)).unwrap();
        c.execute_batch(
            "BEGIN;
             CREATE TABLE old (tier INTEGER NOT NULL, target INTEGER NOT NULL,
                 start INTEGER NOT NULL, slots BLOB NOT NULL,
                 PRIMARY KEY (tier, target, start)) WITHOUT ROWID;
             INSERT INTO old SELECT tier, target, start, slots FROM rollup;
             DROP TABLE rollup;
             ALTER TABLE old RENAME TO rollup;
             PRAGMA user_version = 2;
             COMMIT;",
        )
        .unwrap();
        let pk: String = c
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'rollup'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(pk.contains("PRIMARY KEY (tier, target, start)"), "{pk}");
    }
    let (store, _w) = Store::open(dir.path()).unwrap();
    let c = store.read.lock().unwrap();
    let version: i32 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let pk: String = c
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'rollup'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(pk.contains("PRIMARY KEY (tier, start, target)"), "{pk}");
    assert_eq!(
        slots(&c, Tier::Minute, "web", t0, t0 + 300_000).unwrap(),
        expected
    );
    drop(c);
    assert_eq!(store.uptime("web", t(t0), t(t0 + 300_000)).unwrap(), uptime);
}
