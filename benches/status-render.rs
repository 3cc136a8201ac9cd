//! Server-side time of `/status` at 1,000 and 10,000 targets with a year of history
//! (docs/benchmarks.md).
//!
//! The store: one day of results and state changes for 8 template targets at a 60 s interval
//! through the real writer (one flush per minute; one template goes down for 12 minutes a day),
//! then each target gets one template's real encoded blocks laid out as a year at default
//! retention keeps them, ending now: 7 days of minute blocks, 90 days of hour blocks, 400 days
//! of full 32-day day blocks, and an incident every 10 days for the failing template's targets.
//! The page: 20 groups, a dependency on one of ten targets for every fourth target, an uptime
//! objective on every third, one target down and its dependents blocked.
//! Each render is what `GET /status` runs on its blocking thread: `status::render_page` (the
//! model from the live views and `StoreHistory`, then the HTML), timed from the call to the
//! finished string. The first render (a cold SQLite page cache, and the store's cache of final
//! blocks empty, as after the UTC day changes) is reported apart.
//!
//! Three renders per size: the first page of rows (the default page size), a page near the
//! end, and every row on one page (`page_size` as large as the page).
//!
//! Run: `cargo bench --bench status-render [-- 1000|10000]`

use std::time::{Duration, Instant, SystemTime};

// lookout's allocator (src/main.rs), so the render allocates as the server does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use lookout::health::State;
use lookout::history::settings::Settings;
use lookout::history::writer::Event;
use lookout::history::{Block, SloStatus, Store, Tier};
use lookout::schedule::TargetHealth;
use lookout::status::{self, StoreHistory, TargetView};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 86_400_000;
/// The templates' day: 2024-03-03T00:00:00Z.
const T0: u64 = 1_709_424_000_000;
const TEMPLATES: usize = 8;
/// The template that fails once a day.
const FAILING: usize = 7;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Around 20 ms with a tail, in µs.
    fn latency(&mut self) -> u64 {
        let u = (self.next() % 10_000) as f64 / 10_000.0;
        (12_000.0 + 16_000.0 * u + if u > 0.98 { 150_000.0 * u } else { 0.0 }) as u64
    }
}

fn change(target: &str, from: State, to: State, at_ms: u64) -> Event {
    Event::Change {
        target: target.into(),
        from,
        to,
        at_ms,
        root_causes: if to == State::Down {
            vec![target.into()]
        } else {
            vec![]
        },
        failure: (to == State::Down).then(|| ("connect".into(), "connection refused".into())),
    }
}

/// One day of the templates through the real writer; returns the store's directory.
fn template_day() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (_store, mut w) = Store::open(dir.path()).unwrap();
    let settings = Settings::default();
    let name = |k: usize| format!("tpl-{k}");
    let ups: Vec<Event> = (0..TEMPLATES)
        .map(|k| change(&name(k), State::Unknown, State::Up, T0))
        .collect();
    w.flush(ups, T0, &settings).unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (down_at, up_at) = (T0 + 14 * HOUR + 2 * MINUTE, T0 + 14 * HOUR + 14 * MINUTE);
    let mut t = T0;
    while t < T0 + DAY {
        let mut ev = Vec::new();
        for k in 0..TEMPLATES {
            let at = t + (k as u64 * 7_001) % MINUTE;
            let failing = k == FAILING && (down_at..up_at).contains(&at);
            let us = rng.latency();
            ev.push(Event::Result {
                target: name(k),
                interval_ms: MINUTE,
                start_ms: at - us / 1000,
                finished_ms: at,
                duration_us: us,
                failure: failing.then(|| ("connect".into(), "connection refused".into())),
            });
        }
        if (t..t + MINUTE).contains(&down_at) {
            ev.push(change(&name(FAILING), State::Up, State::Down, down_at));
        }
        if (t..t + MINUTE).contains(&up_at) {
            ev.push(change(&name(FAILING), State::Down, State::Up, up_at));
        }
        t += MINUTE;
        w.flush(ev, t + 1, &settings).unwrap();
    }
    dir
}

