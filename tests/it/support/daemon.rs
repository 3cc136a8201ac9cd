//! Real server processes (Debian's mosquitto, redis-server) started by the tests themselves on
//! free loopback ports, each with its own temp dir and config file, never as system services.
//!
//! A missing binary skips the test with a loud notice, or fails it with `CI=true` (CI installs
//! the packages, so their absence means the tests silently stopped testing anything).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// How many times a start is retried: a free port can be taken between our probe for it and the
/// server binding it.
const START_ATTEMPTS: usize = 4;
/// How long a server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Finds `name` among `candidates` (absolute paths) or on `PATH`; `None` (with a loud notice)
/// when absent, a panic when absent under `CI=true`. `package` is the Debian package to install.
pub fn binary(name: &str, candidates: &[&str], package: &str, test: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .chain(on_path)
        .find(|p| p.is_file());
    if found.is_some() {
        return found;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    assert!(
        !ci,
        "{test}: {name} not found (CI=true requires it; apt-get install {package})"
    );
    static NOTICE: Once = Once::new();
    let mut stderr = std::io::stderr();
    NOTICE.call_once(|| {
        let _ = writeln!(
            stderr,
            "\n{bar}\nSERVER TESTS SKIPPED: {name} not found. Install Debian's {package} \
             (scripts/test does).\nThese tests pass vacuously; with CI=true they fail instead.\n{bar}\n",
            bar = "!".repeat(78),
        );
    });
    let _ = writeln!(stderr, "SKIPPED {test}: no {name}");
    None
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// A server process; killed (and reaped) when dropped or stopped.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    /// Where the server's stdout and stderr go.
    pub log: PathBuf,
    /// The ports it listens on (the first is the one waited for).
    pub ports: Vec<u16>,
}

impl Daemon {
    /// Starts the command `make(ports)` builds, with `n_ports` fresh free ports, and waits until
    /// every port accepts connections; retries with new ports when the process exits early.
    /// Output goes to `<dir>/<name>.log`.
    pub fn start(
        name: &str,
        dir: &Path,
        n_ports: usize,
        mut make: impl FnMut(&[u16]) -> Command,
    ) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let ports: Vec<u16> = (0..n_ports).map(|_| free_port()).collect();
            let out = std::fs::File::create(&log).expect("create the server log");
            let err = out.try_clone().expect("clone the log handle");
            let mut cmd = make(&ports);
            cmd.stdin(Stdio::null()).stdout(out).stderr(err);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name}: {e}"));
            let mut d = Daemon {
                name: name.to_owned(),
                child: Some(child),
                log: log.clone(),
                ports,
            };
            if d.wait_ready() {
                return d;
            }
            d.stop();
            last = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("{name} did not start after {START_ATTEMPTS} attempts; its last output:\n{last}");
    }

    /// The first port.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// `127.0.0.1:<first port>`.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    fn wait_ready(&mut self) -> bool {
        let until = Instant::now() + READY_WITHIN;
        let mut pending: Vec<u16> = self.ports.clone();
        while Instant::now() < until {
            if let Some(child) = self.child.as_mut()
                && matches!(child.try_wait(), Ok(Some(_)))
            {
                return false;
            }
            pending.retain(|p| {
                TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], *p)),
                    Duration::from_millis(200),
                )
                .is_err()
            });
            if pending.is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends the server signal `sig` (`STOP`, `CONT`, …) with kill(1), by its process id.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().expect("the server is running");
        let status = Command::new("kill")
            .arg("-s")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {sig} {pid} failed");
    }

    /// Starts `cmd` again on the same ports after `stop` (a server back after a crash), its
    /// output appended to the log, and waits until every port accepts connections.
    pub fn restart(&mut self, mut cmd: Command) {
        assert!(self.child.is_none(), "{}: restart while running", self.name);
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("open the server log");
        let err = out.try_clone().expect("clone the log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("restarting {}: {e}", self.name)),
        );
        assert!(
            self.wait_ready(),
            "{} did not come back on {:?}; its output:\n{}",
            self.name,
            self.ports,
            self.output()
        );
    }

    /// The server's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {:?}", self.name, self.ports)
    }
}
