//! One task per ESME connection (architecture §1, §6): bind admission, the paired upstream bind,
//! then the relay loop that serves *both* legs from one task.
//!
//! ```text
//!   ESME ──► esme leg ──► [frame → check → window → pipeline → seq remap] ──► smsc leg ──► SMSC
//!   ESME ◄── esme leg ◄── [seq remap back / local answers / opt-out gate] ◄── smsc leg ◄── SMSC
//! ```
//!
//! * `bind.rs` — admission ([`crate::policy::Engine::admit`]) and the upstream bind;
//! * `core.rs` — [`Session`]: the relay logic on the legs' buffers, no I/O; `esme.rs` and
//!   `smsc.rs` handle each direction, `multi.rs` submit_multi, `timers.rs` the tick;
//! * `lifecycle.rs` — bind states, unbind from either side, drain, close: a pure state machine;
//! * `optout_gate.rs` — MO opt-out capture and the responses held until it is durable;
//! * `audit.rs` — the session's decision audit records; `metrics.rs` — its counters;
//! * this file — [`Context`] (what sessions share) and the driver: the event loop that moves
//!   bytes between each leg's [`Transport`] and its buffers, and the capture hook.
//!
//! Serving both legs from one task means the sequence tables need no lock and no cross-task
//! wake-up sits on the hot path: a read batch is framed, every PDU handled in place, and the
//! output for each leg leaves in one `try_write`. Reads stop on a leg whose opposite output
//! queue is over [`OUT_HIGH_WATER`], which turns a slow peer into TCP back-pressure.

mod audit;
mod bind;
pub mod cmpp;
pub mod config;
mod core;
mod esme;
mod lifecycle;
pub mod limits;
mod metrics;
mod multi;
mod optout_gate;
mod smsc;
#[cfg(test)]
mod tests;
mod timers;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::info;

use crate::capture::{Capture, Flow, SessionCapture};
use crate::consent::store::ConsentStore;
use crate::optout::Keywords;
use crate::policy::{Engine, EngineCell};
use crate::relay::{leg, Transport, UpstreamConfig, OUT_HIGH_WATER};
use crate::time::Clock;

pub use self::config::SessionConfig;
pub use self::core::{Session, Side};
pub use lifecycle::{Lifecycle, State, Step};
pub use metrics::{ErrorKind, SessionStats};

/// How often timers (response timeouts, keep-alives, drain progress) are checked.
const TICK: Duration = Duration::from_millis(100);

/// What a config reload replaces for the sessions besides the engine: the `[session]` and
/// `[upstream]` settings and the opt-out keywords. A session takes these with the engine
/// whenever [`EngineCell::generation`] moves (the gateway stores them first, then swaps the
/// engine), so one reload is seen whole, from the session's next read batch.
#[derive(Debug, Clone)]
pub struct Settings {
    pub session: SessionConfig,
    pub upstream: UpstreamConfig,
    pub keywords: Arc<Keywords>,
    /// `policy.opt_in_keywords`, and the accounts' own `opt_in_keywords`.
    pub opt_in: OptIn,
}

/// The opt-in keywords: the policy's, and those of the accounts that set their own.
#[derive(Debug, Clone, Default)]
pub struct OptIn {
    pub default: Arc<Keywords>,
    pub accounts: std::collections::HashMap<String, Arc<Keywords>>,
}

impl OptIn {
    /// The opt-in keywords of account `system_id`.
    pub fn of(&self, system_id: &str) -> Arc<Keywords> {
        self.accounts.get(system_id).unwrap_or(&self.default).clone()
    }
}

