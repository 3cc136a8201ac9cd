//! The two exporters under comparison, run as real child processes on loopback.
//!
//! lookout is the binary Cargo built for this test target; blackbox_exporter is Debian's
//! `prometheus-blackbox-exporter`. Both get the same `--config.file` and a
//! `--web.listen-address` on a free 127.0.0.1 port, and are killed when dropped.

use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::support::lookout::{Answer, request};

/// Where Debian installs blackbox_exporter.
const DEBIAN_BLACKBOX: &str = "/usr/bin/prometheus-blackbox-exporter";

/// Environment variable naming another blackbox_exporter binary to compare against.
const BLACKBOX_ENV: &str = "BLACKBOX_EXPORTER";

/// How long an exporter may take to answer `/-/healthy` after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many times to retry start-up, since a free port can be taken between our probe for it
/// and the child binding it.
const START_ATTEMPTS: usize = 4;

/// Whether this process may make a mount namespace and bind-mount a hosts file in it (root);
/// with `CI=true` it must.
pub fn can_mount_hosts(scenario: &str) -> bool {
    let ok = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    assert!(
        ok || !ci,
        "compat scenario {scenario}: cannot make a mount namespace (CI=true runs as root and requires it)"
    );
    if !ok {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED compat scenario {scenario}: cannot make a mount namespace (not root?)"
        );
    }
    ok
}

/// The blackbox_exporter binary, or `None` when it is not installed and the run is not CI.
///
/// With `CI=true` a missing binary fails the test: CI installs the package, so its absence
/// means the comparison silently stopped happening. Locally the scenario is skipped with a
/// notice written straight to stderr, which the test harness does not capture.
pub fn blackbox_binary(scenario: &str) -> Option<PathBuf> {
    let candidate = std::env::var_os(BLACKBOX_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_BLACKBOX));
    if candidate.is_file() {
        return Some(candidate);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    assert!(
        !ci,
        "compat scenario {scenario}: blackbox_exporter not found at {} (CI=true requires it; \
         apt-get install prometheus-blackbox-exporter or set {BLACKBOX_ENV})",
        candidate.display()
    );
    static NOTICE: Once = Once::new();
    let mut stderr = std::io::stderr();
    NOTICE.call_once(|| {
        let _ = writeln!(
            stderr,
            "\n{bar}\nCOMPAT TESTS SKIPPED: blackbox_exporter not found at {}.\n\
             Install Debian's prometheus-blackbox-exporter or set {BLACKBOX_ENV}=/path/to/binary.\n\
             These tests pass vacuously; with CI=true they fail instead.\n{bar}\n",
            candidate.display(),
            bar = "!".repeat(78),
        );
    });
    let _ = writeln!(
        stderr,
        "SKIPPED compat scenario {scenario}: no blackbox_exporter"
    );
    None
}

/// A running exporter child process.
pub struct Exporter {
    /// `lookout` or `blackbox`, for messages.
    pub name: &'static str,
    /// The loopback address it listens on.
    pub addr: SocketAddr,
    child: Child,
    log_path: PathBuf,
}

impl Exporter {
    /// Spawns `bin` with `config` and waits until it answers `/-/healthy`.
    /// Its stdout and stderr go to a file in `log_dir`, shown when a comparison fails.
    /// With `hosts`, the child runs in a mount namespace of its own where that file is
    /// bind-mounted over `/etc/hosts` (both exporters see the same file; the machine's stays).
    pub async fn start(
        name: &'static str,
        bin: &Path,
        config: &Path,
        log_dir: &Path,
        hosts: Option<&Path>,
    ) -> Exporter {
        let mut failures = Vec::new();
        for attempt in 0..START_ATTEMPTS {
            let addr = free_loopback_port();
            let log_path = log_dir.join(format!("{name}-{attempt}.log"));
            let log = File::create(&log_path).expect("create exporter log file");
            let mut command = match hosts {
                None => Command::new(bin),
                Some(hosts) => {
                    let mut c = Command::new("unshare");
                    c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                        .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
                        .arg(hosts)
                        .arg(bin);
                    c
                }
            };
            let child = command
                // lookout keeps its history store in ./data: in the test's directory.
                .current_dir(log_dir)
                .arg("--config.file")
                .arg(config)
                .arg("--web.listen-address")
                .arg(addr.to_string())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log file handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {name} ({}): {e}", bin.display()));
            let mut exporter = Exporter {
                name,
                addr,
                child,
                log_path,
            };
            match exporter.wait_healthy().await {
                Ok(()) => return exporter,
                Err(why) => failures.push(format!("attempt {attempt} on {addr}: {why}")),
            }
        }
        panic!(
            "{name} did not become healthy:\n{}",
            failures.join("\n---\n")
        );
    }

    /// Polls `/-/healthy` until it answers 200, the child exits, or [`START_TIMEOUT`] passes.
    async fn wait_healthy(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return Err(format!("exited with {status}; log:\n{}", self.log()));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "no healthy answer within {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                ));
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                let answer = tokio::time::timeout(
                    Duration::from_secs(2),
                    request(self.addr, "GET", "/-/healthy", &[]),
                )
                .await;
                if let Ok(answer) = answer
                    && answer.status == 200
                {
                    // A child that failed to bind exits at once; make sure the answer
                    // came from our child rather than whoever holds the port.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some(status) = self.child.try_wait().expect("poll child") {
                        return Err(format!("exited with {status}; log:\n{}", self.log()));
                    }
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends one GET to this exporter, guarded against hangs.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        tokio::time::timeout(
            Duration::from_secs(60),
            request(self.addr, "GET", path, headers),
        )
        .await
        .unwrap_or_else(|_| panic!("{} did not answer {path} within 60s", self.name))
    }

    /// Everything the child has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 127.0.0.1 port that was free a moment ago (bound to port 0, then released).
fn free_loopback_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}
