//! The consent engine end to end over real TCP: gateway with a snapshot built from CSVs by the
//! real builder, the SMSC simulator behind it, raw ESMEs in front.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use consentgate::config::Config;
use consentgate::consent::journal::{Statement, StatementKind, StatementSource};
use consentgate::consent::snapshot::{build, BuildOptions};
use consentgate::consent::store::ConsentStore;
use consentgate::gateway::Control;
use consentgate::sim::SimConfig;
use consentgate::smpp::pdu::SubmitBuilder;
use consentgate::smpp::{self, cmd};
use consentgate::Gateway;
use tokio::sync::oneshot;

const GRANTED: &str = "8613800000001";
const NOTHING: &str = "8613800000002";
const REVOKED: &str = "8613800000003";
const DNC: &str = "8613800000004";
const DNC_AFTER_GRANT: &str = "8613800000005";
const GRANT_AFTER_DNC: &str = "8613800000006";

/// Writes the sample CSVs and builds `dir/consent.snap` with the real builder.
fn snapshot(dir: &Path) -> PathBuf {
    let dnc = dir.join("dnc.csv");
    let consent = dir.join("consent.csv");
    std::fs::write(
        &dnc,
        format!("msisdn,registered_at\n{DNC},2026-01-01\n{DNC_AFTER_GRANT},2026-06-01\n{GRANT_AFTER_DNC},2026-01-01\n"),
    )
    .unwrap();
    std::fs::write(
        &consent,
        format!(
            "msisdn,entity,action,at\n{GRANTED},acme-retail,grant,2026-02-01\n{REVOKED},acme-retail,grant,2026-02-01\n\
             {REVOKED},acme-retail,revoke,2026-03-01T10:00:00+08:00\n{DNC_AFTER_GRANT},acme-retail,grant,2026-02-01\n\
             {GRANT_AFTER_DNC},acme-retail,grant,2026-02-01\n8613800000009,other-brand,grant,2026-02-01\n"
        ),
    )
    .unwrap();
    let out = dir.join("consent.snap");
    build(&BuildOptions { dnc: Some(dnc), consent: Some(consent), out: out.clone(), ..Default::default() }, |_| {})
        .expect("build snapshot");
    out
}

fn cfg(upstream: std::net::SocketAddr, policy: &str, consent: &str) -> Config {
    Config::parse(&format!(
        r#"
[listen]
smpp = "127.0.0.1:0"
[upstream]
address = "{upstream}"
[policy]
{policy}
[consent]
{consent}
[[account]]
system_id = "acme"
entity = "acme-retail"
class = "marketing"
licence = "B2-1"
sender_id = ["1069*"]
[[account]]
system_id = "bank"
class = "transactional"
licence = "B2-2"
"#
    ))
    .expect("config")
}

struct Stack {
    sim: consentgate::sim::SimHandle,
    addr: std::net::SocketAddr,
    store: Arc<ConsentStore>,
    control: tokio::sync::mpsc::Sender<Control>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
    snap: PathBuf,
}

async fn start(policy: &str) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot(dir.path());
    let sim = consentgate::sim::start(SimConfig { record: true, ..Default::default() }).await.unwrap();
    let consent = format!("snapshot = \"{}\"\njournal = \"{}\"", snap.display(), dir.path().join("journal").display());
    let c = cfg(sim.local_addr, policy, &consent);
    let store = Arc::new(ConsentStore::open(&c.consent).unwrap());
    let g = Gateway::bind_with_store(c, store.clone()).await.unwrap();
    let addr = g.local_addr();
    let control = g.control();
    let (stop, rx) = oneshot::channel();
    let task = tokio::spawn(g.serve(async {
        let _ = rx.await;
    }));
    Stack { sim, addr, store, control, stop, task, _dir: dir, snap }
}

impl Stack {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(20), self.task).await;
    }
}

/// Sends one submit and returns its status.
async fn status_of(e: &mut Esme, b: &SubmitBuilder) -> u32 {
    let seq = e.submit(b).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
    smpp::command_status(&r)
}

fn forwarded_to(sim: &consentgate::sim::SimHandle) -> Vec<String> {
    sim.recorded()
        .iter()
        .filter(|(_, f)| smpp::command_id(f) == cmd::SUBMIT_SM)
        .map(|(_, f)| {
            String::from_utf8_lossy(consentgate::smpp::peek::message(f).unwrap().destination.addr).into_owned()
        })
        .collect()
}

