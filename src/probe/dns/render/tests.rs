//! The renderer against record texts derived from miekg/dns v1.1.50's printing rules.

use super::*;

/// Builds a message holding one record at offset 12 (after a blank header) and renders it.
fn check(owner: &[u8], rtype: u16, class: u16, ttl: u32, rdata: &[u8], expected: &str) {
    let mut msg = vec![0u8; 12];
    msg.extend_from_slice(owner);
    let start = msg.len();
    msg.extend_from_slice(rdata);
    let (name, _) = read_name(&msg, 12).expect("owner name");
    let got = render(&name, rtype, class, ttl, &msg, start).expect("renders");
    assert_eq!(got.text, expected);
}

fn fails(rtype: u16, rdata: &[u8]) -> String {
    let mut msg = vec![0u8; 12];
    msg.extend_from_slice(b"\x01a\x00");
    let start = msg.len();
    msg.extend_from_slice(rdata);
    render("a.", rtype, 1, 0, &msg, start).expect_err("fails")
}

const EXAMPLE: &[u8] = b"\x07example\x03org\x00";

/// `name` in wire form.
fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

#[test]
fn address_records() {
    check(
        EXAMPLE,
        1,
        1,
        3600,
        &[192, 0, 2, 1],
        "example.org.\t3600\tIN\tA\t192.0.2.1",
    );
    let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    check(
        EXAMPLE,
        28,
        1,
        300,
        &v6.octets(),
        "example.org.\t300\tIN\tAAAA\t2001:db8::1",
    );
    let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
    check(
        EXAMPLE,
        28,
        1,
        300,
        &mapped.octets(),
        "example.org.\t300\tIN\tAAAA\t192.0.2.7",
    );
    // Empty rdata: Go prints the header alone.
    check(EXAMPLE, 1, 1, 60, &[], "example.org.\t60\tIN\tA\t");
}

#[test]
fn name_records() {
    let target = wire("mail.example.org");
    check(
        EXAMPLE,
        5,
        1,
        3600,
        &target,
        "example.org.\t3600\tIN\tCNAME\tmail.example.org.",
    );
    check(
        EXAMPLE,
        2,
        1,
        3600,
        &target,
        "example.org.\t3600\tIN\tNS\tmail.example.org.",
    );
    check(
        b"\x011\x012\x00",
        12,
        1,
        60,
        &target,
        "1.2.\t60\tIN\tPTR\tmail.example.org.",
    );
    let mut mx = vec![0, 10];
    mx.extend_from_slice(&target);
    check(
        EXAMPLE,
        15,
        1,
        3600,
        &mx,
        "example.org.\t3600\tIN\tMX\t10 mail.example.org.",
    );
    check(EXAMPLE, 2, 1, 0, &[0], "example.org.\t0\tIN\tNS\t.");
}

#[test]
fn compressed_names_point_back_into_the_message() {
    // The owner at 12 is example.org.; the MX target is "mail" + pointer to offset 12.
    let mut msg = vec![0u8; 12];
    msg.extend_from_slice(EXAMPLE);
    let start = msg.len();
    msg.extend_from_slice(&[0, 5, 4, b'm', b'a', b'i', b'l', 0xC0, 12]);
    let got = render("example.org.", 15, 1, 60, &msg, start).unwrap();
    assert_eq!(got.text, "example.org.\t60\tIN\tMX\t5 mail.example.org.");
}

#[test]
fn soa_fields_in_order() {
    let mut rdata = wire("ns1.example.org");
    rdata.extend(wire("hostmaster.example.org"));
    for v in [2024010101u32, 7200, 3600, 1209600, 300] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    let mut msg = vec![0u8; 12];
    msg.extend_from_slice(EXAMPLE);
    let start = msg.len();
    msg.extend_from_slice(&rdata);
    let got = render("example.org.", 6, 1, 3600, &msg, start).unwrap();
    assert_eq!(
        got.text,
        "example.org.\t3600\tIN\tSOA\tns1.example.org. hostmaster.example.org. 2024010101 7200 3600 1209600 300"
    );
    assert_eq!(got.soa_serial, Some(2024010101));
}

#[test]
fn txt_strings_are_quoted_and_escaped() {
    check(
        EXAMPLE,
        16,
        1,
        60,
        b"\x0bv=spf1 -all\x05a\"b\\c",
        "example.org.\t60\tIN\tTXT\t\"v=spf1 -all\" \"a\\\"b\\\\c\"",
    );
    check(
        EXAMPLE,
        16,
        1,
        60,
        b"\x03\x00\xff\x7f",
        "example.org.\t60\tIN\tTXT\t\"\\000\\255\\127\"",
    );
    check(
        EXAMPLE,
        16,
        1,
        60,
        b"\x00",
        "example.org.\t60\tIN\tTXT\t\"\"",
    );
    check(EXAMPLE, 16, 1, 60, &[], "example.org.\t60\tIN\tTXT\t");
}

