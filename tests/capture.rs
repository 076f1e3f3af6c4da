//! `[capture]` at the real gateway: a mixed run (accepted, rejected by policy, receipts) is
//! recorded as pcapng on both legs, read back with the project's pcap reader (the same one
//! `load --pcap` uses) and replayed, and what the file says matches what the ESME saw.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::conf::{AccountConf, GwConf};
use consentgate::config::Config;
use consentgate::consent::snapshot::{build, BuildOptions};
use consentgate::load::{Encoding, LoadConfig, ScenarioLine};
use consentgate::pcap::{extract, ExtractOptions};
use consentgate::smpp::cmd;
use consentgate::Gateway;

const GRANTED: &str = "8613800000001";
const DNC: &str = "8613800000002";
const NOBODY: &str = "8613800000003";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_records_both_legs_and_the_capture_replays() {
    let dir = tempfile::tempdir().unwrap();
    let (dnc, consent, snap) = (dir.path().join("dnc.csv"), dir.path().join("consent.csv"), dir.path().join("c.snap"));
    std::fs::write(&dnc, format!("msisdn,registered_at\n{DNC},2026-01-01\n")).unwrap();
    std::fs::write(&consent, format!("msisdn,entity,action,at\n{GRANTED},acme-retail,grant,2026-01-01\n")).unwrap();
    build(&BuildOptions { dnc: Some(dnc), consent: Some(consent), out: snap.clone(), ..Default::default() }, |_| {})
        .unwrap();
    let cap_dir = dir.path().join("capture");
    let sim =
        consentgate::sim::start(consentgate::sim::SimConfig { receipts: true, ..common::sim_cfg() }).await.unwrap();
    let conf = GwConf::ephemeral(sim.local_addr)
        .set("consent", &format!("snapshot = \"{}\"", snap.display()))
        .set("capture", "enabled = true")
        .set("capture", &format!("dir = \"{}\"", cap_dir.display()))
        .account(AccountConf::marketing("acme").entity("acme-retail").licence("B2-1"));
    let g = Gateway::bind(Config::parse(&conf.text()).unwrap()).await.unwrap();
    let addr = g.local_addr();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(g.serve(async {
        let _ = rx.await;
    }));

    let line = |dest: &str, text: &str, encoding| ScenarioLine {
        source: "1069012345".into(),
        destination: dest.into(),
        text: text.into(),
        encoding,
        expect: None,
        tlvs: Default::default(),
    };
    let scenario = vec![
        line(GRANTED, "Flash sale today", Encoding::Gsm7),
        line(DNC, "Flash sale today", Encoding::Gsm7),
        line(NOBODY, "双十一大促，全场五折！回T退订", Encoding::Ucs2),
        line(GRANTED, "会员日专享优惠，回T退订", Encoding::Ucs2),
    ];
    let sent = 200u64;
    let r = consentgate::load::run(LoadConfig {
        target: addr,
        system_id: "acme".into(),
        password: "pw".into(),
        sessions: 1,
        window: 20,
        count: sent,
        registered_delivery: true,
        scenario: Some(scenario),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(r.responses, sent, "{:?}", r.errors);
    let accepted = r.statuses.get("0x00000000").copied().unwrap_or(0);
    assert_eq!(accepted, 100);
    assert_eq!(r.statuses.get("0x00000402"), Some(&50), "{:?}", r.statuses);
    assert_eq!(r.statuses.get("0x00000400"), Some(&50), "{:?}", r.statuses);
    assert_eq!(r.receipts, accepted);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), task).await.expect("gateway stopped").unwrap().unwrap();

    let files = consentgate::capture::list_captures(&cap_dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let all = extract(&files[0], &ExtractOptions { keep_all: true, ..Default::default() }).expect("capture reads");
    assert_eq!(all.damage.gaps, 0, "{:?}", all.damage);
    assert!(!all.damage.file_truncated);
    // Both legs of the one session: the ESME leg (10.1.x) and the SMSC leg (10.2.x).
    assert_eq!(all.streams.len(), 2, "{:?}", all.streams);
    let leg = |prefix: &str| all.streams.iter().position(|s| s.esme.starts_with(prefix)).expect("leg") as u32;
    let (esme_leg, smsc_leg) = (leg("10.1."), leg("10.2."));
    let submits = |stream: u32| {
        all.pdus.iter().filter(|p| p.stream == stream && p.command_id == cmd::SUBMIT_SM).collect::<Vec<_>>()
    };
    let on_esme = submits(esme_leg);
    let on_smsc = submits(smsc_leg);
    assert_eq!(on_esme.len() as u64, sent, "every submit the ESME sent is on its leg");
    assert_eq!(on_smsc.len() as u64, accepted, "only the accepted ones went upstream");
    let mut by_status = std::collections::BTreeMap::new();
    for p in &on_esme {
        *by_status.entry(format!("0x{:08x}", p.recorded_status.expect("every submit was answered"))).or_insert(0u64) +=
            1;
    }
    assert_eq!(by_status, r.statuses, "the capture's statuses are the ones the ESME received");
    assert!(on_smsc.iter().all(|p| p.recorded_status == Some(0)));
    // Receipts travelled down the ESME leg (from the gateway's synthetic address).
    let deliver_down = all
        .all
        .iter()
        .filter(|p| p.src.ip().to_string() == "10.0.0.1" && consentgate::smpp::command_id(&p.frame) == cmd::DELIVER_SM)
        .count() as u64;
    assert_eq!(deliver_down, accepted, "receipts recorded on the ESME leg");

    // `--server 10.0.0.1` keeps the ESME leg only: what the ESMEs sent, once.
    let esme_only =
        extract(&files[0], &ExtractOptions { server: Some("10.0.0.1".parse().unwrap()), ..Default::default() })
            .expect("capture reads");
    assert_eq!(esme_only.streams.len(), 1);
    assert_eq!(esme_only.pdus.len() as u64, sent);
    assert!(esme_only.skipped.iter().any(|s| s.reason == "SMSC side is not --server"), "{:?}", esme_only.skipped);

    // And the recording replays into the simulator: both legs (the forwarded submits twice),
    // then the ESME leg alone.
    let replay = |x: consentgate::pcap::Extracted| {
        consentgate::load::run(LoadConfig {
            target: sim.local_addr,
            system_id: "acme".into(),
            password: "pw".into(),
            sessions: 1,
            window: 50,
            count: 0,
            duration: Duration::ZERO,
            replay: Some(Arc::new(x)),
            speed: consentgate::load::Speed::Max,
            ..Default::default()
        })
    };
    let r = replay(all).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.responses, sent + accepted, "both legs' submits replayed");
    let r = replay(esme_only).await.unwrap();
    assert_eq!(r.responses, sent, "the ESME leg alone: every submit once");
    sim.shutdown().await;
}
