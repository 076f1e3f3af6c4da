//! Consent enforcement end to end over real TCP on loopback: the gateway (with a consent
//! store the test owns), the SMSC simulator behind it and raw ESMEs in front.
//! Spec references are SMPP v3.4 (Issue 1.2); statuses are architecture §3 defaults.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use consentgate::config::Config;
use consentgate::consent::snapshot::{build, BuildOptions, Snapshot, SnapshotBuilder};
use consentgate::consent::statement::{EntityName, NewStatement, StatementKind, StatementSource};
use consentgate::consent::store::ConsentStore;
use consentgate::gateway::Control;
use consentgate::sim::SimHandle;
use consentgate::smpp::pdu::SubmitBuilder;
use consentgate::smpp::{self, cmd, peek};
use consentgate::Gateway;
use tokio::sync::{mpsc, oneshot};

/// Grant for acme-retail.
const A: &str = "8613800000001";
/// No statement at all.
const B: &str = "8613800000002";
/// Grant, then revoke.
const C: &str = "8613800000003";
/// On the do-not-call registry.
const D: &str = "8613800000004";
/// Grant, then DNC.
const E: &str = "8613800000005";
/// DNC, then grant.
const F: &str = "8613800000006";
/// Granted; opts out by MO 退订.
const G: &str = "8613800000007";
/// Granted; opts out by MO STOP.
const H: &str = "8613800000008";

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, Unix ms
const DAY: i64 = 86_400_000;

fn n(s: &str) -> u64 {
    s.parse().unwrap()
}

/// The snapshot every test starts from, built in memory.
fn base_snapshot() -> Snapshot {
    let mut b = SnapshotBuilder::new();
    let e = "acme-retail";
    b.add_statement(n(A), e, StatementKind::Grant, T0).unwrap();
    b.add_statement(n(C), e, StatementKind::Grant, T0).unwrap();
    b.add_statement(n(C), e, StatementKind::Revoke, T0 + DAY).unwrap();
    b.add_dnc(n(D), T0).unwrap();
    b.add_statement(n(E), e, StatementKind::Grant, T0).unwrap();
    b.add_dnc(n(E), T0 + DAY).unwrap();
    b.add_dnc(n(F), T0).unwrap();
    b.add_statement(n(F), e, StatementKind::Grant, T0 + DAY).unwrap();
    b.add_statement(n(G), e, StatementKind::Grant, T0).unwrap();
    b.add_statement(n(H), e, StatementKind::Grant, T0).unwrap();
    b.into_snapshot().expect("snapshot")
}

/// The same content as CSV files, built to `dir/consent.snap` by the real file builder.
fn build_snapshot_file(dir: &Path) -> PathBuf {
    let dnc = dir.join("dnc.csv");
    let consent = dir.join("consent.csv");
    std::fs::write(&dnc, format!("msisdn,registered_at\n{D},2026-01-01\n{E},2026-01-02\n{F},2026-01-01\n")).unwrap();
    std::fs::write(
        &consent,
        format!(
            "msisdn,entity,action,at\n{A},acme-retail,grant,2026-01-01\n{C},acme-retail,grant,2026-01-01\n\
             {C},acme-retail,revoke,2026-01-02\n{E},acme-retail,grant,2026-01-01\n{F},acme-retail,grant,2026-01-02\n\
             {G},acme-retail,grant,2026-01-01\n{H},acme-retail,grant,2026-01-01\n"
        ),
    )
    .unwrap();
    let out = dir.join("consent.snap");
    build(&BuildOptions { dnc: Some(dnc), consent: Some(consent), out: out.clone(), ..Default::default() }, |_| {})
        .expect("build snapshot file");
    out
}

fn gw_config(upstream: SocketAddr, policy: &str, consent: &str) -> Config {
    Config::parse(&common::consent_conf("127.0.0.1:0".parse().unwrap(), upstream, policy, consent).text())
        .expect("gateway config")
}

