//! ICMP echo messages: building the request and recognising its reply. Pure byte work, no I/O.

use std::net::IpAddr;

/// The ICMP header length of an echo message (type, code, checksum, identifier, sequence).
pub const ECHO_HEADER_LEN: usize = 8;

/// The payload length when `payload_size` is 0: the same length blackbox sends, so packets on
/// the wire have the same size.
pub const DEFAULT_PAYLOAD_LEN: usize = 28;

/// The bytes every payload starts with (cut short when the payload is shorter); zeros follow.
const PAYLOAD_MARKER: &[u8] = b"lookout ICMP echo probe";

const ICMPV4_ECHO_REPLY: u8 = 0;
const ICMPV4_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// The payload of an echo request of `size` bytes (`0` means the default length).
pub fn payload(size: u16) -> Vec<u8> {
    let len = if size == 0 {
        DEFAULT_PAYLOAD_LEN
    } else {
        usize::from(size)
    };
    let mut data = vec![0u8; len];
    let marker = PAYLOAD_MARKER.len().min(len);
    data[..marker].copy_from_slice(&PAYLOAD_MARKER[..marker]);
    data
}

/// What identifies one probe's echo exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    /// The address the request goes to; replies must come from it.
    pub peer: IpAddr,
    /// The identifier written into the request. With datagram sockets the kernel replaces it
    /// with the socket's own and delivers only that socket's replies, so it is not compared.
    pub id: u16,
    /// Whether a reply's identifier must equal `id` (raw sockets see every process's replies).
    pub match_id: bool,
    /// The sequence number of the first request; a probe sending several echoes numbers them
    /// `seq`, `seq + 1`, … (wrapping), and `count` says how many.
    pub seq: u16,
    /// How many requests the probe sends (1 unless the module sets `count`).
    pub count: u16,
    /// The payload the reply must echo back.
    pub payload: Vec<u8>,
}

impl Echo {
    /// The echo request message (ICMP header and payload, no IP header).
    ///
    /// The ICMPv4 checksum is computed here (the kernel recomputes it for datagram sockets);
    /// the ICMPv6 checksum covers a pseudo-header only the kernel knows, and Linux always fills
    /// it in for ICMPv6 sockets, so it is left zero.
    pub fn request(&self) -> Vec<u8> {
        self.request_numbered(0)
    }

    /// The `index`th echo request (sequence number `seq + index`).
    pub fn request_numbered(&self, index: u16) -> Vec<u8> {
        let kind = match self.peer {
            IpAddr::V4(_) => ICMPV4_ECHO_REQUEST,
            IpAddr::V6(_) => ICMPV6_ECHO_REQUEST,
        };
        let mut msg = Vec::with_capacity(ECHO_HEADER_LEN + self.payload.len());
        msg.extend_from_slice(&[kind, 0, 0, 0]);
        msg.extend_from_slice(&self.id.to_be_bytes());
        msg.extend_from_slice(&self.seq.wrapping_add(index).to_be_bytes());
        msg.extend_from_slice(&self.payload);
        if self.peer.is_ipv4() {
            let sum = checksum(&msg);
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        msg
    }

    /// The length of the expected reply message (without IP header).
    pub fn reply_len(&self) -> usize {
        ECHO_HEADER_LEN + self.payload.len()
    }

    /// Whether `msg` (an ICMP message without IP header) received from `from` is the reply to
    /// this probe's first request.
    #[cfg(test)]
    pub fn is_reply(&self, from: IpAddr, msg: &[u8]) -> bool {
        self.reply_index(from, msg) == Some(0)
    }

    /// Which of this probe's requests `msg` (an ICMP message without IP header) received from
    /// `from` answers: an echo reply from the peer with one of our sequence numbers, our
    /// identifier (when compared) and our payload. Anything else (other probes' replies, our own
    /// request seen on loopback, errors, truncated or garbage bytes) is `None`.
    pub fn reply_index(&self, from: IpAddr, msg: &[u8]) -> Option<u16> {
        let reply = match self.peer {
            IpAddr::V4(_) => ICMPV4_ECHO_REPLY,
            IpAddr::V6(_) => ICMPV6_ECHO_REPLY,
        };
        let matches = from == self.peer
            && msg.len() == self.reply_len()
            && msg[0] == reply
            && msg[1] == 0
            && (!self.match_id || msg[4..6] == self.id.to_be_bytes())
            && msg[ECHO_HEADER_LEN..] == self.payload[..];
        if !matches {
            return None;
        }
        let index = u16::from_be_bytes([msg[6], msg[7]]).wrapping_sub(self.seq);
        (index < self.count.max(1)).then_some(index)
    }
}

/// What a raw IPv4 socket returns: the IP header and the ICMP message. Returns the message and
/// the header's TTL, or `None` when the bytes are not a whole IPv4 packet.
pub fn split_ipv4(packet: &[u8]) -> Option<(&[u8], u8)> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 || packet.len() < header_len {
        return None;
    }
    Some((&packet[header_len..], packet[8]))
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above folded the sum into 16 bits, so the cast keeps every bit.
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(peer: &str, match_id: bool) -> Echo {
        Echo {
            peer: peer.parse().unwrap(),
            id: 0x1234,
            match_id,
            seq: 0xabcd,
            count: 1,
            payload: payload(0),
        }
    }

