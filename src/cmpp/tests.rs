//! CMPP wire tests: every PDU type in both versions written by the builders and compared
//! byte for byte with hand-written hex laid out field by field per spec 3.0 §8.4 (offsets in
//! `shared/reference/cmpp.md` §1.3–§1.6), then read back by the views; every error path of
//! the views; text by Msg_Fmt; UDH parts; the SUBMIT rewrite.

use bytes::BytesMut;

use super::pdu::*;
use super::peek::*;
use super::text::{self, Concat};
use super::*;

/// Bytes from hex, whitespace and `|` ignored (fields separated for reading).
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

/// An Octet String field in hex: `s` NUL-padded to `width`.
fn oct(s: &str, width: usize) -> String {
    let mut v = s.as_bytes().to_vec();
    v.resize(width, 0);
    v.iter().map(|b| format!("{b:02x}")).collect()
}

fn built(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut out = BytesMut::new();
    f(&mut out);
    out.to_vec()
}

const MD5_AUTH: [u8; 16] =
    [0x03, 0x8e, 0xef, 0x74, 0x9b, 0x22, 0x62, 0x4f, 0x37, 0x20, 0x3c, 0x98, 0x83, 0xd1, 0x04, 0x25];

#[test]
fn version_bytes() {
    assert_eq!(Version::try_from(0x20), Ok(Version::V20));
    assert_eq!(Version::try_from(0x21), Ok(Version::V20));
    assert_eq!(Version::try_from(0x30), Ok(Version::V30));
    assert_eq!(Version::try_from(0x31), Err(UnknownVersion(0x31)));
    assert_eq!(Version::try_from(0x00), Err(UnknownVersion(0x00)));
    assert_eq!((Version::V20.byte(), Version::V30.byte()), (0x20, 0x30));
    assert_eq!((Version::V20.report_len(), Version::V30.report_len()), (60, 71));
    assert_eq!(command_name(cmd::SUBMIT_RESP), "submit_resp");
    assert_eq!(command_name(0x0000_0009), "other");
    assert_eq!(result::name(13), "bad_dest_terminal_id");
    assert_eq!(result::name(150), "vendor");
    assert_eq!(result::name(14), "other");
}

#[test]
fn header_only_pdus_and_active_test_resp() {
    assert_eq!(built(|o| put_active_test(o, 1)), hex("0000000C 00000008 00000001"));
    assert_eq!(built(|o| put_active_test_resp(o, 1)), hex("0000000D 80000008 00000001 | 00"));
    assert_eq!(built(|o| put_terminate(o, 0x0102_0304)), hex("0000000C 00000002 01020304"));
    assert_eq!(built(|o| put_terminate_resp(o, 2)), hex("0000000C 80000002 00000002"));
    let f = built(|o| put_active_test_resp(o, 77));
    assert_eq!(Header::read(&f), Some(Header { total_length: 13, command_id: cmd::ACTIVE_TEST_RESP, sequence_id: 77 }));
    assert!(Header::read(&f).unwrap().is_response());
    assert_eq!(Header::read(&f[..11]), None);
    let mut g = f.clone();
    set_sequence(&mut g, 5);
    assert_eq!(sequence(&g), 5);
    assert_eq!(command_id(&g), cmd::ACTIVE_TEST_RESP);
    let mut short = [0u8; 5];
    set_sequence(&mut short, 5); // no panic
    assert_eq!(built(|o| put_renumbered(o, &f, 9)), hex("0000000D 80000008 00000009 00"));
}

