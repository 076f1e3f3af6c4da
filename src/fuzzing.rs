//! The bodies of the `cargo fuzz` targets (`fuzz/fuzz_targets/*.rs` call these), here so that
//! `tests/fuzz_corpus.rs` runs every checked-in corpus and regression input through exactly
//! the same code on stable, in every test run. Each function must not panic on any input;
//! the asserts are the invariants the fuzzer checks. Composition-level like `demo`: it
//! reaches into every reader.

use crate::smpp::frame::{Framer, Next};
use crate::smpp::{cmd, peek, text};

/// Framing: any byte stream, cut into reads of any size (the first byte), is framed; every
/// frame lies inside what was read, is at least a header long and at most the PDU cap; a
/// too-long PDU is skipped, never buffered past the cap.
pub fn frame(data: &[u8]) {
    const MAX: usize = 4096;
    let Some((&cut, stream)) = data.split_first() else { return };
    let mut f = Framer::new(MAX);
    in_reads(stream, cut, MAX, |buf| loop {
        match f.next(buf) {
            Next::Frame(len) => {
                assert!((16..=MAX).contains(&len) && len <= buf.len(), "frame {len} of {}", buf.len());
                buf.drain(..len);
            }
            Next::Skip(n) => {
                assert!(n >= 1 && n <= buf.len(), "skip {n} of {}", buf.len());
                buf.drain(..n);
            }
            Next::TooLong { .. } => {}
            Next::TooShort { .. } => return false,
            Next::Incomplete => return true,
        }
    });
}

/// Feeds `stream` into a buffer `cut` bytes a read (at least 1) and lets `take` frame what it
/// can after each read; `take` returns false to stop (a stream beyond resynchronising).
/// Asserts that nothing stays buffered past `cap` plus one read.
fn in_reads(stream: &[u8], cut: u8, cap: usize, mut take: impl FnMut(&mut Vec<u8>) -> bool) {
    let step = usize::from(cut).max(1);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    loop {
        let n = step.min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        if !take(&mut buf) {
            return;
        }
        assert!(buf.len() <= cap + step, "buffered {} past the cap", buf.len());
        if fed == stream.len() {
            return;
        }
    }
}

fn pdu(id: u32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(16 + body.len());
    f.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(body);
    f
}

/// The peek of submit_sm / data_sm / deliver_sm / submit_multi / query_sm and response
/// fields over any body: read or refused with a field named; what is read lies in the frame.
pub fn peek(data: &[u8]) {
    for id in [cmd::SUBMIT_SM, cmd::DATA_SM, cmd::DELIVER_SM, cmd::SUBMIT_MULTI, cmd::QUERY_SM, cmd::SUBMIT_SM_RESP] {
        let f = pdu(id, data);
        if let Ok(v) = peek::message(&f) {
            assert!(v.payload().len() <= f.len());
            let _ = (v.is_receipt(), v.has_udh(), v.tlv(0x0424));
            let _ = text::concat_info(&v);
            assert!(v.user_data().len() <= f.len());
        }
        if let Ok(m) = peek::multi(&f) {
            for (_, range) in m.destinations() {
                assert!(range.start <= range.end && range.end <= f.len());
            }
        }
        let _ = peek::destination(&f);
        let _ = peek::query_message_id(&f);
        let _ = peek::resp_message_id(&f);
    }
    for t in peek::tlvs(data) {
        if t.is_err() {
            break;
        }
    }
}

/// Text decoding: every data_coding (the first byte) over any bytes decodes and folds into
/// valid UTF-8, and the UCS-2 fast path agrees with decode-then-fold.
pub fn text(data: &[u8]) {
    let Some((&dc, bytes)) = data.split_first() else { return };
    let (mut scratch, mut out, mut want) = (String::new(), String::new(), String::new());
    text::decode_into(text::Coding::of_data_coding(dc), bytes, &mut scratch);
    text::fold_append(&scratch, &mut want);
    text::decode_fold_append(text::Coding::of_data_coding(dc), bytes, &mut String::new(), &mut out);
    assert_eq!(out, want, "data_coding {dc:#04x}");
}

