//! A small Redis client for exactly what replication needs (architecture §8): RESP2 over one TCP
//! connection, commands pipelined, every read bounded by an explicit timeout, no reconnects
//! of its own (the publisher and the reader each own one connection and run their own
//! reconnect loop). See `reference/scale-out.md` §2 for why not a general client: a
//! multiplexed connection stalls behind a blocking `XREAD`, default response timeouts are
//! shorter than a `BLOCK`, and reconnects that silently drop the in-flight command are the
//! opposite of what an outbox needs.
//!
//! The parser ([`parse`]) is a pure function over a buffer, bounded in nesting, element
//! counts and bulk sizes, and a connection never buffers more than [`MAX_REPLY`] of one
//! reply, so a hostile or broken server gets an error, not unbounded memory.

use std::fmt;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest bulk string accepted from the server (statements are short fields; a caps entry is
/// at most 768 KiB, `caps::MARKS_PER_ENTRY`).
pub const MAX_BULK: usize = 1 << 20;
/// Largest reply a connection buffers (an `XREAD COUNT 1000` of statements is well under
/// 1 MiB).
pub const MAX_REPLY: usize = 16 << 20;
/// Most elements in one array reply.
const MAX_ARRAY: usize = 1 << 20;
/// Deepest array nesting accepted (an XREAD reply is 4 deep).
const MAX_DEPTH: usize = 8;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `$-1` or `*-1`.
    Nil,
    Int(i64),
    /// `+OK`, `+QUEUED`.
    Simple(String),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
    /// `-ERR …`: the server refused the command.
    Error(String),
}

impl Value {
    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            Value::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// A bulk / simple string as UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer, or a string holding one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            v => v.as_str()?.parse().ok(),
        }
    }
}

/// What went wrong talking to Redis. Every variant means the connection is unusable except
/// [`RedisError::Server`] (a refused command on a healthy connection).
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("server: {0}")]
    Server(String),
}

/// Where the server is: `redis://[[user]:password@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for RedisUrl {
    /// The password is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for RedisUrl {
    /// `redis://host:port/db`, with `***` for a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        match (&self.username, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, None) => {}
        }
        write!(f, "{}:{}/{}", self.host, self.port, self.db)
    }
}

impl RedisUrl {
    /// Parses a `redis://` URL; the message says what is wrong.
    pub fn parse(s: &str) -> Result<RedisUrl, String> {
        let rest = s.strip_prefix("redis://").ok_or_else(|| {
            if s.starts_with("rediss://") {
                "`rediss://` (TLS to Redis) is not supported: use a local TLS tunnel or a private network".to_owned()
            } else {
                format!("`{s}` is not a redis://host:port/db URL")
            }
        })?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, d)) => (h, d.parse::<u32>().map_err(|_| format!("database `{d}` is not a number"))?),
            None => (rest, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| format!("port `{p}` is not a number"))?)
            }
            _ => (hostport, 6379),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("no host".into());
        }
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| u.to_owned()), Some(p.to_owned())),
                None => (None, Some(a.to_owned())),
            },
        };
        Ok(RedisUrl { host: host.to_owned(), port, db, username, password })
    }
}

/// Appends one command in RESP (an array of bulk strings) to `out`.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the front of `buf`: `Ok(None)` if it is not complete yet, else the
/// value and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
    parse_at(buf, 0, 0)
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let nl = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..nl], at + nl + 2))
}

