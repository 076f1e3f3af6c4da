//! What carries a leg's bytes. Today plain TCP; TLS (DESIGN §9) is one more variant in a file
//! of its own. The session loop only asks a transport four things — wait until it may read,
//! wait until it may write, read what is there, write what it takes — all non-blocking, so one
//! task keeps serving both legs (`session/mod.rs`). A TLS variant answers "may read" when the
//! socket is readable *or* decrypted bytes are buffered, and "may write" when the socket is
//! writable and it has records (including handshake or KeyUpdate) to send.

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A leg's byte stream.
#[derive(Debug)]
pub enum Transport {
    Tcp(TcpStream),
}

impl Transport {
    pub fn tcp(stream: TcpStream) -> Transport {
        let _ = stream.set_nodelay(true);
        Transport::Tcp(stream)
    }

    /// Resolves when a read may make progress.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.readable().await,
        }
    }

    /// Resolves when a write may make progress.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.writable().await,
        }
    }

    /// Appends what is available to `buf`: `Ok(0)` = the peer closed; `WouldBlock` = nothing yet.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.try_read_buf(buf),
        }
    }

    /// Writes what the transport takes now: `WouldBlock` = nothing.
    pub fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.try_write(bytes),
        }
    }

    /// Writes everything (awaiting).
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.write_all(bytes).await,
        }
    }

    /// Closes the write side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.shutdown().await,
        }
    }
}