#[test]
fn connect_both_versions() {
    // Source_Addr "901234", AuthenticatorSource = MD5("901234" + 9×0x00 + "secret" +
    // "1206153045") (opaque to us), Version, Timestamp 1206153045 = 0x47E46F55.
    for (vb, vhex) in [(0x20u8, "20"), (0x21, "21"), (0x30, "30")] {
        let want = hex(&format!(
            "00000027 00000001 00000011 | 393031323334 | 038eef749b22624f37203c9883d10425 | {vhex} | 47E46F55"
        ));
        let f = built(|o| put_connect(o, 0x11, b"901234", &MD5_AUTH, vb, 1206153045));
        assert_eq!(f, want);
        let c = connect(&f).unwrap();
        assert_eq!(c.source_addr, b"901234");
        assert_eq!(c.authenticator_source, &MD5_AUTH);
        assert_eq!(c.version_byte, vb);
        assert_eq!(c.timestamp, 1206153045);
        assert_eq!(c.version().unwrap(), if vb == 0x30 { Version::V30 } else { Version::V20 });
    }
    // Unknown versions: read, then refused with the right Status.
    let f = built(|o| put_connect(o, 1, b"9", &[0; 16], 0x40, 0));
    let c = connect(&f).unwrap();
    assert_eq!(c.source_addr, b"9");
    let e = c.version().unwrap_err();
    assert_eq!(e, PeekError::UnknownVersion(0x40));
    assert_eq!(e.connect_status(), connect_status::VERSION_TOO_HIGH);
    // Timestamp cut short.
    assert_eq!(connect(&f[..f.len() - 1]), Err(PeekError::Truncated(Field::Timestamp)));
    assert_eq!(connect(&f[..12]), Err(PeekError::Truncated(Field::SourceAddr)));
    assert_eq!(connect(&f[..11]), Err(PeekError::WrongCommand(0)));
}

#[test]
fn connect_resp_both_versions() {
    let refuse2 = built(|o| put_connect_resp(o, Version::V20, 2, connect_status::AUTH_FAILED, &[0; 16], 0x20));
    assert_eq!(refuse2, hex(&format!("0000001E 80000001 00000002 | 03 | {} | 20", "00".repeat(16))));
    let refuse3 = built(|o| put_connect_resp(o, Version::V30, 2, connect_status::AUTH_FAILED, &[0; 16], 0x30));
    assert_eq!(refuse3, hex(&format!("00000021 80000001 00000002 | 00000003 | {} | 30", "00".repeat(16))));
    let ok3 = built(|o| put_connect_resp(o, Version::V30, 3, 0, &MD5_AUTH, 0x30));
    let r = connect_resp(&ok3, Version::V30).unwrap();
    assert_eq!((r.read_as, r.status, r.authenticator_ismg, r.version_byte), (Version::V30, 0, &MD5_AUTH[..], 0x30));
    let r = connect_resp(&refuse2, Version::V20).unwrap();
    assert_eq!((r.status, r.version_byte), (3, 0x20));
    // Lenient: a 3.0-width answer on a 2.0 connection is read as 3.0, and vice versa.
    assert_eq!(connect_resp(&refuse3, Version::V20).unwrap().read_as, Version::V30);
    assert_eq!(connect_resp(&refuse3, Version::V20).unwrap().status, 3);
    assert_eq!(connect_resp(&refuse2, Version::V30).unwrap().status, 3);
    assert_eq!(connect_resp(&refuse2[..29], Version::V20), Err(PeekError::Truncated(Field::Version)));
    assert_eq!(connect_resp(&refuse2[..14], Version::V30), Err(PeekError::Truncated(Field::Status)));
}

#[test]
fn submit_resp_and_deliver_resp_both_versions() {
    let id = 0x0123_4567_89AB_CDEF;
    let s2 = built(|o| put_submit_resp(o, Version::V20, 7, id, result::FLOW_CONTROL));
    assert_eq!(s2, hex("00000015 80000004 00000007 | 0123456789ABCDEF | 08"));
    let s3 = built(|o| put_submit_resp(o, Version::V30, 7, id, result::BAD_DEST_TERMINAL_ID));
    assert_eq!(s3, hex("00000018 80000004 00000007 | 0123456789ABCDEF | 0000000D"));
    let d2 = built(|o| put_deliver_resp(o, Version::V20, 8, id, 0));
    assert_eq!(d2, hex("00000015 80000005 00000008 | 0123456789ABCDEF | 00"));
    let d3 = built(|o| put_deliver_resp(o, Version::V30, 8, id, 150));
    assert_eq!(d3, hex("00000018 80000005 00000008 | 0123456789ABCDEF | 00000096"));

    assert_eq!(submit_resp(&s2, Version::V20), Ok(MsgResp { read_as: Version::V20, msg_id: id, result: 8 }));
    assert_eq!(submit_resp(&s3, Version::V30), Ok(MsgResp { read_as: Version::V30, msg_id: id, result: 13 }));
    assert_eq!(deliver_resp(&d3, Version::V30).unwrap().result, 150);
    // Lenient widths; a wrong command; truncation.
    assert_eq!(submit_resp(&s3, Version::V20).unwrap().result, 13);
    assert_eq!(submit_resp(&s2, Version::V30).unwrap().result, 8);
    assert_eq!(deliver_resp(&s2, Version::V20), Err(PeekError::WrongCommand(cmd::SUBMIT_RESP)));
    assert_eq!(submit_resp(&s3[..22], Version::V30), Err(PeekError::Truncated(Field::Result)));
    assert_eq!(submit_resp(&s3[..19], Version::V30), Err(PeekError::Truncated(Field::MsgId)));
    // A vendor Result above 255 cannot be said in 2.0: its low byte goes out.
    assert_eq!(built(|o| put_submit_resp(o, Version::V20, 1, 0, 0x1_02))[20], 0x02);
}

