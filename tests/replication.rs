//! Several nodes (architecture §8): real `consentgate run` processes sharing live
//! statements through a real `redis-server` (Debian's 7.0, started here on a loopback port
//! with `appendonly yes`, `appendfsync always`, `noeviction`), each gateway with its own
//! simulator, journal and `[node] id`.
//!
//! What the cases check: an MO opt-out acknowledged on A refuses the next submit on B (and a
//! statement posted to B's admin API refuses on A); Redis down — both keep deciding, A's
//! statements wait in its journal and reach B when Redis is back; Redis killed with
//! statements in flight and restarted from its AOF — nothing lost; Redis wiped — the nodes
//! republish from their journals and a new node learns everything; a restarted node is not
//! ready until it has caught up; two processes with one node id, and a node whose journal
//! was lost, are refused readiness with the reason.
//!
//! Without `redis-server` on PATH the tests print a notice and return, except under CI, where
//! they fail (`.ci/run` installs it). Each prints `REPL|…` lines for README's table.

mod common;
mod tools;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::node::{wait_for, Node, NodeOpts, REVOKED};
use common::redis::Redis;
use common::Esme;
use consentgate::replication::resp::Value;
use consentgate::sim::{SimConfig, SimHandle};
use consentgate::smpp::pdu::put_resp_with_id;
use consentgate::smpp::{self, cmd, BindType};

const TOKEN: &str = "replication-test-token";
const STREAM: &str = "cg:test";

/// A `redis-server` on a loopback port (None without one: see the module docs).
fn redis() -> Option<Redis> {
    Some(Redis::start(tools::debian_tool("redis-server", "redis-server")?))
}

/// The `[node]` and `[replication]` tables of node `id`.
fn tail(id: &str, redis: &str, on_disconnect: &str) -> String {
    format!(
        "[node]\nid = \"{id}\"\n\n[replication]\nredis = \"{redis}\"\nstream = \"{STREAM}\"\non_disconnect = \"{on_disconnect}\"\ntimeout = \"500ms\"\n"
    )
}

/// A gateway node with its own simulator.
struct Gw {
    node: Node,
    sim: SimHandle,
}

impl Gw {
    async fn new(id: &str, redis: &Redis, on_disconnect: &str) -> Gw {
        Gw::with_journal(id, redis, on_disconnect, None).await
    }

    async fn with_journal(id: &str, redis: &Redis, on_disconnect: &str, journal: Option<PathBuf>) -> Gw {
        let sim = consentgate::sim::start(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() })
            .await
            .expect("sim");
        let t = tail(id, &redis.url(), on_disconnect);
        let mut node = Node::new(NodeOpts { tail: &t, journal, ..NodeOpts::new(sim.local_addr) });
        node.start_with_env(&[("CONSENTGATE_ADMIN_TOKEN", TOKEN)]).await;
        Gw { node, sim }
    }

    async fn restart(&mut self) {
        self.node.stop().await;
        self.node.start_with_env(&[("CONSENTGATE_ADMIN_TOKEN", TOKEN)]).await;
    }

    async fn ready_within(&self, within: Duration) -> serde_json::Value {
        self.node.ready_within(within).await
    }

    /// Posts a revoke of `msisdn` for acme's entity; the statement is durable when it returns.
    async fn post_revoke(&self, msisdn: &str) {
        let body = format!(r#"{{"msisdn":"{msisdn}","kind":"revoke","entity":"acme-retail"}}"#);
        let (code, resp) =
            consentgate::admin::request(self.node.admin, "POST", "/v1/consent", Some(TOKEN), Some(&body))
                .await
                .expect("POST /v1/consent");
        assert_eq!(code, 201, "{resp}");
    }

    async fn metric(&self, series: &str) -> f64 {
        self.node.metric(series).await.unwrap_or(0.0)
    }
}

/// An acme transceiver on `addr` that answers every deliver_sm and enquire_link (so MOs
/// injected by the simulator are captured and acknowledged); aborted when dropped.
struct MoReceiver(tokio::task::JoinHandle<()>);

