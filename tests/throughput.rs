//! Step 3, throughput: an account's `max_tps` over all its sessions, through the real gateway
//! on loopback with the project's simulator upstream and load generator in front.

mod common;

use std::time::Duration;

use common::conf::{AccountConf, GwConf};
use consentgate::config::Config;
use consentgate::load::{run, LoadConfig};
use consentgate::smpp::status;
use consentgate::smpp::BindType;

/// The simulator and a gateway in front of it with these accounts (no snapshot; commercial
/// traffic allowed).
async fn gateway(accounts: [AccountConf; 2]) -> (consentgate::sim::SimHandle, common::Gw) {
    let sim = consentgate::sim::start(common::sim_cfg()).await.expect("sim");
    let base = GwConf::ephemeral(sim.local_addr).set("policy", "on_snapshot_unavailable = \"allow\"");
    let conf = accounts.into_iter().fold(base, GwConf::account);
    let gw = common::Gw::start(Config::parse(&conf.text()).expect("config")).await;
    (sim, gw)
}

/// A licensed transactional account without an entity.
fn transactional(system_id: &str, licence: &str) -> AccountConf {
    AccountConf::transactional(system_id).no_entity().licence(licence)
}

/// Four sessions send as fast as their windows allow for 2 s; the account may send 400/s.
/// What is forwarded stays within 5 % of that (plus the burst of 20); the rest is answered
/// `throttled` (0x58) at once; a second account on the same gateway is not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tps_caps_the_account_over_all_its_sessions() {
    let (_sim, gw) = gateway([
        transactional("capped", "B2-1").set("max_tps = 400").set("max_sessions = 4"),
        transactional("free", "B2-2"),
    ])
    .await;
    let secs = 2.0;
    let load = |system_id: &str, count: u64| LoadConfig {
        target: gw.addr,
        system_id: system_id.into(),
        sessions: 4,
        window: 20,
        count,
        duration: Duration::from_secs_f64(secs),
        ..Default::default()
    };
    let r = tokio::time::timeout(Duration::from_secs(20), run(load("capped", 0))).await.expect("in time").unwrap();
    // Throttled submits are answered at once, forwarded ones after the SMSC: on a loaded
    // machine 4 windows of refusals can overtake one forwarded submit, whose latency the load
    // generator then stops timing (it says so). Every submit is still answered (below).
    let errors: Vec<_> = r.errors.iter().filter(|e| !e.contains("their latency was not recorded")).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let ok = *r.statuses.get("0x00000000").unwrap_or(&0) as f64;
    let throttled = *r.statuses.get(&format!("{:#010x}", status::ESME_RTHROTTLED)).unwrap_or(&0);
    assert_eq!(r.unanswered, 0);
    assert!(throttled > 1000, "overload expected: {:?}", r.statuses);
    // Upper bound over the run's whole elapsed time (a loaded CI machine can stretch the
    // sending phase past `secs`), lower bound over the nominal phase.
    let (want, upto) = (400.0 * secs, 400.0 * r.elapsed_seconds.max(secs));
    assert!(
        ok <= upto * 1.05 + 20.0 && ok >= want * 0.90,
        "forwarded {ok} in {secs} s ({:.2} s elapsed), cap 400/s: {:?}",
        r.elapsed_seconds,
        r.statuses
    );

    let r = tokio::time::timeout(Duration::from_secs(20), run(load("free", 2000))).await.expect("in time").unwrap();
    assert_eq!(r.statuses.get("0x00000000"), Some(&2000), "{:?}", r.statuses);
    gw.stop().await;
}

/// `max_sessions`: a bind beyond the account's limit is refused ESME_RBINDFAIL; when one of
/// its sessions ends, a new bind is taken again. Other accounts are not counted against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_sessions_refuses_the_bind_beyond_the_limit() {
    let (_sim, gw) =
        gateway([transactional("two", "B2-1").set("max_sessions = 2"), transactional("other", "B2-2")]).await;
    let mut a = common::Esme::connect(gw.addr).await;
    let mut b = common::Esme::connect(gw.addr).await;
    assert_eq!(a.bind(BindType::Transceiver, "two", "pw").await, status::ESME_ROK);
    assert_eq!(b.bind(BindType::Transmitter, "two", "pw").await, status::ESME_ROK);
    let mut c = common::Esme::connect(gw.addr).await;
    assert_eq!(c.bind(BindType::Receiver, "two", "pw").await, status::ESME_RBINDFAIL);
    let mut o = common::Esme::connect(gw.addr).await;
    assert_eq!(o.bind(BindType::Transceiver, "other", "pw").await, status::ESME_ROK);
    drop(a); // the ESME goes away: its session ends and frees the slot
    let mut bound = false;
    for _ in 0..50 {
        let mut d = common::Esme::connect(gw.addr).await;
        if d.bind(BindType::Transceiver, "two", "pw").await == status::ESME_ROK {
            bound = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bound, "a slot freed by the ended session is bound again");
    drop((b, c, o));
    gw.stop().await;
}