/// The templates' blocks: per template, its 24 minute blocks (by hour of day), its hour block
/// and its day slot's block.
struct Templates {
    minute: Vec<Vec<Vec<u8>>>,
    hour: Vec<Vec<u8>>,
    day: Vec<Vec<u8>>,
}

fn read_templates(dir: &std::path::Path) -> Templates {
    let c = rusqlite::Connection::open(dir.join("history.sqlite")).unwrap();
    let get = |tier: Tier, id: i64, start: u64| -> Vec<u8> {
        c.query_row(
            "SELECT slots FROM rollup WHERE tier = ?1 AND target = ?2 AND start = ?3",
            (tier as i64, id, start as i64),
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("template block {tier:?} {id} {start}: {e}"))
    };
    let id = |k: usize| -> i64 {
        c.query_row(
            "SELECT id FROM targets WHERE name = ?1",
            [format!("tpl-{k}")],
            |r| r.get(0),
        )
        .unwrap()
    };
    let mut t = Templates {
        minute: Vec::new(),
        hour: Vec::new(),
        day: Vec::new(),
    };
    for k in 0..TEMPLATES {
        let id = id(k);
        t.minute.push(
            (0..24)
                .map(|h| get(Tier::Minute, id, T0 + h * HOUR))
                .collect(),
        );
        t.hour.push(get(Tier::Hour, id, T0));
        // A full 32-day block of the template's day, through the real codec.
        let (start, i) = Tier::Day.locate(T0);
        let one = Block::decode(&get(Tier::Day, id, start), Tier::Day.slot_ms()).unwrap();
        let slot = one.0.iter().find(|(j, _)| *j == i).unwrap().1.clone();
        let mut full = Block::default();
        for j in 0..32 {
            full.set(j, slot.clone());
        }
        t.day.push(full.encode(Tier::Day.slot_ms()));
    }
    t
}

fn name(i: usize) -> String {
    format!("t-{i:05}")
}

/// A store of `n` targets with a year of history ending at `now` ms.
fn build_store(n: usize, t: &Templates, now: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let mut c = rusqlite::Connection::open(dir.path().join("history.sqlite")).unwrap();
    c.pragma_update(None, "synchronous", "OFF").unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut ins = tx
            .prepare("INSERT INTO targets (id, name) VALUES (?1, ?2)")
            .unwrap();
        for i in 0..n {
            ins.execute((i as i64 + 1, name(i))).unwrap();
        }
        let mut ins = tx
            .prepare("INSERT INTO rollup (tier, target, start, slots) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        let (this_hour, today) = (now / HOUR * HOUR, now / DAY * DAY);
        for i in 0..n {
            let k = i % TEMPLATES;
            let mut h = this_hour - 7 * DAY;
            while h <= this_hour {
                let block = &t.minute[k][((h % DAY) / HOUR) as usize];
                ins.execute((Tier::Minute as i64, i as i64 + 1, h as i64, block))
                    .unwrap();
                h += HOUR;
            }
        }
        for i in 0..n {
            let k = i % TEMPLATES;
            for d in 0..=90 {
                let start = today - (90 - d) * DAY;
                ins.execute((Tier::Hour as i64, i as i64 + 1, start as i64, &t.hour[k]))
                    .unwrap();
            }
        }
        for i in 0..n {
            let k = i % TEMPLATES;
            let mut b = Tier::Day.locate(today - 400 * DAY).0;
            while b <= today {
                ins.execute((Tier::Day as i64, i as i64 + 1, b as i64, &t.day[k]))
                    .unwrap();
                b += Tier::Day.block_ms();
            }
        }
        // The writer's watermarks, as a running lookout leaves them: minutes rolled up to the
        // one under way, the last flush now.
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('rolled', ?1), ('alive', ?2)",
            ((now / MINUTE * MINUTE) as i64, now as i64),
        )
        .unwrap();
        let mut ins = tx
            .prepare(
                "INSERT INTO incidents (target, start, end, state, kind, reason, root_causes)
                 VALUES (?1, ?2, ?3, 2, 'connect', 'connection refused', ?4)",
            )
            .unwrap();
        for i in (FAILING..n).step_by(TEMPLATES) {
            for d in (1..=400).step_by(10) {
                let start = today - d * DAY + 14 * HOUR + 2 * MINUTE;
                ins.execute((
                    i as i64 + 1,
                    start as i64,
                    (start + 12 * MINUTE) as i64,
                    name(i),
                ))
                .unwrap();
            }
        }
    }
    tx.commit().unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    dir
}