const DESTS: [&[u8]; 3] = [b"8613800138000", b"13900139000", b"+8613700137000"];

fn sample_submit<'a>(dests: &'a [&'a [u8]], content: &'a [u8]) -> SubmitFields<'a> {
    SubmitFields {
        msg_id: 0,
        pk_total: 1,
        pk_number: 1,
        registered_delivery: 1,
        msg_level: 9,
        service_id: b"MXX0001",
        fee_user_type: 2,
        fee_terminal_id: b"",
        fee_terminal_type: 0,
        tp_pid: 0,
        tp_udhi: 0,
        msg_fmt: 15,
        msg_src: b"901234",
        fee_type: b"01",
        fee_code: b"000000",
        valid_time: b"",
        at_time: b"",
        src_id: b"10690123456",
        dest_terminal_ids: dests,
        dest_terminal_type: 0,
        msg_content: content,
        reserve: b"",
    }
}

#[test]
fn submit_v20_byte_exact_and_every_field() {
    let gbk = hex("CDCBB6A9"); // 退订 in GBK
    let f = built(|o| put_submit(o, Version::V20, 0x42, &sample_submit(&DESTS[..2], &gbk)));
    // 12 + 117 + 21·2 + 1 + 4 + 8 = 184 = 0xB8.
    let want = hex(&format!(
        "000000B8 00000004 00000042 | 0000000000000000 | 01 01 01 09 | {svc} | 02 | {fee} | 00 00 0F | {src} | {ft} | \
         {fc} | {vt} | {at} | {sid} | 02 | {d0} | {d1} | 04 | CDCBB6A9 | {res}",
        svc = oct("MXX0001", 10),
        fee = oct("", 21),
        src = oct("901234", 6),
        ft = oct("01", 2),
        fc = oct("000000", 6),
        vt = oct("", 17),
        at = oct("", 17),
        sid = oct("10690123456", 21),
        d0 = oct("8613800138000", 21),
        d1 = oct("13900139000", 21),
        res = oct("", 8),
    ));
    assert_eq!(f, want);
    // Spec offsets (body-relative, cmpp.md §1.4): Msg_Fmt 46, Src_Id 95, DestUsr_tl 116.
    let body = &f[HEADER_LEN..];
    assert_eq!((body[46], &body[95..106], body[116]), (15, &b"10690123456"[..], 2));
    let s = submit(&f, Version::V20).unwrap();
    assert_eq!(s.version, Version::V20);
    assert_eq!((s.msg_id, s.pk_total, s.pk_number, s.registered_delivery, s.msg_level), (0, 1, 1, 1, 9));
    assert_eq!((s.service_id, s.fee_user_type, s.fee_terminal_id), (&b"MXX0001"[..], 2, &b""[..]));
    assert_eq!((s.fee_terminal_type, s.dest_terminal_type), (None, None));
    assert_eq!((s.tp_pid, s.tp_udhi, s.msg_fmt), (0, 0, 15));
    assert_eq!((s.msg_src, s.fee_type, s.fee_code), (&b"901234"[..], &b"01"[..], &b"000000"[..]));
    assert_eq!((s.valid_time, s.at_time, s.src_id), (&b""[..], &b""[..], &b"10690123456"[..]));
    assert_eq!(s.dest_usr_tl, 2);
    assert_eq!(s.dests, HEADER_LEN + 117..HEADER_LEN + 117 + 42);
    assert_eq!(s.destinations().collect::<Vec<_>>(), DESTS[..2]);
    assert_eq!(s.destinations().len(), 2);
    assert_eq!((s.destination(1), s.destination(2)), (Some(DESTS[1]), None));
    assert_eq!(s.destination(usize::MAX), None);
    assert_eq!((s.msg_content, s.reserve), (&gbk[..], &b""[..]));
    let mut t = String::new();
    text::decode_into(s.msg_fmt, s.msg_content, &mut t);
    assert_eq!(t, "退订");
}

