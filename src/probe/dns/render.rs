//! Resource records printed as Go's miekg/dns prints them (`RR.String()`).
//!
//! blackbox matches the `validate_*_rrs` regular expressions against that text, so users have
//! written them against it: `example.org.\t3600\tIN\tMX\t10 mail.example.org.`. The rules below
//! follow miekg/dns v1.1.50, the version blackbox 0.23 is built with:
//! - the header is the owner name, TTL, class and type, each followed by a tab;
//! - a name escapes `. ' @ ; ( ) " \` and the space with a backslash, and any other byte outside
//!   `' '..='~'` as `\DDD`;
//! - a character string is quoted, escapes `"` and `\` with a backslash and unprintable bytes as
//!   `\DDD`;
//! - rdata that ends early leaves the remaining fields at their zero values (miekg stops reading
//!   at the end of the rdata), while a field cut in half or bytes left over fail the message;
//! - a type miekg does not know prints in RFC 3597 form: `CLASS1\tTYPE999\t\# 2 abcd`.
//!
//! Decoding and printing happen together: miekg decodes every record of a response, so a record
//! it cannot decode fails the whole exchange, and so it does here.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine as _;

/// One record of a response: what blackbox looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The record type.
    pub rtype: u16,
    /// The TTL (for OPT, the extended rcode, version and flags).
    pub ttl: u32,
    /// The record as miekg/dns prints it.
    pub text: String,
    /// The serial, when the record is an SOA.
    pub soa_serial: Option<u32>,
}

/// The record type OPT (EDNS).
pub const TYPE_OPT: u16 = 41;

/// The record types miekg/dns decodes (its `TypeToRR`), with the names it prints for them.
/// Every other type is printed in RFC 3597 form.
const KNOWN_TYPES: &[(u16, &str)] = &[
    (1, "A"),
    (2, "NS"),
    (3, "MD"),
    (4, "MF"),
    (5, "CNAME"),
    (6, "SOA"),
    (7, "MB"),
    (8, "MG"),
    (9, "MR"),
    (10, "NULL"),
    (12, "PTR"),
    (13, "HINFO"),
    (14, "MINFO"),
    (15, "MX"),
    (16, "TXT"),
    (17, "RP"),
    (18, "AFSDB"),
    (19, "X25"),
    (21, "RT"),
    (23, "NSAP-PTR"),
    (24, "SIG"),
    (25, "KEY"),
    (26, "PX"),
    (27, "GPOS"),
    (28, "AAAA"),
    (29, "LOC"),
    (31, "EID"),
    (32, "NIMLOC"),
    (33, "SRV"),
    (35, "NAPTR"),
    (36, "KX"),
    (37, "CERT"),
    (39, "DNAME"),
    (41, "OPT"),
    (42, "APL"),
    (43, "DS"),
    (44, "SSHFP"),
    (46, "RRSIG"),
    (47, "NSEC"),
    (48, "DNSKEY"),
    (49, "DHCID"),
    (50, "NSEC3"),
    (51, "NSEC3PARAM"),
    (52, "TLSA"),
    (53, "SMIMEA"),
    (55, "HIP"),
    (56, "NINFO"),
    (57, "RKEY"),
    (58, "TALINK"),
    (59, "CDS"),
    (60, "CDNSKEY"),
    (61, "OPENPGPKEY"),
    (62, "CSYNC"),
    (63, "ZONEMD"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (99, "SPF"),
    (100, "UINFO"),
    (101, "UID"),
    (102, "GID"),
    (104, "NID"),
    (105, "L32"),
    (106, "L64"),
    (107, "LP"),
    (108, "EUI48"),
    (109, "EUI64"),
    (249, "TKEY"),
    (250, "TSIG"),
    (255, "ANY"),
    (256, "URI"),
    (257, "CAA"),
    (258, "AVC"),
    (32768, "TA"),
    (32769, "DLV"),
];

fn type_name(rtype: u16) -> Option<&'static str> {
    KNOWN_TYPES
        .iter()
        .find(|(code, _)| *code == rtype)
        .map(|(_, name)| *name)
}

/// miekg's `Class.String()`: a mnemonic unless it is also a type name (ANY), else `CLASSn`.
fn class_name(class: u16) -> String {
    match class {
        1 => "IN".to_owned(),
        2 => "CS".to_owned(),
        3 => "CH".to_owned(),
        4 => "HS".to_owned(),
        254 => "NONE".to_owned(),
        other => format!("CLASS{other}"),
    }
}

/// Appends `\DDD` for `b`.
fn push_ddd(out: &mut String, b: u8) {
    // Cannot fail: writing to a String is infallible.
    let _ = write!(out, "\\{b:03}");
}