/// The page's config and the scheduler's live views of `n` targets.
fn views(n: usize, now: SystemTime) -> (lookout::config::Config, Vec<TargetView>) {
    let mut yaml =
        String::from("modules:\n  tcp: {prober: tcp}\nstatus: {group_by: group}\ntargets:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "- {{name: {}, module: tcp, target: '127.0.0.1:{}', labels: {{group: g{:02}}}",
            name(i),
            10_000 + i % 50_000,
            i % 20
        ));
        if i >= 10 && i % 4 == 0 {
            yaml.push_str(&format!(", depends_on: [{}]", name(i % 10)));
        }
        if i % 3 == 0 {
            yaml.push_str(", slo: 99.9");
        }
        yaml.push_str("}\n");
    }
    let config = lookout::config::parse(&yaml, "bench.yml".as_ref()).unwrap();
    let since = Some(now - Duration::from_secs(720));
    let views = config
        .targets
        .targets()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (state, roots) = if i == 3 {
                (State::Down, vec![name(3)])
            } else if t.depends_on.contains(&name(3)) {
                (State::Blocked, vec![name(3)])
            } else {
                (State::Up, vec![])
            };
            TargetView {
                target: t.clone(),
                health: TargetHealth {
                    state,
                    since,
                    root_causes: roots,
                    last_failure: None,
                    changes: 1,
                },
                last: None,
                slo: t.slo.map(|_| SloStatus {
                    budget_remaining: 0.8,
                    burn_rate: 0.2,
                }),
            }
        })
        .collect();
    (config, views)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn bench(n: usize, templates: &Templates, renders: usize) {
    let now = SystemTime::now();
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let built = Instant::now();
    let dir = build_store(n, templates, now_ms);
    let file_mib = std::fs::metadata(dir.path().join("history.sqlite"))
        .unwrap()
        .len() as f64
        / 1_048_576.0;
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let (config, views) = views(n, now);
    let page = config.status.page("").unwrap();
    let generated = built.elapsed();
    let render = |slice: &status::Slice| {
        let t = Instant::now();
        let history = StoreHistory {
            snap: store.snapshot().unwrap(),
            now,
        };
        let html = status::render_page(
            page,
            config.status.refresh,
            &views,
            &history,
            "/status",
            now,
            slice,
        );
        (t.elapsed(), html.len())
    };
    let paged = status::Slice {
        page_size: config.status.page_size,
        ..status::Slice::all()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{n} targets: store {file_mib:.0} MiB, generated in {:.0} s",
        generated.as_secs_f64()
    );
    for (what, slice, renders) in [
        (
            format!("first page ({} rows, the default)", paged.page_size),
            paged.clone(),
            renders,
        ),
        (
            "second to last page".to_owned(),
            status::Slice {
                index: n.div_ceil(paged.page_size).saturating_sub(2),
                ..paged.clone()
            },
            renders,
        ),
        (
            "every row on one page".to_owned(),
            status::Slice::all(),
            renders.div_ceil(2),
        ),
    ] {
        let (first, bytes) = render(&slice);
        let mut times: Vec<Duration> = (0..renders).map(|_| render(&slice).0).collect();
        times.sort();
        println!(
            "  {what}: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms over {renders} renders \
             (first, cold: {:.1} ms); page {:.2} MiB",
            ms(quantile(&times, 0.5)),
            ms(quantile(&times, 0.95)),
            ms(*times.last().unwrap()),
            ms(first),
            bytes as f64 / 1_048_576.0,
        );
    }
}

fn main() {
    let what = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let templates = read_templates(template_day().path());
    if what.is_empty() || what == "1000" {
        bench(1_000, &templates, 50);
    }
    if what.is_empty() || what == "10000" {
        bench(10_000, &templates, 20);
    }
}
