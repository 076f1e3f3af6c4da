//! The transparent proxy over real TCP on loopback: gateway + SMSC simulator + raw ESMEs.
//! Spec references are SMPP v3.4 (Issue 1.2).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use consentgate::sim::SimConfig;
use consentgate::smpp::pdu::SubmitBuilder;
use consentgate::smpp::{self, cmd, peek, status, BindType};

/// §4.4: a forwarded submit_sm reaches the SMSC byte-identical except for the sequence number.
#[tokio::test]
async fn forwards_submit_byte_identical_but_for_sequence() {
    let (sim, gw) = stack(sim_cfg(), "", "").await;
    let mut e = Esme::bound(gw.addr, "acme").await;
    let b = SubmitBuilder::new("1069012345", "8613800138000")
        .data_coding(8)
        .registered_delivery(0)
        .short_message(&[0x90, 0x00, 0x8B, 0xA2])
        .tlv(0x0204, &[0, 7])
        .tlv(0x1400, b"vendor");
    let seq = e.submit(&b).await;
    let resp = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP).await;
    assert_eq!(smpp::sequence(&resp), seq);
    assert_eq!(smpp::command_status(&resp), 0);
    assert!(!peek::resp_message_id(&resp).is_empty(), "SMSC message_id relayed");
    let sent = b.build(seq);
    let got: Vec<_> = sim.recorded().into_iter().filter(|(_, f)| smpp::command_id(f) == cmd::SUBMIT_SM).collect();
    assert_eq!(got.len(), 1);
    let (sid, f) = &got[0];
    assert_eq!(sid, "acme");
    assert_eq!(f.len(), sent.len());
    assert_eq!(&f[..12], &sent[..12], "header but sequence identical");
    assert_eq!(&f[16..], &sent[16..], "body identical");
    gw.stop().await;
}

/// Receipts (§5.2.12 esm_class 0x04) and MO reach the session of the account they belong to.
#[tokio::test]
async fn receipts_and_mo_reach_the_right_session() {
    let (sim, gw) = stack(sim_cfg(), "", "").await;
    let mut a = Esme::bound(gw.addr, "acme").await;
    let mut b = Esme::bound(gw.addr, "bank").await;
    let sa = a.submit(&submit_to("8613800000001").registered_delivery(1)).await;
    let sb = b.submit(&submit_to("8613800000002").registered_delivery(1)).await;
    for (e, seq, dest) in [(&mut a, sa, "8613800000001"), (&mut b, sb, "8613800000002")] {
        let resp = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP).await;
        assert_eq!(smpp::sequence(&resp), seq);
        let id = peek::resp_message_id(&resp).to_vec();
        let dlr = e.recv_where(|f| smpp::command_id(f) == cmd::DELIVER_SM).await;
        let v = peek::message(&dlr).unwrap();
        assert!(v.is_receipt());
        assert_eq!(v.source.addr, dest.as_bytes(), "receipt for this session's own message");
        assert_eq!(v.tlv(peek::tlv::RECEIPTED_MESSAGE_ID).unwrap(), [&id[..], b"\0"].concat().as_slice());
        e.send_header(cmd::DELIVER_SM_RESP, 0, smpp::sequence(&dlr)).await;
    }
    assert!(sim.inject_mo(Some("bank"), "8613911112222", "1069012345", 0, b"TD"));
    let mo = b.recv_where(|f| smpp::command_id(f) == cmd::DELIVER_SM).await;
    let v = peek::message(&mo).unwrap();
    assert!(!v.is_receipt());
    assert_eq!(v.short_message, b"TD");
    b.send_header(cmd::DELIVER_SM_RESP, 0, smpp::sequence(&mo)).await;
    // Nothing for the other session.
    assert!(a.recv_within(Duration::from_millis(200)).await.is_err());
    gw.stop().await;
}

/// §5.1.4 / §2.2 of smpp-tech: sequence numbers are remapped per leg; hundreds in flight on
/// several sessions; every request answered exactly once with its own sequence number.
#[tokio::test]
async fn sequence_remapping_with_hundreds_in_flight_on_several_sessions() {
    let (_sim, gw) = stack(SimConfig::default(), "", "window = 1000").await;
    let mut tasks = Vec::new();
    for s in 0..4u32 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let mut e = Esme::bound(addr, if s % 2 == 0 { "acme" } else { "bank" }).await;
            // Start at an odd sequence so ESME and gateway numbering differ.
            e.next_seq = 1000 * (s + 1) + 7;
            let mut sent = HashSet::new();
            let mut batch = bytes::BytesMut::new();
            for i in 0..500u32 {
                let seq = e.seq();
                batch.extend_from_slice(&submit_to(&format!("86138{:08}", s * 1000 + i)).build(seq));
                sent.insert(seq);
            }
            e.send(&batch).await;
            let mut seen = HashMap::new();
            while seen.len() < 500 {
                let f = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP).await;
                assert_eq!(smpp::command_status(&f), 0);
                *seen.entry(smpp::sequence(&f)).or_insert(0) += 1;
            }
            assert!(e.recv_within(Duration::from_millis(100)).await.is_err(), "no extra responses");
            assert_eq!(seen.keys().copied().collect::<HashSet<_>>(), sent);
            assert!(seen.values().all(|&n| n == 1));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    gw.stop().await;
}

