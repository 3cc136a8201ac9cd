//! One HTTP probe: resolve, connect, TLS, request, redirects and response checks, timed per phase
//! the way blackbox's `httptrace` hooks time them, on a hyper connection we drive ourselves.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Version};
use http_body_util::{Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;
use url::Url;

use super::body;
use super::{
    MAX_REDIRECTS, PROBE_HTTP_CONTENT_LENGTH, PROBE_HTTP_DURATION_SECONDS,
    PROBE_HTTP_LAST_MODIFIED_TIMESTAMP_SECONDS, PROBE_HTTP_REDIRECTS, PROBE_HTTP_SSL,
    PROBE_HTTP_STATUS_CODE, PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH, PROBE_HTTP_VERSION, Proxy, Spec,
    regex_failure,
};
use crate::probe::expect::PROBE_FAILED_DUE_TO_REGEX;
use crate::probe::net::{self, Stream};
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest};
use crate::probe::report::Report;
use crate::probe::tls;

const USER_AGENT: &str = concat!("lookout/", env!("CARGO_PKG_VERSION"));

/// Aborts the spawned connection driver when the probe ends or is cancelled, so no socket
/// outlives its probe.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where and how one request of the redirect chain is sent.
struct Hop {
    /// The request URL; its host may be the resolved IP, as blackbox substitutes it.
    url: Url,
    /// The Host header (HTTP/1) or `:authority` (HTTP/2).
    host_header: String,
    /// The TLS server name.
    sni: String,
    /// The address already resolved for this hop (the first hop's `chooseProtocol` result).
    ip: Option<IpAddr>,
    method: Method,
    body: Option<Bytes>,
    /// Headers copied from the configuration (may be trimmed on cross-host redirects).
    headers: HeaderMap,
}

fn phase(report: &mut Report, name: &str, secs: f64) {
    report.add(&PROBE_HTTP_DURATION_SECONDS, &[("phase", name)], secs);
}