/// Simulator + gateway running on a store the test keeps.
struct Stack {
    sim: SimHandle,
    addr: SocketAddr,
    store: Arc<ConsentStore>,
    control: mpsc::Sender<Control>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Stack {
    /// `make_store` receives the parsed config (for `[consent]`).
    async fn start(policy: &str, consent: &str, make_store: impl FnOnce(&Config) -> ConsentStore) -> Stack {
        let sim = consentgate::sim::start(sim_cfg()).await.expect("sim");
        let cfg = gw_config(sim.local_addr, policy, consent);
        let store = Arc::new(make_store(&cfg));
        let g = Gateway::bind_with_store(cfg, store.clone()).await.expect("bind gateway");
        let addr = g.local_addr();
        let control = g.control();
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(g.serve(async {
            let _ = rx.await;
        }));
        Stack { sim, addr, store, control, stop, task }
    }

    /// In-memory store with the base snapshot installed.
    async fn in_memory(policy: &str) -> Stack {
        Stack::start(policy, "", |_| {
            let s = ConsentStore::in_memory();
            s.install(base_snapshot(), "<memory>".into());
            s
        })
        .await
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task).await.expect("gateway stops").unwrap().unwrap();
    }

    fn generation(&self) -> u64 {
        self.store.current().as_ref().expect("a snapshot is loaded").generation
    }
}

/// Sends one submit_sm and returns the status of its submit_sm_resp.
async fn status_of(e: &mut Esme, b: &SubmitBuilder) -> u32 {
    let seq = e.submit(b).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
    smpp::command_status(&r)
}

/// Destinations of the submit_sm the simulator received, in arrival order.
fn forwarded(sim: &SimHandle) -> Vec<String> {
    sim.recorded()
        .iter()
        .filter(|(_, f)| smpp::command_id(f) == cmd::SUBMIT_SM)
        .map(|(_, f)| String::from_utf8_lossy(peek::message(f).unwrap().destination.addr).into_owned())
        .collect()
}

fn api_statement(msisdn: &str, kind: StatementKind, at: i64) -> NewStatement {
    NewStatement {
        at,
        kind,
        source: StatementSource::Api,
        msisdn: n(msisdn),
        entity: kind.has_entity().then(|| EntityName::parse("acme-retail").unwrap()),
    }
}

/// Now, Unix ms.
fn unix_now() -> i64 {
    consentgate::time::Clock::system().now().unix_ms
}

// ---------------------------------------------------------------------------------------------
// 1–3: the verdict table
// ---------------------------------------------------------------------------------------------

/// architecture §3, opt-in enforce: latest statement wins, DNC beats an older grant, rejected
/// messages never reach the SMSC.
#[tokio::test]
async fn opt_in_enforce_verdict_table() {
    let s = Stack::in_memory("regime = \"opt-in\"\nmode = \"enforce\"").await;
    let mut acme = Esme::bound(s.addr, "acme").await;
    for (dest, want) in [(A, 0), (B, 0x400), (C, 0x401), (D, 0x402), (E, 0x402), (F, 0)] {
        assert_eq!(status_of(&mut acme, &submit_to(dest)).await, want, "acme → {dest}");
    }
    assert_eq!(forwarded(&s.sim), vec![A, F], "only the accepted messages reached the SMSC");

    // Sender id outside the account's patterns (checked before consent).
    assert_eq!(status_of(&mut acme, &SubmitBuilder::new("999", A).short_message(b"x")).await, 0x0A);
    // Alphanumeric destination: nobody can have consented.
    assert_eq!(status_of(&mut acme, &submit_to("ACME").dest_ton_npi(5, 0)).await, 0x400);
    assert_eq!(forwarded(&s.sim).len(), 2, "neither reached the SMSC");

    // A transactional account is not subject to consent.
    let mut bank = Esme::bound(s.addr, "bank").await;
    assert_eq!(status_of(&mut bank, &submit_to(B)).await, 0);
    assert_eq!(status_of(&mut bank, &submit_to(D)).await, 0);

    // Per-source-address class override: 106900* is transactional for "promo".
    let mut promo = Esme::bound(s.addr, "promo").await;
    assert_eq!(status_of(&mut promo, &SubmitBuilder::new("1069001234", B).short_message(b"otp 1234")).await, 0);
    assert_eq!(status_of(&mut promo, &submit_to(B)).await, 0x400, "marketing source → consent applies");
    assert_eq!(forwarded(&s.sim), vec![A, F, B, D, B]);
    s.shutdown().await;
}

#[tokio::test]
async fn opt_out_regime() {
    let s = Stack::in_memory("regime = \"opt-out\"").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    for (dest, want) in [(A, 0), (B, 0), (C, 0x401), (D, 0x402), (E, 0x402), (F, 0)] {
        assert_eq!(status_of(&mut e, &submit_to(dest)).await, want, "opt-out → {dest}");
    }
    // Not a subscriber number: under opt-out nobody can have refused.
    assert_eq!(status_of(&mut e, &submit_to("ACME").dest_ton_npi(5, 0)).await, 0);
    assert_eq!(forwarded(&s.sim), vec![A, B, F, "ACME"]);
    s.shutdown().await;
}