/// §4.11: enquire_link is answered locally on each leg, and consentgate probes idle legs.
#[tokio::test]
async fn enquire_link_on_both_legs_and_dead_esme_is_closed() {
    let (sim, gw) = stack(
        sim_cfg(),
        r#"enquire_link_interval = "200ms""#,
        "enquire_link_interval = \"200ms\"\nresponse_timeout = \"400ms\"",
    )
    .await;
    let mut e = Esme::bound(gw.addr, "acme").await;
    let seq = e.seq();
    e.send_header(cmd::ENQUIRE_LINK, 0, seq).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::ENQUIRE_LINK_RESP).await;
    assert_eq!(smpp::sequence(&r), seq);
    // The gateway probes the idle ESME leg; answer it once.
    let probe = e.recv_where(|f| smpp::command_id(f) == cmd::ENQUIRE_LINK).await;
    e.send_header(cmd::ENQUIRE_LINK_RESP, 0, smpp::sequence(&probe)).await;
    // ...and the idle upstream leg (the simulator counts enquire_links it answered).
    assert!(eventually(|| sim.stats.enquire_links.load(Ordering::Relaxed) >= 1).await);
    // ESME enquire_links were answered locally, never forwarded.
    assert!(sim.recorded().iter().all(|(_, f)| smpp::command_id(f) != cmd::ENQUIRE_LINK || smpp::sequence(f) != seq));
    // Stop answering: the gateway closes the ESME leg after response_timeout.
    let t0 = std::time::Instant::now();
    loop {
        match e.recv_within(Duration::from_secs(3)).await {
            Ok(None) => break,
            Ok(Some(f)) if smpp::command_id(&f) == cmd::UNBIND => {}
            Ok(Some(_)) => {}
            Err(()) => panic!("dead ESME leg not closed"),
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(4));
    // The upstream leg was unbound too.
    assert!(eventually(|| sim.stats.unbinds.load(Ordering::Relaxed) >= 1).await);
    gw.stop().await;
}

/// §4.2: unbind from the ESME is relayed and answered; both legs close.
#[tokio::test]
async fn unbind_from_esme() {
    let (sim, gw) = stack(sim_cfg(), "", "").await;
    let mut e = Esme::bound(gw.addr, "acme").await;
    let seq = e.seq();
    e.send_header(cmd::UNBIND, 0, seq).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::UNBIND_RESP).await;
    assert_eq!((smpp::sequence(&r), smpp::command_status(&r)), (seq, 0));
    assert_eq!(e.recv().await, None, "connection closed after unbind_resp");
    assert!(eventually(|| sim.stats.unbinds.load(Ordering::Relaxed) == 1).await);
    gw.stop().await;
}

/// §4.2: unbind from the SMSC reaches the ESME; its unbind_resp ends both legs.
#[tokio::test]
async fn unbind_from_smsc() {
    let (sim, gw) = stack(sim_cfg(), "", "").await;
    let mut e = Esme::bound(gw.addr, "acme").await;
    assert!(eventually(|| sim.sessions() == 1).await);
    sim.unbind_all();
    let u = e.recv_where(|f| smpp::command_id(f) == cmd::UNBIND).await;
    e.send_header(cmd::UNBIND_RESP, 0, smpp::sequence(&u)).await;
    assert_eq!(e.recv().await, None);
    assert!(eventually(|| sim.sessions() == 0).await);
    gw.stop().await;
}