#[test]
fn submit_v30_byte_exact_and_every_field() {
    let ucs2 = hex("90008BA2"); // 退订 in UCS-2
    let fields = SubmitFields {
        msg_id: 0x1122_3344_5566_7788,
        fee_terminal_id: b"pseudo-fee-id",
        fee_terminal_type: 1,
        msg_fmt: 8,
        dest_terminal_type: 1,
        valid_time: b"261231235959032+",
        reserve: b"LINK-0001",
        ..sample_submit(&DESTS, &ucs2)
    };
    let f = built(|o| put_submit(o, Version::V30, 3, &fields));
    // 12 + 129 + 32·3 + 1 + 1 + 4 + 20 = 263 = 0x107.
    let want = hex(&format!(
        "00000107 00000004 00000003 | 1122334455667788 | 01 01 01 09 | {svc} | 02 | {fee} 01 | 00 00 08 | {src} | \
         {ft} | {fc} | {vt} | {at} | {sid} | 03 | {d0} {d1} {d2} 01 | 04 | 90008BA2 | {link}",
        svc = oct("MXX0001", 10),
        fee = oct("pseudo-fee-id", 32),
        src = oct("901234", 6),
        ft = oct("01", 2),
        fc = oct("000000", 6),
        vt = oct("261231235959032+", 17),
        at = oct("", 17),
        sid = oct("10690123456", 21),
        d0 = oct("8613800138000", 32),
        d1 = oct("13900139000", 32),
        d2 = oct("+8613700137000", 32),
        link = oct("LINK-0001", 20),
    ));
    assert_eq!(f, want);
    // Spec offsets (cmpp.md §1.4, 3.0): Fee_terminal_type 55, Msg_Fmt 58, DestUsr_tl 128.
    let body = &f[HEADER_LEN..];
    assert_eq!((body[55], body[58], body[128]), (1, 8, 3));
    let s = submit(&f, Version::V30).unwrap();
    assert_eq!(s.msg_id, 0x1122_3344_5566_7788);
    assert_eq!((s.fee_terminal_id, s.fee_terminal_type), (&b"pseudo-fee-id"[..], Some(1)));
    assert_eq!(s.valid_time, b"261231235959032+");
    assert_eq!(s.destinations().collect::<Vec<_>>(), DESTS);
    assert_eq!((s.dest_terminal_type, s.msg_content, s.reserve), (Some(1), &ucs2[..], &b"LINK-0001"[..]));
    // The same bytes are not a 2.0 SUBMIT of the same shape.
    assert!(submit(&f, Version::V20).map_or(true, |s2| s2.destinations().collect::<Vec<_>>() != DESTS));
}

