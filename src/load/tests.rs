use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};

use super::session::{MAX_PDU_BYTES, READ_CHUNK};
use super::templates::build_templates;
use super::*;
use crate::smpp::frame::{Framer, Next};
use crate::smpp::pdu::{encode_bind_resp, put_header_only, put_resp_with_id, SubmitBuilder};
use crate::smpp::{cmd, peek, status, BindType, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[test]
fn parse_scenario_reads_lines_skips_comments_and_names_bad_lines() {
    let text = "# a comment\n\
                {\"source\":\"ACME\",\"destination\":\"+8613800138000\",\"text\":\"hi\",\"expect\":\"ok\"}\n\
                \n\
                {\"source\":\"1069\",\"destination\":\"8613800138001\",\"text\":\"你好\",\"encoding\":\"ucs2\",\"expect\":\"0x00000058\"}\n";
    let v = parse_scenario(text, "s.jsonl").unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].encoding, Encoding::Gsm7);
    assert_eq!(v[1].encoding, Encoding::Ucs2);
    assert_eq!(crate::smpp::status::parse(v[0].expect.as_deref().unwrap()), Some(0));
    assert_eq!(crate::smpp::status::parse(v[1].expect.as_deref().unwrap()), Some(0x58));
    assert_eq!(crate::smpp::status::parse("ESME_RTHROTTLED"), Some(0x58));
    assert_eq!(crate::smpp::status::parse("throttled"), Some(0x58));
    assert_eq!(crate::smpp::status::parse("13"), Some(13));
    assert_eq!(crate::smpp::status::parse("nope"), None);

    let bad = "{\"source\":\"a\",\"destination\":\"1\",\"text\":\"x\"}\n# c\n{\"source\":\"a\",\"text\":\"x\"}\n";
    let e = parse_scenario(bad, "s.jsonl").unwrap_err().to_string();
    assert!(e.starts_with("s.jsonl:3: "), "{e}");
    let e = parse_scenario("\n\n{\"source\":\"a\",\"destination\":\"1\",\"text\":\"x\",\"expect\":\"what\"}", "f")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("f:3: "), "{e}");
    assert!(parse_scenario("# only comments\n", "f").is_err());
}

#[test]
fn templates_mark_multipart_and_point_at_the_reference_byte() {
    let cfg = LoadConfig {
        scenario: Some(vec![ScenarioLine {
            source: "ACME".into(),
            destination: "+8613800138000".into(),
            text: "z".repeat(200),
            encoding: Encoding::Gsm7,
            expect: None,
            tlvs: Default::default(),
        }]),
        ..Default::default()
    };
    let t = build_templates(&cfg).unwrap();
    assert_eq!(t.pdus.len(), 2);
    assert!(t.pdus[0].first && !t.pdus[1].first);
    for p in &t.pdus {
        let f = t.frame(p);
        let m = peek::message(f).unwrap();
        assert!(m.has_udh());
        assert_eq!(m.destination.addr, b"8613800138000");
        assert_eq!(m.source.ton, 5);
        let r = p.ref_off as usize;
        assert_eq!(&f[r - 3..r], &[0x05, 0x00, 0x03]);
    }
}

