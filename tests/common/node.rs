//! The real `consentgate run` as a child process with its config and journal in a temp dir,
//! driven over loopback (admin API, SMPP): what the fault and replication tests run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use consentgate::sim::{SimConfig, SimHandle};
use consentgate::smpp::{self, cmd};

use super::conf::{AccountConf, GwConf};
use super::{submit_to, Esme, Kill};

/// `consent::revoked`: the reject status of a subscriber who opted out.
pub const REVOKED: u32 = 0x401;

/// A free loopback port (bound and released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `consentgate run` with its config, journal and (optionally) audit log in a temp dir.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub smpp: SocketAddr,
    pub admin: SocketAddr,
    pub child: Option<Kill>,
}

pub struct NodeOpts<'a> {
    pub upstream: SocketAddr,
    /// Lines for `[upstream]`, `[session]`, `[consent]`, an `[audit]` table (every decision,
    /// into `audit`) and trailing tables of the test's own (`tail`: `[node]`, `[replication]`).
    pub upstream_extra: &'a str,
    pub session_extra: &'a str,
    pub consent_extra: &'a str,
    pub journal: Option<PathBuf>,
    pub audit: Option<PathBuf>,
    pub tail: &'a str,
}

impl<'a> NodeOpts<'a> {
    pub fn new(upstream: SocketAddr) -> NodeOpts<'a> {
        NodeOpts {
            upstream,
            upstream_extra: "",
            session_extra: "",
            consent_extra: "",
            journal: None,
            audit: None,
            tail: "",
        }
    }
}

impl Node {
    pub fn new(o: NodeOpts<'_>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (smpp, admin) = (free_addr(), free_addr());
        let journal = o.journal.unwrap_or_else(|| dir.path().join("journal"));
        let mut c = GwConf::new(smpp, admin, o.upstream)
            .set_lines("upstream", o.upstream_extra)
            .set("session", "window = 1000")
            .set_lines("session", o.session_extra)
            .set("policy", "default_country_code = \"86\"")
            .set("policy", "on_snapshot_unavailable = \"allow\"")
            .set("consent", &format!("journal = \"{}\"", journal.display()))
            .set_lines("consent", o.consent_extra)
            .account(AccountConf::marketing("acme").entity("acme-retail").licence("B2-1").sender_id(&["1069*"]))
            .account(AccountConf::transactional("bank").no_entity().licence("B2-2"))
            .tail(o.tail);
        if let Some(a) = o.audit {
            c = c.set("audit", &format!("dir = \"{}\"", a.display())).set("audit", "mode = \"all\"");
        }
        Node::with_conf(dir, &c)
    }

    /// A node on a config of the test's own, written to `dir`/gateway.toml.
    pub fn with_conf(dir: tempfile::TempDir, c: &GwConf) -> Node {
        let conf = dir.path().join("gateway.toml");
        c.write(&conf);
        Node { dir, conf, smpp: c.smpp, admin: c.admin, child: None }
    }

    pub async fn start(&mut self) {
        self.start_with_env(&[]).await
    }

    pub async fn start_with_env(&mut self, env: &[(&str, &str)]) {
        self.start_with(env, &[]).await
    }

    /// Starts `consentgate run` with more environment variables and `run` arguments, and
    /// waits (bounded) for its admin API.
    pub async fn start_with(&mut self, env: &[(&str, &str)], args: &[&str]) {
        assert!(self.child.is_none(), "already running");
        self.child = Some(Kill(super::spawn_gateway_with(&self.conf, env, args)));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = self.get("/livez").await {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().0.try_wait().unwrap() {
                panic!("consentgate exited at start: {st}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("consentgate did not come up on {}", self.admin);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").0.id()
    }

    pub fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill").args([sig, &self.pid().to_string()]).status().expect("kill");
        assert!(st.success(), "kill {sig}");
    }

    /// SIGTERM and wait (bounded) for the exit; returns how long the drain took.
    pub async fn stop(&mut self) -> Duration {
        let t0 = Instant::now();
        self.signal("-TERM");
        let mut child = self.child.take().unwrap();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Some(st) = child.0.try_wait().unwrap() {
                assert!(st.success(), "consentgate exited with {st} after SIGTERM");
                return t0.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("consentgate did not exit within 20 s of SIGTERM");
    }

    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.0.try_wait().unwrap().is_none())
    }

    pub async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        consentgate::admin::request(self.admin, "GET", path, None, None).await.map_err(std::io::Error::other)
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.expect("scrape /metrics").1
    }

    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric(&self.metrics().await, series)
    }

    pub async fn ready(&self) -> (u16, serde_json::Value) {
        let (code, body) = self.get("/readyz").await.expect("/readyz");
        (code, serde_json::from_str(&body).unwrap_or_default())
    }

    /// Waits (bounded) until `/readyz` answers 200; its body.
    pub async fn ready_within(&self, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let (code, body) = self.ready().await;
            if code == 200 {
                return body;
            }
            assert!(Instant::now() < deadline, "not ready within {within:?}: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Open file descriptors of the process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }

    /// Resident memory (KiB) of the process.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The status of one submit_sm from acme to `dest` on a fresh session.
    pub async fn submit_status(&self, dest: &str) -> u32 {
        let mut e = Esme::bound(self.smpp, "acme").await;
        let seq = e.submit(&submit_to(dest)).await;
        let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
        smpp::command_status(&r)
    }

    /// After a restart: how many of `acked` are refused `revoked` (each must be).
    pub async fn surviving(&self, acked: &[String]) -> usize {
        let mut n = 0;
        for m in acked {
            let st = self.submit_status(m).await;
            assert_eq!(st, REVOKED, "acknowledged opt-out of {m} lost: the next submit got 0x{st:x}");
            n += 1;
        }
        n
    }
}

pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

pub async fn sim(cfg: SimConfig) -> SimHandle {
    consentgate::sim::start(cfg).await.expect("sim")
}

pub async fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(f(), "{what}: not within {within:?}");
}

/// MO opt-outs sent one at a time through the simulator; each one's fate read from the
/// simulator's deliver_sm_resp counters (only MOs flow down in these tests: no receipts).
pub struct Optouts {
    pub acked: Vec<String>,
    pub refused: Vec<String>,
    pub lost: Vec<String>,
}

impl Optouts {
    pub fn new() -> Optouts {
        Optouts { acked: Vec::new(), refused: Vec::new(), lost: Vec::new() }
    }

    /// Injects "TD" from `who` to acme and waits (bounded by `within`) for the SMSC to get
    /// its answer. Returns the answer: `Some(true)` acknowledged, `Some(false)` refused, None
    /// no answer (or no acme session bound to take it).
    pub async fn one(&mut self, sim: &SimHandle, who: &str, within: Duration) -> Option<bool> {
        let (a0, n0) = (sim.stats.deliver_acks.load(Ordering::SeqCst), sim.stats.deliver_nacks.load(Ordering::SeqCst));
        if !sim.inject_mo(Some("acme"), who, "1069012345", 0, b"TD") {
            return None;
        }
        let deadline = Instant::now() + within;
        loop {
            let (a, n) =
                (sim.stats.deliver_acks.load(Ordering::SeqCst), sim.stats.deliver_nacks.load(Ordering::SeqCst));
            if a > a0 {
                self.acked.push(who.to_owned());
                return Some(true);
            }
            if n > n0 {
                self.refused.push(who.to_owned());
                return Some(false);
            }
            if Instant::now() > deadline {
                self.lost.push(who.to_owned());
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
