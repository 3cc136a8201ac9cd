//! `enable_http3`: one request over QUIC (quinn) and HTTP/3 (h3), as blackbox 0.28 sends it
//! through quic-go's transport. The UDP socket comes from the dial path (`net::bind_udp_unconnected`, so
//! `probe_access` judges the address first) and is handed to a quinn endpoint of this probe's
//! own; the TLS settings are the module's (`tls::Spec::quic`: TLS 1.3, ALPN `h3`).
//!
//! Phases: QUIC has no connection before its handshake; as quic-go's transport under blackbox,
//! the handshake counts as both `connect` and `tls`. `processing` runs from the handshake's end
//! to the response headers and `transfer` over the body, as for HTTP/1.1 and 2.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::TryStreamExt as _;
use http::Request;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use tokio::time::Instant;

use super::Spec;
use super::client::{AbortOnDrop, Body, Hop, SentRequest, bare_host, phase};
use crate::probe::net;
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure};

fn protocol(message: String) -> ProbeFailure {
    ProbeFailure::new(FailureKind::Protocol, message)
}

/// Resolves (after the first hop), binds a UDP socket through the dial path, shakes hands over
/// QUIC and sends `request` over HTTP/3; records the hop's phases.
pub(super) async fn send(
    spec: &Spec,
    hop: &Hop,
    hop_index: usize,
    port: u16,
    request: Request<BoxBody<Bytes, std::convert::Infallible>>,
    cx: &mut ProbeContext<'_>,
) -> Result<SentRequest, ProbeFailure> {
    let ip = match hop.ip {
        Some(ip) => ip,
        None => {
            let host = bare_host(&hop.url);
            let (ip, lookup) = net::resolve(cx, net::Address::Hop(&host), spec.ip).await?;
            if hop_index > 0 {
                phase(cx.report, "resolve", lookup.as_secs_f64());
            }
            ip
        }
    };
    let peer = SocketAddr::new(ip, port);
    let socket = net::bind_udp_unconnected(cx.dial_policy, peer)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| ProbeFailure::new(FailureKind::Connect, format!("QUIC endpoint: {e}")))?;
    let tls = spec.tls.quic(&[b"h3"])?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.config.clone())
        .map_err(|e| ProbeFailure::new(FailureKind::Tls, format!("QUIC TLS settings: {e}")))?;
    let name = hop.sni.trim_start_matches('[').trim_end_matches(']');
    let connecting = endpoint
        .connect_with(quinn::ClientConfig::new(Arc::new(crypto)), peer, name)
        .map_err(|e| ProbeFailure::new(FailureKind::Tls, format!("QUIC connect: {e}")))?;
    let tls_start = Instant::now();
    let conn = connecting.await.map_err(|e| {
        let kind = match &e {
            quinn::ConnectionError::TimedOut => FailureKind::Timeout,
            _ => FailureKind::Tls,
        };
        ProbeFailure::new(kind, format!("QUIC handshake with {peer}: {e}"))
    })?;
    let got_conn = Instant::now();
    // quic-go reports the handshake as both phases; so does lookout, for the same sums.
    let handshake_secs = got_conn.duration_since(tls_start).as_secs_f64();
    phase(cx.report, "connect", handshake_secs);
    phase(cx.report, "tls", handshake_secs);
    let peer_certs: Vec<rustls::pki_types::CertificateDer<'static>> = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .map(|b| *b)
        .unwrap_or_default();
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    let handshake = tls.handshake(peer_certs, alpn);

    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| protocol(format!("HTTP/3 connection: {e}")))?;
    // The endpoint lives as long as the connection's driver, which the guard aborts.
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _endpoint = endpoint;
        let _ = std::future::poll_fn(|c| driver.poll_close(c)).await;
    }));
    let (mut parts, body) = request.into_parts();
    parts.version = http::Version::HTTP_3;
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut stream = sender
        .send_request(Request::from_parts(parts, ()))
        .await
        .map_err(|e| protocol(format!("HTTP/3 request: {e}")))?;
    if !body.is_empty() {
        stream
            .send_data(body)
            .await
            .map_err(|e| protocol(format!("HTTP/3 request body: {e}")))?;
    }
    stream
        .finish()
        .await
        .map_err(|e| protocol(format!("HTTP/3 request: {e}")))?;
    let response = stream
        .recv_response()
        .await
        .map_err(|e| protocol(format!("HTTP/3 response: {e}")))?;
    let response_start = Instant::now();
    phase(
        cx.report,
        "processing",
        response_start.duration_since(got_conn).as_secs_f64(),
    );
    let chunks = futures_util::stream::try_unfold(stream, |mut s| async move {
        match s.recv_data().await {
            Ok(Some(mut b)) => Ok(Some((b.copy_to_bytes(b.remaining()), s))),
            Ok(None) => Ok(None),
            Err(e) => Err(io::Error::other(e)),
        }
    });
    let body: Body = StreamBody::new(chunks.map_ok(Frame::data)).boxed_unsync();
    let (mut parts, ()) = response.into_parts();
    parts.version = http::Version::HTTP_3;
    Ok(SentRequest {
        response: http::Response::from_parts(parts, body),
        handshake: Some(handshake),
        response_start,
        _driver: driver,
    })
}
