//! Test harness mirroring production wiring (STYLE §13): the real gateway on an ephemeral
//! loopback port, the project's SMSC simulator behind it, and a raw ESME client that speaks
//! SMPP over a real TCP socket.
#![allow(dead_code)]

pub mod conf;
pub mod node;
pub mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use conf::{AccountConf, GwConf};
use consentgate::config::Config;
use consentgate::sim::{SimConfig, SimHandle};
use consentgate::smpp::frame::{Framer, Next};
use consentgate::smpp::pdu::{encode_bind, put_header_only, SubmitBuilder};
use consentgate::smpp::{self, cmd, BindType};
use consentgate::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Default wait for anything a test expects to arrive.
pub const WAIT: Duration = Duration::from_secs(5);

/// Gateway config for the consent tests: accounts `acme` (marketing, entity `acme-retail`,
/// sender ids `1069*`), `bank` (transactional, no entity) and `promo` (marketing, `106900*`
/// transactional), with the given `[policy]` and `[consent]` lines. Set more with the builder
/// (e.g. `[admin]`); `.text()` for the TOML.
pub fn consent_conf(smpp: SocketAddr, upstream: SocketAddr, policy: &str, consent: &str) -> GwConf {
    GwConf::new(smpp, "127.0.0.1:0".parse().unwrap(), upstream)
        .set("policy", "default_country_code = \"86\"")
        .set_lines("policy", policy)
        .set_lines("consent", consent)
        .account(AccountConf::marketing("acme").entity("acme-retail").licence("B2-1").sender_id(&["1069*"]))
        .account(AccountConf::transactional("bank").no_entity().licence("B2-2"))
        .account(AccountConf::marketing("promo").licence("B2-5").source_class(&[("106900*", "transactional")]))
}

/// Gateway config used by the tests: accounts `acme` (licensed), `bank` (transactional),
/// `nolicence`, `expired` (licence expired) and `rxonly` (receiver binds only), commercial
/// traffic allowed without a snapshot. `upstream_extra` and `session_extra` are lines for
/// `[upstream]` and `[session]` (they may go on with more tables of their own).
pub fn config(upstream: SocketAddr, upstream_extra: &str, session_extra: &str) -> Config {
    let conf = GwConf::ephemeral(upstream)
        .set_lines("upstream", upstream_extra)
        .set_lines("session", session_extra)
        // The proxy tests run without a consent snapshot; let commercial traffic through.
        .set("policy", "on_snapshot_unavailable = \"allow\"")
        .account(AccountConf::marketing("acme").entity("acme-retail").licence("B2-1").licence_expires("2099-12-31"))
        .account(AccountConf::transactional("bank").no_entity().licence("B2-2"))
        .account(AccountConf::marketing("nolicence").no_entity().no_licence())
        .account(AccountConf::marketing("expired").no_entity().licence("B2-3").licence_expires("2020-01-01"))
        .account(AccountConf::marketing("rxonly").no_entity().licence("B2-4").bind_types(&["receiver"]));
    Config::parse(&conf.text()).expect("test config")
}

/// A running gateway with its shutdown trigger.
pub struct Gw {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Gw {
    pub async fn start(cfg: Config) -> Gw {
        let g = Gateway::bind(cfg).await.expect("bind gateway");
        let addr = g.local_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(g.serve(async {
            let _ = rx.await;
        }));
        Gw { addr, stop: Some(tx), task }
    }

    /// Triggers shutdown (SIGTERM equivalent) without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Triggers shutdown and waits for the gateway to stop.
    pub async fn stop(mut self) {
        self.trigger_shutdown();
        tokio::time::timeout(Duration::from_secs(20), self.task).await.expect("gateway stops").unwrap().unwrap();
    }
}

/// Simulator (recording) + gateway in front of it.
pub async fn stack(sim: SimConfig, upstream_extra: &str, session_extra: &str) -> (SimHandle, Gw) {
    let sim = consentgate::sim::start(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..sim }).await.expect("sim");
    let gw = Gw::start(config(sim.local_addr, upstream_extra, session_extra)).await;
    (sim, gw)
}

pub fn sim_cfg() -> SimConfig {
    SimConfig { record: true, ..Default::default() }
}

/// A raw ESME over TCP.
pub struct Esme {
    pub stream: TcpStream,
    rbuf: BytesMut,
    framer: Framer,
    pub next_seq: u32,
}

