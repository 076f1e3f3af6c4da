//! The CMPP ISMG simulator (`sim::cmpp`) over real TCP on 127.0.0.1, first with the project's
//! own builders (`cmpp::pdu`) as the SP, then with two independent clients from PyPI:
//! cmppy 0.3 (CMPP 3.0) and pycmpp 2.0.2 (CMPP 2.x), driven by `tests/interop/*_client.py`.
//!
//! Spec references are to QB-GF-028-2003 v3.0.0 (`shared/reference/cmpp.md`): CONNECT §8.4.1,
//! SUBMIT §8.4.3, DELIVER and the status report §8.4.5, the window W = 16 §7.1, group Msg_Ids §9.
//!
//! The Python clients run under `CONSENTGATE_PYTHON`, else `<repo>/.venv/bin/python`, else
//! `python3` (`scripts/test` makes .venv with both). Without them: a notice and an early return
//! on a developer machine, a failure under CI.

mod tools;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use consentgate::cmpp::frame::{Framer, Next};
use consentgate::cmpp::msg_id::MsgId;
use consentgate::cmpp::pdu::{self, SubmitFields};
use consentgate::cmpp::{self, cmd, connect_status, peek, result, Version};
use consentgate::sim::cmpp::{self as sim, CmppSimConfig, CmppSimHandle, MoError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const T: Duration = Duration::from_secs(5);
const SP: &str = "901234";
const SECRET: &str = "s3cret";
/// A CONNECT Timestamp (MMDDHHMMSS) with a leading zero, the `%010d` pitfall of cmpp.md §1.3.
const TS: u32 = 612_123_456;

/// The SP side of one link, built from `cmpp::pdu` and read with `cmpp::frame`.
struct Sp {
    s: TcpStream,
    buf: BytesMut,
    framer: Framer,
    v: Version,
    seq: u32,
}

impl Sp {
    async fn open(addr: SocketAddr, v: Version) -> Sp {
        let s = tokio::time::timeout(T, TcpStream::connect(addr)).await.unwrap().unwrap();
        Sp { s, buf: BytesMut::with_capacity(4096), framer: Framer::default(), v, seq: 0 }
    }

    /// Opens a link and CONNECTs with `version_byte`; returns it with the CONNECT_RESP frame.
    async fn connect_as(addr: SocketAddr, version_byte: u8, sp: &str, secret: &str) -> (Sp, BytesMut) {
        let v = if version_byte >= 0x30 { Version::V30 } else { Version::V20 };
        let mut c = Sp::open(addr, v).await;
        let mut out = BytesMut::new();
        sim::put_connect_as(&mut out, c.next_seq(), sp, secret, version_byte, TS);
        c.send(&out).await;
        let r = c.recv().await;
        assert_eq!(cmpp::command_id(&r), cmd::CONNECT_RESP);
        assert_eq!(cmpp::sequence(&r), 1);
        (c, r)
    }

    /// A connected link (no secrets on the simulator side needed).
    async fn connected(addr: SocketAddr, version_byte: u8) -> Sp {
        let (c, r) = Sp::connect_as(addr, version_byte, SP, "").await;
        assert_eq!(peek::connect_resp(&r, c.v).unwrap().status, connect_status::OK);
        c
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
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

    async fn expect_eof(&mut self) {
        assert!(self.recv_within(T).await.is_none(), "expected EOF");
    }

    /// Sends a SUBMIT to `dests` and returns its frame (as sent) and the SUBMIT_RESP.
    async fn submit(&mut self, dests: &[&str], registered_delivery: u8) -> (Vec<u8>, peek::SubmitResp) {
        let ids: Vec<&[u8]> = dests.iter().map(|d| d.as_bytes()).collect();
        let fields = SubmitFields {
            pk_total: 1,
            pk_number: 1,
            registered_delivery,
            service_id: b"MI",
            msg_fmt: 8,
            msg_src: SP.as_bytes(),
            fee_type: b"01",
            src_id: b"1069012345",
            dest_terminal_ids: &ids,
            msg_content: &[0x90, 0x00, 0x8B, 0xA2],
            ..SubmitFields::default()
        };
        let seq = self.next_seq();
        let mut out = BytesMut::new();
        pdu::put_submit(&mut out, self.v, seq, &fields);
        self.send(&out).await;
        let r = self.recv().await;
        assert_eq!(cmpp::command_id(&r), cmd::SUBMIT_RESP);
        assert_eq!(cmpp::sequence(&r), seq, "the SUBMIT_RESP carries the SUBMIT's Sequence_Id");
        assert_eq!(r.len(), 12 + self.v.msg_resp_body_len(), "Result width of the version");
        (out.to_vec(), peek::submit_resp(&r, self.v).unwrap())
    }

    /// Reads one DELIVER and answers it with `result`.
    async fn deliver(&mut self, result: u32) -> BytesMut {
        let d = self.recv().await;
        assert_eq!(cmpp::command_id(&d), cmd::DELIVER);
        let v = peek::deliver(&d, self.v).expect("well-formed DELIVER");
        let mut out = BytesMut::new();
        pdu::put_deliver_resp(&mut out, self.v, cmpp::sequence(&d), v.msg_id, result);
        self.send(&out).await;
        d
    }
}

async fn start(cfg: CmppSimConfig) -> CmppSimHandle {
    sim::start(cfg).await.expect("bind the simulator")
}

/// The simulator knowing SP's secret.
fn with_secret() -> CmppSimConfig {
    CmppSimConfig { secrets: HashMap::from([(SP.to_owned(), SECRET.to_owned())]), ..Default::default() }
}

async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// §8.4.1: 0x20 and 0x21 are 2.0 (Status 1 byte, 30-byte CONNECT_RESP), 0x30 is 3.0 (Status
/// 4 bytes, 33 bytes); without secrets any SP is accepted and AuthenticatorISMG is zero.
#[tokio::test]
async fn connect_negotiates_2_0_and_3_0_from_the_version_byte() {
    let sim = start(CmppSimConfig::default()).await;
    let mut open = Vec::new();
    for (byte, v, len) in [(0x20u8, Version::V20, 30), (0x21, Version::V20, 30), (0x30, Version::V30, 33)] {
        let (sp, r) = Sp::connect_as(sim.local_addr, byte, SP, "").await;
        open.push(sp);
        assert_eq!(r.len(), len, "CONNECT_RESP of version 0x{byte:02x}");
        let c = peek::connect_resp(&r, v).unwrap();
        assert_eq!((c.read_as, c.status, c.version_byte), (v, 0, byte));
        assert_eq!(c.authenticator_ismg, &[0u8; 16][..]);
    }
    assert!(eventually(|| sim.links() == 3).await);
    assert_eq!(sim.stats.connections.load(Ordering::Relaxed), 3);
    drop(open);
    assert!(eventually(|| sim.links() == 0).await, "closed links leave the registry");
}

/// With secrets: the MD5 AuthenticatorSource is checked (Status 3 on mismatch, 2 for an
/// unknown SP, both followed by a close) and AuthenticatorISMG is MD5(Status + AuthSource + secret).
#[tokio::test]
async fn connect_authenticates_with_the_shared_secret() {
    let sim = start(with_secret()).await;

    for (byte, v) in [(0x20u8, Version::V20), (0x30, Version::V30)] {
        let (_sp, r) = Sp::connect_as(sim.local_addr, byte, SP, SECRET).await;
        let c = peek::connect_resp(&r, v).unwrap();
        assert_eq!(c.status, connect_status::OK);
        let src = sim::authenticator_source(SP.as_bytes(), SECRET.as_bytes(), TS);
        assert_eq!(c.authenticator_ismg, &sim::authenticator_ismg(v, 0, &src, SECRET.as_bytes())[..]);
    }

    let (mut bad, r) = Sp::connect_as(sim.local_addr, 0x30, SP, "wrong").await;
    assert_eq!(peek::connect_resp(&r, Version::V30).unwrap().status, connect_status::AUTH_FAILED);
    assert_eq!(peek::connect_resp(&r, Version::V30).unwrap().authenticator_ismg, &[0u8; 16][..]);
    bad.expect_eof().await;

    let (mut unknown, r) = Sp::connect_as(sim.local_addr, 0x20, "999999", SECRET).await;
    assert_eq!(r.len(), 30, "refused in the SP's own (2.0) width");
    assert_eq!(peek::connect_resp(&r, Version::V20).unwrap().status, connect_status::BAD_SOURCE_ADDR);
    unknown.expect_eof().await;

    assert_eq!(sim.stats.connections.load(Ordering::Relaxed), 2);
    assert_eq!(sim.stats.connect_refused.load(Ordering::Relaxed), 2);
}

/// An unknown Version: Status 4 (版本太高) above 3.0, 5 (其他错误) below, then the link closes.
#[tokio::test]
async fn unknown_version_is_refused_and_closed() {
    let sim = start(CmppSimConfig::default()).await;
    let (mut sp, r) = Sp::connect_as(sim.local_addr, 0x40, SP, "").await;
    let c = peek::connect_resp(&r, Version::V30).unwrap();
    assert_eq!((c.status, c.version_byte), (connect_status::VERSION_TOO_HIGH, 0x30), "offers 3.0");
    sp.expect_eof().await;
    let (mut sp, r) = Sp::connect_as(sim.local_addr, 0x10, SP, "").await;
    assert_eq!(peek::connect_resp(&r, Version::V20).unwrap().status, connect_status::OTHER);
    sp.expect_eof().await;
    assert_eq!(sim.links(), 0);
}

/// A single 3.0 SUBMIT with a report: SUBMIT_RESP Result 0 with a Msg_Id of the configured
/// gateway; one report with that Msg_Id and DELIVRD; the SUBMIT recorded byte for byte.
#[tokio::test]
async fn single_submit_gets_msg_id_and_report_and_is_recorded_verbatim() {
    let sim = start(CmppSimConfig { gateway_id: 4711, ..Default::default() }).await;
    let mut sp = Sp::connected(sim.local_addr, 0x30).await;
    let (frame, r) = sp.submit(&["8613800138000"], 1).await;
    assert_eq!(r.result, result::OK);
    assert_eq!(MsgId::decode(r.msg_id).gateway, 4711);

    let d = sp.deliver(0).await;
    let d = peek::deliver(&d, Version::V30).unwrap();
    assert!(d.is_report());
    assert_eq!((d.dest_id, d.service_id, d.src_terminal_id), (&b"1069012345"[..], &b"MI"[..], &b"8613800138000"[..]));
    assert_eq!(d.msg_content.len(), 71, "3.0 report length");
    let rep = d.report().unwrap();
    assert_eq!((rep.msg_id, rep.stat, rep.dest_terminal_id), (r.msg_id, &b"DELIVRD"[..], &b"8613800138000"[..]));
    assert_eq!(rep.submit_time.len(), 10);

    assert_eq!(sim.submits(), vec![frame]);
    assert!(eventually(|| sim.stats.deliver_acks.load(Ordering::Relaxed) == 1).await);
    assert_eq!(sim.stats.reports_sent.load(Ordering::Relaxed), 1);
}

/// §9: a 2.0 group SUBMIT to n destinations stands for Msg_Id…Msg_Id+(n−1), one report per
/// destination with its own Msg_Id; a destination in dest_errors gets the configured Stat.
#[tokio::test]
async fn group_submit_reports_each_destination_with_its_msg_id_of_the_range() {
    let cfg =
        CmppSimConfig { dest_errors: HashMap::from([("8613800138002".to_owned(), *b"MA:0001")]), ..Default::default() };
    let sim = start(cfg).await;
    let mut sp = Sp::connected(sim.local_addr, 0x20).await;
    let dests = ["8613800138001", "8613800138002", "8613800138003"];
    let (_, r) = sp.submit(&dests, 1).await;
    assert_eq!(r.result, 0);
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = sp.deliver(0).await;
        let d = peek::deliver(&d, Version::V20).unwrap();
        assert_eq!(d.msg_content.len(), 60, "2.0 report length");
        let rep = d.report().unwrap();
        got.push((rep.dest_terminal_id.to_vec(), rep.msg_id, rep.stat.to_vec()));
    }
    got.sort();
    for (i, (dest, id, stat)) in got.iter().enumerate() {
        assert_eq!(dest, dests[i].as_bytes());
        assert_eq!(*id, MsgId::nth(r.msg_id, i as u8), "destination {i} has Msg_Id + {i}");
        assert_eq!(stat, if i == 1 { &b"MA:0001"[..] } else { &b"DELIVRD"[..] });
    }
    assert_eq!(sim.stats.destinations.load(Ordering::Relaxed), 3);
    // The next SUBMIT's Msg_Id lies past the group's range.
    let (_, next) = sp.submit(&["8613800138009"], 0).await;
    assert_eq!(MsgId::decode(next.msg_id).sequence, MsgId::decode(r.msg_id).sequence.wrapping_add(3 + 3));
}

/// A malformed SUBMIT gets the PeekError's Result: a truncated body 4 (消息长度错), DestUsr_tl
/// 0 on 3.0 13 (Dest_terminal_Id错误); both recorded; the link stays up.
#[tokio::test]
async fn malformed_submit_gets_the_peek_error_result() {
    let sim = start(CmppSimConfig::default()).await;
    let mut sp = Sp::connected(sim.local_addr, 0x30).await;
    let mut out = BytesMut::new();
    pdu::put_submit(
        &mut out,
        Version::V30,
        7,
        &SubmitFields { dest_terminal_ids: &[b"8613800138000"], ..Default::default() },
    );
    let cut = out.len() - 10;
    out.truncate(cut);
    out[..4].copy_from_slice(&(cut as u32).to_be_bytes());
    let mut empty = BytesMut::new();
    pdu::put_submit(&mut empty, Version::V30, 8, &SubmitFields::default());
    out.extend_from_slice(&empty);
    sp.send(&out).await;
    for (seq, want) in [(7, result::BAD_LENGTH), (8, result::BAD_DEST_TERMINAL_ID)] {
        let r = sp.recv().await;
        assert_eq!(cmpp::sequence(&r), seq);
        let r = peek::submit_resp(&r, Version::V30).unwrap();
        assert_eq!((r.msg_id, r.result), (0, want));
    }
    assert_eq!(sim.submits().len(), 2);
    assert_eq!(sim.stats.submit_errors.load(Ordering::Relaxed), 2);
    sp.submit(&["8613800138000"], 0).await;
}

/// §8.4.6 both ways: the SP's ACTIVE_TEST is answered (13 bytes, 1 Reserved byte); with
/// active_test_every the simulator sends its own and counts the answers.
#[tokio::test]
async fn active_test_both_ways() {
    let cfg = CmppSimConfig { active_test_every: Some(Duration::from_millis(50)), ..Default::default() };
    let sim = start(cfg).await;
    let mut sp = Sp::connected(sim.local_addr, 0x30).await;
    let mut out = BytesMut::new();
    pdu::put_active_test(&mut out, 42);
    sp.send(&out).await;
    // The simulator's own ACTIVE_TEST may come first.
    let mut answered = false;
    let mut theirs = 0;
    while !answered || theirs == 0 {
        let f = sp.recv().await;
        match cmpp::command_id(&f) {
            cmd::ACTIVE_TEST_RESP => {
                assert_eq!((f.len(), cmpp::sequence(&f)), (13, 42));
                answered = true;
            }
            cmd::ACTIVE_TEST => {
                let mut r = BytesMut::new();
                pdu::put_active_test_resp(&mut r, cmpp::sequence(&f));
                sp.send(&r).await;
                theirs += 1;
            }
            other => panic!("unexpected command 0x{other:08x}"),
        }
    }
    assert!(eventually(|| sim.stats.active_test_resps.load(Ordering::Relaxed) >= 1).await);
    assert_eq!(sim.stats.active_tests.load(Ordering::Relaxed), 1);
}

/// §8.4.2: TERMINATE gets TERMINATE_RESP, then the simulator closes.
#[tokio::test]
async fn terminate_is_answered_then_closed() {
    let sim = start(CmppSimConfig::default()).await;
    let mut sp = Sp::connected(sim.local_addr, 0x20).await;
    let mut out = BytesMut::new();
    pdu::put_terminate(&mut out, 9);
    sp.send(&out).await;
    let r = sp.recv().await;
    assert_eq!((cmpp::command_id(&r), cmpp::sequence(&r), r.len()), (cmd::TERMINATE_RESP, 9, 12));
    sp.expect_eof().await;
    assert!(eventually(|| sim.links() == 0).await);
}

/// MO injection: send_mo's DELIVER (Registered_Delivery 0) reaches the SP and the caller gets
/// the DELIVER_RESP Result; without a link, NoLink.
#[tokio::test]
async fn send_mo_returns_the_deliver_resp_result() {
    let sim = start(CmppSimConfig::default()).await;
    assert_eq!(sim.send_mo("8613912345678", "1069012345", 8, b"x").await, Err(MoError::NoLink));
    let mut sp = Sp::connected(sim.local_addr, 0x30).await;
    assert!(eventually(|| sim.links() == 1).await);
    let tuiding: Vec<u8> = "退订".encode_utf16().flat_map(u16::to_be_bytes).collect();
    for want in [0, 9] {
        let (got, d) = tokio::join!(sim.send_mo("8613912345678", "106901234501", 8, &tuiding), sp.deliver(want));
        assert_eq!(got, Ok(want));
        let d = peek::deliver(&d, Version::V30).unwrap();
        assert!(!d.is_report());
        assert_eq!((d.src_terminal_id, d.dest_id, d.msg_fmt), (&b"8613912345678"[..], &b"106901234501"[..], 8));
        assert_eq!(d.msg_content, &tuiding[..]);
    }
    assert_eq!(sim.stats.mo_sent.load(Ordering::Relaxed), 2);
    assert_eq!(sim.stats.deliver_nacks.load(Ordering::Relaxed), 1);
}

/// §7.1 W = 16: a 20-destination SUBMIT's reports stop at 16 unanswered DELIVERs; each
/// DELIVER_RESP lets one more through.
#[tokio::test]
async fn never_more_than_16_delivers_unanswered() {
    let sim = start(CmppSimConfig::default()).await;
    let mut sp = Sp::connected(sim.local_addr, 0x30).await;
    let dests: Vec<String> = (0..20).map(|i| format!("86138001380{i:02}")).collect();
    let dests: Vec<&str> = dests.iter().map(String::as_str).collect();
    sp.submit(&dests, 1).await;
    let mut held = Vec::new();
    for _ in 0..sim::WINDOW {
        held.push(sp.recv().await);
    }
    assert!(sp.recv_within(Duration::from_millis(200)).await.is_none(), "a 17th DELIVER before any answer");
    let first = peek::deliver(&held[0], Version::V30).unwrap().msg_id;
    let mut out = BytesMut::new();
    pdu::put_deliver_resp(&mut out, Version::V30, cmpp::sequence(&held[0]), first, 0);
    sp.send(&out).await;
    let next = sp.recv().await;
    assert_eq!(cmpp::command_id(&next), cmd::DELIVER);
    assert!(sp.recv_within(Duration::from_millis(200)).await.is_none(), "still 16 outstanding");
    assert_eq!(sim.stats.reports_sent.load(Ordering::Relaxed), 17);
}

/// report_delay holds the reports back; mo_every adds an MO after every N-th SUBMIT; the
/// recording keeps only the latest record_limit SUBMITs.
#[tokio::test]
async fn report_delay_mo_every_and_record_limit() {
    let cfg = CmppSimConfig {
        report_delay: Duration::from_millis(300),
        mo_every: Some(2),
        record_limit: 2,
        ..Default::default()
    };
    let sim = start(cfg).await;
    let mut sp = Sp::connected(sim.local_addr, 0x20).await;
    let (a, _) = sp.submit(&["8613800138000"], 1).await;
    assert!(sp.recv_within(Duration::from_millis(100)).await.is_none(), "the report waits for report_delay");
    let d = sp.deliver(0).await;
    assert!(peek::deliver(&d, Version::V20).unwrap().is_report());
    let (b, _) = sp.submit(&["8613800138001"], 0).await;
    let mo = sp.deliver(0).await;
    let mo = peek::deliver(&mo, Version::V20).unwrap();
    assert_eq!((mo.registered_delivery, mo.src_terminal_id, mo.msg_content), (0, &b"8613800138001"[..], &b"TD"[..]));
    let (c, _) = sp.submit(&["8613800138002"], 0).await;
    assert_ne!(a, b);
    assert_eq!(sim.submits(), vec![b, c]);
}

// ---- independent clients from PyPI ------------------------------------------------------

/// cmppy 0.3 (CMPP 3.0): CONNECT with MD5 auth and its check of AuthenticatorISMG, a group
/// SUBMIT to two destinations answered with Result 0 on its own Sequence_Id, TERMINATE.
#[tokio::test(flavor = "multi_thread")]
async fn cmppy_connects_submits_and_terminates() {
    let Some(py) = tools::python_with("cmppy").await else { return };
    let sim = start(with_secret()).await;
    let r = tools::run_script(&py, tools::CMPPY_CLIENT, sim.local_addr, SP, SECRET).await;
    assert_eq!(r["connect_status"], 0, "{r}");
    assert_eq!(r["version"], 0x30, "{r}");
    assert_eq!(r["auth_ok"], true, "AuthenticatorISMG as cmppy's _valid_auth computes it: {r}");
    assert_eq!(r["submit_resp"]["result"], 0, "{r}");
    assert_eq!(r["submit_resp"]["sequence"], r["submit_sequence"], "{r}");
    let msg_id = r["submit_resp"]["msg_id"].as_u64().expect("u64 Msg_Id");
    assert_eq!(MsgId::decode(msg_id).gateway, sim::DEFAULT_GATEWAY_ID);

    let subs = sim.submits();
    assert_eq!(subs.len(), 1);
    let s = peek::submit(&subs[0], Version::V30).expect("cmppy's SUBMIT reads as 3.0");
    assert_eq!(s.destinations().collect::<Vec<_>>(), [&b"8613800138000"[..], b"8613800138001"]);
    assert_eq!((s.msg_fmt, s.msg_src, s.src_id, s.registered_delivery), (8, SP.as_bytes(), &b"1069012345"[..], 0));
    let text: Vec<u16> = s.msg_content.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    assert_eq!(String::from_utf16(&text).unwrap(), "您好，退订回T");
    assert!(eventually(|| sim.stats.terminates.load(Ordering::Relaxed) == 1).await);

    // A wrong secret: Status 3, and cmppy gets no SUBMIT through.
    let r = tools::run_script(&py, tools::CMPPY_CLIENT, sim.local_addr, SP, "wrong").await;
    assert_eq!(r["connect_status"], connect_status::AUTH_FAILED, "{r}");
    assert_eq!(r["submit_resp"], serde_json::Value::Null, "{r}");
    assert_eq!(sim.stats.connect_refused.load(Ordering::Relaxed), 1);
}

/// pycmpp 2.0.2 (CMPP 2.x, Version 0x21): CONNECT with MD5 auth (1-byte Status in
/// AuthenticatorISMG), a short and a two-part long UCS-2 SUBMIT with reports, each report
/// carrying its SUBMIT_RESP's Msg_Id, ACTIVE_TEST and TERMINATE.
#[tokio::test(flavor = "multi_thread")]
async fn pycmpp_connects_submits_gets_reports_and_terminates() {
    let Some(py) = tools::python_with("pycmpp").await else { return };
    let sim = start(with_secret()).await;
    let r = tools::run_script(&py, tools::PYCMPP_CLIENT, sim.local_addr, SP, SECRET).await;
    assert_eq!(r["connect_status"], 0, "{r}");
    assert_eq!(r["version"], 0x21, "the negotiated Version byte echoed: {r}");
    assert_eq!(r["auth_ok"], true, "{r}");
    let resps = r["submit_resp"].as_array().expect("submit_resp");
    assert_eq!(resps.len(), 3, "one SUBMIT_RESP per part: {r}");
    assert!(resps.iter().all(|x| x["result"] == 0), "{r}");
    let mut ids: Vec<u64> = resps.iter().map(|x| x["msg_id"].as_u64().unwrap()).collect();
    let reports = r["reports"].as_array().expect("reports");
    let mut reported: Vec<u64> = reports.iter().map(|x| x["msg_id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    reported.sort_unstable();
    assert_eq!(ids, reported, "one report per SUBMIT, with its Msg_Id: {r}");
    assert!(reports.iter().all(|x| x["stat"] == "DELIVRD" && x["dest"] == "8613800138000"), "{r}");
    assert_eq!(r["active_test_ok"], true, "{r}");
    assert_eq!(r["terminate_ok"], true, "{r}");

    let subs = sim.submits();
    assert_eq!(subs.len(), 3);
    let parts: Vec<_> =
        subs.iter().map(|f| peek::submit(f, Version::V20).expect("pycmpp's SUBMIT reads as 2.0")).collect();
    assert_eq!((parts[0].pk_total, parts[0].tp_udhi), (1, 0));
    for (i, p) in parts[1..].iter().enumerate() {
        assert_eq!((p.pk_total, p.pk_number, p.tp_udhi), (2, i as u8 + 1, 1));
        assert_eq!(&p.msg_content[..3], &[5, 0, 3], "UDH 05 00 03 ref 02 seq");
        assert_eq!(&p.msg_content[4..6], &[2, i as u8 + 1]);
        assert_eq!(p.src_id, b"", "pycmpp leaves Src_Id empty");
    }
    assert!(eventually(|| sim.stats.deliver_acks.load(Ordering::Relaxed) == 3).await);
    assert!(eventually(|| sim.stats.terminates.load(Ordering::Relaxed) == 1).await);
}

// ---- the CLI ------------------------------------------------------------------------------

/// `consentgate smsc-sim --cmpp`: prints its address, authenticates with --secret and applies
/// --dest-error as the report's Stat.
#[tokio::test(flavor = "multi_thread")]
async fn cli_smsc_sim_cmpp_serves_connect_submit_and_reports() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
        .args(["smsc-sim", "--cmpp", "--listen", "127.0.0.1:0", "--secret", &format!("{SP}={SECRET}")])
        .args(["--dest-error", "8613800138001=UNDELIV"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn consentgate smsc-sim --cmpp");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(T, lines.next_line()).await.expect("address line in time").unwrap().unwrap();
    let addr: SocketAddr = line.strip_prefix("cmpp-sim listening on ").expect(&line).parse().unwrap();

    let (mut sp, r) = Sp::connect_as(addr, 0x30, SP, SECRET).await;
    assert_eq!(peek::connect_resp(&r, Version::V30).unwrap().status, connect_status::OK);
    let (_, resp) = sp.submit(&["8613800138001"], 1).await;
    assert_eq!(resp.result, 0);
    let d = sp.deliver(0).await;
    let rep = peek::deliver(&d, Version::V30).unwrap().report().unwrap();
    assert_eq!((rep.msg_id, rep.stat), (resp.msg_id, &b"UNDELIV"[..]));
    let (mut bad, r) = Sp::connect_as(addr, 0x30, SP, "wrong").await;
    assert_eq!(peek::connect_resp(&r, Version::V30).unwrap().status, connect_status::AUTH_FAILED);
    bad.expect_eof().await;
    child.kill().await.unwrap();
}
