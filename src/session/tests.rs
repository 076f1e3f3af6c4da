//! The session's relay logic driven with PDUs and clock ticks, without sockets (architecture §1
//! invariant: every accepted request is answered exactly once). Sequence numbers follow SMPP
//! v3.4 §2.3 (each side numbers its own requests; responses echo them).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::*;
use crate::config::Config;
use crate::smpp::{cmd, status, BindType, Header};

const CONFIG: &str = r#"
[upstream]
address = "127.0.0.1:1"
response_timeout = "5s"
enquire_link_interval = "30s"
[session]
window = 2
shutdown_grace = "3s"
response_timeout = "5s"
[policy]
regime = "opt-out"
on_snapshot_unavailable = "allow"
[[account]]
system_id = "acme"
entity = "acme-retail"
class = "marketing"
licence = "L1"
"#;

fn session() -> Session {
    session_with("")
}

/// A session on [`CONFIG`] with `extra` appended.
fn session_with(extra: &str) -> Session {
    session_on(&format!("{CONFIG}{extra}"))
}

fn session_on(text: &str) -> Session {
    let cfg = Config::parse(text).expect("config");
    let ctx = Arc::new(Context {
        settings: arc_swap::ArcSwap::from_pointee(Settings {
            session: cfg.session.clone(),
            upstream: cfg.upstream.clone(),
            keywords: Arc::new(crate::optout::Keywords::new(&cfg.optout_keywords)),
            opt_in: Default::default(),
        }),
        engine: Arc::new(crate::policy::EngineCell::new(cfg.engine())),
        store: Arc::new(crate::consent::store::ConsentStore::in_memory()),
        capture: None,
        audit: crate::audit::Audit::disabled(),
        clock: crate::time::Clock::manual(1_780_000_000_000),
        next_session: Default::default(),
        bind_limiter: crate::session::limits::BindLimiter::new(cfg.session.limits),
        unbound: crate::session::limits::UnboundLimiter::new(&cfg.session.limits),
        upstream_tls: None,
    });
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let generation = ctx.engine.generation();
    let engine = ctx.engine();
    let account = engine.lookup("acme").unwrap();
    let mut s =
        Session::new(ctx, (engine, generation), account, BindType::Transceiver, peer, BytesMut::new(), BytesMut::new());
    s.set_clock(0);
    s
}

/// A submit_sm from "1069000" to `dest` with text "hi".
fn submit(seq: u32, dest: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.push(0); // service_type ""
    body.extend_from_slice(&[0, 1]);
    body.extend_from_slice(b"1069000\0");
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(dest.as_bytes());
    body.push(0);
    body.extend_from_slice(&[0, 0, 0]); // esm_class, protocol_id, priority
    body.extend_from_slice(&[0, 0]); // schedule, validity
    body.extend_from_slice(&[0, 0, 0, 0]); // registered_delivery, replace, data_coding, sm_default_msg_id
    body.push(2);
    body.extend_from_slice(b"hi");
    pdu(cmd::SUBMIT_SM, 0, seq, &body)
}

fn pdu(id: u32, st: u32, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut v = BytesMut::new();
    v.put_u32((16 + body.len()) as u32);
    v.put_u32(id);
    v.put_u32(st);
    v.put_u32(seq);
    v.put_slice(body);
    v.to_vec()
}

/// Feeds the ESME's bytes and returns what went upstream.
fn from_esme(s: &mut Session, bytes: &[u8]) -> Vec<Header> {
    s.esme.rbuf.extend_from_slice(bytes);
    s.process_down();
    s.progress();
    take(&mut s.smsc.out)
}

fn from_smsc(s: &mut Session, bytes: &[u8]) -> Vec<Header> {
    s.smsc.rbuf.extend_from_slice(bytes);
    s.process_up();
    s.progress();
    take(&mut s.esme.out)
}

fn take(out: &mut BytesMut) -> Vec<Header> {
    let mut v = Vec::new();
    let mut at = 0;
    while at + 16 <= out.len() {
        let h = Header::read(&out[at..]);
        at += h.command_length as usize;
        v.push(h);
    }
    out.clear();
    v
}

