//! Descriptor starvation (architecture §9) against the real binary under a 4 096-descriptor limit
//! (`setrlimit` on the child, soft and hard, as `prlimit` would): thousands of idle TCP
//! connections to the admin and SMPP ports from one host must not stop a bound session, a
//! new ESME's bind from another address, `/readyz` or `/metrics`.
//!
//! * `idle_floods_starve_nobody`: 5 000 idle admin connections and 5 000 unbound SMPP
//!   connections from 127.0.0.1 (the admin cap and `limits.unbound_per_ip` close the excess
//!   at once; the header timeout and `session.bind_timeout` close the rest) while a bound
//!   session keeps submitting; then an ESME from 127.0.0.2 binds within 10 s, `/readyz`
//!   answers from a fresh connection and `/metrics` shows the counters.
//! * `accepting_pauses_at_the_descriptor_reserve`: under a 256-descriptor limit (below what
//!   the admin cap allows) the accept loops stop within the reserve, so a connection accepted
//!   before still gets the descriptor its bind's upstream connect needs.
//!
//! Everything on loopback, every loop bounded; the gateway is stopped (SIGTERM, exit 0).

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::{metric, Node, NodeOpts};
use common::{submit_to, Esme, Kill};
use consentgate::sim::SimConfig;
use consentgate::smpp::{self, cmd, BindType};

const FLOOD: usize = 5_000;
/// The defaults the binary runs with (`admin.max_connections`, `limits.unbound_per_ip`).
const ADMIN_CAP: usize = consentgate::admin::DEFAULT_ADMIN_MAX_CONNECTIONS;
const PER_IP: usize = consentgate::session::config::DEFAULT_UNBOUND_PER_IP;

/// Raises this process's soft RLIMIT_NOFILE to `want` (the flood holds its client ends).
fn raise_own_limit(want: u64) {
    let (soft, hard) = consentgate::relay::fds::nofile_limit().unwrap();
    assert!(hard >= want, "this test needs RLIMIT_NOFILE hard >= {want} (it is {hard})");
    if soft < want {
        let r = libc::rlimit { rlim_cur: want as libc::rlim_t, rlim_max: hard as libc::rlim_t };
        // SAFETY: setrlimit reads one valid rlimit and changes only this process's limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0, "{}", std::io::Error::last_os_error());
    }
}

/// `consentgate run` with RLIMIT_NOFILE = `nofile` (soft and hard), logging at info to a file.
async fn start_limited(node: &mut Node, nofile: u64) -> std::path::PathBuf {
    let log = node.dir.path().join("gateway.log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"));
    cmd.args(["run", "--config"])
        .arg(&node.conf)
        // GW_LOG: another filter for the gateway's log, when debugging this test.
        .env("RUST_LOG", std::env::var("GW_LOG").unwrap_or("info".into()))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: the closure runs in the forked child before exec; it only calls setrlimit
    // (async-signal-safe) on a value it owns and reads errno.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit { rlim_cur: nofile as libc::rlim_t, rlim_max: nofile as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    node.child = Some(Kill(cmd.spawn().expect("spawn consentgate")));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok((200, _)) = node.get("/livez").await {
            return log;
        }
        assert!(node.alive(), "consentgate exited at start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("consentgate did not come up on {}", node.admin);
}

