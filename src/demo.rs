//! `consentgate demo`: the whole path on loopback with no setup — the built-in SMSC
//! simulator, a consent snapshot generated from sample CSVs, the gateway on the bundled
//! `config/demo.toml`, and traffic through it that shows every kind of verdict, including an
//! opt-out ("退订") captured from an MO in the middle of a run.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::consent::snapshot::{build, BuildOptions};
use crate::consent::store::ConsentStore;
use crate::load::{Encoding, LoadConfig, Report, ScenarioLine};
use crate::policy::Reason;
use crate::sim::SimConfig;

/// The demo configuration, embedded so the binary runs from any directory.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// Sample subscribers: 8613800000000 + i. i % 4: 0 granted, 1 nothing, 2 revoked, 3 on the DNC registry.
const SUBSCRIBERS: u64 = 2_000;
const BASE: u64 = 8_613_800_000_000;

/// Runs the demo and prints what happened.
pub async fn run(count: u64) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("consentgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir, count).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &std::path::Path, count: u64) -> anyhow::Result<()> {
    // Sample registry exports, compiled into a snapshot by the real builder.
    let (dnc, consent, snap) = (dir.join("dnc.csv"), dir.join("consent.csv"), dir.join("consent.snap"));
    {
        let mut d = std::io::BufWriter::new(std::fs::File::create(&dnc)?);
        let mut c = std::io::BufWriter::new(std::fs::File::create(&consent)?);
        writeln!(d, "msisdn,registered_at")?;
        writeln!(c, "msisdn,entity,action,at")?;
        for i in 0..SUBSCRIBERS {
            let m = BASE + i;
            match i % 4 {
                0 => writeln!(c, "{m},demo-retail,grant,2026-03-01")?,
                2 => {
                    writeln!(c, "{m},demo-retail,grant,2026-03-01")?;
                    writeln!(c, "{m},demo-retail,revoke,2026-06-01T09:30:00+08:00")?;
                }
                3 => writeln!(d, "{m},2026-05-20")?,
                _ => {}
            }
        }
    }
    let report = build(
        &BuildOptions { dnc: Some(dnc), consent: Some(consent), out: snap.clone(), ..Default::default() },
        |_| {},
    )
    .map_err(|e| anyhow::anyhow!("building the demo snapshot: {e}"))?;

    let sim =
        crate::sim::start(SimConfig { listen: "127.0.0.1:0".parse()?, receipts: true, ..Default::default() }).await?;
    let mut cfg = Config::parse(DEMO_CONFIG).map_err(|e| anyhow::anyhow!("config/demo.toml: {e:?}"))?;
    cfg.upstream.address = sim.local_addr.to_string();
    cfg.listen.smpp = "127.0.0.1:0".parse()?;
    cfg.consent.snapshot = Some(snap.clone());
    cfg.consent.journal = Some(dir.join("journal"));
    // demo-night's quiet hours: its configured window moved to the hour around now (Shanghai
    // time), so step 3b shows a quiet-hours refusal at any time of day.
    let shanghai = crate::time::Zone::get("Asia/Shanghai").map_err(|e| anyhow::anyhow!("{e}"))?;
    let minute = shanghai.local(crate::time::Clock::system().now()).minute_of_day as u16;
    let night = crate::policy::DailyWindow { start: (minute + 1440 - 30) % 1440, end: (minute + 30) % 1440 };
    for a in cfg.accounts.iter_mut().filter(|a| a.system_id == "demo-night") {
        a.quiet_hours = Some(night);
    }
    // The decision audit log: every rejection, for the complaint step at the end.
    cfg.audit.mode = crate::audit::AuditMode::Rejects;
    cfg.audit.dir = Some(dir.join("audit"));
    let engine = cfg.engine();
    let store = Arc::new(ConsentStore::open(&cfg.consent)?);
    let gw = crate::Gateway::bind_with_store(cfg, store.clone()).await?;
    let gw_addr = gw.local_addr();
    let admin_addr = gw.admin_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gw_task = tokio::spawn(gw.serve(async {
        let _ = stop_rx.await;
    }));

    println!("consentgate demo");
    println!("  SMSC simulator   {}", sim.local_addr);
    println!("  gateway (SMPP)   {gw_addr}  ->  upstream {}", sim.local_addr);
    println!(
        "  admin / metrics  http://{admin_addr}/metrics  (also /readyz, /v1/snapshot, /v1/consent/<msisdn>?entity=E)"
    );
    println!(
        "  consent snapshot {} numbers on the DNC registry, {} consent pairs ({} granted, {} revoked)",
        report.dnc, report.pairs, report.grants, report.revoked
    );
    println!("  subscribers      {BASE}.. : i%4 = 0 granted, 1 no statement, 2 revoked, 3 do-not-call");
    println!();

    let name = |st: &str| -> String {
        let v = crate::smpp::status::parse(st).unwrap_or(u32::MAX);
        if v == 0 {
            return "accepted".into();
        }
        match Reason::ALL.iter().find(|r| engine.status(**r) == v) {
            Some(r) => format!("rejected: {}", r.label()),
            None => format!("status {st}"),
        }
    };
    let base = LoadConfig { target: gw_addr, password: "pw".into(), ..Default::default() };

    // 1. A sender without a telecom licence is refused at bind.
    let r = crate::load::run(LoadConfig {
        system_id: "demo-unlic".into(),
        sessions: 1,
        count: 10,
        duration: Duration::from_secs(2),
        ..base.clone()
    })
    .await?;
    println!("1. `demo-unlic` (no telecom licence) binds: refused ({} bind failure, ESME_RBINDFAIL)", r.bind_failures);
    println!();

    // 2. Marketing traffic to all four kinds of subscriber.
    let scenario: Vec<ScenarioLine> = (0..SUBSCRIBERS)
        .map(|i| ScenarioLine {
            source: "1069012345".into(),
            destination: (BASE + i).to_string(),
            text: if i % 2 == 0 {
                "双十一大促，全场五折！回T退订".into()
            } else {
                "Flash sale: 50% off today. Reply STOP to end".into()
            },
            encoding: if i % 2 == 0 { Encoding::Ucs2 } else { Encoding::Gsm7 },
            expect: None,
        })
        .collect();
    let r = crate::load::run(LoadConfig {
        system_id: "demo-mkt".into(),
        sessions: 4,
        window: 100,
        count,
        duration: Duration::from_secs(20),
        registered_delivery: true,
        scenario: Some(scenario.clone()),
        ..base.clone()
    })
    .await?;
    println!("2. `demo-mkt` (marketing): {} submit_sm over 4 sessions x window 100, receipts requested:", r.sent);
    print_report(&r, &name);

    // 3. The same numbers from a transactional account: consent does not apply.
    let r = crate::load::run(LoadConfig {
        system_id: "demo-bank".into(),
        sessions: 2,
        count: 20_000,
        scenario: Some(
            scenario
                .iter()
                .map(|l| ScenarioLine { text: "Your code is 482913".into(), encoding: Encoding::Gsm7, ..l.clone() })
                .collect(),
        ),
        ..base.clone()
    })
    .await?;
    println!("3. `demo-bank` (transactional) to the same subscribers:");
    print_report(&r, &name);

    // 3b. Quiet hours: the same marketing to granted subscribers, inside the account's window.
    // (Not to BASE + 4: step 4 and the complaint of step 6 are about that subscriber.)
    let granted: Vec<ScenarioLine> =
        scenario.iter().step_by(4).filter(|l| l.destination != (BASE + 4).to_string()).cloned().collect();
    let r = crate::load::run(LoadConfig {
        system_id: "demo-night".into(),
        sessions: 1,
        count: granted.len() as u64,
        scenario: Some(granted),
        ..base.clone()
    })
    .await?;
    let hm = crate::policy::DailyWindow::fmt_time;
    println!(
        "3b. `demo-night` (marketing) to granted subscribers at {} Shanghai time, inside its quiet hours {}-{} \
         (config 21:00-08:00, moved around now for the demo):",
        hm(minute),
        hm(night.start),
        hm(night.end)
    );
    print_report(&r, &name);

    // 3c. A frequency cap: five messages to one granted subscriber from an account capped at
    // two a day.
    let capped = BASE + 8;
    let five = vec![ScenarioLine {
        source: "1069012345".into(),
        destination: capped.to_string(),
        text: "会员日专享优惠，回T退订".into(),
        encoding: Encoding::Ucs2,
        expect: None,
    }];
    let r = crate::load::run(LoadConfig {
        system_id: "demo-cap".into(),
        sessions: 1,
        window: 1,
        count: 5,
        scenario: Some(five),
        ..base.clone()
    })
    .await?;
    println!("3c. `demo-cap` (marketing, at most 2 a day per subscriber) sends 5 messages to {capped}:");
    print_report(&r, &name);

    // 4. A granted subscriber replies 退订 in the middle of a campaign.
    let subscriber = BASE + 4;
    let one = vec![ScenarioLine {
        source: "1069012345".into(),
        destination: subscriber.to_string(),
        text: "会员日专享优惠，回T退订".into(),
        encoding: Encoding::Ucs2,
        expect: None,
    }];
    let load = tokio::spawn(crate::load::run(LoadConfig {
        system_id: "demo-mkt".into(),
        sessions: 1,
        window: 10,
        count: 6_000,
        rate: Some(3_000),
        duration: Duration::from_secs(10),
        scenario: Some(one),
        ..base.clone()
    }));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let tuiding: Vec<u8> = "退订".encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    let injected = sim.inject_mo(Some("demo-mkt"), &subscriber.to_string(), "1069012345", 8, &tuiding);
    let r = load.await??;
    println!(
        "4. `demo-mkt` sends to {subscriber} (granted) at 3000/s; after 0.8 s the subscriber replies \"退订\" (MO {}):",
        if injected { "injected" } else { "NOT injected" }
    );
    print_report(&r, &name);
    println!(
        "     MO delivered to the ESME: {}; opt-outs journalled in {}",
        r.mo_received,
        dir.join("journal").display()
    );

    // 5. What an SRE sees: the gateway's own Prometheus metrics.
    println!("5. GET http://{admin_addr}/metrics (consentgate_submit_total by account, verdict, reason):");
    match crate::admin::request(admin_addr, "GET", "/metrics", None, None).await {
        Ok((200, body)) => {
            for line in body.lines().filter(|l| l.starts_with("consentgate_submit_total{")) {
                println!("       {line}");
            }
            // The MO opt-outs step 4 captured (not whichever source the exposition lists first).
            let mo = format!("{}{{source=\"mo\"}}", crate::telemetry::metrics::OPTOUTS_TOTAL);
            if let Some(l) = body.lines().find(|l| l.starts_with(&mo)) {
                println!("       {l}");
            }
        }
        Ok((code, _)) => println!("       HTTP {code}"),
        Err(e) => println!("       unreachable: {e}"),
    }
    let lookup = format!("/v1/consent/{subscriber}?entity=demo-retail");
    if let Ok((_, body)) = crate::admin::request(admin_addr, "GET", &lookup, None, None).await {
        println!("   GET {lookup}:\n       {body}");
    }

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), gw_task).await;
    sim.shutdown().await;
    store.close();
    // 6. A complaint arrives (12321): "I replied 退订 and they kept texting me". The audit log
    // (closed when the gateway stopped) shows what consentgate did with every later message.
    let q = crate::audit::search::Query { msisdn: subscriber, since_us: None, until_us: None, account: None };
    let mut first = None;
    match crate::audit::search::search(&dir.join("audit"), &q, |line, _| {
        if first.is_none() {
            first = Some(format!(
                "{} {} -> {}: {} {} (status {}, snapshot {})",
                line.time,
                line.account,
                line.destination,
                line.verdict,
                line.reason.as_deref().unwrap_or("-"),
                line.status.as_deref().unwrap_or("-"),
                line.snapshot.as_deref().unwrap_or("-")
            ));
        }
        Ok(())
    }) {
        Ok(rep) => {
            println!(
                "6. complaint about {subscriber}: `consentgate audit search --dir {} --msisdn {subscriber}` finds {} rejected message(s); first:",
                dir.join("audit").display(),
                rep.matched
            );
            println!("       {}", first.unwrap_or_default());
        }
        Err(e) => println!("6. audit search failed: {e}"),
    }
    println!();
    println!("Reject statuses: no_consent 0x400, revoked 0x401, dnc 0x402, quiet_hours 0x403, frequency_cap 0x404, unlicensed 0x405 (configurable).");
    println!("Run `consentgate --help` for the gateway, snapshot tools, simulator and load tool.");
    Ok(())
}

fn print_report(r: &Report, name: &dyn Fn(&str) -> String) {
    for (st, n) in &r.statuses {
        println!("       {st}  {:<24} {n}", name(st));
    }
    println!(
        "       unanswered {}   receipts {}   {:.0} submit_sm/s   latency p50 {:.0} µs  p99 {:.0} µs",
        r.unanswered, r.receipts, r.submit_per_second, r.latency_us.p50, r.latency_us.p99
    );
}
