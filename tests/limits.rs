//! The limits of architecture §9 against a real gateway on loopback: password guessing from one IP
//! is cut off after `limits.bind_failures_per_ip` failures (its binds then refused without
//! reaching the SMSC, other IPs unaffected, lifted after `bind_backoff`); a session holding a
//! half-sent PDU is closed at `session.pdu_timeout` while another session keeps working.

mod common;

use std::time::Duration;

use common::{Esme, Gw};
use consentgate::sim::SimConfig;
use consentgate::smpp::{self, cmd, status, BindType};

const LIMITS: &str = r#"
pdu_timeout = "400ms"

[limits]
bind_failures_per_ip = 3
bind_failure_window = "1m"
bind_backoff = "1500ms"
"#;

async fn start() -> (consentgate::sim::SimHandle, Gw) {
    let sim = SimConfig {
        credentials: Some(vec![("acme".into(), "right".into()), ("bank".into(), "right".into())]),
        ..common::sim_cfg()
    };
    common::stack(sim, "", LIMITS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_backs_off_without_reaching_the_smsc() {
    let (sim, gw) = start().await;
    let binds = || sim.stats.binds.load(std::sync::atomic::Ordering::Relaxed);
    let mut e = Esme::connect(gw.addr).await;
    // Wrong passwords: the SMSC refuses each (ESME_RINVPASWD), relayed back.
    for _ in 0..3 {
        assert_eq!(e.bind(BindType::Transceiver, "acme", "guess").await, status::ESME_RINVPASWD);
    }
    // The fourth failure starts the back-off; from then on nothing is forwarded.
    assert_eq!(e.bind(BindType::Transceiver, "acme", "guess").await, status::ESME_RINVPASWD);
    let t0 = std::time::Instant::now();
    let mut refused = 0;
    while refused < 500 {
        assert_eq!(e.bind(BindType::Transceiver, "acme", "guess").await, status::ESME_RBINDFAIL);
        refused += 1;
    }
    let rate = refused as f64 / t0.elapsed().as_secs_f64();
    // Even the right password is refused while backing off, and never reaches the SMSC.
    let mut other = Esme::connect(gw.addr).await;
    assert_eq!(other.bind(BindType::Transceiver, "acme", "right").await, status::ESME_RBINDFAIL);
    assert_eq!(binds(), 0, "no bind reached the SMSC during the back-off");
    eprintln!("back-off: 500 binds refused locally at {rate:.0}/s, 0 forwarded");
    // After bind_backoff the right password binds again.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut later = Esme::connect(gw.addr).await;
    assert_eq!(later.bind(BindType::Transceiver, "acme", "right").await, status::ESME_ROK);
    assert_eq!(binds(), 1);
    // A success forgets the failures: three more wrong ones are relayed again.
    let mut again = Esme::connect(gw.addr).await;
    for _ in 0..3 {
        assert_eq!(again.bind(BindType::Transceiver, "acme", "guess").await, status::ESME_RINVPASWD);
    }
    let text = consentgate::telemetry::metrics::handle().expect("recorder").render();
    let count = |series: &str| {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(count("consentgate_limits_total{limit=\"bind_backoff_started\"}"), Some(1.0), "{text}");
    assert_eq!(count("consentgate_limits_total{limit=\"bind_backoff\"}"), Some(501.0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_pdu_closes_its_session_only() {
    let (_sim, gw) = start().await;
    let mut slow = Esme::connect(gw.addr).await;
    assert_eq!(slow.bind(BindType::Transceiver, "acme", "right").await, 0);
    let mut ok = Esme::connect(gw.addr).await;
    assert_eq!(ok.bind(BindType::Transceiver, "bank", "right").await, 0);
    // The first 10 bytes of an enquire_link, then nothing.
    slow.send(&[0, 0, 0, 16, 0, 0, 0, 0x15, 0, 0]).await;
    let t0 = std::time::Instant::now();
    // Meanwhile the other session is served throughout.
    for _ in 0..5 {
        let seq = ok.submit(&common::submit_to("8613800000001")).await;
        let r = ok.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
        assert_eq!(smpp::command_status(&r), 0);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), slow.expect_closed()).await.expect("closed by the gateway");
    let after = t0.elapsed();
    assert!(after >= Duration::from_millis(400), "not before pdu_timeout: {after:?}");
    // A PDU trickled in slower than the tick but completed in time is fine.
    let mut trickle = Esme::connect(gw.addr).await;
    assert_eq!(trickle.bind(BindType::Transceiver, "acme", "right").await, 0);
    let el = [0u8, 0, 0, 16, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 9];
    for chunk in el.chunks(4) {
        trickle.send(chunk).await;
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let r = trickle.recv_where(|f| smpp::command_id(f) == cmd::ENQUIRE_LINK_RESP).await;
    assert_eq!(smpp::sequence(&r), 9);
    let seq = ok.submit(&common::submit_to("8613800000001")).await;
    let r = ok.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
    assert_eq!(smpp::command_status(&r), 0, "the other session still served");
    gw.stop().await;
}
