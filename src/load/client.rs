//! A minimal ESME client for tools that need one session and exact timing (the demo's
//! two-node step, the replication bench): bind, submit one message and read its status,
//! or answer deliver_sm / enquire_link until the connection ends.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::smpp::pdu::{encode_bind, put_resp_with_id, SubmitBuilder};
use crate::smpp::{self, cmd, BindType};

/// Largest PDU accepted from the gateway.
const MAX_PDU: usize = 64 * 1024;

/// One bound session.
pub struct Client {
    s: TcpStream,
    buf: BytesMut,
    seq: u32,
}

impl Client {
    /// Connects and binds; an error if the bind is refused (its status in the message).
    pub async fn bind(addr: SocketAddr, bt: BindType, system_id: &str, password: &str) -> io::Result<Client> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut c = Client { s, buf: BytesMut::with_capacity(16 * 1024), seq: 1 };
        c.s.write_all(&encode_bind(bt, 1, system_id, password)).await?;
        let r =
            c.read().await?.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed before bind_resp"))?;
        match smpp::command_status(&r) {
            0 => Ok(c),
            st => Err(io::Error::other(format!("bind {system_id} refused: 0x{st:08x}"))),
        }
    }

    /// The next whole PDU; `None` when the gateway closed the connection.
    pub async fn read(&mut self) -> io::Result<Option<BytesMut>> {
        loop {
            if self.buf.len() >= 4 {
                let n = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
                if !(16..=MAX_PDU).contains(&n) {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("command_length {n}")));
                }
                if self.buf.len() >= n {
                    return Ok(Some(self.buf.split_to(n)));
                }
            }
            if self.s.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Sends one submit_sm and returns the command_status of its response (other PDUs read
    /// meanwhile are dropped).
    pub async fn submit(&mut self, source: &str, dest: &str, text: &[u8]) -> io::Result<u32> {
        self.seq += 1;
        let seq = self.seq;
        self.s.write_all(&SubmitBuilder::new(source, dest).short_message(text).build(seq)).await?;
        loop {
            let f = self.read().await?.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed"))?;
            if smpp::command_id(&f) == cmd::SUBMIT_SM_RESP && smpp::sequence(&f) == seq {
                return Ok(smpp::command_status(&f));
            }
        }
    }

    /// Answers every deliver_sm (0) and enquire_link until the connection ends.
    pub async fn answer_delivers(mut self) {
        while let Ok(Some(f)) = self.read().await {
            let id = match smpp::command_id(&f) {
                cmd::DELIVER_SM => cmd::DELIVER_SM_RESP,
                cmd::ENQUIRE_LINK => cmd::ENQUIRE_LINK_RESP,
                _ => continue,
            };
            let mut r = BytesMut::new();
            put_resp_with_id(&mut r, id, 0, smpp::sequence(&f), b"");
            if self.s.write_all(&r).await.is_err() {
                return;
            }
        }
    }
}
