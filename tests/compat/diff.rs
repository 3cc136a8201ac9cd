//! Comparing two `/probe` expositions read through the one parser in `support::samples`.
//!
//! What must be equal: the set of families, each family's TYPE and HELP, each family's set of
//! label-name sets, and every series with its value — bit for bit, and printed the same way.
//! Volatile families (timings) only need the same series. The few intended differences are
//! listed in [`ALLOWED_EXTRA_FAMILIES`] and [`ALLOWED_EXTRA_LABELS`]; nothing else is tolerated.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::samples::Samples;

/// Families whose values are measurements of time: they must be present with the same
/// series (label sets and label values), but their values are not compared.
pub const VOLATILE: &[&str] = &[
    "probe_duration_seconds",
    "probe_dns_duration_seconds",
    "probe_dns_lookup_time_seconds",
    "probe_http_duration_seconds",
    "probe_icmp_duration_seconds",
];

/// The allowlist, part one: families lookout exposes and blackbox_exporter 0.23 does not,
/// because lookout follows newer upstream releases (blackbox-reference.md, "Added by releases
/// after 0.23"). Each entry is `(family, companion)`: the extra family is tolerated only when
/// blackbox exposes `companion` in the same answer.
pub const ALLOWED_EXTRA_FAMILIES: &[(&str, &str)] = &[
    // 0.26 added `probe_tls_cipher_info{cipher}` wherever `probe_tls_version_info` is set.
    ("probe_tls_cipher_info", "probe_tls_version_info"),
];

/// The allowlist, part two: labels lookout adds to a family that 0.23 also has.
/// They are removed from lookout's series before comparing.
pub const ALLOWED_EXTRA_LABELS: &[(&str, &str)] = &[
    // 0.26 added `serialnumber` (the leaf's serial in hex) to the chain info.
    ("probe_ssl_last_chain_info", "serialnumber"),
];

/// One family as compared: its TYPE, HELP and series (rendered labels → values).
#[derive(Debug, Default)]
struct Family {
    kind: Option<String>,
    help: Option<String>,
    /// Rendered label set (`{a="1",b="2"}`) → the values seen with it, in text order.
    series: BTreeMap<String, Vec<f64>>,
    /// Rendered label set → the value tokens exactly as printed.
    printed: BTreeMap<String, Vec<String>>,
    /// The label-name sets used by the series.
    label_names: BTreeSet<Vec<String>>,
}

/// Reads an exposition into families, applying `strip_labels` (family, label) removals.
fn families(parsed: &Samples, strip_labels: &[(&str, &str)]) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for (name, kind) in &parsed.types {
        out.entry(name.clone()).or_default().kind = Some(kind.clone());
    }
    for (name, help) in &parsed.helps {
        out.entry(name.clone()).or_default().help = Some(help.clone());
    }
    for sample in &parsed.samples {
        let mut labels = sample.labels.clone();
        for (family, label) in strip_labels {
            if sample.name == *family {
                labels.remove(*label);
            }
        }
        let family = out.entry(sample.name.clone()).or_default();
        let key = render_labels(&labels);
        family
            .series
            .entry(key.clone())
            .or_default()
            .push(sample.value);
        family.label_names.insert(labels.keys().cloned().collect());
        family
            .printed
            .entry(key)
            .or_default()
            .push(printed_value(&parsed.text, sample));
    }
    out
}

/// `{a="1",b="2"}`, or `{}` for no labels; label names sorted.
fn render_labels(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// The value token of `sample` exactly as it was printed in `text` (e.g. `1.6e+09`).
///
/// Finds the sample's line by re-parsing each candidate line on its own, so label order and
/// escaping in the text do not matter.
fn printed_value(text: &str, sample: &crate::support::samples::Sample) -> String {
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with(sample.name.as_str()) {
            continue;
        }
        let rest = &line[sample.name.len()..];
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let one = Samples::parse(&format!("# TYPE {} gauge\n{line}\n", sample.name));
        if one.samples.first().map(|s| &s.labels) == Some(&sample.labels) {
            return line.rsplit(' ').next().unwrap_or_default().to_owned();
        }
    }
    String::from("?")
}

