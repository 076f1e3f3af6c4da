//! `consentgate demo`: the whole path on loopback with no setup — the built-in SMSC
//! simulator, the gateway on the bundled `config/demo.toml`, and a short load through it.

use std::time::Duration;

use crate::config::Config;
use crate::load::{LoadConfig, Report};
use crate::sim::SimConfig;
use crate::smpp::BindType;

/// The demo configuration, embedded so the binary runs from any directory.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// Runs the demo and prints what happened.
pub async fn run(count: u64) -> anyhow::Result<()> {
    let sim =
        crate::sim::start(SimConfig { listen: "127.0.0.1:0".parse()?, receipts: true, ..Default::default() }).await?;
    let mut cfg = Config::parse(DEMO_CONFIG).map_err(|e| anyhow::anyhow!("config/demo.toml: {e:?}"))?;
    cfg.upstream.address = sim.local_addr.to_string();
    cfg.listen.smpp = "127.0.0.1:0".parse()?;
    let gw = crate::Gateway::bind(cfg).await?;
    let gw_addr = gw.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gw_task = tokio::spawn(gw.serve(async {
        let _ = stop_rx.await;
    }));

    println!("consentgate demo");
    println!("  SMSC simulator   {}", sim.local_addr);
    println!("  gateway (SMPP)   {gw_addr}  ->  upstream {}", sim.local_addr);
    println!();

    // 1. A sender without a telecom licence is refused at bind.
    let unlicensed = crate::load::run(LoadConfig {
        target: gw_addr,
        system_id: "demo-unlic".into(),
        password: "pw".into(),
        sessions: 1,
        count: 10,
        duration: Duration::from_secs(2),
        ..Default::default()
    })
    .await?;
    println!("1. unlicensed sender `demo-unlic` binds:");
    for e in &unlicensed.errors {
        println!("     {e}");
    }
    println!("     bind failures: {} (expected 1: ESME_RBINDFAIL 0x0000000D)", unlicensed.bind_failures);
    println!();

    // 2. The marketing account's traffic through the gateway, with delivery receipts.
    let r = crate::load::run(LoadConfig {
        target: gw_addr,
        system_id: "demo-mkt".into(),
        password: "pw".into(),
        bind_type: BindType::Transceiver,
        sessions: 4,
        window: 100,
        count,
        duration: Duration::from_secs(20),
        registered_delivery: true,
        ..Default::default()
    })
    .await?;
    println!("2. `demo-mkt`: {count} submit_sm over 4 sessions x window 100, receipts requested:");
    print_report(&r);

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), gw_task).await;
    sim.shutdown().await;
    println!();
    println!("Consent enforcement (no_consent / revoked / dnc rejects) arrives with the consent engine;");
    println!("run `consentgate --help` for the gateway, simulator and load tool.");
    Ok(())
}

fn print_report(r: &Report) {
    println!("     statuses:");
    for (st, n) in &r.statuses {
        let name = match st.as_str() {
            "0x00000000" => "ESME_ROK",
            "0x00000058" => "ESME_RTHROTTLED",
            "0x00000008" => "ESME_RSYSERR",
            _ => "",
        };
        println!("       {st} {name:<16} {n}");
    }
    println!("     unanswered:  {}", r.unanswered);
    println!("     receipts:    {}", r.receipts);
    println!("     throughput:  {:.0} submit_sm/s over {:.2} s", r.submit_per_second, r.elapsed_seconds);
    println!(
        "     latency:     p50 {:.0} µs   p99 {:.0} µs   p99.9 {:.0} µs",
        r.latency_us.p50, r.latency_us.p99, r.latency_us.p999
    );
}
