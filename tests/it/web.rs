//! `--web.config.file` (exporter-toolkit's format): TLS with rcgen certificates, client
//! certificates, basic auth, headers and the rate limit, seen by curl, a rustls client and
//! Debian's Prometheus; certificate rotation without a restart; bad files named by line and
//! field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::certs::{Ca, Leaf};
use crate::support::daemon::{self, Daemon};
use crate::support::http_target::{HttpTarget, Route};
use crate::support::lookout::{Lookout, q, request};

const CONFIG: &str = "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n";

/// bcrypt cost for the tests' hashes: the lowest bcrypt allows, to spare the shared CPU.
const COST: u32 = 4;

/// A `$2y$` hash, the form `htpasswd -B` writes.
fn hash(password: &str) -> String {
    bcrypt::hash_with_result(password, COST)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY)
}

/// A CA and a server certificate for `localhost` and 127.0.0.1, written into `dir`.
struct Pki {
    ca: Ca,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    leaf: Leaf,
}

fn pki(dir: &Path) -> Pki {
    let ca = Ca::new("lookout web test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]).build();
    let (cert_file, key_file) = leaf.write_to(dir);
    Pki {
        ca_file: ca.write_to(dir),
        ca,
        cert_file,
        key_file,
        leaf,
    }
}

/// Starts lookout with `web` as its web config file (written as `web.yml` in `dir`).
async fn start(dir: tempfile::TempDir, web: &str) -> Lookout {
    let path = dir.path().join("web.yml");
    std::fs::write(&path, web).unwrap();
    let path = path.to_str().unwrap().to_owned();
    Lookout::start_with_flags(dir, CONFIG, &["--web.config.file", &path]).await
}

/// curl's outcome: its exit code, the status, the headers (lowercase names) and the body.
#[derive(Debug)]
struct Curl {
    exit: i32,
    status: u16,
    version: String,
    headers: Vec<(String, String)>,
    body: String,
    stderr: String,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs curl with `args` then `url`, capturing status, headers and body.
async fn curl(args: &[&str], url: &str) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .arg(url);
    let out = cmd.output().await.expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (status, version) = tail.split_once(' ').unwrap_or((tail, ""));
    let headers = std::fs::read_to_string(&headers).unwrap_or_default();
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: status.parse().unwrap_or(0),
        version: version.to_owned(),
        headers: headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect(),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn https(addr: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", addr.port())
}

/// curl's `--resolve`, so `localhost` (the certificate's name) is 127.0.0.1 whatever the hosts
/// file says.
fn resolve(addr: SocketAddr) -> String {
    format!("localhost:{}:127.0.0.1", addr.port())
}

#[tokio::test]
async fn tls_and_basic_auth_as_curl_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n\
         http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n\
         basic_auth_users:\n  alice: {}\n  bob: {}\n",
        p.cert_file.file_name().unwrap().to_str().unwrap(), // relative: beside web.yml
        p.key_file.display(),
        hash("wonderland"),
        hash("builder"),
    );
    let lk = start(dir, &web).await;
    assert!(lk.app.tls);
    let ca = p.ca_file.to_str().unwrap().to_owned();
    let r = resolve(lk.addr);
    let base = ["--cacert", ca.as_str(), "--resolve", r.as_str()];
    let with = |extra: &'static [&'static str]| [&base[..], extra].concat();

    let ok = curl(
        &with(&["-u", "alice:wonderland"]),
        &https(lk.addr, "/metrics"),
    )
    .await;
    assert_eq!((ok.exit, ok.status), (0, 200), "{ok:?}");
    assert!(
        ok.body
            .contains("blackbox_exporter_config_last_reload_successful 1")
    );
    assert_eq!(ok.header("x-frame-options"), Some("deny"));
    assert_eq!(
        ok.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(
        ok.version, "2",
        "HTTP/2 is offered over TLS by default: {ok:?}"
    );

    let target = HttpTarget::new().route("/", Route::ok("hi")).start().await;
    let probe = format!("/probe?module=http_2xx&target={}", q(&target.url("/")));
    let ok = curl(
        &with(&["-u", "bob:builder", "--http1.1"]),
        &https(lk.addr, &probe),
    )
    .await;
    assert_eq!((ok.status, ok.version.as_str()), (200, "1.1"), "{ok:?}");
    assert!(ok.body.contains("probe_success 1"), "{}", ok.body);

    for (creds, why) in [
        (&["-u", "alice:builder"][..], "a wrong password"),
        (&["-u", "carol:wonderland"][..], "an unknown user"),
        (&[][..], "no credentials"),
    ] {
        let no = curl(&[&base[..], creds].concat(), &https(lk.addr, "/metrics")).await;
        assert_eq!(no.status, 401, "{why}: {no:?}");
        assert_eq!(no.header("www-authenticate"), Some("Basic"), "{why}");
        assert_eq!(no.body, "Unauthorized\n", "{why}");
        assert_eq!(
            no.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "{why}"
        );
        assert_eq!(
            no.header("x-frame-options"),
            Some("deny"),
            "{why}: headers on a 401 too"
        );
    }
    // Every endpoint, also an unknown one, is behind the same door.
    let no = curl(&base, &https(lk.addr, "/no-such-page")).await;
    assert_eq!(no.status, 401, "{no:?}");

    // Plain HTTP on the TLS port gets Go's answer.
    let plain = curl(&[], &format!("http://127.0.0.1:{}/metrics", lk.addr.port())).await;
    assert_eq!(plain.status, 400, "{plain:?}");
    assert!(
        plain
            .body
            .contains("Client sent an HTTP request to an HTTPS server."),
        "{plain:?}"
    );
    // And an untrusted certificate is refused by curl (the server is really TLS).
    let untrusted = curl(
        &["--resolve", r.as_str(), "-u", "alice:wonderland"],
        &https(lk.addr, "/metrics"),
    )
    .await;
    assert_eq!(untrusted.exit, 60, "{untrusted:?}");
}