#[tokio::test]
async fn monitor_mode_forwards_everything() {
    let s = Stack::in_memory("regime = \"opt-in\"\nmode = \"monitor\"").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    for dest in [A, B, C, D, E, F] {
        assert_eq!(status_of(&mut e, &submit_to(dest)).await, 0, "monitor forwards {dest}");
    }
    assert_eq!(status_of(&mut e, &SubmitBuilder::new("999", A).short_message(b"x")).await, 0, "sender id");
    assert_eq!(status_of(&mut e, &submit_to("ACME").dest_ton_npi(5, 0)).await, 0, "alphanumeric");
    assert_eq!(forwarded(&s.sim), vec![A, B, C, D, E, F, A, "ACME"]);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4–5: live statements
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn live_statements_latest_wins() {
    let s = Stack::in_memory("").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    let t = unix_now();
    assert_eq!(status_of(&mut e, &submit_to(B)).await, 0x400);
    s.store.record(api_statement(B, StatementKind::Grant, t)).unwrap();
    assert_eq!(status_of(&mut e, &submit_to(B)).await, 0, "after grant");
    s.store.record(api_statement(B, StatementKind::Revoke, t + 1)).unwrap();
    assert_eq!(status_of(&mut e, &submit_to(B)).await, 0x401, "after revoke");
    s.store.record(api_statement(B, StatementKind::Grant, t + 2)).unwrap();
    assert_eq!(status_of(&mut e, &submit_to(B)).await, 0, "after grant again");
    // A live grant also overrides an older snapshot revoke / DNC.
    s.store.record(api_statement(C, StatementKind::Grant, t)).unwrap();
    assert_eq!(status_of(&mut e, &submit_to(C)).await, 0);
    s.store.record(api_statement(D, StatementKind::Grant, t)).unwrap();
    assert_eq!(status_of(&mut e, &submit_to(D)).await, 0);
    s.shutdown().await;
}

/// One part of a 3-part concatenated message (UDH IEI 0x00, 8-bit reference; esm_class UDHI).
fn part(dest: &str, reference: u8, seq: u8) -> SubmitBuilder {
    let mut sm = vec![0x05, 0x00, 0x03, reference, 3, seq];
    sm.extend_from_slice(b"one part of a long marketing text");
    submit_to(dest).esm_class(0x40).short_message(&sm)
}

#[tokio::test]
async fn concatenated_message_gets_one_verdict() {
    let s = Stack::in_memory("").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    for seq in [2, 3, 1] {
        assert_eq!(status_of(&mut e, &part(B, 0x21, seq)).await, 0x400, "part {seq} to B");
    }
    assert_eq!(status_of(&mut e, &part(A, 0x22, 1)).await, 0, "part 1 to A");
    s.store.record(api_statement(A, StatementKind::Revoke, unix_now())).unwrap();
    assert_eq!(status_of(&mut e, &part(A, 0x22, 2)).await, 0, "part 2 keeps the message's verdict");
    assert_eq!(status_of(&mut e, &part(A, 0x22, 3)).await, 0, "part 3 keeps the message's verdict");
    assert_eq!(status_of(&mut e, &submit_to(A)).await, 0x401, "a new message sees the revocation");
    assert_eq!(forwarded(&s.sim), vec![A, A, A]);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6: submit_multi
// ---------------------------------------------------------------------------------------------

/// v3.4 §4.5.1 submit_multi with SME destinations (dest_flag 1, TON 1, NPI 1).
fn submit_multi(seq: u32, dests: &[&str]) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b.push(0); // service_type ""
    b.extend_from_slice(&[0, 1]); // source_addr_ton, source_addr_npi
    b.extend_from_slice(b"1069012345\0");
    b.push(dests.len() as u8); // number_of_dests
    for d in dests {
        b.extend_from_slice(&[1, 1, 1]); // dest_flag SME, ton, npi
        b.extend_from_slice(d.as_bytes());
        b.push(0);
    }
    b.push(0); // esm_class
    b.push(0); // protocol_id
    b.push(0); // priority_flag
    b.push(0); // schedule_delivery_time ""
    b.push(0); // validity_period ""
    b.push(0); // registered_delivery
    b.push(0); // replace_if_present_flag
    b.push(0); // data_coding
    b.push(0); // sm_default_msg_id
    let sm = b"multi hello";
    b.push(sm.len() as u8);
    b.extend_from_slice(sm);
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_be_bytes());
    b[4..8].copy_from_slice(&cmd::SUBMIT_MULTI.to_be_bytes());
    b[12..16].copy_from_slice(&seq.to_be_bytes());
    b
}

