//! One HTTP probe: resolve, connect, TLS, request, redirects and response checks, timed per phase
//! the way blackbox's `httptrace` hooks time them, on a hyper connection we drive ourselves.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Version};
use http_body_util::{Empty, Full, combinators::BoxBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;
use url::Url;

use super::body;
use super::redirect::{self, Origin};
use super::{
    PROBE_HTTP_CONTENT_LENGTH, PROBE_HTTP_DURATION_SECONDS,
    PROBE_HTTP_LAST_MODIFIED_TIMESTAMP_SECONDS, PROBE_HTTP_REDIRECTS, PROBE_HTTP_SSL,
    PROBE_HTTP_STATUS_CODE, PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH, PROBE_HTTP_VERSION, Proxy, Spec,
    regex_failure,
};
use crate::probe::expect::PROBE_FAILED_DUE_TO_REGEX;
use crate::probe::net::{self, Stream};
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Reason};
use crate::probe::report::Report;
use crate::probe::resolve;
use crate::probe::tls;

const USER_AGENT: &str = concat!("lookout/", env!("CARGO_PKG_VERSION"));

/// Aborts the spawned connection driver when the probe ends or is cancelled, so no socket
/// outlives its probe.
pub(super) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response body, whichever HTTP version carried it.
pub(super) type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// Where and how one request of the redirect chain is sent.
pub(super) struct Hop {
    /// The request URL; its host may be the resolved IP, as blackbox substitutes it.
    pub url: Url,
    /// The Host header (HTTP/1) or `:authority` (HTTP/2).
    pub host_header: String,
    /// The TLS server name.
    pub sni: String,
    /// The address already resolved for this hop (the first hop's `chooseProtocol` result).
    pub ip: Option<IpAddr>,
    pub method: Method,
    pub body: Option<Bytes>,
    /// Headers copied from the configuration (may be trimmed on cross-host redirects).
    pub headers: HeaderMap,
}

pub(super) fn phase(report: &mut Report, name: &str, secs: f64) {
    report.add(&PROBE_HTTP_DURATION_SECONDS, &[("phase", name)], secs);
}