#[test]
fn submit_is_relayed_under_a_new_sequence_and_the_answer_mapped_back() {
    let mut s = session();
    let smsc = from_esme(&mut s, &submit(77, "8613800000001"));
    assert_eq!(smsc.len(), 1);
    assert_eq!(smsc[0].command_id, cmd::SUBMIT_SM);
    let up_seq = smsc[0].sequence_number;
    let esme = from_smsc(&mut s, &pdu(cmd::SUBMIT_SM_RESP, 0, up_seq, b"id-1\0"));
    assert_eq!((esme[0].command_id, esme[0].sequence_number, esme[0].command_status), (cmd::SUBMIT_SM_RESP, 77, 0));
}

#[test]
fn a_full_window_is_answered_throttled_here() {
    let mut s = session();
    assert_eq!(from_esme(&mut s, &[submit(1, "8613800000001"), submit(2, "8613800000002")].concat()).len(), 2);
    assert!(from_esme(&mut s, &submit(3, "8613800000003")).is_empty(), "not relayed");
    let answered = take(&mut s.esme.out);
    assert_eq!((answered[0].sequence_number, answered[0].command_status), (3, status::ESME_RTHROTTLED));
    // The window is Policy step 3 (architecture §3): its refusal takes the configured `throttled` status.
    let mut s = session_with("[policy.reject_status]\nthrottled = 0x414\n");
    from_esme(&mut s, &[submit(1, "8613800000001"), submit(2, "8613800000002")].concat());
    assert!(from_esme(&mut s, &submit(3, "8613800000003")).is_empty());
    assert_eq!(take(&mut s.esme.out)[0].command_status, 0x414);
}

#[test]
fn a_request_the_smsc_never_answers_gets_the_timeout_status_once() {
    let mut s = session();
    from_esme(&mut s, &submit(5, "8613800000001"));
    s.set_clock(4_900_000);
    s.on_tick();
    assert!(take(&mut s.esme.out).is_empty(), "not yet");
    s.set_clock(5_200_000);
    s.on_tick();
    let a = take(&mut s.esme.out);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].command_id, a[0].sequence_number, a[0].command_status),
        (cmd::SUBMIT_SM_RESP, 5, status::ESME_RSYSERR)
    );
    s.set_clock(9_000_000);
    s.on_tick();
    assert!(take(&mut s.esme.out).is_empty(), "answered exactly once");
}

#[test]
fn esme_unbind_is_relayed_and_the_session_ends_on_the_smsc_answer() {
    let mut s = session();
    let smsc = from_esme(&mut s, &pdu(cmd::UNBIND, 0, 9, b""));
    assert_eq!(smsc[0].command_id, cmd::UNBIND);
    assert_eq!(s.life.state(), State::EsmeUnbinding);
    let esme = from_smsc(&mut s, &pdu(cmd::UNBIND_RESP, 0, smsc[0].sequence_number, b""));
    assert_eq!((esme[0].command_id, esme[0].sequence_number), (cmd::UNBIND_RESP, 9));
    assert!(s.is_done());
    assert_eq!(s.close_reason(), "esme unbound");
}

#[test]
fn smsc_unbind_is_relayed_to_the_esme() {
    let mut s = session();
    let esme = from_smsc(&mut s, &pdu(cmd::UNBIND, 0, 40, b""));
    assert_eq!(esme[0].command_id, cmd::UNBIND);
    assert_eq!(s.life.state(), State::SmscUnbinding);
    let smsc = from_esme(&mut s, &pdu(cmd::UNBIND_RESP, 0, esme[0].sequence_number, b""));
    assert_eq!((smsc[0].command_id, smsc[0].sequence_number), (cmd::UNBIND_RESP, 40));
    assert!(s.is_done());
}

#[test]
fn drain_refuses_new_requests_and_answers_in_flight_ones_when_the_grace_ends() {
    let mut s = session();
    from_esme(&mut s, &submit(1, "8613800000001"));
    s.begin_drain("shutdown");
    assert!(from_esme(&mut s, &submit(2, "8613800000002")).is_empty());
    assert_eq!(take(&mut s.esme.out)[0].command_status, status::ESME_RTHROTTLED);
    s.set_clock(3_100_000);
    s.progress();
    let esme = take(&mut s.esme.out);
    assert_eq!((esme[0].sequence_number, esme[0].command_status), (1, status::ESME_RSYSERR));
    assert_eq!(esme[1].command_id, cmd::UNBIND, "then consentgate unbinds the ESME");
    assert_eq!(take(&mut s.smsc.out)[0].command_id, cmd::UNBIND, "and the SMSC");
}