/// submit_multi_resp: (status, message_id, no_unsuccess, [(ton, npi, addr, error)]).
/// One unsuccess_sme entry: (ton, npi, address, error_status_code).
type Unsuccess = (u8, u8, String, u32);

fn parse_multi_resp(f: &[u8]) -> (u32, String, u8, Vec<Unsuccess>) {
    let body = &f[16..];
    let z = body.iter().position(|&c| c == 0).expect("message_id");
    let id = String::from_utf8_lossy(&body[..z]).into_owned();
    let count = body[z + 1];
    let mut at = z + 2;
    let mut v = Vec::new();
    for _ in 0..count {
        let (ton, npi) = (body[at], body[at + 1]);
        at += 2;
        let e = body[at..].iter().position(|&c| c == 0).expect("address");
        let addr = String::from_utf8_lossy(&body[at..at + e]).into_owned();
        at += e + 1;
        v.push((ton, npi, addr, u32::from_be_bytes(body[at..at + 4].try_into().unwrap())));
        at += 4;
    }
    assert_eq!(at, body.len(), "no trailing bytes in submit_multi_resp");
    (smpp::command_status(f), id, count, v)
}

fn multi_dests(f: &[u8]) -> Vec<String> {
    let mv = peek::multi(f).expect("valid submit_multi");
    mv.destinations()
        .map(|(d, _)| match d {
            peek::MultiDest::Sme(a) => String::from_utf8_lossy(a.addr).into_owned(),
            peek::MultiDest::List(l) => format!("list:{}", String::from_utf8_lossy(l)),
        })
        .collect()
}

#[tokio::test]
async fn submit_multi_split_by_destination() {
    let s = Stack::in_memory("").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    let seq = e.seq();
    e.send(&submit_multi(seq, &[A, B, D])).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_MULTI_RESP).await;
    assert_eq!(smpp::sequence(&r), seq);
    let (st, id, count, fails) = parse_multi_resp(&r);
    assert_eq!(st, 0, "the SMSC accepted the rest");
    assert!(!id.is_empty(), "SMSC message_id relayed");
    assert_eq!(count, 2);
    assert_eq!(fails, vec![(1, 1, B.to_owned(), 0x400), (1, 1, D.to_owned(), 0x402)]);
    let up: Vec<_> = s
        .sim
        .recorded()
        .into_iter()
        .filter(|(_, f)| smpp::command_id(f) == cmd::SUBMIT_MULTI)
        .map(|(_, f)| f)
        .collect();
    assert_eq!(up.len(), 1);
    assert_eq!(multi_dests(&up[0]), vec![A], "only the allowed destination forwarded");
    assert_eq!(peek::multi(&up[0]).unwrap().short_message, b"multi hello");

    // All three rejected: answered here, nothing forwarded.
    let seq = e.seq();
    e.send(&submit_multi(seq, &[B, C, D])).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_MULTI_RESP).await;
    assert_eq!(smpp::sequence(&r), seq);
    let (st, id, count, fails) = parse_multi_resp(&r);
    assert_ne!(st, 0, "nothing accepted");
    assert!(id.is_empty());
    assert_eq!(count, 3);
    assert_eq!(fails, vec![(1, 1, B.to_owned(), 0x400), (1, 1, C.to_owned(), 0x401), (1, 1, D.to_owned(), 0x402)]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.sim.recorded().iter().filter(|(_, f)| smpp::command_id(f) == cmd::SUBMIT_MULTI).count(), 1);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 7: MO opt-out capture
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mo_optout_revokes_and_is_journalled_before_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let consent = format!("journal = \"{}\"", journal.display());
    let s = Stack::start("", &consent, |cfg| {
        let st = ConsentStore::open(&cfg.consent).expect("store with journal");
        st.install(base_snapshot(), "<memory>".into());
        st
    })
    .await;
    let mut e = Esme::bound(s.addr, "acme").await;
    assert!(eventually(|| s.sim.sessions() == 1).await);
    let tuiding: Vec<u8> = "退订".encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    for (who, dc, text) in [(G, 8u8, tuiding.as_slice()), (H, 0, b"STOP".as_slice())] {
        assert_eq!(status_of(&mut e, &submit_to(who)).await, 0, "{who} granted before");
        let before = s.sim.stats.resps_received.load(Ordering::Relaxed);
        assert!(s.sim.inject_mo(Some("acme"), who, "1069012345", dc, text));
        let mo = e.recv_where(|f| smpp::command_id(f) == cmd::DELIVER_SM).await;
        let v = peek::message(&mo).unwrap();
        assert_eq!(v.source.addr, who.as_bytes());
        assert_eq!(v.short_message, text, "MO relayed unchanged");
        e.send_header(cmd::DELIVER_SM_RESP, 0, smpp::sequence(&mo)).await;
        assert_eq!(status_of(&mut e, &submit_to(who)).await, 0x401, "{who} revoked by MO");
        assert!(
            eventually(|| s.sim.stats.resps_received.load(Ordering::Relaxed) > before).await,
            "deliver_sm_resp reached the SMSC"
        );
        // The resp is released only once durable: the revocation is in the journal now.
        let on_disk = consentgate::consent::journal::read_dir(&journal).expect("read journal");
        assert!(
            on_disk.iter().any(|st| st.msisdn == n(who)
                && st.kind == StatementKind::Revoke
                && st.source == StatementSource::Mo
                && st.entity.as_deref() == Some("acme-retail")),
            "{who}: revocation journalled: {on_disk:?}"
        );
    }
    // The other subscribers are untouched.
    assert_eq!(status_of(&mut e, &submit_to(A)).await, 0);
    s.shutdown().await;
}

