use std::net::Ipv6Addr;

use bytes::BytesMut;

use super::tcp_flag::{ACK, SYN};
use super::*;
use crate::smpp::cmd;
use crate::smpp::pdu::{put_resp_with_id, SubmitBuilder};

/// A classic pcap (µs) built by hand.
struct PcapBuilder {
    pub out: Vec<u8>,
}

impl PcapBuilder {
    pub fn new(link: u32) -> PcapBuilder {
        let mut out = Vec::new();
        out.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&link.to_le_bytes());
        PcapBuilder { out }
    }
    pub fn packet(&mut self, ts_us: u64, data: &[u8]) {
        self.out.extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        self.out.extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        self.out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.extend_from_slice(data);
    }
    /// Ethernet + IPv4 + TCP around `payload` (ack 0, IP id 0).
    pub fn tcp(&mut self, ts_us: u64, src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, flags: u8, payload: &[u8]) {
        let mut p = Vec::new();
        write::build_packet(&mut p, src, dst, seq, 0, flags, 0, payload);
        self.packet(ts_us, &p);
    }
}

const ESME: ([u8; 4], u16) = ([192, 0, 2, 1], 40000);
const SMSC: ([u8; 4], u16) = ([192, 0, 2, 2], 2775);

fn submit(seq: u32, dest: &str) -> Vec<u8> {
    SubmitBuilder::new("1069", dest).short_message(b"hello").build(seq).to_vec()
}

fn resp(seq: u32, status: u32) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_resp_with_id(&mut b, cmd::SUBMIT_SM_RESP, status, seq, b"id");
    b.to_vec()
}

fn read(bytes: &[u8], opts: &ExtractOptions) -> Extracted {
    extract_from(std::io::Cursor::new(bytes.to_vec()), "t.pcap", opts).unwrap()
}

#[test]
fn out_of_order_and_retransmitted_segments_reassemble() {
    let mut stream = Vec::new();
    for i in 1..=4 {
        stream.extend(submit(i, &format!("861380000000{i}")));
    }
    let mut pb = PcapBuilder::new(1);
    pb.tcp(0, ESME, SMSC, 999, SYN, &[]);
    // Segments of 37 bytes, sent as: 0, 2, 1 (out of order), 1 again (retransmission),
    // a segment overlapping 2 and 3, then the rest.
    let isn = 1000u32;
    let seg = |k: usize| (k * 37, ((k + 1) * 37).min(stream.len()));
    let n = stream.len().div_ceil(37);
    let mut order: Vec<usize> = vec![0, 2, 1, 1];
    order.extend(3..n);
    for (t, &k) in order.iter().enumerate() {
        let (a, b) = seg(k);
        pb.tcp(t as u64 * 10, ESME, SMSC, isn + a as u32, ACK, &stream[a..b]);
        if k == 2 {
            // Overlap: bytes 60..100 again.
            pb.tcp(t as u64 * 10 + 1, ESME, SMSC, isn + 60, ACK, &stream[60..100]);
        }
    }
    // Responses, one with an error.
    let mut back = resp(1, 0);
    back.extend(resp(2, 0x0B));
    back.extend(resp(4, 0));
    pb.tcp(500, SMSC, ESME, 5000, ACK, &back);
    let x = read(&pb.out, &ExtractOptions::default());
    assert_eq!(x.pdus.len(), 4, "{:?}", x.damage);
    for (i, p) in x.pdus.iter().enumerate() {
        assert_eq!(p.sequence, i as u32 + 1);
        assert_eq!(x.frame(p), &submit(p.sequence, &format!("861380000000{}", i + 1))[..]);
    }
    assert_eq!(x.pdus[0].recorded_status, Some(0));
    assert_eq!(x.pdus[1].recorded_status, Some(0x0B));
    assert_eq!(x.pdus[2].recorded_status, None);
    assert_eq!(x.pdus[3].recorded_status, Some(0));
    assert!(x.damage.out_of_order >= 1);
    assert!(x.damage.retransmissions >= 1);
    assert_eq!(x.damage.gaps, 0);
    assert_eq!(x.damage.resyncs, 0);
    assert_eq!(x.streams.len(), 1);
    assert_eq!(x.streams[0].esme, "192.0.2.1:40000");
    assert_eq!(x.streams[0].with_status, 3);
}

