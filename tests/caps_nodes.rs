//! Frequency caps across nodes (`replication.caps`): three real `consentgate run` processes,
//! each with its own simulator, sharing a real `redis-server`. A subscriber capped at 4
//! messages a day from one entity gets 4 through any mix of nodes; a restarted node and a
//! node that joins later keep the cap (they load the day's counts before they are ready);
//! Redis killed and restarted: the nodes decide on their own counts meanwhile, and exchange
//! again once it is back; sent faster than the exchange interval, the overshoot stays within
//! the stated bound. Prints `CAPS|…` lines with the measured figures.
//!
//! Without `redis-server` on PATH the tests print a notice and return, except under CI, where
//! they fail (`.ci/run` installs it).

mod common;
mod tools;

use std::time::{Duration, Instant};

use common::node::{Node, NodeOpts};
use common::redis::Redis;
use consentgate::sim::{SimConfig, SimHandle};

const STREAM: &str = "cg:caps-test";
const CAP: usize = 4;
const FREQUENCY_CAP: u32 = 0x404;
/// `replication.caps_interval` in these tests.
const INTERVAL_MS: u64 = 50;

fn redis() -> Option<Redis> {
    Some(Redis::start(tools::debian_tool("redis-server", "redis-server")?))
}

struct Gw {
    node: Node,
    _sim: SimHandle,
}

impl Gw {
    async fn new(id: &str, redis: &Redis, on_disconnect: &str) -> Gw {
        Gw::with(id, redis, on_disconnect, INTERVAL_MS, 10_000).await
    }

    /// A node sending every `interval_ms`, its tables sized for `subscribers`.
    async fn with(id: &str, redis: &Redis, on_disconnect: &str, interval_ms: u64, subscribers: u64) -> Gw {
        let sim = consentgate::sim::start(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() })
            .await
            .expect("sim");
        let tail = format!(
            "[policy.frequency]\nper_entity_per_day = {CAP}\nsubscribers = {subscribers}\n\n\
             [node]\nid = \"{id}\"\n\n[replication]\nredis = \"{}\"\nstream = \"{STREAM}\"\ntimeout = \"500ms\"\n\
             caps_interval = \"{interval_ms}ms\"\ncaps_on_disconnect = \"{on_disconnect}\"\n",
            redis.url()
        );
        let mut node = Node::new(NodeOpts { tail: &tail, ..NodeOpts::new(sim.local_addr) });
        node.start().await;
        let gw = Gw { node, _sim: sim };
        gw.ready_within(Duration::from_secs(15)).await;
        gw
    }

    async fn ready_within(&self, within: Duration) -> serde_json::Value {
        self.node.ready_within(within).await
    }

    async fn restart(&mut self) {
        self.node.stop().await;
        self.node.start().await;
        self.ready_within(Duration::from_secs(15)).await;
    }
}

/// Sends to `dest` through `nodes` in turn, `gap` apart, `n` messages; how many were
/// accepted. Every refusal must be `frequency_cap`.
async fn send_round(nodes: &[&Gw], dest: &str, n: usize, gap: Duration) -> usize {
    let mut ok = 0;
    for i in 0..n {
        let st = nodes[i % nodes.len()].node.submit_status(dest).await;
        match st {
            0 => ok += 1,
            FREQUENCY_CAP => {}
            other => panic!("message {i} to {dest}: status 0x{other:x}"),
        }
        tokio::time::sleep(gap).await;
    }
    ok
}

