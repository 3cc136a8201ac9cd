//! `prober: websocket` against an in-process tokio-tungstenite server on loopback: the upgrade
//! with the configured headers and credentials, a dialogue with capture substitution, a
//! refused upgrade's status, and a message that does not match.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use crate::support::lookout::Lookout;

/// A server that greets with `greeting`, expects one message back and answers "Welcome" to
/// it; it refuses the upgrade with 403 for the path `/forbidden`. Returns its address and the
/// upgrade requests' headers and the messages it received.
async fn server(greeting: &'static str) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let hlog = log.clone();
                // The library's callback type: its error is an HTTP response.
                #[allow(clippy::result_large_err)]
                let callback =
                    move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                        for (k, v) in req.headers() {
                            hlog.lock()
                                .unwrap()
                                .push(format!("{k}: {}", v.to_str().unwrap_or("?")));
                        }
                        if req.uri().path() == "/forbidden" {
                            let mut r = ErrorResponse::new(Some("no".into()));
                            *r.status_mut() = http::StatusCode::FORBIDDEN;
                            return Err(r);
                        }
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                let _ = ws.send(Message::text(greeting)).await;
                if let Some(Ok(Message::Text(t))) = ws.next().await {
                    log.lock().unwrap().push(format!("message: {t}"));
                    let _ = ws.send(Message::text("Welcome")).await;
                }
                let _ = ws.next().await;
            });
        }
    });
    (addr, seen)
}

const MODULES: &str = "modules:
  ws:
    prober: websocket
    timeout: 5s
    websocket:
      preferred_ip_protocol: ip4
      http_config:
        basic_auth: {username: user, password: pass}
      headers:
        X-Some-Header: my_header
      query_response:
        - expect: '^Hello, (.+)$'
          send: 'Hello server, I am ${1}'
        - expect: '^Welcome'
  upgrade_only:
    prober: websocket
    timeout: 5s
    websocket:
      preferred_ip_protocol: ip4
";

#[tokio::test]
async fn a_dialogue_over_websocket_with_headers_and_credentials() {
    let (addr, seen) = server("Hello, probe").await;
    let lk = Lookout::start(MODULES).await;
    let s = lk.probe("ws", &format!("ws://{addr}/socket")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    assert_eq!(s.value("probe_websocket_status_code"), 101.0);
    assert_eq!(s.value("probe_websocket_connection_upgraded"), 1.0);
    assert_eq!(s.value("probe_websocket_failed_due_to_regex"), 0.0);
    for phase in ["resolve", "connect", "processing", "transfer"] {
        assert!(
            s.get_with("probe_websocket_duration_seconds", &[("phase", phase)])
                .is_some(),
            "{phase}: {}",
            s.text
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&"x-some-header: my_header".to_owned()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"authorization: Basic dXNlcjpwYXNz".to_owned()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"message: Hello server, I am probe".to_owned()),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_refused_upgrade_and_a_message_that_does_not_match_fail() {
    let (addr, _) = server("Goodbye").await;
    let lk = Lookout::start(MODULES).await;
    let s = lk
        .probe("upgrade_only", &format!("ws://{addr}/forbidden"))
        .await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert_eq!(s.value("probe_websocket_status_code"), 403.0, "{}", s.text);
    assert_eq!(s.value("probe_websocket_connection_upgraded"), 0.0);
    let s = lk.probe("upgrade_only", &format!("ws://{addr}/")).await;
    assert_eq!(s.value("probe_success"), 1.0, "{}", s.text);
    let s = lk.probe("ws", &format!("ws://{addr}/")).await;
    assert_eq!(s.value("probe_success"), 0.0, "{}", s.text);
    assert_eq!(s.value("probe_websocket_failed_due_to_regex"), 1.0);
    let d = lk.debug("ws", "http://127.0.0.1:1/").await;
    assert!(d.contains("malformed ws or wss URL"), "{d}");
}