#[tokio::test]
async fn tls_versions_and_http2_off() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  min_version: TLS13\n\
         http_server_config:\n  http2: false\n",
        p.cert_file.display(),
        p.key_file.display(),
    );
    let lk = start(dir, &web).await;
    let ca = p.ca_file.to_str().unwrap().to_owned();
    let r = resolve(lk.addr);
    let base = ["--cacert", ca.as_str(), "--resolve", r.as_str()];
    let tls12 = curl(
        &[&base[..], &["--tlsv1.2", "--tls-max", "1.2"]].concat(),
        &https(lk.addr, "/-/healthy"),
    )
    .await;
    assert_eq!(tls12.exit, 35, "TLS 1.2 is below min_version: {tls12:?}");
    assert!(tls12.stderr.contains("alert"), "{}", tls12.stderr);
    let tls13 = curl(
        &[&base[..], &["--tlsv1.3", "--http2"]].concat(),
        &https(lk.addr, "/-/healthy"),
    )
    .await;
    assert_eq!(
        (tls13.status, tls13.version.as_str()),
        (200, "1.1"),
        "{tls13:?}"
    );
}

#[tokio::test]
async fn client_certificates_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let clients = Ca::new("lookout web test client CA");
    let clients_file = clients.write_to(dir.path());
    let good = clients.client_leaf("prometheus").build();
    let (good_cert, good_key) = good.write_to(dir.path());
    let wrong_san = clients.client_leaf("someone-else").build();
    let (wrong_san_cert, wrong_san_key) = wrong_san.write_to(dir.path());
    let stranger = Ca::new("another CA").client_leaf("prometheus").build();
    let (stranger_cert, stranger_key) = stranger.write_to(dir.path());
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n  client_allowed_sans: [prometheus]\n",
        p.cert_file.display(),
        p.key_file.display(),
        clients_file.display(),
    );
    let lk = start(dir, &web).await;
    let ca = p.ca_file.to_str().unwrap().to_owned();
    let r = resolve(lk.addr);
    let base = ["--cacert", ca.as_str(), "--resolve", r.as_str()];
    let with_cert = |cert: &Path, key: &Path| {
        let mut a: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        a.extend([
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ]);
        a
    };
    let run = async |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args, &https(lk.addr, "/-/healthy")).await
    };
    let ok = run(with_cert(&good_cert, &good_key)).await;
    assert_eq!((ok.exit, ok.status), (0, 200), "{ok:?}");
    let none = run(base.iter().map(|s| s.to_string()).collect()).await;
    assert_ne!(none.exit, 0, "no client certificate: {none:?}");
    assert_eq!(none.status, 0);
    assert!(
        none.stderr.contains("certificate required"),
        "{}",
        none.stderr
    );
    let strange = run(with_cert(&stranger_cert, &stranger_key)).await;
    assert_ne!(
        strange.exit, 0,
        "a certificate from another CA: {strange:?}"
    );
    assert!(strange.stderr.contains("unknown ca"), "{}", strange.stderr);
    let san = run(with_cert(&wrong_san_cert, &wrong_san_key)).await;
    assert_ne!(san.exit, 0, "a SAN not in client_allowed_sans: {san:?}");
}