/// What every session shares, built once by the gateway.
pub struct Context {
    /// The decision engine in force (swapped by a config reload).
    pub engine: Arc<EngineCell>,
    /// The settings in force (replaced by a config reload, before the engine).
    pub settings: arc_swap::ArcSwap<Settings>,
    pub store: Arc<ConsentStore>,
    /// `[capture]` recording, when enabled.
    pub capture: Option<Arc<Capture>>,
    /// The decision audit log (`Audit::disabled()` when off).
    pub audit: crate::audit::Audit,
    /// The wall clock the decisions read.
    pub clock: Clock,
    /// Numbers sessions for the audit log.
    pub next_session: AtomicU64,
    /// Failed binds per source IP (`[limits]`).
    pub bind_limiter: limits::BindLimiter,
    /// Connections not bound yet, per source IP and in total (`[limits]`).
    pub unbound: Arc<limits::UnboundLimiter>,
    /// `[upstream.tls]`: the TLS client configuration in force (None = plain TCP).
    pub upstream_tls: Option<Arc<crate::relay::TlsClient>>,
}

impl Context {
    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// The engine in force now.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load()
    }
}

/// Hands `bytes` seen on `flow` to the session's recorder, if `[capture]` records it.
#[inline]
fn capture(cap: &mut Option<SessionCapture>, flow: Flow, bytes: &[u8], ts_us: u64) {
    if let Some(c) = cap {
        c.record(flow, bytes, ts_us);
    }
}

/// Serves one ESME connection (plain TCP or an established TLS channel) until it ends.
/// `unbound` is the connection's place under the unbound caps ([`limits::UnboundLimiter`]):
/// released when the bind succeeds. Never panics on peer input.
pub async fn serve(
    stream: Transport,
    peer: SocketAddr,
    ctx: Arc<Context>,
    shutdown: watch::Receiver<bool>,
    unbound: limits::UnboundGuard,
) {
    let mut shutdown = shutdown;
    let Some(b) = bind::accept_bind(stream, peer, &ctx, &mut shutdown, unbound).await else { return };
    // The account's session count (`max_sessions`) goes down when this function returns.
    let _slot = b.slot;
    let system_id = b.engine.account(b.account).system_id.clone();
    let mut rec = ctx.capture.as_ref().and_then(|c| c.session(&system_id));
    let base_us = crate::time::unix_us() as u64;
    if let Some(c) = rec.as_mut() {
        c.record(Flow::EsmeToGateway, &b.bind, base_us);
        c.record(Flow::GatewayToSmsc, &b.bind, base_us);
        c.record(Flow::SmscToGateway, &b.bind_resp, base_us);
        c.record(Flow::GatewayToEsme, &b.bind_resp, base_us);
    }
    info!(peer = %peer, system_id = %system_id, bind = b.bind_type.as_str(), "session bound");
    let mut core =
        Session::new(ctx.clone(), (b.engine, b.generation), b.account, b.bind_type, peer, b.esme_rest, b.smsc_rest);
    core.esme.framer = b.down_framer;
    let mut d =
        Driver { core, esme: b.esme, smsc: b.smsc, capture: rec, capture_base_us: base_us, epoch: Instant::now() };
    d.run(&mut shutdown).await;
    info!(peer = %peer, system_id = %system_id, reason = d.core.close_reason(), "session closed");
}

/// The I/O side of a session: the legs' transports and the capture recorder around a
/// [`Session`].
struct Driver {
    core: Session,
    esme: Transport,
    smsc: Transport,
    /// `[capture]`: this session's recorder (None when off or the account is not recorded),
    /// and the Unix time (µs) of the session clock's zero.
    capture: Option<SessionCapture>,
    capture_base_us: u64,
    epoch: Instant,
}

