//! The benchmark baseline: a plain frame-forwarding TCP relay with no SMPP or CMPP logic at all
//! (both frame with a 4-byte big-endian length first).
//! It reads, walks complete PDU headers (where a filter would sit) and forwards whole frames
//! in one write per read batch — the physical cost of one extra hop on this machine.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{tcp::OwnedReadHalf, tcp::OwnedWriteHalf, TcpListener, TcpStream};

/// Accepts on `listener` and relays every connection to `upstream` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    upstream: SocketAddr,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (down, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = &mut shutdown => return Ok(()),
        };
        tokio::spawn(async move {
            let Ok(up) = TcpStream::connect(upstream).await else { return };
            let _ = (down.set_nodelay(true), up.set_nodelay(true));
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            tokio::join!(pump(dr, uw), pump(ur, dw));
        });
    }
}

/// Copies whole frames from `r` to `w`.
async fn pump(mut r: OwnedReadHalf, mut w: OwnedWriteHalf) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if buf.capacity() - buf.len() < 32 * 1024 {
            buf.reserve(64 * 1024);
        }
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut n = 0;
        while buf.len() - n >= 4 {
            let len = u32::from_be_bytes([buf[n], buf[n + 1], buf[n + 2], buf[n + 3]]) as usize;
            // 12: the smallest CMPP PDU (a bare header), so the same relay is the baseline of
            // the CMPP front; every SMPP PDU is at least 16.
            if len < 12 || buf.len() - n < len {
                break;
            }
            n += len;
        }
        if n > 0 && w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        buf.advance(n);
    }
    let _ = w.shutdown().await;
}