/// `text` without its ANSI colour sequences (ESC [ … m).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `Max open files` soft and hard of process `pid`.
fn limits_of(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let v: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (v[0], v[1])
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Opens `n` idle connections to `addr` from 127.0.0.1 (blocking, one at a time, each
/// connect bounded by 5 s and the whole by 60 s). Returns the connections and the failed
/// connects.
async fn flood(addr: SocketAddr, n: usize) -> (Vec<std::net::TcpStream>, usize) {
    tokio::task::spawn_blocking(move || {
        let (mut conns, mut failed) = (Vec::with_capacity(n), 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..n {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) if Instant::now() < deadline => conns.push(s),
                _ => failed += 1,
            }
            if Instant::now() > deadline {
                break;
            }
        }
        (conns, failed)
    })
    .await
    .unwrap()
}

/// How many of `conns` the peer still holds open (not closed by it).
fn still_open(conns: &[std::net::TcpStream]) -> usize {
    let mut buf = [0u8; 64];
    conns
        .iter()
        .filter(|c| {
            c.set_nonblocking(true).unwrap();
            matches!((&**c).read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

/// A connection from `from` to `addr`, as an ESME.
async fn esme_from(from: &str, addr: SocketAddr) -> Esme {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    Esme::from_stream(s.connect(addr).await.expect("connect"))
}

/// What the background submitter did.
#[derive(Debug)]
struct Submitted {
    sent: u64,
    ok: u64,
    max_latency: Duration,
}

/// Submits one message at a time on `e` (each answered within 5 s, or the task panics)
/// until `stop` or `max` messages.
fn submitter(
    mut e: Esme,
    stop: Arc<AtomicBool>,
    max: u64,
    progress: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Submitted> {
    tokio::spawn(async move {
        let mut s = Submitted { sent: 0, ok: 0, max_latency: Duration::ZERO };
        while !stop.load(Ordering::Relaxed) && s.sent < max {
            let t0 = Instant::now();
            let seq = e.submit(&submit_to("8613800000001")).await;
            s.sent += 1;
            let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
            if smpp::command_status(&r) == 0 {
                s.ok += 1;
            }
            s.max_latency = s.max_latency.max(t0.elapsed());
            progress.store(s.ok, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s
    })
}

/// `GET path` on fresh connections until one answers (a refused connection is retried every
/// 100 ms) or `within` passes.
async fn get_fresh(node: &Node, path: &str, within: Duration) -> Option<(u16, String, Duration)> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Ok((code, body)) = node.get(path).await {
            return Some((code, body, t0.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_floods_starve_nobody() {
    raise_own_limit(2 * FLOOD as u64 + 1_000);
    let sim = common::node::sim(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).await;
    let mut node = Node::new(NodeOpts::new(sim.local_addr));
    let log = start_limited(&mut node, 4096).await;
    let pid = node.pid();
    assert_eq!(limits_of(pid), (4096, 4096), "the gateway runs under the 4 096 limit");

    // Descriptors of the gateway, sampled throughout.
    let max_fds = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (max_fds, sampling) = (max_fds.clone(), sampling.clone());
        tokio::spawn(async move {
            for _ in 0..1_200 {
                if !sampling.load(Ordering::Relaxed) {
                    break;
                }
                max_fds.fetch_max(open_fds(pid) as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // A bound session from 127.0.0.1 keeps submitting through everything below.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let sender = submitter(Esme::bound(node.smpp, "acme").await, stop.clone(), 20_000, progress.clone());
    common::node::wait_for("first submits answered", Duration::from_secs(5), || progress.load(Ordering::Relaxed) >= 10)
        .await;

    let t_flood = Instant::now();
    let (admin_conns, admin_failed) = flood(node.admin, FLOOD).await;
    let admin_took = t_flood.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin_held = still_open(&admin_conns);
    let t_smpp = Instant::now();
    let (smpp_conns, smpp_failed) = flood(node.smpp, FLOOD).await;
    let smpp_took = t_smpp.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let smpp_held = still_open(&smpp_conns);
    let fds_after_flood = open_fds(pid);
    eprintln!(
        "flood: {} admin connections in {admin_took:?}, {} smpp in {smpp_took:?} ({admin_failed} + {smpp_failed} \
         failed); held by the gateway 0.3 s after each: admin {admin_held}, smpp {smpp_held}; gateway fds \
         {fds_after_flood}",
        admin_conns.len(),
        smpp_conns.len()
    );
    assert_eq!(admin_conns.len() + smpp_conns.len(), 2 * FLOOD, "every connect succeeded");
    assert!(admin_held <= ADMIN_CAP, "admin connections held: {admin_held} > cap {ADMIN_CAP}");
    assert!(smpp_held <= PER_IP, "unbound SMPP connections held: {smpp_held} > cap {PER_IP}");
    // Within the header timeout and the bind timeout of their start, the caps are full.
    if admin_took < Duration::from_secs(9) {
        assert!(admin_held >= ADMIN_CAP - 16, "the admin cap filled: only {admin_held} held");
    }
    if smpp_took < Duration::from_secs(9) {
        assert_eq!(smpp_held, PER_IP, "the per-IP cap filled");
    }

    // A new ESME from another address binds at once.
    let t_bind = Instant::now();
    let mut newcomer = esme_from("127.0.0.2", node.smpp).await;
    let st = tokio::time::timeout(Duration::from_secs(10), newcomer.bind(BindType::Transceiver, "bank", "pw"))
        .await
        .expect("bind_resp within 10 s");
    let bind_took = t_bind.elapsed();
    assert_eq!(st, 0, "the newcomer's bind succeeded");
    let seq = newcomer.submit(&submit_to("8613800000002")).await;
    let r = newcomer.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
    assert_eq!(smpp::command_status(&r), 0);

    // /readyz from a fresh connection: the held admin connections hold the cap until their
    // header timeout (10 s from their start) closes them.
    let (code, body, ready_wait) =
        get_fresh(&node, "/readyz", Duration::from_secs(25)).await.expect("/readyz answered within 25 s");
    let ready_after_flood = t_flood.elapsed();
    assert_eq!(code, 200, "/readyz: {body}");
    let (code, text, _) = get_fresh(&node, "/metrics", Duration::from_secs(5)).await.expect("/metrics");
    assert_eq!(code, 200);
    let limit = |l: &str| metric(&text, &format!("consentgate_limits_total{{limit=\"{l}\"}}")).unwrap_or(-1.0);
    let (per_ip, total, admin_refused, header_timeouts) =
        (limit("unbound_per_ip"), limit("unbound_total"), limit("admin_connections"), limit("admin_header_timeout"));
    eprintln!(
        "newcomer from 127.0.0.2 bound in {bind_took:?}; /readyz {code} {ready_after_flood:?} after the flood began \
         ({ready_wait:?} of retries); limits: unbound_per_ip {per_ip}, unbound_total {total}, admin_connections \
         {admin_refused}, admin_header_timeout {header_timeouts}, fd_reserve {}, accept_error {}",
        limit("fd_reserve"),
        limit("accept_error")
    );
    assert!(bind_took < Duration::from_secs(10));
    // Every SMPP connection past the first 32 was closed at once (more only if the flood
    // outlasted a bind_timeout and freed places).
    assert!(per_ip >= (FLOOD - PER_IP) as f64 * 0.9, "unbound_per_ip = {per_ip}");
    assert_eq!(total, 0.0, "one source IP never reaches the total cap");
    assert!(admin_refused >= (FLOOD - ADMIN_CAP) as f64 * 0.9, "admin_connections = {admin_refused}");
    assert!(header_timeouts >= admin_held as f64, "the held admin connections were closed by the header timeout");
    // The last ones admitted (as places freed during the flood) go 10 s after their start.
    common::node::wait_for("idle admin connections closed by the header timeout", Duration::from_secs(15), || {
        still_open(&admin_conns) == 0
    })
    .await;

    // Unbound SMPP connections go at bind_timeout (10 s).
    common::node::wait_for("unbound SMPP connections closed", Duration::from_secs(15), || still_open(&smpp_conns) == 0)
        .await;
    drop((admin_conns, smpp_conns));

    stop.store(true, Ordering::Relaxed);
    let s = tokio::time::timeout(Duration::from_secs(10), sender).await.expect("submitter stops").expect("no panic");
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let peak = max_fds.load(Ordering::Relaxed);
    eprintln!(
        "bound session: {} submits, {} answered ok, slowest {:?}; gateway fds peak {peak} of 4096",
        s.sent, s.ok, s.max_latency
    );
    assert_eq!(s.ok, s.sent, "every submit of the bound session answered");
    assert!(s.sent >= 100, "the bound session kept submitting: {}", s.sent);
    assert!(s.max_latency < Duration::from_secs(2), "slowest submit {:?}", s.max_latency);
    assert!(peak < 4096 - consentgate::relay::fds::reserve(4096), "gateway fds peaked at {peak}");

    let text = plain(&std::fs::read_to_string(&log).unwrap());
    assert!(text.contains("RLIMIT_NOFILE") && text.contains("soft=4096"), "the limit is logged at start:\n{text}");
    let lines = |what: &str| text.lines().filter(|l| l.contains(what)).count();
    let (unbound_lines, admin_lines) =
        (lines("too many connections not bound yet"), lines("admin connection limit reached"));
    eprintln!("log lines: unbound cap {unbound_lines}, admin cap {admin_lines}");
    // One line per 10 s of refusals at most (RateLimit), not one per connection.
    let most = |took: Duration| 2 + took.as_secs() as usize / 10;
    assert!((1..=most(smpp_took)).contains(&unbound_lines), "unbound cap logged {unbound_lines} times");
    assert!((1..=most(admin_took)).contains(&admin_lines), "admin cap logged {admin_lines} times");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_pauses_at_the_descriptor_reserve() {
    const NOFILE: u64 = 256;
    let reserve = consentgate::relay::fds::reserve(NOFILE) as usize;
    raise_own_limit(2_000);
    let sim = common::node::sim(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).await;
    let mut node = Node::new(NodeOpts::new(sim.local_addr));
    let log = start_limited(&mut node, NOFILE).await;
    let pid = node.pid();
    let base = open_fds(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let sender = submitter(Esme::bound(node.smpp, "acme").await, stop.clone(), 20_000, progress.clone());
    // Accepted now, bound later: its bind needs a descriptor for the upstream connect.
    let mut late = esme_from("127.0.0.3", node.smpp).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // More idle admin connections than the descriptors left (the admin cap, 256, is above
    // the limit): the kernel queues the ones the gateway does not accept (fewer than the
    // listen backlog of 128, so that every connect completes).
    let (conns, failed) = flood(node.admin, 250).await;
    assert_eq!(failed, 0);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let fds = open_fds(pid);
    let held = still_open(&conns);
    eprintln!("limit {NOFILE}, reserve {reserve}: gateway fds {base} at start, {fds} under the flood");
    if fds > 200 {
        eprintln!("DEBUG {}", std::fs::read_to_string(&log).unwrap());
        let _ = std::process::Command::new("sh").arg("-c").arg(format!("ss -tanp | grep pid={pid}, | awk '{{print $1, $4}}' | sed 's/127.0.0.1:[0-9]*$/X/' | sort | uniq -c | sort -rn | head; ls -l /proc/{pid}/fd | grep -v socket")).status();
    }
    assert!(fds <= NOFILE as usize - reserve + 2, "accepting stopped within the reserve: {fds} open");
    assert!(fds >= NOFILE as usize - reserve - 8, "the flood reached the reserve: {fds} open");

    // The reserve is there for the upstream connect of a bind.
    let t0 = Instant::now();
    let st = tokio::time::timeout(Duration::from_secs(10), late.bind(BindType::Transceiver, "bank", "pw"))
        .await
        .expect("bind_resp within 10 s");
    assert_eq!(st, 0, "the bind's upstream connect got a descriptor");
    eprintln!("bind on a connection accepted before the pause: {:?}; {held} flood connections held", t0.elapsed());
    let seq = late.submit(&submit_to("8613800000003")).await;
    let r = late.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
    assert_eq!(smpp::command_status(&r), 0);

    // The flood leaves: accepting resumes, the queued connections are taken and closed.
    drop(conns);
    let (code, _, waited) = get_fresh(&node, "/readyz", Duration::from_secs(15)).await.expect("/readyz answers");
    assert_eq!(code, 200);
    let text = node.metrics().await;
    let pauses = metric(&text, "consentgate_limits_total{limit=\"fd_reserve\"}").unwrap_or(0.0);
    eprintln!("/readyz answered {waited:?} after the flood closed; fd_reserve pauses {pauses}");
    assert!(pauses >= 1.0, "the pause is counted");
    stop.store(true, Ordering::Relaxed);
    let s = tokio::time::timeout(Duration::from_secs(10), sender).await.expect("submitter stops").expect("no panic");
    eprintln!("bound session: {} submits, {} answered ok, slowest {:?}", s.sent, s.ok, s.max_latency);
    assert_eq!(s.ok, s.sent);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("accepting paused"), "the pause is logged:\n{text}");
    node.stop().await;
}

/// The admin listener's own limits, in-process with short settings: the cap closes the
/// excess at once, a connection without a request head goes at the header timeout, a
/// kept-alive one outlives the header timeout and goes at the idle timeout, a head trickled
/// in too slowly goes at the header timeout, and shutdown answers the request in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_caps_and_times_out_connections() {
    use consentgate::admin::listener::{serve, Limits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let router = axum::Router::new().route("/fast", axum::routing::get(|| async { "ok" })).route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            "slow"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        max_connections: 3,
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(900),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, router, limits, async {
        let _ = stop_rx.await;
    }));
    // Reads until the peer closes (Ok(bytes read)) or `within` passes (Err).
    async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");

    let t0 = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The cap (3) is full: a fourth connection is closed at once, unanswered.
    let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
    over.write_all(get("/fast").as_bytes()).await.ok();
    let r = closed_within(&mut over, Duration::from_millis(200)).await.expect("closed at once");
    assert!(r.is_empty(), "no answer over the cap");

    // A request, answered; the connection stays open past the header timeout, idle.
    kept.write_all(get("/fast").as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let t_idle = Instant::now();
    // Half a request head, then a byte every 100 ms: never complete in time.
    trickle.write_all(b"GET /fast HTTP/1.1\r\n").await.unwrap();
    let trickler = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if trickle.write_all(b"X").await.is_err() {
                break;
            }
        }
        trickle
    });

    closed_within(&mut silent, Duration::from_secs(2)).await.expect("silent connection closed");
    let silent_after = t0.elapsed();
    assert!(silent_after >= Duration::from_millis(280), "not before the header timeout: {silent_after:?}");
    let mut trickle = trickler.await.unwrap();
    let trickle_after = t0.elapsed();
    closed_within(&mut trickle, Duration::from_millis(100)).await.expect("trickled head cut off");
    assert!(trickle_after < Duration::from_millis(1_500), "the trickle was cut at the header timeout");
    closed_within(&mut kept, Duration::from_secs(3)).await.expect("idle connection closed");
    let idle_after = t_idle.elapsed();
    assert!(idle_after >= Duration::from_millis(850), "kept alive past the header timeout: {idle_after:?}");
    eprintln!(
        "admin listener: silent closed at {silent_after:?}, trickle by {trickle_after:?}, idle after {idle_after:?}"
    );

    // Places are free again; shutdown answers a request in flight, then the server returns.
    let mut inflight = tokio::net::TcpStream::connect(addr).await.unwrap();
    inflight.write_all(get("/slow").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop_tx.send(()).unwrap();
    let answer = closed_within(&mut inflight, Duration::from_secs(3)).await.expect("answered, then closed");
    assert!(answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"slow"), "{}", String::from_utf8_lossy(&answer));
    tokio::time::timeout(Duration::from_secs(3), server).await.expect("serve returns").unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
}
