//! A lookout instance for tests: in-process (`Lookout::start`) on a free loopback port with a
//! config written to a temp dir, plus a small HTTP client for its endpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::samples::Samples;

/// A running in-process lookout.
pub struct Lookout {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub app: lookout::App,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A plain HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub headers: http::HeaderMap,
}

/// What Prometheus 2.42 (Debian's) sends as `Accept` on every scrape: OpenMetrics first.
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The headers Prometheus sends on every scrape (besides the scrape timeout, which tests set
/// where they mean it); `request` adds each one the caller does not set itself.
pub const PROMETHEUS_HEADERS: [(&str, &str); 3] = [
    ("Accept", PROMETHEUS_ACCEPT),
    ("Accept-Encoding", "gzip"),
    ("User-Agent", "Prometheus/2.42.0"),
];

/// Sends one HTTP/1.1 request to `addr` as Prometheus would (its headers unless `headers` sets
/// them) and reads the whole answer, gunzipping a gzip-encoded body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect to lookout");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    for (k, v) in PROMETHEUS_HEADERS {
        if !headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(k)) {
            req = req.header(k, v);
        }
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let answer_headers = resp.headers().clone();
    let gzipped = resp
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let body = if gzipped {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
            .expect("gzip body decodes");
        out
    } else {
        body.to_vec()
    };
    Answer {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
        headers: answer_headers,
    }
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Lookout {
    /// Starts lookout with `yaml` as its config (files the config names can go in `dir`).
    pub async fn start(yaml: &str) -> Lookout {
        let dir = tempfile::tempdir().unwrap();
        Lookout::start_in(dir, yaml).await
    }

    /// Starts lookout with `yaml`, written into `dir`.
    pub async fn start_in(dir: tempfile::TempDir, yaml: &str) -> Lookout {
        Lookout::start_with_flags(dir, yaml, &[]).await
    }

    /// Starts lookout with `yaml`, resolving target names through the DNS server at `dns`
    /// only (a test's own hickory server) instead of the system's resolver.
    pub async fn start_with_dns(yaml: &str, dns: SocketAddr) -> Lookout {
        let dir = tempfile::tempdir().unwrap();
        let resolver = lookout::probe::resolve::Resolver::with_server(dns);
        Lookout::start_full(dir, yaml, &[], Some(resolver)).await
    }

    /// `start_with_dns` with extra command-line flags.
    pub async fn start_with_dns_and_flags(yaml: &str, dns: SocketAddr, flags: &[&str]) -> Lookout {
        let dir = tempfile::tempdir().unwrap();
        let resolver = lookout::probe::resolve::Resolver::with_server(dns);
        Lookout::start_full(dir, yaml, flags, Some(resolver)).await
    }

    /// Starts lookout with `yaml`, written into `dir`, and extra command-line flags.
    pub async fn start_with_flags(dir: tempfile::TempDir, yaml: &str, flags: &[&str]) -> Lookout {
        Lookout::start_full(dir, yaml, flags, None).await
    }

    async fn start_full(
        dir: tempfile::TempDir,
        yaml: &str,
        flags: &[&str],
        resolver: Option<lookout::probe::resolve::Resolver>,
    ) -> Lookout {
        let config_path = dir.path().join("lookout.yml");
        std::fs::write(&config_path, yaml).unwrap();
        let storage = dir.path().join("data");
        let mut args = vec![
            "lookout",
            "--config.file",
            config_path.to_str().unwrap(),
            "--web.listen-address",
            "127.0.0.1:0",
            "--storage.path",
            storage.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        let cli = <lookout::cli::Cli as clap::Parser>::parse_from(args);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = lookout::App::start_with(&cli, resolver, async move {
            let _ = rx.await;
        })
        .await
        .expect("lookout starts");
        Lookout {
            addr: app.local_addr,
            dir,
            config_path,
            app,
            stop: Some(tx),
        }
    }

    /// GET `path` (with query) on this instance.
    pub async fn get(&self, path: &str) -> Answer {
        request(self.addr, "GET", path, &[]).await
    }

    /// Probes `target` with `module` and parses the answer (which must be a 200).
    pub async fn probe(&self, module: &str, target: &str) -> Samples {
        self.probe_with(module, target, &[]).await
    }

    /// Like `probe`, with request headers (e.g. the scrape timeout).
    pub async fn probe_with(
        &self,
        module: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Samples {
        let path = format!("/probe?module={}&target={}", q(module), q(target));
        let a = tokio::time::timeout(
            Duration::from_secs(60),
            request(self.addr, "GET", &path, headers),
        )
        .await
        .expect("probe answered within 60s");
        assert_eq!(a.status, 200, "probe answered {}: {}", a.status, a.body);
        assert_eq!(a.content_type, "text/plain; version=0.0.4; charset=utf-8");
        Samples::parse(&a.body)
    }

    /// The debug output of a probe.
    pub async fn debug(&self, module: &str, target: &str) -> String {
        let path = format!(
            "/probe?module={}&target={}&debug=true",
            q(module),
            q(target)
        );
        self.get(&path).await.body
    }
}

impl Drop for Lookout {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