#[test]
fn tlvs_go_on_every_part_and_a_line_overrides_the_run() {
    let line = |tlvs: &[(&str, &str)]| ScenarioLine {
        source: "ACMEBK".into(),
        destination: "919800000001".into(),
        text: "z".repeat(200),
        encoding: Encoding::Gsm7,
        expect: None,
        tlvs: tlvs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let cfg = LoadConfig {
        scenario: Some(vec![line(&[("0x1401", "1107000000000000009"), ("5122", "7,8")])]),
        tlvs: vec![(0x1400, b"1101".to_vec()), (0x1401, b"1107000000000000001".to_vec())],
        ..Default::default()
    };
    let t = build_templates(&cfg).unwrap();
    assert_eq!(t.pdus.len(), 2, "two parts");
    for p in &t.pdus {
        let f = t.frame(p);
        let m = peek::message(f).unwrap();
        let tlvs: Vec<(u16, &[u8])> = peek::tlvs(m.tlvs).map(|x| x.unwrap()).collect();
        let want: [(u16, &[u8]); 3] = [(0x1400, b"1101"), (0x1401, b"1107000000000000009"), (0x1402, b"7,8")];
        assert_eq!(tlvs, want, "the run's TLVs, the line's over them, in tag order");
        // The concatenation reference is still found with TLVs after short_message.
        let r = p.ref_off as usize;
        assert_eq!(&f[r - 3..r], &[0x05, 0x00, 0x03]);
        assert_eq!(m.destination.addr, b"919800000001");
    }
    // Random traffic: the run's TLVs and source on every frame.
    let cfg = LoadConfig { tlvs: vec![(0x1400, b"1101".to_vec())], source: "ACMEBK".into(), ..Default::default() };
    let t = build_templates(&cfg).unwrap();
    let m = peek::message(t.frame(&t.pdus[0])).unwrap();
    assert_eq!((m.source.addr, m.source.ton), (&b"ACMEBK"[..], 5));
    assert_eq!(peek::tlvs(m.tlvs).map(|x| x.unwrap()).collect::<Vec<_>>(), [(0x1400, &b"1101"[..])]);
    // CMPP has no TLVs; a bad tag is named.
    let cmpp = LoadConfig { cmpp: Some(crate::cmpp::Version::V30), ..cfg };
    assert!(build_templates(&cmpp).unwrap_err().to_string().contains("CMPP has none"));
    assert!(check_bad_tag("0x0").contains("TLV tag \"0x0\""));
    assert!(check_bad_tag("70000").contains("0x0001–0xFFFF"));
    assert_eq!(parse_tlv_arg("0x1402=7,8"), Ok((0x1402, b"7,8".to_vec())));
    assert!(parse_tlv_arg("0x1402").unwrap_err().contains("TAG=VALUE"));
}

fn check_bad_tag(tag: &str) -> String {
    let l = ScenarioLine {
        source: "A".into(),
        destination: "1".into(),
        text: "x".into(),
        encoding: Encoding::Gsm7,
        expect: None,
        tlvs: [(tag.to_owned(), "v".to_owned())].into(),
    };
    let text = serde_json::to_string(&l).unwrap();
    parse_scenario(&text, "s.jsonl").unwrap_err().to_string()
}

/// A minimal SMSC: bind OK (or refused), one MO and one enquire_link after the bind,
/// submit_sm_resp for every submit (0x58 when the text contains THROTTLE or the destination
/// is 999… and odd; 0x0B for a 999… destination above 9990000099) and a receipt when asked
/// for.
async fn sink(refuse: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(sink_conn(s, refuse));
        }
    });
    addr
}

async fn sink_conn(mut s: TcpStream, refuse: bool) {
    let mut framer = Framer::new(MAX_PDU_BYTES);
    let mut inb = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::new();
    let (mut dseq, mut id) = (1u32, 0u64);
    loop {
        inb.reserve(READ_CHUNK);
        match s.read_buf(&mut inb).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut pos = 0;
        let mut close = false;
        while let Next::Frame(n) = framer.next(&inb[pos..]) {
            let f = &inb[pos..pos + n];
            pos += n;
            let h = Header::read(f);
            let seq = h.sequence_number;
            match h.command_id {
                c @ (cmd::BIND_TRANSCEIVER | cmd::BIND_TRANSMITTER | cmd::BIND_RECEIVER) => {
                    let bt = BindType::from_command(c).unwrap();
                    let st = if refuse { status::ESME_RBINDFAIL } else { 0 };
                    out.extend_from_slice(&encode_bind_resp(bt, st, seq, "sink"));
                    if !refuse {
                        out.extend_from_slice(
                            &SubmitBuilder::new("8613900000000", "1069").deliver().short_message(b"STOP").build(dseq),
                        );
                        put_header_only(&mut out, cmd::ENQUIRE_LINK, 0, dseq + 1);
                        dseq += 2;
                    }
                }
                cmd::SUBMIT_SM => {
                    let m = peek::message(f).unwrap();
                    let d = m.destination.addr;
                    let st = if m.short_message.windows(8).any(|w| w == b"THROTTLE") {
                        0x58
                    } else if d.starts_with(b"999") {
                        let n: u64 = std::str::from_utf8(d).unwrap().parse().unwrap();
                        if n > 9_990_000_099 {
                            status::ESME_RINVDSTADR
                        } else if n % 2 == 1 {
                            0x58
                        } else {
                            0
                        }
                    } else {
                        0
                    };
                    id += 1;
                    let mid = format!("{id:x}");
                    put_resp_with_id(&mut out, cmd::SUBMIT_SM_RESP, st, seq, mid.as_bytes());
                    if st == 0 && m.registered_delivery & 1 != 0 {
                        let src = std::str::from_utf8(m.destination.addr).unwrap();
                        let dst = std::str::from_utf8(m.source.addr).unwrap();
                        let text = format!("id:{mid} stat:DELIVRD");
                        out.extend_from_slice(
                            &SubmitBuilder::new(src, dst)
                                .deliver()
                                .esm_class(0x04)
                                .short_message(text.as_bytes())
                                .build(dseq),
                        );
                        dseq += 1;
                    }
                }
                cmd::UNBIND => {
                    put_header_only(&mut out, cmd::UNBIND_RESP, 0, seq);
                    close = true;
                }
                _ => {}
            }
        }
        inb.advance(pos);
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if close || refuse {
            return;
        }
    }
}

