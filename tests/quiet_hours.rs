//! Quiet hours with the real binary at a chosen wall-clock time: the gateway runs under
//! Debian's `faketime` at 22:30 in Shanghai (14:30 UTC), the project's SMSC simulator and load
//! generator around it run at the real time. Marketing traffic is refused with `quiet_hours`
//! (0x403), transactional traffic passes, and the admin lookup shows the subscriber's local
//! time. Skipped (with a notice) without `faketime` on a developer machine; a failure under CI.

mod common;
mod tools;

use std::path::Path;
use std::process::{Command, Stdio};

use common::conf::{AccountConf, GwConf};
use common::node::free_addr;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_consentgate");

use tools::{spawn_group as spawn, wait_port};

/// `consentgate load` of `count` random submits as `system_id`; the report's statuses.
fn load(gw: u16, system_id: &str, count: u32, dir: &Path) -> Value {
    let report = dir.join(format!("{system_id}.json"));
    let out = Command::new(BIN)
        .args(["load", "--target", &format!("127.0.0.1:{gw}"), "--system-id", system_id, "--sessions", "1"])
        .args(["--count", &count.to_string(), "--duration", "10s", "--report"])
        .arg(&report)
        .output()
        .expect("run load");
    assert!(out.status.success(), "load failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    r["statuses"].clone()
}

#[test]
fn the_real_binary_at_22_30_in_shanghai_refuses_marketing_only() {
    let Some(faketime) = tools::debian_tool("faketime", "faketime") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (sim_a, gw_a, admin) = (free_addr(), free_addr(), free_addr());
    let (sim_p, gw_p) = (sim_a.port(), gw_a.port());
    let mut sim = spawn(Command::new(BIN).args(["smsc-sim", "--listen", &sim_a.to_string()]).stdout(Stdio::null()));
    wait_port(sim_p, &mut sim, "smsc-sim");
    let cfg = dir.path().join("gw.toml");
    GwConf::new(gw_a, admin, sim_a)
        .set("policy", "regime = \"opt-out\"")
        .set("policy", "on_snapshot_unavailable = \"allow\"")
        .set("policy.quiet_hours", "start = \"21:00\"")
        .set("policy.quiet_hours", "end = \"08:00\"")
        .set("policy.quiet_hours", "timezone = \"Asia/Shanghai\"")
        .set("policy.timezones", "\"1\" = \"America/New_York\"")
        .account(AccountConf::marketing("mkt").entity("mkt-brand").licence("B2-1"))
        .account(AccountConf::transactional("otp").entity("otp-brand").licence("B2-2"))
        .write(&cfg);
    // '@': the fake clock starts at that instant and runs; the monotonic clock stays real
    // (tokio's timers).
    let mut gw = spawn(
        Command::new(faketime)
            .args(["-f", "@2026-06-01 14:30:00"])
            .arg(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("TZ", "UTC")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
    );
    wait_port(gw_p, &mut gw, "gateway");

    let marketing = load(gw_p, "mkt", 20, dir.path());
    assert_eq!(marketing, serde_json::json!({ "0x00000403": 20 }), "marketing at 22:30 Shanghai");
    let transactional = load(gw_p, "otp", 20, dir.path());
    assert_eq!(transactional, serde_json::json!({ "0x00000000": 20 }), "transactional at 22:30 Shanghai");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (code, body) = rt
        .block_on(consentgate::admin::request(admin, "GET", "/v1/consent/8613800138000?entity=mkt-brand", None, None))
        .expect("admin lookup");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let q = &v["decision"]["quiet_hours"];
    assert_eq!(
        (q["zone"].as_str(), q["inside"].as_bool(), q["window"].as_str()),
        (Some("Asia/Shanghai"), Some(true), Some("21:00-08:00")),
        "{body}"
    );
    assert!(q["local_time"].as_str().is_some_and(|t| t.starts_with("22:3")), "{body}");
    assert_eq!(v["decision"]["reason"], "quiet_hours", "{body}");
    // A New York number at the same instant: 10:30 there, outside the window.
    let (_, body) = rt
        .block_on(consentgate::admin::request(admin, "GET", "/v1/consent/0012125550100?entity=mkt-brand", None, None))
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["decision"]["quiet_hours"]["inside"], false, "{body}");
    assert_eq!(v["decision"]["verdict"], "accepted", "{body}");
}