#[test]
fn an_idle_leg_gets_enquire_link_and_a_silent_one_is_closed() {
    let mut s = session();
    s.set_clock(30_000_000);
    s.on_tick();
    let smsc = take(&mut s.smsc.out);
    assert_eq!(smsc[0].command_id, cmd::ENQUIRE_LINK);
    s.set_clock(35_100_000);
    s.on_tick();
    assert!(!s.smsc.open, "no enquire_link_resp within the response timeout: the SMSC leg is gone");
    assert!(matches!(s.life.state(), State::Closing { .. }));
}

#[test]
fn losing_the_smsc_answers_everything_in_flight() {
    let mut s = session();
    from_esme(&mut s, &[submit(1, "8613800000001"), submit(2, "8613800000002")].concat());
    s.smsc_gone("test");
    let esme = take(&mut s.esme.out);
    let answered: Vec<_> =
        esme.iter().filter(|h| h.command_id == cmd::SUBMIT_SM_RESP).map(|h| h.sequence_number).collect();
    assert_eq!(answered, vec![1, 2]);
    assert!(esme.iter().all(|h| h.command_id != cmd::SUBMIT_SM_RESP || h.command_status == status::ESME_RSYSERR));
}

#[test]
fn a_malformed_submit_is_answered_and_the_stream_stays_in_sync() {
    let mut s = session();
    let bad = pdu(cmd::SUBMIT_SM, 0, 3, b"\x00\x01\x01");
    let smsc = from_esme(&mut s, &[bad, submit(4, "8613800000001")].concat());
    assert_eq!(smsc.len(), 1, "the good one is relayed");
    let esme = take(&mut s.esme.out);
    assert_eq!(esme[0].sequence_number, 3);
    assert_ne!(esme[0].command_status, 0);
}

/// A submit_sm with a UDH concatenation header (IEI 0x00): part `seq_no` of `total`, ref 7.
fn part(seq: u32, seq_no: u8, total: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.push(0);
    body.extend_from_slice(&[0, 1]);
    body.extend_from_slice(b"1069000\0");
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(b"8613800000001\0");
    body.extend_from_slice(&[0x40, 0, 0]); // esm_class UDHI
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let sm = [&[5u8, 0, 3, 7, total, seq_no][..], b"part"].concat();
    body.push(sm.len() as u8);
    body.extend_from_slice(&sm);
    pdu(cmd::SUBMIT_SM, 0, seq, &body)
}

#[test]
fn a_concatenated_message_is_one_decision() {
    let mut s = session();
    // (the test window is 2)
    let smsc = from_esme(&mut s, &[part(1, 1, 2), part(2, 2, 2)].concat());
    assert_eq!(smsc.len(), 2, "every part relayed");
    let counted: u64 = s.stats.verdicts.iter().flatten().sum();
    assert_eq!((s.stats.decisions, counted), (1, 1), "the later part reuses the first part's decision");
}

#[test]
fn losing_a_leg_while_closing_unbinds_the_other_again_and_ends_on_its_answer() {
    let mut s = session();
    s.begin_drain("shutdown");
    s.progress(); // nothing in flight: closing, unbind sent both ways
    let first = take(&mut s.esme.out);
    assert_eq!(first[0].command_id, cmd::UNBIND);
    take(&mut s.smsc.out);
    s.smsc_gone("smsc closed the connection");
    let again = take(&mut s.esme.out);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].command_id, cmd::UNBIND, "the earlier unbind was dropped with the SMSC leg");
    from_esme(&mut s, &pdu(cmd::UNBIND_RESP, 0, again[0].sequence_number, b""));
    assert!(s.is_done(), "answered: no wait for the close deadline");
    assert_eq!(s.close_reason(), "smsc closed the connection");
}

