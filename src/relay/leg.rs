//! One leg of a session: its buffers and framing state ([`LegState`], no I/O, so the session's
//! relay logic runs and is tested without sockets), and the functions that move bytes between
//! a [`Transport`] and that state. The session's I/O driver owns the transports; its relay
//! logic owns the states.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};

use super::transport::Transport;
use crate::smpp::frame::Framer;

/// Read-buffer headroom ensured before each read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Output queued beyond this stops reading from the peer that feeds it (back-pressure).
pub const OUT_HIGH_WATER: usize = 4 * 1024 * 1024;

/// A leg's bytes in both directions and its framing state. The session's relay logic reads
/// `rbuf`, appends to `out` and flips `open`; only the I/O driver touches the transport.
#[derive(Debug)]
pub struct LegState {
    /// Bytes read and not yet framed.
    pub rbuf: BytesMut,
    pub framer: Framer,
    /// Bytes queued for writing.
    pub out: BytesMut,
    /// False once the peer closed its side or an I/O error happened.
    pub open: bool,
    /// Session clock (ms) of the last bytes received.
    pub last_rx_ms: u64,
    /// Since when (session ms) part of a PDU has waited in `rbuf`, and how many whole PDUs
    /// had been read then (`session.pdu_timeout`; checked on the tick, not per read).
    pub partial: Option<(u64, u64)>,
}

impl LegState {
    pub fn new(max_pdu_bytes: usize, rbuf: BytesMut) -> LegState {
        LegState {
            rbuf,
            framer: Framer::new(max_pdu_bytes),
            out: BytesMut::with_capacity(READ_CHUNK),
            open: true,
            last_rx_ms: 0,
            partial: None,
        }
    }
}

/// Reads what is available into `state.rbuf`. `Ok(0)` means the peer closed; `WouldBlock`
/// means nothing yet.
pub fn try_fill(t: &mut Transport, state: &mut LegState) -> io::Result<usize> {
    if state.rbuf.capacity() - state.rbuf.len() < READ_CHUNK {
        state.rbuf.reserve(READ_CHUNK);
    }
    t.try_read_buf(&mut state.rbuf)
}

/// Writes as much queued output as the transport takes without blocking, showing `seen`
/// every run of bytes it took (traffic capture).
#[inline]
pub fn try_flush_observed(t: &mut Transport, state: &mut LegState, mut seen: impl FnMut(&[u8])) -> io::Result<()> {
    while !state.out.is_empty() {
        match t.try_write(&state.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                seen(&state.out[..n]);
                state.out.advance(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    state.out.clear();
    t.flush_own()
}

/// Writes all queued output, waiting at most `limit`.
pub async fn flush_all(t: &mut Transport, state: &mut LegState, limit: Duration) -> io::Result<()> {
    if state.out.is_empty() || !state.open {
        return Ok(());
    }
    let out = std::mem::take(&mut state.out);
    tokio::time::timeout(limit, t.write_all(&out)).await.map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}