/// MO opt-out detection on any deliver_sm body, and keyword normalisation of any text.
pub fn optout(data: &[u8]) {
    use crate::optout::{detect, normalise_into, Keywords, Scratch};
    let kw = Keywords::new(&["T", "TD", "退订", "STOP", "取消"]);
    let f = pdu(cmd::DELIVER_SM, data);
    if let Ok(v) = peek::message(&f) {
        if let Some(hit) = detect(&v, &kw, &mut Scratch::default()) {
            assert!(!hit.is_empty());
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let mut out = String::new();
        normalise_into(s, &mut out);
        let _ = kw.matches(&out);
    }
}

/// The config parser and the working-day calendar parser: accepted, or refused with at least
/// one error.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(errors) = crate::config::Config::parse(text) {
        assert!(!errors.is_empty());
    }
    let _ = crate::time::Calendar::parse(text);
}

/// The snapshot loader's validation: refused with a reason or, if accepted, lookups work.
pub fn snapshot(data: &[u8]) {
    if let Ok(s) = crate::consent::snapshot::Snapshot::from_bytes(data, "fuzz.snap") {
        for m in [0u64, 1, 8613800000001, u64::MAX] {
            let _ = s.is_dnc(m);
            let _ = s.statements(m, s.entity_id("acme"));
        }
        let _ = s.info().to_string();
    }
}

/// Journal replay of any segment bytes, as the last segment (torn tail tolerated) or not.
pub fn journal(data: &[u8]) {
    let _ = crate::consent::journal::replay_bytes(data, true);
    let _ = crate::consent::journal::replay_bytes(data, false);
}

/// The source readers (dnc.csv, consent.csv with and without the proof column). Invariants:
/// a read that ends well has hashed and counted every byte; every error names a line after
/// the header and within the file; every good row's entity passes the one entity rule.
pub fn csv(data: &[u8]) {
    use crate::consent::source::{read_consent, read_dnc, InvalidBudget, SourceSummary};
    use sha2::{Digest, Sha256};
    let check = |s: &SourceSummary| {
        assert_eq!(s.bytes, data.len() as u64);
        assert_eq!(s.sha256, <[u8; 32]>::from(Sha256::digest(data)));
        assert!(s.errors.first.iter().all(|e| (2..=s.lines).contains(&e.line)), "{:?} of {} lines", s.errors, s.lines);
    };
    let budget = InvalidBudget::unlimited();
    if let Ok(s) = read_dnc(data, "dnc.csv", "86", &budget, |_| {}, |_, _| {}) {
        check(&s);
    }
    let entity_ok = |r: crate::consent::source::ConsentRow<'_>| {
        assert!(crate::consent::statement::check_entity(r.entity.as_bytes()).is_ok(), "{:?}", r.entity);
    };
    if let Ok(s) = read_consent(data, "consent.csv", "86", &budget, entity_ok, |_, _| {}) {
        check(&s);
    }
}

/// pcap / pcapng reading for replay.
pub fn pcap(data: &[u8]) {
    let opts = crate::pcap::ExtractOptions { keep_all: true, ..Default::default() };
    let _ = crate::pcap::extract_from(std::io::Cursor::new(data), "fuzz.pcap", &opts);
}

/// The notAfter reader behind `consentgate_tls_certificate_expiry_timestamp_seconds` (a DER
/// walk over the certificates consentgate serves): any bytes give a time or an error, never
/// a panic or a read past the input.
pub fn x509(data: &[u8]) {
    let _ = crate::relay::x509::not_after(data);
}

/// CMPP: any byte stream, cut into reads of any size (the first byte), is framed as by
/// [`frame`] (frames inside what was read, 12 ≤ length ≤ cap, too-long PDUs skipped); every
/// frame, and the rest of the input as the body of every command, is read by every view in
/// both versions. What a view reads lies inside the frame; Msg_Content decodes by its Msg_Fmt
/// (decode-then-fold agrees with the one-call fold); a SUBMIT rewritten keeping the
/// destinations the first byte's bits pick reads back with exactly those destinations, the
/// same content and the length those slots account for.
pub fn cmpp(data: &[u8]) {
    use crate::cmpp::frame::{Framer, Next};
    use crate::cmpp::{cmd, HEADER_LEN};
    const MAX: usize = 4096;
    let Some((&cut, stream)) = data.split_first() else { return };
    let mut f = Framer::new(MAX);
    in_reads(stream, cut, MAX, |buf| loop {
        match f.next(buf) {
            Next::Frame(len) => {
                assert!((HEADER_LEN..=MAX).contains(&len) && len <= buf.len(), "frame {len} of {}", buf.len());
                cmpp_views(&buf[..len], cut);
                buf.drain(..len);
            }
            Next::Skip(n) => {
                assert!(n >= 1 && n <= buf.len(), "skip {n} of {}", buf.len());
                buf.drain(..n);
            }
            Next::TooLong { length, .. } => assert!(length as usize > MAX),
            Next::TooShort { length } => {
                assert!((length as usize) < HEADER_LEN);
                return false;
            }
            Next::Incomplete => return true,
        }
    });
    for id in [cmd::CONNECT, cmd::CONNECT_RESP, cmd::SUBMIT, cmd::SUBMIT_RESP, cmd::DELIVER, cmd::DELIVER_RESP] {
        let mut f = Vec::with_capacity(HEADER_LEN + stream.len());
        f.extend_from_slice(&((HEADER_LEN + stream.len()) as u32).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1]);
        f.extend_from_slice(stream);
        cmpp_views(&f, cut);
    }
    cmpp_text(cut, cut, stream);
}

