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

/// A probe's captured log.
#[derive(Debug, Default)]
pub struct ProbeLog {
    lines: Vec<String>,
    dropped: usize,
}

impl ProbeLog {
    fn push(&mut self, mut line: String) {
        if self.lines.len() >= MAX_PROBE_LOG_LINES {
            self.dropped += 1;
            return;
        }
        if line.len() > MAX_PROBE_LOG_LINE {
            let mut cut = MAX_PROBE_LOG_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        self.lines.push(line);
    }

    /// The captured lines, with a note when some were dropped.
    pub fn into_lines(self) -> Vec<String> {
        let mut lines = self.lines;
        if self.dropped > 0 {
            lines.push(format!(
                "level=warn msg=\"{} more log lines dropped\"",
                self.dropped
            ));
        }
        lines
    }
}

tokio::task_local! {
    static CAPTURE: Arc<Mutex<ProbeLog>>;
}

/// Runs `fut` with a fresh capture buffer; events it emits (in this task) land in the buffer.
pub async fn capture<F: std::future::Future>(fut: F) -> (F::Output, Vec<String>) {
    let log = Arc::new(Mutex::new(ProbeLog::default()));
    let out = CAPTURE.scope(log.clone(), fut).await;
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
    (out, log.into_lines())
}

/// Installs the global subscriber: stderr at `level` in `format`, plus the probe capture layer.
pub fn init(level: LevelFilter, format: LogFormat) {
    let stderr = LineLayer {
        json: format == LogFormat::Json,
    }
    .with_filter(
        Targets::new()
            .with_default(level.min(LevelFilter::WARN))
            .with_target("lookout", level),
    );
    let capture = CaptureLayer.with_filter(Targets::new().with_target("lookout", Level::DEBUG));
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

struct SpanFields(Vec<(&'static str, String)>);

fn timestamp() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
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

fn line<S>(event: &Event<'_>, ctx: &Context<'_, S>, json: bool) -> String
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut pairs: Vec<(&'static str, String)> = Vec::with_capacity(8);
    pairs.push(("ts", timestamp()));
    pairs.push((
        "level",
        event.metadata().level().as_str().to_ascii_lowercase(),
    ));
    let mut fields = Fields::default();
    event.record(&mut fields);
    let msg = fields
        .0
        .iter()
        .position(|(k, _)| *k == "message")
        .map(|i| fields.0.remove(i).1);
    pairs.push(("msg", msg.unwrap_or_default()));
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope.from_root() {
            if let Some(f) = span.extensions().get::<SpanFields>() {
                pairs.extend(f.0.iter().cloned());
            }
        }
    }
    pairs.extend(fields.0);
    let mut out = String::with_capacity(128);
    if json {
        out.push('{');
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{}\":\"{}\"", k, json_escape(v));
        }
        out.push('}');
    } else {
        for (i, (k, v)) in pairs.iter().enumerate() {
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
    out
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
        let mut l = line(event, &ctx, self.json);
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
        let _ = CAPTURE.try_with(|log| {
            let l = line(event, &ctx, false);
            log.lock().unwrap_or_else(|e| e.into_inner()).push(l);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_log_is_bounded() {
        let mut log = ProbeLog::default();
        for i in 0..(MAX_PROBE_LOG_LINES + 5) {
            log.push(format!("line {i}"));
        }
        log.push("x".repeat(MAX_PROBE_LOG_LINE * 2));
        let lines = log.into_lines();
        assert_eq!(lines.len(), MAX_PROBE_LOG_LINES + 1);
        assert!(lines.last().unwrap().contains("6 more log lines dropped"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = timestamp();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