/// `policy.opt_in_keywords` (the US START / UNSTOP / YES): a subscriber who replied STOP and
/// then START is granted again for the account's entity, the grant journalled from the MO
/// like the opt-out; HELP is neither and passes untouched; every MO still reaches the ESME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mo_opt_in_keyword_re_grants_and_help_passes() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let consent = format!("journal = \"{}\"", journal.display());
    let s = Stack::start("opt_in_keywords = [\"START\", \"UNSTOP\", \"YES\"]", &consent, |cfg| {
        let st = ConsentStore::open(&cfg.consent).expect("store with journal");
        st.install(base_snapshot(), "<memory>".into());
        st
    })
    .await;
    let mut e = Esme::bound(s.addr, "acme").await;
    assert!(eventually(|| s.sim.sessions() == 1).await);
    assert_eq!(status_of(&mut e, &submit_to(H)).await, 0, "granted before");
    for (text, expect) in [(&b"STOP"[..], 0x401), (b"HELP", 0x401), (b" start ", 0), (b"HELP", 0)] {
        // Statements are ordered by time (ms): one MO per millisecond at most.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(s.sim.inject_mo(Some("acme"), H, "1069012345", 0, text));
        let mo = e.recv_where(|f| smpp::command_id(f) == cmd::DELIVER_SM).await;
        assert_eq!(peek::message(&mo).unwrap().short_message, text, "MO relayed unchanged");
        e.send_header(cmd::DELIVER_SM_RESP, 0, smpp::sequence(&mo)).await;
        let word = String::from_utf8_lossy(text);
        assert_eq!(status_of(&mut e, &submit_to(H)).await, expect, "after {word:?}");
    }
    let on_disk = consentgate::consent::journal::read_dir(&journal).expect("read journal");
    let from_mo: Vec<StatementKind> =
        on_disk.iter().filter(|st| st.source == StatementSource::Mo).map(|st| st.kind).collect();
    assert_eq!(from_mo, [StatementKind::Revoke, StatementKind::Grant], "{on_disk:?}");
    assert!(on_disk.iter().all(|st| st.entity.as_deref() == Some("acme-retail")));
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 8: reload under load; a bad file is refused
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_while_load_runs_then_corrupt_snapshot_refused() {
    use consentgate::load::{LoadConfig, ScenarioLine};
    let dir = tempfile::tempdir().unwrap();
    let snap = build_snapshot_file(dir.path());
    let consent = format!("snapshot = \"{}\"", snap.display());
    let s = Stack::start("", &consent, |cfg| ConsentStore::open(&cfg.consent).expect("store")).await;
    let gen0 = s.generation();
    let line = |dest: &str, expect: &str| ScenarioLine {
        source: "1069012345".into(),
        destination: dest.into(),
        text: "sale this weekend".into(),
        encoding: Default::default(),
        expect: Some(expect.into()),
        tlvs: Default::default(),
    };
    let load = tokio::spawn(consentgate::load::run(LoadConfig {
        target: s.addr,
        system_id: "acme".into(),
        password: "pw".into(),
        sessions: 2,
        window: 50,
        count: 20_000,
        duration: Duration::from_secs(60),
        scenario: Some(vec![line(A, "ok"), line(B, "0x400"), line(D, "0x402")]),
        ..Default::default()
    }));
    let mut reloads = 0;
    while !load.is_finished() && reloads < 5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A new file with the same content, swapped in by rename.
        build_snapshot_file(dir.path());
        s.control.send(Control::Reload).await.unwrap();
        reloads += 1;
    }
    let r = load.await.unwrap().expect("load run");
    assert_eq!(r.unanswered, 0, "{r:?}");
    assert_eq!(r.expect_mismatches, 0, "{r:?}");
    assert!(r.responses >= 20_000, "{r:?}");
    assert!(eventually(|| s.generation() > gen0).await, "reloads were applied");
    tokio::time::sleep(Duration::from_millis(200)).await; // let queued reloads finish
    let gen = s.generation();

    // Corrupt files, rewritten in place (as `cp` does): one byte flipped in the middle, the
    // file truncated to half, and not a snapshot at all. Each is refused, and the serving
    // snapshot — which an in-place rewrite must not touch — keeps its verdicts.
    let good = std::fs::read(&snap).unwrap();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    let mut e = Esme::bound(s.addr, "acme").await;
    for bad in [flipped, good[..good.len() / 2].to_vec(), b"not a snapshot".to_vec()] {
        std::fs::write(&snap, &bad).unwrap();
        assert!(s.store.reload().is_err(), "corrupt snapshot refused");
        s.control.send(Control::Reload).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(s.generation(), gen, "old snapshot still current");
        for (dest, want) in [(A, 0), (B, 0x400), (C, 0x401), (D, 0x402), (E, 0x402), (F, 0)] {
            assert_eq!(status_of(&mut e, &submit_to(dest)).await, want, "after refused reload → {dest}");
        }
    }
    std::fs::write(&snap, &good).unwrap();
    assert!(s.store.reload().is_ok(), "the good file loads again");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 9: the journal survives kill -9 of the real binary
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journalled_optout_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let snap = build_snapshot_file(dir.path());
    let sim = consentgate::sim::start(sim_cfg()).await.expect("sim");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let conf = dir.path().join("gateway.toml");
    let consent = format!("snapshot = \"{}\"\njournal = \"{}\"", snap.display(), dir.path().join("journal").display());
    common::consent_conf(addr, sim.local_addr, "", &consent).write(&conf);
    let spawn = || spawn_gateway(&conf);
    let wait_listening = || async move {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway did not start listening on {addr}");
    };

    let mut child = common::Kill(spawn());
    wait_listening().await;
    let mut e = Esme::bound(addr, "acme").await;
    assert_eq!(status_of(&mut e, &submit_to(G)).await, 0, "granted before");
    assert!(eventually(|| sim.sessions() == 1).await);
    let before = sim.stats.resps_received.load(Ordering::Relaxed);
    assert!(sim.inject_mo(Some("acme"), G, "1069012345", 0, b"TD"));
    let mo = e.recv_where(|f| smpp::command_id(f) == cmd::DELIVER_SM).await;
    e.send_header(cmd::DELIVER_SM_RESP, 0, smpp::sequence(&mo)).await;
    // The resp is released to the SMSC only after the fsync.
    assert!(
        eventually(|| sim.stats.resps_received.load(Ordering::Relaxed) > before).await,
        "deliver_sm_resp reached the SMSC"
    );
    child.0.kill().expect("SIGKILL");
    child.0.wait().unwrap();
    drop(e);

    child.0 = spawn();
    wait_listening().await;
    let mut e = Esme::bound(addr, "acme").await;
    assert_eq!(status_of(&mut e, &submit_to(G)).await, 0x401, "revocation replayed from the journal");
    assert_eq!(status_of(&mut e, &submit_to(A)).await, 0, "others unaffected");
    drop(child);
}
