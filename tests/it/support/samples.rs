//! A strict parser for the Prometheus text format 0.0.4, used on both lookout's and
//! blackbox_exporter's answers so they are compared through one reading.

use std::collections::BTreeMap;

/// One parsed sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: families with their TYPE and HELP, and the samples.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Samples {
    /// Parses `text`, panicking with the whole text on any malformed line.
    pub fn parse(text: &str) -> Samples {
        let mut out = Samples {
            text: text.to_owned(),
            ..Default::default()
        };
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                assert!(
                    out.helps.insert(name.into(), help.into()).is_none(),
                    "HELP twice for {name}:\n{text}"
                );
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("bad TYPE line {line:?}:\n{text}"));
                assert!(
                    ["gauge", "counter", "untyped", "summary", "histogram"].contains(&kind),
                    "bad type {kind}:\n{text}"
                );
                assert!(
                    out.types.insert(name.into(), kind.into()).is_none(),
                    "TYPE twice for {name}:\n{text}"
                );
                continue;
            }
            assert!(
                !line.starts_with('#'),
                "unexpected comment {line:?}:\n{text}"
            );
            let (name, labels, rest) = match line.find('{') {
                Some(i) => {
                    let end = line
                        .rfind('}')
                        .unwrap_or_else(|| panic!("unclosed labels {line:?}:\n{text}"));
                    (
                        &line[..i],
                        parse_labels(&line[i + 1..end], text),
                        line[end + 1..].trim(),
                    )
                }
                None => {
                    let (n, r) = line
                        .split_once(' ')
                        .unwrap_or_else(|| panic!("no value {line:?}:\n{text}"));
                    (n, BTreeMap::new(), r.trim())
                }
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name {name:?}:\n{text}"
            );
            let value = match rest {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}:\n{text}")),
            };
            let family = family_of(name, &out.types);
            assert!(
                out.types.contains_key(&family),
                "sample {name} without TYPE:\n{text}"
            );
            out.samples.push(Sample {
                name: name.into(),
                labels,
                value,
            });
        }
        out
    }

    /// The single value of an unlabelled series.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels.is_empty())
            .map(|s| s.value)
    }

    /// The value of a series with exactly these labels.
    pub fn get_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// The value of `name`, panicking with the exposition when absent.
    pub fn value(&self, name: &str) -> f64 {
        self.get(name)
            .unwrap_or_else(|| panic!("no {name} in:\n{}", self.text))
    }

    /// All series of one family.
    pub fn series(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// The family names present.
    pub fn families(&self) -> Vec<String> {
        self.types.keys().cloned().collect()
    }
}

fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    if types.contains_key(name) {
        return name.to_owned();
    }
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.contains_key(base)
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

fn parse_labels(s: &str, text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('='), "bad labels {s:?}:\n{text}");
        assert_eq!(chars.next(), Some('"'), "bad labels {s:?}:\n{text}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("bad escape in {s:?}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value in {s:?}:\n{text}"),
            }
        }
        assert!(
            out.insert(key.trim().to_owned(), value).is_none(),
            "duplicate label in {s:?}"
        );
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => panic!("unexpected {c:?} in labels {s:?}:\n{text}"),
        }
    }
    out
}