#[test]
fn submit_error_paths() {
    let content = b"hello";
    for v in [Version::V20, Version::V30] {
        let f = built(|o| put_submit(o, v, 1, &sample_submit(&DESTS, content)));
        assert!(submit(&f, v).is_ok());
        // Every proper prefix is refused with a field named, never read past the frame.
        for cut in 0..f.len() {
            let e = submit(&f[..cut], v).unwrap_err();
            assert!(matches!(e, PeekError::Truncated(_) | PeekError::BadMsgLength(_) | PeekError::WrongCommand(_)));
            assert_ne!(e.result(v), 0);
        }
        let tid = v.terminal_id_len();
        let count_at = HEADER_LEN + if v == Version::V30 { 128 } else { 116 };
        let len_at = count_at + 1 + 3 * tid + usize::from(v.has_terminal_type());
        assert_eq!(f[len_at], 5);
        // Cut inside Msg_Content: Msg_Length runs past the body.
        assert_eq!(submit(&f[..len_at + 3], v), Err(PeekError::BadMsgLength(5)));
        // Cut inside Reserve / LinkID.
        assert_eq!(submit(&f[..f.len() - 1], v), Err(PeekError::Truncated(Field::ReserveOrLinkId)));
        // Msg_Length claiming more than there is.
        let mut g = f.clone();
        g[len_at] = 200;
        assert_eq!(submit(&g, v), Err(PeekError::BadMsgLength(200)));
        // DestUsr_tl 0 and 100 are refused; 99 needs 99 slots.
        for n in [0u8, 100, 255] {
            let mut g = f.clone();
            g[count_at] = n;
            assert_eq!(submit(&g, v), Err(PeekError::BadDestCount(n)));
        }
        let mut g = f.clone();
        g[count_at] = 99;
        assert_eq!(submit(&g, v), Err(PeekError::Truncated(Field::DestTerminalId)));
        assert_eq!(PeekError::BadDestCount(0).result(Version::V30), result::BAD_DEST_TERMINAL_ID);
        // Trailing bytes are tolerated.
        let mut g = f.clone();
        g.extend_from_slice(b"xx");
        assert_eq!(submit(&g, v).unwrap().msg_content, content);
        // Other command ids.
        assert_eq!(deliver(&f, v), Err(PeekError::WrongCommand(cmd::SUBMIT)));
    }
    // 99 destinations: the largest group SUBMIT reads.
    let many: Vec<Vec<u8>> = (0..99).map(|i| format!("1380013{i:04}").into_bytes()).collect();
    let refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
    let f = built(|o| put_submit(o, Version::V30, 1, &sample_submit(&refs, &[0x41; 159])));
    assert_eq!(f.len(), 3490); // cmpp.md §1.4's largest legal 3.0 frame
    let s = submit(&f, Version::V30).unwrap();
    assert_eq!(s.destinations().nth(98), Some(&b"13800130098"[..]));
}

#[test]
fn deliver_mo_both_versions() {
    let td = hex("CDCBB6A9");
    let d = DeliverFields {
        msg_id: 0xAABB_CCDD_EEFF_0011,
        dest_id: b"106901234561",
        service_id: b"MXX0001",
        msg_fmt: 15,
        src_terminal_id: b"8613800138000",
        src_terminal_type: 0,
        registered_delivery: 0,
        msg_content: &td,
        ..DeliverFields::default()
    };
    let f2 = built(|o| put_deliver(o, Version::V20, 5, &d));
    let want2 = hex(&format!(
        "00000059 00000005 00000005 | AABBCCDDEEFF0011 | {did} | {svc} | 00 00 0F | {src} | 00 | 04 | CDCBB6A9 | {res}",
        did = oct("106901234561", 21),
        svc = oct("MXX0001", 10),
        src = oct("8613800138000", 21),
        res = oct("", 8),
    ));
    assert_eq!(f2, want2); // 12 + 65 + 4 + 8 = 89 = 0x59
    let f3 = built(|o| put_deliver(o, Version::V30, 5, &DeliverFields { reserve: b"L1", ..d.clone() }));
    let want3 = hex(&format!(
        "00000071 00000005 00000005 | AABBCCDDEEFF0011 | {did} | {svc} | 00 00 0F | {src} 00 | 00 | 04 | CDCBB6A9 | {link}",
        did = oct("106901234561", 21),
        svc = oct("MXX0001", 10),
        src = oct("8613800138000", 32),
        link = oct("L1", 20),
    ));
    assert_eq!(f3, want3); // 12 + 77 + 4 + 20 = 113 = 0x71
    for (f, v) in [(&f2, Version::V20), (&f3, Version::V30)] {
        let m = deliver(f, v).unwrap();
        assert_eq!((m.msg_id, m.dest_id, m.service_id), (0xAABB_CCDD_EEFF_0011, &b"106901234561"[..], &b"MXX0001"[..]));
        assert_eq!((m.tp_pid, m.tp_udhi, m.msg_fmt, m.src_terminal_id), (0, 0, 15, &b"8613800138000"[..]));
        assert_eq!(m.src_terminal_type, v.has_terminal_type().then_some(0));
        assert!(!m.is_report());
        assert_eq!(m.msg_content, td);
        assert_eq!(m.reserve, if v == Version::V30 { &b"L1"[..] } else { b"" });
        // Registered_Delivery offset 63 / 75 (cmpp.md §1.6).
        assert_eq!(f[HEADER_LEN + if v == Version::V30 { 76 } else { 64 }], 4);
        for cut in 0..f.len() {
            assert!(deliver(&f[..cut], v).is_err());
        }
        let mut s = String::new();
        text::decode_fold_append(m.msg_fmt, m.msg_content, &mut String::new(), &mut s);
        assert_eq!(s, "退订");
    }
}

