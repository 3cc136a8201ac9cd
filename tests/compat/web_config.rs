//! `--web.config.file` through both binaries: the same TLS + basic auth + headers file, the same
//! curl requests, the same answers (status, `WWW-Authenticate`, content type, configured
//! headers, error bodies, curl's verdict on the handshake); and the same start-up verdict on bad
//! files. blackbox 0.23's exporter-toolkit (0.8) predates `rate_limit`, inline certificates and
//! `client_allowed_sans`, so those are tested in tests/it/web.rs only.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::exporter::blackbox_binary;
use crate::support::certs::Ca;

const CONFIG: &str = "modules:\n  http_2xx:\n    prober: http\n";

/// An exporter child process with a web config, killed when dropped.
struct Running {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `bin` with `web`; `Err` with its log when it exits instead (a refused file), `Ok`
/// once its port accepts connections.
fn spawn(name: &'static str, bin: &Path, dir: &Path, web: &Path) -> Result<Running, String> {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join("config.yml");
    std::fs::write(&config, CONFIG).unwrap();
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin)
        .current_dir(dir)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.config.file={}", web.display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let mut r = Running {
        name,
        child,
        addr,
        log,
    };
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if r.child.try_wait().unwrap().is_some() {
            return Err(std::fs::read_to_string(&r.log).unwrap_or_default());
        }
        if std::net::TcpStream::connect(r.addr).is_ok() {
            return Ok(r);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} neither listened nor exited within 20s");
}

/// What a client can see of one answer.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    curl_exit: i32,
    status: String,
    www_authenticate: Option<String>,
    content_type: Option<String>,
    x_frame_options: Option<String>,
    x_content_type_options: Option<String>,
    /// Only error bodies are compared: the endpoints' own pages differ by design.
    error_body: Option<String>,
}

