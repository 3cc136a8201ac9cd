//! The HTTP endpoints: the only module that knows routing. `/probe` lives in `server/probe.rs`,
//! the rest in `server/admin.rs`; `serve` is the accept loop (plain or TLS, one per listener),
//! with `--web.config.file`'s guard in front of every route.

mod admin;
mod probe;
pub use probe::Cache as ProbeCache;
pub mod recent;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::state::State;
use crate::web::{self, Web};

/// The router with every endpoint, under `state.prefix`.
pub fn router(state: Arc<State>) -> Router {
    let routes = Router::new()
        .route("/probe", get(probe::handle))
        .route("/metrics", get(admin::metrics))
        .route("/-/healthy", get(admin::healthy))
        .route(
            "/-/reload",
            post(admin::reload).get(admin::reload_needs_post),
        )
        .route("/config", get(admin::config))
        .route("/logs", get(admin::logs))
        .route("/api/v1/targets", get(admin::api_targets))
        .route("/api/v1/confirm", get(admin::confirm))
        .route("/api/v1/status", get(status::api))
        .route("/status", get(status::default_page))
        .route("/status/", get(status::default_page))
        .route("/status/target/{name}", get(status::target))
        .route("/status/{page}", get(status::page))
        .route("/badge/{name}/{kind}", get(status::badge))
        .route("/", get(admin::index))
        .with_state(state.clone());
    if state.prefix.is_empty() {
        routes
    } else {
        // As blackbox (and Prometheus): `/` itself, outside the prefix, redirects to the
        // external URL (or the prefix when none is given); other paths outside it are 404.
        let to = state
            .external_url
            .clone()
            .unwrap_or_else(|| format!("{}/", state.prefix));
        Router::new().nest(&state.prefix, routes).route(
            "/",
            get(move || async move {
                (
                    axum::http::StatusCode::FOUND,
                    [(axum::http::header::LOCATION, to)],
                )
            }),
        )
    }
}

/// Serves the endpoints on every listener until `shutdown` is cancelled; open requests (a
/// `/probe` still running) then get `grace` to finish before the connections are dropped.
/// With `web` (`--web.config.file`), every request passes its guard (`web::guard`: headers,
/// rate limit, basic auth) and, when it turns TLS on, every connection is TLS.
pub async fn serve(
    listeners: Vec<TcpListener>,
    state: Arc<State>,
    web: Option<Arc<Web>>,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let mut app = router(state);
    if let Some(w) = &web {
        app = app.layer(axum::middleware::from_fn_with_state(w.clone(), web::guard));
    }
    let connections = TaskTracker::new();
    let mut accepting = Vec::new();
    for listener in listeners {
        accepting.push(tokio::spawn(accept(
            listener,
            app.clone(),
            web.clone(),
            connections.clone(),
            shutdown.clone(),
        )));
    }
    for a in accepting {
        let _ = a.await;
    }
    connections.close();
    let _ = tokio::time::timeout(grace, connections.wait()).await;
    Ok(())
}

/// Accepts connections on `listener` until `shutdown`, each served on a task of its own.
async fn accept(
    listener: TcpListener,
    app: Router,
    web: Option<Arc<Web>>,
    connections: TaskTracker,
    shutdown: CancellationToken,
) {
    let tls = web.as_ref().is_some_and(|w| w.tls());
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    // exporter-toolkit's lines, one per listener.
    if tls {
        let http2 = web.as_ref().is_some_and(|w| w.http2());
        tracing::info!(address = %addr, http2, "TLS is enabled");
    } else {
        tracing::info!(address = %addr, http2 = false, "TLS is disabled");
    }
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Per-connection failures (the peer gave up) are nothing; running out of
                    // file descriptors is worth a pause rather than a busy loop.
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                    ) {
                        tracing::error!(err = %e, address = %addr, "Cannot accept a connection");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
        };
        let (app, web, stop) = (app.clone(), web.clone(), shutdown.clone());
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            match web.filter(|w| w.tls()) {
                None => connection(TokioIo::new(stream), app, peer, false, stop).await,
                Some(web) => {
                    if let Some(stream) = handshake(stream, peer, &web, &stop).await {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        connection(TokioIo::new(stream), app, peer, h2, stop).await;
                    }
                }
            }
        });
    }
}

/// What Go's server answers a plain HTTP request on a TLS port.
const HTTP_ON_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The TLS handshake of one connection, with the server configuration `web` builds for it
/// from the files as they are now. A plain HTTP request gets Go's 400 instead.
async fn handshake(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    web: &Web,
    stop: &CancellationToken,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 5];
    let n = tokio::select! {
        _ = stop.cancelled() => return None,
        n = stream.peek(&mut first) => n.ok()?,
    };
    if n > 0 && looks_like_http(&first[..n]) {
        use tokio::io::AsyncWriteExt as _;
        let _ = stream.write_all(HTTP_ON_TLS).await;
        linger_close(stream).await;
        return None;
    }
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = tokio::select! {
        _ = stop.cancelled() => return None,
        s = acceptor => match s {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %peer, err = %e, "TLS handshake error");
                return None;
            }
        },
    };
    let config = match web.server_config() {
        Ok(c) => {
            web.report(None);
            c
        }
        Err(e) => {
            web.report(Some(&e));
            return None;
        }
    };
    tokio::select! {
        _ = stop.cancelled() => None,
        s = start.into_stream(config).into_fallible() => match s {
            Ok(s) => Some(s),
            Err((e, io)) => {
                tracing::debug!(peer = %peer, err = %e, "TLS handshake error");
                // The alert (certificate required, protocol version, …) was sent; let the client
                // read it before the close.
                linger_close(io).await;
                None
            }
        },
    }
}

/// Closes a connection we refuse after a last word, first reading (for a moment, and a bounded
/// amount) what the client already sent: closing with unread data resets the connection, and
/// the client would see the reset instead of our answer.
async fn linger_close(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut sink = [0u8; 4096];
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    let _ = stream.shutdown().await;
}

/// Whether the first bytes of a connection are an HTTP request line (Go's test: the record
/// header reads as one of these methods).
fn looks_like_http(first: &[u8]) -> bool {
    [&b"GET /"[..], b"HEAD ", b"POST ", b"PUT /", b"OPTIO"]
        .iter()
        .any(|m| m.starts_with(first) || first.starts_with(m))
}

/// The peer of the connection a request came on (what `probe_limits` counts per client).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// Serves HTTP on one connection: HTTP/2 when TLS negotiated it, HTTP/1.1 otherwise (as Go's
/// server, which never speaks HTTP/2 over plain TCP). On `stop`, the connection finishes its
/// open requests and closes.
async fn connection<I>(
    io: TokioIo<I>,
    app: Router,
    peer: std::net::SocketAddr,
    h2: bool,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let builder = Builder::new(TokioExecutor::new());
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    // Each request carries its connection's peer.
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        let mut app = app.clone();
        async move { tower::Service::call(&mut app, req).await }
    });
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
