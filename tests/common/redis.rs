//! A real `redis-server` (Debian's 7.0) for the tests of several nodes: a child process on a
//! loopback port with `appendonly yes`, `appendfsync always`, `noeviction`, its data in a temp
//! dir; killed (-9), restarted on its AOF, or wiped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use consentgate::replication::resp::{Conn, RedisUrl, Value};

use super::node::free_addr;
use super::Kill;

/// A `redis-server` child on a loopback port with its data in a temp dir.
pub struct Redis {
    bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Kill>,
}

impl Redis {
    /// Starts `bin` (Debian's redis-server: `tools::debian_tool`) on a free loopback port.
    pub fn start(bin: PathBuf) -> Redis {
        let port = free_addr().port();
        let mut r = Redis { bin, dir: tempfile::tempdir().unwrap(), port, child: None };
        r.spawn();
        r
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let child = std::process::Command::new(&self.bin)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--dir"])
            .arg(self.dir.path())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--daemonize",
                "no",
                "--logfile",
                "redis.log",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(Kill(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not listen on {}: {}", self.port, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: no shutdown save, no flush beyond what `appendfsync always` already did.
    pub fn kill9(&mut self) {
        self.child = None;
    }

    /// Killed and started again on the same port and directory (the AOF replays).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Killed, its data deleted, started empty.
    pub fn wipe(&mut self) {
        self.kill9();
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else if !p.ends_with("redis.log") {
                std::fs::remove_file(&p).unwrap();
            }
        }
        self.spawn();
    }

    pub async fn cmd(&self, args: &[&str]) -> Value {
        let url = RedisUrl::parse(&self.url()).unwrap();
        let mut c = Conn::connect(&url, Duration::from_secs(2)).await.expect("connect to test redis");
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        c.cmd(&args).await.expect("redis command")
    }

    pub async fn stream_len(&self, stream: &str) -> i64 {
        self.cmd(&["XLEN", stream]).await.as_int().unwrap_or(-1)
    }

    /// Waits (bounded) until the stream holds at least `n` entries.
    pub async fn wait_len(&self, stream: &str, n: i64, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            let len = self.stream_len(stream).await;
            if len >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: the stream holds {len} of {n} within {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
