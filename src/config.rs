//! The config file: blackbox_exporter's format (`modules:`), read in one place and validated
//! once into plain structs. Nothing after `load` re-validates; a `Config` is never mutated, only
//! replaced whole.

pub mod error;
pub mod module;
pub mod target_set;
pub mod targets;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::values::FieldError;
pub use error::ConfigError;
pub use module::{Module, RawModule};
pub use target_set::{Assembled, Graph, Rejection, TargetError, TargetSet, assemble};
pub use targets::{
    Defaults, RawDefaults, RawScheduler, RawTarget, SchedulerSettings, Slo, Target, validate_target,
};

/// The file as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Modules by name.
    #[serde(default)]
    pub modules: BTreeMap<String, RawModule>,
    /// Defaults for scheduled targets (a lookout extension).
    #[serde(default, skip_serializing_if = "is_default")]
    pub defaults: RawDefaults,
    /// Scheduler settings (a lookout extension).
    #[serde(default, skip_serializing_if = "is_default")]
    pub scheduler: RawScheduler,
    /// Targets lookout probes on its own (a lookout extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<RawTarget>,
    /// Where lookout sends its alerts itself (a lookout extension).
    #[serde(default, skip_serializing_if = "is_default")]
    pub alerting: crate::alerts::Section,
    /// The status pages (a lookout extension).
    #[serde(default, skip_serializing_if = "is_default")]
    pub status: crate::status::Section,
    /// The history store's flushing, retention and maintenance windows (a lookout extension).
    #[serde(default, skip_serializing_if = "is_default")]
    pub history: crate::history::Section,
    /// Which addresses `/probe` requests may reach (a lookout extension); without it, all but
    /// the cloud metadata addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_access: Option<crate::access::Section>,
    /// How many `/probe` requests run at once and how fast a client may send them (a lookout
    /// extension); without it, `limits::MAX_IN_FLIGHT` at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_limits: Option<crate::limits::Section>,
    /// Targets discovered from Kubernetes objects (a lookout extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<crate::kubernetes::Section>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A loaded, validated config.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Modules by name.
    pub modules: BTreeMap<String, Arc<Module>>,
    /// Scheduled targets (in file order), their dependency graph and the scheduler settings:
    /// what the scheduler follows.
    pub targets: Arc<TargetSet>,
    /// `defaults:`, for targets that come from other sources (discovery).
    pub defaults: targets::Defaults,
    /// Where alerts go.
    pub alerting: Arc<crate::alerts::Spec>,
    /// The status pages.
    pub status: Arc<crate::status::Spec>,
    /// How history is kept.
    pub history: crate::history::Settings,
    /// What `/probe` requests may reach.
    pub probe_access: Arc<crate::access::Policy>,
    /// How many `/probe` requests may run.
    pub probe_limits: crate::limits::Spec,
    /// Kubernetes discovery, when the config asks for it.
    pub kubernetes: Option<Arc<crate::kubernetes::Spec>>,
    /// The file it came from (`EMBEDDED_NAME` for the built-in default).
    pub file: PathBuf,
    /// Every file the load read (this one, and the files it names), with their bytes: a reload
    /// finding them all unchanged is skipped, as blackbox 0.28 skips one.
    pub inputs: crate::values::Inputs,
    /// The extension sections as written, for `/config`.
    raw_extensions: RawExtensions,
}

/// lookout's extension sections as written (secrets stay in `modules:`), kept for `/config`.
#[derive(Debug, Clone, Default)]
struct RawExtensions {
    defaults: RawDefaults,
    scheduler: RawScheduler,
    targets: Vec<RawTarget>,
    alerting: crate::alerts::Section,
    status: crate::status::Section,
    history: crate::history::Section,
    probe_access: Option<crate::access::Section>,
    probe_limits: Option<crate::limits::Section>,
    kubernetes: Option<crate::kubernetes::Section>,
}