fn curl(args: &[&str], url: &str) -> Seen {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let headers = std::fs::read_to_string(&headers).unwrap_or_default();
    let header = |name: &str| {
        headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let error = !status.starts_with('2');
    Seen {
        curl_exit: out.status.code().unwrap_or(-1),
        status: status.to_owned(),
        www_authenticate: header("www-authenticate"),
        content_type: header("content-type").filter(|_| error),
        x_frame_options: header("x-frame-options"),
        x_content_type_options: header("x-content-type-options"),
        error_body: error.then(|| body.to_owned()),
    }
}

#[test]
fn tls_basic_auth_and_headers_answer_as_blackbox() {
    let Some(blackbox) = blackbox_binary("web_config_tls_basic_auth") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("compat web CA");
    let ca_file = ca.write_to(dir.path());
    let (cert, key) = ca
        .leaf(&["localhost", "127.0.0.1"])
        .build()
        .write_to(dir.path());
    let hash = bcrypt::hash_with_result("wonderland", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  min_version: TLS13\n\
             http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  alice: {hash}\n",
            cert.file_name().unwrap().to_str().unwrap(),
            key.file_name().unwrap().to_str().unwrap(),
        ),
    )
    .unwrap();
    let ours = spawn(
        "lookout",
        Path::new(env!("CARGO_BIN_EXE_lookout")),
        dir.path(),
        &web,
    )
    .unwrap_or_else(|log| panic!("lookout refused the file:\n{log}"));
    let theirs = spawn("blackbox", &blackbox, dir.path(), &web)
        .unwrap_or_else(|log| panic!("blackbox refused the file:\n{log}"));
    let ca_file = ca_file.to_str().unwrap();
    let cases: [(&str, Vec<&str>, &str); 7] = [
        (
            "right password",
            vec!["-u", "alice:wonderland"],
            "/-/healthy",
        ),
        ("wrong password", vec!["-u", "alice:nope"], "/-/healthy"),
        ("unknown user", vec!["-u", "mallory:wonderland"], "/metrics"),
        ("no credentials", vec![], "/probe?target=127.0.0.1:1"),
        (
            "not a Basic header",
            vec!["-H", "Authorization: Bearer x"],
            "/",
        ),
        (
            "TLS 1.2 under min_version TLS13",
            vec!["--tls-max", "1.2"],
            "/-/healthy",
        ),
        ("plain HTTP on the TLS port", vec!["PLAIN"], "/-/healthy"),
    ];
    let mut diffs = Vec::new();
    for (what, args, path) in cases {
        let seen = |r: &Running| {
            if args == ["PLAIN"] {
                return curl(&[], &format!("http://{}{path}", r.addr));
            }
            let resolve = format!("localhost:{}:127.0.0.1", r.addr.port());
            let mut a = vec!["--cacert", ca_file, "--resolve", &resolve];
            a.extend(&args);
            curl(&a, &format!("https://localhost:{}{path}", r.addr.port()))
        };
        let (l, b) = (seen(&ours), seen(&theirs));
        if l != b {
            diffs.push(format!("{what}:\n  lookout:  {l:?}\n  blackbox: {b:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{}\n--- {} log:\n{}\n--- {} log:\n{}",
        diffs.join("\n"),
        ours.name,
        std::fs::read_to_string(&ours.log).unwrap_or_default(),
        theirs.name,
        std::fs::read_to_string(&theirs.log).unwrap_or_default(),
    );
}

/// Files both refuse at start-up (the messages differ by design: lookout names line and field).
#[test]
fn bad_web_config_files_stop_both_at_start_up() {
    let Some(blackbox) = blackbox_binary("web_config_bad_files") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("compat web CA");
    let ca_file = ca.write_to(d);
    let (cert, key) = ca.leaf(&["localhost"]).build().write_to(d);
    let (cert, key, ca_file) = (cert.display(), key.display(), ca_file.display());
    let files = [
        (
            "unknown field",
            "tls_server_config:\n  cert_filse: x\n".to_owned(),
        ),
        (
            "unknown cipher",
            format!(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  cipher_suites: [TLS_INVENTED]\n"
            ),
        ),
        (
            "unknown curve",
            format!(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  curve_preferences: [CurveP999]\n"
            ),
        ),
        (
            "unknown TLS version",
            format!(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS111\n"
            ),
        ),
        (
            "unknown client auth type",
            format!(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: Sometimes\n"
            ),
        ),
        (
            "client CA without a client auth type",
            format!(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_ca_file: {ca_file}\n"
            ),
        ),
        (
            "missing certificate file",
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {key}\n",
                d.join("nope.pem").display()
            ),
        ),
        (
            "key without certificate",
            format!("tls_server_config:\n  key_file: {key}\n"),
        ),
        (
            "not a bcrypt hash",
            "basic_auth_users:\n  alice: wonderland\n".to_owned(),
        ),
        (
            "a header exporter-toolkit does not set",
            "http_server_config:\n  headers:\n    X-Powered-By: me\n".to_owned(),
        ),
        (
            "a header value it does not allow",
            "http_server_config:\n  headers:\n    X-Frame-Options: allowall\n".to_owned(),
        ),
    ];
    let mut wrong = Vec::new();
    for (i, (what, text)) in files.iter().enumerate() {
        let case = d.join(format!("case{i}"));
        std::fs::create_dir(&case).unwrap();
        let web = case.join("web.yml");
        std::fs::write(&web, text).unwrap();
        let ours = spawn(
            "lookout",
            Path::new(env!("CARGO_BIN_EXE_lookout")),
            &case,
            &web,
        );
        let theirs = spawn("blackbox", &blackbox, &case, &web);
        match (&ours, &theirs) {
            (Err(_), Err(_)) => {}
            _ => wrong.push(format!(
                "{what}: lookout {}, blackbox {}",
                if ours.is_err() { "refused" } else { "started" },
                if theirs.is_err() {
                    "refused"
                } else {
                    "started"
                },
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