impl MoReceiver {
    async fn bind(addr: SocketAddr) -> MoReceiver {
        let mut e = Esme::bound(addr, "acme").await;
        MoReceiver(tokio::spawn(async move {
            loop {
                let f = match e.recv_within(Duration::from_secs(1)).await {
                    Err(()) => continue,
                    Ok(None) => return,
                    Ok(Some(f)) => f,
                };
                let seq = smpp::sequence(&f);
                let id = match smpp::command_id(&f) {
                    cmd::DELIVER_SM => cmd::DELIVER_SM_RESP,
                    cmd::ENQUIRE_LINK => cmd::ENQUIRE_LINK_RESP,
                    _ => continue,
                };
                let mut r = bytes::BytesMut::new();
                put_resp_with_id(&mut r, id, 0, seq, b"");
                if tokio::io::AsyncWriteExt::write_all(&mut e.stream, &r).await.is_err() {
                    return;
                }
            }
        }))
    }
}

impl Drop for MoReceiver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Injects "TD" from `who` at A's simulator and waits until A acknowledged it (the SMSC got
/// deliver_sm_resp 0): the opt-out is durable on A.
async fn mo_optout(a: &Gw, who: &str) -> Instant {
    let acks = &a.sim.stats.deliver_acks;
    let before = acks.load(Ordering::SeqCst);
    assert!(a.sim.inject_mo(Some("acme"), who, "1069012345", 0, b"TD"), "no acme session at A's simulator");
    wait_for("A acknowledges the MO", Duration::from_secs(5), || acks.load(Ordering::SeqCst) > before).await;
    Instant::now()
}

/// An acme transmitter: the simulator never delivers an MO to it (it would pick any acme
/// session otherwise, and the MO receiver must be the only one).
async fn transmitter(node: &Node) -> Esme {
    let mut e = Esme::connect(node.smpp).await;
    assert_eq!(e.bind(BindType::Transmitter, "acme", "pw").await, 0, "bind acme");
    e
}

