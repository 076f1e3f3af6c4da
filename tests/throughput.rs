//! Step 3, throughput: an account's `max_tps` over all its sessions, through the real gateway
//! on loopback with the project's simulator upstream and load generator in front.

mod common;

use std::time::Duration;

use consentgate::config::Config;
use consentgate::load::{run, LoadConfig};
use consentgate::smpp::status;

/// Four sessions send as fast as their windows allow for 2 s; the account may send 400/s.
/// What is forwarded stays within 5 % of that (plus the burst of 20); the rest is answered
/// `throttled` (0x58) at once; a second account on the same gateway is not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tps_caps_the_account_over_all_its_sessions() {
    let sim = consentgate::sim::start(common::sim_cfg()).await.expect("sim");
    let text = format!(
        r#"
[listen]
smpp = "127.0.0.1:0"
admin = "127.0.0.1:0"
[upstream]
address = "{}"
[policy]
on_snapshot_unavailable = "allow"
[[account]]
system_id = "capped"
class = "transactional"
licence = "B2-1"
max_tps = 400
[[account]]
system_id = "free"
class = "transactional"
licence = "B2-2"
"#,
        sim.local_addr
    );
    let gw = common::Gw::start(Config::parse(&text).expect("config")).await;
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
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let ok = *r.statuses.get("0x00000000").unwrap_or(&0) as f64;
    let throttled = *r.statuses.get(&format!("{:#010x}", status::ESME_RTHROTTLED)).unwrap_or(&0);
    assert_eq!(r.unanswered, 0);
    assert!(throttled > 1000, "overload expected: {:?}", r.statuses);
    let want = 400.0 * secs;
    assert!(ok <= want * 1.05 + 20.0 && ok >= want * 0.90, "forwarded {ok} in {secs} s, cap 400/s: {:?}", r.statuses);

    let r = tokio::time::timeout(Duration::from_secs(20), run(load("free", 2000))).await.expect("in time").unwrap();
    assert_eq!(r.statuses.get("0x00000000"), Some(&2000), "{:?}", r.statuses);
    gw.stop().await;
}
