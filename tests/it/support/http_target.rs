//! In-process HTTP(S) targets and raw TCP listeners for probing tests.
//!
//! Every server binds to a loopback address only and runs on its own thread
//! with its own single-threaded tokio runtime. That keeps the servers
//! answering whatever the test does meanwhile (blocks a current-thread test
//! runtime, pauses tokio time, waits on a child process), and lets `Drop`
//! stop them deterministically: dropping a [`RunningTarget`] or
//! [`RawListener`] closes the listening socket and every open connection
//! before `drop` returns, so a later connect to the same address is refused.
//!
//! Typical use:
//!
//! ```ignore
//! let target = HttpTarget::new()
//!     .route("/", Route::status(200, "hello").header("x-a", "1"))
//!     .route("/old", Route::redirect(302, "{base}/"))
//!     .start()
//!     .await;
//! let url = target.url("/old");
//! // ... probe it ...
//! assert_eq!(target.hits("/"), 1);
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, LAST_MODIFIED, LOCATION};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::certs::{Ca, Leaf};

/// Error type of response bodies (hyper wants something boxable).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Response body type used by every route.
type Body = BoxBody<Bytes, BoxError>;

/// Placeholder replaced, in every header value of a route, by the running
/// server's own base URL (e.g. `http://127.0.0.1:41234`, no trailing slash).
pub const BASE_PLACEHOLDER: &str = "{base}";

/// Path key of the fallback route, used when no route matches the request path.
pub const FALLBACK: &str = "*";

/// `127.0.0.1:0`: an ephemeral port on IPv4 loopback.
pub fn loopback_v4() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `[::1]:0`: an ephemeral port on IPv6 loopback (check [`ipv6_loopback_available`]).
pub fn loopback_v6() -> SocketAddr {
    SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
}

/// Whether this machine can bind `[::1]`; IPv6 tests should skip when it cannot.
pub fn ipv6_loopback_available() -> bool {
    StdTcpListener::bind(loopback_v6()).is_ok()
}

/// Binds a std listener, refusing anything but loopback addresses.
fn bind_loopback(addr: SocketAddr) -> StdTcpListener {
    assert!(
        addr.ip().is_loopback(),
        "test servers may only bind loopback addresses, got {addr}"
    );
    let listener = StdTcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    listener
        .set_nonblocking(true)
        .expect("set listener non-blocking");
    listener
}

