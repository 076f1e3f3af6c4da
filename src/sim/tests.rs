use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::receipt::{hex_id, smpp_date};
use super::*;
use crate::smpp::frame::{Framer, Next};
use crate::smpp::pdu::{encode_bind, put_header_only, put_resp_with_id, SubmitBuilder};
use crate::smpp::peek::{self, resp_message_id};
use crate::smpp::{cmd, command_id, command_status, sequence, set_sequence, status, BindType, HEADER_LEN, RESP_BIT};

const T: Duration = Duration::from_secs(2);

struct Client {
    s: TcpStream,
    buf: BytesMut,
    framer: Framer,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let s = tokio::time::timeout(T, TcpStream::connect(addr)).await.unwrap().unwrap();
        Client { s, buf: BytesMut::with_capacity(4096), framer: Framer::new(1 << 20) }
    }
    async fn send(&mut self, b: &[u8]) {
        tokio::time::timeout(T, self.s.write_all(b)).await.unwrap().unwrap();
    }
    /// Next frame, None on EOF or after `wait`.
    async fn recv_within(&mut self, wait: Duration) -> Option<BytesMut> {
        let deadline = Instant::now() + wait;
        loop {
            if let Next::Frame(n) = self.framer.next(&self.buf) {
                return Some(self.buf.split_to(n));
            }
            match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }
    async fn recv(&mut self) -> BytesMut {
        self.recv_within(T).await.expect("expected a frame")
    }
    async fn bind(&mut self, bt: BindType, sid: &str, pw: &str) -> u32 {
        self.send(&encode_bind(bt, 1, sid, pw)).await;
        let r = self.recv().await;
        assert_eq!(command_id(&r), bt.command_id() | RESP_BIT);
        assert_eq!(sequence(&r), 1);
        command_status(&r)
    }
    async fn expect_eof(&mut self) {
        let mut scratch = [0u8; 256];
        let r = tokio::time::timeout(T, self.s.read(&mut scratch)).await.expect("no EOF");
        assert!(matches!(r, Ok(0) | Err(_)), "expected EOF, got {r:?}");
    }
}

/// A request frame with status 0 around `body`, command_length filled in.
fn raw_pdu(id: u32, seq: u32, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32((HEADER_LEN + body.len()) as u32);
    b.put_u32(id);
    b.put_u32(0);
    b.put_u32(seq);
    b.put_slice(body);
    b
}

/// Sets command_length to the frame's actual length.
fn fix_length(f: &mut [u8]) {
    let l = f.len() as u32;
    f[0..4].copy_from_slice(&l.to_be_bytes());
}

fn enquire(seq: u32) -> BytesMut {
    let mut b = BytesMut::new();
    put_header_only(&mut b, cmd::ENQUIRE_LINK, 0, seq);
    b
}

async fn sim(f: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig::default();
    f(&mut cfg);
    start(cfg).await.unwrap()
}

