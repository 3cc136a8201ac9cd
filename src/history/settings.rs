//! The `history:` section: how often the store is flushed, how long each tier is kept, and the
//! maintenance windows that uptime leaves out. Validated once into `Settings`.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::values::{ConfigDuration, FieldError};

/// `history:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// How often buffered results are written (one fsync each); default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_interval: Option<ConfigDuration>,
    /// How long each tier is kept.
    #[serde(default, skip_serializing_if = "RawRetention::is_empty")]
    pub retention: RawRetention,
    /// Windows excluded from uptime and counted as maintenance time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<RawWindow>,
}

/// `history.retention` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Raw results (default 48h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<ConfigDuration>,
    /// Minute rollups (default 7d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minute: Option<ConfigDuration>,
    /// Hour rollups (default 90d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<ConfigDuration>,
    /// Day rollups, incidents and state changes (default 400d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<ConfigDuration>,
}

impl RawRetention {
    fn is_empty(&self) -> bool {
        *self == RawRetention::default()
    }
}

/// One `history.maintenance` entry as written: either fixed (`start`, `end`, RFC 3339) or weekly
/// (`weekday`, `from`, `to`, UTC `HH:MM`; `to` before `from` runs past midnight).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Target names the window covers, or `"*"` for all (default all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Start of a fixed window, e.g. `2025-03-01T22:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// End of a fixed window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Day of a weekly window: mon, tue, wed, thu, fri, sat, sun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekday: Option<String>,
    /// Start time of a weekly window, UTC `HH:MM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End time of a weekly window, UTC `HH:MM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// How long each tier is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw results.
    pub raw: Duration,
    /// Minute rollups.
    pub minute: Duration,
    /// Hour rollups.
    pub hour: Duration,
    /// Day rollups, incidents and state changes.
    pub day: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw: Duration::from_secs(48 * 3600),
            minute: Duration::from_secs(7 * 86_400),
            hour: Duration::from_secs(90 * 86_400),
            day: Duration::from_secs(400 * 86_400),
        }
    }
}

/// When a maintenance window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// From `.0` to `.1`, Unix milliseconds.
    Fixed(u64, u64),
    /// Every week: day (0 = Monday), from and to as milliseconds into the day (UTC).
    Weekly(u8, u64, u64),
}

/// A validated maintenance window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The targets it covers; empty means all.
    pub targets: Vec<String>,
    /// When.
    pub when: When,
}

/// `history:`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How often buffered results are written.
    pub flush_interval: Duration,
    /// How long each tier is kept.
    pub retention: Retention,
    /// Maintenance windows.
    pub maintenance: Vec<Window>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            flush_interval: Duration::from_secs(1),
            retention: Retention::default(),
            maintenance: Vec::new(),
        }
    }
}

const MS_PER_DAY: u64 = 86_400_000;
/// 1970-01-01 was a Thursday: Monday-based weekday 3.
const EPOCH_WEEKDAY: u64 = 3;

impl Settings {
    /// Validates `raw`; the error's path is relative to `history:`.
    pub fn build(raw: &Section) -> Result<Settings, FieldError> {
        let d = Retention::default();
        let pick = |v: Option<ConfigDuration>, default: Duration, name: &str| {
            let v = v.map(|d| d.0).unwrap_or(default);
            if v < Duration::from_secs(60) {
                return Err(FieldError::new(
                    format!("retention.{name}"),
                    format!("retention {v:?} is too short (at least 1m)"),
                ));
            }
            Ok(v)
        };
        let retention = Retention {
            raw: pick(raw.retention.raw, d.raw, "raw")?,
            minute: pick(raw.retention.minute, d.minute, "minute")?,
            hour: pick(raw.retention.hour, d.hour, "hour")?,
            day: pick(raw.retention.day, d.day, "day")?,
        };
        let flush_interval = raw
            .flush_interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(1));
        if flush_interval < Duration::from_millis(10) || flush_interval > Duration::from_secs(60) {
            return Err(FieldError::new(
                "flush_interval",
                format!("flush_interval {flush_interval:?} must be between 10ms and 1m"),
            ));
        }
        let mut maintenance = Vec::with_capacity(raw.maintenance.len());
        for (i, w) in raw.maintenance.iter().enumerate() {
            maintenance.push(build_window(w).map_err(|e| e.within(&format!("maintenance[{i}]")))?);
        }
        Ok(Settings {
            flush_interval,
            retention,
            maintenance,
        })
    }

    /// Milliseconds of `[from, to)` (Unix ms) inside a maintenance window of `target`.
    pub fn maintenance_ms(&self, target: &str, from: u64, to: u64) -> u64 {
        if self.maintenance.is_empty() || to <= from {
            return 0;
        }
        let mut spans: Vec<(u64, u64)> = Vec::new();
        for w in &self.maintenance {
            if !w.targets.is_empty() && !w.targets.iter().any(|t| t == target) {
                continue;
            }
            match w.when {
                When::Fixed(a, b) => spans.push((a, b)),
                When::Weekly(day, a, b) => {
                    // The occurrences that can touch [from, to): the week before to the week after.
                    let week = |t: u64| (t / MS_PER_DAY + EPOCH_WEEKDAY) / 7;
                    let first = week(from).saturating_sub(1);
                    for k in first..=week(to) + 1 {
                        // Day 0 of week k is the Monday `k * 7 - EPOCH_WEEKDAY` days after the epoch.
                        let Some(monday) = (k * 7).checked_sub(EPOCH_WEEKDAY) else {
                            continue;
                        };
                        let base = monday * MS_PER_DAY + u64::from(day) * MS_PER_DAY;
                        let end = if b > a {
                            base + b
                        } else {
                            base + MS_PER_DAY + b
                        };
                        spans.push((base + a, end));
                    }
                }
            }
        }
        overlap(&mut spans, from, to)
    }
}

