//! A scripted line-protocol server on loopback (banners, SMTP-like dialogues with STARTTLS),
//! for the TCP prober's tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::certs::Leaf;

/// One step of the server's side of the dialogue.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes.
    Send(String),
    /// Read one line and record it.
    Read,
    /// Switch the connection to TLS (the server side of STARTTLS).
    StartTls,
    /// Read until the peer closes, never writing.
    Hold,
}

/// A running scripted server; lines it read are in `received`.
pub struct TcpTarget {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpTarget {
    /// `127.0.0.1:port`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// The lines the server read.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

fn acceptor(leaf: &Leaf) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key) = leaf.rustls_identity();
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Starts a server running `script` on every connection; TLS from the first byte when
/// `tls_from_start`, and `leaf` is the certificate for TLS and STARTTLS.
pub async fn start(script: Vec<Step>, leaf: Option<&Leaf>, tls_from_start: bool) -> TcpTarget {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let acceptor = leaf.map(acceptor);
    let rec = received.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(
                Box::new(tcp),
                script.clone(),
                acceptor.clone(),
                tls_from_start,
                rec.clone(),
            ));
        }
    });
    TcpTarget {
        addr,
        received,
        task,
    }
}

/// The same server on a unix socket at `path` (for `prober: unix`); `addr` is unused.
pub async fn start_unix(
    path: &std::path::Path,
    script: Vec<Step>,
    leaf: Option<&Leaf>,
    tls_from_start: bool,
) -> TcpTarget {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let acceptor = leaf.map(acceptor);
    let rec = received.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((unix, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(
                Box::new(unix),
                script.clone(),
                acceptor.clone(),
                tls_from_start,
                rec.clone(),
            ));
        }
    });
    TcpTarget {
        addr: "0.0.0.0:0".parse().unwrap(),
        received,
        task,
    }
}

/// Runs `script` on one connection.
async fn serve(
    conn: Box<dyn Io>,
    script: Vec<Step>,
    acceptor: Option<TlsAcceptor>,
    tls_from_start: bool,
    rec: Arc<Mutex<Vec<String>>>,
) {
    let mut io: BufReader<Box<dyn Io>> = if tls_from_start {
        match acceptor.as_ref().unwrap().accept(conn).await {
            Ok(s) => BufReader::new(Box::new(s)),
            Err(_) => return,
        }
    } else {
        BufReader::new(conn)
    };
    for step in script {
        match step {
            Step::Send(s) => {
                if io.get_mut().write_all(s.as_bytes()).await.is_err() {
                    return;
                }
            }
            Step::Read => {
                let mut line = String::new();
                match io.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => rec.lock().unwrap().push(line.trim_end().to_owned()),
                }
            }
            Step::StartTls => {
                let inner = io.into_inner();
                match acceptor.as_ref().unwrap().accept(inner).await {
                    Ok(s) => io = BufReader::new(Box::new(s)),
                    Err(_) => return,
                }
            }
            Step::Hold => {
                let mut sink = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut io, &mut sink).await;
                return;
            }
        }
    }
}
