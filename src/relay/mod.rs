//! The upstream side of a session: one TCP leg per direction with non-blocking read/flush
//! ([`Leg`]), the paired upstream bind ([`bind_upstream`]), sequence remapping ([`seq`]) and the
//! plain frame relay used as the benchmark baseline ([`plain`]).

pub mod plain;
pub mod seq;

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::smpp::frame::{Framer, Next};
use crate::smpp::{self, cmd, BindType, HEADER_LEN};

/// Read-buffer headroom ensured before each read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Output queued beyond this stops reading from the peer that feeds it (back-pressure).
pub const OUT_HIGH_WATER: usize = 4 * 1024 * 1024;

/// One TCP connection of a session with its buffers. All I/O is non-blocking (`try_read` /
/// `try_write`) so that one task can serve both legs of a session without ever blocking on
/// one while the other needs service.
#[derive(Debug)]
pub struct Leg {
    pub stream: TcpStream,
    /// Bytes read and not yet framed.
    pub rbuf: BytesMut,
    pub framer: Framer,
    /// Bytes queued for writing.
    pub out: BytesMut,
    /// False once the peer closed its side or an I/O error happened.
    pub open: bool,
    /// Session clock (ms) of the last bytes received.
    pub last_rx_ms: u64,
}

impl Leg {
    pub fn new(stream: TcpStream, max_pdu_bytes: usize, rbuf: BytesMut) -> Leg {
        let _ = stream.set_nodelay(true);
        Leg {
            stream,
            rbuf,
            framer: Framer::new(max_pdu_bytes),
            out: BytesMut::with_capacity(READ_CHUNK),
            open: true,
            last_rx_ms: 0,
        }
    }

    /// Reads what is available. `Ok(0)` means the peer closed; `WouldBlock` means nothing yet.
    pub fn try_fill(&mut self) -> io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK {
            self.rbuf.reserve(READ_CHUNK);
        }
        self.stream.try_read_buf(&mut self.rbuf)
    }

    /// Writes as much queued output as the socket takes without blocking.
    pub fn try_flush(&mut self) -> io::Result<()> {
        self.try_flush_observed(|_| {})
    }

    /// [`try_flush`](Self::try_flush), showing `seen` every run of bytes the socket took
    /// (traffic capture).
    #[inline]
    pub fn try_flush_observed(&mut self, mut seen: impl FnMut(&[u8])) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.try_write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    seen(&self.out[..n]);
                    self.out.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Writes all queued output, waiting at most `limit`.
    pub async fn flush_all(&mut self, limit: Duration) -> io::Result<()> {
        if self.out.is_empty() || !self.open {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        tokio::time::timeout(limit, self.stream.write_all(&out))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }
}

/// Why the paired upstream bind did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBindError {
    /// The SMSC could not be reached within the connect timeout, or the connection failed.
    #[error("upstream unreachable: {0}")]
    Unreachable(io::Error),
    /// The SMSC did not answer the bind in time.
    #[error("upstream bind timed out")]
    Timeout,
    /// The SMSC answered with something that is not a bind response.
    #[error("upstream answered the bind with command 0x{0:08x}")]
    Protocol(u32),
    /// The SMSC closed the connection during the bind.
    #[error("upstream closed the connection during bind")]
    Closed,
}

/// A bound (or refused) upstream connection.
#[derive(Debug)]
pub struct UpstreamBind {
    pub stream: TcpStream,
    /// The SMSC's bind response frame, as received (sequence number 1).
    pub resp: BytesMut,
    /// Bytes the SMSC sent after the bind response.
    pub rest: BytesMut,
}

/// Opens the paired upstream session: connects to `address` and sends the ESME's own bind
/// frame (its bytes unchanged but for sequence number 1), then waits for the bind response.
/// The caller relays the response's status to the ESME, whatever it is.
pub async fn bind_upstream(
    address: &str,
    bind_frame: &[u8],
    connect_timeout: Duration,
    bind_timeout: Duration,
    max_pdu_bytes: usize,
) -> Result<UpstreamBind, UpstreamBindError> {
    let mut stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(UpstreamBindError::Unreachable(e)),
        Err(_) => return Err(UpstreamBindError::Unreachable(io::ErrorKind::TimedOut.into())),
    };
    let _ = stream.set_nodelay(true);
    let mut frame = BytesMut::from(bind_frame);
    smpp::set_sequence(&mut frame, 1);
    let expect = smpp::command_id(bind_frame) | smpp::RESP_BIT;
    let exchange = async {
        stream.write_all(&frame).await.map_err(UpstreamBindError::Unreachable)?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut framer = Framer::new(max_pdu_bytes);
        loop {
            match framer.next(&buf) {
                Next::Frame(len) => {
                    let f = buf.split_to(len);
                    let id = smpp::command_id(&f);
                    if id == expect || (id == cmd::GENERIC_NACK && f.len() >= HEADER_LEN) {
                        return Ok((f, buf));
                    }
                    if id == cmd::ENQUIRE_LINK {
                        // Some SMSCs probe before answering the bind.
                        let mut r = BytesMut::new();
                        smpp::pdu::put_header_only(&mut r, cmd::ENQUIRE_LINK_RESP, 0, smpp::sequence(&f));
                        stream.write_all(&r).await.map_err(UpstreamBindError::Unreachable)?;
                        continue;
                    }
                    return Err(UpstreamBindError::Protocol(id));
                }
                Next::Incomplete => {
                    let n = stream.read_buf(&mut buf).await.map_err(UpstreamBindError::Unreachable)?;
                    if n == 0 {
                        return Err(UpstreamBindError::Closed);
                    }
                }
                _ => return Err(UpstreamBindError::Protocol(0)),
            }
        }
    };
    let (resp, rest) = tokio::time::timeout(bind_timeout, exchange).await.map_err(|_| UpstreamBindError::Timeout)??;
    Ok(UpstreamBind { stream, resp, rest })
}

/// Bind type of a bind frame.
pub fn bind_type_of(frame: &[u8]) -> Option<BindType> {
    BindType::from_command(smpp::command_id(frame))
}