fn bounded<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(Duration::from_secs(10), f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_traffic_against_sink_gets_every_response_and_receipt() {
    let addr = sink(false).await;
    let cfg = LoadConfig {
        target: addr,
        sessions: 2,
        window: 50,
        count: 2000,
        duration: Duration::from_secs(5),
        registered_delivery: true,
        ..Default::default()
    };
    let r = bounded(run(cfg)).await.expect("run finished in time").unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.sent, 2000);
    assert_eq!(r.messages, 2000);
    assert_eq!(r.responses, 2000);
    assert_eq!(r.unanswered, 0);
    assert_eq!(r.receipts, 2000);
    assert_eq!(r.mo_received, 2);
    assert_eq!(r.statuses.get("0x00000000"), Some(&2000));
    assert_eq!(r.bind_failures, 0);
    assert!(r.elapsed_seconds > 0.0 && r.submit_per_second > 0.0);
    assert!(r.latency_us.p50 >= 1.0 && r.latency_us.max >= r.latency_us.p50);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"latency_us\""));
    r.print_human();
}

#[test]
fn destination_ranges_parse_and_pick_inside() {
    let r: DestRange = "8613800000000-8613899999999".parse().unwrap();
    assert_eq!(r, DestRange { lo: 8_613_800_000_000, hi: 8_613_899_999_999, digits: 13 });
    assert_eq!(r.pick(0), r.lo);
    assert_eq!(r.pick(u64::MAX), r.hi);
    let all: DestRange = "00000000000000000000-18446744073709551615".parse().unwrap();
    assert_eq!((all.pick(0), all.pick(u64::MAX)), (0, u64::MAX));
    let one: DestRange = "0042-0042".parse().unwrap();
    assert_eq!((one.pick(12345), one.digits), (42, 4));
    for bad in ["", "1-", "-1", "12-1", "12-345", "1a-22", "20-10", "123"] {
        assert!(bad.parse::<DestRange>().is_err(), "{bad:?} accepted");
    }
    let mut d = *b"xxxxx";
    templates::write_digits(&mut d, 42);
    assert_eq!(&d, b"00042");
}