impl Driver {
    fn clock(&mut self) {
        self.core.set_clock(self.epoch.elapsed().as_micros() as u64);
    }

    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Bytes that arrived with the bind responses.
        self.clock();
        self.core.process_up();
        self.core.process_down();
        self.flush();
        let mut shutdown_seen = *shutdown.borrow();
        if shutdown_seen {
            self.core.begin_drain("shutdown");
        }
        while !self.core.is_done() {
            enum Ev {
                Down(std::io::Result<()>),
                Up(std::io::Result<()>),
                /// A leg can take output again: nothing to do but the `flush` below.
                Writable,
                Durable,
                Tick,
                Shutdown,
            }
            let c = &mut self.core;
            let read_down = c.esme.open && c.smsc.out.len() < OUT_HIGH_WATER;
            let read_up = c.smsc.open && c.esme.out.len() < OUT_HIGH_WATER;
            let write_down = c.esme.open && (!c.esme.out.is_empty() || self.esme.wants_write());
            let write_up = c.smsc.open && (!c.smsc.out.is_empty() || self.smsc.wants_write());
            let holding = c.optout.holding();
            let ev = tokio::select! {
                r = self.esme.readable(), if read_down => Ev::Down(r),
                r = self.smsc.readable(), if read_up => Ev::Up(r),
                _ = self.esme.writable(), if write_down => Ev::Writable,
                _ = self.smsc.writable(), if write_up => Ev::Writable,
                _ = c.optout.durable_changed(), if holding => Ev::Durable,
                _ = tick.tick() => Ev::Tick,
                _ = shutdown.changed(), if !shutdown_seen => Ev::Shutdown,
            };
            self.clock();
            match ev {
                Ev::Down(r) => {
                    if r.is_ok() {
                        self.read(Side::Esme);
                    }
                }
                Ev::Up(r) => {
                    if r.is_ok() {
                        self.read(Side::Smsc);
                    }
                }
                Ev::Writable => {}
                Ev::Durable => self.core.release_held(),
                Ev::Tick => self.core.on_tick(),
                Ev::Shutdown => {
                    shutdown_seen = true;
                    self.core.begin_drain("shutdown");
                }
            }
            self.flush();
            self.core.progress();
            self.core.audit.flush();
        }
        self.teardown().await;
        self.core.close();
    }

    /// Reads what `side`'s transport has and handles it; end of stream or an error drops
    /// the leg.
    fn read(&mut self, side: Side) {
        let (t, flow, closed, failed) = match side {
            Side::Esme => (&mut self.esme, Flow::EsmeToGateway, "esme closed the connection", "esme connection error"),
            Side::Smsc => (&mut self.smsc, Flow::SmscToGateway, "smsc closed the connection", "smsc connection error"),
        };
        let c = &mut self.core;
        let (now_us, now_ms) = (c.now_us, c.now_ms);
        let leg = c.leg(side);
        match leg::try_fill(t, leg) {
            Ok(0) => c.gone(side, closed),
            Ok(n) => {
                capture(&mut self.capture, flow, &leg.rbuf[leg.rbuf.len() - n..], self.capture_base_us + now_us);
                leg.last_rx_ms = now_ms;
                match side {
                    Side::Esme => c.process_down(),
                    Side::Smsc => c.process_up(),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => c.gone(side, failed),
        }
    }

    /// Writes what is queued on each leg; with `[capture]`, records what the transport took.
    fn flush(&mut self) {
        let t = self.capture_base_us + self.core.now_us;
        let cap = &mut self.capture;
        let c = &mut self.core;
        if c.esme.open
            && (!c.esme.out.is_empty() || self.esme.wants_write())
            && leg::try_flush_observed(&mut self.esme, &mut c.esme, |b| capture(cap, Flow::GatewayToEsme, b, t))
                .is_err()
        {
            c.esme_gone("esme write failed");
        }
        if c.smsc.open
            && (!c.smsc.out.is_empty() || self.smsc.wants_write())
            && leg::try_flush_observed(&mut self.smsc, &mut c.smsc, |b| capture(cap, Flow::GatewayToSmsc, b, t))
                .is_err()
        {
            c.smsc_gone("smsc write failed");
        }
    }

    async fn teardown(&mut self) {
        let limit = Duration::from_secs(1);
        let _ = leg::flush_all(&mut self.esme, &mut self.core.esme, limit).await;
        let _ = leg::flush_all(&mut self.smsc, &mut self.core.smsc, limit).await;
        let _ = tokio::time::timeout(limit, self.esme.shutdown()).await;
        let _ = tokio::time::timeout(limit, self.smsc.shutdown()).await;
    }
}
