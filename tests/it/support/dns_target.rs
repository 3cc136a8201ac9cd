//! DNS targets for the DNS prober tests.
//!
//! - [`start`]: a real authoritative hickory-server for [`ZONE`] on loopback, over UDP and TCP
//!   and, given a certificate, DNS over TLS and DNS over HTTPS (HTTP/2, `/dns-query`).
//! - [`udp_responder`]: a bare UDP socket that answers each query with whatever a closure
//!   returns (a given rcode, garbage, or nothing), for the cases a correct server never produces.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use rustls::ServerConfig;
use tokio::net::{TcpListener, UdpSocket};

use super::certs::Leaf;

/// The zone every [`start`]ed server is authoritative for.
pub const ZONE: &str = "example.org.";
/// The zone's SOA serial.
pub const SERIAL: u32 = 2024010101;

/// The records of [`ZONE`], in zone-file notation (for reading the tests):
///
/// ```text
/// example.org.      3600 IN SOA   ns1.example.org. hostmaster.example.org. 2024010101 7200 3600 1209600 300
/// example.org.      3600 IN NS    ns1.example.org.
/// example.org.      3600 IN A     192.0.2.1
/// example.org.      3600 IN A     192.0.2.2
/// example.org.      3600 IN AAAA  2001:db8::1
/// example.org.      3600 IN MX    10 mail.example.org.
/// example.org.      3600 IN TXT   "v=spf1 -all"
/// ns1.example.org.  3600 IN A     192.0.2.53
/// mail.example.org. 3600 IN A     192.0.2.25
/// www.example.org.  3600 IN CNAME example.org.
/// ```
///
/// The addresses are data in answers only; nothing ever connects to them.
fn records() -> Vec<Record> {
    let name = |s: &str| Name::from_str(s).unwrap();
    let rr = |owner: &str, data: RData| Record::from_rdata(name(owner), 3600, data);
    vec![
        rr(
            ZONE,
            RData::SOA(SOA::new(
                name("ns1.example.org."),
                name("hostmaster.example.org."),
                SERIAL,
                7200,
                3600,
                1_209_600,
                300,
            )),
        ),
        rr(ZONE, RData::NS(NS(name("ns1.example.org.")))),
        rr(ZONE, RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))),
        rr(ZONE, RData::A(A(Ipv4Addr::new(192, 0, 2, 2)))),
        rr(
            ZONE,
            RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
        ),
        rr(ZONE, RData::MX(MX::new(10, name("mail.example.org.")))),
        rr(ZONE, RData::TXT(TXT::new(vec!["v=spf1 -all".to_owned()]))),
        rr(
            "ns1.example.org.",
            RData::A(A(Ipv4Addr::new(192, 0, 2, 53))),
        ),
        rr(
            "mail.example.org.",
            RData::A(A(Ipv4Addr::new(192, 0, 2, 25))),
        ),
        rr("www.example.org.", RData::CNAME(CNAME(name(ZONE)))),
    ]
}

/// A running authoritative server.
pub struct DnsServer {
    /// Its UDP address.
    pub udp: SocketAddr,
    /// Its TCP address.
    pub tcp: SocketAddr,
    /// Its DNS-over-TLS address, when started with a certificate.
    pub tls: Option<SocketAddr>,
    /// Its DNS-over-HTTPS address (path `/dns-query`), when started with a certificate.
    pub https: Option<SocketAddr>,
    /// Keeps the server's tasks alive.
    _server: Server<Catalog>,
}

fn tls_config(leaf: &Leaf, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key) = leaf.rustls_identity();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Starts an authoritative server for [`ZONE`] on 127.0.0.1 (UDP and TCP, plus DNS over TLS
/// with `leaf` when given), each on its own free port.
pub async fn start(leaf: Option<&Leaf>) -> DnsServer {
    start_with(leaf, &[]).await
}

/// Like [`start`], with extra A records in [`ZONE`] (`("name.example.org.", address)`), such
/// as names resolving to loopback addresses for lookout's own resolver.
pub async fn start_with(leaf: Option<&Leaf>, extra: &[(&str, Ipv4Addr)]) -> DnsServer {
    let origin = Name::from_str(ZONE).unwrap();
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let extra = extra.iter().map(|(owner, ip)| {
        Record::from_rdata(Name::from_str(owner).unwrap(), 3600, RData::A(A(*ip)))
    });
    for record in records().into_iter().chain(extra) {
        assert!(zone.upsert_mut(record, SERIAL), "record accepted");
    }
    let mut catalog = Catalog::new();
    let handlers: Vec<Arc<dyn ZoneHandler>> = vec![Arc::new(zone)];
    catalog.upsert(LowerName::new(&origin), handlers);

    let mut server = Server::new(catalog);
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_addr = udp.local_addr().unwrap();
    server.register_socket(udp);
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    server.register_listener(tcp, Duration::from_secs(5), 16);
    let (tls, https) = match leaf {
        Some(leaf) => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let tls = listener.local_addr().unwrap();
            server
                .register_tls_listener_with_tls_config(
                    listener,
                    Duration::from_secs(5),
                    tls_config(leaf, &[]),
                )
                .unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let https = listener.local_addr().unwrap();
            server
                .register_https_listener_with_tls_config(
                    listener,
                    Duration::from_secs(5),
                    tls_config(leaf, &[b"h2"]),
                    None,
                    "/dns-query".to_owned(),
                )
                .unwrap();
            (Some(tls), Some(https))
        }
        None => (None, None),
    };
    DnsServer {
        udp: udp_addr,
        tcp: tcp_addr,
        tls,
        https,
        _server: server,
    }
}

/// Starts a UDP socket on 127.0.0.1 that answers every datagram with `reply(query, sender)`, or
/// stays silent when it returns `None`. Runs until the test's runtime ends.
pub async fn udp_responder<F>(reply: F) -> SocketAddr
where
    F: Fn(&[u8], SocketAddr) -> Option<Vec<u8>> + Send + 'static,
{
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            if let Some(answer) = reply(&buf[..n], peer) {
                let _ = socket.send_to(&answer, peer).await;
            }
        }
    });
    addr
}

/// A reply to `query` with `rcode` and no records.
pub fn rcode_reply(query: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let query = Message::from_vec(query).unwrap();
    let mut reply = Message::error_msg(query.metadata.id, query.metadata.op_code, rcode);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.add_queries(query.queries.iter().cloned());
    reply.to_vec().unwrap()
}

/// The id of a query.
pub fn query_id(query: &[u8]) -> [u8; 2] {
    [query[0], query[1]]
}