fn authority(url: &Url) -> String {
    let host = match url.host() {
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

fn bare_host(url: &Url) -> String {
    match url.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => String::new(),
    }
}

fn with_host(url: &Url, ip: IpAddr) -> Url {
    let mut u = url.clone();
    // Setting an IP host on an http(s) URL cannot fail.
    let _ = u.set_ip_host(ip);
    u
}

/// Runs the probe: blackbox's `ProbeHTTP`.
pub(super) async fn probe(
    spec: &Spec,
    req: &ProbeRequest,
    cx: &mut ProbeContext<'_>,
) -> Result<(), ProbeFailure> {
    {
        let r = &mut *cx.report;
        for f in [
            &PROBE_HTTP_CONTENT_LENGTH,
            &PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH,
            &PROBE_HTTP_REDIRECTS,
            &PROBE_HTTP_SSL,
            &PROBE_HTTP_STATUS_CODE,
            &PROBE_HTTP_VERSION,
            &PROBE_FAILED_DUE_TO_REGEX,
        ] {
            r.declare(f);
        }
    }
    if let Some(reason) = &spec.unsupported {
        return Err(ProbeFailure::new(FailureKind::Unsupported, reason.clone()));
    }
    let target = if req.target.starts_with("http://") || req.target.starts_with("https://") {
        req.target.clone()
    } else {
        format!("http://{}", req.target)
    };
    let target_url = Url::parse(&target).map_err(|e| {
        ProbeFailure::new(
            FailureKind::InvalidTarget,
            format!("could not parse target URL {target:?}: {e}"),
        )
    })?;
    if target_url.host().is_none() {
        return Err(ProbeFailure::new(
            FailureKind::InvalidTarget,
            format!("target URL {target:?} has no host"),
        ));
    }
    let target_host = bare_host(&target_url);
    let proxy = spec.proxy_for(&target_url);

    let mut ip = None;
    if !(spec.skip_resolve_phase_with_proxy && proxy.is_some()) {
        let result = net::resolve(cx, net::Address::Target(&target_host), spec.ip).await;
        match result {
            Ok((addr, lookup)) => {
                phase(cx.report, "resolve", lookup.as_secs_f64());
                ip = Some(addr);
            }
            Err(e) => {
                phase(cx.report, "resolve", 0.0);
                return Err(e);
            }
        }
    }
    for p in ["connect", "tls", "processing", "transfer"] {
        cx.report
            .declare_labeled(&PROBE_HTTP_DURATION_SECONDS, &[("phase", p)]);
    }

    let host_override = req.hostname.clone().or_else(|| spec.host_header.clone());
    let orig_host_header = host_override
        .clone()
        .unwrap_or_else(|| authority(&target_url));
    let first_sni = spec
        .tls
        .server_name
        .clone()
        .or_else(|| host_override.clone())
        .unwrap_or_else(|| target_host.clone());
    let first_url = match ip {
        Some(addr) => with_host(&target_url, addr),
        None => target_url.clone(),
    };
    let first_authority = authority(&first_url);

    let mut headers = HeaderMap::new();
    for (k, v) in &spec.headers {
        headers.append(k.clone(), v.clone());
    }
    if !headers.contains_key(header::USER_AGENT) {
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    }

    let mut hop = Hop {
        url: first_url,
        host_header: orig_host_header.clone(),
        sni: first_sni.clone(),
        ip,
        method: spec.method.clone(),
        body: spec.body.clone(),
        headers,
    };
    // A fresh RFC 6265 jar per probe, as blackbox gives each probe a new Go cookie jar.
    let mut cookies = cookie_store::CookieStore::default();
    let mut redirects = 0usize;
    let mut failure: Option<ProbeFailure> = None;
    let mut hop_index = 0usize;

    let (response, over_tls, request_errored, response_start, _driver) = loop {
        let sent = send(spec, &hop, hop_index, &cookies, cx).await?;
        let SentRequest {
            response,
            handshake,
            response_start,
            _driver,
        } = sent;
        for v in response.headers().get_all(header::SET_COOKIE) {
            if let Ok(s) = v.to_str() {
                // A cookie the jar refuses (bad domain, malformed) is ignored, as Go's jar does.
                let _ = cookies.parse(s, &hop.url);
            }
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let redirect_kind = match status {
            301..=303 => Some(false),
            307 | 308 => Some(true),
            _ => None,
        };
        let (Some(keep_method), Some(loc)) = (redirect_kind, location) else {
            break (response, handshake, false, response_start, _driver);
        };
        debug!(location = %loc, "Received redirect");
        redirects = hop_index + 1;
        if redirects > MAX_REDIRECTS || !spec.follow_redirects {
            debug!("Not following redirect");
            break (response, handshake, true, response_start, _driver);
        }
        let next = match hop.url.join(&loc) {
            Ok(u) => u,
            Err(e) => {
                failure = Some(ProbeFailure::new(
                    FailureKind::Protocol,
                    format!("invalid redirect location {loc:?}: {e}"),
                ));
                break (response, handshake, true, response_start, _driver);
            }
        };
        if next.scheme() != "http" && next.scheme() != "https" {
            failure = Some(ProbeFailure::new(
                FailureKind::Protocol,
                format!("unsupported redirect location {loc:?}"),
            ));
            break (response, handshake, true, response_start, _driver);
        }
        drop(response);
        let relative = Url::parse(&loc).is_err();
        let next_authority = authority(&next);
        let same_first_host = next_authority == first_authority;
        let host_changed = bare_host(&next) != bare_host(&hop.url);
        let mut headers = hop.headers.clone();
        // Go's client sends the previous URL (without user info) as Referer, except from
        // https to http.
        headers.remove(header::REFERER);
        if !(hop.url.scheme() == "https" && next.scheme() == "http") {
            let mut referer = hop.url.clone();
            let _ = referer.set_username("");
            let _ = referer.set_password(None);
            referer.set_fragment(None);
            if let Ok(v) = HeaderValue::from_str(referer.as_str()) {
                headers.insert(header::REFERER, v);
            }
        }
        if host_changed {
            for h in [
                header::AUTHORIZATION,
                header::WWW_AUTHENTICATE,
                header::COOKIE,
            ] {
                headers.remove(h);
            }
        }
        let (method, body) = if keep_method {
            (hop.method.clone(), hop.body.clone())
        } else if hop.method == Method::GET || hop.method == Method::HEAD {
            (hop.method.clone(), None)
        } else {
            (Method::GET, None)
        };
        hop = Hop {
            host_header: if relative {
                orig_host_header.clone()
            } else {
                next_authority
            },
            sni: if same_first_host {
                first_sni.clone()
            } else {
                bare_host(&next)
            },
            ip: if same_first_host { ip } else { None },
            url: next,
            method,
            body,
            headers,
        };
        hop_index += 1;
    };

    // The final response: blackbox's checks, in its order.
    let status = response.status().as_u16();
    debug!(status_code = status, "Received HTTP response");
    let mut success = spec.status_ok(status);
    if !success {
        failure.get_or_insert_with(|| {
            ProbeFailure::new(
                FailureKind::Assertion,
                format!("invalid HTTP response status code {status}"),
            )
        });
    }
    {
        let r = &mut *cx.report;
        r.set(&PROBE_HTTP_STATUS_CODE, f64::from(status));
        r.set(&PROBE_HTTP_CONTENT_LENGTH, content_length(&response) as f64);
        r.set(&PROBE_HTTP_REDIRECTS, redirects as f64);
        r.set(&PROBE_HTTP_SSL, if over_tls.is_some() { 1.0 } else { 0.0 });
    }
    if success && (!spec.header_matches.is_empty() || !spec.header_not_matches.is_empty()) {
        match check_headers(spec, response.headers()) {
            Ok(()) => cx.report.set(&PROBE_FAILED_DUE_TO_REGEX, 0.0),
            Err(e) => {
                success = false;
                cx.report.set(&PROBE_FAILED_DUE_TO_REGEX, 1.0);
                failure.get_or_insert(e);
            }
        }
    }
    let version = response.version();
    let last_modified = response
        .headers()
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());

    let match_body =
        success && (!spec.body_matches.is_empty() || !spec.body_not_matches.is_empty());
    if !request_errored {
        let outcome = body::read(spec, response.into_body(), match_body, cx.report).await;
        if match_body {
            match &outcome.matched {
                Some(Ok(())) => cx.report.set(&PROBE_FAILED_DUE_TO_REGEX, 0.0),
                Some(Err(msg)) => {
                    success = false;
                    cx.report.set(&PROBE_FAILED_DUE_TO_REGEX, 1.0);
                    failure.get_or_insert_with(|| regex_failure(msg.clone()));
                }
                None => {
                    // The body could not be read (too large, broken): the regexes did not pass.
                    success = false;
                    cx.report.set(&PROBE_FAILED_DUE_TO_REGEX, 1.0);
                }
            }
        }
        if let Some(e) = outcome.error {
            success = false;
            failure.get_or_insert(e);
        }
    } else if match_body {
        // blackbox matches the body of an unfollowed redirect too; it was never read, so the
        // expressions see an empty body.
        let msg = body::match_regexes(spec, b"");
        cx.report.set(
            &PROBE_FAILED_DUE_TO_REGEX,
            if msg.is_ok() { 0.0 } else { 1.0 },
        );
        if let Err(m) = msg {
            success = false;
            failure.get_or_insert_with(|| regex_failure(m));
        }
    }
    let end = Instant::now();
    phase(
        cx.report,
        "transfer",
        end.saturating_duration_since(response_start).as_secs_f64(),
    );

    if let Some(t) = last_modified
        && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
    {
        cx.report.set(
            &PROBE_HTTP_LAST_MODIFIED_TIMESTAMP_SECONDS,
            d.as_secs() as f64,
        );
    }
    let (proto, number) = match version {
        Version::HTTP_09 => ("HTTP/0.9", 0.9),
        Version::HTTP_10 => ("HTTP/1.0", 1.0),
        Version::HTTP_11 => ("HTTP/1.1", 1.1),
        Version::HTTP_2 => ("HTTP/2.0", 2.0),
        Version::HTTP_3 => ("HTTP/3.0", 3.0),
        _ => ("unknown", 0.0),
    };
    cx.report.set(&PROBE_HTTP_VERSION, number);
    if !spec.valid_http_versions.is_empty() && !spec.valid_http_versions.iter().any(|v| v == proto)
    {
        success = false;
        failure.get_or_insert_with(|| {
            ProbeFailure::new(
                FailureKind::Assertion,
                format!("invalid HTTP version {proto}"),
            )
        });
    }
    match &over_tls {
        Some(hs) => {
            tls::record(cx.report, hs);
            if spec.fail_if_ssl {
                success = false;
                failure.get_or_insert_with(|| {
                    ProbeFailure::new(FailureKind::Assertion, "final request was over SSL")
                });
            }
        }
        None if spec.fail_if_not_ssl => {
            success = false;
            failure.get_or_insert_with(|| {
                ProbeFailure::new(FailureKind::Assertion, "final request was not over SSL")
            });
        }
        None => {}
    }
    match failure {
        Some(f) => Err(f),
        None if success => Ok(()),
        None => Err(ProbeFailure::new(FailureKind::Assertion, "probe failed")),
    }
}

/// Go's `resp.ContentLength`: the header's value, 0 for bodiless statuses, else -1.
fn content_length(resp: &http::Response<Incoming>) -> i64 {
    let status = resp.status().as_u16();
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return 0;
    }
    if resp.headers().contains_key(header::TRANSFER_ENCODING) && resp.version() != Version::HTTP_2 {
        return -1;
    }
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

pub(super) fn check_headers(spec: &Spec, headers: &HeaderMap) -> Result<(), ProbeFailure> {
    for m in &spec.header_matches {
        let values: Vec<&HeaderValue> = headers.get_all(&m.name).iter().collect();
        if values.is_empty() {
            if m.allow_missing {
                continue;
            }
            return Err(regex_failure(format!("missing required header {}", m.name)));
        }
        if values.iter().any(|v| m.regexp.bytes.is_match(v.as_bytes())) {
            return Err(regex_failure(format!(
                "header {} matched regular expression {:?}",
                m.name,
                m.regexp.as_str()
            )));
        }
    }
    for m in &spec.header_not_matches {
        let values: Vec<&HeaderValue> = headers.get_all(&m.name).iter().collect();
        if values.is_empty() {
            if m.allow_missing {
                continue;
            }
            return Err(regex_failure(format!("missing required header {}", m.name)));
        }
        if !values.iter().any(|v| m.regexp.bytes.is_match(v.as_bytes())) {
            return Err(regex_failure(format!(
                "header {} did not match regular expression {:?}",
                m.name,
                m.regexp.as_str()
            )));
        }
    }
    Ok(())
}

struct SentRequest {
    response: http::Response<Incoming>,
    handshake: Option<tls::Handshake>,
    response_start: Instant,
    /// Keeps the connection driven until the response body has been read.
    _driver: AbortOnDrop,
}

/// Connects, shakes hands and sends one request; records this hop's phases as they complete.
async fn send(
    spec: &Spec,
    hop: &Hop,
    hop_index: usize,
    cookies: &cookie_store::CookieStore,
    cx: &mut ProbeContext<'_>,
) -> Result<SentRequest, ProbeFailure> {
    let https = hop.url.scheme() == "https";
    let port = hop
        .url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    let proxy = spec.proxy_for(&hop.url);
    debug!(url = %hop.url, host = %hop.host_header, "Making HTTP request");

    // Resolve (hops after the first; the first used chooseProtocol already), then connect.
    let proxy_host = proxy.map(|p| {
        p.url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    });
    let hop_host = bare_host(&hop.url);
    let (address, connect_port) = match (proxy, &proxy_host) {
        (Some(p), Some(phost)) => (
            net::Address::Hop(phost),
            p.url.port_or_known_default().unwrap_or(80),
        ),
        _ => {
            let address = match (hop.ip, hop_host.parse::<IpAddr>()) {
                (Some(ip), _) => net::Address::Resolved(ip),
                (None, Ok(ip)) => net::Address::Resolved(ip),
                (None, Err(_)) => net::Address::Hop(&hop_host),
            };
            (address, port)
        }
    };
    let start = Instant::now();
    let mut dns_done = start;
    let target = net::Target::new(address, connect_port, spec.ip);
    let dialed = net::dial_plain(cx, &target, |report, step| {
        if let net::Step::Resolved { .. } = step {
            dns_done = Instant::now();
            if hop_index > 0 {
                phase(
                    report,
                    "resolve",
                    dns_done.duration_since(start).as_secs_f64(),
                );
            }
        }
    })
    .await;
    // Only resolution fails with `Resolve`; for a proxy the message names it, as before.
    let mut tcp = dialed.map_err(|e| match &proxy_host {
        Some(phost) if e.kind == FailureKind::Resolve => ProbeFailure::new(
            FailureKind::Resolve,
            format!("resolving proxy {phost}: {}", e.message),
        ),
        _ => e,
    })?;
    if let (Some(p), true) = (proxy, https) {
        connect_tunnel(&mut tcp, p, &authority_with_port(&hop.url, port)).await?;
    }
    let connect_done = Instant::now();

    let mut handshake = None;
    let stream = if https {
        phase(
            cx.report,
            "connect",
            connect_done.duration_since(dns_done).as_secs_f64(),
        );
        let alpn: &[&[u8]] = if spec.enable_http2 {
            &[b"h2", b"http/1.1"]
        } else {
            &[b"http/1.1"]
        };
        let tls = net::Tls {
            spec: &spec.tls,
            server_name: &hop.sni,
            alpn,
        };
        let tls_start = Instant::now();
        let (tls_stream, hs) = net::upgrade(tcp, &tls).await?;
        phase(cx.report, "tls", tls_start.elapsed().as_secs_f64());
        handshake = Some(hs);
        tls_stream
    } else {
        Stream::Plain(tcp)
    };
    let got_conn = Instant::now();
    if !https {
        phase(
            cx.report,
            "connect",
            got_conn.duration_since(dns_done).as_secs_f64(),
        );
    }
    let h2 = handshake.as_ref().and_then(|h| h.alpn.as_deref()) == Some(b"h2".as_slice());

    // Build the request.
    let mut builder = Request::builder().method(hop.method.clone());
    let path = match hop.url.query() {
        Some(q) => format!("{}?{q}", hop.url.path()),
        None => hop.url.path().to_owned(),
    };
    let uri = if h2 {
        format!("https://{}{path}", hop.host_header)
    } else if proxy.is_some() && !https {
        hop.url.to_string()
    } else {
        path
    };
    builder = builder.uri(uri);
    builder = builder.version(if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    });
    let mut request = builder
        .body(match &hop.body {
            Some(b) => BoxBody::new(Full::new(b.clone())),
            None => BoxBody::new(Empty::<Bytes>::new()),
        })
        .map_err(|e| {
            ProbeFailure::new(
                FailureKind::InvalidTarget,
                format!("building the request: {e}"),
            )
        })?;
    let h = request.headers_mut();
    if !h2 {
        let host = HeaderValue::from_str(&hop.host_header).map_err(|_| {
            ProbeFailure::new(
                FailureKind::InvalidTarget,
                format!("invalid Host {:?}", hop.host_header),
            )
        })?;
        h.insert(header::HOST, host);
    }
    for (k, v) in &hop.headers {
        h.append(k.clone(), v.clone());
    }
    if let Some(auth) = &spec.authorization {
        h.insert(header::AUTHORIZATION, auth.clone());
    }
    let cookie: Vec<String> = cookies
        .get_request_values(&hop.url)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    if !cookie.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cookie.join("; "))
    {
        h.insert(header::COOKIE, v);
    }
    if !h2 {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(b) = &hop.body {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
    }
    if let (Some(p), false) = (proxy, https) {
        for (k, v) in &p.connect_headers {
            h.append(k.clone(), v.clone());
        }
    }

    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| {
                ProbeFailure::new(FailureKind::Protocol, format!("HTTP/2 handshake: {e}"))
            })?;
        let driver = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        (sender.send_request(request).await, driver)
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(64 * 1024)
            .handshake(io)
            .await
            .map_err(|e| {
                ProbeFailure::new(FailureKind::Protocol, format!("HTTP handshake: {e}"))
            })?;
        let driver = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        (sender.send_request(request).await, driver)
    };
    let (response, driver) = response;
    let response = response.map_err(|e| {
        ProbeFailure::new(
            FailureKind::Protocol,
            format!("HTTP request: {}", hyper_error(&e)),
        )
    })?;
    let response_start = Instant::now();
    phase(
        cx.report,
        "processing",
        response_start.duration_since(got_conn).as_secs_f64(),
    );
    Ok(SentRequest {
        response,
        handshake,
        response_start,
        _driver: driver,
    })
}