/// Submits to `dest` on one session every 2 ms until it is refused REVOKED; the time of the
/// refusal, or a panic after `within`.
async fn refused_on(node: &Node, dest: &str, within: Duration) -> Instant {
    let mut e = transmitter(node).await;
    let deadline = Instant::now() + within;
    loop {
        let seq = e.submit(&common::submit_to(dest)).await;
        let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
        if smpp::command_status(&r) == REVOKED {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{dest} still accepted on {} after {within:?}", node.smpp);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether `dest` is refused REVOKED now (one submit).
async fn is_refused(node: &Node, dest: &str) -> bool {
    let mut e = transmitter(node).await;
    let seq = e.submit(&common::submit_to(dest)).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
    smpp::command_status(&r) == REVOKED
}

fn subscriber(t: u32, i: u32) -> String {
    format!("86137{t:02}{i:06}")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optout_on_a_refuses_on_b_and_the_admin_api_on_b_reaches_a() {
    let Some(redis) = redis() else { return };
    let a = Gw::new("a", &redis, "serve").await;
    let b = Gw::new("b", &redis, "serve").await;
    a.ready_within(Duration::from_secs(10)).await;
    let ready = b.ready_within(Duration::from_secs(10)).await;
    assert_eq!(ready["replication"]["caught_up"], true, "{ready}");
    let _rx = MoReceiver::bind(a.node.smpp).await;
    let mut lat = Vec::new();
    for i in 0..20 {
        let who = subscriber(1, i);
        assert!(!is_refused(&b.node, &who).await, "{who} refused before its opt-out");
        let acked = mo_optout(&a, &who).await;
        let refused = refused_on(&b.node, &who, Duration::from_secs(5)).await;
        lat.push(refused.saturating_duration_since(acked));
    }
    // The other way: the admin API on B.
    let who = subscriber(1, 999);
    b.post_revoke(&who).await;
    let t0 = Instant::now();
    refused_on(&a.node, &who, Duration::from_secs(5)).await;
    let api_lat = t0.elapsed();
    lat.sort();
    assert_eq!(a.metric("consentgate_replication_statements_total{direction=\"published\"}").await, 20.0);
    assert_eq!(b.metric("consentgate_replication_statements_total{direction=\"applied\"}").await, 20.0);
    assert_eq!(a.metric("consentgate_replication_statements_total{direction=\"applied\"}").await, 1.0);
    assert_eq!(redis.stream_len(STREAM).await, 21);
    let marker = redis.cmd(&["HGET", &format!("{STREAM}:published"), "a"]).await;
    assert_eq!(marker.as_int(), Some(20), "A's published-through marker");
    eprintln!(
        "REPL|MO on A, next submit on B refused|20|20|p50 {:.1} ms, max {:.1} ms (idle); B's admin API → A {:.1} ms",
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3,
        api_lat.as_secs_f64() * 1e3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_statements_wait_in_the_journal_and_arrive_when_it_is_back() {
    let Some(mut redis) = redis() else { return };
    let a = Gw::new("a", &redis, "serve").await;
    let b = Gw::new("b", &redis, "unready").await;
    a.ready_within(Duration::from_secs(10)).await;
    b.ready_within(Duration::from_secs(10)).await;
    let _rx = MoReceiver::bind(a.node.smpp).await;
    redis.kill9();
    // Both notice; A (serve) stays ready, B (unready) drops out of the balancer. B's
    // publisher and reader notice each on its own connection, in either order: wait for both.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, body) = b.node.ready().await;
        if code == 503 && body["replication"]["reader_connected"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "B (unready) still ready, or its reader connected, with Redis down: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = a.node.ready().await;
    assert_eq!(code, 200, "A (serve) must stay ready on local state: {body}");
    // Opt-outs on A while Redis is down: acknowledged and refused on A at once.
    let whos: Vec<String> = (0..10).map(|i| subscriber(2, i)).collect();
    for w in &whos {
        mo_optout(&a, w).await;
        assert!(is_refused(&a.node, w).await, "A refuses {w} on local state");
    }
    assert!(!is_refused(&b.node, &whos[0]).await, "B cannot know yet");
    // Redis back (its AOF replayed): A publishes the queue, B catches up and is ready again.
    redis.restart();
    let t0 = Instant::now();
    for w in &whos {
        refused_on(&b.node, w, Duration::from_secs(15)).await;
    }
    let back = t0.elapsed();
    b.ready_within(Duration::from_secs(10)).await;
    assert_eq!(redis.stream_len(STREAM).await, 10);
    eprintln!(
        "REPL|Redis down: 10 MO opt-outs on A, then Redis back|10|10|all refused on B {:.2} s after Redis restarted (reconnect back-off included); B (unready) 503 while down, A (serve) 200",
        back.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_with_statements_in_flight_and_restarted_loses_nothing() {
    let Some(mut redis) = redis() else { return };
    let a = Gw::new("a", &redis, "serve").await;
    let b = Gw::new("b", &redis, "serve").await;
    a.ready_within(Duration::from_secs(10)).await;
    b.ready_within(Duration::from_secs(10)).await;
    // 300 statements posted on A from 6 concurrent clients; Redis is killed after the first
    // ~100 are in and restarted from its AOF a moment later.
    let admin = a.node.admin;
    let mut posts = tokio::task::JoinSet::new();
    for c in 0..6u32 {
        posts.spawn(async move {
            for i in 0..50u32 {
                let who = subscriber(3, c * 50 + i);
                let body = format!(r#"{{"msisdn":"{who}","kind":"revoke","entity":"acme-retail"}}"#);
                let (code, resp) = consentgate::admin::request(admin, "POST", "/v1/consent", Some(TOKEN), Some(&body))
                    .await
                    .expect("POST");
                assert_eq!(code, 201, "{resp}");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    redis.wait_len(STREAM, 100, Duration::from_secs(10), "statements did not reach the stream").await;
    redis.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    while posts.join_next().await.is_some() {}
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let applied = b.metric("consentgate_replication_statements_total{direction=\"applied\"}").await;
        if applied >= 300.0 {
            assert_eq!(applied, 300.0, "each statement applied once");
            break;
        }
        assert!(Instant::now() < deadline, "B applied {applied} of 300");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in (0..300).step_by(37) {
        assert!(is_refused(&b.node, &subscriber(3, i)).await, "statement {i} lost");
    }
    let len = redis.stream_len(STREAM).await;
    assert!(len >= 300, "the stream holds {len}");
    eprintln!("REPL|Redis SIGKILLed with statements in flight, restarted from its AOF|300|300|0 lost; stream {len} entries (re-sent duplicates skipped by B)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_wiped_nodes_republish_and_a_new_node_learns_everything() {
    let Some(mut redis) = redis() else { return };
    let a = Gw::new("a", &redis, "serve").await;
    let b = Gw::new("b", &redis, "serve").await;
    a.ready_within(Duration::from_secs(10)).await;
    b.ready_within(Duration::from_secs(10)).await;
    for i in 0..5 {
        a.post_revoke(&subscriber(4, i)).await;
        b.post_revoke(&subscriber(4, 100 + i)).await;
    }
    redis.wait_len(STREAM, 10, Duration::from_secs(10), "statements did not reach the stream").await;
    redis.wipe();
    // Both reconnect, find no marker, and republish their own statements from their journals.
    redis.wait_len(STREAM, 10, Duration::from_secs(15), "not republished after the wipe").await;
    // A node that never saw the old stream gets everything.
    let c = Gw::new("c", &redis, "unready").await;
    c.ready_within(Duration::from_secs(10)).await;
    for i in 0..5 {
        assert!(is_refused(&c.node, &subscriber(4, i)).await, "A's statement {i} missing on C");
        assert!(is_refused(&c.node, &subscriber(4, 100 + i)).await, "B's statement {i} missing on C");
    }
    assert_eq!(c.metric("consentgate_replication_statements_total{direction=\"applied\"}").await, 10.0);
    eprintln!("REPL|Redis wiped (data deleted, restarted empty)|10|10|A and B republished from their journals; new node C ready with all 10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up_before_it_is_ready() {
    let Some(redis) = redis() else { return };
    let a = Gw::new("a", &redis, "serve").await;
    let mut b = Gw::new("b", &redis, "unready").await;
    a.ready_within(Duration::from_secs(10)).await;
    b.ready_within(Duration::from_secs(10)).await;
    b.node.stop().await;
    const N: u32 = 2000;
    let admin = a.node.admin;
    let mut posts = tokio::task::JoinSet::new();
    for c in 0..8u32 {
        posts.spawn(async move {
            for i in 0..N / 8 {
                let who = subscriber(5, c * (N / 8) + i);
                let body = format!(r#"{{"msisdn":"{who}","kind":"revoke","entity":"acme-retail"}}"#);
                let (code, _) = consentgate::admin::request(admin, "POST", "/v1/consent", Some(TOKEN), Some(&body))
                    .await
                    .expect("POST");
                assert_eq!(code, 201);
            }
        });
    }
    while posts.join_next().await.is_some() {}
    redis.wait_len(STREAM, N as i64, Duration::from_secs(10), "A did not publish everything").await;
    b.node.start_with_env(&[("CONSENTGATE_ADMIN_TOKEN", TOKEN)]).await;
    let t0 = Instant::now();
    // The moment B says ready, it holds every statement.
    b.ready_within(Duration::from_secs(15)).await;
    let ready_in = t0.elapsed();
    assert_eq!(
        b.metric("consentgate_replication_statements_total{direction=\"applied\"}").await,
        N as f64,
        "ready before it had caught up"
    );
    for i in (0..N).step_by(97) {
        assert!(is_refused(&b.node, &subscriber(5, i)).await);
    }
    // Restarted again: the statements are in its journal now, and the stream's copies are skipped.
    b.restart().await;
    b.ready_within(Duration::from_secs(15)).await;
    assert_eq!(b.metric("consentgate_replication_statements_total{direction=\"applied\"}").await, 0.0);
    assert_eq!(b.metric("consentgate_replication_statements_total{direction=\"duplicate\"}").await, N as f64);
    eprintln!(
        "REPL|Node B restarted after A published {N}|{N}|{N}|ready {:.0} ms after start, every statement applied first; restarted again: 0 applied, {N} skipped (in its journal)",
        ready_in.as_secs_f64() * 1e3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_node_id_and_a_lost_journal_are_refused_readiness() {
    let Some(redis) = redis() else { return };
    let a = Gw::new("a", &redis, "serve").await;
    a.ready_within(Duration::from_secs(10)).await;
    a.post_revoke(&subscriber(6, 1)).await;
    // A second process with the same node id.
    let twin = Gw::new("a", &redis, "serve").await;
    let blocked = blocked_reason(&twin.node).await;
    assert!(blocked.contains("share one [node] id"), "{blocked}");
    blocked_metric(&twin.node, Some("lease_held")).await;
    let (code, _) = a.node.ready().await;
    assert_eq!(code, 200, "the first holder keeps its lease");
    blocked_metric(&a.node, None).await;
    drop(twin);
    // A node whose journal is gone (a new disk) but whose id has published before.
    let dir = tempfile::tempdir().unwrap();
    let mut a = a;
    a.node.stop().await;
    let fresh = Gw::with_journal("a", &redis, "serve", Some(dir.path().join("empty-journal"))).await;
    let blocked = blocked_reason(&fresh.node).await;
    assert!(blocked.contains("journal was lost"), "{blocked}");
    blocked_metric(&fresh.node, Some("journal_behind_marker")).await;
    // Kept across restarts until an operator deletes the file.
    let file = dir.path().join("empty-journal").join("replication.blocked");
    assert!(std::fs::read_to_string(&file).is_ok_and(|t| t.contains("journal was lost")), "{}", file.display());
    let mut fresh = fresh;
    fresh.restart().await;
    assert!(blocked_reason(&fresh.node).await.contains("delete"), "still blocked after a restart");
    blocked_metric(&fresh.node, Some("journal_behind_marker")).await;
    drop(fresh);
    // Another journal that has grown past A's marker (here: 20 statements replicated from
    // another node) under A's id, once A has stopped: the marker no longer tells, the journal's
    // lease token does (`<stream>:owners`).
    let other = dir.path().join("other-journal");
    {
        use consentgate::consent::{EntityName, NewStatement, NodeId, StatementId, StatementKind, StatementSource};
        let (mut j, _) = consentgate::consent::journal::Journal::open(&other).unwrap();
        let sts: Vec<_> = (1..=20u64)
            .map(|seq| {
                NewStatement {
                    kind: StatementKind::Revoke,
                    source: StatementSource::Replica,
                    msisdn: 8613900000000 + seq,
                    entity: Some(EntityName::parse("acme-retail").unwrap()),
                    at: 1_780_000_000_000,
                }
                .with_id(StatementId { origin: NodeId::parse("z").unwrap(), seq })
            })
            .collect();
        j.append_batch(&sts).unwrap();
    }
    // The blocked process above held the lease until killed; as if its TTL had run out:
    redis.cmd(&["DEL", &format!("{STREAM}:lease:a")]).await;
    let twin = Gw::with_journal("a", &redis, "serve", Some(other)).await;
    let blocked = blocked_reason(&twin.node).await;
    assert!(blocked.contains("published from another journal"), "{blocked}");
    blocked_metric(&twin.node, Some("other_journal")).await;
    eprintln!("REPL|Two processes with one [node] id; a node's journal lost; another journal under its id|–|–|each refused readiness with the reason in /readyz");
}

/// `consentgate_replication_blocked`: 1 for `reason` (within 10 s), 0 for every other reason
/// (every one when `reason` is None).
async fn blocked_metric(node: &Node, reason: Option<&str>) {
    const REASONS: [&str; 6] =
        ["lease_held", "journal_behind_marker", "other_journal", "recorded", "stream_trimmed", "newer_schema"];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = node.metrics().await;
        let got: Vec<Option<f64>> = REASONS
            .iter()
            .map(|r| common::node::metric(&text, &format!("consentgate_replication_blocked{{reason=\"{r}\"}} ")))
            .collect();
        let want: Vec<Option<f64>> = REASONS.iter().map(|r| Some(if Some(*r) == reason { 1.0 } else { 0.0 })).collect();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "consentgate_replication_blocked for {reason:?}: {got:?}\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn blocked_reason(node: &Node) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = node.ready().await;
        if let Some(b) = body["replication"]["blocked"].as_array().and_then(|v| v.first()) {
            assert_eq!(code, 503, "{body}");
            return b.as_str().unwrap_or_default().to_owned();
        }
        assert!(Instant::now() < deadline, "not blocked: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_to_a_snapshot_and_a_node_too_old_for_the_stream() {
    let Some(redis) = redis() else { return };
    let a = Gw::new("a", &redis, "serve").await;
    a.ready_within(Duration::from_secs(10)).await;
    for i in 0..5 {
        a.post_revoke(&subscriber(7, i)).await;
    }
    redis.wait_len(STREAM, 5, Duration::from_secs(10), "statements did not reach the stream").await;
    // The daily build folds A's journal in; its watermark says a:5.
    let snap = a.node.dir.path().join("day1.cgsnap");
    tools::run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
            .args(["snapshot", "build", "--journal"])
            .arg(a.node.dir.path().join("journal"))
            .arg("--out")
            .arg(&snap),
    );
    // One more statement after the build: it must stay in the stream.
    a.post_revoke(&subscriber(7, 5)).await;
    redis.wait_len(STREAM, 6, Duration::from_secs(10), "statement 6 did not reach the stream").await;
    let trim = || {
        let out = tools::run_ok(
            std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
                .args(["replication", "trim", "--config"])
                .arg(&a.node.conf)
                .arg("--snapshot")
                .arg(&snap),
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    // A live reader that has not read past the first entry holds the trim back.
    let now = consentgate::time::Clock::system().now().unix_ms;
    redis.cmd(&["HSET", &format!("{STREAM}:cursors"), "lagger", &format!("0-1 {now}")]).await;
    let held = trim();
    assert_eq!((held["removed"].as_u64(), held["held_by_reader"].as_str()), (Some(0), Some("lagger")), "{held}");
    redis.cmd(&["HDEL", &format!("{STREAM}:cursors"), "lagger"]).await;
    let rep = trim();
    assert_eq!((rep["removed"].as_u64(), rep["left"].as_u64()), (Some(5), Some(1)), "{rep}");
    assert_eq!(rep["through"]["a"], 5, "{rep}");
    let status: serde_json::Value = serde_json::from_str(&tools::run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
            .args(["replication", "status", "--config"])
            .arg(&a.node.conf),
    ))
    .unwrap();
    assert_eq!(
        (status["length"].as_i64(), &status["trimmed_through"]["a"]),
        (Some(1), &serde_json::json!(5)),
        "{status}"
    );
    assert_eq!(status["published_through"]["a"], 6, "{status}");
    // A new node without that snapshot cannot catch up from what is left: refused readiness.
    let c = Gw::new("c", &redis, "serve").await;
    let why = blocked_reason(&c.node).await;
    assert!(why.contains("trimmed through a's statement 5"), "{why}");
    blocked_metric(&c.node, Some("stream_trimmed")).await;
    drop(c);
    // With the snapshot it is ready and holds all six.
    let sim = consentgate::sim::start(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() })
        .await
        .expect("sim");
    let t = tail("c2", &redis.url(), "unready");
    let consent = format!("snapshot = \"{}\"", snap.display());
    let mut c2 = Node::new(NodeOpts { tail: &t, consent_extra: &consent, ..NodeOpts::new(sim.local_addr) });
    c2.start().await;
    let c2 = Gw { node: c2, sim };
    c2.ready_within(Duration::from_secs(10)).await;
    for i in 0..6 {
        assert!(is_refused(&c2.node, &subscriber(7, i)).await, "statement {i} missing on the new node");
    }
    // The next daily build from C2's journal: it lacks a's 1-5 (trimmed before C2 joined; the
    // snapshot it started from holds them) and says so. Built from that journal alone the new
    // snapshot would claim a:6 and hold only the sixth: refused. With the snapshot as base it
    // holds all six.
    let journal = c2.node.dir.path().join("journal");
    let partial = std::fs::read_to_string(journal.join("replication.partial")).expect("the journal's gap recorded");
    assert!(partial.lines().any(|l| l == "a 5"), "{partial}");
    let day2 = c2.node.dir.path().join("day2.cgsnap");
    let refused = build_snapshot(&journal, &day2, None);
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && text.contains("lacks statements of a through seq 5"), "{text}");
    let built = build_snapshot(&journal, &day2, Some(&snap));
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    for i in 0..6 {
        assert!(revoked_in(&day2, &subscriber(7, i)), "statement {i} missing from the next build");
    }
    eprintln!("REPL|Stream trimmed to a snapshot's watermarks|6|6|5 removed, 1 kept; a new node without the snapshot refused readiness (reason named), with it ready holding all 6; the next build from its journal refused without --base, with it holding all 6");
}

/// `snapshot build --journal DIR --out OUT [--base BASE]`.
fn build_snapshot(journal: &Path, out: &Path, base: Option<&Path>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"));
    cmd.args(["snapshot", "build", "--journal"]).arg(journal).arg("--out").arg(out);
    if let Some(b) = base {
        cmd.arg("--base").arg(b);
    }
    cmd.output().unwrap()
}

/// Whether snapshot `snap` holds a revoke of (`who`, acme-retail) (`snapshot lookup`).
fn revoked_in(snap: &Path, who: &str) -> bool {
    tools::run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
            .args(["snapshot", "lookup"])
            .arg(snap)
            .arg(who)
            .args(["--entity", "acme-retail"]),
    )
    .contains("entity acme-retail: revoked")
}

/// A node started from a snapshot skips the statements it holds, so its journal lacks them;
/// the next daily build from that journal alone would claim them and not hold them (every
/// node would then drop them: opt-outs lost). The journal records the gap, the build refuses
/// it without a base and, with the snapshot as base, holds everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_from_a_snapshot_records_its_journal_gap_for_the_next_build() {
    let Some(redis) = redis() else { return };
    let a = Gw::new("a", &redis, "serve").await;
    a.ready_within(Duration::from_secs(10)).await;
    for i in 0..3 {
        a.post_revoke(&subscriber(9, i)).await;
    }
    redis.wait_len(STREAM, 3, Duration::from_secs(10), "statements did not reach the stream").await;
    let day1 = a.node.dir.path().join("day1.cgsnap");
    let built = build_snapshot(&a.node.dir.path().join("journal"), &day1, None);
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    // B joins with day 1's snapshot and an empty journal; then one more statement on A.
    let sim = consentgate::sim::start(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() })
        .await
        .expect("sim");
    let t = tail("b", &redis.url(), "unready");
    let consent = format!("snapshot = \"{}\"", day1.display());
    let mut b = Node::new(NodeOpts { tail: &t, consent_extra: &consent, ..NodeOpts::new(sim.local_addr) });
    b.start().await;
    let b = Gw { node: b, sim };
    b.ready_within(Duration::from_secs(10)).await;
    a.post_revoke(&subscriber(9, 3)).await;
    refused_on(&b.node, &subscriber(9, 3), Duration::from_secs(5)).await;
    let journal = b.node.dir.path().join("journal");
    let partial = std::fs::read_to_string(journal.join("replication.partial")).expect("the journal's gap recorded");
    assert!(partial.lines().any(|l| l == "a 3"), "{partial}");
    let day2 = b.node.dir.path().join("day2.cgsnap");
    let refused = build_snapshot(&journal, &day2, None);
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && text.contains("lacks statements of a through seq 3"), "{text}");
    assert!(!day2.exists(), "nothing written");
    let built = build_snapshot(&journal, &day2, Some(&day1));
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    for i in 0..4 {
        assert!(revoked_in(&day2, &subscriber(9, i)), "statement {i} missing from the next build");
    }
    // Day 3 from the same journal with day 2 as base: still all four (day 2's `.live` carries them).
    let day3 = b.node.dir.path().join("day3.cgsnap");
    let built = build_snapshot(&journal, &day3, Some(&day2));
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    assert!((0..4).all(|i| revoked_in(&day3, &subscriber(9, i))));
    eprintln!("REPL|Node B started from a snapshot, its journal then built from|4|4|the gap (a 1-3) recorded in replication.partial; the build refused without --base, with it and again a day later all 4 held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_takes_its_lease_back_and_a_flushall_is_repaired() {
    let Some(redis) = redis() else { return };
    let mut a = Gw::new("a", &redis, "serve").await;
    let b = Gw::new("b", &redis, "serve").await;
    a.ready_within(Duration::from_secs(10)).await;
    b.ready_within(Duration::from_secs(10)).await;
    a.post_revoke(&subscriber(8, 1)).await;
    refused_on(&b.node, &subscriber(8, 1), Duration::from_secs(5)).await;
    // SIGKILL: the lease stays in Redis for its TTL (15 s), but the token is in A's journal
    // directory, so A restarted takes it back at once.
    a.node.signal("-KILL");
    a.node.child = None;
    let t0 = Instant::now();
    a.node.start_with_env(&[("CONSENTGATE_ADMIN_TOKEN", TOKEN)]).await;
    a.ready_within(Duration::from_secs(5)).await;
    a.post_revoke(&subscriber(8, 2)).await;
    refused_on(&b.node, &subscriber(8, 2), Duration::from_secs(5)).await;
    let back = t0.elapsed();
    assert!(back < Duration::from_secs(10), "the lease TTL was waited out: {back:?}");
    // Everything deleted under connected publishers: both notice at their next lease refresh
    // (every 5 s) and republish from their journals.
    redis.cmd(&["FLUSHALL"]).await;
    let t1 = Instant::now();
    redis.wait_len(STREAM, 2, Duration::from_secs(15), "not republished after FLUSHALL").await;
    let repaired = t1.elapsed();
    eprintln!(
        "REPL|Node SIGKILLed and restarted; then FLUSHALL under connected nodes|2|2|restarted node published again {:.0} ms after the kill (lease TTL 15 s not waited); stream repaired {:.1} s after FLUSHALL",
        back.as_secs_f64() * 1e3,
        repaired.as_secs_f64()
    );
}

/// A failover behind a stable address with the connection kept open: the promoted replica
/// lacks A's last two statements and its published-through marker is behind. A's next batch,
/// sent at once (before any lease refresh could notice), must not move the marker over them:
/// the publish script refuses it, A reconnects and republishes from the marker, and a node
/// that joins later learns all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_set_back_under_a_connected_publisher_is_republished_from() {
    let Some(redis) = redis() else { return };
    let a = Gw::new("a", &redis, "serve").await;
    a.ready_within(Duration::from_secs(10)).await;
    for i in 0..3 {
        a.post_revoke(&subscriber(10, i)).await;
    }
    redis.wait_len(STREAM, 3, Duration::from_secs(10), "statements did not reach the stream").await;
    let ids: Vec<String> = match redis.cmd(&["XRANGE", STREAM, "-", "+"]).await {
        Value::Array(v) => v
            .iter()
            .filter_map(|e| match e {
                Value::Array(p) => p.first().and_then(Value::as_str).map(str::to_owned),
                _ => None,
            })
            .collect(),
        v => panic!("XRANGE: {v:?}"),
    };
    assert_eq!(ids.len(), 3);
    let published = format!("{STREAM}:published");
    assert_eq!(redis.cmd(&["HGET", &published, "a"]).await.as_int(), Some(3));
    // The "replica": the last two entries missing, the marker at the first.
    redis.cmd(&["XDEL", STREAM, &ids[1], &ids[2]]).await;
    redis.cmd(&["HSET", &published, "a", "1"]).await;
    let t0 = Instant::now();
    a.post_revoke(&subscriber(10, 3)).await;
    redis.wait_len(STREAM, 4, Duration::from_secs(10), "not republished").await;
    let repaired = t0.elapsed();
    assert!(repaired < Duration::from_secs(4), "repaired by the publish script, not the lease refresh: {repaired:?}");
    assert_eq!(redis.cmd(&["HGET", &published, "a"]).await.as_int(), Some(4));
    let c = Gw::new("c", &redis, "unready").await;
    c.ready_within(Duration::from_secs(10)).await;
    for i in 0..4 {
        assert!(is_refused(&c.node, &subscriber(10, i)).await, "statement {i} lost from the stream");
    }
    eprintln!(
        "REPL|Marker set back under a connected publisher (failover behind a proxy)|4|4|next batch refused by the script, republished from the marker in {:.0} ms; a new node holds all 4",
        repaired.as_secs_f64() * 1e3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_writes_and_the_statements_wait_in_the_journal() {
    let Some(redis) = redis() else { return };
    let a = Gw::new("a", &redis, "serve").await;
    let b = Gw::new("b", &redis, "unready").await;
    a.ready_within(Duration::from_secs(10)).await;
    b.ready_within(Duration::from_secs(10)).await;
    // noeviction with no room: every XADD is refused (OOM), nothing is evicted.
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]).await;
    let whos: Vec<String> = (0..5).map(|i| subscriber(9, i)).collect();
    for w in &whos {
        a.post_revoke(w).await;
        assert!(is_refused(&a.node, w).await, "A refuses {w} on its own state");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(redis.stream_len(STREAM).await, 0, "nothing fitted");
    assert!(a.metric("consentgate_replication_errors_total{conn=\"publisher\",kind=\"server\"}").await >= 1.0);
    // B still reads (its writes are best effort) and stays ready.
    let (code, body) = b.node.ready().await;
    assert_eq!(code, 200, "{body}");
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]).await;
    let t0 = Instant::now();
    for w in &whos {
        refused_on(&b.node, w, Duration::from_secs(10)).await;
    }
    eprintln!(
        "REPL|Redis full (noeviction, maxmemory reached)|5|5|XADDs refused, nothing evicted; the 5 waited in A's journal and were refused on B {:.2} s after room came back",
        t0.elapsed().as_secs_f64()
    );
}
