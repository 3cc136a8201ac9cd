//! Logging: one line per event on stderr, logfmt (like blackbox's) or JSON, and a capture layer
//! that records every event inside a probe into that probe's own bounded buffer for
//! `/probe?debug=true` and the history page.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `ts=… level=info msg="…" key=value`.
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// The most lines one probe keeps; blackbox keeps every line a target makes it write, lookout
/// keeps the first ones and counts the rest.
pub const MAX_PROBE_LOG_LINES: usize = 200;
/// The longest line kept in a probe log.
pub const MAX_PROBE_LOG_LINE: usize = 2048;

/// Key-value pairs of a log line, in order.
type Pairs = Vec<(&'static str, String)>;

/// One captured event, kept as data and formatted only when someone reads the log.
///
/// Formatting every event of every probe into a line (timestamp, quoting, the probe's fields)
/// cost more than the probe's own bookkeeping, while only `debug=true` and `/logs?id=` ever read
/// one; what is kept here is what the line needs, captured at the time of the event. Its text
/// lives in its log's one buffer (`ProbeLog::text`), so an event costs no allocation of its own.
#[derive(Debug, Clone, Copy)]
struct Captured {
    at: SystemTime,
    level: Level,
    /// The message's span of `ProbeLog::text`.
    msg: (u32, u32),
    /// Its fields' span of `ProbeLog::fields`: those of spans inside the probe (root first),
    /// then the event's own.
    fields: (u32, u32),
}

/// A probe's captured log: its events, formatted as logfmt lines when read.
#[derive(Debug, Default, Clone)]
pub struct ProbeLog {
    /// The probe's own fields (`module`, `target`, `prober`), shared by all its events.
    scope: Option<Arc<[(&'static str, String)]>>,
    /// Every message and value of every event, one after the other.
    text: String,
    /// Every field of every event: its key and its value's span of `text`.
    fields: Vec<(&'static str, u32, u32)>,
    events: Vec<Captured>,
    dropped: usize,
}

/// The room a new probe's log starts with: what a typical probe's events fill, so most logs
/// allocate each buffer once.
const LOG_TEXT_START: usize = 512;
const LOG_EVENTS_START: usize = 8;

impl ProbeLog {
    fn with_scope(scope: Arc<[(&'static str, String)]>) -> ProbeLog {
        ProbeLog {
            scope: Some(scope),
            text: String::with_capacity(LOG_TEXT_START),
            fields: Vec::with_capacity(LOG_EVENTS_START * 2),
            events: Vec::with_capacity(LOG_EVENTS_START),
            dropped: 0,
        }
    }

    /// Whether the log holds as many events as it keeps (`record` then only counts).
    fn is_full(&self) -> bool {
        self.events.len() >= MAX_PROBE_LOG_LINES
    }

    /// Adds a field of the event being recorded (a span's, before `record`).
    fn push_field(&mut self, key: &'static str, value: &str) {
        let start = self.text.len();
        self.text.push_str(value);
        let (a, b) = self.end_value(start);
        self.fields.push((key, a, b));
    }

    /// Records one event, whose spans' fields were pushed since the log had `first_field`
    /// fields: its own fields, its message taken out of them. Values longer than a kept line
    /// could show are cut, so a log stays bounded (at most `MAX_PROBE_LOG_LINES` values of
    /// that size) however long a target's lines are.
    fn record(&mut self, at: SystemTime, first_field: usize, event: &Event<'_>) {
        if self.is_full() {
            self.fields.truncate(first_field);
            self.dropped += 1;
            return;
        }
        let mut msg = (0, 0);
        event.record(&mut LogVisitor {
            log: self,
            msg: &mut msg,
        });
        self.events.push(Captured {
            at,
            level: *event.metadata().level(),
            msg,
            fields: (first_field as u32, self.fields.len() as u32),
        });
    }

    /// Cuts the value written to `text` since `start` to what a kept line could show; its span.
    fn end_value(&mut self, start: usize) -> (u32, u32) {
        if self.text.len() - start > MAX_PROBE_LOG_LINE {
            let mut cut = start + MAX_PROBE_LOG_LINE;
            while !self.text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.truncate(cut);
        }
        (start as u32, self.text.len() as u32)
    }

    fn slice(&self, (start, end): (u32, u32)) -> &str {
        &self.text[start as usize..end as usize]
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.dropped == 0
    }

    /// The captured lines, with a note when some were dropped.
    pub fn lines(&self) -> Vec<String> {
        let scope = self.scope.as_deref().unwrap_or_default();
        let mut lines: Vec<String> = self
            .events
            .iter()
            .map(|e| {
                let own = &self.fields[e.fields.0 as usize..e.fields.1 as usize];
                let pairs = scope
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .chain(own.iter().map(|&(k, a, b)| (k, self.slice((a, b)))));
                let mut line = String::with_capacity(160);
                render(
                    &mut line,
                    &timestamp(e.at),
                    e.level,
                    self.slice(e.msg),
                    pairs,
                    false,
                );
                cut_line(line)
            })
            .collect();
        if self.dropped > 0 {
            lines.push(format!(
                "level=warn msg=\"{} more log lines dropped\"",
                self.dropped
            ));
        }
        lines
    }
}

/// Writes an event's fields straight into its log's buffer.
struct LogVisitor<'a> {
    log: &'a mut ProbeLog,
    msg: &'a mut (u32, u32),
}

impl LogVisitor<'_> {
    fn value(&mut self, field: &Field, write: impl FnOnce(&mut String)) {
        let start = self.log.text.len();
        write(&mut self.log.text);
        let (a, b) = self.log.end_value(start);
        if field.name() == "message" {
            *self.msg = (a, b);
        } else {
            self.log.fields.push((field.name(), a, b));
        }
    }
}

impl Visit for LogVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.value(field, |t| {
            let _ = write!(t, "{value:?}");
        });
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.value(field, |t| t.push_str(value));
    }
}

fn cut_line(mut line: String) -> String {
    if line.len() > MAX_PROBE_LOG_LINE {
        let mut cut = MAX_PROBE_LOG_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// What one running probe's events are captured into.
#[derive(Debug)]
struct Capture {
    scope: Arc<[(&'static str, String)]>,
    log: Mutex<ProbeLog>,
}

tokio::task_local! {
    static CAPTURE: Arc<Capture>;
}

/// Runs `fut` with a fresh capture buffer; events it emits (in this task) land in the buffer,
/// and every line of them carries `scope` (the probe's `module`, `target` and `prober`) after
/// its message, as fields of an enclosing span would. Taking the fields here rather than from a
/// span spares the registry a span enter and exit on every poll of the probe.
pub async fn capture<F: std::future::Future>(
    scope: Arc<[(&'static str, String)]>,
    fut: F,
) -> (F::Output, ProbeLog) {
    let capture = Arc::new(Capture {
        log: Mutex::new(ProbeLog::with_scope(scope.clone())),
        scope,
    });
    let out = CAPTURE.scope(capture.clone(), fut).await;
    let log = std::mem::take(&mut *capture.log.lock().unwrap_or_else(|e| e.into_inner()));
    (out, log)
}

/// Installs the global subscriber: stderr at `level` in `format`, plus the probe capture layer.
/// With `prober` (`--log.prober`), a probe's own lines are filtered by it instead, on stderr
/// and in its captured log alike (blackbox 0.28); without it they follow `level` on stderr and
/// every line is captured (0.23).
pub fn init(level: LevelFilter, prober: Option<LevelFilter>, format: LogFormat) {
    let stderr = LineLayer {
        json: format == LogFormat::Json,
        level,
        prober,
    }
    .with_filter(
        Targets::new()
            .with_default(level.min(LevelFilter::WARN))
            .with_target("lookout", level.max(prober.unwrap_or(LevelFilter::OFF))),
    );
    let capture = CaptureLayer
        .with_filter(Targets::new().with_target("lookout", prober.unwrap_or(LevelFilter::DEBUG)));
    let _ = Registry::default().with(stderr).with(capture).try_init();
}

/// Makes sure probe logs are captured even when the embedding program installed no subscriber
/// (tests, or a library user): installs one with only the capture layer. Does nothing when a
/// global subscriber exists already (the binary's `init`).
pub fn ensure_capture() {
    let capture = CaptureLayer.with_filter(Targets::new().with_target("lookout", Level::DEBUG));
    let _ = Registry::default().with(capture).try_init();
}

#[derive(Default)]
struct Fields(Vec<(&'static str, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.to_owned()));
    }
}

impl Fields {
    /// Takes out the `message` field (empty when the event has none).
    fn take_message(&mut self) -> String {
        self.0
            .iter()
            .position(|(k, _)| *k == "message")
            .map(|i| self.0.remove(i).1)
            .unwrap_or_default()
    }
}

struct SpanFields(Vec<(&'static str, String)>);

/// `at` in RFC 3339, UTC, with milliseconds: log lines, the API's times and Alertmanager's.
pub(crate) fn timestamp(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// Fields of the spans enclosing `event`, root first.
fn span_fields<S>(event: &Event<'_>, ctx: &Context<'_, S>, into: &mut Pairs)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope.from_root() {
            if let Some(f) = span.extensions().get::<SpanFields>() {
                into.extend(f.0.iter().cloned());
            }
        }
    }
}

/// Writes one line: `ts`, `level`, `msg`, then `pairs` (logfmt, or JSON when `json`).
fn render<'a>(
    out: &mut String,
    ts: &'a str,
    level: Level,
    msg: &'a str,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    json: bool,
) {
    let head = [("ts", ts), ("level", level_name(level)), ("msg", msg)];
    let all = head.into_iter().chain(pairs);
    if json {
        out.push('{');
        for (i, (k, v)) in all.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{}\":\"{}\"", k, json_escape(v));
        }
        out.push('}');
    } else {
        for (i, (k, v)) in all.enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(k);
            out.push('=');
            if v.is_empty()
                || v.contains([' ', '"', '=', '\\'])
                || v.contains(|c: char| c.is_control())
            {
                let _ = write!(out, "{v:?}");
            } else {
                out.push_str(v);
            }
        }
    }
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn record_span_fields<S>(
    attrs: &tracing::span::Attributes<'_>,
    id: &tracing::span::Id,
    ctx: &Context<'_, S>,
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if let Some(span) = ctx.span(id)
        && span.extensions().get::<SpanFields>().is_none()
    {
        let mut f = Fields::default();
        attrs.record(&mut f);
        span.extensions_mut().insert(SpanFields(f.0));
    }
}

struct LineLayer {
    json: bool,
    /// lookout's own lines.
    level: LevelFilter,
    /// Lines inside a probe, when `--log.prober` sets them apart.
    prober: Option<LevelFilter>,
}

impl<S> Layer<S> for LineLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        record_span_fields(attrs, id, &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let in_probe = CAPTURE.try_with(|_| ()).is_ok();
        let limit = match self.prober {
            Some(prober) if in_probe => prober,
            _ => self.level,
        };
        if *event.metadata().level() > limit {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let msg = fields.take_message();
        let mut pairs: Pairs = CAPTURE.try_with(|c| c.scope.to_vec()).unwrap_or_default();
        span_fields(event, &ctx, &mut pairs);
        pairs.extend(fields.0);
        let mut l = String::with_capacity(160);
        render(
            &mut l,
            &timestamp(SystemTime::now()),
            *event.metadata().level(),
            &msg,
            pairs.iter().map(|(k, v)| (*k, v.as_str())),
            self.json,
        );
        l.push('\n');
        let _ = std::io::stderr().lock().write_all(l.as_bytes());
    }
}

struct CaptureLayer;

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        record_span_fields(attrs, id, &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let _ = CAPTURE.try_with(|capture| {
            let at = SystemTime::now();
            let mut log = capture.log.lock().unwrap_or_else(|e| e.into_inner());
            if log.is_full() {
                log.dropped += 1;
                return;
            }
            let first_field = log.fields.len();
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope.from_root() {
                    if let Some(f) = span.extensions().get::<SpanFields>() {
                        for (k, v) in &f.0 {
                            log.push_field(k, v);
                        }
                    }
                }
            }
            log.record(at, first_field, event);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log `events` leave when they run inside a probe of module `m`, target `a b`,
    /// through the real capture layer.
    fn captured(events: impl FnOnce()) -> ProbeLog {
        let subscriber = Registry::default().with(CaptureLayer);
        tracing::subscriber::with_default(subscriber, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let scope = Arc::from([("module", "m".to_owned()), ("target", "a b".to_owned())]);
            rt.block_on(capture(scope, async { events() })).1
        })
    }

    /// A line without its timestamp.
    fn untimed(line: &str) -> &str {
        assert!(
            line.starts_with("ts=") && line.as_bytes()[27] == b' ',
            "{line}"
        );
        &line[28..]
    }

    #[test]
    fn probe_log_is_bounded() {
        let log = captured(|| {
            for i in 0..(MAX_PROBE_LOG_LINES + 5) {
                tracing::debug!("line {i}");
            }
        });
        let lines = log.lines();
        assert_eq!(lines.len(), MAX_PROBE_LOG_LINES + 1);
        assert_eq!(
            untimed(&lines[0]),
            "level=debug msg=\"line 0\" module=m target=\"a b\""
        );
        assert!(lines.last().unwrap().contains("5 more log lines dropped"));
        let log = captured(|| tracing::debug!(body = "y".repeat(3000), "{}", "x".repeat(3000)));
        let lines = log.lines();
        assert_eq!(
            log.text.len(),
            2 * MAX_PROBE_LOG_LINE,
            "values are cut when captured"
        );
        assert_eq!(
            lines[0].len(),
            MAX_PROBE_LOG_LINE + '…'.len_utf8(),
            "{}",
            lines[0]
        );
        // A multi-byte character across the cut is left whole or not at all.
        let log = captured(|| tracing::debug!("{}é", "x".repeat(MAX_PROBE_LOG_LINE - 1)));
        assert_eq!(log.text.len(), MAX_PROBE_LOG_LINE - 1);
    }

    #[test]
    fn captured_lines_are_logfmt_with_the_probe_and_span_fields() {
        let log = captured(|| {
            let _span = tracing::debug_span!("hop", url = "http://a/").entered();
            tracing::debug!(status_code = 200, "Received HTTP response");
            tracing::info!(err = %"refused", "Probe failed");
        });
        let lines = log.lines();
        assert_eq!(
            lines.iter().map(|l| untimed(l)).collect::<Vec<_>>(),
            [
                "level=debug msg=\"Received HTTP response\" module=m target=\"a b\" \
                 url=http://a/ status_code=200",
                "level=info msg=\"Probe failed\" module=m target=\"a b\" url=http://a/ \
                 err=refused",
            ]
        );
        assert!(ProbeLog::default().is_empty() && !log.is_empty());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = timestamp(SystemTime::now());
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