impl Config {
    /// The config as YAML, secrets shown as `<secret>`: what `/config` serves.
    pub fn to_yaml(&self) -> String {
        let raw = RawConfig {
            modules: self
                .modules
                .iter()
                .map(|(k, m)| (k.clone(), m.raw.clone()))
                .collect(),
            defaults: self.raw_extensions.defaults.clone(),
            scheduler: self.raw_extensions.scheduler.clone(),
            targets: self.raw_extensions.targets.clone(),
            alerting: self.raw_extensions.alerting.clone(),
            status: self.raw_extensions.status.clone(),
            history: self.raw_extensions.history.clone(),
            probe_access: self.raw_extensions.probe_access.clone(),
            probe_limits: self.raw_extensions.probe_limits.clone(),
            kubernetes: self.raw_extensions.kubernetes.clone(),
        };
        serde_norway::to_string(&raw).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// The name the built-in default config is reported under.
pub const EMBEDDED_NAME: &str = "<built-in config/lookout.yml>";

/// The default config compiled into the binary (`config/lookout.yml`).
pub const EMBEDDED_CONFIG: &str = include_str!("../config/lookout.yml");

/// Where the config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file on disk.
    File(PathBuf),
    /// The built-in default.
    Embedded,
}

impl ConfigSource {
    /// `--config.file` when given, else `./lookout.yml` when it exists, else the built-in
    /// default.
    pub fn choose(flag: Option<&Path>) -> ConfigSource {
        match flag {
            Some(p) => ConfigSource::File(p.to_path_buf()),
            None if Path::new("lookout.yml").exists() => ConfigSource::File("lookout.yml".into()),
            None => ConfigSource::Embedded,
        }
    }

    /// The source a loaded config came from (for reloads).
    pub fn of(config: &Config) -> ConfigSource {
        if config.file.as_os_str() == EMBEDDED_NAME {
            ConfigSource::Embedded
        } else {
            ConfigSource::File(config.file.clone())
        }
    }
}

/// Loads from a source: a file, or the default compiled into the binary.
pub fn load_source(source: &ConfigSource) -> Result<Config, ConfigError> {
    match source {
        ConfigSource::File(p) => load(p),
        ConfigSource::Embedded => parse(EMBEDDED_CONFIG, Path::new(EMBEDDED_NAME)),
    }
}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let (config, inputs) = crate::values::recording_inputs(|| {
        let bytes = crate::values::read_input(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            field: String::new(),
            message: format!("cannot read config file: {e}"),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            field: String::new(),
            message: format!("cannot read config file: {e}"),
        })?;
        parse(&text, path)
    });
    let mut config = config?;
    config.inputs = inputs;
    Ok(config)
}

