//! blackbox 0.24–0.28's flags, with its meaning: `--web.external-url`, `--log.prober`,
//! `--config.enable-auto-reload` / `--config.auto-reload-interval`, and a reload that finds
//! nothing changed being skipped.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::http_target::{HttpTarget, Route};
use crate::support::lookout::{Lookout, q, request};

/// `curl`'s view of one GET: status and the redirect target (a child process awaited on the
/// test's runtime, which also serves the in-process lookout curl talks to).
async fn curl_status_and_location(url: &str) -> (String, String) {
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            url,
        ])
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, location) = text.split_once(' ').unwrap_or((&text, ""));
    (code.to_owned(), location.to_owned())
}

#[tokio::test]
async fn the_external_urls_path_prefixes_every_endpoint_and_the_root_redirects_to_it() {
    let l = Lookout::start_with_flags(
        tempfile::tempdir().unwrap(),
        "modules:\n  tcp: {prober: tcp}\n",
        &["--web.external-url", "http://lookout.example.test/watch/"],
    )
    .await;
    assert_eq!(l.get("/watch/-/healthy").await.status, 200);
    assert_eq!(l.get("/-/healthy").await.status, 404, "outside the prefix");
    let (code, location) = curl_status_and_location(&format!("http://{}/", l.addr)).await;
    assert_eq!(code, "302");
    assert_eq!(location, "http://lookout.example.test/watch");
    // --web.route-prefix wins over the URL's path.
    let l = Lookout::start_with_flags(
        tempfile::tempdir().unwrap(),
        "modules:\n  tcp: {prober: tcp}\n",
        &[
            "--web.external-url",
            "http://lookout.example.test/watch/",
            "--web.route-prefix",
            "/",
        ],
    )
    .await;
    assert_eq!(l.get("/-/healthy").await.status, 200);
}

#[tokio::test]
async fn auto_reload_picks_up_a_change_without_the_watch_or_a_signal() {
    let target = HttpTarget::new().route("/", Route::ok("ok")).start().await;
    let l = Lookout::start_with_flags(
        tempfile::tempdir().unwrap(),
        "modules:\n  http_2xx: {prober: http}\n",
        &[
            "--config.watch=false",
            "--config.enable-auto-reload",
            "--config.auto-reload-interval",
            "1",
        ],
    )
    .await;
    std::fs::write(
        &l.config_path,
        format!(
            "modules:\n  http_2xx: {{prober: http}}\ntargets:\n  - {{name: web, module: http_2xx, target: \"{}\", interval: 60s}}\n",
            target.url("/")
        ),
    )
    .unwrap();
    // The target is probed at its phase within its 60 s interval: look for it in the API.
    let mut seen = false;
    for _ in 0..100 {
        if l.get("/api/v1/targets").await.body.contains("\"web\"") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen,
        "the auto-reloaded config's target never reached the scheduler"
    );
}

#[test]
fn an_unchanged_config_is_not_reloaded_but_a_changed_file_it_names_is() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "one\n").unwrap();
    let cfg = dir.path().join("lookout.yml");
    std::fs::write(
        &cfg,
        "modules:\n  m:\n    prober: http\n    http:\n      basic_auth: {username: u, password_file: password}\n",
    )
    .unwrap();
    let config = lookout::config::load(&cfg).unwrap();
    let files: Vec<_> = config
        .inputs
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(
        files,
        ["lookout.yml", "password"],
        "the load read the config and the file it names"
    );
    assert!(lookout::values::inputs_unchanged(&config.inputs));
    std::fs::write(&secret, "two\n").unwrap();
    assert!(
        !lookout::values::inputs_unchanged(&config.inputs),
        "a rotated password file is a change, though the config file is the same"
    );
}

/// `--log.prober` sets a probe's own lines apart from `--log.level`, on stderr and in its
/// debug output; without it, 0.23's behaviour (stderr at --log.level, debug output complete).
#[test]
fn log_prober_filters_probe_lines_on_stderr_and_in_debug_output() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let target = HttpTarget::new().route("/", Route::ok("ok")).start().await;
        let url = target.url("/");
        // (flags, a debug line on stderr?, a debug line in debug=true output?)
        let cases: &[(&[&str], bool, bool)] = &[
            (&[], false, true),
            (&["--log.prober", "debug"], true, true),
            (&["--log.prober", "warn"], false, false),
            (
                &["--log.level", "debug", "--log.prober", "warn"],
                false,
                false,
            ),
        ];
        for (flags, on_stderr, in_debug) in cases {
            let dir = tempfile::tempdir().unwrap();
            let cfg = dir.path().join("lookout.yml");
            std::fs::write(&cfg, "modules:\n  http_2xx: {prober: http}\n").unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log_path = dir.path().join("stderr.log");
            let mut child = Command::new(env!("CARGO_BIN_EXE_lookout"))
                .args([
                    "--config.file",
                    cfg.to_str().unwrap(),
                    "--web.listen-address",
                    &format!("127.0.0.1:{port}"),
                ])
                .args(*flags)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log_path).unwrap())
                .spawn()
                .unwrap();
            let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let debug = request(
                addr,
                "GET",
                &format!("/probe?module=http_2xx&target={}&debug=true", q(&url)),
                &[],
            )
            .await;
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&log_path).unwrap();
            let marker = "Resolving target address";
            assert!(
                debug.body.contains("probe_success 1"),
                "{flags:?}: {}",
                debug.body
            );
            assert_eq!(
                stderr.contains(marker),
                *on_stderr,
                "{flags:?} stderr:\n{stderr}"
            );
            assert_eq!(
                debug.body.contains(marker),
                *in_debug,
                "{flags:?} debug output:\n{}",
                debug.body
            );
        }
    });
}

/// `--web.systemd-socket` serves on the socket passed as systemd does (descriptor 3,
/// `LISTEN_FDS=1`, `LISTEN_PID` the server's own pid; `sh` sets them up and execs lookout, so
/// the pid is lookout's) and ignores `--web.listen-address`; without a passed socket it stops
/// with exporter-toolkit's error.
#[test]
fn systemd_socket_serves_on_the_passed_socket_and_fails_without_one() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("lookout.yml");
        std::fs::write(&cfg, "modules:\n  tcp: {prober: tcp}\n").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log_path = dir.path().join("stderr.log");
        // A listen address that cannot be bound: used, it would stop lookout.
        let args = [
            "--config.file",
            cfg.to_str().unwrap(),
            "--web.systemd-socket",
            "--web.listen-address",
            "256.0.0.1:1",
            "--storage.path=",
        ];
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$@" 3<&0 0</dev/null"#)
            .arg(env!("CARGO_BIN_EXE_lookout"))
            .args(args)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let mut healthy = None;
        for _ in 0..200 {
            let a = tokio::time::timeout(
                Duration::from_secs(2),
                request(addr, "GET", "/-/healthy", &[]),
            )
            .await;
            if let Ok(a) = a {
                healthy = Some(a);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        let stderr = std::fs::read_to_string(&log_path).unwrap();
        let healthy =
            healthy.unwrap_or_else(|| panic!("no answer on the passed socket:\n{stderr}"));
        assert_eq!((healthy.status, healthy.body.as_str()), (200, "Healthy"));
        assert!(
            stderr.contains("Listening on systemd activated listeners instead of port listeners.")
                && stderr.contains(&addr.to_string()),
            "{stderr}"
        );

        // No socket passed: exporter-toolkit's error, exit status 1.
        let out = Command::new(env!("CARGO_BIN_EXE_lookout"))
            .args(args)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("no socket activation file descriptors found"),
            "{stderr}"
        );
    });
}