fn hyper_error(e: &hyper::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn authority_with_port(url: &Url, port: u16) -> String {
    match url.host() {
        Some(url::Host::Ipv6(a)) => format!("[{a}]:{port}"),
        Some(h) => format!("{h}:{port}"),
        None => String::new(),
    }
}

/// Opens a CONNECT tunnel through an HTTP proxy; reads at most 16 KiB of the proxy's answer.
async fn connect_tunnel(
    tcp: &mut TcpStream,
    proxy: &Proxy,
    authority: &str,
) -> Result<(), ProbeFailure> {
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    for (k, v) in &proxy.connect_headers {
        req.push_str(&format!("{}: {}\r\n", k, v.to_str().unwrap_or_default()));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes())
        .await
        .map_err(|e| ProbeFailure::new(FailureKind::Connect, format!("proxy CONNECT: {e}")))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| ProbeFailure::new(FailureKind::Connect, format!("proxy CONNECT: {e}")))?;
        if n == 0 {
            return Err(ProbeFailure::new(
                FailureKind::Connect,
                "proxy closed the connection during CONNECT",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            let status = head.lines().next().unwrap_or("");
            if status.split_whitespace().nth(1) == Some("200") {
                return Ok(());
            }
            return Err(ProbeFailure::new(
                FailureKind::Connect,
                format!("proxy refused CONNECT: {status}"),
            ));
        }
        if buf.len() > 16 * 1024 {
            return Err(ProbeFailure::new(
                FailureKind::Protocol,
                "proxy CONNECT answer larger than 16 KiB",
            ));
        }
    }
}

impl Spec {
    /// The proxy to use for `url`, honouring `no_proxy`.
    pub(super) fn proxy_for(&self, url: &Url) -> Option<&Proxy> {
        let p = match (&self.proxy, url.scheme()) {
            (Some(p), _) => p,
            (None, "https") => self.env_proxies.1.as_ref()?,
            (None, _) => self.env_proxies.0.as_ref()?,
        };
        let host = bare_host(url).to_ascii_lowercase();
        let excluded = p.no_proxy.iter().any(|entry| {
            let entry = entry.trim_start_matches('.');
            entry == "*"
                || host == entry
                || host.ends_with(&format!(".{entry}"))
                || cidr_contains(entry, &host)
        });
        if excluded { None } else { Some(p) }
    }
}

fn cidr_contains(entry: &str, host: &str) -> bool {
    let (Some((net, bits)), Ok(ip)) = (entry.split_once('/'), host.parse::<IpAddr>()) else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}