#[tokio::test]
async fn client_certificates_when_requested_or_verified_if_given() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let clients = Ca::new("lookout web test client CA");
    let clients_file = clients.write_to(dir.path());
    let (good_cert, good_key) = clients
        .client_leaf("prometheus")
        .build()
        .write_to(dir.path());
    let (stranger_cert, stranger_key) = Ca::new("another CA")
        .client_leaf("prometheus")
        .build()
        .write_to(dir.path());
    let ca = p.ca_file.to_str().unwrap().to_owned();
    // (client_auth_type, no certificate, a certificate of `clients`, one of another CA)
    for (auth, none_ok, good_ok, stranger_ok) in [
        ("RequireAnyClientCert", false, true, true),
        ("RequestClientCert", true, true, true),
        ("VerifyClientCertIfGiven", true, true, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let web = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: {auth}\n  client_ca_file: {}\n",
            p.cert_file.display(),
            p.key_file.display(),
            clients_file.display(),
        );
        let lk = start(dir, &web).await;
        let r = resolve(lk.addr);
        let url = https(lk.addr, "/-/healthy");
        let base = ["--cacert", ca.as_str(), "--resolve", r.as_str()];
        let none = curl(&base, &url).await;
        assert_eq!(
            none.status == 200,
            none_ok,
            "{auth}, no certificate: {none:?}"
        );
        for (cert, key, ok, what) in [
            (
                &good_cert,
                &good_key,
                good_ok,
                "the client CA's certificate",
            ),
            (
                &stranger_cert,
                &stranger_key,
                stranger_ok,
                "another CA's certificate",
            ),
        ] {
            let (cert, key) = (cert.display().to_string(), key.display().to_string());
            let a = curl(
                &[&base[..], &["--cert", &cert, "--key", &key]].concat(),
                &url,
            )
            .await;
            assert_eq!(a.status == 200, ok, "{auth}, {what}: {a:?}");
        }
    }
}

/// What rustls cannot honour is left out, and the rest still works: a list of only CBC suites
/// serves TLS 1.3 alone; curve_preferences restricts the key exchange to the listed curves.
#[tokio::test]
async fn cipher_suites_and_curves_rustls_lacks_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA]\n  curve_preferences: [CurveP521, CurveP384]\n",
        p.cert_file.display(),
        p.key_file.display(),
    );
    let lk = start(dir, &web).await;
    let ca = p.ca_file.to_str().unwrap().to_owned();
    let r = resolve(lk.addr);
    let url = https(lk.addr, "/-/healthy");
    let base = ["--cacert", ca.as_str(), "--resolve", r.as_str()];
    let tls12 = curl(&[&base[..], &["--tls-max", "1.2"]].concat(), &url).await;
    assert_eq!(tls12.status, 0, "no TLS 1.2 suite is left: {tls12:?}");
    let p384 = curl(&[&base[..], &["--curves", "P-384"]].concat(), &url).await;
    assert_eq!(p384.status, 200, "{p384:?}");
    let x25519 = curl(&[&base[..], &["--curves", "X25519"]].concat(), &url).await;
    assert_eq!(
        x25519.status, 0,
        "X25519 is not in curve_preferences: {x25519:?}"
    );
}