/// DESIGN §3: opt-in verdict table; rejected messages never reach the SMSC.
#[tokio::test]
async fn opt_in_verdicts_through_the_gateway() {
    let s = start("regime = \"opt-in\"").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    for (dest, want) in [
        (GRANTED, 0),
        (NOTHING, 0x400),
        (REVOKED, 0x401),
        (DNC, 0x402),
        (DNC_AFTER_GRANT, 0x402),
        (GRANT_AFTER_DNC, 0),
        ("8613800000009", 0x400), // consent for another brand only
    ] {
        assert_eq!(status_of(&mut e, &submit_to(dest)).await, want, "{dest}");
    }
    // National number (TON 2) normalised with the default country code.
    assert_eq!(status_of(&mut e, &submit_to("13800000001").dest_ton_npi(2, 1)).await, 0);
    // Sender id outside the account's patterns.
    assert_eq!(status_of(&mut e, &SubmitBuilder::new("999", GRANTED).short_message(b"x")).await, 0x0A);
    // Alphanumeric destination: nobody can have consented.
    assert_eq!(status_of(&mut e, &submit_to("ACME").dest_ton_npi(5, 0)).await, 0x400);
    assert_eq!(forwarded_to(&s.sim), vec![GRANTED, GRANT_AFTER_DNC, "13800000001"]);
    // A transactional account is not subject to consent.
    let mut b = Esme::bound(s.addr, "bank").await;
    assert_eq!(status_of(&mut b, &submit_to(NOTHING)).await, 0);
    assert_eq!(status_of(&mut b, &submit_to(DNC)).await, 0);
    s.shutdown().await;
}

#[tokio::test]
async fn opt_out_regime_and_monitor_mode() {
    let s = start("regime = \"opt-out\"").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    for (dest, want) in [(GRANTED, 0), (NOTHING, 0), (REVOKED, 0x401), (DNC, 0x402), (GRANT_AFTER_DNC, 0)] {
        assert_eq!(status_of(&mut e, &submit_to(dest)).await, want, "{dest}");
    }
    s.shutdown().await;

    let s = start("mode = \"monitor\"").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    for dest in [GRANTED, NOTHING, REVOKED, DNC] {
        assert_eq!(status_of(&mut e, &submit_to(dest)).await, 0, "monitor forwards {dest}");
    }
    assert_eq!(forwarded_to(&s.sim).len(), 4);
    s.shutdown().await;
}

/// Latest statement wins, live: grant → revoke → grant, and a DNC after the grant.
#[tokio::test]
async fn live_statements_latest_wins() {
    let s = start("").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    let m: u64 = NOTHING.parse().unwrap();
    let st = |kind, at, entity: Option<&str>| Statement {
        seq: 0,
        at,
        kind,
        source: StatementSource::Api,
        msisdn: m,
        entity: entity.map(Into::into),
    };
    assert_eq!(status_of(&mut e, &submit_to(NOTHING)).await, 0x400);
    s.store.record(st(StatementKind::Grant, 1_800_000_000, Some("acme-retail")));
    assert_eq!(status_of(&mut e, &submit_to(NOTHING)).await, 0);
    s.store.record(st(StatementKind::Revoke, 1_800_000_100, Some("acme-retail")));
    assert_eq!(status_of(&mut e, &submit_to(NOTHING)).await, 0x401);
    s.store.record(st(StatementKind::Grant, 1_800_000_200, Some("acme-retail")));
    assert_eq!(status_of(&mut e, &submit_to(NOTHING)).await, 0);
    s.store.record(st(StatementKind::Dnc, 1_800_000_300, None));
    assert_eq!(status_of(&mut e, &submit_to(NOTHING)).await, 0x402);
    s.shutdown().await;
}

fn part(dest: &str, reference: u8, total: u8, seq: u8) -> SubmitBuilder {
    let mut sm = vec![0x05, 0x00, 0x03, reference, total, seq];
    sm.extend_from_slice(b"part of a long marketing text");
    submit_to(dest).esm_class(0x40).short_message(&sm)
}

/// DESIGN §2: every part of one concatenated message gets the verdict of the first to arrive.
#[tokio::test]
async fn concatenated_parts_share_one_verdict() {
    let s = start("").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    for seq in [2, 3, 1] {
        assert_eq!(status_of(&mut e, &part(NOTHING, 7, 3, seq)).await, 0x400);
    }
    // Granted at part 1; revoked before parts 2 and 3 arrive: the message stays whole.
    assert_eq!(status_of(&mut e, &part(GRANTED, 9, 3, 1)).await, 0);
    s.store.record(Statement {
        seq: 0,
        at: 1_900_000_000,
        kind: StatementKind::Revoke,
        source: StatementSource::Api,
        msisdn: GRANTED.parse().unwrap(),
        entity: Some("acme-retail".into()),
    });
    assert_eq!(status_of(&mut e, &part(GRANTED, 9, 3, 2)).await, 0);
    assert_eq!(status_of(&mut e, &part(GRANTED, 9, 3, 3)).await, 0);
    // A new message after the revocation is rejected.
    assert_eq!(status_of(&mut e, &submit_to(GRANTED)).await, 0x401);
    s.shutdown().await;
}