/// A server's private runtime thread; dropping it stops the server and joins the thread.
struct Background {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Runs `make()` on a fresh current-thread runtime in a new thread until
    /// it finishes or the `Background` is dropped. Dropping the runtime then
    /// cancels every task spawned on it, closing their sockets.
    fn spawn<F, Fut>(name: &str, make: F) -> Background
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build test server runtime");
                rt.block_on(async move {
                    tokio::select! {
                        () = make() => {}
                        _ = rx => {}
                    }
                });
                drop(rt);
            })
            .expect("spawn test server thread");
        Background {
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Dropping the sender wakes the runtime's select; then wait until the
        // runtime (and with it every socket) is gone.
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

/// What a route does with the body part of its response.
#[derive(Clone, Debug)]
enum Kind {
    /// A complete body of known length.
    Fixed(Bytes),
    /// Describes the request back to the client; see [`Route::echo`].
    Echo,
    /// Headers, then nothing for `stall`, then end of body.
    StallBody { stall: Duration },
    /// `Content-Length: declared`, then `sent`, then the connection is dropped.
    CloseMidBody { declared: u64, sent: Bytes },
}

/// A canned response for one path. Build with a constructor, refine with the
/// chainable modifiers ([`Route::header`], [`Route::delay`], ...).
#[derive(Clone, Debug)]
pub struct Route {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    kind: Kind,
    delay: Duration,
}

impl Route {
    fn new(status: u16, kind: Kind) -> Route {
        Route {
            status: StatusCode::from_u16(status).expect("valid status code"),
            headers: Vec::new(),
            kind,
            delay: Duration::ZERO,
        }
    }

    /// `status` with `body` (Content-Length set automatically).
    pub fn status(status: u16, body: impl Into<Bytes>) -> Route {
        Route::new(status, Kind::Fixed(body.into()))
    }

    /// Shorthand for `Route::status(200, body)`.
    pub fn ok(body: impl Into<Bytes>) -> Route {
        Route::status(200, body)
    }

    /// A redirect (`301`, `302`, `303`, `307`, `308`) to `location`, which may be
    /// relative (`/next`), absolute (`https://127.0.0.1:4443/x`, typically from
    /// another target's [`RunningTarget::url`]) or use [`BASE_PLACEHOLDER`]
    /// (`{base}/next`) for this server's own base URL.
    pub fn redirect(status: u16, location: &str) -> Route {
        Route::status(status, Bytes::new()).header(LOCATION.as_str(), location)
    }

    /// 200 with `body` gzip-compressed and `Content-Encoding: gzip`.
    pub fn gzip(body: impl AsRef<[u8]>) -> Route {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(body.as_ref()).expect("gzip");
        Route::status(200, enc.finish().expect("gzip")).header(CONTENT_ENCODING.as_str(), "gzip")
    }

    /// 200 with `body` as raw DEFLATE (RFC 1951, no zlib wrapper, as Go's
    /// blackbox_exporter decodes it) and `Content-Encoding: deflate`.
    pub fn deflate_raw(body: impl AsRef<[u8]>) -> Route {
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(body.as_ref()).expect("deflate");
        Route::status(200, enc.finish().expect("deflate"))
            .header(CONTENT_ENCODING.as_str(), "deflate")
    }

    /// 200 with `body` zlib-wrapped (RFC 1950) and `Content-Encoding: deflate`.
    pub fn deflate_zlib(body: impl AsRef<[u8]>) -> Route {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(body.as_ref()).expect("zlib");
        Route::status(200, enc.finish().expect("zlib")).header(CONTENT_ENCODING.as_str(), "deflate")
    }

    /// Accepts the request but sends nothing (not even headers) for `stall`,
    /// then an empty 200. Use a stall longer than the probe timeout.
    pub fn stall_headers(stall: Duration) -> Route {
        Route::status(200, Bytes::new()).delay(stall)
    }

    /// Sends 200 headers at once (no Content-Length: chunked on HTTP/1.1),
    /// then no body bytes for `stall`, then ends the body.
    pub fn stall_body(stall: Duration) -> Route {
        Route::new(200, Kind::StallBody { stall })
    }

    /// Declares `Content-Length: declared_len`, sends only the first
    /// `sent_bytes` bytes (`'x'`s), then drops the connection (HTTP/1.1) or
    /// resets the stream (HTTP/2).
    pub fn close_mid_body(declared_len: u64, sent_bytes: usize) -> Route {
        assert!(
            (sent_bytes as u64) < declared_len,
            "close_mid_body must send fewer bytes than it declares"
        );
        Route::new(
            200,
            Kind::CloseMidBody {
                declared: declared_len,
                sent: Bytes::from(vec![b'x'; sent_bytes]),
            },
        )
    }

    /// 200 with `n_bytes` bytes of `'a'` and a matching Content-Length.
    pub fn big(n_bytes: usize) -> Route {
        Route::status(200, vec![b'a'; n_bytes])
    }

    /// 200, `text/plain`, describing the request so tests can assert what the
    /// prober sent:
    ///
    /// ```text
    /// GET /path?query HTTP/1.1
    /// :authority: 127.0.0.1:4443        (only when the request URI had one, i.e. HTTP/2)
    /// host: 127.0.0.1:4443              (every header, lower-case name, one line per value)
    /// user-agent: ...
    ///
    /// <request body bytes>
    /// ```
    ///
    /// The same data is available structured via [`RunningTarget::requests`].
    pub fn echo() -> Route {
        Route::new(200, Kind::Echo).header(CONTENT_TYPE.as_str(), "text/plain; charset=utf-8")
    }

    /// Adds a response header; call repeatedly, also with the same name for
    /// multiple values. `{base}` in `value` becomes the server's base URL.
    pub fn header(mut self, name: &str, value: &str) -> Route {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("invalid header name {name:?}: {e}"));
        HeaderValue::from_bytes(value.as_bytes())
            .unwrap_or_else(|e| panic!("invalid header value {value:?}: {e}"));
        self.headers.push((name, value.to_owned()));
        self
    }

    /// Sets `Last-Modified` to `at` in HTTP-date format (second precision).
    pub fn last_modified(self, at: SystemTime) -> Route {
        let value = httpdate::fmt_http_date(at);
        self.header(LAST_MODIFIED.as_str(), &value)
    }

    /// Waits `delay` after reading the request before sending anything.
    pub fn delay(mut self, delay: Duration) -> Route {
        self.delay = delay;
        self
    }

    /// Replaces the status code (e.g. `Route::echo().with_status(418)`).
    pub fn with_status(mut self, status: u16) -> Route {
        self.status = StatusCode::from_u16(status).expect("valid status code");
        self
    }

    fn respond(&self, req: &RecordedRequest, base_url: &str) -> Response<Body> {
        let mut builder = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            let value = value.replace(BASE_PLACEHOLDER, base_url);
            builder = builder.header(name, value);
        }
        let body = match &self.kind {
            Kind::Fixed(bytes) => full(bytes.clone()),
            Kind::Echo => full(req.echo_text()),
            Kind::StallBody { stall } => scripted(vec![Step::Sleep(*stall)]),
            Kind::CloseMidBody { declared, sent } => {
                builder = builder.header(CONTENT_LENGTH, *declared);
                scripted(vec![
                    Step::Send(sent.clone()),
                    // Give hyper a chance to flush the partial body first.
                    Step::Sleep(Duration::from_millis(50)),
                    Step::Fail("close_mid_body: deliberately truncated"),
                ])
            }
        };
        builder.body(body).expect("valid response")
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// One step of a streamed response body.
enum Step {
    Send(Bytes),
    Sleep(Duration),
    Fail(&'static str),
}

/// A body that plays `steps` in order and then ends.
fn scripted(steps: Vec<Step>) -> Body {
    let stream = futures_util::stream::unfold(steps.into_iter(), |mut steps| async move {
        loop {
            match steps.next()? {
                Step::Send(bytes) => return Some((Ok(Frame::data(bytes)), steps)),
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Fail(msg) => return Some((Err(BoxError::from(msg)), steps)),
            }
        }
    });
    StreamBody::new(stream).boxed()
}

// ---------------------------------------------------------------------------
// Recorded requests
// ---------------------------------------------------------------------------

/// TLS details of the connection a request arrived on.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    /// Negotiated version, rustls' Debug spelling: `"TLSv1_2"` or `"TLSv1_3"`.
    pub version: String,
    /// Negotiated ALPN protocol (`"h2"`, `"http/1.1"`), if any.
    pub alpn: Option<String>,
    /// SNI server name the client sent, if any (IP targets send none).
    pub sni: Option<String>,
    /// DER of the client's end-entity certificate, when one was presented.
    pub client_cert_der: Option<Vec<u8>>,
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `GET`, `HEAD`, `POST`, ...
    pub method: String,
    /// Path only, the key routes and hits use.
    pub path: String,
    /// Path and query as sent.
    pub path_and_query: String,
    /// URI authority when present (HTTP/2 `:authority`); HTTP/1.1 uses the Host header.
    pub authority: Option<String>,
    /// `"HTTP/1.0"`, `"HTTP/1.1"` or `"HTTP/2.0"`.
    pub version: String,
    /// Every header in arrival order, lower-case names, values lossily UTF-8.
    pub headers: Vec<(String, String)>,
    /// The full request body.
    pub body: Bytes,
    /// TLS details, `None` on plain HTTP.
    pub tls: Option<TlsInfo>,
}

impl RecordedRequest {
    fn new(parts: &http::request::Parts, body: Bytes, tls: Option<TlsInfo>) -> RecordedRequest {
        RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            authority: parts.uri.authority().map(|a| a.as_str().to_owned()),
            version: format!("{:?}", parts.version),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            tls,
        }
    }

    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The Host header, or the HTTP/2 `:authority` when there is no Host header.
    pub fn host(&self) -> Option<&str> {
        self.header("host").or(self.authority.as_deref())
    }

    /// The text [`Route::echo`] sends back.
    pub fn echo_text(&self) -> Bytes {
        let mut out = format!("{} {} {}\n", self.method, self.path_and_query, self.version);
        if let Some(authority) = &self.authority {
            out.push_str(&format!(":authority: {authority}\n"));
        }
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\n"));
        }
        out.push('\n');
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        Bytes::from(bytes)
    }
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// State shared between a running server and its handle.
struct State {
    base_url: String,
    routes: Mutex<HashMap<String, Route>>,
    hits: Mutex<HashMap<String, usize>>,
    requests: Mutex<Vec<RecordedRequest>>,
    connections: AtomicUsize,
    tls_failures: AtomicUsize,
}

