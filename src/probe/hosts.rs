//! The hosts file, read as Go's resolver reads it, since blackbox resolves with Go's: a name the
//! file lists resolves to the file's addresses alone (in file order, whatever their family),
//! and DNS is asked only for names it does not list. hickory's own hosts handling merges per
//! record type instead (a name the file maps to 127.0.0.1 only still got `::1` for AAAA from
//! its built-in `localhost` answer), so lookout reads the file itself.
//!
//! Go's rules, kept here: `#` starts a comment; a line is an address and one or more names; a
//! line whose address does not parse is skipped; names match without regard to ASCII case and
//! to a trailing dot; an IPv6 zone (`fe80::1%eth0`) is accepted (and dropped: `IpAddr` has no
//! zone). The file is re-read when it is older than five seconds in the cache and its
//! modification time or size changed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How long a read of the file is trusted without looking at it again (Go's `cacheMaxAge`).
const MAX_AGE: Duration = Duration::from_secs(5);

/// A hosts file and its cached contents.
#[derive(Debug)]
pub struct HostsFile {
    path: PathBuf,
    max_age: Duration,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    checked: Option<Instant>,
    modified: Option<SystemTime>,
    size: u64,
    by_name: HashMap<String, Vec<IpAddr>>,
}

impl HostsFile {
    /// The system's, `/etc/hosts`.
    pub fn system() -> HostsFile {
        HostsFile::new("/etc/hosts")
    }

    /// The file at `path` (a missing or unreadable file lists nothing).
    pub fn new(path: impl AsRef<Path>) -> HostsFile {
        HostsFile {
            path: path.as_ref().to_owned(),
            max_age: MAX_AGE,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The same file, looked at again on every lookup (for tests that rewrite it).
    pub fn uncached(mut self) -> HostsFile {
        self.max_age = Duration::ZERO;
        self
    }

    /// The addresses the file lists for `host`, in file order; `None` when it lists none (then
    /// DNS decides).
    pub fn lookup(&self, host: &str) -> Option<Vec<IpAddr>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(&mut cache);
        cache.by_name.get(&key(host)).cloned()
    }

    fn refresh(&self, cache: &mut Cache) {
        let now = Instant::now();
        if cache
            .checked
            .is_some_and(|at| now.duration_since(at) < self.max_age && !self.max_age.is_zero())
        {
            return;
        }
        cache.checked = Some(now);
        let meta = std::fs::metadata(&self.path).ok();
        let (modified, size) = (
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.as_ref().map_or(0, |m| m.len()),
        );
        if meta.is_some()
            && modified == cache.modified
            && size == cache.size
            && !self.max_age.is_zero()
        {
            return;
        }
        cache.modified = modified;
        cache.size = size;
        cache.by_name = std::fs::read_to_string(&self.path)
            .map(|text| parse(&text))
            .unwrap_or_default();
    }
}

/// The lookup key of a name: lower-case ASCII, without a trailing dot.
fn key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Every name's addresses, in the order the file gives them.
pub fn parse(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut by_name: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_ascii_whitespace();
        let Some(addr) = fields.next() else {
            continue;
        };
        // An IPv6 zone is allowed and not kept.
        let bare = match addr.split_once('%') {
            Some((ip, _zone)) if ip.contains(':') => ip,
            _ => addr,
        };
        let Ok(ip) = bare.parse::<IpAddr>() else {
            continue;
        };
        for name in fields {
            by_name.entry(key(name)).or_default().push(ip);
        }
    }
    by_name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn names_map_to_their_lines_addresses_in_file_order() {
        let hosts = parse(
            "# comment line\n\
             127.0.0.1\tlocalhost  lookout-v4.test\n\
             ::1 ip6-localhost ip6-loopback lookout-v6.test # trailing comment\n\
             fe80::1%lo   lookout-zone.test\n\
             not-an-ip    skipped.test\n\
             127.0.0.2    Lookout-Both.Test\n\
             ::1          lookout-both.test.\n\
             127.0.0.2    lookout-both.test\n\
             10.0.0.1\n",
        );
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("localhost", Some(&["127.0.0.1"])),
            ("LOCALHOST", Some(&["127.0.0.1"])),
            ("localhost.", Some(&["127.0.0.1"])),
            ("lookout-v4.test", Some(&["127.0.0.1"])),
            ("lookout-v6.test", Some(&["::1"])),
            ("ip6-loopback", Some(&["::1"])),
            ("lookout-zone.test", Some(&["fe80::1"])),
            ("skipped.test", None),
            // Lines accumulate, in order, repeats kept (as Go keeps them).
            (
                "lookout-both.test",
                Some(&["127.0.0.2", "::1", "127.0.0.2"]),
            ),
            ("comment", None),
            ("missing.test", None),
        ];
        for (name, want) in cases {
            let got = hosts.get(&key(name)).cloned();
            assert_eq!(got, want.map(ips), "{name}");
        }
    }

    #[test]
    fn a_rewritten_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "127.0.0.1 a.test\n").unwrap();
        let hosts = HostsFile::new(&path).uncached();
        assert_eq!(hosts.lookup("a.test"), Some(ips(&["127.0.0.1"])));
        std::fs::write(&path, "::1 a.test\n").unwrap();
        assert_eq!(hosts.lookup("a.test"), Some(ips(&["::1"])));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(hosts.lookup("a.test"), None);
    }
}
