//! The binary end to end, and the in-process app's endpoints.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::http_target::{HttpTarget, Route};
use crate::support::lookout::{Lookout, PROMETHEUS_ACCEPT, q, request};
use crate::support::samples::Samples;

const CONFIG: &str = "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n  oauth:\n    prober: http\n    http:\n      oauth2:\n        client_id: x\n        token_url: http://127.0.0.1:1/token\n";

struct Binary {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Binary {
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

async fn start_binary(config: &std::path::Path) -> Binary {
    let port = free_port();
    let storage = config.with_file_name("data");
    let child = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args([
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            &format!("127.0.0.1:{port}"),
            "--storage.path",
            storage.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lookout");
    let bin = Binary {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(bin.addr).await.is_ok() {
            return bin;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("lookout did not start listening on {}", bin.addr);
}

#[tokio::test]
async fn binary_answers_probe_with_blackbox_families() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lookout.yml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let bin = start_binary(&cfg).await;
    let target = HttpTarget::new().route("/", Route::ok("hi")).start().await;
    let a = request(
        bin.addr,
        "GET",
        &format!("/probe?target={}", q(&target.url("/"))),
        &[],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type, "text/plain; version=0.0.4; charset=utf-8");
    let s = Samples::parse(&a.body);
    assert_eq!(s.value("probe_success"), 1.0);
    let want = [
        "probe_dns_lookup_time_seconds",
        "probe_duration_seconds",
        "probe_failed_due_to_regex",
        "probe_http_content_length",
        "probe_http_duration_seconds",
        "probe_http_redirects",
        "probe_http_ssl",
        "probe_http_status_code",
        "probe_http_uncompressed_body_length",
        "probe_http_version",
        "probe_ip_addr_hash",
        "probe_ip_protocol",
        "probe_success",
    ];
    assert_eq!(s.families(), want);
    assert!(s.types.values().all(|t| t == "gauge"));

    // The binary's own metrics carry blackbox's names too.
    let m = request(bin.addr, "GET", "/metrics", &[]).await;
    let s = Samples::parse(&m.body);
    assert_eq!(
        s.value("blackbox_exporter_config_last_reload_successful"),
        1.0
    );
    assert!(s.value("blackbox_exporter_config_last_reload_success_timestamp_seconds") > 1e9);
    assert_eq!(s.types["blackbox_module_unknown_total"], "counter");
    assert_eq!(
        s.get_with(
            "lookout_probe_requests_total",
            &[("module", "http_2xx"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert!(s.value("process_resident_memory_bytes") > 0.0);
}

#[tokio::test]
async fn bad_requests_get_blackbox_statuses() {
    let lk = Lookout::start(CONFIG).await;
    let a = lk.get("/probe?module=http_2xx").await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (400, "Target parameter is missing\n")
    );
    let a = lk.get("/probe?module=nope&target=x").await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (400, "Unknown module \"nope\"\n")
    );
    let a = request(
        lk.addr,
        "GET",
        "/probe?target=x",
        &[("X-Prometheus-Scrape-Timeout-Seconds", "abc")],
    )
    .await;
    assert_eq!(a.status, 500);
    assert!(
        a.body
            .starts_with("Failed to parse timeout from Prometheus header"),
        "{}",
        a.body
    );
    let m = Samples::parse(&lk.get("/metrics").await.body);
    assert_eq!(m.value("blackbox_module_unknown_total"), 1.0);
    // A module whose oauth2 token endpoint refuses connections fails its probes, saying why.
    let s = lk.probe("oauth", "http://127.0.0.1:1/").await;
    assert_eq!(s.value("probe_success"), 0.0);
    let d = lk.debug("oauth", "http://127.0.0.1:1/").await;
    assert!(
        d.contains("oauth2 token request to http://127.0.0.1:1/token"),
        "{d}"
    );
}

#[tokio::test]
async fn scrape_timeout_header_caps_the_probe() {
    let target = HttpTarget::new()
        .route("/", Route::stall_headers(Duration::from_secs(30)))
        .start()
        .await;
    let lk = Lookout::start(CONFIG).await;
    let s = lk
        .probe_with(
            "http_2xx",
            &target.url("/"),
            &[("X-Prometheus-Scrape-Timeout-Seconds", "1.5")],
        )
        .await;
    assert_eq!(s.value("probe_success"), 0.0);
    // 1.5 s minus the 0.5 s offset: the probe ends long before the 5 s module timeout.
    assert!(s.value("probe_duration_seconds") < 5.0, "{}", s.text);
}

#[tokio::test]
async fn openmetrics_when_enabled_and_asked() {
    let dir = tempfile::tempdir().unwrap();
    let lk = Lookout::start_with_flags(dir, CONFIG, &["--web.enable-openmetrics"]).await;
    for path in ["/metrics", "/probe?module=http_2xx&target=127.0.0.1:1"] {
        let a = request(lk.addr, "GET", path, &[("Accept", PROMETHEUS_ACCEPT)]).await;
        assert!(
            a.content_type.starts_with("application/openmetrics-text"),
            "{path}: {}",
            a.content_type
        );
        assert!(a.body.ends_with("# EOF\n"), "{path}: {}", a.body);
    }
    let a = request(lk.addr, "GET", "/metrics", &[]).await;
    assert!(
        a.body.contains("# TYPE blackbox_module_unknown counter"),
        "{}",
        a.body
    );
    // A client that does not list OpenMetrics still gets text.
    let a = request(lk.addr, "GET", "/metrics", &[("Accept", "text/plain")]).await;
    assert_eq!(a.content_type, "text/plain; version=0.0.4; charset=utf-8");
}

#[tokio::test]
async fn health_config_page_and_logs() {
    let lk = Lookout::start(
        "modules:\n  http_2xx:\n    prober: http\n    http:\n      bearer_token: very-secret\n",
    )
    .await;
    assert_eq!(lk.get("/-/healthy").await.body, "Healthy");
    let c = lk.get("/config").await.body;
    assert!(
        c.contains("bearer_token: <secret>") && !c.contains("very-secret"),
        "{c}"
    );
    lk.probe("http_2xx", "http://127.0.0.1:1/").await;
    let page = lk.get("/").await.body;
    assert!(
        page.contains("logs?id=0") && page.contains("http://127.0.0.1:1/"),
        "{page}"
    );
    let log = lk.get("/logs?id=0").await;
    assert_eq!(log.status, 200);
    assert!(log.body.starts_with("Logs for the probe:"), "{}", log.body);
    assert_eq!(lk.get("/logs?id=99").await.status, 404);

    // blackbox 0.25's `/logs?target=…&module=…`, with its answers to bad requests.
    let t = q("http://127.0.0.1:1/");
    let by_target = lk.get(&format!("/logs?target={t}")).await;
    assert_eq!(by_target.status, 200);
    assert_eq!(by_target.body, log.body);
    assert_eq!(
        lk.get(&format!("/logs?target={t}&module=http_2xx"))
            .await
            .status,
        200
    );
    for (path, status, body) in [
        (
            format!("/logs?target={t}&module=other"),
            404,
            "Probe target not found\n",
        ),
        (
            format!("/logs?target={}", q("http://127.0.0.1:2/")),
            404,
            "Probe target not found\n",
        ),
        (
            format!("/logs?id=0&target={t}"),
            400,
            "Probe id and target can't be defined at the same time\n",
        ),
        (
            "/logs".to_owned(),
            400,
            "Probe id or target must be defined as http query parameters\n",
        ),
        (
            "/logs?id=x".to_owned(),
            400,
            "Probe id or target must be defined as http query parameters\n",
        ),
        (
            "/logs?id=0&module=http_2xx".to_owned(),
            400,
            "Probe module filter only works in conjunction with target parameter\n",
        ),
    ] {
        let a = lk.get(&path).await;
        assert_eq!((a.status, a.body.as_str()), (status, body), "{path}");
    }
}

#[tokio::test]
async fn logs_by_target_find_a_scheduled_target_by_name_or_address() {
    let lk = Lookout::start(
        "modules:\n  tcp:\n    prober: tcp\n    timeout: 1s\ntargets:\n  - {name: db, module: tcp, target: '127.0.0.1:1', interval: 1s}\n",
    )
    .await;
    let mut found = None;
    for _ in 0..100 {
        let a = lk.get("/logs?target=db").await;
        if a.status == 200 {
            found = Some(a.body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = found.expect("the scheduled target's probe is in /logs");
    assert!(body.starts_with("Logs for the probe:"), "{body}");
    let a = lk.get("/logs?target=127.0.0.1:1&module=tcp").await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn reload_keeps_the_old_config_on_error() {
    let lk = Lookout::start(CONFIG).await;
    std::fs::write(
        &lk.config_path,
        "modules:\n  broken:\n    prober: http\n    bogus: 1\n",
    )
    .unwrap();
    let a = request(lk.addr, "POST", "/-/reload", &[]).await;
    assert_eq!(a.status, 500);
    assert!(a.body.contains("unknown field `bogus`"), "{}", a.body);
    let m = Samples::parse(&lk.get("/metrics").await.body);
    assert_eq!(
        m.value("blackbox_exporter_config_last_reload_successful"),
        0.0
    );
    // Still serving the old modules.
    assert_eq!(
        lk.get("/probe?module=http_2xx&target=http://127.0.0.1:1/")
            .await
            .status,
        200
    );
    std::fs::write(&lk.config_path, "modules:\n  fresh:\n    prober: http\n").unwrap();
    assert_eq!(request(lk.addr, "POST", "/-/reload", &[]).await.status, 200);
    let m = Samples::parse(&lk.get("/metrics").await.body);
    assert_eq!(
        m.value("blackbox_exporter_config_last_reload_successful"),
        1.0
    );
    assert_eq!(lk.get("/probe?module=http_2xx&target=x").await.status, 400);
    assert_eq!(
        lk.get("/probe?module=fresh&target=http://127.0.0.1:1/")
            .await
            .status,
        200
    );
    assert_eq!(lk.get("/-/reload").await.status, 405);
}

#[tokio::test]
async fn sighup_reloads_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lookout.yml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let bin = start_binary(&cfg).await;
    std::fs::write(&cfg, "modules:\n  after_hup:\n    prober: http\n").unwrap();
    let pid = bin.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut status = 0;
    for _ in 0..100 {
        status = request(
            bin.addr,
            "GET",
            "/probe?module=after_hup&target=http://127.0.0.1:1/",
            &[],
        )
        .await
        .status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "module from the reloaded file never appeared");
}

#[test]
fn config_check_exit_codes() {
    let ok = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["--config.check", "--config.file", "config/lookout.yml"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args([
            "--config.check",
            "--config.file",
            "tests/testdata/config/invalid/unknown_field.yml",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("unknown_field.yml:5:7: module \"http_2xx\": field modules.http_2xx.http"),
        "{stderr}"
    );
}

/// A `/probe` client that hangs up mid-probe cancels the probe: its connection to the target is
/// closed then, not when the module's timeout (60 s here) runs out, as blackbox's request context
/// does.
#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_probe() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A target that accepts, says nothing, and reports when its peer closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (accepted_tx, accepted) = tokio::sync::oneshot::channel::<()>();
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let _ = accepted_tx.send(());
        let mut buf = [0u8; 64];
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = closed_tx.send(());
    });

    let lk = Lookout::start(
        "modules:\n  silent:\n    prober: tcp\n    timeout: 60s\n    tcp:\n      query_response:\n        - expect: \"^never\"\n",
    )
    .await;
    let mut client = tokio::net::TcpStream::connect(lk.addr).await.unwrap();
    let req = format!(
        "GET /probe?module=silent&target={} HTTP/1.1\r\nhost: lookout\r\n\r\n",
        q(&target.to_string())
    );
    client.write_all(req.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), accepted)
        .await
        .expect("the probe connects to the target")
        .unwrap();
    drop(client);
    tokio::time::timeout(Duration::from_secs(30), closed)
        .await
        .expect(
            "the probe's connection closes when its client hangs up, long before its 60 s timeout",
        )
        .unwrap();
}

/// The config rewritten 100 times a second (every third version broken), each write followed
/// by a reload request while the file watcher also reloads, and `/probe` and `/metrics`
/// scraped all along: every scrape is answered, every probe of the module all versions share
/// succeeds, and the last good version is what serves after a broken one comes last.
#[tokio::test]
async fn a_reload_storm_loses_no_scrape_and_leaves_the_last_good_config_serving() {
    let target = HttpTarget::new().route("/", Route::ok("ok")).start().await;
    let version = |i: usize| {
        if i % 3 == 2 {
            format!("modules:\n  base:\n    prober: http\n    bogus_{i}: 1\n")
        } else {
            format!(
                "modules:\n  base:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n  m{i}:\n    prober: tcp\n"
            )
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let lk =
        Lookout::start_with_flags(dir, &version(0), &["--config.watch-interval", "10ms"]).await;
    let (addr, path) = (lk.addr, lk.config_path.clone());
    let writes = 300;
    let writer = tokio::spawn(async move {
        let tmp = path.with_extension("tmp");
        for i in 1..writes {
            // Whole files, as an editor or a ConfigMap update leaves them.
            std::fs::write(&tmp, version(i)).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            let a = request(addr, "POST", "/-/reload", &[]).await;
            assert!(
                a.status == 200 || a.status == 500,
                "reload answered {}",
                a.status
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let probe = format!("/probe?module=base&target={}", q(&target.url("/")));
    let (mut scrapes, mut probes) = (0, 0);
    while !writer.is_finished() {
        let m = lk.get("/metrics").await;
        assert_eq!(m.status, 200);
        assert!(
            m.body
                .contains("blackbox_exporter_config_last_reload_successful ")
        );
        scrapes += 1;
        let p = lk.get(&probe).await;
        assert_eq!(p.status, 200, "{}", p.body);
        assert_eq!(
            Samples::parse(&p.body).value("probe_success"),
            1.0,
            "{}",
            p.body
        );
        probes += 1;
    }
    writer.await.unwrap();
    assert!(
        scrapes > 10 && probes > 10,
        "{scrapes} scrapes, {probes} probes"
    );
    // The last write (299) is broken; 298 is the last good version.
    assert_eq!((writes - 1) % 3, 2);
    assert_eq!(request(addr, "POST", "/-/reload", &[]).await.status, 500);
    let m = Samples::parse(&lk.get("/metrics").await.body);
    assert_eq!(
        m.value("blackbox_exporter_config_last_reload_successful"),
        0.0
    );
    let last_good = format!("/probe?module=m{}&target=127.0.0.1:1", writes - 2);
    assert_eq!(lk.get(&last_good).await.status, 200);
    let older = format!("/probe?module=m{}&target=127.0.0.1:1", writes - 3);
    assert_eq!(lk.get(&older).await.status, 400);
}
