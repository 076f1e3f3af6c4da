//! Record and replay end to end: the sample capture in `benches/data/` replayed by
//! the load tool into the SMSC simulator and through the real gateway, statuses compared with
//! the recorded ones; and the generator of that sample.
//!
//! Regenerate the sample (ignored test; writes `benches/data/smpp-sample.pcapng`):
//!
//! ```sh
//! cargo test --test replay -- --ignored make_sample_capture
//! ```
//!
//! It runs the load tool (GSM7, UCS-2 Chinese, concatenated UDH messages, receipts requested)
//! and a raw ESME (data_sm, submit_multi) through the real gateway with `[capture]` on, so the
//! sample is what an operator's recording looks like: both legs of every session (ESME leg
//! 10.1.x → 10.0.0.1, SMSC leg 10.2.x → 10.0.0.2). The simulator answers two destinations
//! with errors, so the recording holds non-zero statuses.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use common::Esme;
use consentgate::load::Speed;
use consentgate::load::{Encoding, LoadConfig, ScenarioLine};
use consentgate::pcap::{extract, ExtractOptions};
use consentgate::sim::SimConfig;
use consentgate::smpp::{self, cmd};

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/data/smpp-sample.pcapng")
}

/// Destinations the recording simulator refused (and with what).
const REFUSED: [(&str, u32); 2] = [("8613999999999", 0x45), ("8613988888888", 0x0B)];

fn bounded<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(Duration::from_secs(10), f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_capture_replays_into_the_simulator_with_statuses_compared() {
    let x = extract(&sample(), &ExtractOptions::default()).expect("sample capture reads");
    assert_eq!(x.damage.gaps, 0, "{:?}", x.damage);
    assert!(x.streams.len() >= 3, "{:?}", x.streams);
    let by_cmd = x.summary().by_command;
    assert!(by_cmd["submit_sm"] >= 300, "{by_cmd:?}");
    assert!(by_cmd["data_sm"] >= 1 && by_cmd["submit_multi"] >= 1, "{by_cmd:?}");
    let recorded_errors = x.pdus.iter().filter(|p| p.recorded_status.is_some_and(|s| s != 0)).count() as u64;
    assert!(recorded_errors > 0);
    let recorded = x.pdus.iter().filter(|p| p.recorded_status.is_some()).count() as u64;
    let total = x.pdus.len() as u64;

    // A simulator that refuses nothing: every recorded error now differs.
    let sim = consentgate::sim::start(SimConfig { receipts: false, ..Default::default() }).await.unwrap();
    let cfg = LoadConfig {
        target: sim.local_addr,
        system_id: "replay".into(),
        sessions: 4,
        window: 50,
        count: 0,
        duration: Duration::ZERO,
        replay: Some(Arc::new(x)),
        speed: Speed::Max,
        ..Default::default()
    };
    let r = bounded(consentgate::load::run(cfg)).await.expect("replay finished in time").unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.sent, total);
    assert_eq!(r.responses, total);
    let rep = r.replay.as_ref().expect("replay section");
    assert_eq!(rep.compared, total);
    assert_eq!(rep.no_recorded_status, total - recorded);
    assert_eq!(rep.differ, recorded_errors);
    assert!(rep.statuses.iter().all(|p| p.replayed == "0x00000000"), "{:?}", rep.statuses);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["replay"]["capture"]["pdus_extracted"], total);
    assert!(json["replay"]["statuses"].as_array().is_some_and(|a| !a.is_empty()));
    // The simulator got the recorded bytes, sequence numbers aside.
    assert_eq!(sim.stats.submits.load(std::sync::atomic::Ordering::Relaxed), total);
    r.print_human();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_replays_through_the_gateway_at_10x_with_recorded_pacing() {
    let x = extract(&sample(), &ExtractOptions::default()).unwrap();
    let t0 = x.pdus.iter().map(|p| p.ts_ns).min().unwrap();
    let t1 = x.pdus.iter().map(|p| p.ts_ns).max().unwrap();
    let span = Duration::from_nanos(t1 - t0);
    assert!(span >= Duration::from_millis(500), "the sample spans {span:?}");
    let total = x.pdus.len() as u64;
    // The same refusals as when recording: statuses agree.
    let sim = SimConfig {
        dest_errors: REFUSED.iter().map(|&(d, s)| (d.to_owned(), s)).collect::<HashMap<_, _>>(),
        ..common::sim_cfg()
    };
    let (sim, gw) = common::stack(sim, "", "").await;
    let cfg = LoadConfig {
        target: gw.addr,
        system_id: "acme".into(),
        password: "pw".into(),
        sessions: 2,
        window: 100,
        count: 0,
        duration: Duration::ZERO,
        replay: Some(Arc::new(x)),
        speed: Speed::Factor(10.0),
        ..Default::default()
    };
    let r = bounded(consentgate::load::run(cfg)).await.expect("replay finished in time").unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.responses, total);
    // Paced: at least the recorded span / 10 (less a little slack for the first batch).
    assert!(r.elapsed_seconds >= span.as_secs_f64() / 10.0 * 0.8, "{} s for {span:?}", r.elapsed_seconds);
    let rep = r.replay.unwrap();
    assert_eq!(rep.differ, 0, "{:?}", rep.statuses);
    assert!(rep.statuses.iter().any(|p| p.recorded == "0x00000045" && p.replayed == "0x00000045"));
    gw.stop().await;
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Sample generator

