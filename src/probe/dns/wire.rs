//! The probe's DNS messages: the query (built with hickory-proto) and the response, decoded with
//! the leniency of Go's miekg/dns so that a reply blackbox accepts is accepted here too.
//!
//! The response decoder is our own rather than hickory's because blackbox's validators need each
//! record exactly as miekg prints it (see `render`), OPT records counted in the additional
//! section, and miekg's tolerance of header counts that promise more records than the message
//! holds (the sections simply end where the message ends).

use hickory_resolver::proto::op::{Message, Query};
use hickory_resolver::proto::rr::{DNSClass, Name, RecordType};

use super::render::{self, Record, TYPE_OPT};

/// The size of a DNS message header.
pub const HEADER_LEN: usize = 12;

/// A decoded response: what blackbox's DNS prober looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The message id.
    pub id: u16,
    /// The response code, extended by the OPT record's high bits when there is one.
    pub rcode: u16,
    /// The answer section.
    pub answer: Vec<Record>,
    /// The authority section.
    pub authority: Vec<Record>,
    /// The additional section (OPT included, as miekg keeps it).
    pub additional: Vec<Record>,
}

/// Builds the query blackbox sends: one question, a random id, RD as configured, no EDNS.
/// Returns the id and the message bytes.
pub fn query(
    name: &str,
    qtype: RecordType,
    qclass: DNSClass,
    recursion_desired: bool,
) -> Result<(u16, Vec<u8>), String> {
    let mut qname =
        Name::from_ascii(name).map_err(|e| format!("query name {name:?} is not valid: {e}"))?;
    qname.set_fqdn(true);
    let mut query = Query::query(qname, qtype);
    query.set_query_class(qclass);
    let mut msg = Message::query();
    msg.metadata.recursion_desired = recursion_desired;
    msg.add_query(query);
    let bytes = msg
        .to_vec()
        .map_err(|e| format!("encoding the query for {name:?}: {e}"))?;
    Ok((msg.metadata.id, bytes))
}

fn u16_at(msg: &[u8], off: usize) -> Result<u16, String> {
    msg.get(off..off + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| "overflow unpacking uint16".to_owned())
}

fn u32_at(msg: &[u8], off: usize) -> Result<u32, String> {
    msg.get(off..off + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| "overflow unpacking uint32".to_owned())
}

/// Reads up to `count` records from `off`; the section ends early where the message ends.
fn section(msg: &[u8], off: &mut usize, count: u16) -> Result<Vec<Record>, String> {
    // The count is the peer's claim: never allocate from it.
    let mut records = Vec::new();
    for _ in 0..count {
        if *off >= msg.len() {
            break;
        }
        let (owner, mut pos) = render::read_name(msg, *off)?;
        let rtype = u16_at(msg, pos)?;
        let class = u16_at(msg, pos + 2)?;
        let ttl = u32_at(msg, pos + 4)?;
        let rdlength = usize::from(u16_at(msg, pos + 8)?);
        pos += 10;
        let end = pos + rdlength;
        let rdata_msg = msg
            .get(..end)
            .ok_or_else(|| "overflowing header size".to_owned())?;
        records.push(render::render(&owner, rtype, class, ttl, rdata_msg, pos)?);
        *off = end;
    }
    Ok(records)
}