/// Builder for an in-process HTTP(S) server speaking HTTP/1.1 and HTTP/2.
#[derive(Default)]
pub struct HttpTarget {
    routes: HashMap<String, Route>,
    http1_only: bool,
    alpn: Option<Vec<Vec<u8>>>,
    client_ca: Option<Vec<u8>>,
    tls_versions: Option<Vec<&'static SupportedProtocolVersion>>,
}

impl HttpTarget {
    /// An empty target: every path answers 404 until routes are added.
    pub fn new() -> HttpTarget {
        HttpTarget::default()
    }

    /// Serves `route` for requests whose path (query ignored) equals `path`;
    /// use [`FALLBACK`] (`"*"`) for every otherwise unmatched path.
    pub fn route(mut self, path: &str, route: Route) -> HttpTarget {
        self.routes.insert(path.to_owned(), route);
        self
    }

    /// Speaks HTTP/1.x only (and offers only `http/1.1` in TLS ALPN).
    pub fn http1_only(mut self) -> HttpTarget {
        self.http1_only = true;
        self
    }

    /// Overrides the TLS ALPN list (default `["h2", "http/1.1"]`, or
    /// `["http/1.1"]` with [`HttpTarget::http1_only`]); `&[]` disables ALPN.
    pub fn alpn(mut self, protocols: &[&str]) -> HttpTarget {
        self.alpn = Some(protocols.iter().map(|p| p.as_bytes().to_vec()).collect());
        self
    }

