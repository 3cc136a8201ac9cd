//! Config value types shared by every section: durations, sizes and regular expressions, each
//! parsed and checked while the YAML is read, so a bad value is reported with its line; the
//! `FieldError` every section's validation returns; and `value_or_file`, the one reader of files
//! named in the config.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::secret::Secret;

/// A config value that cannot be used: where it is, as a field path relative to the section
/// being validated (`basic_auth.password_file`, `tls_config.ca_file`, `valid_status_codes[2]`),
/// and a message naming the bad value. Each enclosing level adds its own segment
/// ([`FieldError::within`]); the file loader finally adds the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, dotted, with `[i]` for list entries; empty for the section itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error seen from the enclosing section `prefix`: `ca_file` inside `tls_config`
    /// becomes `tls_config.ca_file`, and an error of the section itself becomes `tls_config`.
    pub fn within(self, prefix: &str) -> FieldError {
        let path = match (prefix.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{}", self.path),
        };
        FieldError { path, ..self }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "field {}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// What a `_file` field's file holds, and how it is read.
pub trait FileContent: Sized {
    /// Reads the file at `path` (already joined to the config file's directory).
    fn read(path: &Path) -> std::io::Result<Self>;
}

/// Every file a config load read, with its bytes: what makes a config "unchanged" for a reload
/// (the config file and the secret, certificate and body files it names).
pub type Inputs = Vec<(std::path::PathBuf, Vec<u8>)>;

thread_local! {
    static READ: std::cell::RefCell<Option<Inputs>> = const { std::cell::RefCell::new(None) };
}

/// Runs `load`, returning with its result every file read through [`read_input`] meanwhile.
pub fn recording_inputs<T>(load: impl FnOnce() -> T) -> (T, Inputs) {
    let outer = READ.with(|r| r.replace(Some(Vec::new())));
    let out = load();
    let inputs = READ.with(|r| r.replace(outer)).unwrap_or_default();
    (out, inputs)
}

/// Reads a file the config depends on, noting it for [`recording_inputs`].
pub fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    READ.with(|r| {
        if let Some(list) = r.borrow_mut().as_mut() {
            list.push((path.to_owned(), bytes.clone()));
        }
    });
    Ok(bytes)
}

/// Whether every file in `inputs` still holds the same bytes.
pub fn inputs_unchanged(inputs: &Inputs) -> bool {
    !inputs.is_empty()
        && inputs
            .iter()
            .all(|(path, bytes)| std::fs::read(path).is_ok_and(|now| &now == bytes))
}

/// Text such as a user name, trimmed of surrounding white space (a trailing newline is not part
/// of a password), as blackbox reads its secret files.
impl FileContent for String {
    fn read(path: &Path) -> std::io::Result<String> {
        let bytes = read_input(path)?;
        String::from_utf8(bytes)
            .map(|s| s.trim().to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// A secret, trimmed as [`String`] is.
impl FileContent for Secret {
    fn read(path: &Path) -> std::io::Result<Secret> {
        String::read(path).map(Secret::new)
    }
}

/// Bytes taken as they are: PEM files and request bodies.
impl FileContent for Vec<u8> {
    fn read(path: &Path) -> std::io::Result<Vec<u8>> {
        read_input(path)
    }
}

/// How one "value or `_file`" pair of fields is named, for its errors.
#[derive(Debug, Clone, Copy)]
pub struct Choice<'a> {
    /// The `_file` field's path (relative, like [`FieldError::path`]), where a file that cannot
    /// be read is reported.
    pub file_field: &'a str,
    /// The error when both the value and the file are set; `None` lets the file win (the
    /// `basic_auth` username, as lookout has always read it).
    pub conflict: Option<Conflict<'a>>,
}

/// The mutual-exclusion error of a [`Choice`]; its wording differs between sections, as in
/// Prometheus' common config, so each caller gives its own.
#[derive(Debug, Clone, Copy)]
pub struct Conflict<'a> {
    /// Where it is reported.
    pub field: &'a str,
    /// What it says.
    pub message: &'a str,
}

/// The one reader of files named in the config: resolves a "value or `_file`" choice (a
/// password or its `password_file`, a CA or its `ca_file`, …). Both set is the choice's
/// conflict error; a relative file name is read relative to `base`, the config file's
/// directory, as blackbox resolves them; the read error names the file and is reported at the
/// `_file` field.
pub fn value_or_file<T: FileContent>(
    base: &Path,
    value: Option<T>,
    file: Option<&Path>,
    choice: Choice<'_>,
) -> Result<Option<T>, FieldError> {
    let Some(file) = file else {
        return Ok(value);
    };
    if let (Some(_), Some(c)) = (&value, choice.conflict) {
        return Err(FieldError::new(c.field, c.message));
    }
    let full = if file.is_absolute() {
        file.to_path_buf()
    } else {
        base.join(file)
    };
    T::read(&full).map(Some).map_err(|e| {
        FieldError::new(
            choice.file_field,
            format!("cannot read {}: {e}", full.display()),
        )
    })
}

/// A duration in Prometheus or Go form: `5s`, `1m30s`, `1.5s`, `500ms`, `1d`, `2w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigDuration(pub Duration);

/// Parses a duration: a sequence of `<number><unit>` with units y, w, d, h, m, s, ms, us (µs), ns;
/// `0` alone is zero. Fractions (`1.5s`) are accepted as Go's `time.ParseDuration` does.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("invalid duration {s:?}: expected a number"));
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "y" => 365.0 * 86400.0,
            "w" => 7.0 * 86400.0,
            "d" => 86400.0,
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            "" => return Err(format!("invalid duration {s:?}: missing unit (e.g. 5s)")),
            other => return Err(format!("invalid duration {s:?}: unknown unit {other:?}")),
        };
        total += n * secs;
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("invalid duration {s:?}"))
}