/// Bind admission (architecture §3 step 1) and relaying the upstream's own bind refusal.
#[tokio::test]
async fn bind_refusals() {
    let (_sim, gw) = stack(sim_cfg(), "", "").await;
    let mut e = Esme::connect(gw.addr).await;
    assert_eq!(e.bind(BindType::Transceiver, "stranger", "pw").await, status::ESME_RINVSYSID);
    // The connection stays open for another attempt.
    assert_eq!(e.bind(BindType::Transceiver, "nolicence", "pw").await, status::ESME_RBINDFAIL);
    assert_eq!(e.bind(BindType::Transceiver, "expired", "pw").await, status::ESME_RBINDFAIL);
    assert_eq!(e.bind(BindType::Transmitter, "rxonly", "pw").await, status::ESME_RBINDFAIL);
    // A submit before bind: ESME_RINVBNDSTS.
    let s = e.submit(&submit_to("8613800000001")).await;
    let r = e.recv().await.unwrap();
    assert_eq!((smpp::sequence(&r), smpp::command_status(&r)), (s, status::ESME_RINVBNDSTS));
    assert_eq!(e.bind(BindType::Receiver, "rxonly", "pw").await, 0);
    gw.stop().await;

    // The SMSC refuses: its status reaches the ESME.
    let (_sim, gw) = stack(SimConfig { refuse_binds: Some(status::ESME_RINVPASWD), ..sim_cfg() }, "", "").await;
    let mut e = Esme::connect(gw.addr).await;
    assert_eq!(e.bind(BindType::Transceiver, "acme", "pw").await, status::ESME_RINVPASWD);
    gw.stop().await;

    // The SMSC is unreachable: ESME_RSYSERR within the connect timeout.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let gw = Gw::start(config(addr, "connect_timeout = \"1s\"", "")).await;
    let mut e = Esme::connect(gw.addr).await;
    assert_eq!(e.bind(BindType::Transceiver, "acme", "pw").await, status::ESME_RSYSERR);
    gw.stop().await;
}

/// The SMSC dies with requests in flight: each is answered exactly once, at once, and the
/// ESME is unbound.
#[tokio::test]
async fn upstream_killed_mid_flight() {
    let (sim, gw) = stack(SimConfig { response_delay: Duration::from_secs(3), ..sim_cfg() }, "", "").await;
    let mut e = Esme::bound(gw.addr, "acme").await;
    let mut seqs = HashSet::new();
    for i in 0..50 {
        seqs.insert(e.submit(&submit_to(&format!("86138000000{i:02}"))).await);
    }
    assert!(eventually(|| sim.stats.submits.load(Ordering::Relaxed) == 50).await);
    let t0 = std::time::Instant::now();
    sim.kill_connections();
    let mut answered = HashMap::new();
    let mut unbound = false;
    while let Some(f) = e.recv().await {
        match smpp::command_id(&f) {
            cmd::SUBMIT_SM_RESP => {
                assert_eq!(smpp::command_status(&f), status::ESME_RSYSERR);
                *answered.entry(smpp::sequence(&f)).or_insert(0) += 1;
            }
            cmd::UNBIND => {
                unbound = true;
                e.send_header(cmd::UNBIND_RESP, 0, smpp::sequence(&f)).await;
            }
            _ => {}
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "answered at once, not after the SMSC delay");
    assert_eq!(answered.keys().copied().collect::<HashSet<_>>(), seqs);
    assert!(answered.values().all(|&n| n == 1));
    assert!(unbound, "ESME leg unbound cleanly");
    gw.stop().await;
}

/// The ESME dies with requests in flight: late responses are dropped, the upstream leg is
/// unbound, and other sessions are unaffected.
#[tokio::test]
async fn esme_killed_mid_flight() {
    let (sim, gw) = stack(SimConfig { response_delay: Duration::from_millis(300), ..sim_cfg() }, "", "").await;
    let mut other = Esme::bound(gw.addr, "bank").await;
    let mut e = Esme::bound(gw.addr, "acme").await;
    for i in 0..20 {
        e.submit(&submit_to(&format!("86138000000{i:02}"))).await;
    }
    assert!(eventually(|| sim.stats.submits.load(Ordering::Relaxed) == 20).await);
    drop(e);
    assert!(eventually(|| sim.stats.unbinds.load(Ordering::Relaxed) == 1).await, "upstream leg unbound");
    let s = other.submit(&submit_to("8613800000099")).await;
    let r = other.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP).await;
    assert_eq!((smpp::sequence(&r), smpp::command_status(&r)), (s, 0));
    gw.stop().await;
}

/// Beyond the window: ESME_RTHROTTLED (0x58) at once; the window's requests go through.
#[tokio::test]
async fn window_overflow_is_throttled() {
    let (_sim, gw) =
        stack(SimConfig { response_delay: Duration::from_millis(500), ..sim_cfg() }, "", "window = 5").await;
    let mut e = Esme::bound(gw.addr, "acme").await;
    let mut batch = bytes::BytesMut::new();
    for i in 0..12 {
        let seq = e.seq();
        batch.extend_from_slice(&submit_to(&format!("86138000000{i:02}")).build(seq));
    }
    e.send(&batch).await;
    let mut by_status: HashMap<u32, Vec<u32>> = HashMap::new();
    for _ in 0..12 {
        let f = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP).await;
        by_status.entry(smpp::command_status(&f)).or_default().push(smpp::sequence(&f));
    }
    assert_eq!(by_status[&status::ESME_RTHROTTLED].len(), 7);
    let mut ok = by_status[&0].clone();
    ok.sort();
    assert_eq!(ok, vec![2, 3, 4, 5, 6], "the first five after the bind");
    gw.stop().await;
}