    /// Requires TLS clients to present a certificate issued by `ca`
    /// (mutual TLS); handshakes without one fail.
    pub fn require_client_cert(mut self, ca: &Ca) -> HttpTarget {
        self.client_ca = Some(ca.der());
        self
    }

    /// Restricts the TLS versions offered, e.g. `&[&rustls::version::TLS12]`.
    pub fn tls_versions(mut self, versions: &[&'static SupportedProtocolVersion]) -> HttpTarget {
        self.tls_versions = Some(versions.to_vec());
        self
    }

    /// Starts plain HTTP on `127.0.0.1:<ephemeral>`.
    pub async fn start(self) -> RunningTarget {
        self.spawn(loopback_v4(), None)
    }

    /// Starts plain HTTP on `addr`, which must be loopback (e.g. [`loopback_v6`]).
    pub async fn start_on(self, addr: SocketAddr) -> RunningTarget {
        self.spawn(addr, None)
    }

    /// Starts HTTPS on `127.0.0.1:<ephemeral>`, presenting `leaf.chain_ders`.
    pub async fn start_tls(self, leaf: &Leaf) -> RunningTarget {
        self.spawn(loopback_v4(), Some(leaf))
    }

    /// Starts HTTPS on `addr`, which must be loopback.
    pub async fn start_tls_on(self, addr: SocketAddr, leaf: &Leaf) -> RunningTarget {
        self.spawn(addr, Some(leaf))
    }

    /// Same as [`HttpTarget::start`], for non-async tests.
    pub fn start_blocking(self) -> RunningTarget {
        self.spawn(loopback_v4(), None)
    }

    /// Same as [`HttpTarget::start_tls`], for non-async tests.
    pub fn start_tls_blocking(self, leaf: &Leaf) -> RunningTarget {
        self.spawn(loopback_v4(), Some(leaf))
    }

    /// Binds now (so the port is listening when this returns) and serves on a
    /// background thread.
    fn spawn(self, addr: SocketAddr, leaf: Option<&Leaf>) -> RunningTarget {
        let listener = bind_loopback(addr);
        let addr = listener.local_addr().expect("local addr");
        let scheme = if leaf.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{addr}");
        let acceptor = leaf.map(|leaf| self.tls_acceptor(leaf));

        let mut builder = auto::Builder::new(TokioExecutor::new());
        if self.http1_only {
            builder = builder.http1_only();
        }

        let state = Arc::new(State {
            base_url: base_url.clone(),
            routes: Mutex::new(self.routes),
            hits: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            tls_failures: AtomicUsize::new(0),
        });
        let served = Arc::clone(&state);
        let background = Background::spawn(&format!("http-target-{addr}"), move || {
            accept_loop(listener, served, acceptor, builder)
        });
        RunningTarget {
            addr,
            base_url,
            state,
            _background: background,
        }
    }

    fn tls_acceptor(&self, leaf: &Leaf) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider));
        let builder = match &self.tls_versions {
            Some(versions) => builder.with_protocol_versions(versions),
            None => builder.with_safe_default_protocol_versions(),
        }
        .expect("TLS protocol versions");
        let builder = match &self.client_ca {
            Some(ca_der) => {
                let mut roots = RootCertStore::empty();
                roots
                    .add(CertificateDer::from(ca_der.clone()))
                    .expect("client CA");
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let (chain, key) = leaf.rustls_identity();
        let mut config = builder
            .with_single_cert(chain, key)
            .expect("server certificate and key");
        config.alpn_protocols = match &self.alpn {
            Some(list) => list.clone(),
            None if self.http1_only => vec![b"http/1.1".to_vec()],
            None => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        TlsAcceptor::from(Arc::new(config))
    }
}

async fn accept_loop(
    listener: StdTcpListener,
    state: Arc<State>,
    acceptor: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
) {
    let listener = TcpListener::from_std(listener).expect("register listener");
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            // e.g. EMFILE: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = Arc::clone(&state);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve(TokioIo::new(stream), state, None, builder).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => {
                        let info = tls_info(tls.get_ref().1);
                        serve(TokioIo::new(tls), state, Some(info), builder).await;
                    }
                    Err(_) => {
                        state.tls_failures.fetch_add(1, Ordering::SeqCst);
                    }
                },
            }
        });
    }
}

fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    TlsInfo {
        version: conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        sni: conn.server_name().map(str::to_owned),
        client_cert_der: conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|c| c.to_vec()),
    }
}

async fn serve<I>(
    io: TokioIo<I>,
    state: Arc<State>,
    tls: Option<TlsInfo>,
    builder: auto::Builder<TokioExecutor>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(Arc::clone(&state), tls.clone(), req));
    // Errors here are client hang-ups, timeouts, deliberate truncation: all expected.
    let _ = builder.serve_connection(io, service).await;
}

async fn handle(
    state: Arc<State>,
    tls: Option<TlsInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    *state.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let route = {
        let routes = state.routes.lock().unwrap();
        routes.get(&path).or_else(|| routes.get(FALLBACK)).cloned()
    };
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let recorded = RecordedRequest::new(&parts, body, tls);
    state.requests.lock().unwrap().push(recorded.clone());

    let Some(route) = route else {
        let mut resp = Response::new(full("not found\n"));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    };
    if !route.delay.is_zero() {
        tokio::time::sleep(route.delay).await;
    }
    Ok(route.respond(&recorded, &state.base_url))
}

/// A started [`HttpTarget`]. Dropping it stops the server and closes all its
/// connections before `drop` returns.
pub struct RunningTarget {
    /// The bound loopback address (with the real port).
    pub addr: SocketAddr,
    base_url: String,
    state: Arc<State>,
    _background: Background,
}

impl RunningTarget {
    /// `http://127.0.0.1:PORT` / `https://[::1]:PORT`, no trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Full URL for `path` (which may carry a query); a missing leading `/` is added.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, slash(path))
    }

    /// URL using `host` instead of the IP, e.g. `"localhost"` to exercise
    /// DNS-name certificate verification; the port is this server's.
    pub fn url_with_host(&self, host: &str, path: &str) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{host}:{}{}", self.addr.port(), slash(path))
    }

    /// `127.0.0.1:PORT` / `[::1]:PORT`, the form tcp/tls probe targets take.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// Whether this target serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.base_url.starts_with("https:")
    }

    /// Adds or replaces a route while running, e.g. a redirect to a second
    /// target whose address is only known after both started.
    pub fn set_route(&self, path: &str, route: Route) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), route);
    }

    /// Requests received for `path` (query ignored), counted on arrival,
    /// before any delay.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received on any path.
    pub fn total_hits(&self) -> usize {
        self.state.hits.lock().unwrap().values().sum()
    }

    /// Every request for `path` whose body was fully read, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The most recent request for `path`, if any.
    pub fn last_request(&self, path: &str) -> Option<RecordedRequest> {
        self.requests(path).pop()
    }

    /// TCP connections accepted so far (keep-alive reuse shows as fewer
    /// connections than hits).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (e.g. the client rejected the certificate).
    pub fn tls_failures(&self) -> usize {
        self.state.tls_failures.load(Ordering::SeqCst)
    }
}

