//! What carries a leg's bytes: plain TCP, or TLS ([`super::tls::TlsStream`], architecture §9). The
//! session loop only asks a transport four things — wait until it may read, wait until it may
//! write, read what is there, write what it takes — all non-blocking, so one task keeps
//! serving both legs (`session/mod.rs`). The TLS variant answers "may read" when the socket is
//! readable *or* decrypted bytes are buffered, and says through [`Transport::wants_write`]
//! when it has records of its own (handshake, session tickets, KeyUpdate, alerts) to send.

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::tls::TlsStream;

/// A leg's byte stream.
#[derive(Debug)]
pub enum Transport {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
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
            Transport::Tls(s) => s.readable().await,
        }
    }

    /// Resolves when a write may make progress.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.writable().await,
            Transport::Tls(s) => s.writable().await,
        }
    }

    /// Appends what is available to `buf`: `Ok(0)` = the peer closed; `WouldBlock` = nothing yet.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.try_read_buf(buf),
            Transport::Tls(s) => s.try_read_buf(buf),
        }
    }

    /// Writes what the transport takes now: `WouldBlock` = nothing.
    pub fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.try_write(bytes),
            Transport::Tls(s) => s.try_write(bytes),
        }
    }

    /// Writes everything (awaiting).
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.write_all(bytes).await,
            Transport::Tls(s) => s.write_all(bytes).await,
        }
    }

    /// Closes the write side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.shutdown().await,
            Transport::Tls(s) => s.shutdown().await,
        }
    }

    /// Whether the transport has bytes of its own to send (TLS records) even with no SMPP
    /// output queued: the loop then waits for writability and calls [`Transport::flush_own`].
    #[inline]
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Tcp(_) => false,
            Transport::Tls(s) => s.wants_write(),
        }
    }

    /// Sends the transport's own queued bytes while the socket takes them.
    #[inline]
    pub fn flush_own(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(_) => Ok(()),
            Transport::Tls(s) => s.try_flush_records(),
        }
    }

    /// Appends at least one byte to `buf` (awaiting): `Ok(0)` = the peer closed.
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.readable().await?;
            match self.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }
}