#[test]
fn status_report_both_versions() {
    let r = Report {
        msg_id: 0x0102_0304_0506_0708,
        stat: b"MA:0001",
        submit_time: b"2612311200",
        done_time: b"2612311201",
        dest_terminal_id: b"8613800138000",
        smsc_sequence: 0x0A0B_0C0D,
    };
    for v in [Version::V20, Version::V30] {
        let f = built(|o| put_report(o, v, 9, 0xFEED, b"10690123456", b"MXX0001", &r));
        let tid = v.terminal_id_len();
        let content = hex(&format!(
            "0102030405060708 | {stat} | {st} | {dt} | {dest} | 0A0B0C0D",
            stat = oct("MA:0001", 7),
            st = oct("2612311200", 10),
            dt = oct("2612311201", 10),
            dest = oct("8613800138000", tid),
        ));
        assert_eq!(content.len(), v.report_len());
        let d = deliver(&f, v).unwrap();
        assert!(d.is_report());
        assert_eq!((d.msg_id, d.dest_id, d.service_id, d.msg_fmt), (0xFEED, &b"10690123456"[..], &b"MXX0001"[..], 0));
        assert_eq!(d.src_terminal_id, b"8613800138000");
        assert_eq!(d.msg_content, content);
        assert_eq!(d.report(), Ok(r));
        assert_eq!(f.len(), HEADER_LEN + if v == Version::V30 { 77 + 71 + 20 } else { 65 + 60 + 8 });
        // A report one byte short; the other version's exact length is read leniently.
        assert_eq!(report(&content[..content.len() - 1], v), Err(PeekError::Truncated(Field::SmscSequence)));
        let other = built(|o| put_report_content(o, v.other(), &r));
        assert_eq!(report(&other, v), Ok(r));
    }
    let mut c = BytesMut::new();
    put_report_content(&mut c, Version::V30, &Report { stat: &stat::DELIVRD, ..r });
    assert_eq!(report(&c, Version::V30).unwrap().stat, b"DELIVRD");
}

