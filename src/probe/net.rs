//! Shared connection plumbing for the TCP-based probers: dialling (with an optional source
//! address) and a stream that is plain TCP or TLS over TCP.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use crate::probe::prober::{FailureKind, ProbeFailure};

/// Connects to `addr`, from `source` when given (blackbox's `source_ip_address`).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, ProbeFailure> {
    let fail = |e: io::Error| {
        ProbeFailure::new(FailureKind::Connect, format!("connecting to {addr}: {e}"))
    };
    let stream = match source {
        None => TcpStream::connect(addr).await.map_err(fail)?,
        Some(src) => {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(fail)?;
            socket.bind(SocketAddr::new(src, 0)).map_err(|e| {
                ProbeFailure::new(
                    FailureKind::Connect,
                    format!("binding source address {src}: {e}"),
                )
            })?;
            socket.connect(addr).await.map_err(fail)?
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A connected stream: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Splits `host:port` as Go's `net.SplitHostPort` does (`[v6]:port` included); the port is
/// required.
pub fn split_host_port(target: &str) -> Result<(String, u16), ProbeFailure> {
    let bad = |why: &str| {
        ProbeFailure::new(
            FailureKind::InvalidTarget,
            format!("address {target:?}: {why}"),
        )
    };
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| bad("missing ']' in address"))?;
        let p = p
            .strip_prefix(':')
            .ok_or_else(|| bad("missing port in address"))?;
        (h, p)
    } else {
        let (h, p) = target
            .rsplit_once(':')
            .ok_or_else(|| bad("missing port in address"))?;
        if h.contains(':') {
            return Err(bad("too many colons in address"));
        }
        (h, p)
    };
    let port = port.parse::<u16>().map_err(|_| bad("invalid port"))?;
    Ok((host.to_owned(), port))
}

/// Like `split_host_port`, with `default` when the target has no port.
pub fn split_host_default_port(target: &str, default: u16) -> Result<(String, u16), ProbeFailure> {
    let bare_v6 =
        target.contains(':') && !target.starts_with('[') && target.parse::<IpAddr>().is_ok();
    if bare_v6 {
        return Ok((target.to_owned(), default));
    }
    let has_port = if target.starts_with('[') {
        target.contains("]:")
    } else {
        target.contains(':')
    };
    if has_port {
        split_host_port(target)
    } else {
        Ok((
            target
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            default,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("example.org:25").unwrap(),
            ("example.org".into(), 25)
        );
        assert_eq!(split_host_port("[::1]:53").unwrap(), ("::1".into(), 53));
        assert!(split_host_port("example.org").is_err());
        assert!(split_host_port("::1:53").is_err());
        assert_eq!(
            split_host_default_port("example.org", 53).unwrap(),
            ("example.org".into(), 53)
        );
        assert_eq!(
            split_host_default_port("::1", 53).unwrap(),
            ("::1".into(), 53)
        );
        assert_eq!(
            split_host_default_port("[::1]", 853).unwrap(),
            ("::1".into(), 853)
        );
        assert_eq!(
            split_host_default_port("127.0.0.1:5353", 53).unwrap(),
            ("127.0.0.1".into(), 5353)
        );
    }
}
