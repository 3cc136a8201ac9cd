use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::support::certs::Ca;
use crate::support::lookout::Lookout;

struct GrpcTarget {
    addr: std::net::SocketAddr,
    reporter: HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(tls: Option<&crate::support::certs::Leaf>) -> GrpcTarget {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("api.Orders", ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = Server::builder();
    if let Some(leaf) = tls {
        builder = builder
            .tls_config(
                ServerTlsConfig::new().identity(Identity::from_pem(&leaf.chain_pem, &leaf.key_pem)),
            )
            .unwrap();
    }
    let router = builder.add_service(service);
    let task = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    GrpcTarget {
        addr,
        reporter,
        task,
    }
}

const MODULES: &str = "modules:
  grpc:
    prober: grpc
    timeout: 5s
    grpc:
      preferred_ip_protocol: ip4
  orders:
    prober: grpc
    timeout: 5s
    grpc:
      service: api.Orders
  unknown_service:
    prober: grpc
    timeout: 5s
    grpc:
      service: api.Nope
";

#[tokio::test]
async fn health_check_follows_the_serving_status() {
    let target = start(None).await;
    let lk = Lookout::start(MODULES).await;
    let t = target.addr.to_string();
    let s = lk.probe("orders", &t).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_grpc_status_code"), 0.0);
    assert_eq!(s.value("probe_grpc_ssl"), 0.0);
    assert_eq!(
        s.get_with(
            "probe_grpc_healthcheck_response",
            &[("serving_status", "SERVING")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.get_with(
            "probe_grpc_healthcheck_response",
            &[("serving_status", "NOT_SERVING")]
        ),
        Some(0.0)
    );
    assert!(
        s.get_with("probe_grpc_duration_seconds", &[("phase", "check")])
            .is_some()
    );
    // The overall server status ("" service) is SERVING by default.
    assert_eq!(lk.probe("grpc", &t).await.value("probe_success"), 1.0);

    target
        .reporter
        .set_service_status("api.Orders", ServingStatus::NotServing)
        .await;
    let s = lk.probe("orders", &t).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert_eq!(
        s.get_with(
            "probe_grpc_healthcheck_response",
            &[("serving_status", "NOT_SERVING")]
        ),
        Some(1.0)
    );

    // An unknown service is NOT_FOUND (5), with no serving status.
    let s = lk.probe("unknown_service", &t).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert_eq!(s.value("probe_grpc_status_code"), 5.0);
    assert!(
        s.series("probe_grpc_healthcheck_response")
            .iter()
            .all(|x| x.value == 0.0),
        "{}",
        s.text
    );
}

#[tokio::test]
async fn a_closed_port_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("grpc", &format!("127.0.0.1:{port}")).await;
    assert_eq!(s.value("probe_success"), 0.0);
    assert_eq!(s.value("probe_grpc_status_code"), 14.0);
}

#[tokio::test]
async fn tls_health_check_records_certificate_metrics() {
    let ca = Ca::new("lookout test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]).build();
    let target = start(Some(&leaf)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_to(dir.path());
    let yaml = format!(
        "modules:\n  grpcs:\n    prober: grpc\n    timeout: 5s\n    grpc:\n      tls: true\n      tls_config:\n        ca_file: {}\n",
        ca_file.display()
    );
    let lk = Lookout::start_in(dir, &yaml).await;
    let s = lk.probe("grpcs", &target.addr.to_string()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_grpc_ssl"), 1.0);
    assert_eq!(
        s.value("probe_ssl_earliest_cert_expiry"),
        leaf.not_after as f64
    );
    assert_eq!(s.series("probe_tls_version_info").len(), 1);
}

/// blackbox 0.28's `grpc.metadata`: every key's values reach the server with the check (keys
/// as HTTP/2 carries them, lower-cased; a `-bin` key's values as bytes); a key that cannot be
/// sent is a config error naming it.
#[tokio::test]
async fn metadata_reaches_the_server_with_the_check() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<tonic::metadata::MetadataMap>>> = Arc::default();
    let (_reporter, service) = tonic_health::server::health_reporter();
    let record = seen.clone();
    let service = tonic::service::interceptor::InterceptedService::new(
        service,
        move |req: tonic::Request<()>| {
            record.lock().unwrap().push(req.metadata().clone());
            Ok(req)
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let lk = Lookout::start(
        "modules:
  md:
    prober: grpc
    timeout: 5s
    grpc:
      preferred_ip_protocol: ip4
      metadata:
        X-Api-Key: [secret-1]
        tenant: [a, b]
        trace-bin: [\"\\x01raw\"]
",
    )
    .await;
    let s = lk.probe("md", &addr.to_string()).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    let md = seen
        .lock()
        .unwrap()
        .pop()
        .expect("the server saw the check");
    assert_eq!(md.get("x-api-key").unwrap(), "secret-1");
    let tenants: Vec<_> = md
        .get_all("tenant")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(tenants, ["a", "b"]);
    assert_eq!(
        md.get_bin("trace-bin")
            .unwrap()
            .to_bytes()
            .unwrap()
            .as_ref(),
        b"\x01raw"
    );
    task.abort();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "modules:\n  md:\n    prober: grpc\n    grpc:\n      metadata:\n        'bad key': [x]\n",
    )
    .unwrap();
    let e = lookout::config::load(&file).unwrap_err().to_string();
    assert!(
        e.contains("metadata.bad key") && e.contains("invalid metadata key"),
        "{e}"
    );
}
