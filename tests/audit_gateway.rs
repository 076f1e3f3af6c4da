//! The decision audit log written by the real gateway: what a complaint needs is in it (who,
//! to whom, verdict, reason, the status the ESME got, the SMSC's message_id for delivered
//! messages, which snapshot decided), and `consentgate audit search` (the real binary) finds it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::conf::{AccountConf, GwConf};
use consentgate::config::Config;
use consentgate::consent::snapshot::{build, BuildOptions};
use consentgate::load::{Encoding, LoadConfig, ScenarioLine};
use consentgate::Gateway;
use serde_json::Value;

const GRANTED: &str = "8613800000001";
const DNC: &str = "8613800000002";
const NOBODY: &str = "8613800000003";

/// Runs 30 submits (10 to each subscriber) through a gateway with `[audit] mode = mode`.
async fn run(dir: &Path, mode: &str) -> consentgate::load::Report {
    let (dnc, consent, snap) = (dir.join("dnc.csv"), dir.join("consent.csv"), dir.join("c.snap"));
    std::fs::write(&dnc, format!("msisdn,registered_at\n{DNC},2026-01-01\n")).unwrap();
    std::fs::write(&consent, format!("msisdn,entity,action,at\n{GRANTED},acme-retail,grant,2026-01-01\n")).unwrap();
    build(&BuildOptions { dnc: Some(dnc), consent: Some(consent), out: snap.clone(), ..Default::default() }, |_| {})
        .unwrap();
    let sim = consentgate::sim::start(common::sim_cfg()).await.unwrap();
    let conf = GwConf::ephemeral(sim.local_addr)
        .set("consent", &format!("snapshot = \"{}\"", snap.display()))
        .set("audit", &format!("mode = \"{mode}\""))
        .set("audit", &format!("dir = \"{}\"", dir.join("audit").display()))
        .account(AccountConf::marketing("acme").entity("acme-retail").licence("B2-1"));
    let g = Gateway::bind(Config::parse(&conf.text()).unwrap()).await.unwrap();
    let addr = g.local_addr();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(g.serve(async {
        let _ = rx.await;
    }));
    let line = |dest: &str| ScenarioLine {
        source: "1069012345".into(),
        destination: dest.into(),
        text: "Flash sale today".into(),
        encoding: Encoding::Gsm7,
        expect: None,
        tlvs: Default::default(),
    };
    let r = consentgate::load::run(LoadConfig {
        target: addr,
        system_id: "acme".into(),
        password: "pw".into(),
        sessions: 1,
        window: 10,
        count: 30,
        scenario: Some(vec![line(GRANTED), line(DNC), line(NOBODY)]),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(r.responses, 30, "{:?}", r.errors);
    let _ = stop.send(());
    // The gateway closes the audit log (flush + fsync) before serve() returns.
    tokio::time::timeout(Duration::from_secs(20), task).await.expect("gateway stopped").unwrap().unwrap();
    sim.shutdown().await;
    r
}

/// `consentgate audit search --json` for one number: the matching records.
fn search(dir: &Path, msisdn: &str) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
        .args(["audit", "search", "--json", "--dir"])
        .arg(dir.join("audit"))
        .args(["--msisdn", msisdn])
        .output()
        .expect("run audit search");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).expect("a JSON record")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_all_records_every_decision_with_the_smsc_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "all").await;
    assert_eq!(r.statuses.get("0x00000000"), Some(&10));

    let granted = search(dir.path(), &format!("+{GRANTED}"));
    assert_eq!(granted.len(), 10, "{granted:?}");
    for rec in &granted {
        assert_eq!(rec["verdict"], "accepted", "{rec}");
        assert_eq!(rec["status"], "0x00000000", "{rec}");
        assert_eq!(rec["upstream_status"], "0x00000000", "{rec}");
        assert!(rec["message_id"].as_str().is_some_and(|m| !m.is_empty()), "the SMSC's message_id: {rec}");
        assert_eq!(rec["account"], "acme");
        assert_eq!(rec["entity"], "acme-retail");
        assert_eq!(rec["class"], "marketing");
        assert_eq!(rec["msisdn"], GRANTED);
        assert_eq!(rec["source"], "1069012345");
        assert!(rec["snapshot"].as_str().is_some_and(|s| s.len() == 16), "snapshot id: {rec}");
    }
    let dnc = search(dir.path(), DNC);
    assert_eq!(dnc.len(), 10);
    assert!(dnc.iter().all(|r| r["verdict"] == "rejected" && r["reason"] == "dnc" && r["status"] == "0x00000402"));
    assert!(dnc.iter().all(|r| r["message_id"].is_null() && r["upstream_status"].is_null()));
    let nobody = search(dir.path(), NOBODY);
    assert_eq!(nobody.len(), 10);
    assert!(nobody.iter().all(|r| r["reason"] == "no_consent" && r["status"] == "0x00000400"));
    // Every ESME sequence number appears once per number.
    let mut seqs: Vec<u64> = granted.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_rejects_records_only_rejections() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), "rejects").await;
    assert!(search(dir.path(), GRANTED).is_empty(), "accepted messages are not recorded in rejects mode");
    assert_eq!(search(dir.path(), DNC).len(), 10);
    assert_eq!(search(dir.path(), NOBODY).len(), 10);
}