/// The leaf certificate lookout presents to a new TLS connection.
async fn served_leaf(addr: SocketAddr, ca: &Ca) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().into()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake with lookout");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
        p.cert_file.display(),
        p.key_file.display()
    );
    let lk = start(dir, &web).await;
    assert_eq!(served_leaf(lk.addr, &p.ca).await, p.leaf.der);
    // A connection kept open keeps its certificate; the next one gets the new pair, as with
    // exporter-toolkit, which reads the files at every handshake.
    let next = p.ca.leaf(&["localhost", "127.0.0.1"]).serial(2).build();
    std::fs::write(&p.key_file, &next.key_pem).unwrap();
    std::fs::write(&p.cert_file, &next.chain_pem).unwrap();
    assert_eq!(served_leaf(lk.addr, &p.ca).await, next.der);
    // A half-written pair (new certificate, old key) fails the handshake, and lookout serves
    // again as soon as the pair matches.
    let third = p.ca.leaf(&["localhost"]).serial(3).build();
    std::fs::write(&p.cert_file, &third.chain_pem).unwrap();
    let tcp = tokio::net::TcpStream::connect(lk.addr).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.ca.der().into()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let failed = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await;
    assert!(failed.is_err(), "a mismatched pair cannot be served");
    std::fs::write(&p.key_file, &third.key_pem).unwrap();
    assert_eq!(served_leaf(lk.addr, &p.ca).await, third.der);
}

#[tokio::test]
async fn users_and_headers_are_reread_and_a_broken_file_answers_500() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    let lk = start(
        dir,
        &format!("basic_auth_users:\n  alice: {}\n", hash("one")),
    )
    .await;
    assert!(!lk.app.tls, "no tls_server_config: plain HTTP");
    let basic = |user: &str, password: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let get =
        async |auth: &str| request(lk.addr, "GET", "/-/healthy", &[("Authorization", auth)]).await;
    assert_eq!(get(&basic("alice", "one")).await.status, 200);
    std::fs::write(
        &path,
        format!(
            "basic_auth_users:\n  alice: {}\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
            hash("two")
        ),
    )
    .unwrap();
    assert_eq!(
        get(&basic("alice", "one")).await.status,
        401,
        "the old password"
    );
    let a = get(&basic("alice", "two")).await;
    assert_eq!(a.status, 200, "the new password, no restart");
    std::fs::write(&path, "basic_auth_users: [not, a, map]\n").unwrap();
    let a = get(&basic("alice", "two")).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (500, "Internal Server Error\n")
    );
    std::fs::write(
        &path,
        format!("basic_auth_users:\n  alice: {}\n", hash("two")),
    )
    .unwrap();
    assert_eq!(get(&basic("alice", "two")).await.status, 200, "fixed again");
}

#[tokio::test]
async fn the_rate_limit_answers_429_past_the_burst() {
    let dir = tempfile::tempdir().unwrap();
    // One token an hour: after the burst of 2, no test run lives long enough for another.
    let lk = start(dir, "rate_limit:\n  interval: 1h\n  burst: 2\n").await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(lk.get("/-/healthy").await.status);
        }
        v
    };
    assert_eq!(statuses, [200, 200, 429, 429]);
    let a = lk.get("/metrics").await;
    assert_eq!((a.status, a.body.as_str()), (429, "Too Many Requests\n"));
}

#[tokio::test]
async fn several_listen_addresses_serve_the_same_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let lk = Lookout::start_with_flags(dir, CONFIG, &["--web.listen-address", "127.0.0.2:0"]).await;
    assert_eq!(lk.app.local_addrs.len(), 2, "{:?}", lk.app.local_addrs);
    for addr in &lk.app.local_addrs {
        let a = request(*addr, "GET", "/-/healthy", &[]).await;
        assert_eq!(a.status, 200, "{addr}");
    }
    assert_eq!(lk.app.local_addrs[1].ip().to_string(), "127.0.0.2");
}