/// `--destinations`: every message goes to a number of the range, drawn per message (the
/// sink throttles the odd ones and refuses any outside the range).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_destinations_vary_per_message_within_the_range() {
    let addr = sink(false).await;
    let cfg = LoadConfig {
        target: addr,
        sessions: 2,
        window: 50,
        count: 2000,
        duration: Duration::from_secs(5),
        destinations: Some("9990000000-9990000099".parse().unwrap()),
        ..Default::default()
    };
    let r = bounded(run(cfg)).await.expect("run finished in time").unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.responses, 2000);
    assert_eq!(r.statuses.get(&format!("{:#010x}", status::ESME_RINVDSTADR)), None, "{:?}", r.statuses);
    let odd = r.statuses.get("0x00000058").copied().unwrap_or(0);
    assert!((800..=1200).contains(&odd), "{odd} of 2000 to odd numbers: {:?}", r.statuses);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_counts_parts_messages_and_expect_mismatches() {
    let addr = sink(false).await;
    let line = |text: String, expect: &str| ScenarioLine {
        source: "ACME".into(),
        destination: "8613800138000".into(),
        text,
        encoding: Encoding::Gsm7,
        expect: Some(expect.into()),
        tlvs: Default::default(),
    };
    let cfg = LoadConfig {
        target: addr,
        sessions: 1,
        window: 10,
        count: 8,
        duration: Duration::from_secs(5),
        scenario: Some(vec![
            line("y".repeat(200), "ok"),                  // 2 parts, OK as expected
            line("please THROTTLE".into(), "0x00000058"), // throttled as expected
            line("hello".into(), "ESME_RTHROTTLED"),      // OK: mismatch
        ]),
        ..Default::default()
    };
    let r = bounded(run(cfg)).await.expect("run finished in time").unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.sent, 8);
    assert_eq!(r.messages, 6);
    assert_eq!(r.responses, 8);
    assert_eq!(r.statuses.get("0x00000000"), Some(&6));
    assert_eq!(r.statuses.get("0x00000058"), Some(&2));
    assert_eq!(r.expect_mismatches, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_cap_limits_the_total_send_rate() {
    let addr = sink(false).await;
    let cfg = LoadConfig {
        target: addr,
        sessions: 2,
        window: 50,
        count: 0,
        duration: Duration::from_millis(500),
        rate: Some(4000),
        ..Default::default()
    };
    let r = bounded(run(cfg)).await.expect("run finished in time").unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // 4000/s for 0.5 s = 2000, plus the initial token per session.
    assert!((1700..=2200).contains(&r.sent), "sent {}", r.sent);
    assert_eq!(r.responses, r.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bind_and_refused_connect_are_reported() {
    let addr = sink(true).await;
    let cfg = LoadConfig { target: addr, sessions: 2, count: 10, ..Default::default() };
    let r = bounded(run(cfg)).await.unwrap().unwrap();
    assert_eq!(r.bind_failures, 2);
    assert_eq!(r.sent, 0);
    assert_eq!(r.errors.len(), 2);
    assert!(r.errors[0].contains("0x0000000d"), "{:?}", r.errors);

    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let cfg = LoadConfig { target: dead, sessions: 1, count: 10, ..Default::default() };
    let r = bounded(run(cfg)).await.unwrap().unwrap();
    assert_eq!(r.sent, 0);
    assert!(r.errors[0].contains("connect"), "{:?}", r.errors);
}

#[test]
fn speed_parses() {
    assert_eq!("1x".parse::<Speed>(), Ok(Speed::Factor(1.0)));
    assert_eq!("10X".parse::<Speed>(), Ok(Speed::Factor(10.0)));
    assert_eq!("0.5".parse::<Speed>(), Ok(Speed::Factor(0.5)));
    assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
    assert!("0x".parse::<Speed>().is_err());
    assert!("fast".parse::<Speed>().is_err());
}

/// Throughput smoke test against the fastest possible sink.
mod perf {
    use super::*;

    /// Fastest possible sink: header-only parsing, one write per read.
    async fn fast_sink() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                s.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let mut inb = BytesMut::with_capacity(1 << 18);
                    let mut out = BytesMut::with_capacity(1 << 18);
                    let mut framer = Framer::new(MAX_PDU_BYTES);
                    loop {
                        inb.reserve(1 << 17);
                        match s.read_buf(&mut inb).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let mut pos = 0;
                        let mut close = false;
                        while let Next::Frame(n) = framer.next(&inb[pos..]) {
                            let h = Header::read(&inb[pos..]);
                            pos += n;
                            match h.command_id {
                                cmd::SUBMIT_SM => {
                                    put_resp_with_id(&mut out, cmd::SUBMIT_SM_RESP, 0, h.sequence_number, b"1")
                                }
                                cmd::BIND_TRANSCEIVER => out.extend_from_slice(&encode_bind_resp(
                                    BindType::Transceiver,
                                    0,
                                    h.sequence_number,
                                    "s",
                                )),
                                cmd::UNBIND => {
                                    put_header_only(&mut out, cmd::UNBIND_RESP, 0, h.sequence_number);
                                    close = true;
                                }
                                _ => {}
                            }
                        }
                        inb.advance(pos);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "throughput smoke test: cargo test --release --lib load::perf -- --ignored --nocapture"]
    async fn throughput() {
        let addr = fast_sink().await;
        for (sessions, window) in [(4, 100), (2, 500), (4, 1000)] {
            let cfg = LoadConfig {
                target: addr,
                sessions,
                window,
                count: 0,
                duration: Duration::from_secs(3),
                ..Default::default()
            };
            let r = run(cfg).await.unwrap();
            println!(
                "{sessions}x{window}: {:.0} submit/s, sent {}, unanswered {}, p50 {} µs, errors {:?}",
                r.submit_per_second, r.sent, r.unanswered, r.latency_us.p50, r.errors
            );
        }
    }
}

/// `load --cmpp` against the ISMG simulator, both versions: CONNECT with the MD5
/// authenticator the simulator checks, every SUBMIT answered Result 0, a long Chinese text
/// sent as UDH parts that share one reference, destinations drawn from the range, and every
/// status report answered; a wrong secret is a refused bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmpp_load_against_the_ismg_simulator() {
    use crate::cmpp::{peek as cpeek, text::has_udh, Version};
    for version in [Version::V30, Version::V20] {
        let mut sim_cfg = crate::sim::cmpp::CmppSimConfig::default();
        sim_cfg.secrets.insert("901234".into(), "s3cret".into());
        let sim = crate::sim::cmpp::start(sim_cfg).await.unwrap();
        let cfg = LoadConfig {
            target: sim.local_addr,
            system_id: "901234".into(),
            password: "s3cret".into(),
            sessions: 1,
            window: 16,
            count: 200,
            registered_delivery: true,
            destinations: Some("8613800000000-8613800009999".parse().unwrap()),
            // 90 characters: two UCS-2 parts (67 a part).
            text: Some("【Acme】会员日全场八折，积分翻倍，满三百减五十，详情见门店公告，仅限本周末。新会员首单立减二十元，老会员再送双倍积分，到店还有精美礼品相送，数量有限先到先得，欢迎光临，回T退订".into()),
            source: "10690001".into(),
            cmpp: Some(version),
            ..Default::default()
        };
        let r = run(cfg.clone()).await.unwrap();
        assert!(r.failures().is_empty(), "{version:?}: {:?}", r.failures());
        assert_eq!((r.sent, r.messages), (200, 100), "{version:?}: two parts a message");
        assert_eq!(r.statuses.get("0x00000000"), Some(&200), "{version:?}: {:?}", r.statuses);
        assert_eq!(r.receipts, 200, "{version:?}: a status report per SUBMIT");
        assert_eq!(r.cmpp.as_deref(), Some(if version == Version::V30 { "3.0" } else { "2.0" }));
        let seen = sim.submits();
        assert_eq!(seen.len(), 200);
        for pair in seen.chunks(2) {
            let (a, b) = (cpeek::submit(&pair[0], version).unwrap(), cpeek::submit(&pair[1], version).unwrap());
            assert!(has_udh(a.tp_udhi) && (a.pk_total, a.pk_number, b.pk_number) == (2, 1, 2), "{version:?}");
            assert_eq!(a.msg_content[..4], b.msg_content[..4], "{version:?}: one concatenation reference");
            let d: Vec<&[u8]> = a.destinations().collect();
            assert_eq!(d, b.destinations().collect::<Vec<_>>());
            let n: u64 = std::str::from_utf8(d[0]).unwrap().parse().unwrap();
            assert!((8613800000000..=8613800009999).contains(&n), "{n}");
            assert_eq!((a.msg_src, a.src_id, a.msg_fmt), (&b"901234"[..], &b"10690001"[..], 8));
        }
        let wrong = run(LoadConfig { password: "wrong".into(), count: 10, ..cfg }).await.unwrap();
        assert_eq!(wrong.bind_failures, 1, "{version:?}: {:?}", wrong.errors);
        sim.shutdown().await;
    }
}