pub(super) fn authority(url: &Url) -> String {
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

pub(super) fn bare_host(url: &Url) -> String {
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

/// Runs the probe: blackbox's `ProbeHTTP`, as the steps below.
pub(super) async fn probe(
    spec: &Spec,
    req: &ProbeRequest,
    cx: &mut ProbeContext<'_>,
) -> Result<(), ProbeFailure> {
    declare_families(cx.report);
    if let Some(reason) = &spec.unsupported {
        return Err(ProbeFailure::new(FailureKind::Unsupported, reason.clone()));
    }
    if let Some(source) = &spec.oauth2 {
        let authorization = source.authorization(cx).await?;
        let with = Spec {
            authorization: Some(authorization),
            oauth2: None,
            ..spec.clone()
        };
        return Box::pin(probe_with(&with, req, cx)).await;
    }
    probe_with(spec, req, cx).await
}

/// The probe once its credentials are settled.
async fn probe_with(
    spec: &Spec,
    req: &ProbeRequest,
    cx: &mut ProbeContext<'_>,
) -> Result<(), ProbeFailure> {
    if spec.cel.is_some() {
        cx.report.declare(&super::cel::PROBE_FAILED_DUE_TO_CEL);
    }
    let mut target_url = parse_target(&req.target)?;
    if spec.enable_http3 && target_url.scheme() == "http" {
        // HTTP/3 is over TLS only: blackbox probes https:// instead, and says so.
        let _ = target_url.set_scheme("https");
        tracing::warn!(converted_target = %target_url, "Converting HTTP to HTTPS for HTTP/3");
    }
    let ip = resolve_target(spec, &target_url, cx).await?;
    for p in ["connect", "tls", "processing", "transfer"] {
        cx.report
            .declare_labeled(&PROBE_HTTP_DURATION_SECONDS, &[("phase", p)]);
    }
    let (origin, first) = prepare_request(spec, req, &target_url, ip);
    let exchange = run_exchange(spec, &origin, first, cx).await?;
    check_final_response(spec, exchange, cx).await
}

/// Declares the families blackbox registers before it sends anything, so they read 0 when the
/// probe fails early.
fn declare_families(report: &mut Report) {
    for f in [
        &PROBE_HTTP_CONTENT_LENGTH,
        &PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH,
        &PROBE_HTTP_REDIRECTS,
        &PROBE_HTTP_SSL,
        &PROBE_HTTP_STATUS_CODE,
        &PROBE_HTTP_VERSION,
        &PROBE_FAILED_DUE_TO_REGEX,
    ] {
        report.declare(f);
    }
}

/// The target as a URL; `http://` is assumed when it has no scheme, as blackbox does.
fn parse_target(target: &str) -> Result<Url, ProbeFailure> {
    let target = if target.starts_with("http://") || target.starts_with("https://") {
        target.to_owned()
    } else {
        format!("http://{target}")
    };
    let url = Url::parse(&target).map_err(|e| {
        ProbeFailure::new(
            FailureKind::InvalidTarget,
            format!("could not parse target URL {target:?}: {e}"),
        )
    })?;
    if url.host().is_none() {
        return Err(ProbeFailure::new(
            FailureKind::InvalidTarget,
            format!("target URL {target:?} has no host"),
        ));
    }
    Ok(url)
}

/// Resolves the target's host (blackbox's `chooseProtocol`, recording `probe_ip_*` and the
/// resolve phase), unless `skip_resolve_phase_with_proxy` leaves it to the proxy.
async fn resolve_target(
    spec: &Spec,
    target_url: &Url,
    cx: &mut ProbeContext<'_>,
) -> Result<Option<IpAddr>, ProbeFailure> {
    if spec.skip_resolve_phase_with_proxy && spec.proxy_for(target_url).is_some() {
        return Ok(None);
    }
    let host = bare_host(target_url);
    match net::resolve(cx, net::Address::Target(&host), spec.ip).await {
        Ok((addr, lookup)) => {
            phase(cx.report, "resolve", lookup.as_secs_f64());
            Ok(Some(addr))
        }
        Err(e) => {
            phase(cx.report, "resolve", 0.0);
            Err(e)
        }
    }
}

/// The first request: its URL (with the resolved address as host, as blackbox rewrites it), Host
/// header, TLS name and headers (the module's, plus our User-Agent unless it sets one).
fn prepare_request(
    spec: &Spec,
    req: &ProbeRequest,
    target_url: &Url,
    ip: Option<IpAddr>,
) -> (Origin, Hop) {
    let host_override = req.hostname.clone().or_else(|| spec.host_header.clone());
    let host_header = host_override
        .clone()
        .unwrap_or_else(|| authority(target_url));
    let sni = spec
        .tls
        .server_name
        .clone()
        .or(host_override)
        .unwrap_or_else(|| bare_host(target_url));
    let url = match ip {
        Some(addr) => with_host(target_url, addr),
        None => target_url.clone(),
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &spec.headers {
        headers.append(k.clone(), v.clone());
    }
    if !headers.contains_key(header::USER_AGENT) {
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    }
    let origin = Origin {
        host_header: host_header.clone(),
        sni: sni.clone(),
        authority: authority(&url),
        ip,
    };
    let hop = Hop {
        url,
        host_header,
        sni,
        ip,
        method: spec.method.clone(),
        body: spec.body.clone(),
        headers,
    };
    (origin, hop)
}

/// The request chain's end: the final response (or the redirect not followed) and what the
/// checks need to know about how it came.
struct Exchange {
    response: http::Response<Body>,
    /// The TLS handshake of the final request, if it was over TLS.
    handshake: Option<tls::Handshake>,
    /// The final response is a redirect that was not followed: its body is not read.
    unfollowed: bool,
    /// Why following a redirect failed, if it did.
    failure: Option<ProbeFailure>,
    redirects: usize,
    /// When the final response's head arrived: the start of the transfer phase.
    response_start: Instant,
    _driver: AbortOnDrop,
}

/// Sends the first request and follows redirects (`redirect.rs`), keeping cookies in a fresh RFC
/// 6265 jar per probe, as blackbox gives each probe a new Go cookie jar.
async fn run_exchange(
    spec: &Spec,
    origin: &Origin,
    mut hop: Hop,
    cx: &mut ProbeContext<'_>,
) -> Result<Exchange, ProbeFailure> {
    let mut cookies = cookie_store::CookieStore::default();
    let mut redirects = 0usize;
    let mut hop_index = 0usize;
    loop {
        let SentRequest {
            response,
            handshake,
            response_start,
            _driver,
        } = send(spec, &hop, hop_index, &cookies, cx).await?;
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
        let (unfollowed, failure) =
            match redirect::next(spec, origin, &hop, status, location, hop_index + 1) {
                redirect::Next::Final => (false, None),
                redirect::Next::Unfollowed(failure) => {
                    redirects = hop_index + 1;
                    (true, failure)
                }
                redirect::Next::Follow(next) => {
                    redirects = hop_index + 1;
                    drop(response);
                    hop = *next;
                    hop_index += 1;
                    continue;
                }
            };
        return Ok(Exchange {
            response,
            handshake,
            unfollowed,
            failure,
            redirects,
            response_start,
            _driver,
        });
    }
}

/// The outcome of blackbox's checks so far: `success` can turn false without a failure of its
/// own (an unreadable body fails the regexes silently), and the first failure is the reason.
struct Verdict {
    success: bool,
    failure: Option<ProbeFailure>,
}

impl Verdict {
    fn fail(&mut self, failure: impl FnOnce() -> ProbeFailure) {
        self.success = false;
        self.failure.get_or_insert_with(failure);
    }
}

/// blackbox's checks on the final response, in its order: status, headers, body, version, TLS;
/// each records its families as it goes.
async fn check_final_response(
    spec: &Spec,
    exchange: Exchange,
    cx: &mut ProbeContext<'_>,
) -> Result<(), ProbeFailure> {
    let Exchange {
        response,
        handshake,
        unfollowed,
        failure,
        redirects,
        response_start,
        _driver,
    } = exchange;
    let mut verdict = Verdict {
        success: true,
        failure,
    };
    check_status(spec, &response, &mut verdict);
    record_response(cx.report, &response, redirects, handshake.is_some());
    if verdict.success {
        check_response_headers(spec, response.headers(), &mut verdict, cx.report);
    }
    let version = response.version();
    let last_modified = response
        .headers()
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    check_body(spec, response, unfollowed, &mut verdict, cx.report).await;
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
    check_version(spec, version, &mut verdict, cx.report);
    check_tls(spec, handshake.as_ref(), &mut verdict, cx.report);
    match verdict.failure {
        Some(f) => Err(f),
        None if verdict.success => Ok(()),
        None => Err(ProbeFailure::new(FailureKind::Assertion, "probe failed")),
    }
}

/// `valid_status_codes` (2xx by default).
fn check_status(spec: &Spec, response: &http::Response<Body>, verdict: &mut Verdict) {
    let status = response.status().as_u16();
    debug!(status_code = status, "Received HTTP response");
    if !spec.status_ok(status) {
        verdict.fail(|| {
            ProbeFailure::new(
                FailureKind::Assertion,
                format!("invalid HTTP response status code {status}"),
            )
            .because(Reason::StatusCode)
        });
    }
}

/// The status code, content length, redirect count and whether the final request used TLS.
fn record_response(
    report: &mut Report,
    response: &http::Response<Body>,
    redirects: usize,
    over_tls: bool,
) {
    report.set(
        &PROBE_HTTP_STATUS_CODE,
        f64::from(response.status().as_u16()),
    );
    report.set(&PROBE_HTTP_CONTENT_LENGTH, content_length(response) as f64);
    report.set(&PROBE_HTTP_REDIRECTS, redirects as f64);
    report.set(&PROBE_HTTP_SSL, if over_tls { 1.0 } else { 0.0 });
}

/// `fail_if_header_matches` and `fail_if_header_not_matches`, when any is configured.
fn check_response_headers(
    spec: &Spec,
    headers: &HeaderMap,
    verdict: &mut Verdict,
    report: &mut Report,
) {
    if spec.header_matches.is_empty() && spec.header_not_matches.is_empty() {
        return;
    }
    match check_headers(spec, headers) {
        Ok(()) => report.set(&PROBE_FAILED_DUE_TO_REGEX, 0.0),
        Err(e) => {
            report.set(&PROBE_FAILED_DUE_TO_REGEX, 1.0);
            verdict.fail(|| e);
        }
    }
}

/// Reads the body (counted, decompressed, bounded: `body.rs`) and applies the
/// `fail_if_body_*` expressions while the probe is still successful. An unfollowed redirect's
/// body is not read; blackbox matches the expressions against it as an empty body.
async fn check_body(
    spec: &Spec,
    response: http::Response<Body>,
    unfollowed: bool,
    verdict: &mut Verdict,
    report: &mut Report,
) {
    let has_regex = !spec.body_matches.is_empty() || !spec.body_not_matches.is_empty();
    let match_body = verdict.success && (has_regex || spec.cel.is_some());
    if unfollowed {
        if match_body && has_regex {
            let msg = body::match_regexes(spec, b"");
            report.set(
                &PROBE_FAILED_DUE_TO_REGEX,
                if msg.is_ok() { 0.0 } else { 1.0 },
            );
            if let Err(m) = msg {
                verdict.fail(|| regex_failure(m));
            }
        }
        if match_body && verdict.success {
            check_cel(spec, Vec::new(), verdict, report).await;
        }
        return;
    }
    let mut outcome = body::read(spec, response.into_body(), match_body, report).await;
    if match_body && !has_regex && outcome.matched.is_none() {
        // Too large or broken: the expression could not be evaluated.
        verdict.success = false;
        report.set(&super::cel::PROBE_FAILED_DUE_TO_CEL, 1.0);
    } else if match_body && has_regex {
        match outcome.matched {
            Some(Ok(())) => report.set(&PROBE_FAILED_DUE_TO_REGEX, 0.0),
            Some(Err(msg)) => {
                report.set(&PROBE_FAILED_DUE_TO_REGEX, 1.0);
                verdict.fail(|| regex_failure(msg));
            }
            None => {
                // The body could not be read (too large, broken): the regexes did not pass.
                verdict.success = false;
                report.set(&PROBE_FAILED_DUE_TO_REGEX, 1.0);
            }
        }
    }
    if match_body && verdict.success && outcome.error.is_none() {
        check_cel(spec, std::mem::take(&mut outcome.kept), verdict, report).await;
    }
    if let Some(e) = outcome.error {
        verdict.fail(|| e);
    }
}

/// Applies the module's CEL expressions (if any) to the kept body, as blackbox does after the
/// regexes passed; a large body is judged on a blocking thread.
async fn check_cel(spec: &Spec, body: Vec<u8>, verdict: &mut Verdict, report: &mut Report) {
    let Some(checks) = &spec.cel else {
        return;
    };
    let result = if body.len() <= 256 * 1024 {
        checks.check(&body)
    } else {
        let checks = checks.clone();
        tokio::task::spawn_blocking(move || checks.check(&body))
            .await
            .unwrap_or_else(|e| Err(format!("evaluating CEL failed: {e}")))
    };
    match result {
        Ok(()) => report.set(&super::cel::PROBE_FAILED_DUE_TO_CEL, 0.0),
        Err(m) => {
            report.set(&super::cel::PROBE_FAILED_DUE_TO_CEL, 1.0);
            verdict.fail(|| ProbeFailure::new(FailureKind::Assertion, m).because(Reason::Cel));
        }
    }
}

/// Records `probe_http_version` and applies `valid_http_versions`.
fn check_version(spec: &Spec, version: Version, verdict: &mut Verdict, report: &mut Report) {
    let (proto, number) = match version {
        Version::HTTP_09 => ("HTTP/0.9", 0.9),
        Version::HTTP_10 => ("HTTP/1.0", 1.0),
        Version::HTTP_11 => ("HTTP/1.1", 1.1),
        Version::HTTP_2 => ("HTTP/2.0", 2.0),
        Version::HTTP_3 => ("HTTP/3.0", 3.0),
        _ => ("unknown", 0.0),
    };
    report.set(&PROBE_HTTP_VERSION, number);
    if !spec.valid_http_versions.is_empty() && !spec.valid_http_versions.iter().any(|v| v == proto)
    {
        verdict.fail(|| {
            ProbeFailure::new(
                FailureKind::Assertion,
                format!("invalid HTTP version {proto}"),
            )
            .because(Reason::HttpVersion)
        });
    }
}

/// Records the final request's TLS facts and applies `fail_if_ssl` / `fail_if_not_ssl`.
fn check_tls(
    spec: &Spec,
    handshake: Option<&tls::Handshake>,
    verdict: &mut Verdict,
    report: &mut Report,
) {
    match handshake {
        Some(hs) => {
            tls::record(report, hs);
            if spec.fail_if_ssl {
                verdict.fail(|| {
                    ProbeFailure::new(FailureKind::Assertion, "final request was over SSL")
                        .because(Reason::Ssl)
                });
            }
        }
        None if spec.fail_if_not_ssl => verdict.fail(|| {
            ProbeFailure::new(FailureKind::Assertion, "final request was not over SSL")
                .because(Reason::Ssl)
        }),
        None => {}
    }
}

/// Go's `resp.ContentLength`: the header's value, 0 for bodiless statuses, else -1.
fn content_length(resp: &http::Response<Body>) -> i64 {
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

pub(super) struct SentRequest {
    pub response: http::Response<Body>,
    pub handshake: Option<tls::Handshake>,
    pub response_start: Instant,
    /// Keeps the connection driven until the response body has been read.
    pub _driver: AbortOnDrop,
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
    if spec.enable_http3 {
        let request = build_request(spec, hop, cookies, None, true)?;
        return super::h3::send(spec, hop, hop_index, port, request, cx).await;
    }
    let (stream, handshake, got_conn) = connect_hop(spec, hop, hop_index, proxy, port, cx).await?;
    let h2 = handshake.as_ref().and_then(|h| h.alpn.as_deref()) == Some(b"h2".as_slice());
    let request = build_request(spec, hop, cookies, proxy, h2)?;
    let (response, driver) = exchange(TokioIo::new(stream), request, h2).await?;
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

/// One request of `spec` to `url` outside a probe's own exchange (the oauth2 token request):
/// resolved without recording, sent through the same dial path, no redirect followed; the
/// status and at most 1 MiB of body.
pub(super) async fn fetch(
    spec: &Spec,
    url: &Url,
    cx: &mut ProbeContext<'_>,
) -> Result<(http::StatusCode, Bytes), ProbeFailure> {
    use http_body_util::BodyExt as _;
    let host = bare_host(url);
    let ip = match spec.proxy_for(url) {
        Some(_) if spec.skip_resolve_phase_with_proxy => None,
        _ => Some(net::resolve(cx, net::Address::Hop(&host), spec.ip).await?.0),
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &spec.headers {
        headers.append(k.clone(), v.clone());
    }
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    let hop = Hop {
        url: match ip {
            Some(addr) => with_host(url, addr),
            None => url.clone(),
        },
        host_header: authority(url),
        sni: spec.tls.server_name.clone().unwrap_or_else(|| host.clone()),
        ip,
        method: spec.method.clone(),
        body: spec.body.clone(),
        headers,
    };
    let cookies = cookie_store::CookieStore::default();
    let sent = send(spec, &hop, 0, &cookies, cx).await?;
    let status = sent.response.status();
    let body = http_body_util::Limited::new(sent.response.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| ProbeFailure::new(FailureKind::Protocol, format!("reading the answer: {e}")))?
        .to_bytes();
    Ok((status, body))
}

/// Resolves (hops after the first; the first used `chooseProtocol` already) and dials the hop's
/// host or its proxy, opens the proxy's CONNECT tunnel for https, and shakes hands; records the
/// resolve (after the first hop), connect and tls phases. Returns when the connection was ready.
async fn connect_hop(
    spec: &Spec,
    hop: &Hop,
    hop_index: usize,
    proxy: Option<&Proxy>,
    port: u16,
    cx: &mut ProbeContext<'_>,
) -> Result<(Stream, Option<tls::Handshake>, Instant), ProbeFailure> {
    let https = hop.url.scheme() == "https";
    let proxy_host = proxy.map(|p| {
        p.url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    });
    let hop_host = bare_host(&hop.url);
    if proxy.is_some()
        && let Some(ip) = hop.ip.or_else(|| resolve::parse_ip_literal(&hop_host))
    {
        net::permit_via_proxy(cx.dial_policy, SocketAddr::new(ip, port))?;
    }
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
    Ok((stream, handshake, got_conn))
}

/// The request for `hop`: the URI form (origin, absolute through a plain proxy, or with the
/// authority for HTTP/2), then Host, the module's headers, Authorization, cookies from the jar,
/// `Connection: close` (HTTP/1), Content-Length and a plain proxy's headers.
fn build_request(
    spec: &Spec,
    hop: &Hop,
    cookies: &cookie_store::CookieStore,
    proxy: Option<&Proxy>,
    h2: bool,
) -> Result<Request<BoxBody<Bytes, std::convert::Infallible>>, ProbeFailure> {
    let https = hop.url.scheme() == "https";
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
    Ok(request)
}

/// Runs the HTTP/1.1 or HTTP/2 handshake on `io` and sends `request`; the connection is driven
/// by a task that the returned guard aborts.
async fn exchange(
    io: TokioIo<Stream>,
    request: Request<BoxBody<Bytes, std::convert::Infallible>>,
    h2: bool,
) -> Result<(http::Response<Body>, AbortOnDrop), ProbeFailure> {
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
    use http_body_util::BodyExt as _;
    Ok((
        response.map(|b| b.map_err(std::io::Error::other).boxed_unsync()),
        driver,
    ))
}

pub(super) fn hyper_error(e: &hyper::Error) -> String {
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