/// `lookout --config.check --web.config.file FILE` and a start with FILE: both exit 1 naming
/// the file, line and field.
#[test]
fn bad_web_config_files_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d);
    let other = Ca::new("other").leaf(&["localhost"]).build();
    let (other_cert, _) = other.write_to(d);
    std::fs::write(d.join("lookout.yml"), CONFIG).unwrap();
    let (cert, key) = (p.cert_file.display(), p.key_file.display());
    let cases: Vec<(String, String, &str, &str)> = vec![
        (
            "unknown-field".into(),
            format!(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  cert_filse: x\n"
            ),
            ":4:",
            "unknown field `cert_filse`",
        ),
        (
            "cipher".into(),
            format!(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  cipher_suites:\n    - TLS_RSA_WITH_RC4_128_SHA\n"
            ),
            ":5:",
            "field tls_server_config.cipher_suites[0]: unknown cipher suite \"TLS_RSA_WITH_RC4_128_SHA\"",
        ),
        (
            "missing-cert".into(),
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {key}\n",
                d.join("nope.pem").display()
            ),
            ":2:",
            "field tls_server_config.cert_file: cannot read",
        ),
        (
            "mismatch".into(),
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {key}\n",
                other_cert.display()
            ),
            ":3:",
            "field tls_server_config.key_file: the private key in",
        ),
        (
            "ca-without-auth".into(),
            format!(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_ca_file: {}\n",
                p.ca_file.display()
            ),
            ":4:",
            "field tls_server_config.client_ca_file: a client CA is configured but client_auth_type is NoClientCert",
        ),
        (
            "no-suite-no-version".into(),
            format!(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  max_version: TLS12\n  cipher_suites: [TLS_RSA_WITH_AES_128_GCM_SHA256]\n"
            ),
            ":5:",
            "field tls_server_config.cipher_suites: none of these TLS 1.2 cipher suites is implemented by rustls",
        ),
        (
            "p521-only".into(),
            format!(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  curve_preferences: [CurveP521]\n"
            ),
            ":4:",
            "field tls_server_config.curve_preferences: no curve lookout implements is left",
        ),
        (
            "hash".into(),
            "basic_auth_users:\n  alice: hunter2\n".into(),
            ":2:",
            "field basic_auth_users.alice: too short to be a bcrypt hash",
        ),
        (
            "header".into(),
            "http_server_config:\n  headers:\n    X-Frame-Options: allowall\n".into(),
            ":3:",
            "field http_server_config.headers.X-Frame-Options: invalid value \"allowall\"",
        ),
    ];
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lookout"))
            .args(args)
            .output()
            .expect("run lookout");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let config = d.join("lookout.yml");
    let config = config.to_str().unwrap();
    for (name, text, line, message) in &cases {
        let file = d.join(format!("{name}.yml"));
        std::fs::write(&file, text).unwrap();
        let file = file.to_str().unwrap();
        let (code, out) = run(&[
            "--config.check",
            "--config.file",
            config,
            "--web.config.file",
            file,
        ]);
        assert_eq!(code, Some(1), "{name}: {out}");
        assert!(
            out.contains(&format!("{file}{line}")),
            "{name}: no {file}{line} in: {out}"
        );
        assert!(out.contains(message), "{name}: no {message:?} in: {out}");
    }
    // Starting with a bad file fails the same way, before anything listens.
    let file = d.join("hash.yml");
    let storage = d.join("data");
    let (code, out) = run(&[
        "--config.file",
        config,
        "--web.config.file",
        file.to_str().unwrap(),
        "--web.listen-address",
        "127.0.0.1:0",
        "--storage.path",
        storage.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("basic_auth_users.alice"), "{out}");
    // A good one passes the check.
    let good = d.join("good.yml");
    std::fs::write(
        &good,
        format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\nbasic_auth_users:\n  alice: {}\n", hash("x")),
    )
    .unwrap();
    let (code, out) = run(&[
        "--config.check",
        "--config.file",
        config,
        "--web.config.file",
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Web config file is ok"), "{out}");
}

/// Polls `f` until it returns `Some`, at most a minute (a guard against hangs, not a timing
/// assertion), then panics with `context`.
async fn eventually<T>(
    what: &str,
    mut f: impl AsyncFnMut() -> Option<T>,
    context: impl AsyncFn() -> String,
) -> T {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("not reached within a minute: {what}\n{}", context().await);
}

#[tokio::test]
async fn prometheus_scrapes_probe_and_metrics_through_tls_and_basic_auth() {
    let test = "prometheus_scrapes_probe_and_metrics_through_tls_and_basic_auth";
    let Some(prometheus) =
        daemon::binary("prometheus", &["/usr/bin/prometheus"], "prometheus", test)
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let clients = Ca::new("lookout web test client CA");
    let clients_file = clients.write_to(dir.path());
    let (client_cert, client_key) = clients
        .client_leaf("prometheus")
        .build()
        .write_to(dir.path());
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n\
         basic_auth_users:\n  prometheus: {}\n",
        p.cert_file.display(),
        p.key_file.display(),
        clients_file.display(),
        hash("scrape-secret"),
    );
    let prom_dir = tempfile::tempdir().unwrap();
    let password_file = prom_dir.path().join("password");
    std::fs::write(&password_file, "scrape-secret").unwrap();
    let lk = start(dir, &web).await;
    let target = HttpTarget::new().route("/", Route::ok("hi")).start().await;
    let tls_config = format!(
        "    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n      server_name: localhost\n",
        p.ca_file.display(),
        client_cert.display(),
        client_key.display()
    );
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: blackbox\n    scheme: https\n    metrics_path: /probe\n    params:\n      module: [http_2xx]\n      target: ['{target}']\n\
             {tls_config}    basic_auth:\n      username: prometheus\n      password_file: {password}\n    static_configs: [{{targets: ['{lookout}']}}]\n\
             \x20 - job_name: lookout\n    scheme: https\n\
             {tls_config}    basic_auth:\n      username: prometheus\n      password_file: {password}\n    static_configs: [{{targets: ['{lookout}']}}]\n\
             \x20 - job_name: wrong-password\n    scheme: https\n\
             {tls_config}    basic_auth:\n      username: prometheus\n      password: guessed\n    static_configs: [{{targets: ['{lookout}']}}]\n",
            target = target.url("/"),
            password = password_file.display(),
            lookout = lk.addr,
        ),
    )
    .unwrap();
    let data = prom_dir.path().join("data");
    let prom = Daemon::start("prometheus", prom_dir.path(), 1, |ports| {
        let mut cmd = Command::new(&prometheus);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", ports[0]));
        cmd
    });
    let prom_addr: SocketAddr = prom.target().parse().unwrap();
    // Prometheus answers 503 until it is ready: that reads as "nothing yet".
    let targets = async || {
        let a = request(prom_addr, "GET", "/api/v1/targets", &[]).await;
        serde_json::from_str::<Value>(&a.body).unwrap_or(Value::Null)
    };
    let health = async |job: &str| -> Option<(String, String)> {
        let t = targets().await;
        t["data"]["activeTargets"]
            .as_array()?
            .iter()
            .find(|t| t["labels"]["job"] == job)
            .map(|t| {
                (
                    t["health"].as_str().unwrap_or("").to_owned(),
                    t["lastError"].as_str().unwrap_or("").to_owned(),
                )
            })
    };
    for job in ["blackbox", "lookout"] {
        eventually(
            &format!("Prometheus scrapes job {job} through TLS and basic auth"),
            async || health(job).await.filter(|(h, _)| h == "up"),
            async || format!("{:#}", targets().await),
        )
        .await;
    }
    let refused = eventually(
        "Prometheus is refused with a wrong password",
        async || health("wrong-password").await.filter(|(h, _)| h == "down"),
        async || format!("{:#}", targets().await),
    )
    .await;
    assert!(refused.1.contains("401"), "{refused:?}");
    let success = eventually(
        "probe_success from the TLS scrape",
        async || {
            let path = format!(
                "/api/v1/query?query={}",
                q("probe_success{job=\"blackbox\"}")
            );
            let v: Value = serde_json::from_str(&request(prom_addr, "GET", &path, &[]).await.body)
                .unwrap_or(Value::Null);
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_owned)
        },
        async || format!("{:#}", targets().await),
    )
    .await;
    assert_eq!(success, "1");
    drop(prom);
}