#[test]
fn submit_rewrite_drops_destinations_and_keeps_every_other_byte() {
    let content = hex("050003 2A0201 90008BA2");
    for v in [Version::V20, Version::V30] {
        let fields = SubmitFields { tp_udhi: 1, msg_fmt: 8, reserve: b"LNK", ..sample_submit(&DESTS, &content) };
        let mut f = built(|o| put_submit(o, v, 0xABCD, &fields));
        f.extend_from_slice(b"TRAIL"); // trailing bytes survive the rewrite too
        let len = f.len() as u32;
        f[..4].copy_from_slice(&len.to_be_bytes());
        let s = submit(&f, v).unwrap();
        let tid = v.terminal_id_len();

        let mut out = BytesMut::from(&b"prefix"[..]);
        let kept = put_submit_keeping(&mut out, &s, |i, d| i != 1 && d != b"nobody");
        assert_eq!(kept, 2);
        assert_eq!(&out[..6], b"prefix");
        let g = &out[6..];
        assert_eq!(g.len(), f.len() - tid);
        assert_eq!(&g[..4], &(g.len() as u32).to_be_bytes());
        // Everything before DestUsr_tl identical (Command_Id, Sequence_Id, every field).
        assert_eq!(g[4..s.dests.start - 1], f[4..s.dests.start - 1]);
        assert_eq!(g[s.dests.start - 1], 2);
        // The kept slots byte for byte, then everything after the list.
        assert_eq!(g[s.dests.start..s.dests.start + tid], f[s.dests.start..s.dests.start + tid]);
        assert_eq!(g[s.dests.start + tid..s.dests.start + 2 * tid], f[s.dests.start + 2 * tid..s.dests.end]);
        assert_eq!(g[s.dests.start + 2 * tid..], f[s.dests.end..]);
        let t = submit(g, v).unwrap();
        assert_eq!(t.destinations().collect::<Vec<_>>(), [DESTS[0], DESTS[2]]);
        assert_eq!((t.msg_content, t.reserve), (s.msg_content, s.reserve));
        assert_eq!(sequence(g), 0xABCD);

        // Keep all: the same frame. Keep none: nothing written.
        let mut all = BytesMut::new();
        assert_eq!(put_submit_keeping(&mut all, &s, |_, _| true), 3);
        assert_eq!(&all[..], &f[..]);
        let mut none = BytesMut::from(&b"x"[..]);
        assert_eq!(put_submit_keeping(&mut none, &s, |_, _| false), 0);
        assert_eq!(&none[..], b"x");
    }
}

#[test]
fn text_by_msg_fmt() {
    let dec = |fmt: u8, b: &[u8]| {
        let mut s = String::from("stale");
        text::decode_into(fmt, b, &mut s);
        s
    };
    // 退订: GBK under 15, UCS-2 under 8; GBK bytes under 0 (undeclared) still decode.
    assert_eq!(dec(15, &hex("CDCBB6A9")), "退订");
    assert_eq!(dec(8, &hex("90008BA2")), "退订");
    assert_eq!(dec(0, &hex("CDCBB6A9")), "退订");
    assert_eq!(dec(0, b"TD"), "TD");
    assert_eq!(dec(0, "退订".as_bytes()), "退订"); // UTF-8 under 0
    assert_eq!(dec(9, &hex("BBD854CDCBB6A9")), "回T退订"); // [unconfirmed] 9 → as 0
    assert_eq!(dec(15, &hex("BBD854CDCBB6A9")), "回T退订");
    // GB18030 four-byte sequence (U+00A5 ¥ is 81 30 84 36) and a malformed tail.
    assert_eq!(dec(15, &hex("81308436")), "¥");
    assert_eq!(dec(15, &hex("41FF")), "A\u{FFFD}");
    // Binary formats carry no text.
    assert_eq!(dec(4, b"TD"), "");
    assert_eq!(dec(3, b"TD"), "");
    assert!(!text::is_text(4) && text::is_text(15));
    // Folding: full-width UCS-2 "ＴＤ" and GBK "TD" both fold to "td", appended.
    let (mut scratch, mut out) = (String::new(), String::from(">"));
    text::decode_fold_append(8, &hex("FF34FF24"), &mut scratch, &mut out);
    text::decode_fold_append(15, b"TD", &mut scratch, &mut out);
    text::decode_fold_append(4, b"TD", &mut scratch, &mut out);
    assert_eq!(out, ">tdtd");
}

#[test]
fn udh_parts() {
    // 8-bit reference: 05 | 00 03 2A 02 01, then 退订 in UCS-2.
    let part = hex("05 00032A0201 90008BA2");
    for udhi in [0x01, 0x40, 0x41] {
        assert!(text::has_udh(udhi));
        assert_eq!(text::user_data(udhi, &part), hex("90008BA2"));
        assert_eq!(text::concat(udhi, &part), Some(Concat { reference: 0x2A, total: 2, seq: 1 }));
    }
    assert!(!text::has_udh(0x00) && !text::has_udh(0x02));
    assert_eq!(text::user_data(0, &part), &part[..]);
    assert_eq!(text::concat(0, &part), None);
    // 16-bit reference: 06 | 08 04 12 34 03 02.
    let part16 = hex("06 080412340302 CDCBB6A9");
    assert_eq!(text::concat(1, &part16), Some(Concat { reference: 0x1234, total: 3, seq: 2 }));
    assert_eq!(text::user_data(1, &part16), hex("CDCBB6A9"));
    // A UDH longer than the content: no text, no parts.
    assert_eq!(text::user_data(1, &hex("09 000301")), b"");
    assert_eq!(text::concat(1, &hex("09 000301")), None);
    assert_eq!(text::user_data(1, &[]), b"");
    // seq > total is ignored.
    assert_eq!(text::concat(1, &hex("05 00032A0203")), None);
}

