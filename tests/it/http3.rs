//! `enable_http3` (blackbox 0.28) against an in-process HTTP/3 server (quinn and h3 with an
//! rcgen certificate) on loopback: the version, TLS facts and phases of a good probe, a
//! converted `http://` target, `valid_http_versions`, and a server that does not answer QUIC.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::support::certs::Ca;
use crate::support::lookout::Lookout;

/// An HTTP/3 server for `leaf` answering every request 200 with "hello over h3" (404 for
/// `/missing`); returns its address and the requests' method, path and headers it saw.
async fn server(leaf: &crate::support::certs::Leaf) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let (chain, key) = leaf.rustls_identity();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok(mut h3conn) =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3conn.accept().await {
                    let Ok((req, mut stream)) = resolver.resolve_request().await else {
                        continue;
                    };
                    {
                        let mut l = log.lock().unwrap();
                        l.push(format!("{} {}", req.method(), req.uri()));
                        for (k, v) in req.headers() {
                            l.push(format!("{k}: {}", v.to_str().unwrap_or("?")));
                        }
                    }
                    let status = if req.uri().path() == "/missing" {
                        404
                    } else {
                        200
                    };
                    let resp = http::Response::builder()
                        .status(status)
                        .header("content-length", "13")
                        .body(())
                        .unwrap();
                    let _ = stream.send_response(resp).await;
                    let _ = stream.send_data(Bytes::from_static(b"hello over h3")).await;
                    let _ = stream.finish().await;
                }
            });
        }
    });
    (addr, seen)
}

fn modules(ca_file: &std::path::Path) -> String {
    format!(
        "modules:
  h3:
    prober: http
    timeout: 5s
    http:
      enable_http3: true
      enable_http2: false
      valid_http_versions: [HTTP/3.0]
      fail_if_body_not_matches_regexp: [hello]
      headers:
        X-Probe: lookout
      tls_config:
        ca_file: {ca}
  h3_any:
    prober: http
    timeout: 2s
    http:
      enable_http3: true
      enable_http2: false
      tls_config:
        ca_file: {ca}
  h3_wants_h11:
    prober: http
    timeout: 5s
    http:
      enable_http3: true
      enable_http2: false
      valid_http_versions: [HTTP/3.0]
      valid_status_codes: [404]
      tls_config:
        ca_file: {ca}
",
        ca = ca_file.display()
    )
}

#[tokio::test]
async fn a_probe_over_http3_reports_version_tls_and_phases() {
    let ca = Ca::new("lookout h3 CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]).build();
    let (addr, seen) = server(&leaf).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let lk = Lookout::start_in(dir, &modules(&ca_file)).await;

    let s = lk
        .probe("h3", &format!("https://localhost:{}/health", addr.port()))
        .await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_http_version"), 3.0);
    assert_eq!(s.value("probe_http_status_code"), 200.0);
    assert_eq!(s.value("probe_http_content_length"), 13.0);
    assert_eq!(s.value("probe_http_uncompressed_body_length"), 13.0);
    assert_eq!(s.value("probe_http_ssl"), 1.0);
    assert_eq!(s.value("probe_failed_due_to_regex"), 0.0);
    assert_eq!(
        s.value("probe_ssl_earliest_cert_expiry"),
        leaf.not_after as f64
    );
    assert_eq!(
        s.series("probe_tls_version_info")[0].labels["version"],
        "TLS 1.3"
    );
    assert_eq!(
        s.series("probe_tls_cipher_info")[0].labels["cipher"],
        "TLS_AES_128_GCM_SHA256"
    );
    let phase = |p: &str| {
        s.get_with("probe_http_duration_seconds", &[("phase", p)])
            .unwrap_or_else(|| panic!("{p}: {}", s.text))
    };
    // The handshake is both phases, as quic-go reports it under blackbox.
    assert_eq!(phase("connect"), phase("tls"));
    assert!(phase("tls") > 0.0, "{}", s.text);
    assert!(phase("processing") > 0.0, "{}", s.text);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&format!("GET https://localhost:{}/health", addr.port())),
        "{seen:?}"
    );
    assert!(seen.contains(&"x-probe: lookout".to_owned()), "{seen:?}");

    // http:// is probed as https://, as blackbox converts it.
    let s = lk
        .probe("h3", &format!("http://localhost:{}/", addr.port()))
        .await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_http_ssl"), 1.0);

    // A status the module expects, still over HTTP/3.
    let s = lk
        .probe(
            "h3_wants_h11",
            &format!("https://127.0.0.1:{}/missing", addr.port()),
        )
        .await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_http_status_code"), 404.0);
}

#[tokio::test]
async fn a_port_without_quic_fails_the_probe() {
    let ca = Ca::new("lookout h3 CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let lk = Lookout::start_in(dir, &modules(&ca_file)).await;
    // A UDP port nobody answers on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let s = lk
        .probe("h3_any", &format!("https://127.0.0.1:{port}/"))
        .await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert_eq!(s.value("probe_http_status_code"), 0.0);
    drop(silent);
    // A closed port (its refusal is not seen: the socket is not connected) fails the same way,
    // and lookout goes on serving.
    let s = lk
        .probe("h3_any", &format!("https://127.0.0.1:{port}/"))
        .await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert_eq!(lk.get("/-/healthy").await.status, 200);
}