#[test]
fn a_gap_is_reported_and_framing_resynchronises() {
    let mut stream = Vec::new();
    for i in 1..=5 {
        stream.extend(submit(i, "8613800000001"));
    }
    let l = submit(1, "8613800000001").len();
    let mut pb = PcapBuilder::new(1);
    // PDU 1 whole, then a hole in the middle of PDU 2, then the rest.
    pb.tcp(0, ESME, SMSC, 1, ACK, &stream[..l + 10]);
    pb.tcp(1, ESME, SMSC, 1 + (l + 30) as u32, ACK, &stream[l + 30..]);
    let x = read(&pb.out, &ExtractOptions::default());
    assert_eq!(x.damage.gaps, 1);
    assert_eq!(x.damage.resyncs, 1);
    let seqs: Vec<u32> = x.pdus.iter().map(|p| p.sequence).collect();
    assert_eq!(seqs, vec![1, 3, 4, 5]);
}

#[test]
fn non_smpp_stream_and_truncated_file_are_reported_not_fatal() {
    let mut pb = PcapBuilder::new(1);
    let web = ([192, 0, 2, 9], 80);
    pb.tcp(0, ([192, 0, 2, 8], 50000), web, 1, ACK, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    pb.tcp(1, web, ([192, 0, 2, 8], 50000), 1, ACK, &vec![b'x'; 70_000 / 2]);
    pb.tcp(2, ESME, SMSC, 1, ACK, &submit(7, "8613800000001"));
    pb.tcp(3, SMSC, ESME, 1, ACK, &resp(7, 0x58));
    pb.tcp(4, ESME, SMSC, 1 + 80, ACK, &submit(8, "8613800000001"));
    // Cut the file inside the last packet.
    let cut = &pb.out[..pb.out.len() - 20];
    let x = read(cut, &ExtractOptions::default());
    assert!(x.damage.file_truncated);
    assert_eq!(x.pdus.len(), 1);
    assert_eq!(x.pdus[0].recorded_status, Some(0x58));
    assert_eq!(x.skipped.len(), 1);
    assert_eq!(x.skipped[0].reason, "not SMPP");
    // --port filter.
    let x = read(cut, &ExtractOptions { port: Some(80), ..Default::default() });
    assert_eq!(x.pdus.len(), 0);
    assert_eq!(x.other_port, 1);
    // Garbage is a format error naming the file; an empty capture is NoPdus naming it.
    let e = extract_from(
        std::io::Cursor::new(b"not a capture at all, really".to_vec()),
        "junk.bin",
        &ExtractOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("junk.bin: not a pcap"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.pcap");
    std::fs::write(&p, PcapBuilder::new(1).out).unwrap();
    let e = extract(&p, &ExtractOptions::default()).unwrap_err().to_string();
    assert!(e.contains("empty.pcap: no SMPP"), "{e}");
}

#[test]
fn link_types_and_ipv6_are_decoded() {
    // Linux SLL + IPv6.
    let pdu = submit(3, "8613800000003");
    let mut ip6 = vec![0x60, 0, 0, 0];
    ip6.extend_from_slice(&((20 + pdu.len()) as u16).to_be_bytes());
    ip6.extend_from_slice(&[6, 64]);
    ip6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    ip6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    ip6.extend_from_slice(&40001u16.to_be_bytes());
    ip6.extend_from_slice(&2775u16.to_be_bytes());
    ip6.extend_from_slice(&7u32.to_be_bytes());
    ip6.extend_from_slice(&0u32.to_be_bytes());
    ip6.extend_from_slice(&[0x50, ACK, 0xFF, 0xFF, 0, 0, 0, 0]);
    ip6.extend_from_slice(&pdu);
    let mut sll = vec![0u8; 14];
    sll.extend_from_slice(&0x86DDu16.to_be_bytes());
    sll.extend_from_slice(&ip6);
    let mut pb = PcapBuilder::new(113);
    pb.packet(1_500_000, &sll);
    let x = read(&pb.out, &ExtractOptions::default());
    assert_eq!(x.pdus.len(), 1);
    assert_eq!(x.pdus[0].ts_ns, 1_500_000_000);
    assert_eq!(x.streams[0].smsc, "[::1]:2775");
    // Raw IPv6 and SLL2 carry the same packet.
    let mut pb = PcapBuilder::new(101);
    pb.packet(0, &ip6);
    assert_eq!(read(&pb.out, &ExtractOptions::default()).pdus.len(), 1);
    let mut sll2 = vec![0x86, 0xDD];
    sll2.resize(20, 0);
    sll2.extend_from_slice(&ip6);
    let mut pb = PcapBuilder::new(276);
    pb.packet(0, &sll2);
    assert_eq!(read(&pb.out, &ExtractOptions::default()).pdus.len(), 1);
    // An unknown link type is counted, not fatal.
    let mut pb = PcapBuilder::new(147);
    pb.packet(0, &ip6);
    assert_eq!(read(&pb.out, &ExtractOptions::default()).damage.unsupported_link, 1);
}

#[test]
fn random_bytes_never_panic() {
    let mut pb = PcapBuilder::new(1);
    let mut x = 0x1234_5678_9ABC_DEF0u64;
    for t in 0..300 {
        let mut p = Vec::new();
        for _ in 0..(x % 300) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p.push(x as u8);
        }
        // Half of them as TCP segments on one connection with random seqs.
        if t % 2 == 0 {
            pb.tcp(t, ESME, SMSC, x as u32, (x >> 40) as u8, &p);
        } else {
            pb.packet(t, &p);
        }
    }
    let _ = read(&pb.out, &ExtractOptions::default());
    // And random bytes as a whole file.
    let _ = extract_from(std::io::Cursor::new(pb.out[24..].to_vec()), "r", &ExtractOptions::default());
}

/// Reader throughput over a file the gateway's recorder wrote.
mod perf {
    use super::super::*;
    use crate::capture::{Capture, CaptureConfig, Flow};
    use crate::smpp::cmd;
    use crate::smpp::pdu::{put_resp_with_id, SubmitBuilder};
    use bytes::BytesMut;

    /// Writes a capture of `CONSENTGATE_PCAP_PDUS` (1 M) submit_sm + responses on 8 sessions,
    /// `CONSENTGATE_PCAP_BATCH` (64) PDUs per packet, to `CONSENTGATE_PCAP_OUT` or a temp
    /// dir, then times the reader over it.
    #[test]
    #[ignore = "throughput: cargo test --release --lib pcap::tests::perf -- --ignored --nocapture"]
    fn read_throughput() {
        let n: u32 = std::env::var("CONSENTGATE_PCAP_PDUS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::env::var("CONSENTGATE_PCAP_OUT").map(std::path::PathBuf::from).unwrap_or(tmp.path().into());
        let cap = Capture::start(CaptureConfig {
            dir: dir.clone(),
            max_file_bytes: 4 << 30,
            queue_records: 1 << 20,
            queue_bytes: 1 << 30,
            ..Default::default()
        })
        .unwrap();
        let mut sessions: Vec<_> = (0..8).map(|_| cap.session("perf").unwrap()).collect();
        let batch: u32 = std::env::var("CONSENTGATE_PCAP_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
        let frames: Vec<Vec<u8>> = (0..batch.max(1))
            .map(|i| {
                SubmitBuilder::new("1069012345", &format!("86138{:08}", i * 7919))
                    .short_message(b"Your verification code is 123456. It expires in 5 minutes.")
                    .build(0)
                    .to_vec()
            })
            .collect();
        let t = std::time::Instant::now();
        let mut seq = 0u32;
        let mut ts = 1_795_860_900_000_000u64;
        while seq < n {
            for s in sessions.iter_mut() {
                let (mut req, mut resp) = (Vec::new(), BytesMut::new());
                for f in &frames {
                    seq += 1;
                    let mut f = f.clone();
                    crate::smpp::set_sequence(&mut f, seq);
                    req.extend_from_slice(&f);
                    put_resp_with_id(&mut resp, cmd::SUBMIT_SM_RESP, 0, seq, b"0123456789abcdef");
                }
                ts += 50;
                s.record(Flow::EsmeToGateway, &req, ts);
                s.record(Flow::GatewayToEsme, &resp, ts + 20);
            }
        }
        drop(sessions);
        cap.shutdown();
        let write = t.elapsed();
        let dropped = cap.stats().records_dropped.load(std::sync::atomic::Ordering::Relaxed);
        let files = crate::capture::list_captures(&dir).unwrap();
        let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
        println!("wrote {seq} submits + responses in {write:?} ({dropped} records dropped), {bytes} bytes, {files:?}");
        let t = std::time::Instant::now();
        let x = extract(&files[0], &ExtractOptions::default()).unwrap();
        let el = t.elapsed();
        let pdus = x.pdus.len() as f64 * 2.0;
        println!(
            "read {} packets, {} requests + responses in {el:?}: {:.0} PDUs/s, {:.0} MB/s; damage {:?}",
            x.packets,
            x.pdus.len(),
            pdus / el.as_secs_f64(),
            bytes as f64 / el.as_secs_f64() / 1e6,
            x.damage
        );
        if dropped == 0 {
            assert_eq!(x.damage.gaps, 0);
        }
    }
}