fn int_of(b: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or_else(|| "bad integer".to_owned())
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, String> {
    let Some(&tag) = buf.get(at) else { return Ok(None) };
    let Some((body, next)) = line(buf, at + 1) else {
        if buf.len() - at > MAX_BULK {
            return Err("line too long".into());
        }
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(body).into_owned();
    match tag {
        b'+' => Ok(Some((Value::Simple(text()), next - at))),
        b'-' => Ok(Some((Value::Error(text()), next - at))),
        b':' => Ok(Some((Value::Int(int_of(body)?), next - at))),
        b'$' => {
            let n = int_of(body)?;
            if n < 0 {
                return Ok(Some((Value::Nil, next - at)));
            }
            let n = n as usize;
            if n > MAX_BULK {
                return Err(format!("bulk string of {n} bytes"));
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err("bulk string not terminated".into());
            }
            Ok(Some((Value::Bulk(buf[next..next + n].to_vec()), next + n + 2 - at)))
        }
        b'*' => {
            let n = int_of(body)?;
            if n < 0 {
                return Ok(Some((Value::Nil, next - at)));
            }
            let n = n as usize;
            if n > MAX_ARRAY {
                return Err(format!("array of {n} elements"));
            }
            if depth >= MAX_DEPTH {
                return Err("arrays nested too deep".into());
            }
            // Each element takes at least 3 bytes: do not reserve for what is not there.
            let mut items = Vec::with_capacity(n.min((buf.len() - next) / 3 + 1));
            let mut pos = next;
            for _ in 0..n {
                match parse_at(buf, pos, depth + 1)? {
                    Some((v, used)) => {
                        items.push(v);
                        pos += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(items), pos - at)))
        }
        other => Err(format!("unexpected reply type byte 0x{other:02x}")),
    }
}

/// One connection, owned by one task.
pub struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Replies owed for what has been queued.
    owed: usize,
    /// The reply-time bound for ordinary commands.
    timeout: Duration,
}

impl Conn {
    /// Connects, authenticates and selects the database, each within `timeout`.
    pub async fn connect(url: &RedisUrl, timeout: Duration) -> Result<Conn, RedisError> {
        let addr = format!("{}:{}", url.host, url.port);
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(RedisError::Connect { addr, source }),
            Err(_) => {
                return Err(RedisError::Connect { addr, source: io::Error::new(io::ErrorKind::TimedOut, "timed out") })
            }
        };
        let _ = stream.set_nodelay(true);
        let mut c = Conn { stream, rbuf: Vec::with_capacity(16 * 1024), wbuf: Vec::new(), owed: 0, timeout };
        match (&url.username, &url.password) {
            (Some(u), Some(p)) => c.ok(&[b"AUTH", u.as_bytes(), p.as_bytes()]).await?,
            (None, Some(p)) => c.ok(&[b"AUTH", p.as_bytes()]).await?,
            _ => {}
        }
        if url.db != 0 {
            c.ok(&[b"SELECT", url.db.to_string().as_bytes()]).await?;
        }
        Ok(c)
    }

    /// Queues a command; its reply is read by [`Conn::replies`].
    pub fn queue(&mut self, args: &[&[u8]]) {
        encode(&mut self.wbuf, args);
        self.owed += 1;
    }

    /// Sends what is queued and reads every owed reply, all within `wait` (the connection's
    /// timeout if `None`). Server errors come back as [`Value::Error`] in their place.
    pub async fn replies(&mut self, wait: Option<Duration>) -> Result<Vec<Value>, RedisError> {
        let wait = wait.unwrap_or(self.timeout);
        match tokio::time::timeout(wait, self.exchange()).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout(wait)),
        }
    }

    async fn exchange(&mut self) -> Result<Vec<Value>, RedisError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        let mut out = Vec::with_capacity(self.owed);
        while out.len() < self.owed {
            match parse(&self.rbuf).map_err(RedisError::Protocol)? {
                Some((v, used)) => {
                    self.rbuf.drain(..used);
                    out.push(v);
                }
                None => {
                    if self.rbuf.len() >= MAX_REPLY {
                        return Err(RedisError::Protocol(format!(
                            "a reply of more than {MAX_REPLY} bytes (a broken or hostile server)"
                        )));
                    }
                    if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                        // Doubling: a large reply arrives in few reads (each one re-parses).
                        self.rbuf.reserve(self.rbuf.len().clamp(16 * 1024, MAX_REPLY));
                    }
                    let n = self.stream.read_buf(&mut self.rbuf).await?;
                    if n == 0 {
                        return Err(RedisError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "closed by the server",
                        )));
                    }
                }
            }
        }
        self.owed = 0;
        Ok(out)
    }

    /// Resolves when the idle connection turns out to be dead: the server closed it, or sent
    /// something nobody asked for. Cancel-safe; use it while no reply is owed, to notice a
    /// restarted server before the next command.
    pub async fn closed(&mut self) -> RedisError {
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => RedisError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the server")),
            Ok(_) => RedisError::Protocol("data from the server with no command outstanding".into()),
            Err(e) => RedisError::Io(e),
        }
    }

    /// One command, one reply (a server error as [`RedisError::Server`]).
    pub async fn cmd(&mut self, args: &[&[u8]]) -> Result<Value, RedisError> {
        self.cmd_within(args, None).await
    }

    /// [`Conn::cmd`] with its own reply bound (a blocking command's BLOCK plus margin).
    pub async fn cmd_within(&mut self, args: &[&[u8]], wait: Option<Duration>) -> Result<Value, RedisError> {
        self.queue(args);
        let v = self.replies(wait).await?.pop().unwrap_or(Value::Nil);
        match v {
            Value::Error(e) => Err(RedisError::Server(e)),
            v => Ok(v),
        }
    }

    async fn ok(&mut self, args: &[&[u8]]) -> Result<(), RedisError> {
        self.cmd(args).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_and_waits_for_more() {
        let full = b"*2\r\n$3\r\nabc\r\n*2\r\n:5\r\n$-1\r\n+OK\r\n";
        let (v, n) = parse(full).unwrap().unwrap();
        assert_eq!(v, Value::Array(vec![Value::Bulk(b"abc".to_vec()), Value::Array(vec![Value::Int(5), Value::Nil])]));
        assert_eq!(&full[n..], b"+OK\r\n");
        for cut in 0..n {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "prefix of {cut} bytes");
        }
        assert_eq!(parse(b"-ERR no\r\n").unwrap().unwrap().0, Value::Error("ERR no".into()));
    }

    #[test]
    fn refuses_hostile_replies_without_allocating() {
        assert!(parse(b"$999999999999\r\n").is_err());
        assert!(parse(b"*99999999\r\n").is_err());
        assert!(parse(b"$3\r\nabcXY").is_err());
        assert!(parse(b"?\r\n").is_err());
        let deep = "*1\r\n".repeat(20);
        assert!(parse(deep.as_bytes()).is_err());
        // A large declared array with nothing behind it is just incomplete.
        assert_eq!(parse(b"*1000000\r\n").unwrap(), None);
    }

    /// A server whose reply never ends (a million 100-byte strings): the connection errors at
    /// [`MAX_REPLY`] buffered instead of growing.
    #[tokio::test]
    async fn an_endless_reply_is_refused_at_the_cap() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut cmd = [0u8; 64];
            let _ = s.read(&mut cmd).await;
            let mut chunk = Vec::new();
            for _ in 0..1000 {
                chunk.extend_from_slice(b"$100\r\n");
                chunk.extend_from_slice(&[b'x'; 100]);
                chunk.extend_from_slice(b"\r\n");
            }
            let _ = s.write_all(b"*1000000\r\n").await;
            for _ in 0..1000 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut c = Conn { stream, rbuf: Vec::new(), wbuf: Vec::new(), owed: 0, timeout: Duration::from_secs(20) };
        match c.cmd(&[b"PING"]).await {
            Err(RedisError::Protocol(e)) => assert!(e.contains("more than"), "{e}"),
            other => panic!("expected the cap, got {other:?}"),
        }
        assert!(c.rbuf.len() < MAX_REPLY + (1 << 20), "buffered {}", c.rbuf.len());
        server.abort();
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode(&mut out, &[b"GET", b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn urls() {
        let u = RedisUrl::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db, u.password.as_deref()), ("127.0.0.1", 6380, 2, None));
        let u = RedisUrl::parse("redis://:s3cret@redis.svc").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.password.as_deref()), ("redis.svc", 6379, Some("s3cret")));
        assert_eq!(u.to_string(), "redis://:***@redis.svc:6379/0");
        let u = RedisUrl::parse("redis://app:pw@[::1]:7000").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.username.as_deref()), ("::1", 7000, Some("app")));
        assert!(RedisUrl::parse("rediss://x").unwrap_err().contains("TLS"));
        assert!(RedisUrl::parse("http://x").is_err());
        assert!(RedisUrl::parse("redis://h:99999").is_err());
    }
}