/// Parses and validates config `text` that came from `path` (relative file names in it are read
/// relative to `path`'s directory).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    // As blackbox: a file with no YAML document (empty, or only comments) is an error, not an
    // empty config — usually a mount or templating mistake.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        return Err(ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            field: String::new(),
            message: "the config file is empty".into(),
        });
    }
    let de = serde_norway::Deserializer::from_str(text);
    let raw: RawConfig = match serde_path_to_error::deserialize(de) {
        Ok(raw) => raw,
        Err(e) => {
            // A syntax error leaves `?` segments for the parts the parser never reached.
            let field = e
                .path()
                .to_string()
                .split('.')
                .take_while(|p| *p != "?")
                .collect::<Vec<_>>()
                .join(".");
            let inner = e.into_inner();
            let (line, column) = match inner.location() {
                Some(l) => (Some(l.line()), Some(l.column())),
                None => (None, None),
            };
            let message = match inner.location() {
                Some(_) if e_is_syntax(&inner) => format!(
                    "YAML syntax error: {}",
                    clean_yaml_message(&inner.to_string(), &field)
                ),
                _ => clean_yaml_message(&inner.to_string(), &field),
            };
            return Err(ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                field: if field == "." { String::new() } else { field },
                message,
            });
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let error = |line: Option<usize>, field: String, message: String| ConfigError {
        file: path.to_path_buf(),
        line,
        column: None,
        field,
        message,
    };
    let mut modules = BTreeMap::new();
    for (name, raw_module) in raw.modules.clone() {
        let m = module::build(&name, raw_module, &base).map_err(|e| {
            error(
                locate(text, &name, &e.path),
                format!("modules.{name}.{}", e.path),
                e.message,
            )
        })?;
        modules.insert(name, Arc::new(m));
    }
    let scheduler = SchedulerSettings::build(&raw.scheduler).map_err(|e| {
        let e = e.within("scheduler");
        error(locate_top(text, "scheduler"), e.path, e.message)
    })?;
    let defaults = Defaults::build(&raw.defaults).map_err(|e| {
        let e = e.within("defaults");
        error(locate_top(text, "defaults"), e.path, e.message)
    })?;
    let target_error = |index: usize, e: FieldError| {
        let line = locate_target(text, index, &e.path);
        let e = e.within(&format!("targets[{index}]"));
        error(line, e.path, e.message)
    };
    let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(raw.targets.len());
    let mut targets = Vec::with_capacity(raw.targets.len());
    for (i, t) in raw.targets.iter().enumerate() {
        // A second use of a name is reported before the entry's other problems, as always.
        if !t.name.is_empty()
            && let Some(&first) = first_of.get(t.name.as_str())
        {
            return Err(target_error(i, target_set::duplicate_name(&t.name, first)));
        }
        first_of.insert(&t.name, i);
        targets.push(validate_target(t, &defaults, &modules).map_err(|e| target_error(i, e))?);
    }
    let set = assemble(targets, Vec::new(), scheduler)
        .map_err(|e| target_error(e.index, e.error))?
        .set;
    let alerting = crate::alerts::Spec::build(&raw.alerting, &base).map_err(|e| {
        let e = e.within("alerting");
        error(locate_top(text, "alerting"), e.path, e.message)
    })?;
    let status = crate::status::Spec::build(&raw.status).map_err(|e| {
        let e = e.within("status");
        error(locate_top(text, "status"), e.path, e.message)
    })?;
    let history = crate::history::Settings::build(&raw.history).map_err(|e| {
        let e = e.within("history");
        error(locate_top(text, "history"), e.path, e.message)
    })?;
    let probe_access = crate::access::Policy::build(raw.probe_access.as_ref()).map_err(|e| {
        let e = e.within("probe_access");
        error(
            locate_section_field(text, "probe_access", &e.path),
            e.path,
            e.message,
        )
    })?;
    let probe_limits = crate::limits::Spec::build(raw.probe_limits.as_ref()).map_err(|e| {
        let e = e.within("probe_limits");
        error(
            locate_section_field(text, "probe_limits", &e.path),
            e.path,
            e.message,
        )
    })?;
    let kubernetes = match &raw.kubernetes {
        None => None,
        Some(section) => Some(Arc::new(
            crate::kubernetes::Spec::build(section, &modules).map_err(|e| {
                let e = e.within("kubernetes");
                error(
                    locate_section_field(text, "kubernetes", &e.path),
                    e.path,
                    e.message,
                )
            })?,
        )),
    };
    Ok(Config {
        modules,
        targets: Arc::new(set),
        defaults,
        alerting: Arc::new(alerting),
        status: Arc::new(status),
        history,
        probe_access: Arc::new(probe_access),
        probe_limits,
        kubernetes,
        file: path.to_path_buf(),
        inputs: Vec::new(),
        raw_extensions: RawExtensions {
            defaults: raw.defaults,
            scheduler: raw.scheduler,
            targets: raw.targets,
            alerting: raw.alerting,
            status: raw.status,
            history: raw.history,
            probe_access: raw.probe_access,
            probe_limits: raw.probe_limits,
            kubernetes: raw.kubernetes,
        },
    })
}

