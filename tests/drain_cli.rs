//! `consentgate drain` as a preStop hook or an operator runs it: the real binary against a
//! real gateway process (`consentgate run`) in front of the SMSC simulator. It drains (the
//! ESME is unbound, `/readyz` 503, exit 0), reports sessions left at its deadline (exit 1),
//! resumes with `--cancel`, and says when the admin API is absent (69), the token wrong (77)
//! or the usage bad (64).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::node::{free_addr, sim, Node, NodeOpts};
use common::Esme;
use consentgate::sim::SimConfig;
use consentgate::smpp::{self, cmd, BindType};
use serde_json::Value;

const TOKEN: &str = "drain-cli-test-token";

/// Runs `consentgate drain ARGS` with `token` in CONSENTGATE_ADMIN_TOKEN (none: unset),
/// killed if it outlives `within`; returns (exit code, stdout, stderr).
async fn drain_cmd(args: &[&str], token: Option<&str>, within: Duration) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_consentgate"));
    cmd.arg("drain").args(args).env_remove("CONSENTGATE_ADMIN_TOKEN").kill_on_drop(true);
    if let Some(t) = token {
        cmd.env("CONSENTGATE_ADMIN_TOKEN", t);
    }
    let out = tokio::time::timeout(within, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("consentgate drain {args:?} still running after {within:?}"))
        .expect("run consentgate drain");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn gateway() -> (consentgate::sim::SimHandle, Node) {
    let sim = sim(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).await;
    let mut gw = Node::new(NodeOpts::new(sim.local_addr));
    gw.start_with_env(&[("CONSENTGATE_ADMIN_TOKEN", TOKEN)]).await;
    (sim, gw)
}

async fn drain_state(gw: &Node) -> Value {
    let (code, body) = gw.get("/v1/drain").await.expect("GET /v1/drain");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// What a bound ESME sees until the gateway closes its connection: whether it got an unbind
/// (answered when `answer` is set) and whether the connection closed within `within`.
async fn watch_esme(mut e: Esme, answer: bool, within: Duration) -> (bool, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut unbind = false;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match e.recv_within(left).await {
            Ok(None) => return (unbind, true),
            Err(()) => return (unbind, false),
            Ok(Some(f)) => match smpp::command_id(&f) {
                cmd::UNBIND => {
                    unbind = true;
                    if answer {
                        e.send_header(cmd::UNBIND_RESP, 0, smpp::sequence(&f)).await;
                    }
                }
                cmd::ENQUIRE_LINK => e.send_header(cmd::ENQUIRE_LINK_RESP, 0, smpp::sequence(&f)).await,
                _ => {}
            },
        }
    }
}

/// The preStop path: a bound ESME is unbound and closed, the command waits for it and exits
/// 0, the pod is unready and new connections are closed; `--cancel` takes binds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_unbinds_the_sessions_and_cancel_resumes() {
    let (_sim, mut gw) = gateway().await;
    let admin = gw.admin.to_string();
    let esmes: Vec<_> = [Esme::bound(gw.smpp, "acme").await, Esme::bound(gw.smpp, "bank").await]
        .into_iter()
        .map(|e| tokio::spawn(watch_esme(e, true, Duration::from_secs(15))))
        .collect();
    let t0 = std::time::Instant::now();
    while drain_state(&gw).await["sessions"] != 2 {
        assert!(t0.elapsed() < Duration::from_secs(5), "sessions: {}", drain_state(&gw).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (code, out, err) = drain_cmd(&["--admin", &admin, "--wait", "10s"], Some(TOKEN), Duration::from_secs(20)).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    // (The count at the start is the POST's answer: sessions may already be closing.)
    assert!(out.starts_with("drained: ") && out.contains("no ESME session left"), "{out}");
    for e in esmes {
        let (unbind, closed) = e.await.unwrap();
        assert!(unbind && closed, "ESME: unbind {unbind}, closed {closed}");
    }
    let s = drain_state(&gw).await;
    assert_eq!((s["draining"].as_bool(), s["sessions"].as_u64()), (Some(true), Some(0)), "{s}");
    assert_eq!(gw.ready().await.0, 503, "/readyz while drained");
    // A new connection is closed without an answer to its bind.
    let mut e = Esme::connect(gw.smpp).await;
    e.send(&consentgate::smpp::pdu::encode_bind(BindType::Transceiver, 1, "acme", "pw")).await;
    assert!(matches!(e.recv_within(Duration::from_secs(5)).await, Ok(None)), "a bind was served while draining");

    let (code, out, err) = drain_cmd(&["--admin", &admin, "--cancel"], Some(TOKEN), Duration::from_secs(10)).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.starts_with("resumed: "), "{out}");
    assert_eq!(drain_state(&gw).await["draining"], false);
    let mut e = Esme::connect(gw.smpp).await;
    assert_eq!(e.bind(BindType::Transceiver, "acme", "pw").await, 0, "bind after --cancel");
    assert_eq!(gw.ready().await.0, 200, "/readyz after --cancel");
    drop(e);
    gw.stop().await;
}

