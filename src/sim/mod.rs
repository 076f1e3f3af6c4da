//! SMSC simulator: a small SMPP v3.4 server for tests, benchmarks and demos.
//!
//! One task per TCP connection. Each read fills a `BytesMut` (≥ 64 KiB spare), every complete
//! frame in it is handled in place by [`crate::smpp::frame::Framer`], and everything the batch produces (responses,
//! same-connection delivery receipts) is appended to one output buffer written with a single
//! `write_all`. The fast path allocates nothing per PDU, takes no lock, touches no shared
//! atomic (message ids are reserved in blocks, statistics are flushed once per batch) and logs
//! nothing.
//!
//! Cross-connection traffic (receipts for a transmitter bind delivered on a parallel receiver
//! bind of the same system_id, [`SimHandle::inject_mo`]) goes through a bounded per-connection
//! channel of ready-made frames; the receiving task assigns its own sequence numbers. Kill,
//! unbind and stop requests are broadcast with `watch` channels.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`SimConfig`], [`SimStats`], [`SimHandle`], [`start`], the accept loop, the registry of bound sessions |
//! | `conn.rs` | one connection: its read/handle/write loop, the optional delayed writer, every PDU handler |
//! | `receipt.rs` | delivery receipt deliver_sm, SMPP dates, message ids, per-destination errors |
//! | `cmpp.rs` | the CMPP 2.0/3.0 ISMG simulator ([`cmpp::start`]): CONNECT with MD5 auth, SUBMIT_RESP Msg_Ids, status reports and MOs within the window of 16 |

pub mod cmpp;
mod conn;
mod receipt;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info};

use crate::smpp::pdu::SubmitBuilder;
use crate::smpp::peek::tlv;
use crate::smpp::BindType;
use conn::run_conn;

/// Simulator configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Listen address ("127.0.0.1:0" in tests).
    pub listen: SocketAddr,
    /// system_id reported in bind_resp.
    pub system_id: String,
    /// If set, only these (system_id, password) pairs may bind; others get ESME_RINVPASWD
    /// (known system_id) / ESME_RINVSYSID. None = accept any.
    pub credentials: Option<Vec<(String, String)>>,
    /// If set (and non-zero), every bind is refused with this status.
    pub refuse_binds: Option<u32>,
    /// Send delivery receipts when registered_delivery & 0x03 != 0.
    pub receipts: bool,
    /// Delay before submit responses (0 = none).
    pub response_delay: Duration,
    /// destination_addr -> command_status to answer submits with.
    pub dest_errors: HashMap<String, u32>,
    /// Keep a copy of every received PDU frame (bytes as received) for tests.
    pub record: bool,
    /// Largest accepted command_length.
    pub max_pdu_bytes: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            system_id: "consentgate-sim".to_owned(),
            credentials: None,
            refuse_binds: None,
            receipts: true,
            response_delay: Duration::ZERO,
            dest_errors: HashMap::new(),
            record: false,
            max_pdu_bytes: 65536,
        }
    }
}

/// A fault the simulator can be switched into at run time ([`SimHandle::set_fault`]), for the
/// fault-injection tests and demos. Read once per read batch (one relaxed load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SimFault {
    /// Normal service.
    None = 0,
    /// Reads and discards everything, answers nothing (responses, enquire_link and binds
    /// included): a hung SMSC, or a TCP connection whose far end has gone without a FIN.
    Silent = 1,
    /// Answers every read batch with bytes that are not SMPP (a fixed pseudo-random stream).
    Garbage = 2,
}

impl SimFault {
    fn from_u8(v: u8) -> SimFault {
        match v {
            1 => SimFault::Silent,
            2 => SimFault::Garbage,
            _ => SimFault::None,
        }
    }
}

/// Counters, updated once per read batch.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Successful binds.
    pub binds: AtomicU64,
    /// submit_sm, data_sm and submit_multi received on a bind allowed to submit.
    pub submits: AtomicU64,
    /// Delivery receipts written (same connection) or handed to a sibling receiver session.
    pub receipts_sent: AtomicU64,
    /// MO deliver_sm handed to a session by [`SimHandle::inject_mo`].
    pub mo_sent: AtomicU64,
    /// enquire_link requests answered.
    pub enquire_links: AtomicU64,
    /// unbind requests received from ESMEs.
    pub unbinds: AtomicU64,
    /// Responses consumed silently (deliver_sm_resp, enquire_link_resp, unbind_resp, generic_nack, ...).
    pub resps_received: AtomicU64,
    /// deliver_sm_resp received with command_status 0 (the MO or receipt acknowledged).
    pub deliver_acks: AtomicU64,
    /// deliver_sm_resp received with a non-zero command_status (the SMSC would redeliver).
    pub deliver_nacks: AtomicU64,
}

/// Frames another task asks a connection to write; it rewrites their sequence numbers.
pub(crate) struct Outbound {
    pub(crate) frames: BytesMut,
    /// Apply `response_delay` (receipts for submits answered with that delay).
    pub(crate) hold: bool,
}

/// A bound session in the registry.
pub(crate) struct Entry {
    pub(crate) conn_id: u64,
    pub(crate) bind: BindType,
    pub(crate) tx: mpsc::Sender<Outbound>,
}