fn slash(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

// ---------------------------------------------------------------------------
// Raw TCP listeners
// ---------------------------------------------------------------------------

/// One step of a [`RawListener`] script, run per accepted connection.
#[derive(Clone, Debug)]
pub enum RawStep {
    /// Writes these bytes.
    Write(Bytes),
    /// Reads until the bytes received since the previous match contain this
    /// pattern (the script ends if the peer closes first).
    ReadUntil(Vec<u8>),
    /// Sleeps.
    Sleep(Duration),
    /// Reads and discards until the peer closes, never writing.
    Hold,
}

/// A loopback TCP listener running a fixed script on every connection, then
/// closing it. Dropping it closes the listener and all connections.
pub struct RawListener {
    /// The bound loopback address.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    _background: Background,
}

impl RawListener {
    /// Binds `addr` (loopback only) and runs `script` on each connection.
    /// An empty script closes connections right after accepting them.
    pub fn script(addr: SocketAddr, script: Vec<RawStep>) -> RawListener {
        let listener = bind_loopback(addr);
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (acc, rec) = (Arc::clone(&accepted), Arc::clone(&received));
        let background = Background::spawn(&format!("raw-listener-{addr}"), move || {
            raw_accept_loop(listener, script, acc, rec)
        });
        RawListener {
            addr,
            accepted,
            received,
            _background: background,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Bytes received so far, one entry per accepted connection, in accept order.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    /// `127.0.0.1:PORT`, the form tcp probe targets take.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT/path`, for pointing an http probe at this listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, slash(path))
    }
}

/// Accepts connections on 127.0.0.1 and never writes a byte (reads are
/// discarded): for connect-succeeds-then-times-out tests.
pub fn silent_listener() -> RawListener {
    RawListener::script(loopback_v4(), vec![RawStep::Hold])
}

/// Accepts connections on 127.0.0.1 and closes them immediately.
pub fn closing_listener() -> RawListener {
    RawListener::script(loopback_v4(), Vec::new())
}

/// On 127.0.0.1: reads a request head (up to `\r\n\r\n`), writes `response`
/// verbatim and closes: for malformed or unusual HTTP responses.
pub fn raw_http_listener(response: impl Into<Bytes>) -> RawListener {
    RawListener::script(
        loopback_v4(),
        vec![
            RawStep::ReadUntil(b"\r\n\r\n".to_vec()),
            RawStep::Write(response.into()),
        ],
    )
}

async fn raw_accept_loop(
    listener: StdTcpListener,
    script: Vec<RawStep>,
    accepted: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let listener = TcpListener::from_std(listener).expect("register listener");
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            // e.g. EMFILE: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let index = {
            let mut received = received.lock().unwrap();
            received.push(Vec::new());
            received.len() - 1
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let script = script.clone();
        let received = Arc::clone(&received);
        tokio::spawn(run_script(stream, script, received, index));
    }
}

async fn run_script(
    mut stream: TcpStream,
    script: Vec<RawStep>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    index: usize,
) {
    if script.is_empty() {
        return; // dropping the stream closes it
    }
    let mut seen: Vec<u8> = Vec::new();
    let mut consumed = 0;
    let mut chunk = [0u8; 8192];
    // Reads one chunk, recording it; false on EOF or error.
    macro_rules! read_more {
        () => {{
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => false,
                Ok(n) => {
                    seen.extend_from_slice(&chunk[..n]);
                    received.lock().unwrap()[index].extend_from_slice(&chunk[..n]);
                    true
                }
            }
        }};
    }
    for step in script {
        match step {
            RawStep::Write(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            RawStep::ReadUntil(pattern) => loop {
                if let Some(pos) = find(&seen[consumed..], &pattern) {
                    consumed += pos + pattern.len();
                    break;
                }
                if !read_more!() {
                    return;
                }
            },
            RawStep::Sleep(d) => tokio::time::sleep(d).await,
            RawStep::Hold => while read_more!() {},
        }
    }
    // Half-close, then drain briefly so unread client bytes don't turn our
    // close into a RST that could discard the response on the client side.
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async { while read_more!() {} }).await;
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
