use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::writer::file_name;
use super::*;
use crate::pcap::{extract_from, ExtractOptions};
use crate::smpp::pdu::{put_resp_with_id, SubmitBuilder};
use crate::smpp::{cmd, sequence};
use bytes::BytesMut;

fn submit(seq: u32, i: u32) -> Vec<u8> {
    SubmitBuilder::new("1069", &format!("86138{i:08}")).short_message(b"hi there").build(seq).to_vec()
}

fn resp(seq: u32, status: u32) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_resp_with_id(&mut b, cmd::SUBMIT_SM_RESP, status, seq, b"abc");
    b.to_vec()
}

fn only_file(dir: &Path) -> PathBuf {
    let mut f = list_captures(dir).unwrap();
    f.sort();
    assert_eq!(f.len(), 1, "{f:?}");
    f.pop().unwrap()
}

#[test]
fn file_names_sort_by_time() {
    let t = UNIX_EPOCH + Duration::from_secs(1_795_860_900); // 2026-11-28T10:15:00Z
    assert_eq!(file_name(t, 3), "consentgate-20261128T101500Z-000003.pcapng");
    assert_eq!(crate::time::civil_from_days(0), (1970, 1, 1));
    assert_eq!(crate::time::civil_from_days(-1), (1969, 12, 31));
}

#[test]
fn reader_round_trips_every_pdu_with_timestamps_and_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let cap = Capture::start(CaptureConfig { dir: dir.path().into(), ..Default::default() }).unwrap();
    let mut s = cap.session("acme").unwrap();
    let mut want = Vec::new(); // (flow, ts, frame)
    let t0 = 1_795_860_900_000_000u64;
    for i in 0..50u32 {
        let f = submit(i + 1, i);
        s.record(Flow::EsmeToGateway, &f, t0 + i as u64 * 10);
        want.push((Flow::EsmeToGateway, t0 + i as u64 * 10, f.clone()));
        let mut up = f.clone();
        crate::smpp::set_sequence(&mut up, 1000 + i);
        s.record(Flow::GatewayToSmsc, &up, t0 + i as u64 * 10 + 1);
        want.push((Flow::GatewayToSmsc, t0 + i as u64 * 10 + 1, up));
        let r = resp(1000 + i, if i % 7 == 0 { 0x0B } else { 0 });
        s.record(Flow::SmscToGateway, &r, t0 + i as u64 * 10 + 5);
        want.push((Flow::SmscToGateway, t0 + i as u64 * 10 + 5, r));
        let r = resp(i + 1, if i % 7 == 0 { 0x0B } else { 0 });
        s.record(Flow::GatewayToEsme, &r, t0 + i as u64 * 10 + 6);
        want.push((Flow::GatewayToEsme, t0 + i as u64 * 10 + 6, r));
    }
    // One big batch of PDUs in one call (split into several packets).
    let mut big = Vec::new();
    for i in 0..2000u32 {
        big.extend(submit(10_000 + i, i));
    }
    s.record(Flow::EsmeToGateway, &big, t0 + 1000);
    drop(s);
    cap.shutdown();
    assert_eq!(cap.stats().records_dropped.load(Ordering::Relaxed), 0);

    let f = only_file(dir.path());
    let x =
        extract_from(File::open(&f).unwrap(), "f", &ExtractOptions { keep_all: true, ..Default::default() }).unwrap();
    assert_eq!(x.damage.gaps, 0, "{:?}", x.damage);
    assert_eq!(x.damage.resyncs, 0);
    assert_eq!(x.damage.retransmissions, 0);
    assert_eq!(x.tcp_connections, 2);
    let flow_of = |p: &crate::pcap::CapturedPdu| match (p.src.to_string().as_str(), p.dst.port()) {
        ("10.0.0.1:2775", _) => Flow::GatewayToEsme,
        ("10.0.0.2:2775", _) => Flow::SmscToGateway,
        (s, 2775) if s.starts_with("10.1.") => Flow::EsmeToGateway,
        _ => Flow::GatewayToSmsc,
    };
    // Per flow, the PDUs in order with their timestamps.
    for fl in [Flow::EsmeToGateway, Flow::GatewayToEsme, Flow::GatewayToSmsc, Flow::SmscToGateway] {
        let got: Vec<(u64, &[u8])> =
            x.all.iter().filter(|p| flow_of(p) == fl).map(|p| (p.ts_ns, &p.frame[..])).collect();
        let mut exp: Vec<(u64, &[u8])> = want.iter().filter(|w| w.0 == fl).map(|w| (w.1 * 1000, &w.2[..])).collect();
        if fl == Flow::EsmeToGateway {
            let mut at = 0;
            while at < big.len() {
                let l = u32::from_be_bytes(big[at..at + 4].try_into().unwrap()) as usize;
                exp.push(((t0 + 1000) * 1000, &big[at..at + l]));
                at += l;
            }
        }
        assert_eq!(got.len(), exp.len(), "{fl:?}");
        assert!(got == exp, "{fl:?} differs");
    }
    // Replay view: the ESME leg's and the SMSC leg's submits, statuses matched.
    assert_eq!(x.streams.len(), 2);
    assert_eq!(x.pdus.len(), 50 + 2000 + 50);
    let esme: Vec<_> = x.pdus.iter().filter(|p| x.streams[p.stream as usize].esme.starts_with("10.1.")).collect();
    assert_eq!(esme.len(), 2050);
    assert_eq!(esme[0].recorded_status, Some(0x0B));
    assert_eq!(esme[1].recorded_status, Some(0));
    assert_eq!(esme[60].recorded_status, None);
    assert_eq!(sequence(x.frame(esme[2])), 3);
}

