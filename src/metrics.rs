//! Exposition: the only module that turns `Report`s into text and knows the formats.
//!
//! blackbox_exporter answers in the Prometheus text format 0.0.4, families sorted by name, labels
//! sorted by name, numbers printed as Go's `strconv.FormatFloat(v, 'g', -1, 64)`. lookout does the
//! same whatever the `Accept` header asks (blackbox's promhttp handlers have OpenMetrics off, and
//! Prometheus asks for OpenMetrics first), and answers OpenMetrics (through prometheus-client's
//! encoder) only when `--web.enable-openmetrics` is set and the scrape's `Accept` header asks.

pub mod process;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::Registry;

use crate::probe::report::{Family, Histogram, Kind, Labels, Report};

/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (the default, as blackbox).
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// Picks the format for a request: text 0.0.4, as blackbox answers whatever `Accept` says,
    /// unless OpenMetrics is enabled (`--web.enable-openmetrics`) and the client lists it.
    pub fn negotiate(accept: Option<&str>, openmetrics_enabled: bool) -> Format {
        match accept {
            Some(a) if openmetrics_enabled && a.contains("application/openmetrics-text") => {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }

    /// The `Content-Type` header value for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// What one series carries: a plain value or a histogram.
#[derive(Clone, Copy)]
enum Value<'a> {
    Plain(f64),
    Histogram(&'a Histogram),
}

/// One series with the labels it is exposed under (the report's own plus any prefix labels).
struct Series<'a> {
    family: &'static Family,
    value: Value<'a>,
    labels: Vec<(&'a str, &'a str)>,
}

/// The series of several reports grouped by family name, each family's series sorted as Go's
/// registry sorts them (by label values, labels ordered by name).
fn group<'a>(
    parts: &'a [(&'a [(String, String)], &'a Report)],
) -> BTreeMap<&'static str, Vec<Series<'a>>> {
    let mut families: BTreeMap<&'static str, Vec<Series<'a>>> = BTreeMap::new();
    let prefixed = |prefix: &'a [(String, String)],
                    own: &mut dyn Iterator<Item = (&'a str, &'a str)>| {
        let mut labels: Vec<(&'a str, &'a str)> = Vec::with_capacity(prefix.len() + 2);
        labels.extend(prefix.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        labels.extend(own);
        labels.sort_by(|a, b| a.0.cmp(b.0));
        labels
    };
    for (prefix, report) in parts {
        for sample in report.samples() {
            let labels = prefixed(
                prefix,
                &mut sample.labels.iter().map(|(k, v)| (k.as_ref(), v.as_str())),
            );
            families
                .entry(sample.family.name)
                .or_default()
                .push(Series {
                    family: sample.family,
                    value: Value::Plain(sample.value),
                    labels,
                });
        }
        for h in report.histograms() {
            let labels = prefixed(prefix, &mut std::iter::empty());
            families.entry(h.family.name).or_default().push(Series {
                family: h.family,
                value: Value::Histogram(h),
                labels,
            });
        }
    }
    for series in families.values_mut() {
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
    }
    families
}

/// Encodes reports in `format`. Each report may carry prefix labels (the scheduler's `target`,
/// `module` and user labels); `/probe` passes none.
pub fn encode(format: Format, parts: &[(&[(String, String)], &Report)]) -> String {
    match format {
        Format::Text => encode_text(parts),
        Format::OpenMetrics => encode_openmetrics(parts),
    }
}

fn push_series(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    extra: Option<(&str, &str)>,
    v: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        for (i, (k, v)) in labels.iter().chain(extra.iter()).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    push_go_float(out, v);
    out.push('\n');
}

/// The `n`th label of `labels` in label-name order, without allocating (label sets are tiny).
fn nth_by_name(labels: &Labels, n: usize) -> Option<(&str, &str)> {
    let mut sorted: [usize; 8] = [0; 8];
    if labels.len() > sorted.len() {
        let mut v: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_str()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        return v.get(n).copied();
    }
    for (i, slot) in sorted.iter_mut().enumerate().take(labels.len()) {
        *slot = i;
    }
    let order = &mut sorted[..labels.len()];
    order.sort_by(|a, b| labels[*a].0.cmp(&labels[*b].0));
    order
        .get(n)
        .map(|i| (labels[*i].0.as_ref(), labels[*i].1.as_str()))
}

/// Go's order of two series of one family in one report: by label values, labels by name.
fn cmp_own(a: &Labels, b: &Labels) -> std::cmp::Ordering {
    for n in 0..a.len().max(b.len()) {
        match (nth_by_name(a, n), nth_by_name(b, n)) {
            (Some(x), Some(y)) => match x.cmp(&y) {
                std::cmp::Ordering::Equal => continue,
                o => return o,
            },
            (a, b) => return a.is_some().cmp(&b.is_some()),
        }
    }
    std::cmp::Ordering::Equal
}

/// Text format 0.0.4: families sorted by name; within a family the series of each report in
/// turn, each report's own series in Go's order. Writes into one `String` without a
/// per-series allocation, so `/metrics` over many targets costs one pass per family.
pub fn encode_text(parts: &[(&[(String, String)], &Report)]) -> String {
    let (families, total) = families_of(parts);
    let mut out = String::with_capacity(total * 96 + families.len() * 160);
    write_text(&families, parts, &mut out, |_| true);
    out
}

/// The same text as `encode_text`, handed to `sink` in pieces of about `chunk` bytes (cut
/// between reports, never inside a line), so a `/metrics` answer over many targets is never
/// held whole. Stops early when `sink` returns false (the client went away).
pub fn encode_text_chunked(
    parts: &[(&[(String, String)], &Report)],
    chunk: usize,
    mut sink: impl FnMut(String) -> bool,
) {
    let (families, _) = families_of(parts);
    let mut out = String::with_capacity(chunk + 4096);
    let complete = write_text(&families, parts, &mut out, |out| {
        out.len() < chunk || sink(std::mem::replace(out, String::with_capacity(chunk + 4096)))
    });
    if complete && !out.is_empty() {
        sink(out);
    }
}

type Families = BTreeMap<&'static str, &'static Family>;

/// The families the reports hold, by name, and roughly how many series they make.
fn families_of(parts: &[(&[(String, String)], &Report)]) -> (Families, usize) {
    let mut families = Families::new();
    let mut total = 0usize;
    for (_, r) in parts {
        for s in r.samples() {
            families.entry(s.family.name).or_insert(s.family);
        }
        for h in r.histograms() {
            families.entry(h.family.name).or_insert(h.family);
        }
        total += r.samples().len() + r.histograms().len() * 16;
    }
    (families, total)
}

/// Writes the exposition into `out`, calling `flush` after each report's series of a family;
/// returns false as soon as `flush` does.
fn write_text(
    families: &Families,
    parts: &[(&[(String, String)], &Report)],
    out: &mut String,
    mut flush: impl FnMut(&mut String) -> bool,
) -> bool {
    let mut picked: Vec<usize> = Vec::new();
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(16);
    for (&name, &family) in families {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        escape_help(out, family.help);
        out.push_str("\n# TYPE ");
        out.push_str(name);
        out.push_str(match family.kind {
            Kind::Gauge => " gauge\n",
            Kind::Counter => " counter\n",
            Kind::Histogram => " histogram\n",
        });
        for (prefix, report) in parts {
            let samples = report.samples();
            picked.clear();
            picked.extend((0..samples.len()).filter(|i| std::ptr::eq(samples[*i].family, family)));
            if picked.len() > 1 {
                picked.sort_by(|a, b| cmp_own(&samples[*a].labels, &samples[*b].labels));
            }
            for &i in &picked {
                let sample = &samples[i];
                labels.clear();
                labels.extend(prefix.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                labels.extend(sample.labels.iter().map(|(k, v)| (k.as_ref(), v.as_str())));
                labels.sort_by(|a, b| a.0.cmp(b.0));
                push_series(out, name, "", &labels, None, sample.value);
            }
            for h in report
                .histograms()
                .iter()
                .filter(|h| std::ptr::eq(h.family, family))
            {
                labels.clear();
                labels.extend(prefix.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                labels.sort_by(|a, b| a.0.cmp(b.0));
                let mut cumulative = 0u64;
                for (le, n) in &h.buckets {
                    cumulative += n;
                    let le = if le.is_infinite() {
                        "+Inf".to_owned()
                    } else {
                        go_float(*le)
                    };
                    push_series(
                        out,
                        name,
                        "_bucket",
                        &labels,
                        Some(("le", &le)),
                        cumulative as f64,
                    );
                }
                push_series(out, name, "_sum", &labels, None, h.sum);
                push_series(out, name, "_count", &labels, None, h.count as f64);
            }
            if !flush(out) {
                return false;
            }
        }
    }
    true
}

fn escape_help(out: &mut String, s: &str) {
    if !s.contains(['\\', '\n']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_label_value(out: &mut String, s: &str) {
    if !s.contains(['\\', '\n', '"']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Appends `v` as Go's `strconv.FormatFloat(v, 'g', -1, 64)` prints it (see `go_float`), without
/// allocating: encoding runs once per sample, so `/probe` and `/metrics` spend most of their
/// encoding time here.
pub fn push_go_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if v == 0.0 {
        out.push_str(if v.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    // Whole numbers below 10^6 print as plain integers in both Go and Rust.
    if v.fract() == 0.0 && v.abs() < 1e6 {
        let _ = write!(out, "{}", v as i64);
        return;
    }
    // Rust's `{:e}` prints the shortest round-trip digits ("1.7006592e9", "-5e-7"); it is
    // written into `out`, read back into a stack buffer and rewritten in Go's layout.
    let start = out.len();
    let _ = write!(out, "{v:e}");
    let mut digits = [0u8; 32];
    let mut n = 0;
    let mut exp: i32 = 0;
    let mut exp_sign = 1;
    let mut in_exp = false;
    for b in out.as_bytes()[start..].iter() {
        match b {
            b'e' => in_exp = true,
            b'-' if in_exp => exp_sign = -1,
            b'0'..=b'9' if in_exp => exp = exp * 10 + i32::from(b - b'0'),
            b'0'..=b'9' if n < digits.len() => {
                digits[n] = *b;
                n += 1;
            }
            _ => {}
        }
    }
    let exp = exp * exp_sign;
    out.truncate(start);
    // Only ASCII digits were copied, so this cannot fail.
    let digits = std::str::from_utf8(&digits[..n]).unwrap_or("0");
    if v < 0.0 {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        // %e form: d[.ddd]e±XX with at least two exponent digits.
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
}

/// Formats `v` exactly as Go's `strconv.FormatFloat(v, 'g', -1, 64)`, which Prometheus' text
/// encoder uses: the shortest digits that round-trip, in exponent form (`1.7006592e+09`) when the
/// decimal exponent of the first digit is below -4 or at least 6, else in plain decimal form.
pub fn go_float(v: f64) -> String {
    let mut out = String::with_capacity(24);
    push_go_float(&mut out, v);
    out
}

/// OpenMetrics text through prometheus-client: the reports become one `Collector`.
pub fn encode_openmetrics(parts: &[(&[(String, String)], &Report)]) -> String {
    #[derive(Debug)]
    struct Reports(Vec<(Vec<(String, String)>, Report)>);
    impl Collector for Reports {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let parts: Vec<(&[(String, String)], &Report)> =
                self.0.iter().map(|(p, r)| (p.as_slice(), r)).collect();
            for (name, series) in group(&parts) {
                let family = series[0].family;
                let (name, metric_type) = match family.kind {
                    Kind::Gauge => (name, MetricType::Gauge),
                    Kind::Counter => (
                        name.strip_suffix("_total").unwrap_or(name),
                        MetricType::Counter,
                    ),
                    Kind::Histogram => (name, MetricType::Histogram),
                };
                let mut metric = encoder.encode_descriptor(name, family.help, None, metric_type)?;
                for s in &series {
                    let labels: Vec<(&str, &str)> = s.labels.clone();
                    let mut m = metric.encode_family(&labels)?;
                    match s.value {
                        Value::Plain(v) if family.kind == Kind::Counter => m
                            .encode_counter::<NoLabelSet, f64, f64>(
                                &v,
                                None::<&Exemplar<NoLabelSet, f64>>,
                            )?,
                        Value::Plain(v) => m.encode_gauge(&v)?,
                        Value::Histogram(h) => {
                            m.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?
                        }
                    }
                }
            }
            Ok(())
        }
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Reports(
        parts
            .iter()
            .map(|(p, r)| (p.to_vec(), (*r).clone()))
            .collect(),
    )));
    let mut out = String::with_capacity(2048);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_does() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (1.0, "1"),
            (200.0, "200"),
            (-1.0, "-1"),
            (0.5, "0.5"),
            (0.001234, "0.001234"),
            (0.00001234, "1.234e-05"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1700659200.0, "1.7006592e+09"),
            (-62135596800.0, "-6.21355968e+10"),
            (4294967295.0, "4.294967295e+09"),
            (1.1, "1.1"),
            (6.0, "6"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (-0.0, "-0"),
            (0.1, "0.1"),
            (-0.00012, "-0.00012"),
            (123456.5, "123456.5"),
            (999999.0, "999999"),
            (-999999.0, "-999999"),
            (1e6, "1e+06"),
            (1e21, "1e+21"),
            (-2.5e-7, "-2.5e-07"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
        ];
        for (v, want) in cases {
            assert_eq!(go_float(*v), *want, "formatting {v}");
        }
    }

    static A: Family = Family::gauge("probe_b", "Help with \\ and\nnewline");
    static B: Family = Family::gauge("probe_a", "Phase");

    #[test]
    fn text_is_sorted_and_escaped() {
        let mut r = Report::new();
        r.set(&A, 1.0);
        r.set_labeled(&B, &[("phase", "tls")], 0.25);
        r.set_labeled(&B, &[("phase", "connect")], 0.5);
        let text = encode_text(&[(&[], &r)]);
        assert_eq!(
            text,
            "# HELP probe_a Phase\n# TYPE probe_a gauge\nprobe_a{phase=\"connect\"} 0.5\nprobe_a{phase=\"tls\"} 0.25\n\
             # HELP probe_b Help with \\\\ and\\nnewline\n# TYPE probe_b gauge\nprobe_b 1\n"
        );
    }

    #[test]
    fn chunked_text_is_the_same_text_in_pieces_and_stops_when_told() {
        let reports: Vec<(Vec<(String, String)>, Report)> = (0..50)
            .map(|i| {
                let mut r = Report::new();
                r.set(&A, i as f64);
                r.set_labeled(&B, &[("phase", "connect")], 0.5);
                (vec![("target".to_owned(), format!("t{i}"))], r)
            })
            .collect();
        let parts: Vec<(&[(String, String)], &Report)> =
            reports.iter().map(|(l, r)| (l.as_slice(), r)).collect();
        let whole = encode_text(&parts);
        let mut pieces = Vec::new();
        encode_text_chunked(&parts, 200, |p| {
            pieces.push(p);
            true
        });
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
        assert!(
            pieces.iter().all(|p| p.ends_with('\n')),
            "cut inside a line"
        );
        assert_eq!(pieces.concat(), whole);

        let mut taken = 0;
        encode_text_chunked(&parts, 200, |_| {
            taken += 1;
            taken < 3
        });
        assert_eq!(taken, 3, "encoding goes on after the sink refused");
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let mut r = Report::new();
        r.set(&A, 1.0);
        let text = encode_openmetrics(&[(&[], &r)]);
        assert!(text.contains("# TYPE probe_b gauge\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