/// The length of the union of `spans` within `[from, to)`.
fn overlap(spans: &mut [(u64, u64)], from: u64, to: u64) -> u64 {
    spans.sort_unstable();
    let (mut total, mut cursor) = (0, from);
    for &(a, b) in spans.iter() {
        let (a, b) = (a.max(cursor), b.min(to));
        if b > a {
            total += b - a;
            cursor = b;
        }
    }
    total
}

fn build_window(w: &RawWindow) -> Result<Window, FieldError> {
    let targets: Vec<String> = if w.targets.iter().any(|t| t == "*") {
        Vec::new()
    } else {
        w.targets.clone()
    };
    let fixed = w.start.is_some() || w.end.is_some();
    let weekly = w.weekday.is_some() || w.from.is_some() || w.to.is_some();
    let when = match (fixed, weekly) {
        (true, true) => {
            return Err(FieldError::new(
                "",
                "a window is either fixed (start, end) or weekly (weekday, from, to), not both",
            ));
        }
        (false, false) => {
            return Err(FieldError::new(
                "",
                "a window needs start and end, or weekday, from and to",
            ));
        }
        (true, false) => {
            let start = parse_rfc3339(w.start.as_deref().unwrap_or(""))
                .map_err(|m| FieldError::new("start", m))?;
            let end = parse_rfc3339(w.end.as_deref().unwrap_or(""))
                .map_err(|m| FieldError::new("end", m))?;
            if end <= start {
                return Err(FieldError::new("end", "end must be after start"));
            }
            When::Fixed(start, end)
        }
        (false, true) => {
            let day = match w.weekday.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("mon") => 0,
                Some("tue") => 1,
                Some("wed") => 2,
                Some("thu") => 3,
                Some("fri") => 4,
                Some("sat") => 5,
                Some("sun") => 6,
                other => {
                    return Err(FieldError::new(
                        "weekday",
                        format!(
                            "weekday {other:?} is not one of mon, tue, wed, thu, fri, sat, sun"
                        ),
                    ));
                }
            };
            let from = parse_hhmm(w.from.as_deref().unwrap_or(""))
                .map_err(|m| FieldError::new("from", m))?;
            let to =
                parse_hhmm(w.to.as_deref().unwrap_or("")).map_err(|m| FieldError::new("to", m))?;
            if from == to {
                return Err(FieldError::new("to", "to must differ from from"));
            }
            When::Weekly(day, from, to)
        }
    };
    Ok(Window { targets, when })
}

/// `HH:MM` as milliseconds into the day.
fn parse_hhmm(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a time of day (HH:MM)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u64, u64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok((h * 60 + m) * 60_000)
}

/// An RFC 3339 timestamp (`2025-03-01T22:00:00Z`, `…+01:00`, fractions ignored) as Unix ms.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not an RFC 3339 timestamp (like 2025-03-01T22:00:00Z)");
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        s.get(r).and_then(|x| x.parse().ok()).ok_or_else(bad)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let oh: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let om: i64 = rest[4..6].parse().map_err(|_| bad())?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return Err(bad()),
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs)
        .map(|s| s * 1000)
        .map_err(|_| format!("{s:?} is before 1970"))
}

/// `t` as Unix milliseconds (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS_PER_WEEK: u64 = 7 * MS_PER_DAY;

    #[test]
    fn rfc3339_and_weekly_windows() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339("2024-03-03T02:00:00Z").unwrap(),
            1_709_431_200_000
        );
        assert_eq!(
            parse_rfc3339("2024-03-03T03:00:00+01:00").unwrap(),
            1_709_431_200_000
        );
        let s = Settings::build(&Section {
            maintenance: vec![RawWindow {
                targets: vec!["db".into()],
                weekday: Some("sun".into()),
                from: Some("02:00".into()),
                to: Some("03:00".into()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
        // 2024-03-03 was a Sunday.
        let two = 1_709_431_200_000;
        assert_eq!(s.maintenance_ms("db", two - 60_000, two + 60_000), 60_000);
        assert_eq!(s.maintenance_ms("db", two, two + 7_200_000), 3_600_000);
        assert_eq!(s.maintenance_ms("web", two, two + 7_200_000), 0);
        // A week later, the same hour.
        let next = two + MS_PER_WEEK;
        assert_eq!(s.maintenance_ms("db", next, next + 60_000), 60_000);
        let e = Settings::build(&Section {
            maintenance: vec![RawWindow {
                weekday: Some("sunday".into()),
                from: Some("02:00".into()),
                to: Some("03:00".into()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.path, "maintenance[0].weekday");
    }
}