/// Decodes a response. Errors name what was wrong, as miekg's do.
pub fn decode(msg: &[u8]) -> Result<Response, String> {
    if msg.len() < HEADER_LEN {
        return Err(format!("short read: {} bytes", msg.len()));
    }
    let id = u16_at(msg, 0)?;
    let flags = u16_at(msg, 2)?;
    let counts = [
        u16_at(msg, 4)?,
        u16_at(msg, 6)?,
        u16_at(msg, 8)?,
        u16_at(msg, 10)?,
    ];
    let mut response = Response {
        id,
        rcode: flags & 0x000F,
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
    };
    let mut off = HEADER_LEN;
    // A bare header is a valid answer (some resolvers send one with REFUSED).
    if off == msg.len() {
        return Ok(response);
    }
    for _ in 0..counts[0] {
        let (_, next) = render::read_name(msg, off)?;
        off = next;
        // miekg accepts a question cut short after its name or type.
        for _field in 0..2 {
            if off == msg.len() {
                break;
            }
            u16_at(msg, off)?;
            off += 2;
        }
    }
    response.answer = section(msg, &mut off, counts[1])?;
    response.authority = section(msg, &mut off, counts[2])?;
    response.additional = section(msg, &mut off, counts[3])?;
    if let Some(opt) = response
        .additional
        .iter()
        .rev()
        .find(|r| r.rtype == TYPE_OPT)
    {
        // The OPT TTL's top byte holds the upper eight bits of a 12-bit rcode.
        let high = u16::try_from(opt.ttl >> 24).unwrap_or(0);
        response.rcode |= high << 4;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        for c in counts {
            out.extend_from_slice(&c.to_be_bytes());
        }
        out
    }

    const QUESTION: &[u8] = b"\x07example\x03org\x00\x00\x01\x00\x01";

    fn a_record(ttl: u32, ip: [u8; 4]) -> Vec<u8> {
        // Owner compressed to the question name at offset 12.
        let mut out = vec![0xC0, 12, 0, 1, 0, 1];
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&[0, 4]);
        out.extend_from_slice(&ip);
        out
    }

    #[test]
    fn query_has_one_question_and_the_rd_bit() {
        let (id, bytes) = query("example.org", RecordType::MX, DNSClass::IN, true).unwrap();
        assert_eq!(u16_at(&bytes, 0).unwrap(), id);
        assert_eq!(bytes[2] & 0x01, 1, "RD set");
        assert_eq!(&bytes[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[12..], b"\x07example\x03org\x00\x00\x0f\x00\x01");
        let (_, bytes) = query("example.org.", RecordType::A, DNSClass::CH, false).unwrap();
        assert_eq!(bytes[2] & 0x01, 0, "RD clear");
        assert_eq!(&bytes[12..], b"\x07example\x03org\x00\x00\x01\x00\x03");
        assert!(query(&"a".repeat(64), RecordType::A, DNSClass::IN, true).is_err());
    }

    #[test]
    fn decodes_sections_and_counts() {
        let mut msg = header(7, 0x8180, [1, 2, 0, 0]);
        msg.extend_from_slice(QUESTION);
        msg.extend(a_record(60, [192, 0, 2, 1]));
        msg.extend(a_record(60, [192, 0, 2, 2]));
        let r = decode(&msg).unwrap();
        assert_eq!(r.id, 7);
        assert_eq!(r.rcode, 0);
        let texts: Vec<&str> = r.answer.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "example.org.\t60\tIN\tA\t192.0.2.1",
                "example.org.\t60\tIN\tA\t192.0.2.2"
            ]
        );
        assert!(r.authority.is_empty() && r.additional.is_empty());
    }

    #[test]
    fn counts_that_overstate_end_at_the_message_end() {
        let mut msg = header(1, 0x8183, [1, 5, 9, 9]);
        msg.extend_from_slice(QUESTION);
        msg.extend(a_record(1, [10, 0, 0, 1]));
        let r = decode(&msg).unwrap();
        assert_eq!(r.rcode, 3);
        assert_eq!(r.answer.len(), 1);
        assert!(r.authority.is_empty());
        // A header alone is a whole (if empty) response.
        let r = decode(&header(2, 0x8185, [1, 0, 0, 0])).unwrap();
        assert_eq!((r.id, r.rcode), (2, 5));
    }

    #[test]
    fn extended_rcode_comes_from_opt() {
        let mut msg = header(1, 0x8000, [0, 0, 0, 1]);
        // Root owner, type OPT, class 512, TTL with extended rcode 1 (→ 16, BADVERS/BADSIG).
        msg.extend_from_slice(&[0, 0, 41, 2, 0, 1, 0, 0, 0, 0, 0]);
        let r = decode(&msg).unwrap();
        assert_eq!(r.rcode, 16);
        assert_eq!(r.additional.len(), 1, "OPT counts as an additional record");
    }

    #[test]
    fn garbage_fails_without_panicking() {
        assert!(decode(b"").is_err());
        assert!(decode(b"0123456789a").is_err());
        let mut msg = header(1, 0x8000, [0, 1, 0, 0]);
        msg.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 0, 0xFF, 0xFF, 1]);
        assert_eq!(decode(&msg).unwrap_err(), "overflowing header size");
        let mut msg = header(1, 0x8000, [2, 0, 0, 0]);
        msg.extend_from_slice(QUESTION);
        assert_eq!(decode(&msg).unwrap_err(), "buffer size too small");
        // Every prefix and a few byte flips of a valid message decode or fail cleanly.
        let mut good = header(9, 0x8180, [1, 1, 0, 0]);
        good.extend_from_slice(QUESTION);
        good.extend(a_record(5, [1, 2, 3, 4]));
        for n in 0..good.len() {
            let _ = decode(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0x00, 0x3F, 0xC0, 0xFF] {
                let mut m = good.clone();
                m[i] = v;
                let _ = decode(&m);
            }
        }
    }
}
