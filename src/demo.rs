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
/// Step 9's `[dlt]` and DLT account, appended to [`DEMO_CONFIG`] once the sample registry is
/// built.
const DEMO_INDIA: &str = include_str!("../config/demo-india.toml");
/// The working-day calendar the demo's complaint register counts in.
pub const DEMO_CALENDAR: &str = include_str!("../config/calendar-cn-2026.toml");

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
        // With the optional proof column: the sender's reference to each opt-in it holds.
        writeln!(c, "msisdn,entity,action,at,proof")?;
        for i in 0..SUBSCRIBERS {
            let m = BASE + i;
            match i % 4 {
                0 => writeln!(c, "{m},demo-retail,grant,2026-03-01,urn:demo-retail:optin:{i}")?,
                2 => {
                    writeln!(c, "{m},demo-retail,grant,2026-03-01,urn:demo-retail:optin:{i}")?;
                    writeln!(c, "{m},demo-retail,revoke,2026-06-01T09:30:00+08:00,")?;
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

    india_registry(dir)?;

    let sim =
        crate::sim::start(SimConfig { listen: "127.0.0.1:0".parse()?, receipts: true, ..Default::default() }).await?;
    let ismg = crate::sim::cmpp::start(crate::sim::cmpp::CmppSimConfig::default()).await?;
    let mut cfg = demo_config(dir)?;
    cfg.upstream.address = sim.local_addr.to_string();
    if let Some(c) = cfg.upstream.cmpp.as_mut() {
        c.address = ismg.local_addr.to_string();
    }
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
    // DLT promotional hours: the configured 09:00-21:00 moved to end a minute before now
    // (India time), so step 9 shows the refusal a promotional message gets at 21:30.
    let kolkata = crate::time::Zone::get("Asia/Kolkata").map_err(|e| anyhow::anyhow!("{e}"))?;
    let india_minute = kolkata.local(crate::time::Clock::system().now()).minute_of_day as u16;
    let promo =
        crate::policy::DailyWindow { start: (india_minute + 1440 - 721) % 1440, end: (india_minute + 1439) % 1440 };
    if let Some(d) = cfg.policy.dlt.as_mut() {
        d.promotional_hours = promo;
    }
    // The decision audit log: every rejection, for the complaint step at the end.
    cfg.audit.mode = crate::audit::AuditMode::Rejects;
    cfg.audit.dir = Some(dir.join("audit"));
    // The complaint register, on the bundled China 2026 working-day calendar; a token for
    // the admin API's POST (made up per run, shown to nobody).
    let calendar = crate::time::Calendar::parse(DEMO_CALENDAR)
        .map_err(|e| anyhow::anyhow!("config/calendar-cn-2026.toml: {e}"))?;
    cfg.complaints = Some(crate::complaints::ComplaintsConfig {
        db: dir.join("complaints.db"),
        calendar,
        respond_within: crate::complaints::DEFAULT_RESPOND_WITHIN,
        suspend_after: 0,
    });
    let token = format!("demo-{:x}", crate::time::unix_us() ^ u64::from(std::process::id()) as i64);
    cfg.admin.token = Some(crate::admin::Secret(token.clone()));
    let engine = cfg.engine();
    let store = Arc::new(ConsentStore::open(&cfg.consent)?);
    let gw = crate::Gateway::bind_with_store(cfg, store.clone()).await?;
    let gw_addr = gw.local_addr();
    let cmpp_addr = gw.local_cmpp_addr();
    let admin_addr = gw.admin_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gw_task = tokio::spawn(gw.serve(async {
        let _ = stop_rx.await;
    }));

    println!("consentgate demo");
    println!("  SMSC simulator   {}", sim.local_addr);
    println!("  gateway (SMPP)   {gw_addr}  ->  upstream {}", sim.local_addr);
    if let Some(a) = cmpp_addr {
        println!("  gateway (CMPP)   {a}  ->  ISMG simulator {}", ismg.local_addr);
    }
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
            tlvs: Default::default(),
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
    let five = member_day(capped);
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
    let one = member_day(subscriber);
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

    // 6. A complaint arrives through 12321: "I replied 退订 and they kept texting me". Filed
    // through the admin API: it revokes (again: the MO already did), gets its due date in
    // working days, and carries the evidence — the audit log's decisions for the pair (the
    // messages refused after the 退订) and the consent proof the sender registered.
    tokio::time::sleep(Duration::from_millis(300)).await; // the audit writer's last batch
    let now = crate::time::Clock::system().now().unix_ms;
    let complaint = serde_json::json!({
        "subscriber": subscriber.to_string(),
        "source": "1069012345",
        "received_at": crate::audit::format_time_us(now * 1000),
        "reference": format!("12321-DEMO-{}", now / 1000),
        "channel": "12321",
        "content": "回复退订后仍收到营销短信",
    })
    .to_string();
    match crate::admin::request(admin_addr, "POST", "/v1/complaints", Some(&token), Some(&complaint)).await {
        Ok((201, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let id = v["id"].as_i64().unwrap_or(0);
            println!(
                "6. complaint {} about {subscriber} (replied 退订), via 12321: filed as #{id}, entity {} (from source {} by {}), due {} (15 working days, calendar-cn-2026), actions {}",
                v["reference"].as_str().unwrap_or(""),
                v["entity"].as_str().unwrap_or(""),
                v["source"].as_str().unwrap_or(""),
                v["entity_from"].as_str().unwrap_or(""),
                v["due"].as_str().unwrap_or(""),
                v["actions"]
            );
            // The audit log's part of the evidence is collected after the 201 (bounded wait).
            let mut e = serde_json::Value::Null;
            for _ in 0..400 {
                if let Ok((200, shown)) =
                    crate::admin::request(admin_addr, "GET", &format!("/v1/complaints/{id}"), None, None).await
                {
                    e = serde_json::from_str(&shown).unwrap_or_default();
                    if e["evidence"]["audit"]["state"] == "complete" {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            {
                let ev = &e["evidence"];
                let records = ev["audit"]["records"].as_array().cloned().unwrap_or_default();
                println!(
                    "     evidence: consent proof {} (standing before: {}); {} audited decision(s) for the pair (the newest {} attached), e.g.",
                    ev["consent"]["proof"]["proof"].as_str().unwrap_or("none"),
                    ev["consent"]["standing_before"].as_str().unwrap_or("?"),
                    ev["audit"]["records_found"],
                    ev["audit"]["records_kept"]
                );
                if let Some(r) = records.first() {
                    println!(
                        "       {} {} -> {}: {} {} (status {})",
                        r["time"].as_str().unwrap_or(""),
                        r["account"].as_str().unwrap_or(""),
                        r["destination"].as_str().unwrap_or(""),
                        r["verdict"].as_str().unwrap_or(""),
                        r["reason"].as_str().unwrap_or("-"),
                        r["status"].as_str().unwrap_or("-")
                    );
                }
                println!("     GET http://{admin_addr}/v1/complaints?status=open lists it; `consentgate complaints list --config FILE` reads the same register");
            }
        }
        Ok((code, body)) => println!("6. complaint: HTTP {code}: {body}"),
        Err(e) => println!("6. complaint: admin API unreachable: {e}"),
    }

    match two_nodes(dir, &sim, &snap).await {
        Ok(Some(line)) => println!("{line}"),
        Ok(None) => println!(
            "7. two nodes: skipped — no `redis-server` on PATH (apt-get install redis-server): with it, an opt-out on one node is refused on another"
        ),
        Err(e) => println!("7. two nodes: FAILED: {e:#}"),
    }

    match cmpp_addr {
        Some(a) => cmpp_front(a, &ismg, &engine, scenario).await?,
        None => println!("8. CMPP front: not configured (no listen.cmpp)"),
    }

    india_dlt(&base, admin_addr, &name, india_minute, promo).await?;

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), gw_task).await;
    sim.shutdown().await;
    ismg.shutdown().await;
    store.close();
    println!();
    println!("On CMPP the same reasons answer SUBMIT_RESP Result 100 + their index (no_consent 100, revoked 101, dnc 102, …; configurable in [policy.cmpp]).");
    println!("Reject statuses: no_consent 0x400, revoked 0x401, dnc 0x402, quiet_hours 0x403, frequency_cap 0x404, unlicensed 0x405, content_blocked 0x406, missing_signature 0x407, missing_opt_out_hint 0x408, suspended 0x409 (configurable); India DLT 0x40A-0x419 (dlt_template_mismatch 0x413, dlt_promotional_hours 0x419, …).");
    println!("Run `consentgate --help` for the gateway, snapshot tools, simulator and load tool.");
    Ok(())
}

/// The sample DLT exports (config/india-sample/), embedded like the demo config.
const INDIA_SAMPLE: [(&str, &str); 5] = [
    ("entities.csv", include_str!("../config/india-sample/entities.csv")),
    ("headers.csv", include_str!("../config/india-sample/headers.csv")),
    ("templates.csv", include_str!("../config/india-sample/templates.csv")),
    ("chains.csv", include_str!("../config/india-sample/chains.csv")),
    ("preferences.csv", include_str!("../config/india-sample/preferences.csv")),
];
const PE_BANK: &str = "1101000000000000001";
const PE_RETAIL: &str = "1101000000000000002";
const TM: &str = "1302000000000000007";

/// config/demo.toml and config/demo-india.toml, with the DLT registry the demo compiled into
/// `dir` (where the file names the sample one).
fn demo_config(dir: &std::path::Path) -> anyhow::Result<Config> {
    let registry = dir.join("india-sample.dlt");
    let india = DEMO_INDIA.replace("registry = \"india-sample.dlt\"", &format!("registry = {registry:?}"));
    Config::parse(&format!("{DEMO_CONFIG}\n{india}"))
        .map_err(|e| anyhow::anyhow!("config/demo.toml + config/demo-india.toml: {e:?}"))
}

/// Writes the sample DLT exports into `dir` and compiles them with the real `dlt build`.
fn india_registry(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let d = dir.join("india-sample");
    std::fs::create_dir_all(&d)?;
    for (name, text) in INDIA_SAMPLE {
        std::fs::write(d.join(name), text)?;
    }
    let out = dir.join("india-sample.dlt");
    crate::dlt::build(&crate::dlt::BuildOptions {
        entities: d.join("entities.csv"),
        headers: d.join("headers.csv"),
        templates: d.join("templates.csv"),
        chains: Some(d.join("chains.csv")),
        preferences: Some(d.join("preferences.csv")),
        out: out.clone(),
        default_cc: "91".into(),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!("building the demo DLT registry: {e}"))?;
    Ok(out)
}

/// A step 9 message: what it shows, header, text, PE id, template id (if sent), chain.
type DltCase<'a> = (&'a str, &'a str, &'a str, &'a str, Option<&'a str>, &'a str);

/// Step 9: India DLT. The telemarketer account `demo-in` sends for two PEs with the ids in
/// TLVs 0x1400-0x1402: each message alone, with its verdict; then the admin API explains
/// a refusal step by step.
async fn india_dlt(
    base: &LoadConfig,
    admin: std::net::SocketAddr,
    name: &dyn Fn(&str) -> String,
    minute: u16,
    promo: crate::policy::DailyWindow,
) -> anyhow::Result<()> {
    let hm = crate::policy::DailyWindow::fmt_time;
    println!();
    println!(
        "9. India DLT: `demo-in` (scrubbing = \"dlt\") sends for two PEs, ids in TLVs 0x1400-0x1402; registry from config/india-sample/; {} India time, promotional hours {}-{} (config 09:00-21:00, moved so that they have just ended):",
        hm(minute),
        hm(promo.start),
        hm(promo.end)
    );
    let otp = "Dear Asha, your OTP is 482913. Do not share it. - Demo Bank";
    let cases: [DltCase; 7] = [
        ("OTP, template id given", "DEMOBK", otp, PE_BANK, Some("1107000000000000011"), TM),
        ("OTP, template found by its text", "DEMOBK", otp, PE_BANK, None, TM),
        (
            "OTP with its fixed text changed",
            "DEMOBK",
            "Dear Asha, your PIN is 482913. Do not share it. - Demo Bank",
            PE_BANK,
            Some("1107000000000000011"),
            TM,
        ),
        (
            "a variable of 36 characters",
            "DEMOBK",
            "Dear Asha Kumari Venkataraman Subramaniam, your OTP is 1. Do not share it. - Demo Bank",
            PE_BANK,
            None,
            TM,
        ),
        ("through an undeclared telemarketer", "DEMOBK", otp, PE_BANK, None, "1302000000000000099"),
        (
            "service-explicit to a fully blocked subscriber",
            "DEMOSV",
            "Your card statement for May is ready: Rs 5400 - Demo Bank",
            PE_BANK,
            None,
            TM,
        ),
        (
            "promotional, after the promotional hours",
            "DEMOSL",
            "Festive sale: 40% off on all shoes. T&C apply - Demo Retail",
            PE_RETAIL,
            Some("1107000000000000021"),
            TM,
        ),
    ];
    for (what, header, text, pe, template, chain) in cases {
        let to = if header == "DEMOSV" { "919812345678" } else { "919800000001" };
        let mut tlvs = std::collections::BTreeMap::from([
            ("0x1400".to_owned(), pe.to_owned()),
            ("0x1402".to_owned(), chain.to_owned()),
        ]);
        if let Some(t) = template {
            tlvs.insert("0x1401".to_owned(), t.to_owned());
        }
        let line = ScenarioLine {
            source: header.into(),
            destination: to.into(),
            text: text.into(),
            encoding: Encoding::Gsm7,
            expect: None,
            tlvs,
        };
        let r = crate::load::run(LoadConfig {
            system_id: "demo-in".into(),
            sessions: 1,
            window: 1,
            count: 1,
            scenario: Some(vec![line]),
            ..base.clone()
        })
        .await?;
        let verdict = r.statuses.keys().next().map_or_else(|| "unanswered".to_owned(), |s| name(s));
        println!("     {header} -> {to}: {what}: {verdict}");
    }
    // The admin API: the same steps on the running registry, consent data and clock.
    let text = "Dear Asha, your PIN is 482913. Do not share it. - Demo Bank";
    let path = format!(
        "/v1/dlt/lookup?pe_id={PE_BANK}&header=DEMOBK&chain={TM}&msisdn=919800000001&text={}",
        text.replace(' ', "%20").replace(',', "%2C")
    );
    if let Ok((_, body)) = crate::admin::request(admin, "GET", &path, None, None).await {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        println!("   GET {path}:");
        for s in v["steps"].as_array().into_iter().flatten() {
            let ok = if s["ok"] == true { "ok" } else { "FAIL" };
            println!("       {:<9} {ok}: {}", s["step"].as_str().unwrap_or(""), s["detail"].as_str().unwrap_or(""));
        }
        println!(
            "       verdict {} {} (status {})",
            v["verdict"].as_str().unwrap_or(""),
            v["reason"].as_str().unwrap_or("-"),
            v["command_status"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}

/// Step 8: the CMPP front. An SP_Id no account names is refused at CONNECT; the CMPP SP
/// `901234` (entity demo-retail, as `demo-mkt`) sends step 2's `scenario` (the four kinds of
/// subscriber; Chinese texts as UCS-2, the others as ASCII) over CMPP 3.0 and gets the same verdicts as Results; then a granted subscriber
/// replies 退订 in GBK (Msg_Fmt 15) through the ISMG in the middle of a run, and the SP's next
/// SUBMITs to them are refused.
async fn cmpp_front(
    addr: std::net::SocketAddr,
    ismg: &crate::sim::cmpp::CmppSimHandle,
    engine: &crate::policy::Engine,
    scenario: Vec<ScenarioLine>,
) -> anyhow::Result<()> {
    let results = engine.config().cmpp_result;
    let name = |st: &str| -> String {
        let v = crate::smpp::status::parse(st).unwrap_or(u32::MAX);
        if v == 0 {
            return "Result 0: accepted".into();
        }
        match Reason::ALL.iter().find(|r| results[**r as usize] == v) {
            Some(r) => format!("Result {v}: {}", r.label()),
            None => format!("Result {v}"),
        }
    };
    let base = LoadConfig {
        target: addr,
        cmpp: Some(crate::cmpp::Version::V30),
        system_id: "901234".into(),
        ..Default::default()
    };
    let r = crate::load::run(LoadConfig { system_id: "999999".into(), sessions: 1, count: 1, ..base.clone() }).await?;
    println!(
        "8. CMPP front: SP 999999 (no account) CONNECTs: refused before the ISMG ({} refused, CONNECT_RESP {})",
        r.bind_failures,
        r.errors.first().map_or("", |e| e.rsplit(": ").next().unwrap_or(e))
    );
    let r = crate::load::run(LoadConfig {
        sessions: 2,
        window: 16,
        count: SUBSCRIBERS,
        scenario: Some(scenario),
        ..base.clone()
    })
    .await?;
    println!("   SP 901234 (marketing, entity demo-retail) sends {} CMPP 3.0 SUBMITs to the same subscribers:", r.sent);
    print_report(&r, &name);
    let subscriber = BASE + 16;
    let one = member_day(subscriber);
    let load = tokio::spawn(crate::load::run(LoadConfig {
        sessions: 1,
        window: 8,
        count: 3_000,
        rate: Some(1_500),
        duration: Duration::from_secs(10),
        scenario: Some(one),
        ..base
    }));
    tokio::time::sleep(Duration::from_millis(800)).await;
    // 退订 in GBK, as a handset's reply reaches the ISMG.
    let mo = ismg.send_mo(&subscriber.to_string(), "1069012345", crate::cmpp::text::fmt::GB, b"\xCD\xCB\xB6\xA9").await;
    let r = load.await??;
    println!(
        "   SP 901234 sends to {subscriber} (granted) at 1500/s; after 0.8 s the subscriber replies \"退订\" in GBK \
         through the ISMG ({}):",
        match mo {
            Ok(0) => "DELIVER_RESP Result 0 once the opt-out was journalled".to_owned(),
            Ok(res) => format!("DELIVER_RESP Result {res}"),
            Err(e) => format!("not delivered: {e}"),
        }
    );
    print_report(&r, &name);
    println!("     MO delivered to the SP: {}", r.mo_received);
    Ok(())
}

/// One member-day marketing message to `subscriber`.
fn member_day(subscriber: u64) -> Vec<ScenarioLine> {
    vec![ScenarioLine {
        source: "1069012345".into(),
        destination: subscriber.to_string(),
        text: "会员日专享优惠，回T退订".into(),
        encoding: Encoding::Ucs2,
        expect: None,
        tlvs: Default::default(),
    }]
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

/// Step 7 (architecture §8): two more gateway nodes, `demo-a` and `demo-b`, sharing live opt-outs
/// through a `redis-server` started here on a free loopback port. A subscriber replies
/// "退订" through node A; node B refuses the next message to them. `None` without
/// `redis-server` on PATH.
async fn two_nodes(
    dir: &std::path::Path,
    sim: &crate::sim::SimHandle,
    snap: &std::path::Path,
) -> anyhow::Result<Option<String>> {
    use crate::load::client::Client;
    use crate::smpp::BindType;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let data = dir.join("redis");
    std::fs::create_dir_all(&data)?;
    let spawned = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--appendonly", "yes", "--appendfsync", "always"])
        .args(["--save", "", "--logfile", "redis.log", "--dir"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .spawn();
    let mut redis = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("redis-server: {e}")),
    };
    let result = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "redis-server did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut nodes = Vec::new();
        for id in ["demo-a", "demo-b"] {
            let mut cfg = demo_config(dir)?;
            cfg.upstream.address = sim.local_addr.to_string();
            cfg.listen.smpp = "127.0.0.1:0".parse()?;
            cfg.listen.admin = "127.0.0.1:0".parse()?;
            (cfg.listen.cmpp, cfg.upstream.cmpp) = (None, None);
            cfg.consent.snapshot = Some(snap.to_owned());
            cfg.consent.journal = Some(dir.join(format!("journal-{id}")));
            cfg.consent.node = crate::consent::NodeId::parse(id)?;
            cfg.replication = Some(crate::replication::ReplicationConfig {
                redis: crate::replication::RedisUrl::parse(&format!("redis://127.0.0.1:{port}/0"))
                    .map_err(|e| anyhow::anyhow!(e))?,
                stream: "consentgate:demo".into(),
                on_disconnect: crate::replication::OnDisconnect::Serve,
                timeout: crate::replication::DEFAULT_TIMEOUT,
                caps: None,
            });
            let gw = crate::Gateway::bind(cfg).await?;
            let (addr, admin) = (gw.local_addr(), gw.admin_addr());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(gw.serve(async {
                let _ = rx.await;
            }));
            nodes.push((addr, admin, tx, task));
        }
        for (_, admin, _, _) in &nodes {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !matches!(crate::admin::request(*admin, "GET", "/readyz", None, None).await, Ok((200, _))) {
                anyhow::ensure!(std::time::Instant::now() < deadline, "node on {admin} not ready");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let (a, b) = (nodes[0].0, nodes[1].0);
        // A granted subscriber (i % 4 == 0) the earlier steps left alone.
        let who = (BASE + 8).to_string();
        let mut on_b = Client::bind(b, BindType::Transmitter, "demo-mkt", "demo").await?;
        let before = on_b.submit("1069012345", &who, b"Member day offer").await?;
        // demo-mkt's receiver on node A takes the reply; the simulator delivers MOs only to
        // receiver sessions, and this is the only demo-mkt one bound now.
        let rx = tokio::spawn(Client::bind(a, BindType::Receiver, "demo-mkt", "demo").await?.answer_delivers());
        let acks = sim.stats.deliver_acks.load(std::sync::atomic::Ordering::SeqCst);
        let tuiding: Vec<u8> = "退订".encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
        anyhow::ensure!(sim.inject_mo(Some("demo-mkt"), &who, "1069012345", 8, &tuiding), "no demo-mkt receiver");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sim.stats.deliver_acks.load(std::sync::atomic::Ordering::SeqCst) == acks {
            anyhow::ensure!(std::time::Instant::now() < deadline, "node A did not acknowledge the MO");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let acked = std::time::Instant::now();
        let after = loop {
            let st = on_b.submit("1069012345", &who, b"Member day offer").await?;
            if st != 0 || acked.elapsed() > Duration::from_secs(5) {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let took = acked.elapsed();
        rx.abort();
        for (_, _, tx, task) in nodes {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
        Ok(Some(format!(
            "7. two nodes, demo-a and demo-b, sharing live opt-outs through redis-server 127.0.0.1:{port}:\n     \
             to {who} through B: status 0x{before:08x}; {who} replies \"退订\" through A (acknowledged by A);\n     \
             through B again: {} (status 0x{after:08x}) {:.1} ms after A acknowledged the opt-out",
            if after == crate::policy::Reason::Revoked.default_status() { "rejected revoked" } else { "NOT refused" },
            took.as_secs_f64() * 1e3
        )))
    }
    .await;
    let _ = redis.kill();
    let _ = redis.wait();
    result
}