impl Esme {
    pub async fn connect(addr: SocketAddr) -> Esme {
        Esme::from_stream(TcpStream::connect(addr).await.expect("connect"))
    }

    /// An ESME on a connection the test made (e.g. from a chosen source address).
    pub fn from_stream(stream: TcpStream) -> Esme {
        stream.set_nodelay(true).unwrap();
        Esme { stream, rbuf: BytesMut::with_capacity(65536), framer: Framer::new(1 << 20), next_seq: 1 }
    }

    pub fn seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Next PDU, or None when the peer closed. Panics after `WAIT`.
    pub async fn recv(&mut self) -> Option<BytesMut> {
        self.recv_within(WAIT).await.expect("a PDU within the wait")
    }

    /// Next PDU within `d`; Err on timeout, Ok(None) on close.
    pub async fn recv_within(&mut self, d: Duration) -> Result<Option<BytesMut>, ()> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match self.framer.next(&self.rbuf) {
                Next::Frame(len) => return Ok(Some(self.rbuf.split_to(len))),
                Next::Incomplete => {}
                other => panic!("bad framing from gateway: {other:?}"),
            }
            self.rbuf.reserve(65536);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Receives PDUs, answering enquire_link and collecting the rest, until `pred` is true
    /// for one of them; returns that one.
    pub async fn recv_where(&mut self, mut pred: impl FnMut(&[u8]) -> bool) -> BytesMut {
        loop {
            let f = self.recv().await.expect("connection open");
            if pred(&f) {
                return f;
            }
            if smpp::command_id(&f) == cmd::ENQUIRE_LINK {
                let mut r = BytesMut::new();
                put_header_only(&mut r, cmd::ENQUIRE_LINK_RESP, 0, smpp::sequence(&f));
                self.send(&r).await;
            }
        }
    }

    /// Binds and returns the bind_resp status.
    pub async fn bind(&mut self, bt: BindType, system_id: &str, password: &str) -> u32 {
        let seq = self.seq();
        let f = encode_bind(bt, seq, system_id, password);
        self.send(&f).await;
        let r = self.recv().await.expect("bind_resp");
        assert_eq!(smpp::command_id(&r), bt.command_id() | smpp::RESP_BIT, "bind_resp id");
        assert_eq!(smpp::sequence(&r), seq, "bind_resp seq");
        smpp::command_status(&r)
    }

    pub async fn bound(addr: SocketAddr, system_id: &str) -> Esme {
        let mut e = Esme::connect(addr).await;
        assert_eq!(e.bind(BindType::Transceiver, system_id, "pw").await, 0, "bind {system_id}");
        e
    }

    /// Sends a submit_sm and returns its sequence number.
    pub async fn submit(&mut self, b: &SubmitBuilder) -> u32 {
        let seq = self.seq();
        let f = b.build(seq);
        self.send(&f).await;
        seq
    }

    pub async fn send_header(&mut self, id: u32, status: u32, seq: u32) {
        let mut r = BytesMut::new();
        put_header_only(&mut r, id, status, seq);
        self.send(&r).await;
    }

    /// Waits until the gateway closes the connection, answering enquire_link/unbind politely.
    pub async fn expect_closed(&mut self) {
        loop {
            match self.recv().await {
                None => return,
                Some(f) => match smpp::command_id(&f) {
                    cmd::UNBIND => self.send_header(cmd::UNBIND_RESP, 0, smpp::sequence(&f)).await,
                    cmd::ENQUIRE_LINK => self.send_header(cmd::ENQUIRE_LINK_RESP, 0, smpp::sequence(&f)).await,
                    _ => {}
                },
            }
        }
    }
}

pub fn submit_to(dest: &str) -> SubmitBuilder {
    SubmitBuilder::new("1069012345", dest).short_message(b"hello from the tests")
}

/// Polls `f` until it is true or `WAIT` passes.
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing running.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real `consentgate run --config conf` (warnings only on stderr, stdout discarded).
pub fn spawn_gateway(conf: &std::path::Path) -> std::process::Child {
    spawn_gateway_with_env(conf, &[])
}

/// [`spawn_gateway`] with more environment variables.
pub fn spawn_gateway_with_env(conf: &std::path::Path, env: &[(&str, &str)]) -> std::process::Child {
    spawn_gateway_with(conf, env, &[])
}

/// [`spawn_gateway`] with more environment variables and more `run` arguments.
pub fn spawn_gateway_with(conf: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
        .args(["run", "--config"])
        .arg(conf)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn consentgate")
}