fn submit_multi(seq: u32, dests: &[&str]) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b.extend_from_slice(b"\0"); // service_type
    b.extend_from_slice(&[0, 1]);
    b.extend_from_slice(b"1069012345\0");
    b.push(dests.len() as u8);
    for d in dests {
        b.extend_from_slice(&[1, 1, 1]);
        b.extend_from_slice(d.as_bytes());
        b.push(0);
    }
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0]); // esm..sm_default_msg_id
    b.push(5);
    b.extend_from_slice(b"hello");
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_be_bytes());
    b[4..8].copy_from_slice(&cmd::SUBMIT_MULTI.to_be_bytes());
    b[12..16].copy_from_slice(&seq.to_be_bytes());
    b
}

/// Parses submit_multi_resp: (status, message_id, [(addr, error)]).
fn multi_resp(f: &[u8]) -> (u32, String, Vec<(String, u32)>) {
    let body = &f[16..];
    let n = body.iter().position(|&c| c == 0).unwrap();
    let id = String::from_utf8_lossy(&body[..n]).into_owned();
    let count = body[n + 1];
    let mut at = n + 2;
    let mut v = Vec::new();
    for _ in 0..count {
        at += 2;
        let e = body[at..].iter().position(|&c| c == 0).unwrap();
        let addr = String::from_utf8_lossy(&body[at..at + e]).into_owned();
        at += e + 1;
        v.push((addr, u32::from_be_bytes(body[at..at + 4].try_into().unwrap())));
        at += 4;
    }
    (smpp::command_status(f), id, v)
}

/// v3.4 §4.5: submit_multi is decided per destination.
#[tokio::test]
async fn submit_multi_mixed_verdicts() {
    let s = start("").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    e.send(&submit_multi(50, &[GRANTED, NOTHING, DNC])).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_MULTI_RESP).await;
    assert_eq!(smpp::sequence(&r), 50);
    let (st, id, fails) = multi_resp(&r);
    assert_eq!(st, 0);
    assert!(!id.is_empty(), "SMSC message id kept");
    assert_eq!(fails, vec![(NOTHING.to_owned(), 0x400), (DNC.to_owned(), 0x402)]);
    let fwd: Vec<_> = s.sim.recorded().into_iter().filter(|(_, f)| smpp::command_id(f) == cmd::SUBMIT_MULTI).collect();
    assert_eq!(fwd.len(), 1);
    let mv = consentgate::smpp::peek::multi(&fwd[0].1).unwrap();
    assert_eq!(mv.number_of_dests, 1, "only the granted destination forwarded");
    // None allowed: answered locally.
    e.send(&submit_multi(51, &[NOTHING, REVOKED])).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_MULTI_RESP).await;
    let (st, _, fails) = multi_resp(&r);
    assert_eq!(st, 0x400);
    assert_eq!(fails.len(), 2);
    s.shutdown().await;
}

/// DESIGN §1: an MO 退订 (UCS-2) or STOP (GSM7) revokes; the very next submit is rejected;
/// the MO still reaches the ESME and its deliver_sm_resp reaches the SMSC.
#[tokio::test]
async fn mo_optout_capture_rejects_the_next_submit() {
    let s = start("").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    assert_eq!(status_of(&mut e, &submit_to(GRANTED)).await, 0);
    assert_eq!(status_of(&mut e, &submit_to(GRANT_AFTER_DNC)).await, 0);
    let tuiding: Vec<u8> = "退订".encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    for (who, dc, text) in [(GRANTED, 8u8, tuiding.as_slice()), (GRANT_AFTER_DNC, 0, b"STOP".as_slice())] {
        let before = s.sim.stats.resps_received.load(std::sync::atomic::Ordering::Relaxed);
        assert!(s.sim.inject_mo(Some("acme"), who, "1069012345", dc, text));
        let mo = e.recv_where(|f| smpp::command_id(f) == cmd::DELIVER_SM).await;
        e.send_header(cmd::DELIVER_SM_RESP, 0, smpp::sequence(&mo)).await;
        assert_eq!(status_of(&mut e, &submit_to(who)).await, 0x401, "{who} revoked");
        assert!(
            eventually(|| s.sim.stats.resps_received.load(std::sync::atomic::Ordering::Relaxed) > before).await,
            "deliver_sm_resp released to the SMSC once journalled"
        );
    }
    // A receipt-looking message with the keyword is not an opt-out.
    assert_eq!(status_of(&mut e, &submit_to(GRANTED)).await, 0x401);
    s.shutdown().await;
}