/// Sessions still open at the end of `--wait` (an ESME that never answers the unbind holds
/// its session for the gateway's 2 s close wait): exit 1 with the count; a longer wait then
/// sees them gone and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_left_at_the_deadline_exit_1() {
    let (_sim, mut gw) = gateway().await;
    let admin = gw.admin.to_string();
    let silent = tokio::spawn(watch_esme(Esme::bound(gw.smpp, "acme").await, false, Duration::from_secs(15)));
    let (code, out, err) =
        drain_cmd(&["--admin", &admin, "--wait", "300ms"], Some(TOKEN), Duration::from_secs(10)).await;
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(out.starts_with("not drained: 1 ESME session(s)"), "{out}");
    // Draining again is harmless and waits for the close.
    let (code, out, err) = drain_cmd(&["--admin", &admin, "--wait", "10s"], Some(TOKEN), Duration::from_secs(20)).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let (unbind, closed) = silent.await.unwrap();
    assert!(unbind && closed, "ESME: unbind {unbind}, closed {closed}");
    gw.stop().await;
}

/// Exit statuses a hook's log needs to tell apart: nothing listening (69), a wrong token
/// (77, nothing drained), no token or bad arguments (64, nothing sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_refused_and_bad_usage() {
    let closed: SocketAddr = free_addr();
    let (code, out, err) =
        drain_cmd(&["--admin", &closed.to_string(), "--wait", "2s"], Some(TOKEN), Duration::from_secs(10)).await;
    assert_eq!(code, 69, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("cannot reach the admin API") && out.is_empty(), "{err}");
    let (code, _, err) =
        drain_cmd(&["--admin", &closed.to_string(), "--cancel"], Some(TOKEN), Duration::from_secs(10)).await;
    assert_eq!(code, 69, "{err}");

    let (_sim, mut gw) = gateway().await;
    let admin = gw.admin.to_string();
    let (code, _, err) =
        drain_cmd(&["--admin", &admin, "--wait", "1s"], Some("not-the-token-at-all"), Duration::from_secs(10)).await;
    assert_eq!(code, 77, "{err}");
    assert_eq!(drain_state(&gw).await["draining"], false, "a refused token drained");
    // The token from a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let (code, out, err) = drain_cmd(
        &["--admin", &admin, "--wait", "5s", "--token-file", file.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(drain_state(&gw).await["draining"], true);

    for (args, token) in [
        (vec!["--admin", admin.as_str()], None),
        (vec!["--admin", admin.as_str(), "--token-file", "/nonexistent/token"], None),
        (vec!["--admin", admin.as_str(), "--wait", "10"], Some(TOKEN)),
        (vec!["--admin", "localhost"], Some(TOKEN)),
        (vec!["--admin", admin.as_str(), "--cancel", "--wait", "1s"], Some(TOKEN)),
    ] {
        let (code, _, err) = drain_cmd(&args, token, Duration::from_secs(10)).await;
        assert_eq!(code, 64, "{args:?}: {err}");
    }
    // Every argument has help text.
    let (code, out, _) = drain_cmd(&["--help"], None, Duration::from_secs(10)).await;
    assert_eq!(code, 0);
    for flag in ["--admin", "--wait", "--cancel", "--token-file"] {
        let line = out.lines().find(|l| l.trim_start().starts_with(flag)).unwrap_or_else(|| panic!("{flag}: {out}"));
        let after = line.trim_start().split_once("  ").map(|(_, h)| h.trim()).unwrap_or("");
        let next = out.lines().skip_while(|l| !l.trim_start().starts_with(flag)).nth(1).unwrap_or("");
        assert!(after.len() > 10 || next.trim().len() > 10, "{flag} has no help: {out}");
    }
    gw.stop().await;
}

/// The systemd unit is `Type=notify`: `READY=1` reaches the socket in `NOTIFY_SOCKET` once
/// the SMPP and admin ports are bound (so `systemctl start` returns when they are), and
/// `STOPPING=1` at SIGTERM, before the drain. A path socket and an abstract one (`@name`,
/// which systemd uses) both work.
#[tokio::test]
async fn the_service_manager_hears_ready_when_the_ports_are_bound_and_stopping_at_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let sim = sim(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).await;
    for abstract_name in [false, true] {
        let mut gw = Node::new(NodeOpts::new(sim.local_addr));
        let (sock, name) = if abstract_name {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("consentgate-test-{}-{}", std::process::id(), gw.smpp.port());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            (UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
        } else {
            let path = gw.dir.path().join("notify.sock");
            (UnixDatagram::bind(&path).unwrap(), path.display().to_string())
        };
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let child = common::spawn_gateway_with_env(&gw.conf, &[("NOTIFY_SOCKET", &name)]);
        gw.child = Some(common::Kill(child));
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("READY=1 within 20 s");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
        // Ready means bound: both ports take a connection at once.
        std::net::TcpStream::connect(gw.smpp).expect("SMPP port bound at READY=1");
        std::net::TcpStream::connect(gw.admin).expect("admin port bound at READY=1");
        gw.signal("-TERM");
        let n = sock.recv(&mut buf).expect("STOPPING=1 at SIGTERM");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg}");
        let mut child = gw.child.take().unwrap();
        let st = tokio::task::spawn_blocking(move || child.0.wait()).await.unwrap().unwrap();
        assert!(st.success(), "{st}");
    }
    sim.shutdown().await;
}