/// Formats a duration the way Prometheus prints one (`1m30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 5s or 1m30s")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ConfigDuration, E> {
                parse_duration(s).map(ConfigDuration).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ConfigDuration, E> {
                if n == 0 {
                    Ok(ConfigDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "invalid duration {n}: missing unit (e.g. {n}s)"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ConfigDuration, E> {
                self.visit_u64(u64::try_from(n).map_err(|_| E::custom("negative duration"))?)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

/// A byte size, base 2 as blackbox's `body_size_limit`: `10MB` is 10 MiB; a bare number is bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size(pub u64);

/// Parses a size: `<n>` bytes, or `<n><unit>` with B, KB/KiB, MB/MiB, GB/GiB, TB/TiB (base 2).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    // blackbox treats a negative limit ("-1KB") as no limit.
    if let Some(rest) = t.strip_prefix('-') {
        return parse_size(rest).map(|_| 0);
    }
    let num_len = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if num_len == 0 {
        return Err(format!(
            "invalid size {s:?}: expected a number such as 10MB"
        ));
    }
    let n: u64 = t[..num_len]
        .parse()
        .map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match t[num_len..].trim() {
        "" | "B" => 1,
        "KB" | "KiB" | "K" => 1 << 10,
        "MB" | "MiB" | "M" => 1 << 20,
        "GB" | "GiB" | "G" => 1 << 30,
        "TB" | "TiB" | "T" => 1 << 40,
        other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 10MB")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                parse_size(s).map(Size).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                // blackbox treats a negative limit as "no limit".
                Ok(Size(if n < 0 { 0 } else { n as u64 }))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A regular expression compiled at load; prints as written.
#[derive(Clone)]
pub struct Regex {
    /// The compiled expression (on bytes, so bodies need not be UTF-8).
    pub bytes: regex::bytes::Regex,
}

impl Regex {
    /// Compiles `s`.
    pub fn new(s: &str) -> Result<Regex, String> {
        regex::bytes::Regex::new(s)
            .map(|bytes| Regex { bytes })
            .map_err(|e| {
                format!(
                    "could not compile regular expression {s:?}: {}",
                    first_line(&e.to_string())
                )
            })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        self.bytes.as_str()
    }
}

pub(crate) fn first_line(s: &str) -> String {
    // regex errors are multi-line with a caret diagram; the last line says what is wrong.
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_owned()
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<'de> Deserialize<'de> for Regex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Regex::new(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Regex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn sizes_are_base_2() {
        assert_eq!(parse_size("10MB").unwrap(), 10 << 20);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("ten").is_err());
        assert_eq!(parse_size("-1KB").unwrap(), 0);
    }

    #[test]
    fn regex_errors_name_the_expression() {
        let e = Regex::new("a(b").unwrap_err();
        assert!(e.contains("\"a(b\""), "{e}");
    }
}
