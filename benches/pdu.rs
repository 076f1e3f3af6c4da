//! Per-PDU costs on the hot path (criterion, `cargo bench --bench pdu`).
//!
//! **Hypotheses.**
//! 1. Framing a read buffer and peeking the fields the policy needs (addresses, esm_class,
//!    data_coding, TLVs) costs tens of nanoseconds per submit_sm — a small fraction of the
//!    ~0.7 µs a PDU costs end to end — and is several times cheaper than fully decoding the
//!    PDU into owned structs. **Baseline:** rusmpp 0.4's full decode of the same frames (what
//!    a proxy built straight on the library would do per PDU).
//! 2. MO opt-out detection (decode GSM7 / UCS-2, normalise full-width and case, match the
//!    keyword set) costs well under a microsecond per deliver_sm with reused buffers.
//!    **Baseline:** the naive version: `String::from_utf16` / a fresh `String` per message,
//!    `to_lowercase()` and `trim()`, then a linear scan over the keyword list.
//!
//! Setup outside the timed loops: 64 submit_sm frames (GSM7 / UCS-2 Chinese / concatenated
//! UDH / TLV-carrying), concatenated into one buffer as they would arrive in a read; MO
//! deliver_sm frames whose texts are keywords or ordinary replies.

use std::hint::black_box;
use std::time::Duration;

use consentgate::optout::{detect, Keywords, Scratch};
use consentgate::smpp::frame::{Framer, Next};
use consentgate::smpp::pdu::{decode, SubmitBuilder};
use consentgate::smpp::peek;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
}

fn submits() -> Vec<Vec<u8>> {
    (0..64u32)
        .map(|i| {
            let dest = format!("86138{:08}", i * 7919);
            let b = SubmitBuilder::new("1069012345", &dest).registered_delivery(1);
            let b = match i % 4 {
                0 => b.short_message(b"Flash sale: 50% off today. Reply STOP to end"),
                1 => b.data_coding(8).short_message(&ucs2("双十一大促，全场五折！回T退订")),
                2 => {
                    let mut m = vec![5, 0, 3, i as u8, 2, 1];
                    m.extend_from_slice(&ucs2("会员日专享优惠，第一部分内容"));
                    b.esm_class(0x40).data_coding(8).short_message(&m)
                }
                _ => b.service_type("OTP").tlv(0x020C, &[0, 7]).short_message(b"Your code is 482913"),
            };
            b.build(i + 1).to_vec()
        })
        .collect()
}

fn mos() -> Vec<Vec<u8>> {
    let texts: Vec<(u8, Vec<u8>)> = vec![
        (8, ucs2("退订")),
        (0, b"STOP".to_vec()),
        (8, ucs2("ＴＤ")),
        (0, b"  td. ".to_vec()),
        (8, ucs2("好的，谢谢，明天见")),
        (0, b"Yes please send me the details".to_vec()),
        (0, b"t".to_vec()),
        (8, ucs2("取消")),
    ];
    texts
        .into_iter()
        .enumerate()
        .map(|(i, (dc, t))| {
            SubmitBuilder::new("8613800000001", "1069012345")
                .deliver()
                .data_coding(dc)
                .short_message(&t)
                .build(i as u32 + 1)
                .to_vec()
        })
        .collect()
}

/// The naive opt-out check: allocate, decode, lower-case, trim, scan.
fn naive_detect(frame: &[u8], keywords: &[String]) -> bool {
    let Ok(v) = peek::message(frame) else { return false };
    let text = if v.data_coding == 8 {
        let units: Vec<u16> = v.short_message.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(v.short_message).into_owned()
    };
    let t: String = text
        .chars()
        .map(
            |c| if ('\u{FF01}'..='\u{FF5E}').contains(&c) { char::from_u32(c as u32 - 0xFEE0).unwrap_or(c) } else { c },
        )
        .collect::<String>()
        .to_lowercase();
    let t = t.trim().trim_matches(|c: char| c.is_ascii_punctuation() || c == '。');
    keywords.iter().any(|k| k.to_lowercase() == t)
}

fn bench(c: &mut Criterion) {
    let frames = submits();
    let stream: Vec<u8> = frames.concat();
    let n = frames.len() as u64;

    let mut g = c.benchmark_group("submit_sm");
    g.throughput(Throughput::Elements(n));
    g.sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    g.bench_function("frame_and_peek", |b| {
        let mut framer = Framer::new(70_000);
        b.iter(|| {
            let buf = black_box(&stream[..]);
            let mut pos = 0;
            let mut acc = 0usize;
            while let Next::Frame(len) = framer.next(&buf[pos..]) {
                let v = peek::message(&buf[pos..pos + len]).expect("valid submit_sm");
                acc += v.destination.addr.len() + v.short_message.len() + v.data_coding as usize;
                pos += len;
            }
            black_box(acc)
        })
    });
    g.bench_function("baseline_rusmpp_full_decode", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for f in &frames {
                let cmd = decode(black_box(f)).expect("rusmpp decodes the frame");
                acc += cmd.sequence_number as usize;
            }
            black_box(acc)
        })
    });
    g.finish();

    let mo = mos();
    let kw_list: Vec<String> = consentgate::config::DEFAULT_OPTOUT_KEYWORDS.iter().map(|s| s.to_string()).collect();
    let kw = Keywords::new(&kw_list);
    // Both implementations must agree before either is timed.
    let mut scratch = Scratch::default();
    for f in &mo {
        let fast = detect(&peek::message(f).unwrap(), &kw, &mut scratch).is_some();
        assert_eq!(fast, naive_detect(f, &kw_list), "detectors disagree on {:?}", scratch.normalised());
    }
    let mut g = c.benchmark_group("mo_optout");
    g.throughput(Throughput::Elements(mo.len() as u64));
    g.sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    g.bench_function("peek_decode_normalise_match", |b| {
        let mut scratch = Scratch::default();
        b.iter(|| {
            let mut hits = 0;
            for f in &mo {
                let v = peek::message(black_box(f)).expect("valid deliver_sm");
                hits += detect(&v, &kw, &mut scratch).is_some() as u32;
            }
            black_box(hits)
        })
    });
    g.bench_function("baseline_naive_alloc_lowercase_scan", |b| {
        b.iter(|| {
            let mut hits = 0;
            for f in &mo {
                hits += naive_detect(black_box(f), &kw_list) as u32;
            }
            black_box(hits)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