fn same_value(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Every difference between lookout's and blackbox's answer, as readable lines.
/// Empty when they agree (up to volatility and the allowlist).
pub fn diff(lookout: &Samples, blackbox: &Samples) -> Vec<String> {
    let mut out = Vec::new();
    let mut ours = families(lookout, ALLOWED_EXTRA_LABELS);
    let theirs = families(blackbox, &[]);

    for (extra, companion) in ALLOWED_EXTRA_FAMILIES {
        if theirs.contains_key(*companion) && !theirs.contains_key(*extra) {
            ours.remove(*extra);
        }
    }

    let our_names: BTreeSet<&String> = ours.keys().collect();
    let their_names: BTreeSet<&String> = theirs.keys().collect();
    for missing in their_names.difference(&our_names) {
        out.push(format!(
            "family {missing}: present in blackbox, missing in lookout"
        ));
    }
    for extra in our_names.difference(&their_names) {
        out.push(format!(
            "family {extra}: present in lookout, absent in blackbox"
        ));
    }

    for (name, theirs) in &theirs {
        let Some(ours) = ours.get(name) else { continue };
        if ours.kind != theirs.kind {
            out.push(format!(
                "family {name}: TYPE lookout {:?} vs blackbox {:?}",
                ours.kind, theirs.kind
            ));
        }
        if ours.help != theirs.help {
            out.push(format!(
                "family {name}: HELP lookout {:?} vs blackbox {:?}",
                ours.help, theirs.help
            ));
        }
        if ours.label_names != theirs.label_names {
            out.push(format!(
                "family {name}: label names lookout {:?} vs blackbox {:?}",
                ours.label_names, theirs.label_names
            ));
        }
        let volatile = VOLATILE.contains(&name.as_str());
        let keys: BTreeSet<&String> = ours.series.keys().chain(theirs.series.keys()).collect();
        for key in keys {
            match (ours.series.get(key), theirs.series.get(key)) {
                (None, Some(v)) => out.push(format!(
                    "series {name}{key}: missing in lookout (blackbox {v:?})"
                )),
                (Some(v), None) => out.push(format!(
                    "series {name}{key}: extra in lookout (lookout {v:?})"
                )),
                (Some(a), Some(b)) if a.len() != b.len() => out.push(format!(
                    "series {name}{key}: lookout has it {} times, blackbox {} times",
                    a.len(),
                    b.len()
                )),
                (Some(_), Some(_)) if volatile => {}
                (Some(a), Some(b)) => {
                    if !a.iter().zip(b).all(|(x, y)| same_value(*x, *y)) {
                        out.push(format!(
                            "series {name}{key}: lookout {a:?} vs blackbox {b:?}"
                        ));
                    } else if ours.printed.get(key) != theirs.printed.get(key) {
                        out.push(format!(
                            "series {name}{key}: same value printed differently: lookout {:?} vs blackbox {:?}",
                            ours.printed.get(key),
                            theirs.printed.get(key)
                        ));
                    }
                }
                (None, None) => unreachable!("key came from one of the maps"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Samples {
        Samples::parse(text)
    }

    #[test]
    fn identical_answers_agree_and_timings_are_ignored() {
        let a = parse(
            "# HELP probe_duration_seconds Returns how long the probe took to complete in seconds\n\
             # TYPE probe_duration_seconds gauge\nprobe_duration_seconds 0.01\n\
             # HELP probe_success Displays whether or not the probe was a success\n\
             # TYPE probe_success gauge\nprobe_success 1\n",
        );
        let b = parse(&a.text.replace("0.01", "0.0234"));
        assert_eq!(diff(&a, &b), Vec::<String>::new());
    }

    #[test]
    fn value_help_and_family_differences_are_reported() {
        let blackbox = parse(
            "# HELP probe_success Displays whether or not the probe was a success\n\
             # TYPE probe_success gauge\nprobe_success 1\n\
             # HELP probe_http_version Returns the version of HTTP of the probe response\n\
             # TYPE probe_http_version gauge\nprobe_http_version 1.1\n",
        );
        let lookout = parse(
            "# HELP probe_success Displays whether or not the probe was a success.\n\
             # TYPE probe_success gauge\nprobe_success 0\n\
             # HELP probe_extra x\n# TYPE probe_extra gauge\nprobe_extra 1\n",
        );
        let d = diff(&lookout, &blackbox).join("\n");
        assert!(d.contains("probe_http_version: present in blackbox"), "{d}");
        assert!(d.contains("probe_extra: present in lookout"), "{d}");
        assert!(d.contains("probe_success: HELP"), "{d}");
        assert!(
            d.contains("probe_success{}: lookout [0.0] vs blackbox [1.0]"),
            "{d}"
        );
    }

    #[test]
    fn allowlisted_cipher_family_and_serial_label_are_tolerated_only_with_tls() {
        let blackbox = parse(
            "# HELP probe_ssl_last_chain_info Contains SSL leaf certificate information\n\
             # TYPE probe_ssl_last_chain_info gauge\n\
             probe_ssl_last_chain_info{fingerprint_sha256=\"ab\",issuer=\"CN=a\",subject=\"CN=b\",subjectalternative=\"\"} 1\n\
             # HELP probe_tls_version_info Returns the TLS version used or NaN when unknown\n\
             # TYPE probe_tls_version_info gauge\nprobe_tls_version_info{version=\"TLS 1.3\"} 1\n",
        );
        let lookout = parse(
            "# HELP probe_ssl_last_chain_info Contains SSL leaf certificate information\n\
             # TYPE probe_ssl_last_chain_info gauge\n\
             probe_ssl_last_chain_info{fingerprint_sha256=\"ab\",issuer=\"CN=a\",serialnumber=\"01\",subject=\"CN=b\",subjectalternative=\"\"} 1\n\
             # HELP probe_tls_cipher_info Returns the TLS cipher negotiated during handshake\n\
             # TYPE probe_tls_cipher_info gauge\nprobe_tls_cipher_info{cipher=\"TLS_AES_128_GCM_SHA256\"} 1\n\
             # HELP probe_tls_version_info Returns the TLS version used or NaN when unknown\n\
             # TYPE probe_tls_version_info gauge\nprobe_tls_version_info{version=\"TLS 1.3\"} 1\n",
        );
        assert_eq!(diff(&lookout, &blackbox), Vec::<String>::new());

        let plain = parse(
            "# HELP probe_success Displays whether or not the probe was a success\n\
             # TYPE probe_success gauge\nprobe_success 1\n",
        );
        let with_cipher = parse(&format!(
            "{}# HELP probe_tls_cipher_info c\n# TYPE probe_tls_cipher_info gauge\n\
             probe_tls_cipher_info{{cipher=\"x\"}} 1\n",
            plain.text
        ));
        let d = diff(&with_cipher, &plain).join("\n");
        assert!(
            d.contains("probe_tls_cipher_info: present in lookout"),
            "{d}"
        );
    }

    #[test]
    fn number_formatting_is_compared() {
        let blackbox = parse("# TYPE x gauge\nx 1.6e+09\n");
        let lookout = parse("# TYPE x gauge\nx 1600000000\n");
        let d = diff(&lookout, &blackbox).join("\n");
        assert!(d.contains("printed differently"), "{d}");
    }
}