#[test]
fn srv_caa_and_friends() {
    let mut srv = vec![0, 10, 0, 60, 0x13, 0xc4];
    srv.extend(wire("sip.example.org"));
    check(
        b"\x04_sip\x04_tcp\x07example\x03org\x00",
        33,
        1,
        86400,
        &srv,
        "_sip._tcp.example.org.\t86400\tIN\tSRV\t10 60 5060 sip.example.org.",
    );
    check(
        EXAMPLE,
        257,
        1,
        3600,
        b"\x00\x05issueletsencrypt.org",
        "example.org.\t3600\tIN\tCAA\t0 issue \"letsencrypt.org\"",
    );
    check(
        EXAMPLE,
        257,
        1,
        3600,
        b"\x80\x05iodefmailto:a\"b",
        "example.org.\t3600\tIN\tCAA\t128 iodef \"mailto:a\\\"b\"",
    );
    check(
        EXAMPLE,
        13,
        1,
        60,
        b"\x03x86\x05Linux",
        "example.org.\t60\tIN\tHINFO\t\"x86\" \"Linux\"",
    );
    check(
        EXAMPLE,
        44,
        1,
        60,
        &[1, 2, 0xab, 0xcd],
        "example.org.\t60\tIN\tSSHFP\t1 2 ABCD",
    );
    check(
        EXAMPLE,
        52,
        1,
        60,
        &[3, 1, 1, 0xab, 0xcd],
        "example.org.\t60\tIN\tTLSA\t3 1 1 abcd",
    );
    check(
        EXAMPLE,
        43,
        1,
        60,
        &[0x30, 0x39, 8, 2, 0xde, 0xad],
        "example.org.\t60\tIN\tDS\t12345 8 2 DEAD",
    );
    let mut naptr = vec![0, 100, 0, 10];
    naptr.extend_from_slice(b"\x01u\x07E2U+sip\x00");
    naptr.push(0);
    check(
        EXAMPLE,
        35,
        1,
        60,
        &naptr,
        "example.org.\t60\tIN\tNAPTR\t100 10 \"u\" \"E2U+sip\" \"\" .",
    );
}

#[test]
fn header_class_and_type_names() {
    check(
        EXAMPLE,
        16,
        3,
        0,
        b"\x02hi",
        "example.org.\t0\tCH\tTXT\t\"hi\"",
    );
    // ANY is also a type name, so the class prints as a number.
    check(EXAMPLE, 1, 255, 0, &[], "example.org.\t0\tCLASS255\tA\t");
    check(EXAMPLE, 1, 42, 0, &[], "example.org.\t0\tCLASS42\tA\t");
    // Unknown types use RFC 3597 notation, numeric class included.
    check(
        EXAMPLE,
        65280,
        1,
        5,
        &[0xab, 0x01],
        "example.org.\t5\tCLASS1\tTYPE65280\t\\# 2 ab01",
    );
    check(
        EXAMPLE,
        65280,
        1,
        5,
        &[],
        "example.org.\t5\tCLASS1\tTYPE65280\t\\# 0 ",
    );
}

#[test]
fn special_bytes_in_names_are_escaped() {
    check(
        b"\x03a.b\x02c \x00",
        1,
        1,
        0,
        &[1, 2, 3, 4],
        "a\\.b.c\\ .\t0\tIN\tA\t1.2.3.4",
    );
    check(
        b"\x02\x01\xff\x00",
        1,
        1,
        0,
        &[1, 2, 3, 4],
        "\\001\\255.\t0\tIN\tA\t1.2.3.4",
    );
    check(
        b"\x00",
        2,
        1,
        0,
        &wire("a.root-servers.net"),
        ".\t0\tIN\tNS\ta.root-servers.net.",
    );
}

#[test]
fn short_rdata_leaves_zero_fields_but_cut_fields_fail() {
    check(EXAMPLE, 15, 1, 0, &[0, 10], "example.org.\t0\tIN\tMX\t10 ");
    check(
        EXAMPLE,
        6,
        1,
        0,
        &wire("ns"),
        "example.org.\t0\tIN\tSOA\tns.  0 0 0 0 0",
    );
    assert_eq!(fails(1, &[1, 2, 3]), "overflow unpacking a");
    assert_eq!(fails(1, &[1, 2, 3, 4, 5]), "bad rdlength");
    assert_eq!(fails(15, &[0]), "overflow unpacking uint16");
    assert_eq!(fails(16, b"\x05ab"), "overflow unpacking txt");
    assert_eq!(fails(255, &[1]), "bad rdlength");
}

#[test]
fn opt_pseudo_record() {
    check(
        b"\x00",
        41,
        1232,
        0x8000,
        &[],
        "\n;; OPT PSEUDOSECTION:\n; EDNS: version 0; flags: do; ; udp: 1232",
    );
    assert_eq!(fails(41, &[0, 10, 0, 5, 1]), "overflow unpacking opt");
}

#[test]
fn octet_strings_read_backslash_escapes() {
    assert_eq!(txt_octet(b"a\\065b"), "\"aAb\"");
    assert_eq!(txt_octet(b"a\\.b"), "\"a\\.b\"");
    assert_eq!(txt_octet(b"a\\"), "\"a\"");
    assert_eq!(txt_octet(b"a\\\"b"), "\"a\\\"b\"");
}

#[test]
fn names_reject_loops_and_overlong_names() {
    // A pointer to itself.
    let msg = [0u8, 0, 0xC0, 2];
    assert_eq!(
        read_name(&msg, 2).unwrap_err(),
        "too many compression pointers"
    );
    let mut long = Vec::new();
    for _ in 0..5 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.push(0);
    assert!(read_name(&long, 0).unwrap_err().contains("255"));
    assert_eq!(read_name(&[0x40], 0).unwrap_err(), "bad rdata");
    assert_eq!(
        read_name(&[3, b'a'], 0).unwrap_err(),
        "buffer size too small"
    );
}