/// Malformed PDUs are answered and the session stays in sync (§3.1, §5.1.3).
#[tokio::test]
async fn malformed_pdus_do_not_kill_the_session() {
    let (sim, gw) = stack(sim_cfg(), "", "max_pdu_bytes = 1024").await;
    let mut e = Esme::bound(gw.addr, "acme").await;
    // Oversized: command_length 5000 > 1024, all bytes sent.
    let mut big = submit_to("8613800000001").build(77).to_vec();
    big.resize(5000, b'x');
    big[0..4].copy_from_slice(&5000u32.to_be_bytes());
    e.send(&big).await;
    let r = e.recv().await.unwrap();
    assert_eq!(
        (smpp::command_id(&r), smpp::command_status(&r), smpp::sequence(&r)),
        (cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, 77)
    );
    // Unknown command id.
    e.send_header(0x0000_0999, 0, 78).await;
    let r = e.recv().await.unwrap();
    assert_eq!(
        (smpp::command_id(&r), smpp::command_status(&r), smpp::sequence(&r)),
        (cmd::GENERIC_NACK, status::ESME_RINVCMDID, 78)
    );
    // Truncated body: sm_length claims more than the PDU holds.
    let mut t = submit_to("8613800000001").build(79).to_vec();
    t.truncate(t.len() - 5);
    let l = t.len() as u32;
    t[0..4].copy_from_slice(&l.to_be_bytes());
    e.send(&t).await;
    let r = e.recv().await.unwrap();
    assert_eq!(
        (smpp::command_id(&r), smpp::command_status(&r), smpp::sequence(&r)),
        (cmd::SUBMIT_SM_RESP, status::ESME_RINVMSGLEN, 79)
    );
    // Still in sync: a good submit goes through.
    let s = e.submit(&submit_to("8613800000002")).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP).await;
    assert_eq!((smpp::sequence(&r), smpp::command_status(&r)), (s, 0));
    // Nothing malformed reached the SMSC.
    let subs = sim.recorded().iter().filter(|(_, f)| smpp::command_id(f) == cmd::SUBMIT_SM).count();
    assert_eq!(subs, 1);
    gw.stop().await;
}

/// The SMSC does not answer in time: the ESME gets the configured status, once.
#[tokio::test]
async fn upstream_response_timeout() {
    let (_sim, gw) = stack(
        SimConfig { response_delay: Duration::from_millis(1500), ..sim_cfg() },
        "response_timeout = \"300ms\"\nresponse_timeout_status = 0x45",
        "",
    )
    .await;
    let mut e = Esme::bound(gw.addr, "acme").await;
    let s = e.submit(&submit_to("8613800000001")).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP).await;
    assert_eq!((smpp::sequence(&r), smpp::command_status(&r)), (s, 0x45));
    // The late real answer is dropped, not delivered twice.
    assert!(e.recv_within(Duration::from_millis(1800)).await.is_err());
    gw.stop().await;
}

/// Shutdown drains: in-flight requests get their real answers, then both legs are unbound.
#[tokio::test]
async fn graceful_shutdown_drains_in_flight() {
    let (sim, mut gw) = stack(SimConfig { response_delay: Duration::from_millis(400), ..sim_cfg() }, "", "").await;
    let mut e = Esme::bound(gw.addr, "acme").await;
    let mut seqs = HashSet::new();
    for i in 0..10 {
        seqs.insert(e.submit(&submit_to(&format!("86138000000{i:02}"))).await);
    }
    assert!(eventually(|| sim.stats.submits.load(Ordering::Relaxed) == 10).await);
    gw.trigger_shutdown();
    let mut ok = HashSet::new();
    let mut unbound = false;
    while let Some(f) = e.recv().await {
        match smpp::command_id(&f) {
            cmd::SUBMIT_SM_RESP => {
                assert_eq!(smpp::command_status(&f), 0, "in-flight requests finish normally");
                assert!(!unbound, "answers come before the unbind");
                ok.insert(smpp::sequence(&f));
            }
            cmd::UNBIND => {
                unbound = true;
                e.send_header(cmd::UNBIND_RESP, 0, smpp::sequence(&f)).await;
            }
            _ => {}
        }
    }
    assert_eq!(ok, seqs);
    assert!(unbound);
    assert!(eventually(|| sim.stats.unbinds.load(Ordering::Relaxed) == 1).await);
    gw.stop().await;
}