/// Appends one label byte as miekg escapes it in names.
fn push_name_byte(out: &mut String, b: u8) {
    match b {
        b'.' | b' ' | b'\'' | b'@' | b';' | b'(' | b')' | b'"' | b'\\' => {
            out.push('\\');
            out.push(char::from(b));
        }
        b' '..=b'~' => out.push(char::from(b)),
        _ => push_ddd(out, b),
    }
}

/// Appends one character-string byte as miekg escapes it (inside quotes).
fn push_txt_byte(out: &mut String, b: u8) {
    match b {
        b'"' | b'\\' => {
            out.push('\\');
            out.push(char::from(b));
        }
        b' '..=b'~' => out.push(char::from(b)),
        _ => push_ddd(out, b),
    }
}

/// A character string's bytes in miekg's escaped (unquoted) form.
fn escape_txt(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        push_txt_byte(&mut out, b);
    }
    out
}

/// Quoted strings separated by spaces: miekg's `sprintTxt`.
fn quoted(strings: &[String]) -> String {
    strings
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(" ")
}

/// miekg's `sprintTxtOctet` over raw bytes (CAA values, URI targets): backslash sequences in the
/// data are read as escapes, then every byte is printed as in a character string.
fn txt_octet(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() + 2);
    out.push('"');
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'.') {
            out.push_str("\\.");
            i += 2;
            continue;
        }
        if raw[i] != b'\\' {
            push_txt_byte(&mut out, raw[i]);
            i += 1;
            continue;
        }
        match &raw[i + 1..] {
            // A dangling backslash is dropped.
            [] => i += 1,
            [d1, d2, d3, ..]
                if d1.is_ascii_digit() && d2.is_ascii_digit() && d3.is_ascii_digit() =>
            {
                // Go computes the value in a byte, so "\999" wraps as it does there.
                let v = (d1 - b'0')
                    .wrapping_mul(100)
                    .wrapping_add((d2 - b'0').wrapping_mul(10))
                    .wrapping_add(d3 - b'0');
                push_txt_byte(&mut out, v);
                i += 4;
            }
            [next, ..] => {
                push_txt_byte(&mut out, *next);
                i += 2;
            }
        }
    }
    out.push('"');
    out
}

/// Lower-case hex, as Go's `hex.EncodeToString`.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Cannot fail: writing to a String is infallible.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// An IPv6 address as Go's `net.IP.String()` prints it: IPv4-mapped addresses in dotted form.
fn go_ipv6(ip: Ipv6Addr) -> String {
    match ip.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => ip.to_string(),
    }
}

/// The most compression pointers one name may follow (miekg's `maxCompressionPointers`).
const MAX_POINTERS: usize = 126;
/// The wire length budget of a name (miekg's `maxDomainNameWireOctets`).
const MAX_NAME_OCTETS: usize = 255;

/// Reads the (possibly compressed) name at `off` in `msg`, returning it in miekg's presentation
/// form and the offset after it.
pub fn read_name(msg: &[u8], mut off: usize) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut after: Option<usize> = None;
    let mut pointers = 0;
    let mut budget = MAX_NAME_OCTETS;
    loop {
        let c = usize::from(*msg.get(off).ok_or("buffer size too small")?);
        off += 1;
        match c & 0xC0 {
            0x00 if c == 0 => break,
            0x00 => {
                let label = msg.get(off..off + c).ok_or("buffer size too small")?;
                if c + 1 >= budget {
                    return Err("domain name exceeded 255 wire-format octets".to_owned());
                }
                budget -= c + 1;
                for &b in label {
                    push_name_byte(&mut out, b);
                }
                out.push('.');
                off += c;
            }
            0xC0 => {
                let low = usize::from(*msg.get(off).ok_or("buffer size too small")?);
                off += 1;
                if after.is_none() {
                    after = Some(off);
                }
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err("too many compression pointers".to_owned());
                }
                off = ((c ^ 0xC0) << 8) | low;
            }
            _ => return Err("bad rdata".to_owned()),
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    Ok((out, after.unwrap_or(off)))
}

