//! `ConfigError`: what is wrong with a config file, and where.

use std::fmt;
use std::path::PathBuf;

/// A config file that cannot be used: the file, the position where known, the module and field
/// path, and a message naming the bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, where the YAML parser (or a search for the field) gives one.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// The field path, e.g. `modules.http_2xx.http.method`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// The module the error is in, when it is inside `modules:`.
    pub fn module(&self) -> Option<&str> {
        let rest = self.field.strip_prefix("modules.")?;
        rest.split('.').next().filter(|m| !m.is_empty())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(m) = self.module() {
            write!(f, "module {m:?}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "field {}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}