/// Every CMPP view over one frame, in both versions; the SUBMIT rewrite with `pick`'s bits.
fn cmpp_views(f: &[u8], pick: u8) {
    use crate::cmpp::{pdu, peek, Version};
    for v in [Version::V20, Version::V30] {
        if let Ok(c) = peek::connect(f) {
            assert_eq!(c.authenticator_source.len(), 16);
            let _ = c.version().map_err(|e| e.connect_status());
        }
        if let Ok(r) = peek::connect_resp(f, v) {
            assert_eq!(r.authenticator_ismg.len(), 16);
        }
        let _ = peek::submit_resp(f, v);
        let _ = peek::deliver_resp(f, v);
        match peek::submit(f, v) {
            Ok(s) => {
                let n = usize::from(s.dest_usr_tl);
                assert!((1..=99).contains(&n) && s.dests.end <= f.len());
                assert_eq!(s.dests.len(), n * v.terminal_id_len());
                assert_eq!(s.destinations().len(), n);
                cmpp_text(s.tp_udhi, s.msg_fmt, s.msg_content);
                let keep = |i: usize, _: &[u8]| (pick >> (i % 8)) & 1 == 1;
                let want: Vec<&[u8]> =
                    s.destinations().enumerate().filter(|&(i, d)| keep(i, d)).map(|(_, d)| d).collect();
                let mut out = bytes::BytesMut::new();
                let kept = pdu::put_submit_keeping(&mut out, &s, keep);
                assert_eq!(usize::from(kept), want.len());
                if kept == 0 {
                    assert!(out.is_empty());
                } else {
                    let t = peek::submit(&out, v).expect("a rewritten SUBMIT reads back");
                    assert_eq!(t.destinations().collect::<Vec<_>>(), want);
                    assert_eq!((t.msg_content, t.reserve, t.src_id), (s.msg_content, s.reserve, s.src_id));
                    assert_eq!(out.len(), f.len() - (n - want.len()) * v.terminal_id_len());
                }
            }
            Err(e) => assert_ne!(e.result(v), 0),
        }
        if let Ok(d) = peek::deliver(f, v) {
            cmpp_text(d.tp_udhi, d.msg_fmt, d.msg_content);
            if let Ok(r) = d.report() {
                assert!(r.stat.len() <= 7 && r.dest_terminal_id.len() <= 32);
            }
        }
    }
}

/// CMPP text: the UDH split stays inside the content; decoding then folding equals the
/// one-call fold.
fn cmpp_text(tp_udhi: u8, msg_fmt: u8, content: &[u8]) {
    use crate::cmpp::text as cmpp_text;
    let ud = cmpp_text::user_data(tp_udhi, content);
    assert!(ud.len() <= content.len());
    let _ = cmpp_text::concat(tp_udhi, content);
    let (mut decoded, mut want, mut got) = (String::new(), String::new(), String::new());
    cmpp_text::decode_into(msg_fmt, ud, &mut decoded);
    text::fold_append(&decoded, &mut want);
    cmpp_text::decode_fold_append(msg_fmt, ud, &mut String::new(), &mut got);
    assert_eq!(got, want, "Msg_Fmt {msg_fmt}");
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name (the fuzz crate's binaries and `tests/fuzz_corpus.rs`).
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("peek", peek),
    ("text", text),
    ("optout", optout),
    ("config", config),
    ("snapshot", snapshot),
    ("journal", journal),
    ("csv", csv),
    ("pcap", pcap),
    ("x509", x509),
    ("cmpp", cmpp),
];