/// Part `seq_no` of `total` (ref 7) with `text` (ASCII, GSM 7-bit coded as one byte each).
fn part_text(seq: u32, seq_no: u8, total: u8, text: &str) -> Vec<u8> {
    let mut p = part(seq, seq_no, total);
    let sm = [&[5u8, 0, 3, 7, total, seq_no][..], text.as_bytes()].concat();
    p.truncate(p.len() - 11);
    p.push(sm.len() as u8);
    p.extend_from_slice(&sm);
    let len = p.len() as u32;
    p[..4].copy_from_slice(&len.to_be_bytes());
    p
}

const HOLDING: &str = r#"reassembly_timeout = "2s"
[[policy.content_rule]]
name = "gambling"
literals = ["casino"]
action = "reject"
"#;

fn holding_session() -> Session {
    let cfg = CONFIG
        .replace("on_snapshot_unavailable = \"allow\"\n", &format!("on_snapshot_unavailable = \"allow\"\n{HOLDING}"));
    session_on(&cfg)
}

#[test]
fn held_parts_are_decided_once_on_the_whole_text() {
    let mut s = holding_session();
    // "casino" straddles the parts; part 2 comes first.
    assert!(from_esme(&mut s, &part_text(1, 2, 2, "ino tonight")).is_empty(), "held");
    assert!(take(&mut s.esme.out).is_empty(), "not answered yet");
    assert!(from_esme(&mut s, &part_text(2, 1, 2, "big cas")).is_empty(), "refused: nothing relayed");
    let esme = take(&mut s.esme.out);
    let answered: Vec<_> = esme.iter().map(|h| (h.sequence_number, h.command_status)).collect();
    assert_eq!(answered, [(1, 0x406), (2, 0x406)], "both parts, in arrival order, content_blocked");
    assert_eq!(s.stats.decisions, 1);
    // Allowed text: both parts relayed in arrival order once the last comes.
    assert!(from_esme(&mut s, &part_text(3, 2, 2, "world")).is_empty());
    let smsc = from_esme(&mut s, &part_text(4, 1, 2, "hello "));
    assert_eq!(smsc.len(), 2);
    assert_eq!(s.stats.decisions, 2);
    let seqs: Vec<_> = smsc.iter().map(|h| h.sequence_number).collect();
    let esme = from_smsc(
        &mut s,
        &[pdu(cmd::SUBMIT_SM_RESP, 0, seqs[0], b"a\0"), pdu(cmd::SUBMIT_SM_RESP, 0, seqs[1], b"b\0")].concat(),
    );
    assert_eq!(esme.iter().map(|h| h.sequence_number).collect::<Vec<_>>(), [3, 4]);
}

#[test]
fn an_incomplete_message_is_decided_at_the_timeout_and_late_parts_follow() {
    let mut s = holding_session();
    assert!(from_esme(&mut s, &part_text(1, 1, 3, "hello")).is_empty());
    s.set_clock(1_900_000);
    s.on_tick();
    assert!(take(&mut s.smsc.out).is_empty(), "still waiting");
    s.set_clock(2_000_000);
    s.on_tick();
    assert_eq!(take(&mut s.smsc.out).len(), 1, "decided on what came, relayed");
    let smsc = from_esme(&mut s, &part_text(2, 2, 3, "casino"));
    assert_eq!(smsc.len(), 1, "a late part takes the verdict made: not held, not re-decided");
    assert_eq!(s.stats.decisions, 1);
}

#[test]
fn held_parts_are_answered_when_the_smsc_goes_and_released_when_draining() {
    let mut s = holding_session();
    from_esme(&mut s, &part_text(1, 1, 2, "hello"));
    s.smsc_gone("test");
    let esme = take(&mut s.esme.out);
    assert!(esme.iter().any(|h| h.sequence_number == 1 && h.command_status == status::ESME_RSYSERR), "{esme:?}");
    let mut d = holding_session();
    from_esme(&mut d, &part_text(5, 1, 2, "hello"));
    d.begin_drain("shutdown");
    assert_eq!(take(&mut d.smsc.out).len(), 1, "no more parts will come: decided and relayed");
}

#[test]
fn holding_is_only_for_engines_that_read_text() {
    let mut s = session();
    assert_eq!(from_esme(&mut s, &part_text(1, 1, 2, "hello")).len(), 1, "relayed at once");
}
