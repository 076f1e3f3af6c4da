//! A→B effect latency of live opt-outs across two nodes (architecture §8), under load.
//!
//! `cargo bench --bench replication [-- --rate 50000 --probes 300 --snapshot FILE]`
//!
//! Runs a real `redis-server` (`appendfsync always`), two `consentgate run` processes A and B
//! (release build, each with a journal and `[replication]`), one SMSC simulator per node (in
//! this process), and `consentgate load` against each node at `--rate` msg/s (default 50 000
//! each: 100 000 msg/s in all). Meanwhile, `--probes` times: an MO "TD" from a fresh
//! subscriber is injected at A's simulator; the moment A acknowledges it (deliver_sm_resp 0,
//! i.e. durable in A's journal) starts the clock; a probe session on B submits to that
//! subscriber back to back until B refuses it (0x401) and stops the clock (resolution: one
//! submit round trip through B, about 0.1-0.5 ms under this load). Prints p50,
//! p90, p99 and max, and the loads' throughput and latency; writes
//! `target/bench/replication.{json,md}`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use consentgate::load::client::Client;
use consentgate::sim::{SimConfig, SimHandle};
use consentgate::smpp::BindType;

const BIN: &str = env!("CARGO_BIN_EXE_consentgate");
const REVOKED: u32 = 0x401;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn config(
    dir: &Path,
    id: &str,
    smpp: u16,
    admin: u16,
    upstream: SocketAddr,
    redis: u16,
    snapshot: Option<&str>,
) -> PathBuf {
    let snap = snapshot.map(|s| format!("snapshot = \"{s}\"\n")).unwrap_or_default();
    let text = format!(
        r#"
[listen]
smpp = "127.0.0.1:{smpp}"
admin = "127.0.0.1:{admin}"
[upstream]
address = "{upstream}"
[session]
window = 1000
[policy]
default_country_code = "86"
on_snapshot_unavailable = "allow"
[consent]
journal = "{journal}"
{snap}
[node]
id = "{id}"
[replication]
redis = "redis://127.0.0.1:{redis}/0"
stream = "consentgate:bench"
[[account]]
system_id = "acme"
entity = "acme-retail"
class = "marketing"
licence = "B2-1"
[[account]]
system_id = "bench"
entity = "bench-brand"
class = "marketing"
licence = "B2-BENCH"
"#,
        journal = dir.join(format!("journal-{id}")).display(),
    );
    let p = dir.join(format!("{id}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

async fn ready(admin: u16, within: Duration) {
    let addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let deadline = Instant::now() + within;
    loop {
        if let Ok((200, _)) = consentgate::admin::request(addr, "GET", "/readyz", None, None).await {
            return;
        }
        assert!(Instant::now() < deadline, "gateway on admin port {admin} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rate: u64 = arg("--rate").and_then(|v| v.parse().ok()).unwrap_or(50_000);
    let probes: usize = arg("--probes").and_then(|v| v.parse().ok()).unwrap_or(300);
    let snapshot = arg("--snapshot");
    let redis_bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let dir = tempfile::tempdir().unwrap();
    let redis_port = free_port();
    let _redis = Killed(
        Command::new(&redis_bin)
            .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string(), "--dir"])
            .arg(dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", "redis.log"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)"),
    );
    let sim = |_: ()| async {
        consentgate::sim::start(SimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            receipts: false,
            ..Default::default()
        })
        .await
        .expect("sim")
    };
    let (sim_a, sim_b): (SimHandle, SimHandle) = (sim(()).await, sim(()).await);
    let (a_smpp, a_admin, b_smpp, b_admin) = (free_port(), free_port(), free_port(), free_port());
    let snap = snapshot.as_deref();
    let ca = config(dir.path(), "a", a_smpp, a_admin, sim_a.local_addr, redis_port, snap);
    let cb = config(dir.path(), "b", b_smpp, b_admin, sim_b.local_addr, redis_port, snap);
    let spawn = |c: &Path| {
        Killed(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(c)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("consentgate"),
        )
    };
    let (ga, gb) = (spawn(&ca), spawn(&cb));
    ready(a_admin, Duration::from_secs(120)).await;
    ready(b_admin, Duration::from_secs(120)).await;
    let a_addr: SocketAddr = format!("127.0.0.1:{a_smpp}").parse().unwrap();
    let b_addr: SocketAddr = format!("127.0.0.1:{b_smpp}").parse().unwrap();
    let rx =
        tokio::spawn(Client::bind(a_addr, BindType::Receiver, "acme", "pw").await.expect("bind").answer_delivers());
    // Wait for the receiver's bind to reach A's simulator.
    while sim_a.sessions() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut probe = Client::bind(b_addr, BindType::Transmitter, "acme", "pw").await.expect("bind probe");
    // The loads: as long as the probes take, plus a margin.
    let secs = (probes as u64 / 10 + 10).to_string();
    let load = |port: u16, tag: &str| {
        let rep = dir.path().join(format!("load-{tag}.json"));
        let child = Command::new(BIN)
            .args(["load", "--target", &format!("127.0.0.1:{port}"), "--system-id", "bench", "--password", "pw"])
            .args(["--sessions", "4", "--window", "200", "--count", "0", "--duration", &format!("{secs}s")])
            .args(["--rate", &rate.to_string(), "--destinations", "8613800000000-8613899999999"])
            .arg("--report")
            .arg(&rep)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("consentgate load");
        (Killed(child), rep)
    };
    let (mut load_a, rep_a) = load(a_smpp, "a");
    let (mut load_b, rep_b) = load(b_smpp, "b");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut lat_ms = Vec::with_capacity(probes);
    let mut slow_ack = 0;
    let t_probes = Instant::now();
    for i in 0..probes {
        let who = format!("86137{:08}", i);
        let before = sim_a.stats.deliver_acks.load(Ordering::SeqCst);
        assert!(sim_a.inject_mo(Some("acme"), &who, "1069012345", 0, b"TD"), "no acme receiver at A");
        let t_inject = Instant::now();
        // Spin (yielding) rather than sleep: tokio's timer has a 1 ms resolution.
        while sim_a.stats.deliver_acks.load(Ordering::SeqCst) == before {
            assert!(t_inject.elapsed() < Duration::from_secs(10), "A never acknowledged MO {i}");
            tokio::task::yield_now().await;
        }
        let acked = Instant::now();
        if acked - t_inject > Duration::from_millis(100) {
            slow_ack += 1;
        }
        loop {
            if probe.submit("1069012345", &who, b"probe").await.expect("probe submit") == REVOKED {
                break;
            }
            // Back to back: the clock's resolution is one submit round trip through B.
            assert!(acked.elapsed() < Duration::from_secs(10), "B never refused {who}");
        }
        lat_ms.push(acked.elapsed().as_secs_f64() * 1e3);
        // About ten opt-outs a second.
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(t_inject.elapsed())).await;
    }
    let probing_s = t_probes.elapsed().as_secs_f64();
    let _ = load_a.0.wait();
    let _ = load_b.0.wait();
    rx.abort();
    drop((ga, gb));
    let read = |p: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let (ra, rb) = (read(&rep_a), read(&rep_b));
    lat_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let summary = serde_json::json!({
        "probes": probes,
        "probing_seconds": probing_s,
        "rate_per_node": rate,
        "snapshot": snapshot,
        "effect_latency_ms": {
            "p50": pct(&lat_ms, 0.5), "p90": pct(&lat_ms, 0.9), "p99": pct(&lat_ms, 0.99), "max": lat_ms[lat_ms.len() - 1],
        },
        "mo_acks_over_100ms": slow_ack,
        "load_a": { "msg_per_s": ra["submit_per_second"], "latency_us": ra["latency_us"], "unanswered": ra["unanswered"] },
        "load_b": { "msg_per_s": rb["submit_per_second"], "latency_us": rb["latency_us"], "unanswered": rb["unanswered"] },
    });
    let md = format!(
        "# A→B effect latency of an MO opt-out\n\n\
         Two gateway processes with a journal each and one redis-server 7.0 (`appendfsync always`) on this 2-core machine; \
         `consentgate load` at {rate} msg/s on each node ({} msg/s in all, random destinations over 10^8 numbers); {probes} MO opt-outs on A, about ten a second. \
         Snapshot: {}. \
         Clock from A's deliver_sm_resp 0 (the opt-out durable on A) to B's first 0x401 for that subscriber (B probed back to back: resolution one submit round trip).\n\n\
         | | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|\n\
         | MO acknowledged on A → refused on B (ms) | {:.2} | {:.2} | {:.2} | {:.2} |\n\n\
         | load | msg/s | p50 µs | p99 µs | unanswered |\n|---|---:|---:|---:|---:|\n\
         | on A | {:.0} | {} | {} | {} |\n| on B | {:.0} | {} | {} | {} |\n",
        rate * 2,
        snapshot.as_deref().unwrap_or("none (the live delta only)"),
        pct(&lat_ms, 0.5),
        pct(&lat_ms, 0.9),
        pct(&lat_ms, 0.99),
        lat_ms[lat_ms.len() - 1],
        ra["submit_per_second"].as_f64().unwrap_or(0.0),
        ra["latency_us"]["p50"],
        ra["latency_us"]["p99"],
        ra["unanswered"],
        rb["submit_per_second"].as_f64().unwrap_or(0.0),
        rb["latency_us"]["p50"],
        rb["latency_us"]["p99"],
        rb["unanswered"],
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("replication.json"), serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    std::fs::write(out.join("replication.md"), &md).unwrap();
    println!("{md}");
}