/// A cursor over one record's rdata. `msg` ends where the rdata ends (as miekg truncates it),
/// so names inside can point back into the message but not past the record.
struct Rdata<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Rdata<'a> {
    /// Whether the rdata is used up; every later field then reads as its zero value.
    fn done(&self) -> bool {
        self.pos >= self.msg.len()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let bytes = self
            .msg
            .get(self.pos..self.pos + n)
            .ok_or_else(|| format!("overflow unpacking {what}"))?;
        self.pos += n;
        Ok(bytes)
    }

    fn uint(&mut self, n: usize, what: &str) -> Result<u64, String> {
        if self.done() {
            return Ok(0);
        }
        let bytes = self.take(n, what)?;
        Ok(bytes.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn u8(&mut self) -> Result<u64, String> {
        self.uint(1, "uint8")
    }

    fn u16(&mut self) -> Result<u64, String> {
        self.uint(2, "uint16")
    }

    fn u32(&mut self) -> Result<u64, String> {
        self.uint(4, "uint32")
    }

    fn name(&mut self) -> Result<String, String> {
        if self.done() {
            return Ok(String::new());
        }
        let (name, next) = read_name(self.msg, self.pos)?;
        self.pos = next;
        Ok(name)
    }

    /// One character string, escaped (miekg's `unpackString`).
    fn string(&mut self) -> Result<String, String> {
        if self.done() {
            return Ok(String::new());
        }
        let len = usize::from(self.take(1, "txt")?[0]);
        Ok(escape_txt(self.take(len, "txt")?))
    }

    /// Character strings up to the end of the rdata.
    fn strings(&mut self) -> Result<Vec<String>, String> {
        let mut all = Vec::new();
        while !self.done() {
            all.push(self.string()?);
        }
        Ok(all)
    }

    /// The rest of the rdata.
    fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.msg.len());
        self.pos = self.msg.len();
        &self.msg[start..]
    }

    fn ipv4(&mut self) -> Result<Option<Ipv4Addr>, String> {
        if self.done() {
            return Ok(None);
        }
        let b = self.take(4, "a")?;
        Ok(Some(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
    }

    fn ipv6(&mut self) -> Result<Option<Ipv6Addr>, String> {
        if self.done() {
            return Ok(None);
        }
        let b = self.take(16, "aaaa")?;
        let mut octets = [0u8; 16];
        octets.copy_from_slice(b);
        Ok(Some(Ipv6Addr::from(octets)))
    }

    fn finish(&self) -> Result<(), String> {
        if self.pos == self.msg.len() {
            Ok(())
        } else {
            Err("bad rdlength".to_owned())
        }
    }
}

/// The EDNS pseudo-record as miekg prints it. Options are checked for framing but not printed.
fn opt_text(rd: &mut Rdata<'_>, class: u16, ttl: u32) -> Result<String, String> {
    while !rd.done() {
        let header = rd.take(4, "opt")?;
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        rd.take(len, "opt")?;
    }
    let version = (ttl >> 16) & 0xFF;
    let flags = if ttl & 0x8000 != 0 { "do; " } else { "" };
    Ok(format!(
        "\n;; OPT PSEUDOSECTION:\n; EDNS: version {version}; flags: {flags}; udp: {class}"
    ))
}

/// Decodes the rdata of one record (in `msg[start..]`, with `msg` ending where the rdata ends)
/// and prints the whole record.
pub fn render(
    owner: &str,
    rtype: u16,
    class: u16,
    ttl: u32,
    msg: &[u8],
    start: usize,
) -> Result<Record, String> {
    let mut rd = Rdata { msg, pos: start };
    let record = |text: String, soa_serial: Option<u32>| Record {
        rtype,
        ttl,
        text,
        soa_serial,
    };
    let Some(type_name) = type_name(rtype) else {
        let data = rd.rest();
        return Ok(record(
            format!(
                "{owner}\t{ttl}\tCLASS{class}\tTYPE{rtype}\t\\# {} {}",
                data.len(),
                hex(data)
            ),
            None,
        ));
    };
    if rtype == TYPE_OPT {
        let text = opt_text(&mut rd, class, ttl)?;
        return Ok(record(text, None));
    }
    let header = format!("{owner}\t{ttl}\t{}\t{type_name}\t", class_name(class));
    let mut serial = None;
    let body = match type_name {
        "A" => rd.ipv4()?.map(|ip| ip.to_string()).unwrap_or_default(),
        "AAAA" => rd.ipv6()?.map(go_ipv6).unwrap_or_default(),
        "NS" | "MD" | "MF" | "CNAME" | "MB" | "MG" | "MR" | "PTR" | "DNAME" | "NSAP-PTR" => {
            rd.name()?
        }
        "SOA" => {
            let ns = rd.name()?;
            let mbox = rd.name()?;
            let s = rd.u32()?;
            let (refresh, retry, expire, min) = (rd.u32()?, rd.u32()?, rd.u32()?, rd.u32()?);
            serial = u32::try_from(s).ok();
            format!("{ns} {mbox} {s} {refresh} {retry} {expire} {min}")
        }
        "NULL" => {
            let data = String::from_utf8_lossy(rd.rest()).into_owned();
            rd.finish()?;
            return Ok(record(format!(";{header}{data}"), None));
        }
        "HINFO" => {
            let cpu = rd.string()?;
            let os = rd.string()?;
            quoted(&[cpu, os])
        }
        "MINFO" | "RP" | "TALINK" => {
            let a = rd.name()?;
            format!("{a} {}", rd.name()?)
        }
        "MX" | "AFSDB" | "RT" | "KX" | "LP" => {
            let pref = rd.u16()?;
            format!("{pref} {}", rd.name()?)
        }
        "TXT" | "SPF" | "AVC" | "NINFO" => quoted(&rd.strings()?),
        "UINFO" => quoted(&[rd.string()?]),
        "X25" => rd.string()?,
        "GPOS" => {
            let lon = rd.string()?;
            let lat = rd.string()?;
            format!("{lon} {lat} {}", rd.string()?)
        }
        "PX" => {
            let pref = rd.u16()?;
            let map822 = rd.name()?;
            format!("{pref} {map822} {}", rd.name()?)
        }
        "SRV" => {
            let (priority, weight, port) = (rd.u16()?, rd.u16()?, rd.u16()?);
            format!("{priority} {weight} {port} {}", rd.name()?)
        }
        "NAPTR" => {
            let (order, pref) = (rd.u16()?, rd.u16()?);
            let flags = rd.string()?;
            let service = rd.string()?;
            let regexp = rd.string()?;
            let replacement = rd.name()?;
            format!("{order} {pref} \"{flags}\" \"{service}\" \"{regexp}\" {replacement}")
        }
        "DS" | "CDS" | "DLV" | "TA" => {
            let (tag, alg, digest_type) = (rd.u16()?, rd.u8()?, rd.u8()?);
            let digest = hex(rd.rest()).to_ascii_uppercase();
            format!("{tag} {alg} {digest_type} {digest}")
        }
        "SSHFP" => {
            let (alg, fp_type) = (rd.u8()?, rd.u8()?);
            let fp = hex(rd.rest()).to_ascii_uppercase();
            format!("{alg} {fp_type} {fp}")
        }
        "DNSKEY" | "CDNSKEY" | "KEY" => {
            let (flags, protocol, alg) = (rd.u16()?, rd.u8()?, rd.u8()?);
            let key = base64::engine::general_purpose::STANDARD.encode(rd.rest());
            format!("{flags} {protocol} {alg} {key}")
        }
        "DHCID" | "OPENPGPKEY" => base64::engine::general_purpose::STANDARD.encode(rd.rest()),
        "TLSA" => {
            let (usage, selector, matching) = (rd.u8()?, rd.u8()?, rd.u8()?);
            format!("{usage} {selector} {matching} {}", hex(rd.rest()))
        }
        "SMIMEA" => {
            let (usage, selector, matching) = (rd.u8()?, rd.u8()?, rd.u8()?);
            let cert = hex(rd.rest());
            // miekg breaks the hex into 1024-character chunks.
            let chunks: Vec<&str> = if cert.is_empty() {
                vec![""]
            } else {
                cert.as_bytes()
                    .chunks(1024)
                    .map(|c| std::str::from_utf8(c).unwrap_or_default())
                    .collect()
            };
            format!("{usage} {selector} {matching} {}", chunks.join(" "))
        }
        "UID" | "GID" => rd.u32()?.to_string(),
        "EUI48" | "EUI64" => {
            let n = if type_name == "EUI48" { 6 } else { 8 };
            let value = rd.uint(n, "uint64")?;
            let digits = format!("{value:0width$x}", width = n * 2);
            digits
                .as_bytes()
                .chunks(2)
                .map(|c| std::str::from_utf8(c).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("-")
        }
        "NID" | "L64" => {
            let pref = rd.u16()?;
            let value = rd.uint(8, "uint64")?;
            let digits = if type_name == "NID" {
                format!("{value:016x}")
            } else {
                format!("{value:016X}")
            };
            format!(
                "{pref} {}:{}:{}:{}",
                &digits[0..4],
                &digits[4..8],
                &digits[8..12],
                &digits[12..16]
            )
        }
        "L32" => {
            let pref = rd.u16()?;
            match rd.ipv4()? {
                Some(ip) => format!("{pref} {ip}"),
                None => pref.to_string(),
            }
        }
        "URI" => {
            let (priority, weight) = (rd.u16()?, rd.u16()?);
            format!("{priority} {weight} {}", txt_octet(rd.rest()))
        }
        "CAA" => {
            let flag = rd.u8()?;
            let tag = rd.string()?;
            format!("{flag} {tag} {}", txt_octet(rd.rest()))
        }
        "ANY" => String::new(),
        // Types miekg prints in formats of their own (signatures, NSEC bitmaps, SVCB
        // parameters, LOC…) are printed in RFC 3597 notation behind the usual header.
        _ => {
            let data = rd.rest();
            format!("\\# {} {}", data.len(), hex(data))
        }
    };
    rd.finish()?;
    Ok(record(format!("{header}{body}"), serial))
}

#[cfg(test)]
mod tests;
