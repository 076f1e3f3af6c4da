//! Steps 4, 5 and 8 with the real binary: content rules, the commercial-message checks and the
//! frequency caps, on traffic from the project's load generator (scenario lines with the
//! status each must get) through `consentgate run` to the SMSC simulator. Concatenated
//! messages are decided on their whole text: the opt-out hint in the last part counts, a
//! blocked word across a part boundary is found. The admin lookup shows the counts.

mod common;

use std::time::Duration;

use common::conf::{AccountConf, GwConf};
use common::node::free_addr;
use common::Kill;
use consentgate::load::{Encoding, LoadConfig, ScenarioLine};
use serde_json::Value;

fn line(dest: &str, text: &str, expect: &str) -> ScenarioLine {
    ScenarioLine {
        source: "1069012345".into(),
        destination: dest.into(),
        text: text.into(),
        encoding: Encoding::Ucs2,
        expect: Some(expect.into()),
        tlvs: Default::default(),
    }
}

const D1: &str = "8613800000001";
const D2: &str = "8613800000002";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_commercial_and_frequency_steps_through_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let sim = consentgate::sim::start(common::sim_cfg()).await.expect("sim");
    let (addr, admin) = (free_addr(), free_addr());
    let conf = dir.path().join("gw.toml");
    GwConf::new(addr, admin, sim.local_addr)
        .set("policy", "regime = \"opt-out\"")
        .set("policy", "on_snapshot_unavailable = \"allow\"")
        .set("policy", "reassembly_timeout = \"3s\"")
        .set("policy.commercial", "require_signature = true")
        .set("policy.commercial", "opt_out_hints = [\"reply stop\"]")
        .set("policy.frequency", "per_entity_per_day = 2")
        .set("policy.frequency", "same_text_window = \"1h\"")
        .rule("gambling", &["casino"], "reject")
        .account(AccountConf::marketing("acme").entity("acme-retail").licence("B2-1").signatures(&["Acme"]))
        .write(&conf);
    let _gw = Kill(common::spawn_gateway(&conf));
    assert!(
        common::eventually(|| std::net::TcpStream::connect(addr).is_ok()).await
            || common::eventually(|| std::net::TcpStream::connect(addr).is_ok()).await,
        "gateway listening"
    );

    // UCS-2 (for the 【】): two parts of 67 characters, the signature in the first, the hint
    // in the second.
    let filler = "x".repeat(60);
    let long_ok = format!("【Acme】 weekend sale {filler} reply STOP to opt out");
    // "casino" across the boundary of parts 1 and 2 (part 1 is characters 0..67).
    let mut straddle = "【Acme】 ".to_string();
    straddle.push_str(&"y".repeat(64 - straddle.chars().count()));
    straddle.push_str("casino night, reply stop");
    assert!(straddle.chars().take(67).collect::<String>().ends_with("cas"), "{straddle}");
    let scenario = vec![
        line(D1, &long_ok, "ok"),
        line(D1, &long_ok, "0x404"), // the same text within the hour
        line(D1, &straddle, "0x406"),
        line(D1, "【Acme】 second offer, reply stop", "ok"),
        line(D1, "【Acme】 third offer, reply stop", "0x404"), // two a day
        line(D2, "no signature here, reply stop", "0x407"),
        line(D2, "【Acme】 no hint at all", "0x408"),
        line(D2, "[Acme] square brackets, reply stop", "0x407"),
    ];
    let parts: u64 = 2 + 2 + 2 + 5;
    let r = consentgate::load::run(LoadConfig {
        target: addr,
        system_id: "acme".into(),
        sessions: 1,
        window: 20,
        count: parts,
        duration: Duration::from_secs(20),
        scenario: Some(scenario),
        ..Default::default()
    })
    .await
    .expect("load");
    assert_eq!((r.unanswered, r.expect_mismatches, r.responses), (0, 0, parts), "{r:?}");

    let (code, body) =
        consentgate::admin::request(admin, "GET", &format!("/v1/consent/{D1}?entity=acme-retail"), None, None)
            .await
            .expect("admin");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let f = &v["decision"]["frequency"];
    assert_eq!((f["entity_today"].as_u64(), f["per_entity_per_day"].as_u64()), (Some(2), Some(2)), "{body}");
    assert_eq!(v["decision"]["reason"], "frequency_cap", "{body}");
    sim.shutdown().await;
}