#[test]
fn rotation_caps_size_and_count_and_each_file_stands_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CaptureConfig { dir: dir.path().into(), max_file_bytes: 64 * 1024, max_files: 3, ..Default::default() };
    let cap = Capture::start(cfg).unwrap();
    let mut s = cap.session("acme").unwrap();
    for i in 0..3000u32 {
        s.record(Flow::EsmeToGateway, &submit(i + 1, i), 1_000_000 + i as u64);
        s.record(Flow::GatewayToEsme, &resp(i + 1, 0), 1_000_000 + i as u64);
    }
    drop(s);
    cap.shutdown();
    let st = cap.stats();
    assert!(st.files_opened.load(Ordering::Relaxed) > 3);
    let files = list_captures(dir.path()).unwrap();
    assert_eq!(files.len(), 3);
    let mut total = 0;
    for f in &files {
        assert!(fs::metadata(f).unwrap().len() <= 64 * 1024, "{f:?}");
        let x = extract_from(File::open(f).unwrap(), "f", &ExtractOptions::default()).unwrap();
        // A fresh handshake in every file: no hunting, no gap.
        assert_eq!(x.damage.gaps, 0);
        assert_eq!(x.damage.bytes_skipped, 0);
        assert!(!x.pdus.is_empty());
        assert!(x.pdus.iter().all(|p| p.recorded_status == Some(0)));
        total += x.pdus.len();
    }
    assert!(total < 3000);
}

#[test]
fn full_queue_drops_and_counts_and_the_hole_shows_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    // A queue of 40 bytes: a 20-byte response fits, a ~60-byte submit never does.
    let cfg = CaptureConfig { dir: dir.path().into(), queue_bytes: 40, ..Default::default() };
    let cap = Capture::start(cfg).unwrap();
    let mut s = cap.session("acme").unwrap();
    let small = resp(1, 0); // 20 bytes
    let big = submit(2, 2); // > 64 bytes
    s.record(Flow::GatewayToEsme, &small, 1);
    s.record(Flow::GatewayToEsme, &big, 2);
    std::thread::sleep(Duration::from_millis(50));
    s.record(Flow::GatewayToEsme, &resp(3, 0), 3);
    drop(s);
    cap.shutdown();
    assert_eq!(cap.stats().records_dropped.load(Ordering::Relaxed), 1);
    assert_eq!(cap.stats().records_written.load(Ordering::Relaxed), 2);
    let x = extract_from(
        File::open(only_file(dir.path())).unwrap(),
        "f",
        &ExtractOptions { keep_all: true, ..Default::default() },
    )
    .unwrap();
    assert_eq!(x.damage.gaps, 1);
    assert_eq!(x.all.len(), 2);
    // Accounts filter.
    let cap =
        Capture::start(CaptureConfig { dir: dir.path().into(), accounts: vec!["bank".into()], ..Default::default() })
            .unwrap();
    assert!(cap.session("acme").is_none());
    assert!(cap.session("bank").is_some());
}