    /// The reply a peer would send to `e`'s request.
    fn reply_to(e: &Echo) -> Vec<u8> {
        let mut m = e.request();
        m[0] = if e.peer.is_ipv4() { 0 } else { 129 };
        m
    }

    #[test]
    fn payload_has_the_requested_size_and_starts_with_the_marker() {
        assert_eq!(payload(0).len(), DEFAULT_PAYLOAD_LEN);
        assert!(payload(0).starts_with(b"lookout ICMP echo probe\0"));
        assert_eq!(payload(4), b"look");
        let big = payload(1000);
        assert_eq!(big.len(), 1000);
        assert!(big[PAYLOAD_MARKER.len()..].iter().all(|b| *b == 0));
    }

    #[test]
    fn ipv4_request_has_a_valid_checksum() {
        let m = echo("127.0.0.1", true).request();
        assert_eq!(&m[..2], &[8, 0]);
        assert_eq!(&m[4..8], &[0x12, 0x34, 0xab, 0xcd]);
        // A message with its checksum in place sums to zero.
        assert_eq!(checksum(&m), 0);
        // RFC 1071's example, odd length padded with a zero byte.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn ipv6_request_leaves_the_checksum_to_the_kernel() {
        let m = echo("::1", true).request();
        assert_eq!(&m[..4], &[128, 0, 0, 0]);
    }

    #[test]
    fn recognises_only_its_own_reply() {
        for peer in ["127.0.0.1", "::1"] {
            let e = echo(peer, true);
            let good = reply_to(&e);
            let from = e.peer;
            assert!(e.is_reply(from, &good), "{peer}");
            // Our own request, seen by a raw socket on loopback.
            assert!(!e.is_reply(from, &e.request()), "{peer}");
            // Another address.
            let other: IpAddr = if e.peer.is_ipv4() {
                "127.0.0.2".parse().unwrap()
            } else {
                "::2".parse().unwrap()
            };
            assert!(!e.is_reply(other, &good), "{peer}");
            // Another identifier, sequence, code or payload.
            for (i, b) in [(4, 0x99), (7, 0x00), (1, 1), (12, b'X')] {
                let mut m = good.clone();
                m[i] = b;
                assert!(!e.is_reply(from, &m), "{peer} byte {i}");
            }
            // Truncated, extended, empty.
            assert!(!e.is_reply(from, &good[..good.len() - 1]));
            assert!(!e.is_reply(from, &[good.as_slice(), &[0]].concat()));
            assert!(!e.is_reply(from, &[]));
        }
    }

    #[test]
    fn datagram_sockets_ignore_the_identifier_the_kernel_rewrote() {
        let e = echo("127.0.0.1", false);
        let mut m = reply_to(&e);
        m[4..6].copy_from_slice(&[0x55, 0x66]);
        assert!(e.is_reply(e.peer, &m));
    }

    #[test]
    fn several_requests_are_told_apart_by_their_index() {
        let mut e = echo("127.0.0.1", true);
        e.seq = 0xfffe;
        e.count = 3;
        for index in 0..3u16 {
            let mut reply = e.request_numbered(index);
            reply[0] = 0;
            // The sequence number wraps: 0xfffe, 0xffff, 0x0000.
            assert_eq!(reply[6..8], 0xfffeu16.wrapping_add(index).to_be_bytes());
            assert_eq!(e.reply_index(e.peer, &reply), Some(index));
        }
        // The request after the last one is not ours.
        let mut past = e.request_numbered(3);
        past[0] = 0;
        assert_eq!(e.reply_index(e.peer, &past), None);
        // Nor is the one before the first.
        let mut before = e.request_numbered(u16::MAX);
        before[0] = 0;
        assert_eq!(e.reply_index(e.peer, &before), None);
    }

    #[test]
    fn split_ipv4_skips_the_header_and_options() {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 63, 1];
        p.resize(20, 0);
        p.extend_from_slice(&[0, 0, 1, 2]);
        assert_eq!(split_ipv4(&p), Some((&[0u8, 0, 1, 2][..], 63)));
        let mut opts = vec![0x46, 0, 0, 0, 0, 0, 0, 0, 7, 1];
        opts.resize(24, 0);
        opts.push(9);
        assert_eq!(split_ipv4(&opts), Some((&[9u8][..], 7)));
        for garbage in [&[][..], &[0x45, 0, 0][..], &[0x60; 40][..], &[0x44; 40][..]] {
            assert_eq!(split_ipv4(garbage), None);
        }
    }
}