#[tokio::test]
async fn a_subscriber_capped_at_4_gets_4_through_any_mix_of_nodes() {
    let Some(mut redis) = redis() else { return };
    let a = Gw::new("a", &redis, "local").await;
    let mut b = Gw::new("b", &redis, "local").await;
    let c = Gw::new("c", &redis, "local").await;
    // Slower than the exchange (2 × interval + a round trip): exactly the cap.
    let gap = Duration::from_millis(3 * INTERVAL_MS);
    let ok = send_round(&[&a, &b, &c], "+8613800000101", 3 * CAP, gap).await;
    assert_eq!(ok, CAP, "messages accepted through three nodes");
    println!("CAPS|three nodes, {} ms apart|{ok} of {} accepted (cap {CAP})", gap.as_millis(), 3 * CAP);

    // Counted on every node: the other nodes refuse at once.
    for g in [&a, &b, &c] {
        assert_eq!(g.node.submit_status("+8613800000101").await, FREQUENCY_CAP);
    }
    assert!(a.node.metric("consentgate_caps_exchange_marks_total{direction=\"applied\"}").await.unwrap_or(0.0) > 0.0);

    // A restarted node keeps the cap (its state file, then the stream after it).
    b.restart().await;
    assert_eq!(b.node.submit_status("+8613800000101").await, FREQUENCY_CAP, "restarted node forgot the count");
    // A node that joins later loads the day's counts from the stream before it is ready.
    let d = Gw::new("d", &redis, "local").await;
    assert_eq!(d.node.submit_status("+8613800000101").await, FREQUENCY_CAP, "new node does not know the count");

    // Redis killed: each node decides on what it has (local: the cap per node for new
    // counts), and the exchange resumes when it is back.
    redis.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.node.metric("consentgate_caps_exchange_connected").await != Some(0.0) {
        assert!(Instant::now() < deadline, "the exchange did not notice Redis gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.node.submit_status("+8613800000101").await, FREQUENCY_CAP, "the known count holds without Redis");
    let ok_a = send_round(&[&a], "+8613800000102", 2, Duration::ZERO).await;
    assert_eq!(ok_a, 2, "under the cap, a node without Redis still forwards");
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.node.metric("consentgate_caps_exchange_connected").await != Some(1.0)
        || a.node.metric("consentgate_caps_exchange_connected").await != Some(1.0)
    {
        assert!(Instant::now() < deadline, "the exchange did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What a counted while Redis was down reaches c: 2 more for ...102 there leave 0.
    tokio::time::sleep(Duration::from_millis(4 * INTERVAL_MS)).await;
    let ok_c = send_round(&[&c], "+8613800000102", CAP, Duration::ZERO).await;
    assert_eq!(ok_c, CAP - 2, "counts made while Redis was down reached the other nodes");
    drop(d);
}

/// Faster than the exchange: messages to one subscriber round-robin over three nodes every
/// 30 ms, less than `2 × caps_interval` apart; the overshoot is what the other nodes allow
/// before the marks arrive, within the stated bound `⌈r_others × (2 × interval + RTT)⌉`.
#[tokio::test]
async fn sent_faster_than_the_exchange_the_overshoot_stays_within_the_bound() {
    let Some(redis) = redis() else { return };
    let nodes =
        [Gw::new("a", &redis, "local").await, Gw::new("b", &redis, "local").await, Gw::new("c", &redis, "local").await];
    let gap = Duration::from_millis(30);
    let n = 5 * CAP;
    let t0 = Instant::now();
    let accepted = send_round(&[&nodes[0], &nodes[1], &nodes[2]], "+8613800000201", n, gap).await;
    let secs = t0.elapsed().as_secs_f64();
    // The rate at which the two other nodes message the subscriber, and the bound.
    let rate_others = (n as f64 / secs) * 2.0 / 3.0;
    let bound = (rate_others * (2.0 * INTERVAL_MS as f64 / 1000.0 + 0.005)).ceil() as usize;
    println!(
        "CAPS|three nodes, {} ms apart ({:.0} msg/s)|{accepted} of {n} accepted (cap {CAP}, stated bound: cap + {bound})",
        gap.as_millis(),
        n as f64 / secs
    );
    assert!(accepted >= CAP, "{accepted}: fewer than the cap");
    assert!(accepted <= CAP + bound, "{accepted} accepted: more than cap {CAP} + bound {bound}");
}

/// A busy interval: 100 000 messages to distinct subscribers through a node that sends every
/// 10 s, so one send holds at least 50 000 marks (more than one stream entry's 32 768, and
/// more than the 1 MiB a reply's bulk string may be: one entry of them used to break the
/// other nodes' reads). Every mark the node sends reaches the other node.
#[tokio::test]
async fn a_busy_interval_reaches_the_other_nodes_in_several_entries() {
    let Some(redis) = redis() else { return };
    let a = Gw::with("a", &redis, "local", 10_000, 1_000_000).await;
    let b = Gw::new("b", &redis, "local").await;
    let report = a.node.dir.path().join("load.json");
    // The simulators run on this test's runtime: the load runs beside it, not blocking it.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
        .args(["load", "--target", &a.node.smpp.to_string(), "--system-id", "acme", "--sessions", "2"])
        .args(["--window", "200", "--count", "100000", "--duration", "60s"])
        .args(["--destinations", "8613900000000-8613999999999", "--report"])
        .arg(&report)
        .output()
        .await
        .expect("run load");
    assert!(out.status.success(), "load failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let accepted = r["statuses"]["0x00000000"].as_u64().unwrap_or(0);
    assert!(accepted > 99_000, "accepted {accepted}: {}", r["statuses"]);
    // a sends within 10 s; b reads within its interval after that.
    let deadline = Instant::now() + Duration::from_secs(30);
    let sent = "consentgate_caps_exchange_marks_total{direction=\"sent\"}";
    let applied = "consentgate_caps_exchange_marks_total{direction=\"applied\"}";
    loop {
        let (s, p) = (a.node.metric(sent).await.unwrap_or(0.0), b.node.metric(applied).await.unwrap_or(0.0));
        if s as u64 == accepted && p as u64 == accepted {
            break;
        }
        assert!(Instant::now() < deadline, "a sent {s}, b applied {p} of {accepted} accepted");
        assert_eq!(b.node.metric("consentgate_caps_exchange_connected").await, Some(1.0), "b's exchange broke");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "CAPS|one node, 100 000 messages in one 10 s interval|{accepted} marks sent and applied by the other node"
    );
}