/// Whether a parse error comes from the YAML syntax rather than from a field's value.
fn e_is_syntax(e: &serde_norway::Error) -> bool {
    let m = e.to_string();
    [
        "did not find expected",
        "mapping values are not allowed",
        "found character that cannot start",
        "could not find expected",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// serde_norway appends " at line L column C" to messages; the position is reported separately.
fn clean_yaml_message(msg: &str, field: &str) -> String {
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    // Messages like "modules.x.http: unknown field `foo`, expected one of …" carry the path too
    // (a top-level section's is one word: "probe_access: missing field `default`").
    let msg = match msg.split_once(": ") {
        Some((head, tail)) if !head.contains(' ') && (head.contains('.') || head == field) => tail,
        _ => msg,
    };
    msg.to_owned()
}

/// Finds the line of `field` (a dotted path such as `http.tls_config.ca_file`) inside module
/// `module`, for errors found after parsing. A best-effort text search: `None` when unsure.
fn locate(text: &str, module: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let key = |l: &str| -> Option<(usize, String)> {
        let t = l.trim_start();
        if t.starts_with('#') {
            return None;
        }
        let indent = l.len() - t.len();
        let t = t.trim_start_matches("- ");
        let (k, _) = t.split_once(':')?;
        Some((
            indent,
            k.trim().trim_matches('"').trim_matches('\'').to_owned(),
        ))
    };
    let start = lines
        .iter()
        .position(|l| key(l).is_some_and(|(_, k)| k == module))?;
    let module_indent = key(lines[start])?.0;
    let mut found = start;
    let mut min_indent = module_indent;
    for part in field.split('.') {
        let name = part.split('[').next().unwrap_or(part);
        let mut hit = None;
        for (i, l) in lines.iter().enumerate().skip(found + 1) {
            let Some((indent, k)) = key(l) else { continue };
            if indent <= min_indent {
                break;
            }
            if k == name {
                hit = Some((i, indent));
                break;
            }
        }
        match hit {
            Some((i, indent)) => {
                found = i;
                min_indent = indent;
            }
            None => break,
        }
    }
    Some(found + 1)
}

/// The line of a top-level key.
fn locate_top(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.starts_with(&format!("{key}:")))
        .map(|i| i + 1)
}

/// The line of `path` (`section.field`) under top-level `section`, else the section's line.
fn locate_section_field(text: &str, section: &str, path: &str) -> Option<usize> {
    let top = locate_top(text, section)?;
    let field = path.strip_prefix(section)?.trim_start_matches('.');
    let key = field.split(['.', '[']).next().unwrap_or(field);
    if key.is_empty() {
        return Some(top);
    }
    let found = text
        .lines()
        .enumerate()
        .skip(top)
        .take_while(|(_, l)| l.trim().is_empty() || l.starts_with([' ', '#']))
        .find(|(_, l)| l.trim_start().starts_with(&format!("{key}:")))
        .map(|(i, _)| i + 1);
    Some(found.unwrap_or(top))
}

/// The line of `field` in the `index`th entry of `targets:` (else the entry's first line).
fn locate_target(text: &str, index: usize, field: &str) -> Option<usize> {
    let key = format!("{}:", field.split(['.', '[']).next().unwrap_or(field));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.starts_with("targets:"))?;
    let mut item_indent = None;
    let mut count = 0usize;
    let mut item_line = None;
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let indent = l.len() - t.len();
        if indent == 0 {
            break;
        }
        let is_item = t.starts_with("- ") && *item_indent.get_or_insert(indent) == indent;
        if is_item {
            if item_line.is_some() {
                break;
            }
            if count == index {
                item_line = Some(i);
            }
            count += 1;
        }
        if item_line.is_some() && t.trim_start_matches("- ").starts_with(&key) {
            return Some(i + 1);
        }
    }
    item_line.map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> ConfigError {
        parse(yaml, Path::new("test.yml")).unwrap_err()
    }

    #[test]
    fn unknown_field_names_line_module_and_field() {
        let e = err(
            "modules:\n  http_2xx:\n    prober: http\n    http:\n      valid_status_code: [200]\n",
        );
        assert_eq!(e.line, Some(5), "{e}");
        assert_eq!(e.module(), Some("http_2xx"));
        assert!(
            e.to_string().contains("unknown field `valid_status_code`"),
            "{e}"
        );
    }

    #[test]
    fn bad_regex_is_reported_at_its_line() {
        let e = err(
            "modules:\n  m:\n    prober: http\n    http:\n      fail_if_body_matches_regexp:\n        - \"a(b\"\n",
        );
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.field.contains("fail_if_body_matches_regexp"), "{e}");
        assert!(e.message.contains("a(b"), "{e}");
    }

    #[test]
    fn validation_errors_are_located_by_search() {
        let e = err(
            "modules:\n  one:\n    prober: http\n  m:\n    prober: http\n    http:\n      method: \"GE T\"\n",
        );
        assert_eq!(e.field, "modules.m.http.method");
        assert_eq!(e.line, Some(7), "{e}");
    }

    #[test]
    fn unknown_prober_is_an_error() {
        let e = err("modules:\n  m:\n    prober: htp\n");
        assert!(e.message.contains("unknown prober \"htp\""), "{e}");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn durations_use_prometheus_form() {
        let c = parse(
            "modules:\n  m:\n    prober: http\n    timeout: 1m30s\n",
            Path::new("t.yml"),
        )
        .unwrap();
        assert_eq!(
            c.modules["m"].timeout,
            Some(std::time::Duration::from_secs(90))
        );
        let e = err("modules:\n  m:\n    prober: http\n    timeout: 5\n");
        assert!(e.message.contains("missing unit"), "{e}");
    }

    #[test]
    fn secrets_are_redacted_in_yaml() {
        let c = parse(
            "modules:\n  m:\n    prober: http\n    http:\n      basic_auth:\n        username: u\n        password: hunter2\n",
            Path::new("t.yml"),
        )
        .unwrap();
        let y = c.to_yaml();
        assert!(!y.contains("hunter2") && y.contains("<secret>"), "{y}");
    }
}