#[tokio::test]
async fn submit_gets_resp_then_receipt_on_same_trx() {
    let h = sim(|_| {}).await;
    let mut c = Client::connect(h.local_addr).await;
    assert_eq!(c.bind(BindType::Transceiver, "acme", "pw").await, 0);
    assert_eq!(h.sessions(), 1);
    let sub = SubmitBuilder::new("ACME", "8613800138000")
        .registered_delivery(1)
        .short_message(b"hello receipt world!!")
        .build(7);
    c.send(&sub).await;
    let r = c.recv().await;
    assert_eq!(command_id(&r), cmd::SUBMIT_SM_RESP);
    assert_eq!((command_status(&r), sequence(&r)), (0, 7));
    let mid = resp_message_id(&r).to_vec();
    assert!(!mid.is_empty() && mid.len() <= 16);
    assert!(mid.iter().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let d = c.recv().await;
    assert_eq!(command_id(&d), cmd::DELIVER_SM);
    assert_eq!(sequence(&d), 1);
    let v = peek::message(&d).unwrap();
    assert_eq!(v.esm_class, 0x04);
    assert!(v.is_receipt());
    assert_eq!(v.source.addr, b"8613800138000");
    assert_eq!((v.source.ton, v.source.npi), (1, 1));
    assert_eq!(v.destination.addr, b"ACME");
    assert_eq!(v.tlv(tlv::RECEIPTED_MESSAGE_ID).unwrap(), [&mid[..], b"\0"].concat());
    assert_eq!(v.tlv(tlv::MESSAGE_STATE), Some(&[2u8][..]));
    let text = std::str::from_utf8(v.short_message).unwrap();
    assert!(
        text.starts_with(&format!("id:{} sub:001 dlvrd:001 submit date:", std::str::from_utf8(&mid).unwrap())),
        "{text}"
    );
    assert!(text.contains(" stat:DELIVRD err:000 text:hello receipt world!"), "{text}");
    assert!(text.ends_with("text:hello receipt world!"), "{text}");
    // A second submit gets a different id; registered_delivery 0 gets no receipt.
    c.send(&SubmitBuilder::new("ACME", "1").build(8)).await;
    c.send(&enquire(9)).await;
    let r2 = c.recv().await;
    assert_ne!(resp_message_id(&r2), &mid[..]);
    assert_eq!(command_id(&c.recv().await), cmd::ENQUIRE_LINK_RESP);
    // Ack the receipt; unbind closes.
    let mut ack = BytesMut::new();
    put_resp_with_id(&mut ack, cmd::DELIVER_SM_RESP, 0, 1, b"");
    put_header_only(&mut ack, cmd::UNBIND, 0, 10);
    c.send(&ack).await;
    let u = c.recv().await;
    assert_eq!((command_id(&u), sequence(&u)), (cmd::UNBIND_RESP, 10));
    c.expect_eof().await;
    assert_eq!(h.stats.submits.load(Ordering::Relaxed), 2);
    assert_eq!(h.stats.receipts_sent.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.enquire_links.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.unbinds.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.resps_received.load(Ordering::Relaxed), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn dest_errors_answer_with_status_and_no_receipt() {
    let h = sim(|c| {
        c.dest_errors.insert("999".into(), status::ESME_RINVDSTADR);
    })
    .await;
    let mut c = Client::connect(h.local_addr).await;
    assert_eq!(c.bind(BindType::Transceiver, "acme", "pw").await, 0);
    c.send(&SubmitBuilder::new("ACME", "999").registered_delivery(1).build(2)).await;
    c.send(&enquire(3)).await;
    let r = c.recv().await;
    assert_eq!((command_id(&r), command_status(&r), sequence(&r)), (cmd::SUBMIT_SM_RESP, status::ESME_RINVDSTADR, 2));
    assert_eq!(command_id(&c.recv().await), cmd::ENQUIRE_LINK_RESP);
    h.shutdown().await;
}

#[tokio::test]
async fn tx_receipt_goes_to_parallel_rx_bind() {
    let h = sim(|_| {}).await;
    let mut tx = Client::connect(h.local_addr).await;
    let mut rx = Client::connect(h.local_addr).await;
    let mut other = Client::connect(h.local_addr).await;
    assert_eq!(tx.bind(BindType::Transmitter, "acme", "pw").await, 0);
    assert_eq!(rx.bind(BindType::Receiver, "acme", "pw").await, 0);
    assert_eq!(other.bind(BindType::Receiver, "other", "pw").await, 0);
    assert_eq!(h.sessions(), 3);
    tx.send(&SubmitBuilder::new("ACME", "8613800138000").registered_delivery(1).build(5)).await;
    let r = tx.recv().await;
    assert_eq!((command_id(&r), command_status(&r)), (cmd::SUBMIT_SM_RESP, 0));
    let d = rx.recv().await;
    assert_eq!((command_id(&d), sequence(&d)), (cmd::DELIVER_SM, 1));
    let v = peek::message(&d).unwrap();
    assert_eq!(v.tlv(tlv::RECEIPTED_MESSAGE_ID).unwrap(), [resp_message_id(&r), b"\0"].concat());
    // Nothing for the TX itself nor for another system_id.
    assert!(tx.recv_within(Duration::from_millis(100)).await.is_none());
    assert!(other.recv_within(Duration::from_millis(50)).await.is_none());
    // A receiver may not submit.
    rx.send(&SubmitBuilder::new("ACME", "1").build(6)).await;
    let e = rx.recv().await;
    assert_eq!((command_id(&e), command_status(&e)), (cmd::SUBMIT_SM_RESP, status::ESME_RINVBNDSTS));
    h.shutdown().await;
}

#[tokio::test]
async fn inject_mo_reaches_rx_session() {
    let h = sim(|_| {}).await;
    assert!(!h.inject_mo(None, "8613800138000", "1069", 0, b"STOP"));
    let mut rx = Client::connect(h.local_addr).await;
    assert_eq!(rx.bind(BindType::Receiver, "acme", "pw").await, 0);
    assert!(!h.inject_mo(Some("nobody"), "8613800138000", "1069", 0, b"STOP"));
    assert!(h.inject_mo(Some("acme"), "8613800138000", "1069", 8, &[0x90, 0x00]));
    assert!(h.inject_mo(None, "8613800138001", "1069", 0, b"STOP"));
    for (i, (src, dc, sm)) in
        [("8613800138000", 8u8, &[0x90u8, 0x00][..]), ("8613800138001", 0, b"STOP")].into_iter().enumerate()
    {
        let d = rx.recv().await;
        assert_eq!((command_id(&d), sequence(&d)), (cmd::DELIVER_SM, i as u32 + 1));
        let v = peek::message(&d).unwrap();
        assert_eq!(v.esm_class, 0);
        assert_eq!(v.source.addr, src.as_bytes());
        assert_eq!(v.destination.addr, b"1069");
        assert_eq!((v.data_coding, v.short_message), (dc, sm));
    }
    assert_eq!(h.stats.mo_sent.load(Ordering::Relaxed), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn oversized_pdu_gets_generic_nack_and_session_lives() {
    let h = sim(|c| c.max_pdu_bytes = 1024).await;
    let mut c = Client::connect(h.local_addr).await;
    assert_eq!(c.bind(BindType::Transceiver, "acme", "pw").await, 0);
    let mut big = BytesMut::new();
    big.put_u32(5000);
    big.put_u32(cmd::SUBMIT_SM);
    big.put_u32(0);
    big.put_u32(42);
    big.resize(5000, 0xAB);
    c.send(&big[..3000]).await;
    let n = c.recv().await;
    assert_eq!((command_id(&n), command_status(&n), sequence(&n)), (cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, 42));
    c.send(&big[3000..]).await;
    c.send(&enquire(43)).await;
    let e = c.recv().await;
    assert_eq!((command_id(&e), sequence(&e)), (cmd::ENQUIRE_LINK_RESP, 43));
    // A length below 16 is answered and closes the session.
    c.send(&[0, 0, 0, 8, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 44]).await;
    let n = c.recv().await;
    assert_eq!((command_id(&n), command_status(&n)), (cmd::GENERIC_NACK, status::ESME_RINVCMDLEN));
    c.expect_eof().await;
    h.shutdown().await;
}

#[tokio::test]
async fn refuse_binds_and_credentials() {
    let h = sim(|c| c.refuse_binds = Some(status::ESME_RBINDFAIL)).await;
    let mut c = Client::connect(h.local_addr).await;
    assert_eq!(c.bind(BindType::Transmitter, "acme", "pw").await, status::ESME_RBINDFAIL);
    assert_eq!(h.sessions(), 0);
    h.shutdown().await;

    let h = sim(|c| c.credentials = Some(vec![("acme".into(), "secret".into())])).await;
    let mut c = Client::connect(h.local_addr).await;
    assert_eq!(c.bind(BindType::Transmitter, "nobody", "secret").await, status::ESME_RINVSYSID);
    assert_eq!(c.bind(BindType::Transmitter, "acme", "wrong").await, status::ESME_RINVPASWD);
    assert_eq!(c.bind(BindType::Transmitter, "acme", "secret").await, 0);
    assert_eq!(c.bind(BindType::Transmitter, "acme", "secret").await, status::ESME_RALYBND);
    assert_eq!(h.stats.binds.load(Ordering::Relaxed), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn before_bind_and_unknown_commands() {
    let h = sim(|c| c.record = true).await;
    let mut c = Client::connect(h.local_addr).await;
    c.send(&SubmitBuilder::new("a", "b").build(1)).await;
    c.send(&enquire(2)).await;
    let mut unknown = BytesMut::new();
    put_header_only(&mut unknown, 0x0000_0999, 0, 3);
    c.send(&unknown).await;
    let r = c.recv().await;
    assert_eq!((command_id(&r), command_status(&r), sequence(&r)), (cmd::SUBMIT_SM_RESP, status::ESME_RINVBNDSTS, 1));
    assert_eq!(command_id(&c.recv().await), cmd::ENQUIRE_LINK_RESP);
    let n = c.recv().await;
    assert_eq!((command_id(&n), command_status(&n), sequence(&n)), (cmd::GENERIC_NACK, status::ESME_RINVCMDID, 3));
    assert_eq!(c.bind(BindType::Transmitter, "acme", "pw").await, 0);
    // Malformed submits get the peek error's status; then data_sm and query_sm.
    let good = SubmitBuilder::new("src", "dst").short_message(b"hello").build(4);
    let mut short = good[..good.len() - 2].to_vec();
    fix_length(&mut short);
    c.send(&short).await;
    let r = c.recv().await;
    assert_eq!((command_id(&r), command_status(&r), sequence(&r)), (cmd::SUBMIT_SM_RESP, status::ESME_RINVMSGLEN, 4));
    let mut bad = good.clone();
    bad.extend_from_slice(&[1, 2, 3]);
    fix_length(&mut bad);
    set_sequence(&mut bad, 5);
    c.send(&bad).await;
    let r = c.recv().await;
    assert_eq!((command_status(&r), sequence(&r)), (status::ESME_RINVTLVSTREAM, 5));
    let ds = raw_pdu(cmd::DATA_SM, 7, b"\0\x01\x01src\0\x01\x01dst\0\x00\x00\x00");
    c.send(&ds).await;
    let r = c.recv().await;
    assert_eq!((command_id(&r), command_status(&r), sequence(&r)), (cmd::DATA_SM_RESP, 0, 7));
    assert!(!resp_message_id(&r).is_empty());
    let q = raw_pdu(cmd::QUERY_SM, 6, b"abc\0\0\0x\0");
    c.send(&q).await;
    let r = c.recv().await;
    assert_eq!((command_id(&r), sequence(&r)), (cmd::QUERY_SM_RESP, 6));
    assert_eq!(&r[16..], b"abc\0\0\x02\0");
    let rec = h.recorded();
    assert_eq!(rec.len(), 8);
    assert_eq!(rec[0].0, "");
    assert_eq!(rec[3].0, "acme");
    assert_eq!(&rec[7].1[..], &q[..]);
    h.shutdown().await;
}

#[tokio::test]
async fn submit_multi_lists_unsuccessful_dests() {
    let h = sim(|c| {
        c.dest_errors.insert("222".into(), 0x0B);
        c.record = true;
    })
    .await;
    let mut c = Client::connect(h.local_addr).await;
    assert_eq!(c.bind(BindType::Transmitter, "acme", "pw").await, 0);
    let mut body = b"\0\x00\x01src\0".to_vec();
    body.push(2); // number_of_dests
    body.extend_from_slice(b"\x01\x01\x01111\0");
    body.extend_from_slice(b"\x01\x01\x01222\0");
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    body.extend_from_slice(b"hi");
    let m = raw_pdu(cmd::SUBMIT_MULTI, 9, &body);
    c.send(&m).await;
    let r = c.recv().await;
    assert_eq!((command_id(&r), command_status(&r), sequence(&r)), (cmd::SUBMIT_MULTI_RESP, 0, 9));
    let mid = resp_message_id(&r);
    let rest = &r[16 + mid.len() + 1..];
    assert_eq!(rest, b"\x01\x01\x01222\0\x00\x00\x00\x0B");
    let rec = h.recorded();
    assert_eq!(rec.len(), 2);
    assert_eq!(rec[0].0, "acme");
    assert_eq!(&rec[1].1[..], &m[..]);
    h.shutdown().await;
}

#[tokio::test]
async fn kill_unbind_all_and_response_delay() {
    let h = sim(|c| c.response_delay = Duration::from_millis(100)).await;
    let mut a = Client::connect(h.local_addr).await;
    assert_eq!(a.bind(BindType::Transceiver, "acme", "pw").await, 0);
    let t0 = Instant::now();
    a.send(&SubmitBuilder::new("ACME", "1").registered_delivery(1).build(2)).await;
    let r = a.recv().await;
    assert!(t0.elapsed() >= Duration::from_millis(90));
    assert_eq!(command_id(&r), cmd::SUBMIT_SM_RESP);
    assert_eq!(command_id(&a.recv().await), cmd::DELIVER_SM);
    // SMSC-initiated unbind, answered: the session closes.
    h.unbind_all();
    let u = a.recv().await;
    assert_eq!((command_id(&u), sequence(&u)), (cmd::UNBIND, 2));
    let mut ur = BytesMut::new();
    put_header_only(&mut ur, cmd::UNBIND_RESP, 0, 2);
    a.send(&ur).await;
    a.expect_eof().await;
    // Crash: connections drop, listener stays.
    let mut b = Client::connect(h.local_addr).await;
    assert_eq!(b.bind(BindType::Transceiver, "acme", "pw").await, 0);
    h.kill_connections();
    b.expect_eof().await;
    let mut c = Client::connect(h.local_addr).await;
    assert_eq!(c.bind(BindType::Transceiver, "acme", "pw").await, 0);
    for _ in 0..50 {
        if h.sessions() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.sessions(), 1);
    let addr = h.local_addr;
    h.shutdown().await;
    c.expect_eof().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn helpers() {
    let mut b = [0u8; 16];
    assert_eq!(hex_id(0, &mut b), b"0");
    assert_eq!(hex_id(0x1f, &mut b), b"1f");
    assert_eq!(hex_id(u64::MAX, &mut b), b"ffffffffffffffff");
    assert_eq!(&smpp_date(0), b"7001010000");
    // 2024-02-29 23:59 UTC
    assert_eq!(&smpp_date(1_709_251_140), b"2402292359");
}

/// Throughput check (responses and, with `receipts`, TRX receipts):
/// `cargo test --release --lib sim::tests::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    for receipts in [false, true] {
        let h = sim(|c| c.receipts = receipts).await;
        let conns = 3;
        let per_conn: u64 = 2_000_000;
        let t0 = std::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let addr = h.local_addr;
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                assert_eq!(c.bind(BindType::Transceiver, "load", "pw").await, 0);
                let one = SubmitBuilder::new("ACME", "8613800138000")
                    .registered_delivery(1)
                    .short_message(b"hello world")
                    .build(1);
                let mut chunk = BytesMut::new();
                for _ in 0..1000 {
                    chunk.extend_from_slice(&one);
                }
                let (mut rd, mut wr) = c.s.into_split();
                let w = tokio::spawn(async move {
                    for _ in 0..per_conn / 1000 {
                        wr.write_all(&chunk).await.unwrap();
                    }
                    wr
                });
                let expect = if receipts { 2 * per_conn } else { per_conn };
                let mut buf = BytesMut::with_capacity(1 << 20);
                let mut framer = Framer::new(4096);
                let (mut got, mut ok_resps) = (0u64, 0u64);
                while got < expect {
                    buf.reserve(1 << 16);
                    if rd.read_buf(&mut buf).await.unwrap() == 0 {
                        break;
                    }
                    let mut pos = 0;
                    while let Next::Frame(n) = framer.next(&buf[pos..]) {
                        let f = &buf[pos..pos + n];
                        if command_id(f) == cmd::SUBMIT_SM_RESP && command_status(f) == 0 {
                            ok_resps += 1;
                        }
                        pos += n;
                        got += 1;
                    }
                    buf.advance(pos);
                }
                let _wr = w.await.unwrap();
                assert_eq!(ok_resps, per_conn);
                got
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        let dt = t0.elapsed();
        let submits = h.stats.submits.load(Ordering::Relaxed);
        assert_eq!(submits, conns * per_conn);
        println!(
            "receipts={receipts}: {submits} submits, {total} frames back in {dt:?}: {:.0} submits/s",
            submits as f64 / dt.as_secs_f64()
        );
        h.shutdown().await;
    }
}

/// `set_fault`: silent answers nothing (enquire_link included); garbage answers bytes whose
/// first word is no valid command_length; back to normal, the same connection is served.
#[tokio::test]
async fn faults_switch_at_run_time() {
    let sim = start(SimConfig::default()).await.unwrap();
    let mut c = Client::connect(sim.local_addr).await;
    assert_eq!(c.bind(BindType::Transceiver, "a", "b").await, 0);
    sim.set_fault(SimFault::Silent);
    let mut el = BytesMut::new();
    put_header_only(&mut el, cmd::ENQUIRE_LINK, 0, 7);
    c.send(&el).await;
    assert!(c.recv_within(Duration::from_millis(300)).await.is_none(), "silent");
    sim.set_fault(SimFault::Garbage);
    c.send(&el).await;
    let mut raw = [0u8; 64];
    tokio::time::timeout(T, c.s.read_exact(&mut raw)).await.unwrap().unwrap();
    assert!(u32::from_be_bytes(raw[..4].try_into().unwrap()) > 1 << 30, "not a plausible command_length");
    sim.set_fault(SimFault::None);
    c.send(&el).await;
    let r = c.recv().await;
    assert_eq!((command_id(&r), sequence(&r)), (cmd::ENQUIRE_LINK_RESP, 7));
    sim.shutdown().await;
}
