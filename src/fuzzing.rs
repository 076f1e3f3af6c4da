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
    let step = usize::from(cut).max(1);
    let mut f = Framer::new(MAX);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    loop {
        let take = step.min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + take]);
        fed += take;
        loop {
            match f.next(&buf) {
                Next::Frame(len) => {
                    assert!((16..=MAX).contains(&len) && len <= buf.len(), "frame {len} of {}", buf.len());
                    buf.drain(..len);
                }
                Next::Skip(n) => {
                    assert!(n >= 1 && n <= buf.len(), "skip {n} of {}", buf.len());
                    buf.drain(..n);
                }
                Next::TooLong { .. } => {}
                Next::TooShort { .. } => return,
                Next::Incomplete => break,
            }
        }
        assert!(buf.len() <= MAX + step, "buffered {} past the cap", buf.len());
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
];