fn cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

fn finish(mut b: BytesMut) -> BytesMut {
    let n = b.len() as u32;
    b[..4].copy_from_slice(&n.to_be_bytes());
    b
}

/// A PDU's header (length patched by `finish`), empty service_type and the test's source
/// address (TON 0, NPI 1).
fn header_and_source(command_id: u32, seq: u32) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32(0);
    b.put_u32(command_id);
    b.put_u32(0);
    b.put_u32(seq);
    cstr(&mut b, "");
    b.put_u8(0);
    b.put_u8(1);
    cstr(&mut b, "1069012345");
    b
}

/// data_sm (v3.4 §4.7.1) with the text in message_payload.
fn data_sm(seq: u32, dest: &str, dcs: u8, payload: &[u8]) -> BytesMut {
    let mut b = header_and_source(cmd::DATA_SM, seq);
    b.put_u8(1);
    b.put_u8(1);
    cstr(&mut b, dest);
    b.put_u8(0); // esm_class
    b.put_u8(1); // registered_delivery
    b.put_u8(dcs);
    b.put_u16(0x0424);
    b.put_u16(payload.len() as u16);
    b.put_slice(payload);
    finish(b)
}

/// submit_multi (v3.4 §4.5.1) to SME addresses.
fn submit_multi(seq: u32, dests: &[&str], text: &[u8]) -> BytesMut {
    let mut b = header_and_source(cmd::SUBMIT_MULTI, seq);
    b.put_u8(dests.len() as u8);
    for d in dests {
        b.put_u8(1); // SME address
        b.put_u8(1);
        b.put_u8(1);
        cstr(&mut b, d);
    }
    b.put_slice(&[0, 0, 0]); // esm_class, protocol_id, priority_flag
    cstr(&mut b, "");
    cstr(&mut b, "");
    b.put_slice(&[1, 0, 0, 0]); // registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    b.put_u8(text.len() as u8);
    b.put_slice(text);
    finish(b)
}

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes benches/data/smpp-sample.pcapng: cargo test --test replay -- --ignored make_sample_capture"]
async fn make_sample_capture() {
    let dir = tempfile::tempdir().unwrap();
    let sim = consentgate::sim::start(SimConfig {
        dest_errors: REFUSED.iter().map(|&(d, s)| (d.to_owned(), s)).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut cfg = common::config(sim.local_addr, "", "");
    cfg.capture = Some(consentgate::capture::CaptureConfig { dir: dir.path().into(), ..Default::default() });
    let gw = common::Gw::start(cfg).await;
    let t = gw.addr;

    let line = |dest: &str, text: String, encoding: Encoding| ScenarioLine {
        source: "1069012345".into(),
        destination: dest.into(),
        text,
        encoding,
        expect: None,
        tlvs: Default::default(),
    };
    let scenario = vec![
        line("8613800000001", "Your verification code is 482913. It expires in 5 minutes.".into(), Encoding::Gsm7),
        line("8613800000002", "验证码 654321，五分钟内有效。请勿泄露。".into(), Encoding::Ucs2),
        line(
            "8613800000003",
            "Weekend sale: 30% off every item in store and online until Sunday midnight. Show this message at the till or use code WKND30 at checkout. Reply STOP to opt out."
                .into(),
            Encoding::Gsm7,
        ),
        line(
            "8613800000004",
            "【商城】双十一大促：全场五折起，满三百减五十，限时三天。会员再享九五折，积分翻倍。点击链接查看详情，回复退订取消订阅。感谢您一直以来的支持与信任，祝您购物愉快！"
                .into(),
            Encoding::Ucs2,
        ),
        line("8613999999999", "Refused by the SMSC (0x45)".into(), Encoding::Gsm7),
        line("8613988888888", "Refused by the SMSC (0x0B)".into(), Encoding::Gsm7),
        line("+8613800000005", "Ünïcödé in Latin-1: café".into(), Encoding::Latin1),
    ];
    let r = consentgate::load::run(LoadConfig {
        target: t,
        system_id: "acme".into(),
        password: "pw".into(),
        sessions: 2,
        window: 10,
        count: 360,
        duration: Duration::from_secs(10),
        rate: Some(300),
        registered_delivery: true,
        scenario: Some(scenario),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.receipts > 0);

    // A raw ESME for data_sm (GSM7 and UCS-2) and submit_multi.
    let mut e = Esme::bound(t, "acme").await;
    let mut seqs = Vec::new();
    for (i, (dcs, text)) in [(0u8, b"data_sm hello".to_vec()), (8, ucs2("数据短信你好"))].into_iter().enumerate()
    {
        let s = e.seq();
        e.send(&data_sm(s, &format!("861380000001{i}"), dcs, &text)).await;
        seqs.push(s);
    }
    let s = e.seq();
    e.send(&submit_multi(s, &["8613800000020", "8613800000021", "8613988888888"], b"one to many")).await;
    seqs.push(s);
    let mut answered = 0;
    while answered < seqs.len() {
        let f = e.recv().await.expect("response");
        if seqs.contains(&smpp::sequence(&f)) && smpp::command_id(&f) & smpp::RESP_BIT != 0 {
            answered += 1;
        } else if smpp::command_id(&f) == cmd::DELIVER_SM {
            // deliver_sm_resp carries an empty message_id (a 16-byte one is malformed).
            let mut r = BytesMut::new();
            consentgate::smpp::pdu::put_resp_with_id(&mut r, cmd::DELIVER_SM_RESP, 0, smpp::sequence(&f), b"");
            e.send(&r).await;
        }
    }
    let s = e.seq();
    e.send_header(cmd::UNBIND, 0, s).await;
    let _ =
        tokio::time::timeout(Duration::from_secs(1), e.recv_where(|f| smpp::command_id(f) == cmd::UNBIND_RESP)).await;
    drop(e);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Stopping the gateway flushes and closes the capture.
    gw.stop().await;
    sim.shutdown().await;
    let files = consentgate::capture::list_captures(dir.path()).unwrap();
    assert_eq!(files.len(), 1);
    std::fs::create_dir_all(sample().parent().unwrap()).unwrap();
    std::fs::copy(&files[0], sample()).unwrap();
    let x = extract(&sample(), &ExtractOptions::default()).unwrap();
    println!("{}: {:?}\n{:#?}", sample().display(), x, x.summary().by_command);
}