/// The fuzz target's seed corpus, from the builders: one stream per file (the first byte is
/// the fuzz target's read size), every PDU type of both versions. `cargo test --lib
/// write_cmpp_fuzz_seeds -- --ignored` rewrites `fuzz/corpus/cmpp/seed-*`.
fn fuzz_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let gbk = hex("CDCBB6A9");
    let udh = hex("05 00032A0201 90008BA2");
    let r = Report {
        msg_id: 1,
        stat: b"DELIVRD",
        submit_time: b"2612311200",
        done_time: b"2612311201",
        dest_terminal_id: b"8613800138000",
        smsc_sequence: 7,
    };
    for v in [Version::V20, Version::V30] {
        let n = if v == Version::V30 { "30" } else { "20" };
        let mut add = |name: &str, cut: u8, f: &dyn Fn(&mut BytesMut)| {
            let mut out = BytesMut::from(&[cut][..]);
            f(&mut out);
            seeds.push((format!("seed-{n}-{name}"), out.to_vec()));
        };
        add("connect", 255, &|o| put_connect(o, 1, b"901234", &MD5_AUTH, v.byte(), 1206153045));
        add("connect-resp", 7, &|o| put_connect_resp(o, v, 1, 3, &[0; 16], v.byte()));
        add("submit-gbk", 255, &|o| put_submit(o, v, 2, &sample_submit(&DESTS, &gbk)));
        add("submit-udh", 64, &|o| {
            put_submit(o, v, 3, &SubmitFields { tp_udhi: 0x40, msg_fmt: 8, ..sample_submit(&DESTS[..1], &udh) })
        });
        add("submit-resp", 255, &|o| put_submit_resp(o, v, 2, 0x0123_4567_89AB_CDEF, 0));
        add("deliver-mo", 255, &|o| {
            put_deliver(
                o,
                v,
                4,
                &DeliverFields {
                    dest_id: b"10690123",
                    msg_fmt: 8,
                    src_terminal_id: b"13800138000",
                    msg_content: &udh,
                    tp_udhi: 1,
                    ..DeliverFields::default()
                },
            )
        });
        add("deliver-report", 255, &|o| put_report(o, v, 5, 9, b"10690123456", b"MXX0001", &r));
        add("deliver-resp", 255, &|o| put_deliver_resp(o, v, 4, 9, 0));
        add("stream", 13, &|o| {
            put_active_test(o, 6);
            put_active_test_resp(o, 6);
            put_submit(o, v, 7, &sample_submit(&DESTS[..2], b"TD"));
            put_terminate(o, 8);
            put_terminate_resp(o, 8);
        });
        add("too-long", 3, &|o| {
            let mut f = BytesMut::new();
            put_submit(&mut f, v, 9, &sample_submit(&DESTS, &[0x41; 200]));
            f[..4].copy_from_slice(&5000u32.to_be_bytes());
            o.extend_from_slice(&f);
            put_active_test(o, 10);
        });
    }
    seeds
}

#[test]
fn fuzz_seeds_pass_the_target() {
    for (name, data) in fuzz_seeds() {
        let r = std::panic::catch_unwind(|| crate::fuzzing::cmpp(&data));
        assert!(r.is_ok(), "{name}");
    }
}

#[test]
#[ignore = "writes fuzz/corpus/cmpp/seed-*; run by hand after changing the seeds"]
fn write_cmpp_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/cmpp");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in fuzz_seeds() {
        std::fs::write(dir.join(name), data).unwrap();
    }
}