pub(crate) struct Shared {
    pub(crate) cfg: SimConfig,
    pub(crate) stats: Arc<SimStats>,
    /// system_id -> bound sessions.
    pub(crate) registry: Mutex<HashMap<String, Vec<Entry>>>,
    pub(crate) recorded: Mutex<Vec<(String, Bytes)>>,
    pub(crate) kill: watch::Sender<u64>,
    pub(crate) unbind: watch::Sender<u64>,
    /// The current [`SimFault`].
    fault: AtomicU8,
    stop: watch::Sender<bool>,
    next_conn: AtomicU64,
    rr: AtomicUsize,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    #[inline]
    pub(crate) fn fault(&self) -> SimFault {
        SimFault::from_u8(self.fault.load(Ordering::Relaxed))
    }

    /// The channel of one bound RX/TRX session (of `system_id`, or any), other than `exclude`,
    /// chosen round-robin by `rr`.
    pub(crate) fn pick_receiver(
        &self,
        system_id: Option<&str>,
        exclude: u64,
        rr: usize,
    ) -> Option<mpsc::Sender<Outbound>> {
        let reg = lock(&self.registry);
        let ok = |e: &&Entry| e.bind.can_receive() && e.conn_id != exclude;
        let n = match system_id {
            Some(s) => reg.get(s).map_or(0, |v| v.iter().filter(ok).count()),
            None => reg.values().flatten().filter(ok).count(),
        };
        if n == 0 {
            return None;
        }
        let k = rr % n;
        let e = match system_id {
            Some(s) => reg.get(s)?.iter().filter(ok).nth(k),
            None => reg.values().flatten().filter(ok).nth(k),
        };
        e.map(|e| e.tx.clone())
    }
}

/// A running simulator.
pub struct SimHandle {
    pub local_addr: SocketAddr,
    pub stats: Arc<SimStats>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// Frames received so far (only when record = true), in arrival order per connection, with
    /// the system_id of the session ("" before bind).
    pub fn recorded(&self) -> Vec<(String, Bytes)> {
        lock(&self.shared.recorded).clone()
    }

    /// Sends an MO deliver_sm (esm_class 0) to one bound RX/TRX session of `system_id` (any
    /// session if None). Returns false if no suitable session is bound.
    pub fn inject_mo(
        &self,
        system_id: Option<&str>,
        source: &str,
        destination: &str,
        data_coding: u8,
        short_message: &[u8],
    ) -> bool {
        let rr = self.shared.rr.fetch_add(1, Ordering::Relaxed);
        let Some(tx) = self.shared.pick_receiver(system_id, u64::MAX, rr) else {
            return false;
        };
        let mut b = SubmitBuilder::new(source, destination).deliver().source_ton_npi(1, 1).data_coding(data_coding);
        b = if short_message.len() <= 255 {
            b.short_message(short_message)
        } else {
            b.tlv(tlv::MESSAGE_PAYLOAD, &short_message[..short_message.len().min(u16::MAX as usize)])
        };
        let frames = b.build(0);
        match tx.try_send(Outbound { frames, hold: false }) {
            Ok(()) => {
                self.stats.mo_sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Number of currently bound sessions.
    pub fn sessions(&self) -> usize {
        lock(&self.shared.registry).values().map(Vec::len).sum()
    }

    /// Abruptly closes every connection (simulates an SMSC crash); keeps listening.
    pub fn kill_connections(&self) {
        self.shared.kill.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Switches every connection (current and future) into `fault`, or back with
    /// [`SimFault::None`]. Takes effect at each connection's next read.
    pub fn set_fault(&self, fault: SimFault) {
        self.shared.fault.store(fault as u8, Ordering::Relaxed);
    }

    /// Sends unbind to every bound session (SMSC-initiated unbind). Each session closes on
    /// unbind_resp, or after 2 s without one.
    pub fn unbind_all(&self) {
        self.shared.unbind.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Stops listening and closes everything; waits for tasks.
    pub async fn shutdown(mut self) {
        self.shared.stop.send_replace(true);
        if let Some(j) = self.accept.take() {
            let _ = j.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

/// Binds the listener and starts accepting connections.
pub async fn start(cfg: SimConfig) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let local_addr = listener.local_addr()?;
    let stats = Arc::new(SimStats::default());
    let shared = Arc::new(Shared {
        cfg,
        stats: stats.clone(),
        registry: Mutex::new(HashMap::new()),
        recorded: Mutex::new(Vec::new()),
        kill: watch::Sender::new(0),
        unbind: watch::Sender::new(0),
        fault: AtomicU8::new(SimFault::None as u8),
        stop: watch::Sender::new(false),
        next_conn: AtomicU64::new(1),
        rr: AtomicUsize::new(0),
    });
    info!(addr = %local_addr, system_id = %shared.cfg.system_id, "SMSC simulator listening");
    let stop = shared.stop.subscribe();
    let accept = tokio::spawn(accept_loop(shared.clone(), listener, stop));
    Ok(SimHandle { local_addr, stats, shared, accept: Some(accept) })
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
            }
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    // Subscribe before spawning so a kill issued right now is not missed.
                    let kill = shared.kill.subscribe();
                    let unbind = shared.unbind.subscribe();
                    tasks.spawn(run_conn(shared.clone(), id, stream, peer, kill, unbind));
                }
                Err(e) => {
                    debug!(error = %e, "sim accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    shared.kill.send_modify(|v| *v = v.wrapping_add(1));
    while tasks.join_next().await.is_some() {}
    info!("SMSC simulator stopped");
}