/// A corrupt or truncated snapshot is refused; the old one keeps serving.
#[tokio::test]
async fn bad_snapshot_refused_old_one_keeps_serving() {
    let s = start("").await;
    let mut e = Esme::bound(s.addr, "acme").await;
    let gen = s.store.current().as_ref().unwrap().generation;
    let good = std::fs::read(&s.snap).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 9] ^= 0x5a;
    for broken in [bad, good[..good.len() / 2].to_vec(), b"not a snapshot".to_vec()] {
        std::fs::write(&s.snap, &broken).unwrap();
        assert!(s.store.reload().is_err(), "refused");
        s.control.send(Control::Reload).await.unwrap();
        assert_eq!(status_of(&mut e, &submit_to(GRANTED)).await, 0);
        assert_eq!(status_of(&mut e, &submit_to(DNC)).await, 0x402);
    }
    assert_eq!(s.store.current().as_ref().unwrap().generation, gen, "old snapshot still current");
    std::fs::write(&s.snap, &good).unwrap();
    assert!(s.store.reload().is_ok());
    s.shutdown().await;
}

/// Reload while traffic runs: every submit answered once, none with a wrong verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_while_load_runs() {
    use consentgate::load::{LoadConfig, ScenarioLine};
    let s = start("").await;
    let lines = |dest: &str, expect: &str| ScenarioLine {
        source: "1069012345".into(),
        destination: dest.into(),
        text: "sale".into(),
        encoding: Default::default(),
        expect: Some(expect.into()),
    };
    let load = tokio::spawn(consentgate::load::run(LoadConfig {
        target: s.addr,
        system_id: "acme".into(),
        password: "pw".into(),
        sessions: 2,
        window: 50,
        count: 20_000,
        duration: Duration::from_secs(20),
        scenario: Some(vec![lines(GRANTED, "ok"), lines(NOTHING, "0x400"), lines(DNC, "0x402")]),
        ..Default::default()
    }));
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.control.send(Control::Reload).await.unwrap();
    }
    let r = load.await.unwrap().unwrap();
    assert_eq!(r.unanswered, 0, "{r:?}");
    assert_eq!(r.expect_mismatches, 0, "{r:?}");
    assert!(r.responses >= 20_000);
    assert!(s.store.current().as_ref().unwrap().generation > 1, "reloads happened");
    s.shutdown().await;
}

/// The journal survives kill -9 of the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journalled_optout_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot(dir.path());
    let sim = consentgate::sim::start(SimConfig::default()).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.path().join("gw.toml");
    std::fs::write(
        &conf,
        format!(
            "[listen]\nsmpp = \"127.0.0.1:{port}\"\n[upstream]\naddress = \"{}\"\n[consent]\nsnapshot = \"{}\"\njournal = \"{}\"\n\
             [[account]]\nsystem_id = \"acme\"\nentity = \"acme-retail\"\nclass = \"marketing\"\nlicence = \"B2-1\"\n",
            sim.local_addr,
            snap.display(),
            dir.path().join("journal").display()
        ),
    )
    .unwrap();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
            .args(["run", "--config"])
            .arg(&conf)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let connect = || async {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway did not start");
    };
    let mut child = spawn();
    connect().await;
    let mut e = Esme::bound(addr, "acme").await;
    assert_eq!(status_of(&mut e, &submit_to(GRANTED)).await, 0);
    assert!(eventually(|| sim.sessions() == 1).await);
    assert!(sim.inject_mo(Some("acme"), GRANTED, "1069012345", 0, b"TD"));
    let mo = e.recv_where(|f| smpp::command_id(f) == cmd::DELIVER_SM).await;
    e.send_header(cmd::DELIVER_SM_RESP, 0, smpp::sequence(&mo)).await;
    // The resp reaches the SMSC only after the fsync: once it has, the revocation is durable.
    assert!(eventually(|| sim.stats.resps_received.load(std::sync::atomic::Ordering::Relaxed) >= 1).await);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(e);
    let mut child = spawn();
    connect().await;
    let mut e = Esme::bound(addr, "acme").await;
    assert_eq!(status_of(&mut e, &submit_to(GRANTED)).await, 0x401, "revocation replayed from the journal");
    child.kill().unwrap();
    child.wait().unwrap();
}
